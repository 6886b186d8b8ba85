"""HTTP/1.x start-line parsing shared by the HTTP µNFs, callable from numba code.

Only the first line of a TCP segment's payload is looked at: a request line
``METHOD SP request-target SP HTTP-version`` or a status line starting with ``HTTP/1.``. Request
lines are parsed as lenient servers (nginx, most application servers) parse them, so that what the
HTTP µNFs inspect is what such a server would hand to the application: a TAB counts as a space and
the target runs to the blanks before a final ``HTTP/d.d``, spaces inside it included (see
:func:`micronf.dataplane.dfa.http_target_end`). Like the
header helpers in :mod:`micronf.dataplane.headers`, every function checks its bounds against the
real frame length and reports failure with ``-1``/``False``; nothing here reassembles TCP streams,
so a start line split over two segments is only seen in its first segment.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.dfa import http_method_len, http_request_url, http_target_end, http_target_start, le_word8
from micronf.dataplane.headers import IPPROTO_TCP, ipv4_offset, ipv4_proto, l4_offset, l4_ports, tcp_header_len
from micronf.dataplane.pool import M_HTTP_END, M_HTTP_TARGET

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
    (:func:`micronf.dataplane.dfa.http_target_end`, one pass over the request line) is computed
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

    :func:`micronf.dataplane.dfa.http_request_url` on the TCP payload: the target runs from after
    ``METHOD SP`` to the blanks before a final ``HTTP/d.d`` on the request line, or to the end of
    the line (or of the frame, when the line is cut off there) without one. ``(-1, -1)`` when the
    frame is not a TCP segment whose payload starts with a request method and a space or TAB.
    """
    payload, _, _ = tcp_segment(frame)
    if payload < 0:
        return (-1, -1)
    start, end = http_request_url(frame, payload, frame.shape[0])
    return (start, end)
