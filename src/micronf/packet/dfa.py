"""Regular-expression signatures compiled into one DFA, matched by numba kernels at compiled speed.

Why: ValidateUrl (SQL-injection detection over the HTTP request URL) must match a set of regex
signatures on every packet without per-packet Python. :func:`compile_patterns` turns the
signatures (compiler: :mod:`micronf.packet.regex`) into ONE deterministic automaton for "some
signature matches somewhere in the input" (the union of the search automata ``.*(p)``), stored
as a dense byte-indexed transition table;
:func:`dfa_search` / :func:`dfa_search_urldecoded` run it over a byte window with one table load
per byte and stop at the first accepting state. Matching cost is independent of the number of
signatures and immune to regex backtracking blow-ups.

Compiling the default signatures takes 0.4-1.5 s: results are cached per process
(``functools.lru_cache``) and on disk (:mod:`micronf.packet.dfa_cache`). The arrays are read-only.

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

URL decoding
------------
:func:`dfa_search_urldecoded` decodes on the fly, exactly like
``urllib.parse.unquote_to_bytes(s.replace(b"+", b" "))``: ``%XX`` (hex digits of either case)
becomes the byte ``0xXX``, ``+`` becomes a space, and a ``%`` not followed by two hex digits inside
the window is taken literally; a decoded byte is never decoded again. ValidateUrl normalizes
further, as a WAF does: see :mod:`micronf.packet.waf`.

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
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from micronf.packet.dfa_cache import cache_load, cache_path, cache_store
from micronf.packet.jit import inline_kernel as _njit
from micronf.packet.regex import ACCEPT_AT_END, ACCEPT_NOW, MAX_STATES_LIMIT, Accept, Table, build_tables

__all__ = ["Dfa", "compile_patterns", "dfa_search", "dfa_search_urldecoded"]

Bytes = npt.NDArray[np.uint8]


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
    """``data`` as a contiguous 1-D uint8 array (no copy when it already is one)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    return np.frombuffer(bytes(data), dtype=np.uint8)


def _frozen_dfa(table: Table, accept: Accept, start: int, patterns: tuple[str, ...]) -> Dfa:
    table.setflags(write=False)
    accept.setflags(write=False)
    return Dfa(table=table, accept=accept, start=start, patterns=patterns)


@functools.lru_cache(maxsize=32)
def _compile_cached(patterns: tuple[str, ...], ignore_case: bool, max_states: int) -> Dfa:
    path = cache_path(patterns, ignore_case, max_states)
    if path is not None and path.is_file():
        cached = cache_load(path, patterns)
        if cached is not None:
            try:
                return _frozen_dfa(*cached, patterns)
            except ValueError:  # a damaged file: rebuilt and overwritten below
                pass
    dfa = _frozen_dfa(*build_tables(patterns, ignore_case, max_states), patterns)
    if path is not None:
        cache_store(path, patterns, dfa.table, dfa.accept, dfa.start)
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
