"""BranchEgressPort (§VI-D3): hand every packet to each µNF of a parallel group.

The handle (not the packet) is copied into one ring per branch, after the packet's parallel-sync
counter (``M_SYNC``) is reset to 0. Admission is all-or-nothing per packet: only as many packets
as fit in *every* branch ring are sent, so a packet is never in some branches and not others
(the Sync port would wait for it forever).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.pool import M_SYNC, PoolArrays
from micronf.dataplane.ring import ring_enqueue, ring_free_space
from micronf.ports.base import Handles, keep_unsent
from micronf.ports.pp import RingCtrl, RingSlots


@njit(cache=True, nogil=True)
def branch_tx(p: PoolArrays, rctrl: RingCtrl, rslots: RingSlots, rings: npt.NDArray[np.int64], n_rings: int,
              handles: Handles, n: int) -> int:
    """Send ``handles[0:n]`` to every ring in ``rings[0:n_rings]``; returns how many did not fit."""
    k = n
    for b in range(n_rings):
        k = min(k, ring_free_space(rctrl[rings[b]]))
    for i in range(k):
        p.words[handles[i], M_SYNC] = 0
    for b in range(n_rings):
        ring_enqueue(rctrl[rings[b]], rslots[rings[b]], handles, k)  # fits: checked above, we are the producer
    left: int = keep_unsent(handles, k, n)
    return left
