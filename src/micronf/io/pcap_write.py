"""Write classic pcap files batch by batch (:class:`PcapWriter`), from buffers, traces or pool handles.

Writing (:class:`PcapWriter`) always produces classic little-endian pcap, nanosecond by default
(``nanosecond=False`` for µs files), the format every tool reads. Frames longer than the writer's
``snaplen`` are cut to it and keep their full ``orig_len``, as libpcap does. A batch is turned
into one buffer of record headers and data by a numba kernel and written with one ``write`` call;
pool frames (:meth:`PcapWriter.write_pool`, a sink's batches) are gathered from their slots straight
into that buffer, which the writer keeps from batch to batch.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from micronf.dataplane.memcopy import copy_bytes
from micronf.dataplane.pool import M_DATA_OFF, M_LEN, PoolArrays
from micronf.io.trace import (
    DEFAULT_SNAPLEN,
    I64,
    INT32_MAX,
    LINKTYPE_ETHERNET,
    NS_PER_S,
    Q_TIMESTAMP_NS,
    U8,
    Handles,
    PathLike,
    Trace,
)
from micronf.packet.jit import kernel as _njit

__all__ = ["PcapWriter"]

_TS_LIMIT = (1 << 32) * NS_PER_S  # classic pcap seconds are an unsigned 32-bit field
_WRITE_BUFFER = 1 << 20  # a sink writes many small batches: one syscall per MiB, not per batch


@_njit
def _put32(out: U8, pos: int, v: int) -> None:
    out[pos] = v & 0xFF
    out[pos + 1] = (v >> 8) & 0xFF
    out[pos + 2] = (v >> 16) & 0xFF
    out[pos + 3] = (v >> 24) & 0xFF


@_njit
def _put_header(out: U8, pos: int, t: int, cap: int, wire: int, nano: bool) -> None:
    """The 16-byte record header at ``out[pos:]``: time ``t`` (ns), captured and wire lengths."""
    sec = t // NS_PER_S
    frac = t - sec * NS_PER_S
    if not nano:
        frac //= 1000
    _put32(out, pos, sec)
    _put32(out, pos + 4, frac)
    _put32(out, pos + 8, cap)
    _put32(out, pos + 12, min(wire, 0xFFFFFFFF))


@_njit
def _pool_records(p: PoolArrays, handles: Handles, n: int, out: U8, snaplen: int, nano: bool) -> tuple[int, int]:
    """Classic little-endian pcap records of pool handles ``handles[:n]`` (their frames, timestamped
    from ``Q_TIMESTAMP_NS``) back to back in ``out``: one copy from the slots, no staging buffer.

    Returns ``(status, value)``: 0 and the bytes used; 1 and the bytes needed when ``out`` is too
    small (nothing written); 2 and the index of a timestamp outside the pcap range.
    """
    need = 0
    for i in range(n):
        h = handles[i]
        t = p.qwords[h, Q_TIMESTAMP_NS]
        if t < 0 or t >= _TS_LIMIT:
            return 2, i
        need += 16 + min(int(p.words[h, M_LEN]), snaplen)
    if need > out.shape[0]:
        return 1, need
    flat = p.data.reshape(-1)  # one view for the batch: a view per frame costs two atomic refcount updates
    slot = p.data.shape[1]
    pos = 0
    for i in range(n):
        h = handles[i]
        ln = int(p.words[h, M_LEN])
        cap = min(ln, snaplen)
        _put_header(out, pos, p.qwords[h, Q_TIMESTAMP_NS], cap, ln, nano)
        copy_bytes(out, pos + 16, flat, np.int64(h) * slot + np.int64(p.words[h, M_DATA_OFF]), cap)
        pos += 16 + cap
    return 0, pos


@_njit
def _build_records(
    buf: U8, offsets: I64, lengths: I64, orig: I64, ts_ns: I64, n: int, snaplen: int, nano: bool
) -> tuple[int, int, U8]:
    """Classic little-endian pcap records for frames ``0..n-1``, in one buffer.

    Returns ``(status, index, records)``: status 1 = frame outside ``buf``, 2 = timestamp out of
    the pcap range, both at ``index`` (then ``records`` is empty).
    """
    size = buf.shape[0]
    total = 0
    for i in range(n):
        off = offsets[i]
        ln = lengths[i]
        if off < 0 or ln < 0 or off + ln > size:
            return 1, i, np.empty(0, np.uint8)
        t = ts_ns[i]
        if t < 0 or t >= _TS_LIMIT:
            return 2, i, np.empty(0, np.uint8)
        total += 16 + min(ln, snaplen)
    out = np.empty(total, np.uint8)
    pos = 0
    for i in range(n):
        off = offsets[i]
        ln = lengths[i]
        cap = min(ln, snaplen)
        _put_header(out, pos, ts_ns[i], cap, max(orig[i], ln), nano)
        copy_bytes(out, pos + 16, buf, off, cap)
        pos += 16 + cap
    return 0, n, out


class PcapWriter:
    """Write a classic pcap file, batch by batch (see the module docstring).

    Use as a context manager; the header is written at once, so a writer closed without packets
    leaves a valid empty capture. ``count`` is the number of packets written so far.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        linktype: int = LINKTYPE_ETHERNET,
        snaplen: int = DEFAULT_SNAPLEN,
        nanosecond: bool = True,
    ) -> None:
        if not 0 <= linktype <= 0xFFFFFFFF:
            raise ValueError(f"linktype must fit 32 bits, got {linktype}")
        if not 1 <= snaplen <= INT32_MAX:
            raise ValueError(f"snaplen must be in 1..{INT32_MAX}, got {snaplen}")
        self.path = os.fspath(path)
        self.linktype = linktype
        self.snaplen = snaplen
        self.nanosecond = nanosecond
        self.count = 0
        self._records = np.empty(0, np.uint8)  # write_pool's buffer, grown as batches need
        self._f: BinaryIO | None = open(path, "wb", buffering=_WRITE_BUFFER)  # noqa: SIM115 - closed by close()
        magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
        self._f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    @property
    def closed(self) -> bool:
        return self._f is None

    def _file(self) -> BinaryIO:
        if self._f is None:
            raise ValueError(f"{self.path}: write to a closed PcapWriter")
        return self._f

    def write(
        self,
        frames_buf: U8 | bytes | bytearray | memoryview,
        offsets: npt.ArrayLike,
        lengths: npt.ArrayLike,
        ts_ns: npt.ArrayLike,
        *,
        orig_lengths: npt.ArrayLike | None = None,
    ) -> None:
        """Append frames ``frames_buf[offsets[i] : offsets[i] + lengths[i]]`` with timestamps ``ts_ns[i]``.

        ``orig_lengths`` (default: ``lengths``) are the wire lengths recorded; frames longer than
        ``snaplen`` are cut to it. Timestamps must lie in ``[0, 2**32 s)``.
        """
        f = self._file()
        buf = frames_buf if isinstance(frames_buf, np.ndarray) else np.frombuffer(frames_buf, dtype=np.uint8)
        if buf.dtype != np.uint8 or buf.ndim != 1:
            raise TypeError("frames_buf must be bytes-like or a 1-D uint8 array")
        off = np.ascontiguousarray(offsets, dtype=np.int64)
        lens = np.ascontiguousarray(lengths, dtype=np.int64)
        ts = np.ascontiguousarray(ts_ns, dtype=np.int64)
        orig = lens if orig_lengths is None else np.ascontiguousarray(orig_lengths, dtype=np.int64)
        n = off.shape[0]
        if not (off.ndim == lens.ndim == ts.ndim == orig.ndim == 1) or not (
            lens.shape[0] == ts.shape[0] == orig.shape[0] == n
        ):
            raise ValueError("offsets, lengths, ts_ns (and orig_lengths) must be 1-D and of equal length")
        status, i, records = _build_records(buf, off, lens, orig, ts, n, self.snaplen, self.nanosecond)
        if status == 1:
            raise ValueError(f"frame {i} (offset {int(off[i])}, length {int(lens[i])}) lies outside frames_buf")
        if status == 2:
            raise ValueError(f"frame {i}: timestamp {int(ts[i])} ns is outside the pcap range [0, 2**32 s)")
        f.write(records.data)
        self.count += n

    def write_trace(self, trace: Trace) -> None:
        """Append every frame of ``trace`` (keeping its wire lengths and timestamps)."""
        if trace.linktype != self.linktype:
            raise ValueError(f"trace has link type {trace.linktype}, this file {self.linktype}")
        self.write(trace.data, trace.offsets, trace.lengths, trace.ts_ns, orig_lengths=trace.orig_lengths)

    def write_frames(self, frames: Sequence[bytes], ts_ns: Sequence[int] | I64 | None = None) -> None:
        """Append ``frames`` (timestamps default to 0)."""
        self.write_trace(Trace.from_frames(frames, ts_ns, linktype=self.linktype))

    def write_pool(self, p: PoolArrays, handles: Handles, n: int) -> None:
        """Append the frames of pool handles ``handles[:n]``, timestamped from ``Q_TIMESTAMP_NS``."""
        f = self._file()
        status, value = _pool_records(p, handles, n, self._records, self.snaplen, self.nanosecond)
        if status == 1:  # sized by what the batch needs, not n * slot size: slots may hold 64 KiB
            self._records = np.empty(max(2 * value, 1 << 16), np.uint8)
            status, value = _pool_records(p, handles, n, self._records, self.snaplen, self.nanosecond)
        if status == 2:
            t = int(p.qwords[handles[value], Q_TIMESTAMP_NS])
            raise ValueError(f"frame {value}: timestamp {t} ns is outside the pcap range [0, 2**32 s)")
        f.write(self._records[:value].data)
        self.count += n

    def flush(self) -> None:
        self._file().flush()

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if self._f is not None:
            f, self._f = self._f, None
            f.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
