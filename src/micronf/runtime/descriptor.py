"""The µNF descriptor (paper §IV-D): what a µNF does to which part of a packet.

The orchestrator reads descriptors to decide which µNFs may run in parallel (§V-B: read-only or
disjoint header regions, and no drops) and which are redundant. The descriptor lives on the µNF
class, so it can never drift from the code.

Convention: locating the L3 header (reading the EtherType and a VLAN tag) is not an L2 access;
a µNF that adds or removes tags (moving every header) declares L2 and L3 ReadWrite.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class Access(StrEnum):
    """What a µNF does to one region of the packet."""

    NOP = "NOP"
    READ = "ReadOnly"
    WRITE = "ReadWrite"


REGIONS = ("l2", "l3", "l4", "payload")


class Descriptor(BaseModel):
    """Statefulness, per-region access (L2, L3, L4 headers and payload) and whether it may drop."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stateful: bool = False
    l2: Access = Access.NOP
    l3: Access = Access.NOP
    l4: Access = Access.NOP
    payload: Access = Access.NOP
    may_drop: bool = False
    global_state: bool = False
    """The µNF's state must see every packet of the graph (a global rate limit, a scan detector over
    all flows): it runs as one instance, never in replicas or scaled out. Per-flow state (what
    ``stateful`` alone means) stays correct per replica or instance, since input is split by flow."""

    def access(self, region: str) -> Access:
        """Access to ``region`` (one of ``REGIONS``)."""
        value: Access = getattr(self, region)
        return value

    @property
    def read_only(self) -> bool:
        """True when the µNF writes no part of the packet."""
        return all(self.access(r) != Access.WRITE for r in REGIONS)

    @property
    def writes_past_l2(self) -> bool:
        """True when the µNF may write the L3, L4 or payload region: what was parsed from a packet
        (its header offsets, the HTTP request-target) may not hold after it."""
        return any(self.access(r) == Access.WRITE for r in REGIONS[1:])

    def parallel_safe_with(self, other: Descriptor) -> bool:
        """§V-B: two µNFs may process the same packets in parallel when neither drops and, for every
        region, at most one of them touches it if either writes it."""
        if self.may_drop or other.may_drop:
            return False
        for region in REGIONS:
            mine, theirs = self.access(region), other.access(region)
            if Access.WRITE in (mine, theirs) and Access.NOP not in (mine, theirs):
                return False
        return True
