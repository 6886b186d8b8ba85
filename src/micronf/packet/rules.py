"""The one 5-tuple rule: its syntax (a pydantic model) and its compiled first-match scan.

Why one: the Rx service's classifier (which packets enter a graph) and the L3L4Filter µNF (which
packets a firewall lets through) both select IPv4 packets by addresses, protocol and ports. They
read the same rules, written the same way, and match them with the same kernel.

Syntax (:class:`FlowRule`; every field optional, omitted = ``"any"``)
----------------------------------------------------------------------
* ``action``: ``"allow"`` (default) or ``"deny"``. The Rx service sends allowed packets into the
  graph and counts denied ones as ``rx_rule_drop``; L3L4Filter passes allowed packets on ``out``
  and drops denied ones as ``drop:denied``.
* ``src``/``dst``: ``"any"``, an IPv4 address (``"10.1.2.3"``, a /32) or a CIDR prefix
  (``"10.0.0.0/8"``); a prefix with host bits set is an error that says which prefix was meant.
* ``proto``: ``"any"``, ``"tcp"``, ``"udp"``, ``"icmp"`` or a number 0..255 (a number with a
  name is stored as the name: ``6`` is ``"tcp"``).
* ``sport``/``dport``: ``"any"``, a port (``80`` or ``"80"``) or an inclusive range ``"lo-hi"``
  (``"1000-2000"``). Ports need ``proto`` tcp, udp or any.

Input spellings of the Rx service before this model (``action`` ``"accept"``/``"drop"``, a port
range as a pair ``[lo, hi]``, ``null`` for any) are read as their equivalents above and stored in
the syntax above, so what an API echoes back is always in one form.

Matching: every given field must match. A rule with a port constraint matches only packets whose
TCP/UDP ports are visible (TCP or UDP, unfragmented or the first fragment, both ports inside the
frame): a non-first fragment or an ICMP packet never matches a port rule. The users decide what
happens when no rule matches (the Rx service counts ``unmatched``; L3L4Filter applies its default).

Compiled form: :func:`rule_table` turns an ordered rule list into an int64 table (one row per rule,
columns below), :func:`first_match` scans it in order inside a numba kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import AddressValueError, IPv4Network, NetmaskValueError
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from micronf.packet.headers import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP
from micronf.packet.jit import kernel

__all__ = ["ACTION", "NCOLS", "PROTOCOLS", "Action", "FlowRule", "first_match", "rule_table"]

Action = Literal["allow", "deny"]
PROTOCOLS = {"icmp": IPPROTO_ICMP, "tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}
_LEGACY_ACTIONS = {"accept": "allow", "drop": "deny"}  # the Rx service's words before this model

# Columns of the compiled rule table (one int64 row per rule).
ACTION = 0  # what the user compiled in for the rule's action (a verdict code)
SRC_NET, SRC_MASK, DST_NET, DST_MASK = 1, 2, 3, 4
PROTO = 5  # protocol number, -1 = any
PORTS = 6  # 1 if the rule constrains ports (then only packets with visible TCP/UDP ports match)
SPORT_LO, SPORT_HI, DPORT_LO, DPORT_HI = 7, 8, 9, 10
NCOLS = 11


def _network(value: str) -> IPv4Network:
    """``value`` ("any", an address or a CIDR prefix) as a network; "any" is 0.0.0.0/0."""
    return IPv4Network("0.0.0.0/0" if value == "any" else value)


def _port_range(value: str) -> tuple[int, int]:
    """``value`` ("any", "80" or "1000-2000") as an inclusive range; "any" is 0-65535."""
    if value == "any":
        return (0, 65535)
    lo, _, hi = value.partition("-")
    return (int(lo), int(hi or lo))


class FlowRule(BaseModel):
    """One 5-tuple rule: every given field must match; fields left at "any" match everything."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    action: Action = Field(
        default="allow", description='What to do with a matching packet: "allow" (default) or "deny".'
    )
    src: str = Field(default="any", description='Source prefix: "any", an address or CIDR like "10.0.0.0/8".')
    dst: str = Field(default="any", description='Destination prefix: "any", an address or CIDR like "10.0.0.0/8".')
    proto: str | int = Field(
        default="any", description='IP protocol: "any", "tcp", "udp", "icmp" or a number 0..255 (6 is "tcp").'
    )
    sport: str = Field(
        default="any", description='TCP/UDP source port: "any", a port like 80 or "80", or a range "1000-2000".'
    )
    dport: str = Field(
        default="any", description='TCP/UDP destination port: "any", a port like 80 or "80", or a range "1000-2000".'
    )

    @field_validator("action", mode="before")
    @classmethod
    def _action(cls, v: Any) -> Any:
        return _LEGACY_ACTIONS.get(v, v) if isinstance(v, str) else v

    @field_validator("src", "dst", mode="before")
    @classmethod
    def _cidr(cls, v: Any) -> str:
        text = "any" if v is None else str(v).strip().lower()
        if text == "any":
            return text
        try:
            return str(IPv4Network(text))
        except (AddressValueError, NetmaskValueError) as exc:
            raise ValueError(f'{v!r} is not "any", an IPv4 address or a CIDR prefix ({exc})') from None
        except ValueError:  # only left: host bits set
            fixed = IPv4Network(text, strict=False)
            raise ValueError(f"{v!r} has host bits set: did you mean {str(fixed)!r}?") from None

    @field_validator("proto", mode="before")
    @classmethod
    def _proto(cls, v: Any) -> str | int:
        text = "any" if v is None else str(v).strip().lower()
        if text.isdigit() and not isinstance(v, bool) and int(text) <= 255:
            number = int(text)
            return next((name for name, num in PROTOCOLS.items() if num == number), number)
        if text == "any" or text in PROTOCOLS:
            return text
        raise ValueError(f'{v!r} is not "any", "tcp", "udp", "icmp" or a protocol number 0..255')

    @field_validator("sport", "dport", mode="before")
    @classmethod
    def _ports(cls, v: Any) -> str:
        if v is None:
            return "any"
        pair = isinstance(v, list | tuple) and len(v) == 2 and all(type(x) is int for x in v)
        text = f"{v[0]}-{v[1]}" if pair else str(v).strip().lower()  # [lo, hi]: the Rx service's range
        if text == "any":
            return text
        lo, sep, hi = (part.strip() for part in text.partition("-"))
        if isinstance(v, bool) or not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f'{v!r} is not "any", a port 0..65535 or a range "lo-hi"')
        a, b = int(lo), int(hi or lo)
        if not a <= b <= 65535:
            raise ValueError(f"{v!r} is not a port range within 0..65535, lowest first")
        return f"{a}-{b}" if sep else str(a)

    @model_validator(mode="after")
    def _ports_need_tcp_or_udp(self) -> FlowRule:
        if (self.sport != "any" or self.dport != "any") and self.proto not in ("any", "tcp", "udp"):
            raise ValueError(f"ports only exist for tcp and udp, but the rule has proto {self.proto!r}")
        return self

    @property
    def proto_number(self) -> int:
        """The protocol number, -1 for any."""
        return self.proto if isinstance(self.proto, int) else PROTOCOLS.get(self.proto, -1)

    @property
    def is_exact(self) -> bool:
        """Host addresses, a protocol and single ports: the rule names exactly one flow."""
        return (self.src.endswith("/32") and self.dst.endswith("/32") and self.proto != "any"
                and self.sport.isdigit() and self.dport.isdigit())

    def row(self, allow: int, deny: int) -> list[int]:
        """The rule as a row of the compiled table; ``allow``/``deny`` are the codes of its action."""
        src, dst = _network(self.src), _network(self.dst)
        row = [0] * NCOLS
        row[ACTION] = allow if self.action == "allow" else deny
        row[SRC_NET], row[SRC_MASK] = int(src.network_address), int(src.netmask)
        row[DST_NET], row[DST_MASK] = int(dst.network_address), int(dst.netmask)
        row[PROTO] = self.proto_number
        row[PORTS] = int(self.sport != "any" or self.dport != "any")
        row[SPORT_LO], row[SPORT_HI] = _port_range(self.sport)
        row[DPORT_LO], row[DPORT_HI] = _port_range(self.dport)
        return row


def rule_table(rules: Sequence[FlowRule], allow: int, deny: int) -> npt.NDArray[np.int64]:
    """The ordered rules as an int64 table [len(rules), NCOLS] for :func:`first_match`."""
    return np.array([r.row(allow, deny) for r in rules], dtype=np.int64).reshape(-1, NCOLS)


@kernel
def first_match(rules: npt.NDArray[np.int64], src: int, dst: int, proto: int, sport: int, dport: int) -> int:
    """Index of the first rule matching the packet, or ``len(rules)`` if none does.

    ``sport``/``dport`` are -1 when the packet has no visible TCP/UDP ports (see the module
    docstring); ``rules[i, ACTION]`` is then what to do.
    """
    n_rules: int = rules.shape[0]
    for r in range(n_rules):
        row = rules[r]
        if (src & row[SRC_MASK]) != row[SRC_NET] or (dst & row[DST_MASK]) != row[DST_NET]:
            continue
        if row[PROTO] >= 0 and row[PROTO] != proto:
            continue
        if row[PORTS] != 0 and not (
            sport >= 0
            and row[SPORT_LO] <= sport <= row[SPORT_HI]
            and row[DPORT_LO] <= dport <= row[DPORT_HI]
        ):
            continue
        return r
    return n_rules
