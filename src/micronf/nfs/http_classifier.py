"""HttpClassifier: tell HTTP packets from the rest by their payload (paper §II, §VII-A3)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field

from micronf.dataplane.borrow import borrowed, borrowed_pool
from micronf.dataplane.pool import PoolArrays, pkt_frame
from micronf.packet.http import (
    http_method_len,
    http_target_start,
    is_status_line,
    le_word8,
    remember_request_target,
    tcp_segment,
)
from micronf.runtime.descriptor import Access, Descriptor
from micronf.runtime.nf import KernelState, MicroNF, NFConfig

_HTTP = 0
_OTHER = 1
_REQUESTS = 0  # counter indices
_RESPONSES = 1


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: npt.NDArray[np.uint32], n: int, verdicts: npt.NDArray[np.int32],
           state: tuple[npt.NDArray[Any], ...], counters: npt.NDArray[np.int64]) -> None:
    p = borrowed_pool(p)  # no refcounting of the frame per packet
    port_ok = borrowed(state[0])
    responses = state[1][0] != 0
    requests = 0
    replies = 0
    for i in range(n):
        h = handles[i]
        f = pkt_frame(p, h)
        verdicts[i] = _OTHER
        payload, sport, dport = tcp_segment(f)
        if payload < 0:
            remember_request_target(p.words, h, -1)
            continue
        if port_ok[sport] == 0 and port_ok[dport] == 0:
            continue
        method = http_method_len(le_word8(f, payload, f.shape[0]))
        at = http_target_start(f, payload + method, f.shape[0]) if method > 0 else -1
        remember_request_target(p.words, h, at)  # the HTTP µNFs after us reuse it
        if method > 0:
            requests += 1
            verdicts[i] = _HTTP
        elif responses and is_status_line(f, payload):
            replies += 1
            verdicts[i] = _HTTP
    counters[_REQUESTS] += requests
    counters[_RESPONSES] += replies


class HttpClassifier(MicroNF):
    """Classify TCP segments whose payload starts an HTTP/1.x request or response as ``http``.

    Config:
        responses: also classify status lines (``HTTP/1.``) as HTTP (default true).
        ports: TCP ports of interest, matched against source or destination port (default: any).
    Ports:
        http: TCP segments whose payload starts with a request method and a space or TAB (GET, POST,
            PUT, DELETE, HEAD, OPTIONS, PATCH, CONNECT, TRACE), or with ``HTTP/1.`` when
            ``responses`` is on.
        other: everything else (non-TCP, non-IPv4, non-first fragments, truncated headers,
            continuation segments, other ports).
    Counters:
        requests: packets classified as HTTP requests.
        responses: packets classified as HTTP responses.
    Notes:
        Looks only at the first bytes of each segment's payload, with no TCP reassembly: only the
        segment carrying the start line of a message is ``http``, the rest of its body is
        ``other``. Methods are case-sensitive, as RFC 9110 says. IPv4 only, behind at most one
        802.1Q tag. Never modifies or drops a packet. Cost: a few byte compares per TCP packet.
    """

    class Config(NFConfig):
        """Config of HttpClassifier."""

        responses: bool = Field(default=True, description="Also classify HTTP/1.x status lines as HTTP.")
        ports: list[Annotated[int, Field(ge=0, le=65535)]] = Field(
            default=[],
            description="Only TCP segments with one of these source or destination ports can be HTTP; "
            "empty = any port.",
        )

    descriptor = Descriptor(l3=Access.READ, l4=Access.READ, payload=Access.READ)
    labels = ("http", "other")
    config: Config
    kernel = kernel

    def state(self) -> KernelState:
        port_ok = np.zeros(65536, dtype=np.uint8)
        port_ok[self.config.ports if self.config.ports else slice(None)] = 1
        return (port_ok, np.array([int(self.config.responses)], dtype=np.int64))

    def counter_names(self) -> tuple[str, ...]:
        return ("requests", "responses")

