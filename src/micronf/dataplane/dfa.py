"""Regular-expression signatures compiled into one DFA, matched by numba kernels at compiled speed.

Why: ValidateUrl (SQL-injection detection over the HTTP request URL) must match a set of regex
signatures on every packet without per-packet Python. :func:`compile_patterns` turns the
signatures into ONE deterministic automaton for "some signature matches somewhere in the input"
(the union of the search automata ``.*(p)``), stored as a dense byte-indexed transition table;
:func:`dfa_search` / :func:`dfa_search_urldecoded` run it over a byte window with one table load
per byte and stop at the first accepting state. Matching cost is independent of the number of
signatures and immune to regex backtracking blow-ups.

How the DFA is built
--------------------
Each pattern is parsed and turned into a per-pattern DFA by ``interegular`` (the regex -> FSM
library used by ``lark`` and ``outlines``); the multi-pattern search automaton is then built here
by a subset construction over byte classes and minimized (Moore partition refinement):
``interegular``'s own concatenation/union/minimization take ~3 s for the default set and did not
finish in 5 minutes for a variant with a ``/\\*.*\\*/`` comment signature. Accepting states are
merged into one absorbing state, so a kernel may stop at the first match.
Building the default :data:`SQLI_SIGNATURES` (18 signatures, 1079 states) takes 0.4-1.5 s;
results are cached per process (``functools.lru_cache``) and, when ``NUMBA_CACHE_DIR`` is set (micronf
sets it on import), on disk as ``$NUMBA_CACHE_DIR/micronf-dfa/<key>.npz``. The arrays are read-only.

Matching semantics (the oracle is Python's ``re`` on ``bytes``)
---------------------------------------------------------------
``dfa_search(...)`` is True iff ``re.search(p, data, re.IGNORECASE | re.DOTALL)`` matches for some
pattern ``p`` (``re.IGNORECASE`` only when ``ignore_case``), where ``data`` is the window
``buf[begin:end]`` as ``bytes`` and a trailing ``$`` in ``p`` is read as ``\\Z``. That is:

* matching is over bytes, not text: ``\\d \\s \\w`` are ASCII classes
  (``[0-9]``, ``[ \\t\\n\\r\\f\\v]``, ``[a-zA-Z0-9_]``) and case folding is ASCII-only;
* ``.`` matches ANY byte, newline included (the URL is not made of lines: an attacker must not be
  able to break ``union/*...*/select`` with ``%0a``);
* search semantics: a match may start anywhere in the window.

SUPPORTED REGEX SUBSET (anything else raises ``ValueError`` naming the pattern)
-------------------------------------------------------------------------------
Patterns are ``str`` made of ASCII characters, with Python ``re`` syntax:

* literals; escaped metacharacters (``\\.``, ``\\*``, ``\\(``, ``\\[``, ``\\{``, ``\\\\``, ``\\/``...);
* escapes ``\\t \\n \\r \\f \\v \\a`` and ``\\xHH`` (a byte value; ``\\x80``-``\\xff`` only with
  ``ignore_case=False``);
* classes ``\\d \\D \\s \\S \\w \\W``, ``.``, and bracket classes ``[abc]``, ``[^abc]``, ranges
  ``[a-z0-9]``, escapes and ``\\d``-style classes inside brackets; a literal ``]`` in a class must
  be escaped (``[\\]]``); a literal ``{`` outside a class must be escaped (``\\{``);
* quantifiers ``* + ? {m} {m,} {,n} {m,n}`` (bounds at most ``max_states``), lazy forms
  ``*? +? ?? {m,n}?`` (same language: only *whether* something matches is reported);
* alternation ``|``, groups ``(...)``, ``(?:...)`` and ``(?P<name>...)``;
* anchors, relative to the scanned window (the URL): ``^`` or ``\\A`` as the very first token of a
  pattern (match must start at ``begin``) and ``$`` or ``\\Z`` as the very last token (match must
  end at ``end``; unlike Python's ``$`` it does not also match before a final newline). An
  anchored pattern must not have a top-level ``|`` (write ``^(?:a|b)``, not ``^a|b``).

Not supported (``ValueError``): anchors anywhere else, ``\\b \\B``, backreferences (``\\1``,
``(?P=name)``), octal escapes (``\\0``, ``\\101``: write ``\\x00``, ``\\x41``), lookahead and
lookbehind (``(?=`` ``(?!`` ``(?<=`` ``(?<!``), atomic groups ``(?>...)`` and possessive quantifiers
(``*+`` ``++`` ``?+``), inline flags and comments (``(?i)``, ``(?#...)``), conditionals,
``\\u``/``\\N``/unicode properties, non-ASCII characters in the pattern string, and patterns that
match the empty string unless anchored at both ends (they would flag every input).

URL decoding and WAF normalization
----------------------------------
:func:`dfa_search_urldecoded` decodes on the fly, exactly like
``urllib.parse.unquote_to_bytes(s.replace(b"+", b" "))``: ``%XX`` (hex digits of either case)
becomes the byte ``0xXX``, ``+`` becomes a space, and a ``%`` not followed by two hex digits inside
the window is taken literally; a decoded byte is never decoded again.

ValidateUrl does more, as a WAF does before matching (:func:`waf_normalize`, run by
:func:`url_target_search`): a second decoding (double encoding: ``%2527`` -> ``'``), IIS's
``%uXXXX``, stray ``%`` dropped (ASP), NUL bytes removed, UTF-8 overlong and fullwidth forms folded
to ASCII, ``/*comments*/`` and ``--``/``#`` comments up to a LF replaced by a space, other control
bytes and NBSP turned into spaces. An attacker cannot know whether the application decodes once or
twice, so the WAF inspects the most decoded form; the price is that a benign literal ``%27`` typed
by a user (``%2527`` on the wire) is seen as a quote, which the signatures tolerate (a quote alone
is never a match).

The request-target itself is found as lenient servers find it (:func:`http_request_url`): after
``METHOD`` and a space or TAB, to the blanks before a final ``HTTP/d.d`` on the line, raw spaces
inside included (``GET /item?q=1' OR 'a'='a HTTP/1.1`` has the target ``/item?q=1' OR 'a'='a``).

Kernels
-------
All kernels are ``@njit(cache=True, nogil=True)`` and are meant to be inlined into a µNF's batch
loop. They take ``table``/``accept``/``start`` separately (numba cannot take the dataclass) and
read only ``buf[begin:end]``: the window is clamped to ``[0, buf.shape[0])`` and nothing outside
it is ever read. ``accept[state]`` is :data:`ACCEPT_NOW` (1, absorbing: the input matches),
:data:`ACCEPT_AT_END` (2: matches if the input ends here, for ``$`` patterns) or 0.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import interegular
import numpy as np
import numpy.typing as npt
from interegular.fsm import anything_else
from interegular.patterns import REFlags
from numba import njit

__all__ = [
    "ACCEPT_AT_END",
    "ACCEPT_NOW",
    "HTTP_METHODS",
    "MAX_STATES_LIMIT",
    "SQLI_SIGNATURES",
    "Dfa",
    "UrlDfa",
    "compile_patterns",
    "dfa_search",
    "dfa_search_urldecoded",
    "http_method_len",
    "http_request_url",
    "http_target_end",
    "http_target_start",
    "le_word8",
    "url_dfa",
    "url_target_search",
    "waf_normalize",
]

ACCEPT_NOW = 1
ACCEPT_AT_END = 2
MAX_STATES_LIMIT = 65535  # the table is uint16
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE")

Table = npt.NDArray[np.uint16]
Accept = npt.NDArray[np.uint8]
Bytes = npt.NDArray[np.uint8]
_I64 = npt.NDArray[np.int64]

# --------------------------------------------------------------------------- default signatures
# Written for the request-target as waf_normalize leaves it (decoded twice, comments as spaces, NULs
# gone), case-insensitive. Each one needs SQL syntax around the keyword, so ordinary paths and
# queries ("/union-station/selection", "?q=rock+and+roll", "O%27Reilly", "?order=price&select=all")
# do not trigger. Measured on the labelled corpus of tests/nfs/sqli_corpus.py (bench/dfa.py).
SQLI_SIGNATURES: tuple[str, ...] = (
    # 1. Boolean test after a value (tautology, boolean blind): ' OR '1'='1, 1 AND 1=2, " OR ""=",
    #    ') OR ('a'='a, 1' AND 'a'<'b, || and && (symboliclogical), LIKE/BETWEEN for '=' (equaltolike,
    #    between). The operand must be a number or a quoted word, so "rock and roll" is not one.
    r"[\s\d'\"()](and|or|xor|&&|\|\|)\s*\(*\s*(\d+|'\w*'?|\"\w*\"?)\s*(=|<|>|!|like\s|not\s|between\s|rlike\s|regexp\s|is\s|in\s*\()",
    # 2. Boolean test on a function call or a constant after a value: 1 AND LENGTH(database())=8,
    #    ' || pg_sleep(5), ' or true--
    r"[\s\d'\"()](and|or|xor|&&|\|\|)\s*((ascii|substr|substring|length|len|mid|if|exp|count|ord|hex|database|user|version|pg_sleep|sleep)\s*\(|true|false)",
    # 3. UNION-based extraction: union select, UNION ALL SELECT, union(select ...), and UNION
    #    followed by an unterminated comment (a terminated one is a space by now)
    r"union(\s|\(|all|distinct)+select|union(\s|\(|all|distinct)*/\*",
    # 4. Stacked query after a statement terminator: ;DROP TABLE, ; shutdown --, );SELECT pg_sleep(5)
    r";\s*(drop|delete|insert|update|shutdown|alter|create|truncate|exec|execute|select|declare|waitfor)[\s(;#-]",
    # 5. Quote break-out followed by a comment or a terminator: admin'--, '#, '/*, ')--, '; "--
    r"'\)*\s*(--|#|/\*|;)|\"\)*\s*(--|/\*|;)",
    # 6. An SQL line comment that cuts the rest of the query: at the end (id=1--, id=1-- -, id=1--+)
    #    or before the next parameter (id=1--&page=2)
    r"--[\s-]*$",
    r"--[\s-]*&",
    # 7. Time-based blind: sleep(5), pg_sleep(10), benchmark(5000000,md5(1)), waitfor delay '0:0:5'
    r"sleep\s*\(\s*\d+\s*\)|benchmark\s*\(|waitfor\s+(delay|time)\s",
    # 8. Schema enumeration (MySQL/PostgreSQL/MSSQL/SQLite catalogs)
    r"information_schema|sqlite_master|pg_catalog|sysobjects|syscolumns",
    # 9. Long hex literal used to smuggle strings (select 0x61646d696e, concat(0x3a,...)); not after
    #    '=' or '/', where hashes and ids (?tx=0x5c50..., /tx/0x5c50...) are legitimate
    r"[\s(,]0x[0-9a-f]{8,}",
    # 10. MySQL executable comment used to hide keywords: /*!50000union*/, /*!0select
    r"/\*!",
    # 11. Sub-select: (select ..., ((select, (SELECT(SLEEP(5)))
    r"\(\s*select[\s(]",
    # 12. File read/write from SQL: load_file('/etc/passwd'), into outfile / dumpfile
    r"load_file\s*\(|into\s+(out|dump)file",
    # 13. MSSQL stored procedures: exec master..xp_cmdshell, execute sp_configure, -- sp_password
    r"exec(ute)?\s+(master\.\.)?(xp|sp)_\w+|xp_cmdshell|sp_password",
    # 14. Server fingerprinting: @@version, @@datadir, ...
    r"@@(version|datadir|hostname|basedir|servername)",
    # 15. Column-count probing after a value: 1 order by 5, ') ORDER BY 3, 1 GROUP BY 1,2 (not
    #     "order by 5pm"); HAVING after a value; MySQL's PROCEDURE ANALYSE()
    r"[\d'\")]\s*(order|group)\s+by\s+\d|[\d'\")]\s*having\s|procedure\s+analyse",
    # 16. String building to dodge quote filters: char(97,100), concat(0x61,...), chr(39);
    #     error-based extraction: extractvalue(...), updatexml(...)
    r"(char|chr|concat|concat_ws|group_concat)\s*\(\s*(\d|0x)|extractvalue\s*\(|updatexml\s*\(",
    # 17. A SQL metacharacter still encoded after two decodings (triple encoding): ' " ; # -- /*
    r"%(27|22|3b|23|2d%2d|2f%2a)",
)

# --------------------------------------------------------------------------- numba kernels
_F = TypeVar("_F", bound=Callable[..., Any])


def _njit(fn: _F) -> _F:
    """``njit(cache=True, nogil=True, forceinline=True)(fn)``, typed so mypy keeps ``fn``'s signature.

    ``forceinline``: a kernel called as a real function from a µNF's batch loop costs an atomic
    NRT incref/decref of the frame array per call (see ``micronf.dataplane.headers``).
    """
    return cast(_F, njit(cache=True, nogil=True, forceinline=True)(fn))


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
def _hex_value(c: int) -> int:
    """Value of the ASCII hex digit ``c`` (either case), or -1."""
    if 48 <= c <= 57:
        return c - 48
    lc = c | 0x20
    if 97 <= lc <= 102:
        return lc - 87
    return -1


@_njit
def dfa_search(table: Table, accept: Accept, start: int, buf: Bytes, begin: int, end: int) -> bool:
    """True iff the DFA accepts somewhere in ``buf[begin:end]`` (stops at the first match).

    The window is clamped to ``[0, buf.shape[0])``; no byte outside it is read.
    """
    lo = max(begin, 0)
    hi = min(end, buf.shape[0])
    s = int(np.int64(start))
    for i in range(lo, hi):
        s = int(np.int64(table[s, buf[i]]))
        if accept[s] == ACCEPT_NOW:
            return True
    return bool(accept[s] != 0)


@_njit
def dfa_search_urldecoded(table: Table, accept: Accept, start: int, buf: Bytes, begin: int, end: int) -> bool:
    """:func:`dfa_search` over the URL-decoded ``buf[begin:end]`` (``%XX`` and ``+``), decoded once.

    A ``%`` needs both hex digits inside the window to be decoded; otherwise it is literal.
    """
    lo = max(begin, 0)
    hi = min(end, buf.shape[0])
    s = int(np.int64(start))
    i = lo
    while i < hi:
        c = int(np.int64(buf[i]))
        i += 1
        if c == 37:  # '%'
            if i + 1 < hi:
                h = _hex_value(int(np.int64(buf[i])))
                lo4 = _hex_value(int(np.int64(buf[i + 1])))
                if h >= 0 and lo4 >= 0:
                    c = h * 16 + lo4
                    i += 2
        elif c == 43:  # '+'
            c = 32
        s = int(np.int64(table[s, c]))
        if accept[s] == ACCEPT_NOW:
            return True
    return bool(accept[s] != 0)


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


# --------------------------------------------------------------------------- WAF normalization
def _byte_table(values: dict[int, int], default: int = 0) -> Bytes:
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
    byte_class, reps = _byte_classes(dense)
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


# --------------------------------------------------------------------------- the DFA
@dataclass(frozen=True, eq=False)
class Dfa:
    """A byte-indexed DFA for "some pattern matches somewhere in the input".

    ``table[s, b]`` is the next state from ``s`` on byte ``b`` (case already folded into the
    table when built with ``ignore_case``); ``accept[s]`` is 0, :data:`ACCEPT_NOW` (absorbing) or
    :data:`ACCEPT_AT_END`; ``patterns`` are the sources it was compiled from. Validated on
    construction so kernels can index without checks. Compared and hashed by identity.
    """

    table: Table
    accept: Accept
    start: int
    patterns: tuple[str, ...]

    def __post_init__(self) -> None:
        t, a = self.table, self.accept
        if t.dtype != np.uint16 or t.ndim != 2 or t.shape[1] != 256 or not t.flags.c_contiguous:
            raise ValueError(f"table must be a C-contiguous uint16 array of shape [n, 256], got {t.dtype} {t.shape}")
        n = t.shape[0]
        if n == 0 or a.dtype != np.uint8 or a.shape != (n,):
            raise ValueError(f"accept must be uint8 of shape ({n},), got {a.dtype} {a.shape}")
        if int(t.max()) >= n or not 0 <= self.start < n or int(a.max()) > ACCEPT_AT_END:
            raise ValueError("table/start/accept hold out-of-range values")

    @property
    def n_states(self) -> int:
        """Number of states (rows of :attr:`table`)."""
        return int(self.table.shape[0])

    def search(self, data: bytes | bytearray | memoryview | Bytes) -> bool:
        """:func:`dfa_search` over the whole of ``data`` (convenience for control-plane code)."""
        buf = _as_bytes(data)
        return bool(dfa_search(self.table, self.accept, self.start, buf, 0, buf.shape[0]))

    def search_urldecoded(self, data: bytes | bytearray | memoryview | Bytes) -> bool:
        """:func:`dfa_search_urldecoded` over the whole of ``data``."""
        buf = _as_bytes(data)
        return bool(dfa_search_urldecoded(self.table, self.accept, self.start, buf, 0, buf.shape[0]))


def _as_bytes(data: bytes | bytearray | memoryview | Bytes) -> Bytes:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    return np.frombuffer(bytes(data), dtype=np.uint8)


# --------------------------------------------------------------------------- compiler
class _TooManyStatesError(Exception):
    pass


@dataclass(frozen=True)
class _Part:
    """One pattern as a minimized byte DFA; finals are absorbing unless the pattern ends with ``$``."""

    table: _I64  # [n, 256]
    final: npt.NDArray[np.bool_]
    start: int
    dead: int  # -1 when there is none
    anchored_start: bool
    anchored_end: bool


_BRACE_QUANT = re.compile(r"\{(\d*)(?:,(\d*))?\}")


def _unescaped_at(s: str, i: int) -> bool:
    """True if ``s[i]`` is preceded by an even number of backslashes."""
    j = i
    while j > 0 and s[j - 1] == "\\":
        j -= 1
    return (i - j) % 2 == 0


def _split_anchors(pattern: str, max_states: int) -> tuple[str, bool, bool]:
    """Strip the leading/trailing anchors and reject syntax outside the supported subset."""

    def bad(why: str) -> ValueError:
        return ValueError(f"unsupported regex {pattern!r}: {why}")

    core = pattern
    a_start = a_end = False
    if core.startswith("^"):
        core, a_start = core[1:], True
    elif core.startswith("\\A"):
        core, a_start = core[2:], True
    if core.endswith("$") and _unescaped_at(core, len(core) - 1):
        core, a_end = core[:-1], True
    elif core.endswith("\\Z") and _unescaped_at(core, len(core) - 2):
        core, a_end = core[:-2], True

    i, n, depth, top_alt, after_quant = 0, len(core), 0, False, False
    while i < n:
        c = core[i]
        quant = False
        if c == "\\":
            nxt = core[i + 1] if i + 1 < n else ""
            if nxt in ("A", "Z", "b", "B"):
                raise bad(
                    f"\\{nxt} is only supported as the first/last token (\\A, \\Z)"
                    if nxt in "AZ"
                    else f"word boundaries (\\{nxt}) are not supported"
                )
            if nxt.isdigit():
                raise bad("backreferences and octal escapes are not supported (write bytes as \\xHH)")
            i += 2
        elif c == "[":
            j = i + 1
            if j < n and core[j] == "^":
                j += 1
            if j < n and core[j] == "]":
                raise bad("a literal ']' in a character class must be escaped as '\\]'")
            while j < n and core[j] != "]":
                j += 2 if core[j] == "\\" else 1
            i = j + 1
        elif c == "(":
            if core.startswith("(?:", i):
                i += 3
            elif core.startswith("(?P<", i):
                i = core.index(">", i) + 1
            elif core.startswith("(?", i):
                raise bad(
                    f"group extension {core[i : i + 4]!r}... (lookaround, atomic groups, inline flags, "
                    "comments, conditionals, named references) is not supported"
                )
            else:
                i += 1
            depth += 1
        elif c == ")":
            depth -= 1
            i += 1
        elif c == "|":
            top_alt = top_alt or depth == 0
            i += 1
        elif c in "*+?":
            if after_quant and c == "+":
                raise bad("possessive quantifiers are not supported")
            quant = not after_quant  # '?' after a quantifier makes it lazy: same language
            i += 1
        elif c == "{":
            m = _BRACE_QUANT.match(core, i)
            if m is None or m.group() == "{}":
                raise bad("a literal '{' must be escaped as '\\{'")
            if max(int(m.group(1) or 0), int(m.group(2) or 0)) > max_states:
                raise bad(f"repetition bound in {m.group()!r} exceeds max_states={max_states}")
            quant = True
            i = m.end()
        elif c in "^$":
            raise bad(f"{c!r} is only supported as the first ('^') / last ('$') character of a pattern")
        else:
            i += 1
        after_quant = quant
    if top_alt and (a_start or a_end):
        raise bad("an anchored pattern must not have a top-level '|': write ^(?:a|b) instead of ^a|b")
    return core, a_start, a_end


def _minimize(trans: _I64, label: _I64, start: int) -> tuple[_I64, _I64, int]:
    """Moore partition refinement, then renumber reachable states breadth-first from ``start`` (-> 0).

    ``trans`` is ``[n, k]`` over any alphabet of ``k`` classes. Each round refines the blocks by
    (block, block of each successor), folding one column at a time into dense ids with a 1-D
    ``np.unique`` (exact, no hashing).
    """
    block = np.unique(label, return_inverse=True)[1].reshape(-1).astype(np.int64)
    nb = int(block.max()) + 1
    while True:
        new = block
        for c in range(trans.shape[1]):
            key = new * nb + block[trans[:, c]]
            new = np.unique(key, return_inverse=True)[1].reshape(-1).astype(np.int64)
        nn = int(new.max()) + 1
        block = new
        if nn == nb:
            break
        nb = nn
    reps = np.zeros(nb, dtype=np.int64)
    reps[block] = np.arange(block.shape[0], dtype=np.int64)
    mtrans = block[trans[reps]]
    mlabel = label[reps]
    # breadth-first renumbering: start becomes 0, unreachable states are dropped
    rows = mtrans.tolist()
    order = [int(block[start])]
    pos = {order[0]: 0}
    for s in order:
        for t in rows[s]:
            if t not in pos:
                pos[t] = len(order)
                order.append(t)
    perm = np.full(nb, -1, dtype=np.int64)
    idx = np.array(order, dtype=np.int64)
    perm[idx] = np.arange(len(order), dtype=np.int64)
    return perm[mtrans[idx]], mlabel[idx], 0


def _byte_classes(table: _I64) -> tuple[_I64, _I64]:
    """``(byte_class [256], representative byte of each class)``: bytes with identical columns."""
    _, first, byte_class = np.unique(table.T, axis=0, return_index=True, return_inverse=True)
    return byte_class.reshape(-1).astype(np.int64), first.astype(np.int64)


def _pattern_part(pattern: str, ignore_case: bool, max_states: int) -> _Part:
    """Parse one pattern with interegular and return its minimized byte DFA."""
    if not isinstance(pattern, str):
        raise TypeError(f"patterns must be str, got {type(pattern).__name__}: {pattern!r}")
    if not pattern.isascii():
        raise ValueError(f"unsupported regex {pattern!r}: non-ASCII characters (write bytes as \\xHH)")
    try:
        re.compile(pattern.encode("ascii"))
    except re.error as e:
        raise ValueError(f"invalid regex {pattern!r}: {e}") from None
    core, a_start, a_end = _split_anchors(pattern, max_states)
    flags = REFlags.SINGLE_LINE | (REFlags.CASE_INSENSITIVE if ignore_case else REFlags(0))
    try:
        fsm = interegular.parse_pattern(core).to_fsm(flags=flags)
    except Exception as e:  # interegular raises Unsupported, InvalidSyntax and assorted others
        raise ValueError(f"unsupported regex {pattern!r}: {type(e).__name__}: {e}") from None
    if len(fsm.states) > max_states:
        raise ValueError(f"regex {pattern!r} alone needs {len(fsm.states)} states > max_states={max_states}")

    alphabet = fsm.alphabet
    for sym in alphabet:
        if sym is anything_else:
            continue
        if len(sym) != 1 or ord(sym) > 0xFF or (ignore_case and ord(sym) > 0x7F):
            raise ValueError(f"unsupported regex {pattern!r}: bytes >= 0x80 can only be named with ignore_case=False")
    states = sorted(fsm.states)
    index = {s: k for k, s in enumerate(states)}
    dead = len(states)
    keys = [alphabet[chr(b)] for b in range(256)]
    table = np.full((dead + 1, 256), dead, dtype=np.int64)
    for s in states:
        out = fsm.map.get(s, {})
        table[index[s]] = [index[out[k]] if k is not None and k in out else dead for k in keys]
    final = np.zeros(dead + 1, dtype=np.int64)
    for s in fsm.finals:
        final[index[s]] = 1
    if final[index[fsm.initial]] and not (a_start and a_end):
        raise ValueError(f"regex {pattern!r} matches the empty string, so it would flag every input")
    if not a_end:  # a match anywhere decides the search: make finals absorbing (shrinks the DFA)
        table[final == 1] = np.nonzero(final == 1)[0][:, None]
    byte_class, reps = _byte_classes(table)
    ctable, mfinal, mstart = _minimize(table[:, reps], final, index[fsm.initial])
    mtable = ctable[:, byte_class]
    rows = np.arange(mtable.shape[0])
    sinks = np.nonzero((mfinal == 0) & (mtable == rows[:, None]).all(axis=1))[0]
    return _Part(mtable, mfinal == 1, mstart, int(sinks[0]) if sinks.size else -1, a_start, a_end)


def _search_automaton(parts: Sequence[_Part], max_states: int) -> tuple[_I64, _I64, int]:
    """Subset construction of the union of the search automata ``.*(p)`` over byte classes.

    A combined state is the set of live (pattern, state) pairs: every partial match in progress.
    Unanchored patterns restart at every byte, so every set contains their start states; their
    successors are precomputed per byte class and only the other members are followed one by one.
    Returns ``(table [n, 256], accept [n], start)``, minimized; state 0 of the construction is the
    absorbing accepting state.
    """
    offsets = [0]
    for p in parts:
        offsets.append(offsets[-1] + p.table.shape[0])
    glob = np.concatenate([p.table + off for p, off in zip(parts, offsets, strict=False)])
    byte_class, reps = _byte_classes(glob)  # case pairs fall into one class when ignore_case
    gk: list[list[int]] = glob[:, reps].tolist()
    n_classes = len(reps)
    kind = [0] * glob.shape[0]  # ACCEPT_NOW: the input matches; ACCEPT_AT_END: only if it ends here
    live = [True] * glob.shape[0]
    for p, off in zip(parts, offsets, strict=False):
        for s in np.nonzero(p.final)[0].tolist():
            kind[off + s] = ACCEPT_AT_END if p.anchored_end else ACCEPT_NOW
        if p.dead >= 0:
            live[off + p.dead] = False
    restart = frozenset(off + p.start for p, off in zip(parts, offsets, strict=False) if not p.anchored_start)
    first_set = frozenset(off + p.start for p, off in zip(parts, offsets, strict=False))

    def step(members: frozenset[int] | set[int], c: int, into: set[int]) -> bool:
        """Add the live successors of ``members`` on class ``c`` to ``into``; True on a match."""
        for g in members:
            t = gk[g][c]
            if kind[t] == ACCEPT_NOW:
                return True
            if live[t]:
                into.add(t)
        return False

    base: list[frozenset[int] | None] = []  # successors of the restart set (None: a match)
    for c in range(n_classes):
        acc: set[int] = set(restart)
        base.append(None if step(restart, c, acc) else frozenset(acc))
    order: list[frozenset[int]] = [frozenset(), first_set]
    index = {first_set: 1}
    rows: list[list[int]] = [[0] * n_classes]
    k = 1
    while k < len(order):
        extra = order[k] - restart
        k += 1
        row = []
        for c in range(n_classes):
            b = base[c]
            if b is None:
                row.append(0)
                continue
            if extra:
                nxt = set(b)
                if step(extra, c, nxt):
                    row.append(0)
                    continue
                key = frozenset(nxt)
            else:
                key = b
            j = index.get(key)
            if j is None:
                j = len(order)
                if j >= max_states:
                    raise _TooManyStatesError
                index[key] = j
                order.append(key)
            row.append(j)
        rows.append(row)
    accept = np.zeros(len(order), dtype=np.int64)
    accept[0] = ACCEPT_NOW
    for j in range(1, len(order)):
        if any(kind[g] == ACCEPT_AT_END for g in order[j]):
            accept[j] = ACCEPT_AT_END
    if any(kind[g] == ACCEPT_NOW for g in first_set):  # unreachable: empty matches are rejected
        rows[1] = rows[0]
        accept[1] = ACCEPT_NOW
    mtrans, maccept, mstart = _minimize(np.array(rows, dtype=np.int64), accept, 1)
    return mtrans[:, byte_class], maccept, mstart


def _count_states(part: _Part, max_states: int) -> int:
    """States of the search automaton of one pattern, or ``max_states + 1`` when it overflows."""
    try:
        return int(_search_automaton([part], max_states)[0].shape[0])
    except _TooManyStatesError:
        return max_states + 1


def _build(patterns: tuple[str, ...], ignore_case: bool, max_states: int) -> tuple[Table, Accept, int]:
    parts = [_pattern_part(p, ignore_case, max_states) for p in patterns]
    try:
        table, accept, start = _search_automaton(parts, max_states)
    except _TooManyStatesError:
        sizes = sorted(
            ((_count_states(part, max_states), p) for part, p in zip(parts, patterns, strict=True)), reverse=True
        )
        alone = [p for size, p in sizes if size > max_states]
        if alone:
            raise ValueError(
                f"regex {alone[0]!r} alone needs more than max_states={max_states} DFA states"
                + (f" (so do {alone[1:]!r})" if len(alone) > 1 else "")
            ) from None
        top = ", ".join(f"{p!r} ({size} states)" for size, p in sizes[:3])
        raise ValueError(
            f"the union of {len(patterns)} patterns needs more than max_states={max_states} DFA "
            f"states; largest single patterns: {top}"
        ) from None
    return np.ascontiguousarray(table, dtype=np.uint16), np.ascontiguousarray(accept, dtype=np.uint8), int(start)


# On-disk cache: <NUMBA_CACHE_DIR>/micronf-dfa/<key>.npz, keyed on the patterns, the options, this
# file's source and interegular's version, so any change of the compiler starts afresh. A file
# that cannot be read or fails validation is ignored (and rebuilt); writes are atomic.
_CACHE_SUBDIR = "micronf-dfa"


def _cache_path(patterns: tuple[str, ...], ignore_case: bool, max_states: int) -> Path | None:
    root = os.environ.get("NUMBA_CACHE_DIR")
    if not root:
        return None
    h = hashlib.blake2b(digest_size=16)
    h.update(Path(__file__).read_bytes())
    h.update(f"interegular={interegular.__version__};ignore_case={ignore_case};max_states={max_states}".encode())
    for p in patterns:
        h.update(b"\0" + p.encode())
    return Path(root) / _CACHE_SUBDIR / f"{h.hexdigest()}.npz"


def _cache_load(path: Path, patterns: tuple[str, ...]) -> Dfa | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if tuple(str(p) for p in z["patterns"]) != patterns:
                return None
            table = np.ascontiguousarray(z["table"])
            accept = np.ascontiguousarray(z["accept"])
            start = int(z["start"])
        return _frozen_dfa(table, accept, start, patterns)
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _cache_store(path: Path, dfa: Dfa) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    table=dfa.table,
                    accept=dfa.accept,
                    start=np.int64(dfa.start),
                    patterns=np.array(dfa.patterns, dtype=np.str_),
                )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError:
        pass  # a read-only or full cache directory only costs a rebuild next time


def _frozen_dfa(table: Table, accept: Accept, start: int, patterns: tuple[str, ...]) -> Dfa:
    table.setflags(write=False)
    accept.setflags(write=False)
    return Dfa(table=table, accept=accept, start=start, patterns=patterns)


@functools.lru_cache(maxsize=32)
def _compile_cached(patterns: tuple[str, ...], ignore_case: bool, max_states: int) -> Dfa:
    path = _cache_path(patterns, ignore_case, max_states)
    if path is not None and path.is_file():
        cached = _cache_load(path, patterns)
        if cached is not None:
            return cached
    dfa = _frozen_dfa(*_build(patterns, ignore_case, max_states), patterns)
    if path is not None:
        _cache_store(path, dfa)
    return dfa


def compile_patterns(patterns: Sequence[str], *, ignore_case: bool = True, max_states: int = 20000) -> Dfa:
    """Compile ``patterns`` into one DFA accepting inputs in which ANY pattern matches anywhere.

    See the module docstring for the supported subset and the exact semantics. Raises
    ``ValueError`` naming the offending pattern for unsupported syntax, and when the automaton
    would need more than ``max_states`` states (checked during construction, before
    minimization; at most :data:`MAX_STATES_LIMIT`). Results are cached per process and on disk
    (see the module docstring); the returned arrays are read-only.
    """
    if isinstance(patterns, str):
        raise TypeError("patterns must be a sequence of str, not a single str")
    pats = tuple(patterns)
    for p in pats:
        if not isinstance(p, str):
            raise TypeError(f"patterns must be str, got {type(p).__name__}: {p!r}")
    if not pats:
        raise ValueError("no patterns given")
    if not 1 <= max_states <= MAX_STATES_LIMIT:
        raise ValueError(f"max_states must be in [1, {MAX_STATES_LIMIT}], got {max_states}")
    return _compile_cached(pats, bool(ignore_case), int(max_states))
