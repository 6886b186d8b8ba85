"""BusyLoop: burn a fixed number of CPU cycles per packet (paper §VII-B3 and §VII-B4)."""

from __future__ import annotations

from enum import auto
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field

from micronf.nf import (
    CounterArray,
    Counters,
    Descriptor,
    Handles,
    MicroNF,
    NFConfig,
    Out,
    PoolArrays,
    VerdictArray,
    cycles,
    usleep,
)


class Counter(Counters):
    cycles_spent = auto()


class State(NamedTuple):
    params: npt.NDArray[np.int64]  # [cycles per packet, 1 to sleep instead of spinning]


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: Handles, n: int, verdicts: VerdictArray, state: State,
           counters: CounterArray) -> None:
    budget = state.params[0]
    start = cycles()
    now = start
    if state.params[1] == 1:  # sleep: the same time per packet, without holding the CPU
        deadline = start + n * budget
        while now < deadline:
            usleep(50)
            now = cycles()
        for i in range(n):
            verdicts[i] = Out.out
        counters[Counter.cycles_spent] += now - start
        return
    for i in range(n):
        deadline = now + budget
        while now < deadline:
            now = cycles()
        verdicts[i] = Out.out
    counters[Counter.cycles_spent] += now - start


class BusyLoop(MicroNF):
    """Spin on the CPU cycle counter for a configurable number of cycles per packet.

    Config:
        cycles: cycles to burn per packet, 0..10,000,000 (default 100; 0 disables the loop).
        mode: ``spin`` (default: the CPU is busy all along) or ``sleep`` (the batch takes as long,
            but the process sleeps in 50 µs steps: a µNF limited by something other than its CPU).
    Ports:
        out: every frame, unchanged.
    Counters:
        cycles_spent: cycle-counter ticks spent spinning, over all packets.
    Notes:
        Emulates the per-packet processing cost of a heavier µNF, as in the paper's parallelism
        and path-length experiments (100 to 700 cycles per packet). The loop polls the time-stamp
        counter (``rdtsc``), which ticks at the nominal CPU frequency, so a packet costs at least
        ``cycles`` ticks (plus one counter read, ~20-40 ticks); each packet's budget starts when
        the previous one's ended, so time spent preempted counts against the budget. The packet
        is never read or written and nothing is dropped. ``sleep`` mode makes a slow µNF whose
        speed does not depend on how loaded the machine is (tests of the autoscaler use it).
    """

    class Config(NFConfig):
        """Config of BusyLoop."""

        cycles: int = Field(
            default=100,
            ge=0,
            le=10_000_000,
            description="CPU cycles (time-stamp counter ticks) to burn per packet; 0 = none.",
        )
        mode: Literal["spin", "sleep"] = Field(
            default="spin", description="spin on the CPU, or sleep for the same time per batch"
        )

    descriptor = Descriptor()
    Counter = Counter
    config: Config
    kernel = kernel

    def state(self) -> State:
        return State(np.array([self.config.cycles, int(self.config.mode == "sleep")], dtype=np.int64))
