"""WAF normalization of a request-target and the fused decode-and-match kernel of ValidateUrl.

ValidateUrl does more than URL decoding, as a WAF does before matching (:func:`waf_normalize`, run
by :func:`url_target_search`): a second decoding (double encoding: ``%2527`` -> ``'``), IIS's
``%uXXXX``, stray ``%`` dropped (ASP), NUL bytes removed, UTF-8 overlong and fullwidth forms folded
to ASCII, ``/*comments*/`` and ``--``/``#`` comments up to a LF replaced by a space, other control
bytes and NBSP turned into spaces. An attacker cannot know whether the application decodes once or
twice, so the WAF inspects the most decoded form; the price is that a benign literal ``%27`` typed
by a user (``%2527`` on the wire) is seen as a quote, which the signatures tolerate (a quote alone
is never a match).

:class:`UrlDfa` lays a :class:`~micronf.packet.dfa.Dfa` out for that hot path (byte classes,
pre-multiplied rows). The first decoding step is written twice on purpose, in :func:`waf_normalize`
and inlined in :func:`url_target_search`'s loop, where a call would cost the DFA loop its speed.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from micronf.packet.dfa import Dfa
from micronf.packet.jit import inline_kernel as _njit
from micronf.packet.regex import ACCEPT_NOW, byte_classes

__all__ = ["UrlDfa", "url_dfa", "url_target_search", "waf_normalize"]

Bytes = npt.NDArray[np.uint8]
_I64 = npt.NDArray[np.int64]


def _byte_table(values: dict[int, int], default: int = 0) -> Bytes:
    """A read-only 256-entry lookup table: ``values[b]`` for the listed bytes, else ``default``."""
    t = np.full(256, default, dtype=np.uint8)
    for k, v in values.items():
        t[k] = v
    t.setflags(write=False)
    return t


_HEX = _byte_table({c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}, default=255)
# Bytes that, once in the first decoding's output, need the second pass of :func:`waf_normalize`:
# '%' (a second decoding, or a stray '%' to drop), '*' (a /*comment*/), LF (a --/# comment up to
# it), NUL and the other control bytes that are not \s, and every byte >= 0x80 (UTF-8 folding).
_PASS2 = _byte_table({c: 1 for c in [37, 42, 10, *range(0, 9), *range(14, 32), *range(128, 256)]})
_MORE = 0x8000  # UrlDfa.cmap: the _PASS2 bit ...
_COLUMN = 0x7FFF  # ... and the column bits


@_njit
def _percent(buf: Bytes, i: int, hi: int) -> tuple[int, int]:
    """``(byte, next index)`` for the ``%`` at ``buf[i]``, reading before ``hi``.

    ``%XX`` gives the byte; IIS's ``%uXXXX`` gives ``XXXX`` when below 0x100, the ASCII twin of
    a fullwidth form (U+FF01..U+FF5E) and 0x80 for anything else; a ``%`` without the digits
    stands for itself (``(37, i + 1)``). Only called on a ``%``: the per-byte loops handle every
    other byte inline (a call taking an array costs an NRT incref/decref pair).
    """
    if i + 2 < hi:
        h = int(np.int64(_HEX[buf[i + 1]]))
        lo4 = int(np.int64(_HEX[buf[i + 2]]))
        if (h | lo4) < 16:
            return (h * 16 + lo4, i + 3)
        if i + 5 < hi and (buf[i + 1] | 0x20) == 117:  # %u
            cp = 0
            bad = 0
            for k in range(2, 6):
                d = int(np.int64(_HEX[buf[i + k]]))
                bad |= d  # 255 for a non-hex digit
                cp = (cp << 4) | d
            if bad < 16:
                if cp < 0x100:
                    return (cp, i + 6)
                if 0xFF01 <= cp <= 0xFF5E:
                    return (cp - 0xFEE0, i + 6)
                return (0x80, i + 6)
    return (37, i + 1)


@_njit
def _find_after(buf: Bytes, i: int, hi: int, a: int, b: int) -> int:
    """Index just past the first ``a`` (followed by ``b`` when ``b >= 0``) in ``buf[i:hi]``, or -1."""
    while i < hi:
        if buf[i] == a and (b < 0 or (i + 1 < hi and buf[i + 1] == b)):
            return i + (1 if b < 0 else 2)
        i += 1
    return -1


@_njit
def _normalize_in_place(out: Bytes, n: int) -> int:
    """The second pass of :func:`waf_normalize` over ``out[0:n]`` (the first decoding), in place.

    Writes never overtake reads, so it works in place; returns the new length.
    """
    r = 0
    w = 0
    no_comment_end = False  # a search for "*/" failed once: every later one would fail too
    while r < n:
        c = int(np.int64(out[r]))
        r2 = r + 1
        if c == 37:
            c, r2 = _percent(out, r, n)  # the second decoding: %2527 -> %27 -> ' (no '+' this time)
        if c == 37 and r2 == r + 1:  # a '%' still without hex digits: dropped, as ASP does
            r = r2
            continue
        if r2 == r + 1 and c >= 0xC0 and r2 < n:  # UTF-8 that WAFs fold to ASCII
            c1 = int(np.int64(out[r2]))
            if c <= 0xC1 and 0x80 <= c1 <= 0xBF:  # overlong 2-byte form of an ASCII byte
                c = ((c & 1) << 6) | (c1 & 0x3F)
                r2 += 1
            elif c == 0xEF and r2 + 1 < n and (c1 == 0xBC or c1 == 0xBD):  # fullwidth U+FF01..U+FF5E
                c2 = int(np.int64(out[r2 + 1]))
                v = ((c1 & 3) << 6 | (c2 & 0x3F)) + 0x20
                if 0x21 <= v <= 0x7E and (c2 & 0xC0) == 0x80:
                    c = v
                    r2 += 2
        elif r2 == r + 1 and c == 47 and not no_comment_end and r2 + 1 < n and out[r2] == 42 and out[r2 + 1] != 33:
            k = _find_after(out, r2 + 1, n, 42, 47)  # /*comment*/ (not MySQL's executable /*!...*/)
            if k >= 0:
                out[w] = 32
                w += 1
                r = k
                continue
            no_comment_end = True
        elif r2 == r + 1 and (c == 35 or (c == 45 and r2 < n and out[r2] == 45)):
            k = _find_after(out, r2, n, 10, -1)  # --comment<LF> or #comment<LF>: a space to SQL
            if k >= 0:
                out[w] = 32
                w += 1
                r = k
                continue
        if c == 0:  # NUL bytes: removed
            r = r2
            continue
        if (c < 32 and c != 9) or c == 0xA0:  # other control bytes and NBSP: blanks to MySQL/MSSQL
            c = 32
        out[w] = c
        w += 1
        r = r2
    return w


@_njit
def waf_normalize(buf: Bytes, begin: int, end: int, out: Bytes) -> int:
    """Normalize the request-target ``buf[begin:end]`` as a WAF does before matching; write it to
    ``out`` and return its length (at most ``end - begin``; ``out`` is never written past its end).

    Why: an injection hides from signatures behind encodings and SQL syntax the server or the
    database undoes. Two passes, both linear:

    1. URL decoding (:func:`_percent`, and ``+`` as a space): ``%XX``, ``%uXXXX``;
    2. over that result: a second ``%XX``/``%uXXXX`` decoding (double encoding, ``%2527`` -> ``'``;
       a ``%`` still not followed by hex digits is dropped, as ASP does: ``%S%E%L%E%C%T``); NUL
       bytes removed; UTF-8 overlong 2-byte forms (``%C0%A7``) and fullwidth forms (``%EF%BC%87``)
       folded to their ASCII byte; ``/*comment*/`` replaced by one space (an unterminated one, and
       MySQL's executable ``/*!...*/``, are kept: signatures flag them); ``--...`` and ``#...`` up
       to a LF replaced by one space (space2dash, space2hash); other control bytes and NBSP
       (0xA0) become spaces (what MySQL and MSSQL take as blanks).

    Case is not folded here: the DFA is case-insensitive. Not undone: ``\\uXXXX``, HTML entities,
    triple encoding, comments inside keywords (``UN/**/ION`` is two tokens to SQL anyway).
    """
    lo = max(begin, 0)
    hi = min(end, buf.shape[0], lo + out.shape[0])
    n = 0
    i = lo
    while i < hi:
        c = int(np.int64(buf[i]))
        i += 1
        if c == 37:
            c, i = _percent(buf, i - 1, hi)
        elif c == 43:
            c = 32
        out[n] = c
        n += 1
    return _normalize_in_place(out, n)


class UrlDfa(NamedTuple):
    """A :class:`Dfa` laid out for :func:`url_target_search`: the hot path of ValidateUrl.

    Why this layout (measured, see ``bench/nfs.py``): the dense ``[n, 256]`` uint16 table of the
    default signatures is large and a step costs a multiply and a 2-D index; here bytes map to
    the DFA's byte classes and the table is ``[n_states, n_classes + 1]`` row-major with each
    entry PRE-MULTIPLIED by the row length, so a step is ``s = table[s + cmap[c]]`` (one add, one
    load). The absorbing match state and a "stopped, no match" state are the two last rows, so
    ``s >= stop`` (one compare) detects a match early; the extra END column, taken once after the
    last byte, leads to one of them depending on whether the DFA accepts at the end of the input
    (``$`` patterns).

    ``cmap[0:256]`` maps a byte to its column (``cmap[c] & _COLUMN``), with the bit ``_MORE`` set
    for the bytes that need the second normalization pass (one load per byte for both);
    ``params`` = ``[start offset, stop offset, match offset, END column]``. The table is uint16
    when every offset fits, else uint32.
    """

    cmap: npt.NDArray[np.uint16]
    table: npt.NDArray[np.uint16] | npt.NDArray[np.uint32]
    params: _I64


@functools.lru_cache(maxsize=32)
def url_dfa(dfa: Dfa) -> UrlDfa:
    """The :class:`UrlDfa` of ``dfa``: same language (cached per Dfa; the arrays are read-only)."""
    dense = dfa.table.astype(np.int64)
    byte_class, reps = byte_classes(dense)
    n, k = dense.shape[0], reps.shape[0]
    match, stopped = n, n + 1  # the two extra rows
    now = dfa.accept == ACCEPT_NOW
    rows = np.where(now[dense[:, reps]], match, dense[:, reps])  # matching once is enough: stop there
    end = np.where(dfa.accept != 0, match, stopped)[:, None]
    table = np.concatenate([np.concatenate([rows, end], axis=1), np.full((2, k + 1), [[match], [stopped]])])
    width = k + 1
    flat = (table * width).reshape(-1)
    packed: npt.NDArray[np.uint16] | npt.NDArray[np.uint32] = (
        np.ascontiguousarray(flat, dtype=np.uint16)
        if int(flat.max()) <= np.iinfo(np.uint16).max
        else np.ascontiguousarray(flat, dtype=np.uint32)
    )
    if k >= _MORE:
        raise ValueError(f"{k} byte classes do not fit the column bits of UrlDfa.cmap")
    cmap = np.ascontiguousarray(byte_class | np.where(_PASS2 != 0, _MORE, 0), dtype=np.uint16)
    start = match if now[dfa.start] else dfa.start
    params = np.array([start * width, match * width, match * width, k], dtype=np.int64)
    for arr in (cmap, packed, params):
        arr.setflags(write=False)
    return UrlDfa(cmap, packed, params)


@_njit
def _url_scan(cmap: npt.NDArray[np.uint16], table: npt.NDArray[Any], params: _I64, buf: Bytes, n: int) -> bool:
    """Whether the :class:`UrlDfa` matches ``buf[0:n]`` (stops at the first match)."""
    s = int(params[0])
    stop = int(params[1])
    i = 0
    while i < n and s < stop:
        s = int(np.int64(table[np.uint64(s + (cmap[buf[i]] & _COLUMN))]))  # unsigned: see url_target_search
        i += 1
    if s < stop:
        s = int(np.int64(table[s + params[3]]))
    return bool(s == params[2])


@_njit
def url_target_search(cmap: npt.NDArray[np.uint16], table: npt.NDArray[Any], params: _I64, buf: Bytes,
                      begin: int, end: int) -> bool:
    """Whether the request-target ``buf[begin:end]``, normalized by :func:`waf_normalize`, matches.

    The first pass URL-decodes and runs the DFA in the same loop, and notes whether the decoded
    bytes need the second pass of :func:`waf_normalize` (a ``%`` left, a comment, a NUL, control
    or non-ASCII byte: the high bit of ``cmap``). Most URLs do not: then that pass is the answer,
    at a decoding step and one DFA step per byte. The others are normalized into a scratch
    buffer allocated then (so the common path passes no extra array) and matched there. The
    window is clamped to the array.
    """
    lo = max(begin, 0)
    hi = min(end, buf.shape[0])
    s = int(params[0])
    more = 0
    i = lo
    while i < hi:
        c = int(np.int64(buf[i]))
        i += 1
        if c == 37:
            c, i = _percent(buf, i - 1, hi)
        elif c == 43:
            c = 32
        k = int(np.int64(cmap[c]))
        more |= k
        # an unsigned index: numba adds no negative-index wraparound (a shift and an AND on the
        # load-to-load chain of the DFA, which bounds the speed: 99 -> 73 cycles/packet)
        s = int(np.int64(table[np.uint64(s + (k & _COLUMN))]))
    if more & _MORE == 0:
        if s < params[1]:
            s = int(np.int64(table[s + params[3]]))
        return bool(s == params[2])
    scratch = np.empty(max(hi - lo, 0), dtype=np.uint8)
    return _url_scan(cmap, table, params, scratch, waf_normalize(buf, lo, hi, scratch))
