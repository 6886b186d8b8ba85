"""CountUrl: count HTTP requests per URL of interest (paper §II Monitoring function, §VII-A3)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import AfterValidator, Field

from micronf.dataplane.pool import PoolArrays, pkt_frame
from micronf.nfs._http import bytes_at, request_url
from micronf.runtime.descriptor import Access, Descriptor
from micronf.runtime.nf import KernelState, MicroNF, NFConfig

_OUT = 0
_PREFIX = 0  # state[2][0]: the match mode
_CONTAINS = 1


@njit(cache=True, nogil=True)
def _url_matches(f: npt.NDArray[np.uint8], lo: int, hi: int, pat: npt.NDArray[np.uint8], start: int, end: int,
                 contains: bool) -> bool:
    """Whether the URL ``f[lo:hi]`` starts with (or, if ``contains``, contains) ``pat[start:end]``."""
    last = hi - (end - start)  # last position where the pattern still fits
    if not contains:
        last = min(last, lo)
    at = lo
    while at <= last and not bytes_at(f, at, pat, start, end):
        at += 1
    return at <= last


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: npt.NDArray[np.uint32], n: int, verdicts: npt.NDArray[np.int32],
           state: tuple[npt.NDArray[Any], ...], counters: npt.NDArray[np.int64]) -> None:
    pats = state[0]
    ends = state[1]
    contains = state[2][0] == _CONTAINS
    k = ends.shape[0] - 1
    hits = np.zeros(k + 1, dtype=np.int64)  # one per URL, then "other"
    for i in range(n):
        f = pkt_frame(p, handles[i])
        verdicts[i] = _OUT
        lo, hi = request_url(f)
        matched = False
        if lo >= 0:
            for u in range(k):
                if _url_matches(f, lo, hi, pats, ends[u], ends[u + 1], contains):
                    hits[u] += 1
                    matched = True
        if not matched:
            hits[k] += 1
    for u in range(k + 1):
        counters[u] += hits[u]


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
        payload (after ``GET ``, ``POST ``, ...; up to the next space or line end, or the end of
        the frame). It is compared byte for byte: case-sensitive and not URL-decoded, so
        configure URLs the way clients send them (``/a%20b``). A request matching several URLs
        counts once under each of them, so the ``url<k>`` counters need not add up to the
        request count. URLs are printable ASCII without spaces (a space ends the
        request-target). Never modifies or drops a packet. Cost: a naive substring search per URL
        per request, counters bumped once per batch.
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

    def state(self) -> KernelState:
        encoded = [u.encode("ascii") for u in self.config.urls]
        pats = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
        ends = np.cumsum([0, *(len(u) for u in encoded)]).astype(np.int64)
        mode = _CONTAINS if self.config.match == "contains" else _PREFIX
        return (pats, ends, np.array([mode], dtype=np.int64))

    def counter_names(self) -> tuple[str, ...]:
        return (*(f"url{k}" for k in range(len(self.config.urls))), "other")
