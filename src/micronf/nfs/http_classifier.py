"""HttpClassifier: tell HTTP packets from the rest by their payload (paper §II, §VII-A3)."""

from __future__ import annotations

from enum import auto
from typing import Annotated, NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import Field

from micronf.nf import (
    Access,
    CounterArray,
    Counters,
    Descriptor,
    Handles,
    Labels,
    MicroNF,
    NFConfig,
    PoolArrays,
    VerdictArray,
    borrowed,
    borrowed_pool,
    pkt_frame,
)
from micronf.packet.http import (
    http_method_len,
    http_target_start,
    is_status_line,
    le_word8,
    remember_request_target,
    tcp_segment,
)


class Label(Labels):
    http = auto()
    other = auto()


class Counter(Counters):
    requests = auto()
    responses = auto()


class State(NamedTuple):
    port_ok: npt.NDArray[np.uint8]  # [65536]: nonzero for the HTTP ports
    responses: npt.NDArray[np.int64]  # [1]: 1 to classify status lines as HTTP too


@njit(cache=True, nogil=True)
def kernel(p: PoolArrays, handles: Handles, n: int, verdicts: VerdictArray, state: State,
           counters: CounterArray) -> None:
    p = borrowed_pool(p)  # no refcounting of the frame per packet
    port_ok = borrowed(state.port_ok)
    responses = state.responses[0] != 0
    requests = 0
    replies = 0
    for i in range(n):
        h = handles[i]
        f = pkt_frame(p, h)
        verdicts[i] = Label.other
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
            verdicts[i] = Label.http
        elif responses and is_status_line(f, payload):
            replies += 1
            verdicts[i] = Label.http
    counters[Counter.requests] += requests
    counters[Counter.responses] += replies


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
    Label = Label
    Counter = Counter
    config: Config
    kernel = kernel

    def state(self) -> State:
        port_ok = np.zeros(65536, dtype=np.uint8)
        port_ok[self.config.ports if self.config.ports else slice(None)] = 1
        return State(port_ok, np.array([int(self.config.responses)], dtype=np.int64))

