"""MacSwapper: swap the source and destination MAC addresses (paper §VII-A3)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.borrow import borrowed_pool
from micronf.dataplane.pool import PoolArrays, pkt_frame
from micronf.runtime.descriptor import Access, Descriptor
from micronf.runtime.nf import MicroNF, drop_code

_OUT = 0
_RUNT = drop_code(0)


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: npt.NDArray[np.uint32], n: int, verdicts: npt.NDArray[np.int32],
           state: tuple[npt.NDArray[Any], ...], counters: npt.NDArray[np.int64]) -> None:
    p = borrowed_pool(p)  # no refcounting of the frame per packet
    for i in range(n):
        f = pkt_frame(p, handles[i])
        if f.shape[0] < 12:
            verdicts[i] = _RUNT
            continue
        for j in range(6):
            t = f[j]
            f[j] = f[6 + j]
            f[6 + j] = t
        verdicts[i] = _OUT


class MacSwapper(MicroNF):
    """Swap the Ethernet source and destination addresses, like Click's EtherMirror.

    Config:
        (none)
    Ports:
        out: every frame of at least 12 bytes, addresses swapped.
        drop:runt: frames shorter than 12 bytes (two MAC addresses).
    Counters:
        (none)
    Notes:
        Frames shorter than two MAC addresses are dropped as ``runt``. Cost: a 12-byte swap on the
        first cache line of the frame.
    """

    descriptor = Descriptor(l2=Access.WRITE, may_drop=True)
    drop_reasons = ("runt",)
    kernel = kernel
