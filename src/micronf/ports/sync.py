"""SyncIngressPort (§VI-D5): release a packet only after every parallel branch processed it.

It reads the primary branch's ring and passes on, in order, the packets whose sync counter has
reached the number of branches; it stops at the first packet still being processed elsewhere
(head-of-line), so order is preserved and nothing passes early. It never waits: a burst may be
short or empty.
"""

from __future__ import annotations

from numba import njit

from micronf.dataplane.atomics import load_acquire
from micronf.dataplane.pool import M_SYNC, PoolArrays
from micronf.dataplane.ring import ring_consume, ring_peek
from micronf.ports.base import Handles
from micronf.ports.pp import RingCtrl, RingSlots


@njit(cache=True, nogil=True)
def sync_rx(p: PoolArrays, rctrl: RingCtrl, rslots: RingSlots, ring: int, need: int, dst: Handles,
            max_n: int) -> int:
    """Take the longest prefix (<= max_n) of ring ``ring`` whose packets all have ``need`` marks."""
    seen = ring_peek(rctrl[ring], rslots[ring], dst, max_n)
    k = 0
    while k < seen and load_acquire(p.words[dst[k]], M_SYNC) >= need:
        k += 1
    if k > 0:
        ring_consume(rctrl[ring], k)
    return k
