"""MacSwapper: swap the source and destination MAC addresses (paper §VII-A3)."""

from __future__ import annotations

from enum import auto

from numba import njit

from micronf.nf import (
    Access,
    CounterArray,
    Descriptor,
    DropReasons,
    Handles,
    MicroNF,
    NoState,
    Out,
    PoolArrays,
    VerdictArray,
    borrowed_pool,
    pkt_frame,
)


class Drop(DropReasons):
    runt = auto()


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: Handles, n: int, verdicts: VerdictArray, state: NoState,
           counters: CounterArray) -> None:
    p = borrowed_pool(p)  # no refcounting of the frame per packet
    for i in range(n):
        f = pkt_frame(p, handles[i])
        if f.shape[0] < 12:
            verdicts[i] = Drop.runt
            continue
        for j in range(6):
            t = f[j]
            f[j] = f[6 + j]
            f[6 + j] = t
        verdicts[i] = Out.out


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
    Drop = Drop
    kernel = kernel
