"""Everything a µNF author imports: the one public surface for writing, and testing, a µNF.

A µNF is a module with a numba kernel and a :class:`MicroNF` subclass (docs/authoring.md walks
through one)::

    from enum import auto
    from typing import NamedTuple

    from numba import njit

    from micronf.nf import (Access, CounterArray, Descriptor, DropReasons, Handles, MicroNF, Out,
                            PoolArrays, VerdictArray, borrowed_pool, pkt_frame)

    class Drop(DropReasons):
        runt = auto()

    class State(NamedTuple): ...

    @njit(cache=True, nogil=True)
    def kernel(p: PoolArrays, handles: Handles, n: int, verdicts: VerdictArray, state: State,
               counters: CounterArray) -> None:
        ...  # verdicts[i] = Out.out or Drop.runt

    class MyNF(MicroNF):
        descriptor = Descriptor(l2=Access.WRITE, may_drop=True)
        Drop = Drop
        kernel = kernel

The names below are pinned by ``tests/nfs/test_public_api.py``: the implementation may move,
this module keeps them. The packet helpers (``micronf.packet``: headers, checksums, flow hash,
HTTP parsing) come on top.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from micronf.dataplane.atomics import cycles, usleep
from micronf.dataplane.borrow import borrowed, borrowed_pool
from micronf.dataplane.pool import M_HASH, PoolArrays, pkt_frame, pkt_set_len
from micronf.runtime.descriptor import Access, Descriptor
from micronf.runtime.harness import KernelRun, run_kernel
from micronf.runtime.nf import PLUGINS_ENV, KernelState, MicroNF, NFConfig, NFConfigError, NoState
from micronf.runtime.verdict import Counters, DropReasons, Labels, Out, Verdict

Handles = npt.NDArray[np.uint32]
"""The kernel's ``handles``: packet buffers of the batch (``handles[i]`` for ``i < n``)."""
VerdictArray = npt.NDArray[np.int32]
"""The kernel's ``verdicts``: one per packet, a ``Label`` or ``Drop`` member."""
CounterArray = npt.NDArray[np.int64]
"""The kernel's ``counters``: one slot per counter name, in shared memory."""

__all__ = [
    "M_HASH",
    "PLUGINS_ENV",
    "Access",
    "CounterArray",
    "Counters",
    "Descriptor",
    "DropReasons",
    "Handles",
    "KernelRun",
    "KernelState",
    "Labels",
    "MicroNF",
    "NFConfig",
    "NFConfigError",
    "NoState",
    "Out",
    "PoolArrays",
    "Verdict",
    "VerdictArray",
    "borrowed",
    "borrowed_pool",
    "cycles",
    "pkt_frame",
    "pkt_set_len",
    "run_kernel",
    "usleep",
]
