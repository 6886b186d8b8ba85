"""The numba kernels that parse classic pcap and pcapng buffers (see :mod:`micronf.io.pcap_read`).

Design
------
The file is memory-mapped (or read, for a pipe) and parsed by a numba kernel in two passes: the
first validates every record header and counts packets and bytes, the second fills exactly-sized
arrays. Packet bytes are copied once into one contiguous ``data`` buffer (``offsets``/``lengths``
index it), so the mapping can be dropped and the trace handed to compiled code as plain arrays;
peak memory is that one copy (the mapped file is page cache). Or, asked not to copy, the second
pass only indexes the frames where they lie in the file's mapping (the offline runner's fast path:
a 2 M-packet capture's 128 MB copy costs more in page faults than everything else of a run).
Python runs a fixed number of steps per file whatever its packet count: a 100k-packet file (14 MB)
reads in 5-40 ms on a shared 2-vCPU VM, i.e. 2.5-20 M packets/s for both formats (the first call
with a cold numba cache also pays a few seconds of compilation per format). All kernels release the GIL.

Each kernel returns a status code (``OK``, ``TRUNC`` or an ``E_*`` error with its detail and aux
values) instead of raising, so the Python side (:func:`error_message`) names the problem and the
byte offset.
"""

from __future__ import annotations

import numpy as np

from micronf.dataplane.memcopy import copy_bytes
from micronf.io.trace import DEFAULT_SNAPLEN, I32, I64, INT32_MAX, MAX_RECORD_LEN, NS_PER_S, U8
from micronf.packet.jit import kernel as _njit

__all__ = ["OK", "TRUNC", "error_message", "limit_for", "parse_pcap", "parse_pcapng"]

# Kernel status codes.
OK = 0
TRUNC = 1  # the last record/block is incomplete
E_RECLEN = 2  # captured length larger than the limit (detail = length, aux = limit)
E_BLOCKLEN = 3  # malformed pcapng block length (detail = length)
E_LINKTYPE = 4  # packets on interfaces of different link types (detail = this one, aux = first)
E_IFACE = 5  # packet refers to an interface not declared in its section (detail = id, aux = count)
E_TSRESOL = 6  # unsupported if_tsresol (detail = raw byte)
E_BOM = 7  # section header with an unknown byte-order magic (detail = magic as read LE)
E_VERSION = 8  # unsupported pcapng major version (detail = version)
E_OPTION = 9  # option running past its block (detail = option code)
E_CAPLEN = 10  # captured length does not fit in its block (detail = length, aux = room)

# Columns of the pcapng kernel's interface table.
_IF_LT, _IF_SNAP, _IF_KIND, _IF_EXP, _IF_DIV, _IF_FMUL, _IF_FDIV, _IF_TOFF = range(8)
_IF_COLS = 8


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
def limit_for(snaplen: int) -> int:
    """Largest acceptable captured length for a file/interface snaplen (0 = unlimited)."""
    if snaplen == 0:
        return MAX_RECORD_LEN
    return min(max(snaplen, DEFAULT_SNAPLEN), MAX_RECORD_LEN)


@_njit
def parse_pcap(
    buf: U8,
    big: bool,
    rec_hdr: int,
    limit: int,
    frac_mult: int,
    fill: bool,
    copy: bool,
    out_data: U8,
    out_off: I64,
    out_len: I32,
    out_orig: I32,
    out_ts: I64,
) -> tuple[int, int, int, int, int, int]:
    """Walk the records of a classic pcap after its 24-byte header.

    Returns ``(status, n, total_bytes, offset, detail, aux)``; fills the outputs when ``fill``:
    with ``copy`` the frames go back to back into ``out_data``, else ``out_off`` indexes them in
    ``buf`` itself (``out_data`` unused).
    """
    size = buf.shape[0]
    pos = 24
    n = 0
    total = 0
    while pos < size:
        if size - pos < rec_hdr:
            return TRUNC, n, total, pos, 0, 0
        caplen = _u32(buf, pos + 8, big)
        if caplen > limit:
            return E_RECLEN, n, total, pos, caplen, limit
        if caplen > size - pos - rec_hdr:
            return TRUNC, n, total, pos, 0, 0
        if fill:
            src = pos + rec_hdr
            if copy:
                copy_bytes(out_data, total, buf, src, caplen)
            out_off[n] = total if copy else src
            out_len[n] = caplen
            out_orig[n] = min(_u32(buf, pos + 12, big), INT32_MAX)
            out_ts[n] = _u32(buf, pos, big) * NS_PER_S + _u32(buf, pos + 4, big) * frac_mult
        n += 1
        total += caplen
        pos += rec_hdr + caplen
    return OK, n, total, pos, 0, 0


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
            fns = np.int64((frac * np.uint64(NS_PER_S)) >> e)
        else:
            fns = np.int64(((frac >> np.uint64(exp - 34)) * np.uint64(NS_PER_S)) >> np.uint64(34))
    return int((np.int64(sec) + np.int64(toff)) * np.int64(NS_PER_S) + fns)


@_njit
def _parse_idb(buf: U8, pos: int, blen: int, big: bool, row: I64) -> tuple[int, int, int]:
    """Fill interface table ``row`` from the IDB at ``pos``; returns ``(status, offset, detail)``."""
    body = pos + 8
    body_end = pos + blen - 4
    kind = 0
    exp = 6
    toff = 0
    status = OK
    err_off = pos
    detail = 0
    o = body + 8
    while o + 4 <= body_end:
        code = _u16(buf, o, big)
        olen = _u16(buf, o + 2, big)
        if code == 0:
            break
        if olen > body_end - o - 4:
            status, err_off, detail = E_OPTION, o, code
            break
        if code == 9 and olen >= 1:  # if_tsresol
            r = int(np.int64(buf[o + 4]))
            kind = 1 if r & 0x80 else 0
            exp = r & 0x7F
            if exp > (63 if kind else 19):
                status, err_off, detail = E_TSRESOL, o, r
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
def parse_pcapng(
    buf: U8, fill: bool, copy: bool, out_data: U8, out_off: I64, out_len: I32, out_orig: I32, out_ts: I64
) -> tuple[int, int, int, int, int, int, int]:
    """Walk the blocks of a pcapng file (which starts with a Section Header Block).

    Returns ``(status, n, total_bytes, offset, detail, aux, linktype)``; fills the outputs when
    ``fill`` (``copy`` as for :func:`parse_pcap`). ``linktype`` is that of the packets (else of the
    first interface, else -1).
    """
    size = buf.shape[0]
    pos = 0
    n = 0
    total = 0
    big = False
    linktype = -1
    first_if_lt = -1
    status = OK
    err_off = 0
    detail = 0
    aux = 0
    # Interfaces of the current section, one row each: _IF_* columns.
    n_if = 0
    ifs = np.empty((8, _IF_COLS), np.int64)
    while pos < size:
        err_off = pos
        if size - pos < 12:
            status = TRUNC
            break
        is_shb = buf[pos] == 0x0A and buf[pos + 1] == 0x0D and buf[pos + 2] == 0x0D and buf[pos + 3] == 0x0A
        if is_shb:
            bom = _u32(buf, pos + 8, False)
            if bom == 0x1A2B3C4D:
                big = False
            elif bom == 0x4D3C2B1A:
                big = True
            else:
                status, detail = E_BOM, bom
                break
        btype = _u32(buf, pos, big)
        blen = _u32(buf, pos + 4, big)
        min_len = 28 if is_shb else 12
        if blen < min_len or blen % 4:
            status, detail = E_BLOCKLEN, blen
            break
        if blen > size - pos:
            status = TRUNC
            break
        if _u32(buf, pos + blen - 4, big) != blen:
            status, detail = E_BLOCKLEN, blen
            break
        body = pos + 8
        if is_shb:
            major = _u16(buf, pos + 12, big)
            if major != 1:
                status, detail = E_VERSION, major
                break
            n_if = 0  # interface ids are per section
        elif btype == 1:  # Interface Description Block
            if blen < 20:
                status, detail = E_BLOCKLEN, blen
                break
            if n_if == ifs.shape[0]:
                grown = np.empty((2 * n_if, _IF_COLS), np.int64)
                for r in range(n_if):  # (a loop: slice assignment costs seconds of compilation)
                    for c in range(_IF_COLS):
                        grown[r, c] = ifs[r, c]
                ifs = grown
            status, err_off, detail = _parse_idb(buf, pos, blen, big, ifs[n_if])
            if status != OK:
                break
            if first_if_lt < 0:
                first_if_lt = ifs[n_if, _IF_LT]
            n_if += 1
        elif btype == 6 or btype == 2 or btype == 3:  # Enhanced / obsolete / Simple Packet Block
            if blen < (16 if btype == 3 else 32):
                status, detail = E_BLOCKLEN, blen
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
                status, detail, aux = E_IFACE, iface, n_if
                break
            row = ifs[iface]
            snap = row[_IF_SNAP]
            if btype == 3:
                caplen = min(wlen, room)
                if snap:
                    caplen = min(caplen, snap)
            else:
                caplen = _u32(buf, body + 12, big)
            limit = limit_for(snap)
            if caplen > limit:
                status, detail, aux = E_RECLEN, caplen, limit
                break
            if caplen > room:
                status, detail, aux = E_CAPLEN, caplen, room
                break
            lt = row[_IF_LT]
            if linktype < 0:
                linktype = lt
            elif lt != linktype:
                status, detail, aux = E_LINKTYPE, lt, linktype
                break
            if fill:
                if copy:
                    copy_bytes(out_data, total, buf, src, caplen)
                out_off[n] = total if copy else src
                out_len[n] = caplen
                out_orig[n] = min(wlen, INT32_MAX)
                out_ts[n] = 0 if btype == 3 else _ng_ts(_u32(buf, body + 4, big), _u32(buf, body + 8, big), row)
            n += 1
            total += caplen
        pos += blen
    if status == OK:
        err_off = pos
    if linktype < 0:
        linktype = first_if_lt
    return status, n, total, err_off, detail, aux, linktype


def error_message(status: int, detail: int, aux: int) -> str:
    """The PcapError text for a kernel status and its detail/aux values."""
    messages = {
        TRUNC: "truncated record",
        E_RECLEN: f"record captured length {detail} exceeds the limit of {aux} bytes (corrupt file?)",
        E_BLOCKLEN: f"malformed pcapng block (block length {detail})",
        E_LINKTYPE: f"packet on an interface of link type {detail}, but earlier packets have link type {aux}; "
        "a trace holds one link type (split the capture per interface, e.g. with editcap/tshark)",
        E_IFACE: f"packet on interface {detail}, but its section declares {aux} interface(s)",
        E_TSRESOL: f"unsupported if_tsresol 0x{detail:02x}",
        E_BOM: f"section header block with unknown byte-order magic 0x{detail:08x}",
        E_VERSION: f"unsupported pcapng major version {detail}",
        E_OPTION: f"option {detail} runs past the end of its block",
        E_CAPLEN: f"captured length {detail} does not fit in its block ({aux} bytes of room)",
    }
    return messages.get(status, f"parse error {status}")
