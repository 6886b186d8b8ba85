"""The HTTP request-target parse cache (``M_HTTP_TARGET``, ``M_HTTP_END``): filled by the first HTTP µNF
that needs it, reused by the next ones, forgotten whenever the frame may have changed."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Packet, Raw

from micronf.dataplane.pool import M_DATA_OFF, M_HTTP_END, M_HTTP_TARGET, PacketPool, pkt_forget_parse, pkt_set_len
from micronf.nfs.count_url import CountUrl
from micronf.nfs.http_classifier import HttpClassifier
from micronf.nfs.ip_ttl_decrementer import IPTtlDecrementer
from micronf.nfs.mac_swapper import MacSwapper
from micronf.nfs.validate_url import ValidateUrl
from micronf.runtime.codegen import loop_source
from micronf.runtime.nf import MicroNF
from tests.nfs.sqli_corpus import reference_target


def _http(payload: bytes, vlan: bool = False) -> Packet:
    l2 = Ether() / Dot1Q(vlan=7) if vlan else Ether()
    return l2 / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=80) / Raw(payload)


def traffic() -> list[Packet]:
    """Requests (with and without a VLAN tag, SQL injection or not), a response, non-HTTP, UDP."""
    return [
        _http(b"GET /login.php?user=admin'-- HTTP/1.1\r\n\r\n"),
        _http(b"POST /search?q=x HTTP/1.1\r\n\r\n", vlan=True),
        _http(b"GET /index.html HTTP/1.1\r\n\r\n"),
        _http(b"HTTP/1.1 200 OK\r\n\r\n"),
        _http(b"\x16\x03\x01 not http"),
        Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5, dport=80) / Raw(b"GET /admin HTTP/1.1"),
    ]


def expected_target(pkt: Packet) -> int:
    """Where the request-target starts, from scapy's own parse (-1: no request line)."""
    if TCP not in pkt or Raw not in pkt:
        return -1
    payload = bytes(pkt[Raw].load)
    method, sep, _ = payload.partition(b" ")
    if not sep or method not in (b"GET", b"POST"):
        return -1
    return len(pkt) - len(payload) + len(method) + 1


class Frames:
    """``frames`` written into a private pool, with the arrays a kernel call needs."""

    def __init__(self, packets: list[Packet]) -> None:
        self.packets = packets
        self.pool = PacketPool.local(len(packets))
        self.handles = self.pool.alloc(len(packets))
        for h, pkt in zip(self.handles.tolist(), packets, strict=True):
            self.pool.write_frame(h, bytes(pkt))

    def run(self, nf: MicroNF) -> tuple[list[int], list[int]]:
        """Run ``nf``'s kernel over every frame: (verdicts, counters)."""
        n = len(self.packets)
        verdicts = np.full(n, -(2**31), dtype=np.int32)
        counters = np.zeros(max(len(nf.counter_names()), 1), dtype=np.int64)
        type(nf).kernel(self.pool.arrays, self.handles, n, verdicts, nf.state(), counters)
        return verdicts.tolist(), counters.tolist()

    def cached(self, word: int = M_HTTP_TARGET) -> list[int]:
        words: npt.NDArray[np.uint32] = self.pool.arrays.words[self.handles, word]
        return [int(w) for w in words]


def test_first_http_unf_fills_the_cache_with_the_request_target() -> None:
    frames = Frames(traffic())
    assert frames.cached() == [0] * len(frames.packets)  # fresh buffers: nothing parsed
    frames.run(HttpClassifier({}))
    assert frames.cached() == [expected_target(p) + 2 for p in frames.packets]


def test_cached_and_fresh_parses_give_the_same_verdicts() -> None:
    nfs: list[MicroNF] = [CountUrl({"urls": ["/login", "/admin", "/search"]}), ValidateUrl({})]
    fresh = Frames(traffic())
    reference = [fresh.run(nf) for nf in nfs]  # each kernel parses for itself and caches
    cached = Frames(traffic())
    cached.run(HttpClassifier({}))
    assert [cached.run(nf) for nf in nfs] == reference
    assert reference[1][0][0] < 0 and reference[0][1][:3] == [1, 0, 1]  # sqli dropped; /login, /search counted


def test_the_cache_is_used_and_forgetting_it_reparses() -> None:
    frames = Frames(traffic()[:1])
    count = CountUrl({"urls": ["/login"]})
    assert frames.run(count)[1][0] == 1
    # A µNF rewrites the payload so that it is no request any more: the stale offset is still read...
    h = int(frames.handles[0])
    at = expected_target(frames.packets[0])
    method = int(frames.pool.arrays.words[h, M_DATA_OFF]) + at - 4  # "GET " starts there
    frames.pool.arrays.data[h, method : method + 3] = np.frombuffer(b"XYZ", np.uint8)
    assert frames.run(count)[1][0] == 1
    # ... until the runtime forgets it, as it does after every µNF that may write past L2.
    pkt_forget_parse(frames.pool.arrays, frames.handles, 1)
    assert frames.cached() == [0]
    assert frames.run(count)[1] == [0, 1]  # not a request: "other"
    assert frames.cached() == [1]  # parsed: no request-target


def test_a_length_change_forgets_the_cache() -> None:
    frames = Frames(traffic()[:1])
    frames.run(HttpClassifier({}))
    assert frames.cached()[0] > 1
    pkt_set_len(frames.pool.arrays, int(frames.handles[0]), 40)
    assert frames.cached() == [0]


def test_the_generated_loop_forgets_after_writers_past_l2_only() -> None:
    def forgets(classes: list[type[MicroNF]]) -> list[str]:
        return [line.strip() for line in loop_source(classes).splitlines() if line.strip().startswith("pkt_forget")]

    assert forgets([IPTtlDecrementer, CountUrl]) == ["pkt_forget_parse(p, h0, n0)"]  # writes L3
    assert forgets([MacSwapper, HttpClassifier, CountUrl]) == []  # L2 writes move no header


def test_the_end_of_the_target_is_parsed_once_and_shared() -> None:
    pkts = [*traffic(), _http(b"GET /item?q=1' OR 'a'='a HTTP/1.1\r\nHost: x\r\n\r\n")]
    frames = Frames(pkts)
    frames.run(HttpClassifier({}))
    assert frames.cached(M_HTTP_END) == [0] * len(pkts)  # the classifier needs only the start
    verdicts, _ = frames.run(ValidateUrl({}))
    ends = []
    for p in pkts:  # where scapy's payload and the reference parse put the end, + 1; 0: no request
        payload = bytes(p[Raw].load) if TCP in p else b""
        target = reference_target(payload)
        ends.append(0 if target is None else expected_target(p) + len(target) + 1)
    assert frames.cached(M_HTTP_END) == ends
    assert verdicts[-1] < 0  # the raw-space injection is dropped
    # the next µNF reads the end from the cache: cut it short and the injection is no longer seen
    h = int(frames.handles[-1])
    frames.pool.arrays.words[h, M_HTTP_END] = expected_target(pkts[-1]) + len(b"/item?q=1") + 1
    assert frames.run(ValidateUrl({}))[0][-1] == 0
    # a fresh start (another classifier pass) comes with a fresh end
    frames.run(HttpClassifier({}))
    assert frames.cached(M_HTTP_END)[-1] == 0
    assert frames.run(ValidateUrl({}))[0][-1] < 0
