"""PacketSizeCounter: a histogram of frame sizes (paper Fig. 1(b), Monitoring function)."""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field, field_validator

from micronf.nf import (
    CounterArray,
    Descriptor,
    Handles,
    MicroNF,
    NFConfig,
    Out,
    PoolArrays,
    VerdictArray,
    borrowed,
    borrowed_pool,
    pkt_frame,
)


class State(NamedTuple):
    bounds: npt.NDArray[np.int64]  # inclusive upper bounds of the bins (counter b counts bin b)


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: Handles, n: int, verdicts: VerdictArray, state: State,
           counters: CounterArray) -> None:
    p = borrowed_pool(p)  # no refcounting of the frame per packet
    bounds = borrowed(state.bounds)
    nb = bounds.shape[0]
    hist = np.zeros(nb + 1, dtype=np.int64)
    for i in range(n):
        size = pkt_frame(p, handles[i]).shape[0]
        b = 0
        while b < nb and size > bounds[b]:
            b += 1
        hist[b] += 1
        verdicts[i] = Out.out
    for b in range(nb + 1):
        counters[b] += hist[b]


class PacketSizeCounter(MicroNF):
    """Count frames per size bin, like the packet size distribution counter of a monitoring function.

    Config:
        bounds: inclusive upper bounds of the bins in bytes, strictly increasing (default
            64, 128, 256, 512, 1024, 1518).
    Ports:
        out: every frame, unchanged.
    Counters:
        le_<b>: frames of at most ``b`` bytes and more than the previous bound, one per bound.
        gt_<last>: frames longer than the last bound.
    Notes:
        The size is the frame length as stored in the pool (Ethernet header to end of payload,
        no preamble and no 4-byte FCS: a minimum-size 64-byte wire frame counts as 60 bytes).
        Only the length in the packet metadata is read, never the frame; nothing is dropped.
        Cost: a linear scan over the bounds per packet, counters bumped once per batch.
    """

    class Config(NFConfig):
        """Config of PacketSizeCounter."""

        bounds: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
            default=[64, 128, 256, 512, 1024, 1518],
            min_length=1,
            description="Inclusive upper bounds of the size bins in bytes, strictly increasing, each 1..65535; "
            "one more bin counts the frames above the last bound.",
        )

        @field_validator("bounds")
        @classmethod
        def _strictly_increasing(cls, v: list[int]) -> list[int]:
            for a, b in pairwise(v):
                if b <= a:
                    raise ValueError(f"bounds must be strictly increasing, got {a} then {b}")
            return v

    descriptor = Descriptor()
    config: Config
    kernel = kernel

    def state(self) -> State:
        return State(np.array(self.config.bounds, dtype=np.int64))

    def counter_names(self) -> tuple[str, ...]:
        bounds = self.config.bounds
        return (*(f"le_{b}" for b in bounds), f"gt_{bounds[-1]}")
