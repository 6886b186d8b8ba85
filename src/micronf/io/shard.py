"""Flow sharding of an input: which frames one of ``n`` run-to-completion replicas takes.

Why: replicas of a graph (one process per core, each Rx → every µNF → Tx, see
``micronf.services.replica``) must each see whole flows, so per-flow state (a counter, a load
balancer's choice) stays on one replica and per-flow order holds. Shard ``i`` of ``n`` takes
exactly the frames whose ``jump_hash(frame_flow_hash(frame), n) == i``: the flow hash the Rx
service stores in every packet and the jump hash it spreads a scaled-out entry with
(:mod:`micronf.packet.flowhash`), so the shards agree with everything else that spreads flows.

- In-memory sources (pcap replay, generator): :func:`shard_mask` picks the shard's frames of the
  trace once, order kept; the source replays that sub-trace. A frame budget of the whole
  (unsharded) sequence becomes the shard's part of it (:func:`selected_frames`), so the shards together
  send exactly the budget.
- AF_PACKET: the kernel spreads the frames over the replicas' sockets, which join one
  ``PACKET_FANOUT`` group in ``PACKET_FANOUT_HASH`` mode (``fanout_group``): the kernel's flow hash
  (symmetric in the addresses) keeps a flow on one socket; which socket is the kernel's choice,
  not the jump hash's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from micronf.io.trace import Trace
from micronf.packet.flowhash import frame_flow_hash, jump_hash
from micronf.packet.jit import kernel

__all__ = ["WHOLE", "Shard", "flow_hashes", "selected_frames", "shard_mask"]

Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``; ``fanout_group``: the AF_PACKET fanout group id (0..65535) the
    replicas of one graph on one interface share (None: no fanout, e.g. one replica)."""

    index: int = 0
    count: int = 1
    fanout_group: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: need 0 <= shard < shards")
        if self.fanout_group is not None and not 0 <= self.fanout_group <= 0xFFFF:
            raise ValueError(f"fanout group {self.fanout_group}: need 0..65535")

    @property
    def whole(self) -> bool:
        """True when this shard takes every frame."""
        return self.count == 1


WHOLE = Shard()  # the whole input: one replica, or a graph that is not replicated


@kernel
def _hashes(data: npt.NDArray[np.uint8], off: npt.NDArray[np.int64], length: npt.NDArray[np.int32],
            out: npt.NDArray[np.uint32]) -> None:
    for i in range(off.shape[0]):
        o = off[i]
        out[i] = frame_flow_hash(data[o : o + length[i]])


@kernel
def _buckets(hashes: npt.NDArray[np.uint32], n: int, out: npt.NDArray[np.int64]) -> None:
    for i in range(hashes.shape[0]):
        out[i] = jump_hash(hashes[i], n)


def flow_hashes(trace: Trace) -> npt.NDArray[np.uint32]:
    """Every frame's flow hash (what the Rx service would compute for it), in one compiled pass."""
    out = np.empty(len(trace), np.uint32)
    _hashes(trace.data, trace.offsets, trace.lengths, out)
    return out


def shard_mask(hashes: npt.NDArray[np.uint32], shard: Shard) -> Mask:
    """Which frames (by their flow ``hashes``, see :func:`flow_hashes`) belong to ``shard``."""
    if shard.whole:
        return np.ones(hashes.shape[0], np.bool_)
    buckets = np.empty(hashes.shape[0], np.int64)
    _buckets(hashes, shard.count, buckets)
    mask: Mask = buckets == shard.index
    return mask


def selected_frames(mask: Mask, frames: int) -> int:
    """How many of the first ``frames`` frames of the endless replay of a trace (frame ``j`` is
    frame ``j % len(mask)`` of the trace) are selected by ``mask``."""
    m = int(mask.shape[0])
    if m == 0:
        return 0
    loops, rest = divmod(frames, m)
    return loops * int(np.count_nonzero(mask)) + int(np.count_nonzero(mask[:rest]))
