"""LoadBalancedEgressPort (§VI-D6): spread packets over the instances of a scaled-out µNF.

Two policies: round-robin (the paper's), and flow affinity: the packet's flow hash (``M_HASH``,
computed from the 5-tuple when 0) picks the instance through jump consistent hashing (Lamping &
Veach, 2014), so all packets of a flow go to one instance and growing from N to N+1 instances
moves only 1/(N+1) of the flows — stateful µNFs keep their flows when the agent scales out.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.pool import M_HASH, PoolArrays, pkt_frame
from micronf.dataplane.ring import ring_enqueue
from micronf.packet.flowhash import frame_flow_hash, jump_hash
from micronf.ports.base import MAX_FANOUT, Handles
from micronf.ports.pp import RingCtrl, RingSlots

_JUMP_MUL = np.uint64(2862933555777941757)



@njit(cache=True, nogil=True)
def packet_flow_hash(p: PoolArrays, h: int) -> int:
    """The packet's flow hash from metadata, computed from its 5-tuple (and stored) when absent."""
    fh: int = p.words[h, M_HASH]
    if fh == 0:
        fh = frame_flow_hash(pkt_frame(p, h))
        p.words[h, M_HASH] = fh
    return fh


@njit(cache=True, nogil=True)
def lb_tx(p: PoolArrays, rctrl: RingCtrl, rslots: RingSlots, rings: npt.NDArray[np.int64], n_rings: int,
          by_flow: bool, cursor: npt.NDArray[np.int64], slot: int, handles: Handles, n: int,
          scratch: npt.NDArray[np.uint32]) -> int:
    """Distribute ``handles[0:n]`` over ``rings[0:n_rings]``; returns how many did not fit (moved to the
    front). ``cursor[slot]`` is the round-robin position; ``scratch`` is [MAX_FANOUT, >= n]."""
    counts = np.zeros(MAX_FANOUT, dtype=np.int64)
    start = cursor[slot]
    for i in range(n):
        h = handles[i]
        m = jump_hash(packet_flow_hash(p, h), n_rings) if by_flow else (start + i) % n_rings
        scratch[m, counts[m]] = h
        counts[m] += 1
    cursor[slot] = (start + n) % n_rings
    left = 0
    for m in range(n_rings):
        sent = ring_enqueue(rctrl[rings[m]], rslots[rings[m]], scratch[m], counts[m])
        for j in range(sent, counts[m]):
            handles[left] = scratch[m, j]
            left += 1
    return left
