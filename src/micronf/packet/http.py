"""HTTP/1.x start-line parsing shared by the HTTP µNFs, callable from numba code.

Only the first line of a TCP segment's payload is looked at: a request line
``METHOD SP request-target SP HTTP-version`` or a status line starting with ``HTTP/1.``. Request
lines are parsed as lenient servers (nginx, most application servers) parse them, so that what the
HTTP µNFs inspect is what such a server would hand to the application: a TAB counts as a space and
the target runs to the blanks before a final ``HTTP/d.d``, spaces inside it included (see
:func:`http_target_end`). Like the header helpers in :mod:`micronf.packet.headers`, every function
checks its bounds against the real frame length and reports failure with ``-1``/``False``; nothing
here reassembles TCP streams, so a start line split over two segments is only seen in its first
segment.

The request-target itself is found as lenient servers find it (:func:`http_request_url`,
:func:`request_url`): after ``METHOD`` and a space or TAB, to the blanks before a final ``HTTP/d.d``
on the line, raw spaces inside included (``GET /item?q=1' OR 'a'='a HTTP/1.1`` has the target ``/item?q=1' OR 'a'='a``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.pool import M_HTTP_END, M_HTTP_TARGET
from micronf.packet.headers import IPPROTO_TCP, ipv4_offset, ipv4_proto, l4_offset, l4_ports, tcp_header_len
from micronf.packet.jit import inline_kernel as _njit

__all__ = [
    "HTTP_METHODS",
    "cached_request_span",
    "cached_request_target",
    "http_method_len",
    "http_request_url",
    "http_target_end",
    "http_target_start",
    "is_status_line",
    "le_word8",
    "remember_request_target",
    "request_target",
    "request_url",
    "tcp_segment",
]

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE")

Bytes = npt.NDArray[np.uint8]
_I64 = npt.NDArray[np.int64]


def _le_words(prefixes: Sequence[bytes]) -> tuple[_I64, _I64]:
    """``(words, masks)``: each prefix (at most 8 bytes) as a little-endian int64 and its byte mask."""
    words = np.array([np.frombuffer(b.ljust(8, b"\0"), dtype="<i8")[0] for b in prefixes], dtype=np.int64)
    masks = np.array([np.frombuffer(b"\xff" * len(b) + b"\0" * (8 - len(b)), dtype="<i8")[0] for b in prefixes],
                     dtype=np.int64)
    words.setflags(write=False)
    masks.setflags(write=False)
    return words, masks


# "METHOD" as 64-bit words: a request line is recognised with one masked compare per method, then
# one byte test for the separator (SP or TAB) after it
_METHOD_WORDS, _METHOD_MASKS = _le_words([m.encode() for m in HTTP_METHODS])
_METHOD_LENS = np.array([len(m) for m in HTTP_METHODS], dtype=np.int64)
_METHOD_LENS.setflags(write=False)
_VERSION_WORD = int(np.frombuffer(b"HTTP/0.0", dtype="<i8")[0])  # "HTTP/d.d" with both digits 0
_VERSION_MASK = int(np.frombuffer(b"\xff\xff\xff\xff\xff\xf0\xff\xf0", dtype="<i8")[0])  # ignores the
# low nibble of the digits; _is_version checks them


@_njit
def le_word8(buf: Bytes, begin: int, end: int) -> int:
    """``buf[begin:begin+8]`` as a little-endian int64, bytes past ``end`` (or the array) read as 0.

    Why: prefixes of up to 8 bytes (HTTP methods, ``HTTP/1.``) are then recognised with one
    masked integer compare each instead of a byte loop; ``begin < 0`` gives 0.
    """
    lo = max(begin, 0)
    n = min(end, buf.shape[0], lo + 8) - lo
    w = 0
    for k in range(n):
        w |= int(np.int64(buf[lo + k])) << (8 * k)
    return w


@_njit
def http_method_len(word: int) -> int:
    """Length of ``METHOD SP`` (one of :data:`HTTP_METHODS`) at the start of ``word``, or -1.

    ``word`` is :func:`le_word8` of the payload; methods are case-sensitive, as in RFC 9110. A TAB
    after the method counts as the space (lenient servers accept it, so a WAF must too).
    """
    for m in range(_METHOD_WORDS.shape[0]):
        if (word & _METHOD_MASKS[m]) == _METHOD_WORDS[m]:
            n = int(_METHOD_LENS[m])
            sep = (word >> (8 * n)) & 0xFF
            return n + 1 if sep == 32 or sep == 9 else -1
    return -1


@_njit
def _is_blank(c: int) -> bool:
    """SP or TAB: what separates the parts of a request line for a lenient server."""
    return c == 32 or c == 9


@_njit
def _is_version(buf: Bytes, at: int, end: int) -> bool:
    """Whether ``buf[at:at+8]`` is ``HTTP/d.d`` and lies inside ``[0, end)``."""
    if at < 0 or at + 8 > end:
        return False
    w = le_word8(buf, at, end)
    if (w & _VERSION_MASK) != _VERSION_WORD:
        return False
    return 48 <= (w >> 40) & 0xFF <= 57 and 48 <= (w >> 56) & 0xFF <= 57


@_njit
def http_target_end(buf: Bytes, begin: int, end: int) -> int:
    """Where the request-target starting at ``buf[begin]`` ends, parsed as lenient servers do.

    The request line ends at the first CR or LF (or at ``end``, clamped to the array, when the
    packet is cut there). If the line ends with ``SP HTTP/d.d`` (trailing blanks allowed; SP may
    be a TAB), the target ends before the blanks preceding the version; otherwise (HTTP/0.9, or
    a cut line) it runs to the end of the line. Trailing blanks are never part of the target.
    Spaces INSIDE the target are kept: ``GET /a?q=1' OR 'a'='a HTTP/1.1`` has the target
    ``/a?q=1' OR 'a'='a``, which is what nginx and most application servers hand to the code.
    """
    lo = max(begin, 0)
    hi = min(end, buf.shape[0])
    # unsigned indices (all >= lo >= 0): numba adds no negative-index wraparound code; one
    # rarely taken branch per byte (c <= 13) instead of two compares
    e = lo
    while e < hi:
        c = buf[np.uint64(e)]
        if c <= 13 and (c == 13 or c == 10):
            break
        e += 1
    while e > lo and _is_blank(buf[np.uint64(e - 1)]):
        e -= 1
    if e - lo >= 9 and _is_blank(buf[np.uint64(e - 9)]) and _is_version(buf, e - 8, hi):
        e -= 9
        while e > lo and _is_blank(buf[np.uint64(e - 1)]):
            e -= 1
    return e


@_njit
def http_target_start(buf: Bytes, at: int, end: int) -> int:
    """``at`` past any further blanks: ``GET  /x`` has the target ``/x`` (nginx skips them too).

    ``at`` is the byte after ``METHOD SP``; ``end`` is clamped to the array.
    """
    hi = min(end, buf.shape[0])
    while at < hi and _is_blank(buf[at]):
        at += 1
    return at


@_njit
def http_request_url(buf: Bytes, begin: int, end: int) -> tuple[int, int]:
    """``(url_begin, url_end)`` of the request-target if ``buf[begin:end]`` starts an HTTP request.

    The window must start with one of :data:`HTTP_METHODS` (case-sensitive, as in RFC 9110)
    followed by a space or a TAB; the target starts at the next byte that is not a blank
    (:func:`http_target_start`) and ends as :func:`http_target_end` says (at the blanks before a
    final ``HTTP/d.d``, else at the end of the line or of the window).
    Otherwise ``(-1, -1)``. Only ``buf[begin:end]`` (clamped to the array) is read.
    """
    lo = max(begin, 0)
    hi = min(end, buf.shape[0])
    n = http_method_len(le_word8(buf, lo, hi))
    if n < 0:
        return (-1, -1)
    u0 = http_target_start(buf, lo + n, hi)
    return (u0, http_target_end(buf, u0, hi))


# --------------------------------------------------------------------------- TCP payload and parse cache
Frame = npt.NDArray[np.uint8]
Words = npt.NDArray[np.uint32]  # PoolArrays.words: passing the whole pool costs a refcount per array

_STATUS_WORD = int(np.frombuffer(b"HTTP/1.\0", dtype="<i8")[0])  # le_word8 of a status line, masked
_STATUS_MASK = (1 << 56) - 1  # its first 7 bytes


@njit(cache=True, nogil=True, forceinline=True)  # no NRT refcounting of the frame per call
def tcp_segment(frame: Frame) -> tuple[int, int, int]:
    """``(payload offset, src port, dst port)`` of an IPv4 TCP segment, or ``(-1, -1, -1)``.

    ``(-1, -1, -1)`` for non-IPv4, non-TCP, a non-first fragment (it has no TCP header) or a
    truncated IP/TCP header. The payload offset may equal the frame length (empty payload).
    """
    l4 = l4_offset(frame)
    if l4 < 0 or ipv4_proto(frame, ipv4_offset(frame)) != IPPROTO_TCP:
        return (-1, -1, -1)
    thl = tcp_header_len(frame, l4)
    if thl < 0:
        return (-1, -1, -1)
    sport, dport = l4_ports(frame, l4)
    return (l4 + thl, sport, dport)


@njit(cache=True, nogil=True, forceinline=True)  # no NRT refcounting of the frame per call
def is_status_line(frame: Frame, payload: int) -> bool:
    """True when the payload at ``payload`` starts with ``HTTP/1.`` (a response); False if not."""
    return payload >= 0 and (le_word8(frame, payload, frame.shape[0]) & _STATUS_MASK) == _STATUS_WORD


@njit(cache=True, nogil=True, forceinline=True)  # no NRT refcounting of the frame per call
def request_target(frame: Frame) -> int:
    """Offset of the request-target of an HTTP request starting a TCP segment's payload, or -1.

    The first byte after ``METHOD SP`` that is not a blank (it may equal the frame length); where
    the target ends costs a pass over the request line, done only when asked
    (:func:`cached_request_span`).
    """
    payload, _, _ = tcp_segment(frame)
    if payload < 0:
        return -1
    n = http_method_len(le_word8(frame, payload, frame.shape[0]))
    return http_target_start(frame, payload + n, frame.shape[0]) if n > 0 else -1


@njit(cache=True, nogil=True, inline="always")  # inlined by numba: no NRT refcounts of the arrays per packet
def cached_request_target(words: Words, h: int, frame: Frame) -> int:
    """:func:`request_target` of packet ``h`` (``frame`` is its frame), through the parse cache.

    The first HTTP µNF a packet meets parses it and stores the result in the packet's metadata
    (``M_HTTP_TARGET``); the next ones read it (see :func:`micronf.dataplane.pool.pkt_forget_parse`
    for why and when it is forgotten).
    """
    cached = np.int64(words[h, M_HTTP_TARGET])
    if cached != 0:
        return int(cached) - 2
    at = request_target(frame)
    remember_request_target(words, h, at)
    return at


@njit(cache=True, nogil=True, inline="always")
def remember_request_target(words: Words, h: int, at: int) -> None:
    """Store ``at`` (:func:`request_target` of packet ``h``'s frame, -1 for none) in its parse cache.

    The end of the target is marked as not parsed yet: every fresh start comes with a fresh end,
    so forgetting the start (``M_HTTP_TARGET = 0``) is enough to forget both.
    """
    words[h, M_HTTP_TARGET] = at + 2
    words[h, M_HTTP_END] = 0


@njit(cache=True, nogil=True, inline="always")  # inlined by numba: no NRT refcounts of the arrays per packet
def cached_request_span(words: Words, h: int, frame: Frame) -> tuple[int, int]:
    """``(start, end)`` of the request-target of packet ``h`` through the parse cache, or ``(-1, -1)``.

    The same parse as :func:`request_url`: the start is :func:`cached_request_target`, the end
    (:func:`http_target_end`, one pass over the request line) is computed
    by the first µNF that needs it and kept in ``M_HTTP_END`` for the next ones, so CountUrl and
    ValidateUrl see the same target and the line is scanned once per packet.
    """
    at = cached_request_target(words, h, frame)
    end = int(np.int64(words[h, M_HTTP_END])) - 1  # -1: not parsed yet (or no request: at < 0)
    if at >= 0 and end < 0:
        end = http_target_end(frame, at, frame.shape[0])
        words[h, M_HTTP_END] = end + 1
    return (at, end)


@njit(cache=True, nogil=True, forceinline=True)  # no NRT refcounting of the frame per call
def request_url(frame: Frame) -> tuple[int, int]:
    """``(start, end)`` of the request-target of an HTTP request starting a TCP segment's payload.

    :func:`http_request_url` on the TCP payload: the target runs from after
    ``METHOD SP`` to the blanks before a final ``HTTP/d.d`` on the request line, or to the end of
    the line (or of the frame, when the line is cut off there) without one. ``(-1, -1)`` when the
    frame is not a TCP segment whose payload starts with a request method and a space or TAB.
    """
    payload, _, _ = tcp_segment(frame)
    if payload < 0:
        return (-1, -1)
    start, end = http_request_url(frame, payload, frame.shape[0])
    return (start, end)
