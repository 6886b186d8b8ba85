"""ValidateUrl: drop HTTP requests whose URL matches an SQL-injection signature (paper §VII-A3)."""

from __future__ import annotations

from enum import auto
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field, field_validator

from micronf.nf import (
    Access,
    CounterArray,
    Counters,
    Descriptor,
    DropReasons,
    Handles,
    MicroNF,
    NFConfig,
    Out,
    PoolArrays,
    VerdictArray,
    borrowed,
    borrowed_pool,
    pkt_frame,
)
from micronf.packet.dfa import compile_patterns
from micronf.packet.http import cached_request_span
from micronf.packet.sqli import SQLI_SIGNATURES
from micronf.packet.waf import url_dfa, url_target_search


class Drop(DropReasons):
    sqli = auto()


class Counter(Counters):
    checked = auto()
    not_request = auto()


class State(NamedTuple):
    """The signatures' URL automaton (``micronf.packet.dfa.UrlDfa``)."""

    cmap: npt.NDArray[np.uint16]
    table: npt.NDArray[np.uint16] | npt.NDArray[np.uint32]
    params: npt.NDArray[np.int64]


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: Handles, n: int, verdicts: VerdictArray, state: State,
           counters: CounterArray) -> None:
    p = borrowed_pool(p)  # no refcounting of the frame and tables per packet (most of the cost otherwise)
    cmap = borrowed(state.cmap)
    table = borrowed(state.table)
    params = borrowed(state.params)
    checked = 0
    not_request = 0
    for i in range(n):
        h = handles[i]
        f = pkt_frame(p, h)
        lo, hi = cached_request_span(p.words, h, f)
        if lo < 0:
            not_request += 1
            verdicts[i] = Out.out
        else:
            checked += 1
            if url_target_search(cmap, table, params, f, lo, hi):
                verdicts[i] = Drop.sqli
            else:
                verdicts[i] = Out.out
    counters[Counter.checked] += checked
    counters[Counter.not_request] += not_request


class ValidateUrl(MicroNF):
    """Drop HTTP requests whose normalized request-target matches a SQL-injection signature.

    Config:
        signatures: regular expressions, matched case-insensitively anywhere in the normalized
            request-target (default: the ``SQLI_SIGNATURES`` of ``micronf.packet.dfa``).
    Ports:
        out: requests whose URL matches no signature, and every packet that does not start an
            HTTP request (responses, continuation segments, non-TCP, non-IPv4, non-first
            fragments, truncated headers).
        drop:sqli: requests whose URL matches a signature.
    Counters:
        checked: request lines whose URL was matched against the signatures (passed or dropped).
        not_request: packets passed without a check because they carry no request line.
    Notes:
        The URL is the request-target of an HTTP/1.x request line at the start of a TCP payload,
        parsed as lenient servers (nginx, most application servers) parse it, so the WAF sees what
        they would hand to the application: from after ``METHOD`` and a space or TAB to the
        blanks before a final ``HTTP/d.d``, raw spaces inside included (``GET /item?q=1' OR
        'a'='a HTTP/1.1``), or to the end of the line (of the frame, when it is cut off) without
        a version. It is normalized as a WAF does before matching: URL-decoded twice (``%XX``,
        ``+``, IIS ``%uXXXX``; double encoding), stray ``%`` dropped, NUL bytes removed, UTF-8
        overlong and fullwidth forms folded to ASCII, SQL comments (``/**/``, ``--``/``#`` up to
        a LF) and control bytes turned into spaces; matching is case-insensitive. Headers and
        body are not inspected and TCP streams are not reassembled. All signatures run as one DFA
        (``micronf.packet.dfa``; see there for the supported regex subset and exact
        semantics, e.g. ``$`` anchors at the end of the URL), so the cost is one table lookup per
        URL byte whatever the number of signatures, plus a second pass over URLs that need more
        than one decoding (a ``%`` left, comments, control or non-ASCII bytes). An unsupported
        regex is a config error that names it. Never modifies a packet.
    """

    class Config(NFConfig):
        """Config of ValidateUrl."""

        signatures: list[str] = Field(
            default=list(SQLI_SIGNATURES),
            min_length=1,
            description="SQL-injection signatures: regular expressions (Python syntax, the subset "
            "micronf.packet.dfa supports) searched case-insensitively in the normalized URL.",
        )

        @field_validator("signatures")
        @classmethod
        def _compiles(cls, v: list[str]) -> list[str]:
            compile_patterns(v, ignore_case=True)  # ValueError names the offending signature
            return v

    descriptor = Descriptor(l3=Access.READ, l4=Access.READ, payload=Access.READ, may_drop=True)
    Drop = Drop
    Counter = Counter
    config: Config
    kernel = kernel

    def state(self) -> State:
        dfa = url_dfa(compile_patterns(self.config.signatures, ignore_case=True))  # cached per process
        return State(dfa.cmap, dfa.table, dfa.params)
