"""Capture files: read a pcap/pcapng trace into memory once, replay it into the packet pool, write pcap.

Why: the offline runner (``micronf chain ... --pcap IN --out DIR``) and the Rx/Tx services need
traces in and out in the formats tcpdump and Wireshark use, without giving up the data plane's
rule of no per-packet Python. Every loop over packets here is a numba kernel; Python only runs
once per file (reading) or once per batch (writing).

Formats read (:func:`read_pcap`, format detected from the first bytes, not the file name)
---------------------------------------------------------------------------------------------
* classic pcap, little- and big-endian, microsecond (magic ``0xa1b2c3d4``) and nanosecond
  (``0xa1b23c4d``) timestamps, plus the rare Kuznetzov "modified pcap" (``0xa1b2cd34``, 24-byte
  record headers). The link type is the header's low 26 bits (the FCS bits are dropped).
* pcapng: Section Header Blocks in either byte order (each section may switch), Interface
  Description Blocks with ``if_tsresol`` (power of 10 up to 10^-19, or power of 2 up to 2^-63;
  default 10^-6) and ``if_tsoffset``, Enhanced Packet Blocks, Simple Packet Blocks (no timestamp
  in the format: they get ``ts_ns = 0``; captured length ``min(orig_len, block room, snaplen)``)
  and the obsolete Packet Block. Every other block type (name resolution, statistics, custom,
  decryption secrets, ...) is skipped by its length. Several interfaces are fine as long as every
  *packet* comes from an interface with the same link type (a :class:`Trace` has one link type);
  a packet on an interface of another link type is a :class:`PcapError`. A capture without packets
  takes the link type of its first interface (Ethernet if it has none).

Design
------
The file is memory-mapped (or read, for a pipe) and parsed by a numba kernel in two passes: the
first validates every record header and counts packets and bytes, the second fills exactly-sized
arrays. Packet bytes are copied once into one contiguous ``data`` buffer (``offsets``/``lengths``
index it), so the mapping can be dropped and the trace handed to compiled code as plain arrays;
peak memory is that one copy (the mapped file is page cache). Python runs a fixed number of steps
per file whatever its packet count: a 100k-packet file (14 MB) reads in 5-40 ms on a shared
2-vCPU VM, i.e. 2.5-20 M packets/s for both formats (the first call with a cold numba cache also
pays a few seconds of compilation per format). All kernels release the GIL.

Errors and truncation
---------------------
Anything that is not a well-formed capture raises :class:`PcapError` (a ``ValueError``) whose
message names the file and the byte offset: not a capture file, a truncated file header or first
section header, a record longer than ``max(snaplen, 262144)`` bytes (snaplen 0, "unlimited" in
pcapng, and any snaplen are capped at ``MAX_RECORD_LEN`` = 256 MiB: a longer length field is
corruption, not a packet), malformed pcapng blocks or options, unsupported versions or
``if_tsresol``, packets on undeclared interfaces, mixed link types.

A capture cut short (the capture tool was killed, the disk filled up, the file was copied while
being written) ends in an incomplete record. That is common and the complete records before it are
valid, so by default :func:`read_pcap` keeps them and sets ``Trace.truncated = True`` (like
tcpdump, which prints a warning and the packets it could read). Pass ``strict=True`` to get a
:class:`PcapError` instead.

Timestamps are int64 nanoseconds since the Unix epoch (UTC): exact for µs and ns files and for
pcapng resolutions of 10^-9 s or coarser; finer and binary (2^-n) resolutions are rounded down to
the nanosecond.

Writing (:class:`PcapWriter`) always produces classic little-endian pcap, nanosecond by default
(``nanosecond=False`` for µs files), the format every tool reads. Frames longer than the writer's
``snaplen`` are cut to it and keep their full ``orig_len``, as libpcap does. A batch is turned
into one buffer of record headers and data by a numba kernel and written with one ``write`` call.

Replay into the packet pool: :func:`fill_pool_from_trace` copies a window of the trace (wrapping
around for looped replay) into allocated slots and stores each trace timestamp in the int64
metadata word ``qwords[h, Q_TIMESTAMP_NS]``. :func:`gather_pool_frames` does the inverse for a
sink, so a Tx/sink process can write pcap straight from pool handles.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO, Literal, TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.memcopy import copy_bytes
from micronf.dataplane.pool import M_DATA_OFF, M_LEN, PoolArrays, pkt_frame

__all__ = [
    "DEFAULT_SNAPLEN",
    "LINKTYPE_ETHERNET",
    "MAX_RECORD_LEN",
    "Q_TIMESTAMP_NS",
    "PcapError",
    "PcapWriter",
    "Trace",
    "batch_bytes",
    "fill_pool_from_trace",
    "gather_pool_frames",
    "gather_pool_timestamps",
    "read_pcap",
]

# int64 metadata word index into ``qwords[h]`` (slot bytes 40..47): the packet's capture timestamp
# in ns since the epoch, as set by fill_pool_from_trace. TODO: this belongs in
# micronf.dataplane.pool next to Q_RX_TIME; it lives here until pool.py's owner moves it.
Q_TIMESTAMP_NS = 5

LINKTYPE_ETHERNET = 1
DEFAULT_SNAPLEN = 262144  # libpcap's default and maximum snapshot length for most link types
MAX_RECORD_LEN = 1 << 28  # no record is ever longer than this: a longer length field is corruption

_NS = 1_000_000_000
_TS_LIMIT = (1 << 32) * _NS  # classic pcap seconds are an unsigned 32-bit field
_INT32_MAX = (1 << 31) - 1
_WRITE_BUFFER = 1 << 20  # a sink writes many small batches: one syscall per MiB, not per batch

# Kernel status codes.
_OK = 0
_TRUNC = 1  # the last record/block is incomplete
_E_RECLEN = 2  # captured length larger than the limit (detail = length, aux = limit)
_E_BLOCKLEN = 3  # malformed pcapng block length (detail = length)
_E_LINKTYPE = 4  # packets on interfaces of different link types (detail = this one, aux = first)
_E_IFACE = 5  # packet refers to an interface not declared in its section (detail = id, aux = count)
_E_TSRESOL = 6  # unsupported if_tsresol (detail = raw byte)
_E_BOM = 7  # section header with an unknown byte-order magic (detail = magic as read LE)
_E_VERSION = 8  # unsupported pcapng major version (detail = version)
_E_OPTION = 9  # option running past its block (detail = option code)
_E_CAPLEN = 10  # captured length does not fit in its block (detail = length, aux = room)

# Columns of the pcapng kernel's interface table.
_IF_LT, _IF_SNAP, _IF_KIND, _IF_EXP, _IF_DIV, _IF_FMUL, _IF_FDIV, _IF_TOFF = range(8)
_IF_COLS = 8

_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_CLASSIC: dict[int, tuple[bool, int]] = {  # magic as read in the file's order -> (nanosecond, record header)
    0xA1B2C3D4: (False, 16),
    0xA1B23C4D: (True, 16),
    0xA1B2CD34: (False, 24),  # Kuznetzov's modified pcap: ifindex, protocol, pkt_type, pad
}

_F = TypeVar("_F", bound=Callable[..., Any])


def _njit(fn: _F) -> _F:
    """Exactly ``njit(cache=True, nogil=True)(fn)``, typed so mypy keeps ``fn``'s signature."""
    return cast(_F, njit(cache=True, nogil=True)(fn))


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


# --------------------------------------------------------------------------- the trace


@dataclass(frozen=True, eq=False)
class Trace:
    """A capture held in memory: frame ``i`` is ``data[offsets[i] : offsets[i] + lengths[i]]``.

    ``lengths`` are captured lengths, ``orig_lengths`` the lengths on the wire (larger when the
    capture used a snaplen), ``ts_ns`` nanoseconds since the epoch. ``truncated`` says the file
    ended inside a record (see the module docstring).
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
        if lengths.size and int(lengths.max()) > _INT32_MAX:
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


# --------------------------------------------------------------------------- parsing kernels


@_njit
def _u16(b: U8, off: int, big: bool) -> int:
    b0, b1 = np.int64(b[off]), np.int64(b[off + 1])
    if big:
        return int((b0 << 8) | b1)
    return int(b0 | (b1 << 8))


@_njit
def _u32(b: U8, off: int, big: bool) -> int:
    b0, b1, b2, b3 = np.int64(b[off]), np.int64(b[off + 1]), np.int64(b[off + 2]), np.int64(b[off + 3])
    if big:
        return int((b0 << 24) | (b1 << 16) | (b2 << 8) | b3)
    return int(b0 | (b1 << 8) | (b2 << 16) | (b3 << 24))


@_njit
def _i64(b: U8, off: int, big: bool) -> int:
    if big:
        hi, lo = _u32(b, off, big), _u32(b, off + 4, big)
    else:
        lo, hi = _u32(b, off, big), _u32(b, off + 4, big)
    return int((np.int64(hi) << np.int64(32)) | np.int64(lo))


@_njit
def _limit(snaplen: int) -> int:
    """Largest acceptable captured length for a file/interface snaplen (0 = unlimited)."""
    if snaplen == 0:
        return MAX_RECORD_LEN
    return min(max(snaplen, DEFAULT_SNAPLEN), MAX_RECORD_LEN)


@_njit
def _parse_pcap(
    buf: U8,
    big: bool,
    rec_hdr: int,
    limit: int,
    frac_mult: int,
    fill: bool,
    out_data: U8,
    out_off: I64,
    out_len: I32,
    out_orig: I32,
    out_ts: I64,
) -> tuple[int, int, int, int, int, int]:
    """Walk the records of a classic pcap after its 24-byte header.

    Returns ``(status, n, total_bytes, offset, detail, aux)``; fills the outputs when ``fill``.
    """
    size = buf.shape[0]
    pos = 24
    n = 0
    total = 0
    while pos < size:
        if size - pos < rec_hdr:
            return _TRUNC, n, total, pos, 0, 0
        caplen = _u32(buf, pos + 8, big)
        if caplen > limit:
            return _E_RECLEN, n, total, pos, caplen, limit
        if caplen > size - pos - rec_hdr:
            return _TRUNC, n, total, pos, 0, 0
        if fill:
            src = pos + rec_hdr
            copy_bytes(out_data, total, buf, src, caplen)
            out_off[n] = total
            out_len[n] = caplen
            out_orig[n] = min(_u32(buf, pos + 12, big), _INT32_MAX)
            out_ts[n] = _u32(buf, pos, big) * _NS + _u32(buf, pos + 4, big) * frac_mult
        n += 1
        total += caplen
        pos += rec_hdr + caplen
    return _OK, n, total, pos, 0, 0


@_njit
def _ng_ts(hi: int, lo: int, row: I64) -> int:
    """pcapng timestamp ``hi:lo`` of interface ``row`` (units 10^-exp or 2^-exp s) -> ns since epoch."""
    kind, exp, div, toff = row[_IF_KIND], row[_IF_EXP], row[_IF_DIV], row[_IF_TOFF]
    fmul, fdiv = row[_IF_FMUL], row[_IF_FDIV]
    t = (np.uint64(hi) << np.uint64(32)) | np.uint64(lo)
    if kind == 0:
        d = np.uint64(div)
        sec = t // d
        frac = t - sec * d
        fns = np.int64(frac) * np.int64(fmul) if fmul > 0 else np.int64(frac // np.uint64(fdiv))
    else:
        e = np.uint64(exp)
        sec = t >> e
        frac = t & ((np.uint64(1) << e) - np.uint64(1))
        if exp <= 34:  # frac < 2**34, so frac * 1e9 < 2**64
            fns = np.int64((frac * np.uint64(_NS)) >> e)
        else:
            fns = np.int64(((frac >> np.uint64(exp - 34)) * np.uint64(_NS)) >> np.uint64(34))
    return int((np.int64(sec) + np.int64(toff)) * np.int64(_NS) + fns)


@_njit
def _parse_idb(buf: U8, pos: int, blen: int, big: bool, row: I64) -> tuple[int, int, int]:
    """Fill interface table ``row`` from the IDB at ``pos``; returns ``(status, offset, detail)``."""
    body = pos + 8
    body_end = pos + blen - 4
    kind = 0
    exp = 6
    toff = 0
    status = _OK
    err_off = pos
    detail = 0
    o = body + 8
    while o + 4 <= body_end:
        code = _u16(buf, o, big)
        olen = _u16(buf, o + 2, big)
        if code == 0:
            break
        if olen > body_end - o - 4:
            status, err_off, detail = _E_OPTION, o, code
            break
        if code == 9 and olen >= 1:  # if_tsresol
            r = int(np.int64(buf[o + 4]))
            kind = 1 if r & 0x80 else 0
            exp = r & 0x7F
            if exp > (63 if kind else 19):
                status, err_off, detail = _E_TSRESOL, o, r
                break
        elif code == 14 and olen >= 8:  # if_tsoffset, seconds
            toff = _i64(buf, o + 4, big)
        o += 4 + ((olen + 3) & ~3)
    div = np.uint64(1)
    fmul = 0
    fdiv = 1
    if kind == 0:
        for _ in range(exp):
            div *= np.uint64(10)
        if exp <= 9:
            fmul = 1
            for _ in range(9 - exp):
                fmul *= 10
        else:
            for _ in range(exp - 9):
                fdiv *= 10
    row[_IF_LT] = _u16(buf, body, big)
    row[_IF_SNAP] = _u32(buf, body + 4, big)
    row[_IF_KIND] = kind
    row[_IF_EXP] = exp
    row[_IF_DIV] = np.int64(div)  # 10**19 does not fit int64: _ng_ts reads it back as uint64
    row[_IF_FMUL] = fmul
    row[_IF_FDIV] = fdiv
    row[_IF_TOFF] = toff
    return status, err_off, detail


@_njit
def _parse_pcapng(
    buf: U8, fill: bool, out_data: U8, out_off: I64, out_len: I32, out_orig: I32, out_ts: I64
) -> tuple[int, int, int, int, int, int, int]:
    """Walk the blocks of a pcapng file (which starts with a Section Header Block).

    Returns ``(status, n, total_bytes, offset, detail, aux, linktype)``; fills the outputs when
    ``fill``. ``linktype`` is that of the packets (else of the first interface, else -1).
    """
    size = buf.shape[0]
    pos = 0
    n = 0
    total = 0
    big = False
    linktype = -1
    first_if_lt = -1
    status = _OK
    err_off = 0
    detail = 0
    aux = 0
    # Interfaces of the current section, one row each: _IF_* columns.
    n_if = 0
    ifs = np.empty((8, _IF_COLS), np.int64)
    while pos < size:
        err_off = pos
        if size - pos < 12:
            status = _TRUNC
            break
        is_shb = buf[pos] == 0x0A and buf[pos + 1] == 0x0D and buf[pos + 2] == 0x0D and buf[pos + 3] == 0x0A
        if is_shb:
            bom = _u32(buf, pos + 8, False)
            if bom == 0x1A2B3C4D:
                big = False
            elif bom == 0x4D3C2B1A:
                big = True
            else:
                status, detail = _E_BOM, bom
                break
        btype = _u32(buf, pos, big)
        blen = _u32(buf, pos + 4, big)
        min_len = 28 if is_shb else 12
        if blen < min_len or blen % 4:
            status, detail = _E_BLOCKLEN, blen
            break
        if blen > size - pos:
            status = _TRUNC
            break
        if _u32(buf, pos + blen - 4, big) != blen:
            status, detail = _E_BLOCKLEN, blen
            break
        body = pos + 8
        if is_shb:
            major = _u16(buf, pos + 12, big)
            if major != 1:
                status, detail = _E_VERSION, major
                break
            n_if = 0  # interface ids are per section
        elif btype == 1:  # Interface Description Block
            if blen < 20:
                status, detail = _E_BLOCKLEN, blen
                break
            if n_if == ifs.shape[0]:
                grown = np.empty((2 * n_if, _IF_COLS), np.int64)
                for r in range(n_if):  # (a loop: slice assignment costs seconds of compilation)
                    for c in range(_IF_COLS):
                        grown[r, c] = ifs[r, c]
                ifs = grown
            status, err_off, detail = _parse_idb(buf, pos, blen, big, ifs[n_if])
            if status != _OK:
                break
            if first_if_lt < 0:
                first_if_lt = ifs[n_if, _IF_LT]
            n_if += 1
        elif btype == 6 or btype == 2 or btype == 3:  # Enhanced / obsolete / Simple Packet Block
            if blen < (16 if btype == 3 else 32):
                status, detail = _E_BLOCKLEN, blen
                break
            if btype == 3:
                iface = 0
                wlen = _u32(buf, body, big)
                src = body + 4
                room = blen - 16
            else:
                iface = _u32(buf, body, big) if btype == 6 else _u16(buf, body, big)
                wlen = _u32(buf, body + 16, big)
                src = body + 20
                room = blen - 32
            if iface >= n_if:
                status, detail, aux = _E_IFACE, iface, n_if
                break
            row = ifs[iface]
            snap = row[_IF_SNAP]
            if btype == 3:
                caplen = min(wlen, room)
                if snap:
                    caplen = min(caplen, snap)
            else:
                caplen = _u32(buf, body + 12, big)
            limit = _limit(snap)
            if caplen > limit:
                status, detail, aux = _E_RECLEN, caplen, limit
                break
            if caplen > room:
                status, detail, aux = _E_CAPLEN, caplen, room
                break
            lt = row[_IF_LT]
            if linktype < 0:
                linktype = lt
            elif lt != linktype:
                status, detail, aux = _E_LINKTYPE, lt, linktype
                break
            if fill:
                copy_bytes(out_data, total, buf, src, caplen)
                out_off[n] = total
                out_len[n] = caplen
                out_orig[n] = min(wlen, _INT32_MAX)
                out_ts[n] = 0 if btype == 3 else _ng_ts(_u32(buf, body + 4, big), _u32(buf, body + 8, big), row)
            n += 1
            total += caplen
        pos += blen
    if status == _OK:
        err_off = pos
    if linktype < 0:
        linktype = first_if_lt
    return status, n, total, err_off, detail, aux, linktype


# --------------------------------------------------------------------------- reading


def _error_message(status: int, detail: int, aux: int) -> str:
    messages = {
        _TRUNC: "truncated record",
        _E_RECLEN: f"record captured length {detail} exceeds the limit of {aux} bytes (corrupt file?)",
        _E_BLOCKLEN: f"malformed pcapng block (block length {detail})",
        _E_LINKTYPE: f"packet on an interface of link type {detail}, but earlier packets have link type {aux}; "
        "a trace holds one link type (split the capture per interface, e.g. with editcap/tshark)",
        _E_IFACE: f"packet on interface {detail}, but its section declares {aux} interface(s)",
        _E_TSRESOL: f"unsupported if_tsresol 0x{detail:02x}",
        _E_BOM: f"section header block with unknown byte-order magic 0x{detail:08x}",
        _E_VERSION: f"unsupported pcapng major version {detail}",
        _E_OPTION: f"option {detail} runs past the end of its block",
        _E_CAPLEN: f"captured length {detail} does not fit in its block ({aux} bytes of room)",
    }
    return messages.get(status, f"parse error {status}")


def _empty_outputs(n: int, total: int) -> tuple[U8, I64, I32, I32, I64]:
    return (
        np.empty(total, np.uint8),
        np.empty(n, np.int64),
        np.empty(n, np.int32),
        np.empty(n, np.int32),
        np.empty(n, np.int64),
    )


def _read_classic(name: str, buf: U8, strict: bool) -> Trace:
    size = buf.shape[0]
    if size < 24:
        raise PcapError(name, size, f"truncated pcap file header ({size} of 24 bytes)")
    magic_le = int.from_bytes(buf[:4].tobytes(), "little")
    big = magic_le not in _CLASSIC
    order: Literal["little", "big"] = "big" if big else "little"
    nano, rec_hdr = _CLASSIC[int.from_bytes(buf[:4].tobytes(), order)]
    major = int.from_bytes(buf[4:6].tobytes(), order)
    if major != 2:
        raise PcapError(name, 4, f"unsupported pcap version {major}")
    snaplen = int.from_bytes(buf[16:20].tobytes(), order)
    linktype = int.from_bytes(buf[20:24].tobytes(), order) & 0x03FFFFFF
    limit, frac_mult = _limit(snaplen), 1 if nano else 1000
    e8, e64, e32 = np.empty(0, np.uint8), np.empty(0, np.int64), np.empty(0, np.int32)
    status, n, total, off, detail, aux = _parse_pcap(buf, big, rec_hdr, limit, frac_mult, False, e8, e64, e32, e32, e64)
    if status not in (_OK, _TRUNC) or (status == _TRUNC and strict):
        raise PcapError(name, off, _error_message(status, detail, aux))
    outs = _empty_outputs(n, total)
    _parse_pcap(buf[: off if status == _TRUNC else size], big, rec_hdr, limit, frac_mult, True, *outs)
    return Trace(*outs, linktype=linktype, truncated=status == _TRUNC)


def _read_pcapng(name: str, buf: U8, strict: bool) -> Trace:
    e8, e64, e32 = np.empty(0, np.uint8), np.empty(0, np.int64), np.empty(0, np.int32)
    status, n, total, off, detail, aux, linktype = _parse_pcapng(buf, False, e8, e64, e32, e32, e64)
    if status == _TRUNC and off == 0:
        raise PcapError(name, 0, "truncated pcapng section header block")
    if status not in (_OK, _TRUNC) or (status == _TRUNC and strict):
        raise PcapError(name, off, _error_message(status, detail, aux))
    outs = _empty_outputs(n, total)
    _parse_pcapng(buf[: off if status == _TRUNC else buf.shape[0]], True, *outs)
    return Trace(*outs, linktype=linktype if linktype >= 0 else LINKTYPE_ETHERNET, truncated=status == _TRUNC)


def _parse_buffer(name: str, buf: U8, strict: bool) -> Trace:
    head = buf[:4].tobytes()
    if len(head) == 4 and (int.from_bytes(head, "little") in _CLASSIC or int.from_bytes(head, "big") in _CLASSIC):
        return _read_classic(name, buf, strict)
    if head == _PCAPNG_SHB:
        return _read_pcapng(name, buf, strict)
    if head[:2] == b"\x1f\x8b":
        raise PcapError(name, 0, "gzip-compressed file: decompress it first")
    if len(head) < 4:
        raise PcapError(name, len(head), f"not a capture file: only {len(head)} bytes")
    raise PcapError(name, 0, f"not a pcap or pcapng file (starts with 0x{head.hex()})")


def read_pcap(path: PathLike, *, strict: bool = False) -> Trace:
    """Read a whole pcap or pcapng capture into memory.

    A file cut inside its last record yields the complete records and ``truncated=True``, or a
    :class:`PcapError` when ``strict``. Every other defect raises :class:`PcapError`.
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            mm: mmap.mmap | bytes = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        else:  # pipes, character devices, empty files
            mm = f.read()
    # The mapping is released when the last view of it goes (no explicit close: an exception's
    # traceback may still hold a view).
    return _parse_buffer(name, np.frombuffer(mm, dtype=np.uint8), strict)


# --------------------------------------------------------------------------- writing


@_njit
def _put32(out: U8, pos: int, v: int) -> None:
    out[pos] = v & 0xFF
    out[pos + 1] = (v >> 8) & 0xFF
    out[pos + 2] = (v >> 16) & 0xFF
    out[pos + 3] = (v >> 24) & 0xFF


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
        t = ts_ns[i]
        sec = t // _NS
        frac = t - sec * _NS
        if not nano:
            frac //= 1000
        _put32(out, pos, sec)
        _put32(out, pos + 4, frac)
        _put32(out, pos + 8, cap)
        _put32(out, pos + 12, min(max(orig[i], ln), 0xFFFFFFFF))
        copy_bytes(out, pos + 16, buf, off, cap)
        pos += 16 + cap
    return 0, n, out


@njit(cache=True, nogil=True)
def batch_bytes(words: npt.NDArray[np.uint32], handles: Handles, n: int) -> int:
    """Total frame length (``M_LEN``) of pool slots ``handles[:n]``; ``words`` is ``PoolArrays.words``.

    Takes the one array it reads, not the whole pool: dispatching a 7-array tuple costs ~4 µs.
    """
    total = 0
    for i in range(n):
        total += int(words[handles[i], M_LEN])
    return total


@_njit
def gather_pool_frames(p: PoolArrays, handles: Handles, n: int, out_buf: U8, out_offsets: I64, out_lengths: I64) -> int:
    """Copy the frames of ``handles[:n]`` back to back into ``out_buf``; returns the bytes used.

    ``out_offsets[i]``/``out_lengths[i]`` locate frame ``i``. Size ``out_buf`` with
    :func:`batch_bytes` (a buffer too small, or offset/length arrays shorter than ``n``, raise
    ``ValueError``).
    """
    if out_offsets.shape[0] < n or out_lengths.shape[0] < n:
        raise ValueError("gather_pool_frames: out_offsets/out_lengths shorter than n")
    room = out_buf.shape[0]
    pos = 0
    for i in range(n):
        f = pkt_frame(p, handles[i])
        ln = f.shape[0]
        if pos + ln > room:
            raise ValueError("gather_pool_frames: out_buf too small (size it with batch_bytes)")
        copy_bytes(out_buf, pos, f, 0, ln)
        out_offsets[i] = pos
        out_lengths[i] = ln
        pos += ln
    return pos


@_njit
def gather_pool_timestamps(p: PoolArrays, handles: Handles, n: int, out_ts: I64) -> None:
    """``out_ts[i] = qwords[handles[i], Q_TIMESTAMP_NS]`` for ``i < n``."""
    if out_ts.shape[0] < n:
        raise ValueError("gather_pool_timestamps: out_ts shorter than n")
    for i in range(n):
        out_ts[i] = p.qwords[handles[i], Q_TIMESTAMP_NS]


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
        if not 1 <= snaplen <= _INT32_MAX:
            raise ValueError(f"snaplen must be in 1..{_INT32_MAX}, got {snaplen}")
        self.path = os.fspath(path)
        self.linktype = linktype
        self.snaplen = snaplen
        self.nanosecond = nanosecond
        self.count = 0
        self._scratch: tuple[U8, I64, I64, I64] | None = None
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
        need = int(batch_bytes(p.words, handles, n))  # not n * slot size: slots may hold 64 KiB
        if self._scratch is None or self._scratch[1].shape[0] < n or self._scratch[0].shape[0] < need:
            k = max(n, 64)
            i64 = np.dtype(np.int64)
            self._scratch = (np.empty(max(2 * need, 1 << 16), np.uint8), np.empty(k, i64), np.empty(k, i64),
                             np.empty(k, i64))
        buf, off, lens, ts = self._scratch
        gather_pool_frames(p, handles, n, buf, off, lens)
        gather_pool_timestamps(p, handles, n, ts)
        self.write(buf, off[:n], lens[:n], ts[:n])

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


# --------------------------------------------------------------------------- replay into the pool


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
    j = start % m
    for i in range(n):
        h = int(np.int64(handles[i]))
        off = int(np.int64(p.words[h, M_DATA_OFF]))
        room = max(slot - off, 0)
        ln = min(max(int(np.int64(lengths[j])), 0), room)
        src = int(np.int64(offsets[j]))
        copy_bytes(p.data[h], off, trace_data, src, ln)
        p.words[h, M_LEN] = ln
        p.qwords[h, Q_TIMESTAMP_NS] = ts_ns[j]
        j += 1
        if j == m:
            j = 0
