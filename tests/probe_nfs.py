"""Test-only µNFs (loaded in µNF processes through $MICRONF_NF_MODULES=tests.probe_nfs).

``Stamp`` writes one marker byte and may burn cycles (a parallel branch of known speed);
``CheckStamps`` labels a packet ``ok`` only if every expected marker byte is there, which is how
the Sync tests see a packet that passed the join before all branches were done with it.
"""

from __future__ import annotations

from enum import auto
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field

from micronf.nf import Access, Counters, Descriptor, Labels, MicroNF, NFConfig, Out, PoolArrays, cycles, pkt_frame


class Params(NamedTuple):
    params: npt.NDArray[np.int64]


class Expect(NamedTuple):
    offsets: npt.NDArray[np.int64]
    value: npt.NDArray[np.int64]


class Label(Labels):
    ok = auto()
    missing = auto()


class Counter(Counters):
    missing = auto()


class StampConfig(NFConfig):
    offset: int = Field(ge=0)
    value: int = Field(0xAA, ge=0, le=255)
    cycles: int = Field(0, ge=0)


@njit(cache=True, nogil=True)
def _stamp(p: PoolArrays, handles: Any, n: int, verdicts: Any, state: Any, counters: Any) -> None:
    off, value, spin = state.params[0], state.params[1], state.params[2]
    for i in range(n):
        f = pkt_frame(p, handles[i])
        if spin > 0:
            t0 = cycles()
            while cycles() - t0 < spin:
                pass
        if off < f.shape[0]:
            f[off] = value
        verdicts[i] = Out.out


class Stamp(MicroNF):
    """Write ``value`` at byte ``offset`` of every frame, after burning ``cycles``."""

    descriptor = Descriptor(payload=Access.WRITE)
    Config = StampConfig
    kernel = _stamp

    def state(self) -> Params:
        c = self.config
        assert isinstance(c, StampConfig)
        return Params(np.array([c.offset, c.value, c.cycles], dtype=np.int64))


class CheckStampsConfig(NFConfig):
    offsets: list[int]
    value: int = 0xAA


@njit(cache=True, nogil=True)
def _check(p: PoolArrays, handles: Any, n: int, verdicts: Any, state: Any, counters: Any) -> None:
    offsets, value = state.offsets, state.value[0]
    for i in range(n):
        f = pkt_frame(p, handles[i])
        ok = True
        for off in offsets:
            if off >= f.shape[0] or f[off] != value:
                ok = False
        verdicts[i] = Label.ok if ok else Label.missing
        if not ok:
            counters[Counter.missing] += 1


class CheckStamps(MicroNF):
    """Label ``ok`` when every byte in ``offsets`` holds ``value``, else ``missing``."""

    descriptor = Descriptor(payload=Access.READ)
    Config = CheckStampsConfig
    Label = Label
    Counter = Counter
    kernel = _check

    def state(self) -> Expect:
        c = self.config
        assert isinstance(c, CheckStampsConfig)
        return Expect(np.array(c.offsets, dtype=np.int64), np.array([c.value], dtype=np.int64))
