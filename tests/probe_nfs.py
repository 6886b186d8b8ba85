"""Test-only µNFs (loaded in µNF processes through $MICRONF_NF_MODULES=tests.probe_nfs).

``Stamp`` writes one marker byte and may burn cycles (a parallel branch of known speed);
``CheckStamps`` labels a packet ``ok`` only if every expected marker byte is there, which is how
the Sync tests see a packet that passed the join before all branches were done with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field

from micronf.dataplane.atomics import cycles
from micronf.dataplane.pool import PoolArrays, pkt_frame
from micronf.runtime.descriptor import Access, Descriptor
from micronf.runtime.nf import MicroNF, NFConfig


class StampConfig(NFConfig):
    offset: int = Field(ge=0)
    value: int = Field(0xAA, ge=0, le=255)
    cycles: int = Field(0, ge=0)


@njit(cache=True, nogil=True)
def _stamp(p: PoolArrays, handles: Any, n: int, verdicts: Any, state: Any, counters: Any) -> None:
    off, value, spin = state[0][0], state[0][1], state[0][2]
    for i in range(n):
        f = pkt_frame(p, handles[i])
        if spin > 0:
            t0 = cycles()
            while cycles() - t0 < spin:
                pass
        if off < f.shape[0]:
            f[off] = value
        verdicts[i] = 0


class Stamp(MicroNF):
    """Write ``value`` at byte ``offset`` of every frame, after burning ``cycles``."""

    descriptor = Descriptor(payload=Access.WRITE)
    Config = StampConfig
    kernel = _stamp

    def state(self) -> tuple[npt.NDArray[Any], ...]:
        c = self.config
        assert isinstance(c, StampConfig)
        return (np.array([c.offset, c.value, c.cycles], dtype=np.int64),)


class CheckStampsConfig(NFConfig):
    offsets: list[int]
    value: int = 0xAA


@njit(cache=True, nogil=True)
def _check(p: PoolArrays, handles: Any, n: int, verdicts: Any, state: Any, counters: Any) -> None:
    offsets, value = state[0], state[1][0]
    for i in range(n):
        f = pkt_frame(p, handles[i])
        ok = True
        for off in offsets:
            if off >= f.shape[0] or f[off] != value:
                ok = False
        verdicts[i] = 0 if ok else 1
        if not ok:
            counters[0] += 1


class CheckStamps(MicroNF):
    """Label ``ok`` when every byte in ``offsets`` holds ``value``, else ``missing``."""

    descriptor = Descriptor(payload=Access.READ)
    Config = CheckStampsConfig
    labels = ("ok", "missing")
    kernel = _check

    def state(self) -> tuple[npt.NDArray[Any], ...]:
        c = self.config
        assert isinstance(c, CheckStampsConfig)
        return (np.array(c.offsets, dtype=np.int64), np.array([c.value], dtype=np.int64))

    def counter_names(self) -> tuple[str, ...]:
        return ("missing",)
