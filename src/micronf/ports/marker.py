"""MarkerEgressPort (§VI-D4): the egress of a µNF inside a parallel group.

Marking atomically increments the packet's parallel-sync counter once this µNF is done with the
packet. One branch of the group (the *primary*) then forwards the handle to the Sync port; the
others only mark (``mark_only``): the handle travels once, so the Sync port sees each packet
once and in the primary branch's order (which is arrival order).

Marking happens exactly once per packet, before the first send attempt, so a retried send never
marks twice. A marker's ring must not drop (other branches may still be reading the packet):
the runtime always applies back-pressure on it.
"""

from __future__ import annotations

from numba import njit

from micronf.dataplane.atomics import fetch_add
from micronf.dataplane.pool import M_SYNC, PoolArrays
from micronf.ports.base import Handles


@njit(cache=True, nogil=True)
def mark(p: PoolArrays, handles: Handles, n: int) -> None:
    """Atomically add one to the sync counter of each packet (this branch has finished with it)."""
    for i in range(n):
        fetch_add(p.words[handles[i]], M_SYNC, 1)
