"""Point-to-point ports (§VI-D2): one SPSC ring between exactly two µNFs."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.ring import ring_dequeue, ring_enqueue
from micronf.ports.base import Handles, keep_unsent

RingCtrl = npt.NDArray[np.int64]
RingSlots = npt.NDArray[np.uint32]


@njit(cache=True, nogil=True)
def pp_rx(rctrl: RingCtrl, rslots: RingSlots, ring: int, dst: Handles, max_n: int) -> int:
    """Take up to ``max_n`` handles from ring ``ring``."""
    got: int = ring_dequeue(rctrl[ring], rslots[ring], dst, max_n)
    return got


@njit(cache=True, nogil=True)
def pp_tx(rctrl: RingCtrl, rslots: RingSlots, ring: int, handles: Handles, n: int) -> int:
    """Put ``handles[0:n]`` on ring ``ring``; returns how many did not fit (moved to the front)."""
    sent = ring_enqueue(rctrl[ring], rslots[ring], handles, n)
    left: int = keep_unsent(handles, sent, n)
    return left
