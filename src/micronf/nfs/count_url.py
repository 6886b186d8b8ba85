"""CountUrl: count HTTP requests per URL of interest (paper §II Monitoring function, §VII-A3)."""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import AfterValidator, Field

from micronf.nf import (
    Access,
    CounterArray,
    Descriptor,
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
from micronf.packet.http import cached_request_span

_START, _OUTPUT, _STOP, _WIDTH = 0, 1, 2, 3  # State.params: offsets of the start, first output and stop rows; width


class State(NamedTuple):
    """The URL automaton (see :func:`_automaton`)."""

    cmap: npt.NDArray[np.uint16]  # byte -> column
    table: npt.NDArray[np.unsignedinteger]  # transitions, pre-multiplied row offsets
    params: npt.NDArray[np.int64]  # indexed by _START, _OUTPUT, _STOP, _WIDTH
    out_ptr: npt.NDArray[np.int64]  # output row r lists out_ids[out_ptr[r]:out_ptr[r + 1]]
    out_ids: npt.NDArray[np.int64]  # the URLs (counter indices) ending at a row


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: Handles, n: int, verdicts: VerdictArray, state: State,
           counters: CounterArray) -> None:
    p = borrowed_pool(p)  # no refcounting of the frame and tables per packet
    cmap = borrowed(state.cmap)
    table = borrowed(state.table)
    start = int(state.params[_START])
    output = int(state.params[_OUTPUT])
    stop = int(state.params[_STOP])
    width = int(state.params[_WIDTH])
    out_ptr = borrowed(state.out_ptr)
    out_ids = borrowed(state.out_ids)
    k = counters.shape[0] - 1
    work = np.zeros(2 * k + 1, dtype=np.int64)  # hits per URL, then "other"; then 1 + the last packet seen per URL
    for i in range(n):
        h = handles[i]
        f = pkt_frame(p, h)
        verdicts[i] = Out.out
        at, hi = cached_request_span(p.words, h, f)
        matched = False
        if at >= 0:
            s = start
            while at < hi:
                s = int(np.int64(table[np.uint64(s + cmap[f[at]])]))  # unsigned: no wraparound code
                at += 1
                if s >= output:  # rare: a URL ends here, or the target cannot match any more
                    if s >= stop:
                        break
                    r = (s - output) // width
                    for q in range(out_ptr[r], out_ptr[r + 1]):
                        u = out_ids[q]
                        if work[k + 1 + u] != i + 1:  # count each URL once per request
                            work[k + 1 + u] = i + 1
                            work[u] += 1
                            matched = True
        if not matched:
            work[k] += 1
    for u in range(k + 1):
        counters[u] += work[u]


def _automaton(urls: list[bytes], contains: bool) -> State:
    """The URL matcher as kernel state: an Aho-Corasick automaton (``contains``) or a trie (prefix).

    Why: one pass over the request-target, one table load per byte whatever the number of URLs
    (the naive search compared every URL at every position). The bytes that occur in some URL
    get a column each, all others share column 0. The kernel walks the request-target that
    :func:`micronf.packet.http.cached_request_span` delimits (the same as ValidateUrl's). Rows are
    ordered [states without a URL ending there][states where some URLs end][STOP], entries are
    pre-multiplied row offsets, so the kernel's only per-byte test is ``s >= output``. In prefix
    mode a mismatch goes to STOP, which ends the walk.
    Returns ``(cmap, table, [start, output, stop, width], out_ptr, out_ids)``: the URLs ending in
    the ``r``-th output row are ``out_ids[out_ptr[r]:out_ptr[r + 1]]``.
    """
    alphabet = sorted({c for u in urls for c in u})
    column = {c: j + 1 for j, c in enumerate(alphabet)}
    width = len(alphabet) + 1
    goto: list[dict[int, int]] = [{}]
    ends: list[list[int]] = [[]]  # URLs ending at each trie node (then: matched at each state)
    for idx, u in enumerate(urls):
        node = 0
        for c in u:
            nxt = goto[node].get(c)
            if nxt is None:
                nxt = len(goto)
                goto[node][c] = nxt
                goto.append({})
                ends.append([])
            node = nxt
        ends[node].append(idx)
    n = len(goto)
    stop = n
    delta = [[stop] * width for _ in range(n)]  # [state][column]
    fail = [0] * n
    order = [0]
    for node in order:  # breadth first: a node's failure state is done before the node
        for c in alphabet:
            child = goto[node].get(c)
            if child is not None:
                order.append(child)
                if contains and node != 0:
                    fail[child] = delta[fail[node]][column[c]]
                    ends[child] = ends[child] + ends[fail[child]]
                delta[node][column[c]] = child
            elif contains:
                delta[node][column[c]] = delta[fail[node]][column[c]] if node != 0 else 0
        if contains:
            delta[node][0] = 0  # a byte in no URL: restart
    # rows: [no URL ends][some URL ends][STOP]
    rank = sorted(range(n), key=lambda st: bool(ends[st]))
    row_of = {st: r for r, st in enumerate(rank)}
    row_of[stop] = n
    n_plain = sum(1 for st in range(n) if not ends[st])
    table = np.empty((n + 1, width), dtype=np.int64)
    for st in range(n):
        table[row_of[st]] = [row_of[t] * width for t in delta[st]]
    table[n] = n * width
    dtype = np.uint16 if int(table.max()) <= np.iinfo(np.uint16).max else np.uint32
    cmap = np.zeros(256, dtype=np.uint16)
    for c, j in column.items():
        cmap[c] = j
    out_lists = [ends[st] for st in rank[n_plain:]]
    out_ptr = np.cumsum([0, *(len(x) for x in out_lists)]).astype(np.int64)
    out_ids = np.array([u for x in out_lists for u in x] or [0], dtype=np.int64)
    params = np.array([row_of[0] * width, n_plain * width, n * width, width], dtype=np.int64)
    return State(cmap, np.ascontiguousarray(table.reshape(-1), dtype=dtype), params, out_ptr, out_ids)


def _printable_url(url: str) -> str:
    if not url or not all("!" <= c <= "~" for c in url):
        raise ValueError(f"URL {url!r} must be non-empty printable ASCII without spaces")
    return url


Url = Annotated[str, AfterValidator(_printable_url)]


class CountUrl(MicroNF):
    """Count the HTTP requests whose URL starts with, or contains, each of the configured URLs.

    Config:
        urls: the URLs (or URL fragments) to count, at least one.
        match: ``prefix`` (the request-target starts with the URL) or ``contains`` (default).
    Ports:
        out: every frame, unchanged.
    Counters:
        url<k>: requests whose URL matches ``urls[k]`` (``url0`` counts ``urls[0]``, ...).
        other: packets counted under no ``url<k>``, including every packet that is not an
            HTTP request.
    Notes:
        The URL is the request-target of an HTTP/1.x request line at the start of a TCP
        payload, parsed as lenient servers do (as ValidateUrl does): from after ``GET ``,
        ``POST ``, ... (a TAB may replace the space) to the blanks before a final ``HTTP/d.d``,
        raw spaces inside included, or to the end of the line (or of the frame) without a
        version. It is compared byte for byte: case-sensitive and not URL-decoded, so configure
        URLs the way clients send them (``/a%20b``). A request matching several URLs counts once
        under each of them, so the ``url<k>`` counters need not add up to the request count.
        URLs are printable ASCII without spaces. Never modifies or drops a packet. Cost: the
        end of the target (a pass over the request line, shared with ValidateUrl through the
        parse cache), then one pass over the request-target through an Aho-Corasick automaton
        (a trie in prefix mode), one table load per byte whatever the number of URLs; counters
        bumped once per batch.
    """

    class Config(NFConfig):
        """Config of CountUrl."""

        urls: list[Url] = Field(
            min_length=1,
            description="URLs or URL fragments to count, printable ASCII without spaces; "
            "counter url<k> counts urls[k].",
        )
        match: Literal["prefix", "contains"] = Field(
            default="contains",
            description="prefix: the request-target starts with the URL; contains: it contains the URL.",
        )

    descriptor = Descriptor(l3=Access.READ, l4=Access.READ, payload=Access.READ)
    config: Config
    kernel = kernel

    def state(self) -> State:
        return _automaton([u.encode("ascii") for u in self.config.urls], self.config.match == "contains")

    def counter_names(self) -> tuple[str, ...]:
        return (*(f"url{k}" for k in range(len(self.config.urls))), "other")
