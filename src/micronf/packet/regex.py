"""The regex -> DFA compiler: a set of signatures becomes ONE byte-indexed automaton.

:func:`build_tables` turns patterns into the transition table of a deterministic automaton for
"some pattern matches somewhere in the input" (the union of the search automata ``.*(p)``);
:func:`micronf.packet.dfa.compile_patterns` wraps it (checks, caches) into a
:class:`~micronf.packet.dfa.Dfa`, whose kernels run it at one table load per byte.

How the DFA is built
--------------------
Each pattern is parsed and turned into a per-pattern DFA by ``interegular`` (the regex -> FSM
library used by ``lark`` and ``outlines``); the multi-pattern search automaton is then built here
by a subset construction over byte classes and minimized (Moore partition refinement):
``interegular``'s own concatenation/union/minimization take ~3 s for the default set and did not
finish in 5 minutes for a variant with a ``/\\*.*\\*/`` comment signature. Accepting states are
merged into one absorbing state, so a kernel may stop at the first match. Building the default
:data:`micronf.packet.sqli.SQLI_SIGNATURES` (18 signatures, 1079 states) takes 0.4-1.5 s, hence the
caches of :func:`micronf.packet.dfa.compile_patterns`.

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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import interegular
import numpy as np
import numpy.typing as npt
from interegular.fsm import anything_else
from interegular.patterns import REFlags

__all__ = ["ACCEPT_AT_END", "ACCEPT_NOW", "MAX_STATES_LIMIT", "build_tables", "byte_classes"]

ACCEPT_NOW = 1  # accept[state]: the input matches (the state is absorbing)
ACCEPT_AT_END = 2  # accept[state]: the input matches if it ends here (``$`` patterns)
MAX_STATES_LIMIT = 65535  # the table is uint16

Table = npt.NDArray[np.uint16]
Accept = npt.NDArray[np.uint8]
_I64 = npt.NDArray[np.int64]


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


def byte_classes(table: _I64) -> tuple[_I64, _I64]:
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
    byte_class, reps = byte_classes(table)
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
    byte_class, reps = byte_classes(glob)  # case pairs fall into one class when ignore_case
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


def build_tables(patterns: tuple[str, ...], ignore_case: bool, max_states: int) -> tuple[Table, Accept, int]:
    """``(table [n, 256] uint16, accept [n] uint8, start)`` of the search DFA of ``patterns`` (uncached).

    Raises ``ValueError`` naming the offending pattern for unsupported syntax or too many states.
    """
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
