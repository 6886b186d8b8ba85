"""Read a pcap or pcapng capture into memory (:func:`read_pcap`) as one :class:`~micronf.io.trace.Trace`.

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
"""

from __future__ import annotations

import mmap
import os
import stat
from typing import Literal

import numpy as np

from micronf.io.pcap_parse import OK, TRUNC, error_message, limit_for, parse_pcap, parse_pcapng
from micronf.io.trace import I32, I64, LINKTYPE_ETHERNET, U8, PathLike, PcapError, Trace

__all__ = ["read_pcap"]

_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_CLASSIC: dict[int, tuple[bool, int]] = {  # magic as read in the file's order -> (nanosecond, record header)
    0xA1B2C3D4: (False, 16),
    0xA1B23C4D: (True, 16),
    0xA1B2CD34: (False, 24),  # Kuznetzov's modified pcap: ifindex, protocol, pkt_type, pad
}


def _empty_outputs(n: int, total: int, buf: U8, copy: bool) -> tuple[U8, I64, I32, I32, I64]:
    """The arrays of a trace of ``n`` frames, ``total`` bytes: its ``data`` is ``buf`` when not copied."""
    return (
        np.empty(total, np.uint8) if copy else buf,
        np.empty(n, np.int64),
        np.empty(n, np.int32),
        np.empty(n, np.int32),
        np.empty(n, np.int64),
    )


def _read_classic(name: str, buf: U8, strict: bool, copy: bool) -> Trace:
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
    limit, frac_mult = limit_for(snaplen), 1 if nano else 1000
    e8, e64, e32 = np.empty(0, np.uint8), np.empty(0, np.int64), np.empty(0, np.int32)
    status, n, total, off, detail, aux = parse_pcap(buf, big, rec_hdr, limit, frac_mult, False, copy, e8, e64, e32,
                                                    e32, e64)
    if status not in (OK, TRUNC) or (status == TRUNC and strict):
        raise PcapError(name, off, error_message(status, detail, aux))
    outs = _empty_outputs(n, total, buf, copy)
    parse_pcap(buf[: off if status == TRUNC else size], big, rec_hdr, limit, frac_mult, True, copy, *outs)
    return Trace(*outs, linktype=linktype, truncated=status == TRUNC)


def _read_pcapng(name: str, buf: U8, strict: bool, copy: bool) -> Trace:
    e8, e64, e32 = np.empty(0, np.uint8), np.empty(0, np.int64), np.empty(0, np.int32)
    status, n, total, off, detail, aux, linktype = parse_pcapng(buf, False, copy, e8, e64, e32, e32, e64)
    if status == TRUNC and off == 0:
        raise PcapError(name, 0, "truncated pcapng section header block")
    if status not in (OK, TRUNC) or (status == TRUNC and strict):
        raise PcapError(name, off, error_message(status, detail, aux))
    outs = _empty_outputs(n, total, buf, copy)
    parse_pcapng(buf[: off if status == TRUNC else buf.shape[0]], True, copy, *outs)
    return Trace(*outs, linktype=linktype if linktype >= 0 else LINKTYPE_ETHERNET, truncated=status == TRUNC)


def _parse_buffer(name: str, buf: U8, strict: bool, copy: bool) -> Trace:
    head = buf[:4].tobytes()
    if len(head) == 4 and (int.from_bytes(head, "little") in _CLASSIC or int.from_bytes(head, "big") in _CLASSIC):
        return _read_classic(name, buf, strict, copy)
    if head == _PCAPNG_SHB:
        return _read_pcapng(name, buf, strict, copy)
    if head[:2] == b"\x1f\x8b":
        raise PcapError(name, 0, "gzip-compressed file: decompress it first")
    if len(head) < 4:
        raise PcapError(name, len(head), f"not a capture file: only {len(head)} bytes")
    raise PcapError(name, 0, f"not a pcap or pcapng file (starts with 0x{head.hex()})")


def read_pcap(path: PathLike, *, strict: bool = False, mapped: bool = False) -> Trace:
    """Read a whole pcap or pcapng capture into memory.

    A file cut inside its last record yields the complete records and ``truncated=True``, or a
    :class:`PcapError` when ``strict``. Every other defect raises :class:`PcapError`.

    ``mapped``: copy nothing; the trace's ``data`` is a private mapping of the file (copy-on-write,
    so writing into it never changes the file) and its frames are indexed where they lie. Reading
    2 M packets then takes a pass over the record headers instead of a 128 MB copy into fresh
    memory (its page faults alone: 0.3-0.5 s on a 2-vCPU VM). The price: the file must not shrink
    while the trace is in use (a truncated mapping raises SIGBUS on access), fine for a run that
    reads its input once (the offline runner), not for a long-lived replay of a file someone may
    rewrite. Pipes and other non-regular files are read into memory either way.
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if stat.S_ISREG(st.st_mode) and st.st_size > 0:
            # private and writable, in both modes: one array type for the parse kernels (one compile)
            mm: mmap.mmap | bytearray = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE,
                                                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
        else:  # pipes, character devices, empty files
            mm = bytearray(f.read())
    # The mapping is released when the last view of it goes (no explicit close: an exception's
    # traceback, or a mapped trace, may still hold a view).
    return _parse_buffer(name, np.frombuffer(mm, dtype=np.uint8), strict, not mapped)
