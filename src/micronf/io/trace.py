"""A capture held in memory (:class:`Trace`) and the kernels that move its frames in and out of the pool.

Why a module of its own: the reader (:mod:`micronf.io.pcap_read`), the writer
(:mod:`micronf.io.pcap_write`), the generator and the Rx/Tx services share the trace layout (every
frame in one contiguous ``data`` buffer indexed by ``offsets``/``lengths``, so compiled code gets
plain arrays) without depending on each other.

Timestamps are int64 nanoseconds since the Unix epoch (UTC): exact for µs and ns files and for
pcapng resolutions of 10^-9 s or coarser; finer and binary (2^-n) resolutions are rounded down to
the nanosecond.

Replay into the packet pool: :func:`fill_pool_from_trace` copies a window of the trace (wrapping
around for looped replay) into allocated slots and stores each trace timestamp in the int64
metadata word ``qwords[h, Q_TIMESTAMP_NS]``. The inverse, for a sink, is
:meth:`micronf.io.pcap_write.PcapWriter.write_pool`: pcap records straight from pool handles.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.memcopy import copy_bytes
from micronf.dataplane.pool import M_DATA_OFF, M_LEN, PoolArrays
from micronf.packet.jit import kernel as _njit

__all__ = [
    "DEFAULT_SNAPLEN",
    "LINKTYPE_ETHERNET",
    "MAX_RECORD_LEN",
    "Q_TIMESTAMP_NS",
    "PcapError",
    "Trace",
    "batch_bytes",
    "fill_pool_from_trace",
]

# int64 metadata word index into ``qwords[h]`` (slot bytes 40..47): the packet's capture timestamp
# in ns since the epoch, as set by fill_pool_from_trace. TODO: this belongs in
# micronf.dataplane.pool next to Q_RX_TIME; it lives here until pool.py's owner moves it.
Q_TIMESTAMP_NS = 5

LINKTYPE_ETHERNET = 1
DEFAULT_SNAPLEN = 262144  # libpcap's default and maximum snapshot length for most link types
MAX_RECORD_LEN = 1 << 28  # no record is ever longer than this: a longer length field is corruption
INT32_MAX = (1 << 31) - 1  # lengths are int32 in a trace and in pcap record headers
NS_PER_S = 1_000_000_000  # timestamps are int64 ns

U8 = npt.NDArray[np.uint8]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Handles = npt.NDArray[np.uint32]
PathLike = str | os.PathLike[str]


class PcapError(ValueError):
    """A file that is not a (well-formed) capture; ``path`` and byte ``offset`` say where."""

    def __init__(self, path: str, offset: int, message: str) -> None:
        super().__init__(f"{path}: {message} (at byte offset {offset})")
        self.path = path
        self.offset = offset


@dataclass(frozen=True, eq=False)
class Trace:
    """A capture held in memory: frame ``i`` is ``data[offsets[i] : offsets[i] + lengths[i]]``.

    ``lengths`` are captured lengths, ``orig_lengths`` the lengths on the wire (larger when the
    capture used a snaplen), ``ts_ns`` nanoseconds since the epoch. ``truncated`` says the file
    ended inside a record (see :mod:`micronf.io.pcap_read`).
    """

    data: U8
    offsets: I64
    lengths: I32
    orig_lengths: I32
    ts_ns: I64
    linktype: int = LINKTYPE_ETHERNET
    truncated: bool = False

    def __post_init__(self) -> None:
        expect = (
            ("data", self.data, np.uint8),
            ("offsets", self.offsets, np.int64),
            ("lengths", self.lengths, np.int32),
            ("orig_lengths", self.orig_lengths, np.int32),
            ("ts_ns", self.ts_ns, np.int64),
        )
        for name, arr, dtype in expect:
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.ndim != 1:
                raise TypeError(f"Trace.{name} must be a 1-D {np.dtype(dtype).name} array")
        n = self.offsets.shape[0]
        if not self.lengths.shape[0] == self.orig_lengths.shape[0] == self.ts_ns.shape[0] == n:
            raise ValueError("Trace arrays offsets, lengths, orig_lengths, ts_ns must have the same length")
        if n and (
            int(self.offsets.min()) < 0
            or int(self.lengths.min()) < 0
            or int((self.offsets + self.lengths).max()) > self.data.shape[0]
        ):
            raise ValueError("Trace frames must lie inside data")

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def frame(self, i: int) -> bytes:
        """A copy of frame ``i`` (negative indices count from the end)."""
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"frame {i} out of range for a trace of {n} frames")
        off = int(self.offsets[i])
        return self.data[off : off + int(self.lengths[i])].tobytes()

    def select(self, mask: npt.NDArray[np.bool_]) -> Trace:
        """The frames where ``mask`` is true, in order (sharing ``data``: no frame is copied)."""
        if mask.all():
            return self
        return Trace(self.data, self.offsets[mask], self.lengths[mask], self.orig_lengths[mask], self.ts_ns[mask],
                     self.linktype, self.truncated)

    @classmethod
    def from_frames(
        cls, frames: Sequence[bytes], ts_ns: Sequence[int] | I64 | None = None, linktype: int = LINKTYPE_ETHERNET
    ) -> Trace:
        """A trace of ``frames`` (timestamps default to 0), for building traces in code and tests."""
        lengths = np.fromiter((len(f) for f in frames), dtype=np.int64, count=len(frames))
        if lengths.size and int(lengths.max()) > INT32_MAX:
            raise ValueError("frame too long for a trace")
        offsets = np.zeros(len(frames), dtype=np.int64)
        if lengths.size:
            np.cumsum(lengths[:-1], out=offsets[1:])
        ts = np.zeros(len(frames), dtype=np.int64) if ts_ns is None else np.array(ts_ns, dtype=np.int64)
        if ts.shape != (len(frames),):
            raise ValueError(f"ts_ns has {ts.size} entries for {len(frames)} frames")
        data = np.frombuffer(bytearray(b"".join(frames)), dtype=np.uint8)
        lens32 = lengths.astype(np.int32)
        return cls(data, offsets, lens32, lens32.copy(), ts, int(linktype))


# --------------------------------------------------------------------------- pool <-> trace kernels


@_njit
def fill_pool_from_trace(
    p: PoolArrays,
    trace_data: U8,
    offsets: I64,
    lengths: I32,
    ts_ns: I64,
    start: int,
    handles: Handles,
    n: int,
) -> None:
    """Copy trace frames ``start .. start+n-1`` (modulo the trace length) into ``handles[:n]``.

    Each frame lands at its slot's data offset (``M_DATA_OFF``) with ``M_LEN`` set and its trace
    timestamp in ``qwords[h, Q_TIMESTAMP_NS]``. The caller feeds only frames within the pool's
    frame capacity (``PacketPool.max_frame``; the offline runner diverts longer ones to its
    ``oversize`` exit): a longer frame is cut to the slot's room only so memory stays safe. Looped replay repeats the
    trace timestamps unchanged; the caller knows the loop count ``(start + i) // len(trace)``.
    An empty trace with ``n > 0`` raises ``ValueError``.
    """
    if n <= 0:
        return
    m = offsets.shape[0]
    if m == 0:
        raise ValueError("fill_pool_from_trace: empty trace")
    slot = p.data.shape[1]
    flat = p.data.reshape(-1)  # one view for the batch: a view per frame costs two atomic refcount updates
    j = start % m
    for i in range(n):
        h = int(np.int64(handles[i]))
        off = int(np.int64(p.words[h, M_DATA_OFF]))
        room = max(slot - off, 0)
        ln = min(max(int(np.int64(lengths[j])), 0), room)
        src = int(np.int64(offsets[j]))
        copy_bytes(flat, h * slot + off, trace_data, src, ln)
        p.words[h, M_LEN] = ln
        p.qwords[h, Q_TIMESTAMP_NS] = ts_ns[j]
        j += 1
        if j == m:
            j = 0


@njit(cache=True, nogil=True)
def batch_bytes(words: npt.NDArray[np.uint32], handles: Handles, n: int) -> int:
    """Total frame length (``M_LEN``) of pool slots ``handles[:n]``; ``words`` is ``PoolArrays.words``.

    Takes the one array it reads, not the whole pool: dispatching a 7-array tuple costs ~4 µs.
    """
    total = 0
    for i in range(n):
        total += int(words[handles[i], M_LEN])
    return total
