"""Replay frames held in memory (a pcap trace) as Rx batches; write Tx frames to pcap or nowhere.

Why: the Rx service calls ``recv`` in a loop, up to tens of millions of frames per second, so a
file- or generator-backed source must cost a few microseconds per *call* and nothing per frame.
Both in-memory sources (this module's pcap replay and :mod:`micronf.io.generator`) keep every
frame in one contiguous buffer indexed by offset/length arrays (a :class:`~micronf.io.trace.Trace`)
and hand out consecutive *windows* of it: :class:`FrameReplay` returns views of the index arrays
and the buffer itself, never a copy, and a window never crosses the end of the trace (the next
call starts again at frame 0). The Rx service copies the frames into its pool.

What limits a window, besides ``max_frames`` and the end of the trace:

* a frame budget (a pcap looped N times, a generator's ``count``), after which the source is
  ``exhausted``;
* an optional :class:`Pacer` that says how many frames may go *now*: :class:`TimestampPacer`
  honours the trace's inter-packet gaps (``timing="original"``), the generator's token bucket
  enforces ``rate_pps``. The clock is injectable (``clock() -> ns``), so tests step time by hand.

``recv`` never sleeps: when the pacer holds frames back it returns an empty batch and the caller
idles (the Rx service yields). Per call: a handful of integer operations, two array slices and,
with a pacer, one clock read (about 1-2 µs in CPython).

Sinks: :class:`PcapTx` writes pool frames with :meth:`~micronf.io.pcap_write.PcapWriter.write_pool`
(one numba gather and one ``write`` per batch); :class:`NullTx` takes and counts every frame (a
sink for benchmarks). Both count frames and bytes with one numba pass over the batch's lengths.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import BaseModel, ConfigDict, Field, model_validator

from micronf.dataplane.pool import PoolArrays
from micronf.io.backend import I64, FrameBatch, Handles, empty_batch
from micronf.io.linktype import read_ethernet
from micronf.io.pcap_write import PcapWriter
from micronf.io.shard import WHOLE, Shard, flow_hashes, selected_frames, shard_mask
from micronf.io.trace import Trace, batch_bytes

__all__ = [
    "Clock",
    "FrameReplay",
    "NullTx",
    "NullTxSpec",
    "Pacer",
    "PcapRx",
    "PcapRxSpec",
    "PcapTx",
    "PcapTxSpec",
    "TimestampPacer",
    "batch_bytes",
]

Clock = Callable[[], int]
"""A monotonic clock in nanoseconds (``time.monotonic_ns`` unless a test injects its own)."""

_UNLIMITED = 1 << 62


class Pacer(Protocol):
    """Says how many frames a paced source may hand out at a given time."""

    def allowed(self, now_ns: int, sent: int) -> int:
        """How many more frames may go at ``now_ns``, ``sent`` frames having gone already (>= 0)."""
        ...

    def took(self, n: int) -> None:
        """``n`` frames went out (at most what :meth:`allowed` just returned)."""
        ...

    def resume(self, sent: int) -> None:
        """Pace on from frame ``sent`` (the source resumes there, see :meth:`FrameReplay.resume`)."""
        ...


@njit(cache=True, nogil=True)
def _frames_due(rel: I64, period: int, elapsed: int) -> int:
    """How many frames of an endless loop over a trace are due ``elapsed`` ns after its start.

    Frame ``i`` of loop ``k`` is due at ``k * period + rel[i]`` (``rel`` non-decreasing, within
    ``0..period``, ``period > 0``). Compiled: ``np.searchsorted`` from Python costs several µs per call.
    """
    loops = elapsed // period
    return int(loops * rel.shape[0] + np.searchsorted(rel, elapsed - loops * period, side="right"))


class TimestampPacer:
    """Honours a trace's inter-packet gaps, ``speed`` times faster, looping back to back.

    The clock starts at the first :meth:`allowed` call: frame ``i`` of loop ``k`` is due
    ``(k * period + rel[i]) / speed`` ns later, where ``rel[i]`` is its timestamp minus the first
    frame's (made non-decreasing, so an out-of-order capture never stalls) and ``period`` is
    ``rel[-1]``: the next loop's first frame goes right after the last one. A trace whose frames
    all share one timestamp has no gaps to honour: everything is due at once.

    ``select`` (a mask over the trace: a flow shard's frames, see :mod:`micronf.io.shard`) paces
    only those frames, each at its time in the whole trace (the period stays the whole trace's).
    """

    def __init__(self, ts_ns: I64, speed: float = 1.0, select: npt.NDArray[np.bool_] | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        rel = np.maximum.accumulate(ts_ns - ts_ns[0]) if ts_ns.shape[0] else np.zeros(1, np.int64)
        rel = np.maximum(rel, np.int64(0))
        self._period = int(rel[-1])
        self._rel: I64 = rel if select is None else rel[select]
        self._speed = float(speed)
        self._start: int | None = None
        self._offset = 0  # trace time (ns) of the frame the clock starts at

    def allowed(self, now_ns: int, sent: int) -> int:
        if self._start is None:
            self._start = now_ns
        if self._period == 0:
            return _UNLIMITED
        elapsed = int((now_ns - self._start) * self._speed) + self._offset
        return max(int(_frames_due(self._rel, self._period, elapsed)) - sent, 0)

    def took(self, n: int) -> None:
        """Nothing to account: what is due depends only on the clock and on ``sent``."""

    def resume(self, sent: int) -> None:
        """Frame ``sent`` is due when the clock starts, the gaps after it are honoured."""
        if not self._rel.shape[0]:  # nothing to pace (a shard without frames)
            return
        loops, i = divmod(sent, self._rel.shape[0])
        self._offset = loops * self._period + int(self._rel[i])


class FrameReplay:
    """An :class:`~micronf.io.backend.RxBackend` handing out consecutive windows of a trace.

    ``limit`` frames in total (``None``: endless, cycling through the trace), paced by ``pacer``
    (``None``: as fast as the caller asks). A window ``[pos, pos + n)`` never crosses the end of
    the trace, so ``recv`` returns views: ``FrameBatch(trace.data, trace.offsets[pos:pos+n],
    trace.lengths[pos:pos+n], n, hashes[pos:pos+n])``, with the frames' flow hashes computed once
    (``hashes``, or :func:`~micronf.io.shard.flow_hashes` of the trace): the Rx service then skips
    parsing each frame's 5-tuple for it. An empty trace is exhausted from the start.
    """

    def __init__(
        self, trace: Trace, *, limit: int | None, pacer: Pacer | None = None, clock: Clock = time.monotonic_ns,
        hashes: Handles | None = None,
    ) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.trace = trace
        self._data = trace.data
        self._off = trace.offsets
        self._len = trace.lengths
        self._m = len(trace)
        self._limit = 0 if self._m == 0 else (_UNLIMITED if limit is None else limit)
        self._cum = np.zeros(self._m + 1, np.int64)  # _cum[i] = bytes of frames before i: O(1) byte counts
        np.cumsum(trace.lengths, out=self._cum[1:])
        # the frames' flow hashes, computed once: handed out with each window (FrameBatch.hashes)
        self._hash = flow_hashes(trace) if hashes is None else hashes
        self._pacer = pacer
        self._clock = clock
        self._pos = 0
        self._sent = 0
        self._bytes = 0
        self._closed = False
        self._empty = empty_batch()

    @property
    def exhausted(self) -> bool:
        """True once ``limit`` frames went out (or the source was closed)."""
        return self._closed or self._sent >= self._limit

    def recv(self, max_frames: int) -> FrameBatch:
        """The next window of at most ``max_frames`` frames (empty when paced out or exhausted)."""
        if self._closed:
            raise ValueError("recv on a closed source")
        # Plain comparisons and .item(): min() and numpy scalar arithmetic cost ~0.3 µs each here.
        pos = self._pos
        n = self._m - pos
        if max_frames < n:
            n = max_frames
        if self._limit - self._sent < n:
            n = self._limit - self._sent
        if n > 0 and self._pacer is not None:
            n = min(n, self._pacer.allowed(self._clock(), self._sent))
        if n <= 0:
            return self._empty
        end = pos + n
        self._pos = 0 if end == self._m else end
        self._sent += n
        self._bytes += self._cum.item(end) - self._cum.item(pos)
        if self._pacer is not None:
            self._pacer.took(n)
        return FrameBatch(self._data, self._off[pos:end], self._len[pos:end], n, self._hash[pos:end])

    def resume(self, sent: int) -> None:
        """Continue as if ``sent`` frames had gone out already: a restarted Rx service picks its
        source up where the killed one stopped (the count lives in the graph's segment), instead
        of replaying it from the first frame. Call before the first ``recv``."""
        if sent < 0:
            raise ValueError(f"sent must be >= 0, got {sent}")
        self._sent = min(sent, self._limit)
        if self._m:
            loops, self._pos = divmod(self._sent, self._m)
            self._bytes = loops * self._cum.item(self._m) + self._cum.item(self._pos)
        if self._pacer is not None:
            self._pacer.resume(self._sent)

    def stats(self) -> dict[str, int]:
        """``frames`` and ``bytes`` handed out so far."""
        return {"frames": self._sent, "bytes": self._bytes}

    def close(self) -> None:
        """Stop handing out frames (the trace stays in memory while referenced); idempotent."""
        self._closed = True


# --------------------------------------------------------------------------- pcap replay


class PcapRxSpec(BaseModel):
    """Replay a capture (pcap or pcapng; Ethernet, raw IP or Linux cooked) from memory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["pcap"] = "pcap"
    path: Path = Field(description="The capture file (pcap or pcapng; Ethernet, raw IP or Linux cooked SLL/SLL2 "
                      "link type, replayed as Ethernet), read once into memory.")
    loop: int = Field(default=1, ge=0, description="Replay the trace this many times; 0 = forever.")
    timing: Literal["fast", "original"] = Field(
        default="fast",
        description="fast: as fast as the Rx service asks; original: honour the trace's inter-packet gaps.",
    )
    speed: float = Field(
        default=1.0, gt=0, description="With timing=original, replay this many times faster than captured."
    )

    @model_validator(mode="after")
    def _speed_needs_original_timing(self) -> PcapRxSpec:
        if self.speed != 1.0 and self.timing != "original":
            raise ValueError("speed only applies to timing='original' (fast replay has no gaps to scale)")
        return self


class PcapRx(FrameReplay):
    """Replay of a capture read with :func:`~micronf.io.linktype.read_ethernet` (see :class:`PcapRxSpec`).

    Raw IP and Linux cooked (SLL, SLL2) captures are replayed as Ethernet frames (see
    :mod:`micronf.io.linktype`). Raises ``FileNotFoundError`` for a missing file and
    :class:`~micronf.io.trace.PcapError` for a file that is not a capture or whose link type is not
    supported. A capture cut inside its last
    record replays the complete records (``trace.truncated`` says so). ``stats()`` adds
    ``loops``, the number of complete passes over the trace. With a ``shard`` (one of several
    replicas, see :mod:`micronf.io.shard`) only the frames of the shard's flows are replayed, in
    order, ``loop`` times.
    """

    def __init__(self, spec: PcapRxSpec, *, clock: Clock = time.monotonic_ns, shard: Shard = WHOLE) -> None:
        if not spec.path.is_file():
            raise FileNotFoundError(f"{spec.path}: no such capture file")
        trace = read_ethernet(spec.path)
        hashes = flow_hashes(trace)
        mask = shard_mask(hashes, shard)  # one of several replicas: only its flows' frames, see io.shard
        pacer = TimestampPacer(trace.ts_ns, spec.speed, mask) if spec.timing == "original" else None
        limit = None if spec.loop == 0 else selected_frames(mask, spec.loop * len(trace))
        super().__init__(trace.select(mask), limit=limit, pacer=pacer, clock=clock, hashes=hashes[mask])
        self.spec = spec

    def stats(self) -> dict[str, int]:
        s = super().stats()
        s["loops"] = s["frames"] // max(len(self.trace), 1)
        return s


# --------------------------------------------------------------------------- sinks


class PcapTxSpec(BaseModel):
    """Write every transmitted frame to a classic pcap file (nanosecond timestamps)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["pcap"] = "pcap"
    path: Path = Field(description="The pcap file written (replaced if it exists); its directory is created.")


class PcapTx:
    """A :class:`~micronf.io.backend.TxBackend` writing pool frames to a pcap file.

    Each frame's timestamp is its pool metadata word ``Q_TIMESTAMP_NS`` (see
    :func:`~micronf.io.trace.fill_pool_from_trace`). Takes every frame; ``stats()``: ``frames``,
    ``bytes``.
    """

    def __init__(self, spec: PcapTxSpec) -> None:
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        self.spec = spec
        self._writer = PcapWriter(spec.path)
        self._frames = 0
        self._bytes = 0

    def send(self, p: PoolArrays, handles: Handles, n: int) -> int:
        """Append ``handles[:n]`` to the file; returns ``n``."""
        if n <= 0:
            return 0
        self._writer.write_pool(p, handles, n)
        self._frames += n
        self._bytes += int(batch_bytes(p.words, handles, n))
        return n

    def flush(self) -> None:
        """Push buffered records to the file, so readers see every frame sent so far."""
        if not self._writer.closed:
            self._writer.flush()

    def stats(self) -> dict[str, int]:
        return {"frames": self._frames, "bytes": self._bytes}

    def close(self) -> None:
        self._writer.close()


class NullTxSpec(BaseModel):
    """Discard every frame (counting it): a sink for benchmarks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["null"] = "null"


class NullTx:
    """A :class:`~micronf.io.backend.TxBackend` that takes every frame and only counts it."""

    def __init__(self, spec: NullTxSpec | None = None) -> None:
        self.spec = spec or NullTxSpec()
        self._frames = 0
        self._bytes = 0

    def send(self, p: PoolArrays, handles: Handles, n: int) -> int:
        """Count ``handles[:n]``; returns ``n``."""
        if n <= 0:
            return 0
        self._frames += n
        self._bytes += int(batch_bytes(p.words, handles, n))
        return n

    def flush(self) -> None:
        """Nothing is buffered."""

    def stats(self) -> dict[str, int]:
        return {"frames": self._frames, "bytes": self._bytes}

    def close(self) -> None:
        """Nothing to release."""
