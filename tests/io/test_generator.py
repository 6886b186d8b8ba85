"""The synthetic generator: every template checked with scapy, exact composition, windows, count, rate."""

from __future__ import annotations

import re
from collections import Counter
from ipaddress import IPv4Address
from urllib.parse import unquote_to_bytes

import numpy as np
import pytest
from pydantic import ValidationError
from scapy.all import IP, TCP, UDP, Ether

from micronf.io.backend import FrameBatch, RxBackend
from micronf.io.generator import GeneratorRx, TokenBucket
from micronf.io.generator_spec import PAPER_BENIGN_URLS, PAPER_SQLI_URLS, GeneratorSpec, paper_traffic
from micronf.packet.dfa import compile_patterns
from micronf.packet.sqli import SQLI_SIGNATURES

URLS = ("/index.html", "/search?q=a+b", "/x/" + "y" * 30)
MIXED = GeneratorSpec(
    sizes=(60, 128, 300),
    flows=37,
    protocols={"tcp": 0.7, "udp": 0.3},
    http_fraction=0.2,
    urls=URLS,
    url_weights=(2, 1, 1),
    templates=1000,
    seed=7,
)


class FakeClock:
    """A clock the test moves by hand (ns)."""

    def __init__(self) -> None:
        self.now = 1_000_000_000

    def __call__(self) -> int:
        return self.now


def frames_of(g: GeneratorRx) -> list[bytes]:
    return [g.trace.frame(i) for i in range(len(g.trace))]


def request(url: str) -> bytes:
    return b"GET " + url.encode() + b" HTTP/1.1\r\nHost: example.com\r\n\r\n"


def five_tuple(p: Ether) -> tuple[str, str, int, int, int]:
    l4 = p[TCP] if TCP in p else p[UDP]
    return (p[IP].src, p[IP].dst, p[IP].proto, l4.sport, l4.dport)


def with_fresh_checksums(p: Ether) -> bytes:
    q = p.copy()
    del q[IP].chksum
    if TCP in q:
        del q[TCP].chksum
    else:
        del q[UDP].chksum
    return bytes(q)


@pytest.fixture(scope="module")
def mixed() -> GeneratorRx:
    return GeneratorRx(MIXED)


def test_every_template_parses_with_valid_checksums_and_right_size(mixed: GeneratorRx) -> None:
    for i, raw in enumerate(frames_of(mixed)):
        p = Ether(raw)
        assert IP in p and (TCP in p) != (UDP in p), i
        assert p.dst == "02:00:00:00:00:02" and p.src == "02:00:00:00:00:01"
        assert p[IP].len == len(raw) - 14 and p[IP].ttl == 64 and p[IP].ihl == 5
        assert with_fresh_checksums(p) == raw, f"template {i}: a checksum is wrong"
        if UDP in p:
            assert p[UDP].len == len(raw) - 34
        # round-robin sizes; an HTTP request that does not fit grows its frame to exactly fit
        expect = (60, 128, 300)[i % 3]
        if TCP in p and p[TCP].dport == 80:
            m = re.match(rb"GET (\S+) ", bytes(p[TCP].payload))
            assert m is not None
            expect = max(expect, 54 + len(request(m.group(1).decode())))
        assert len(raw) == expect, i
    assert mixed.describe().grown > 0  # the 60-byte HTTP templates


def test_exact_composition_over_a_cycle(mixed: GeneratorRx) -> None:
    kinds: Counter[str] = Counter()
    urls: Counter[str] = Counter()
    tuples = set()
    for i, raw in enumerate(frames_of(mixed)):
        p = Ether(raw)
        tuples.add(five_tuple(p))
        if UDP in p:
            kinds["udp"] += 1
            continue
        payload = bytes(p[TCP].payload)
        if p[TCP].dport == 80:
            kinds["http"] += 1
            m = re.match(rb"GET (\S+) HTTP/1\.1\r\nHost: example\.com\r\n\r\n", payload)
            assert m is not None, payload
            url = m.group(1).decode()
            assert payload == request(url) + bytes(len(payload) - len(request(url))), "padding must be zeros"
            urls[url] += 1
            assert mixed.describe().urls[mixed.describe().url[i]] == url
        else:
            kinds["tcp"] += 1
            assert not payload.startswith(b"GET ")
    assert kinds == {"http": 200, "tcp": 500, "udp": 300}  # 20%, 70% - 20%, 30% of 1000
    assert urls == {URLS[0]: 100, URLS[1]: 50, URLS[2]: 50}  # weights 2:1:1 of 200
    assert len(tuples) == 37


def test_describe_matches_the_frames(mixed: GeneratorRx) -> None:
    c = mixed.describe()
    summary = c.summary()
    assert summary["kinds"] == {"http": 200, "tcp": 500, "udp": 300}
    assert summary["flows"] == 37 and summary["templates"] == 1000
    for i, raw in enumerate(frames_of(mixed)):
        p = Ether(raw)
        f = int(c.flow[i])
        src, dst = str(IPv4Address(int(c.src_ip[f]))), str(IPv4Address(int(c.dst_ip[f])))
        assert five_tuple(p) == (src, dst, int(c.proto[f]), int(c.sport[f]), int(c.dport[f]))
        assert int(c.length[i]) == len(raw)
        assert ("udp" if UDP in p else "http" if p[TCP].dport == 80 else "tcp") == ("http", "tcp", "udp")[c.kind[i]]


def test_addresses_come_from_the_configured_nets() -> None:
    g = GeneratorRx(GeneratorSpec(flows=300, src_net="192.168.0.0/24", dst_net="172.16.5.0/30", seed=3))
    srcs, dsts = set(), set()
    for raw in frames_of(g):
        p = Ether(raw)
        srcs.add(p[IP].src)
        dsts.add(p[IP].dst)
        assert p[TCP].sport >= 1024
    assert srcs <= {f"192.168.0.{h}" for h in range(1, 255)} and len(srcs) > 100
    assert dsts == {"172.16.5.1", "172.16.5.2"}
    assert len({five_tuple(Ether(raw)) for raw in frames_of(g)}) == 300


def test_flows_are_shared_among_kinds_even_when_one_is_rare() -> None:
    spec = GeneratorSpec(
        flows=10, protocols={"tcp": 0.999, "udp": 0.001}, http_fraction=0.009, urls=("/",), templates=1000
    )
    frames = [Ether(f) for f in frames_of(GeneratorRx(spec))]
    by_kind: dict[str, set[tuple[str, str, int, int, int]]] = {"http": set(), "tcp": set(), "udp": set()}
    for p in frames:
        kind = "udp" if UDP in p else "http" if p[TCP].dport == 80 else "tcp"
        by_kind[kind].add(five_tuple(p))
    assert Counter("udp" if UDP in p else "http" if p[TCP].dport == 80 else "tcp" for p in frames) == {
        "http": 9,
        "tcp": 990,
        "udp": 1,
    }
    assert len(by_kind["udp"]) == 1 and len(by_kind["http"]) >= 1
    assert sum(map(len, by_kind.values())) == len(set().union(*by_kind.values())) == 10


def test_http_requests_that_do_not_fit_grow_the_frame() -> None:
    url = "/" + "a" * 100
    g = GeneratorRx(GeneratorSpec(sizes=(60, 1000), http_fraction=1.0, urls=(url,), templates=10, flows=2))
    need = 54 + len(request(url))
    assert [len(f) for f in frames_of(g)] == [need, 1000] * 5
    assert g.describe().grown == 5
    assert all(bytes(Ether(f)[TCP].payload).startswith(request(url)) for f in frames_of(g))


def test_weighted_sizes_and_imix_counts_are_exact() -> None:
    g = GeneratorRx(GeneratorSpec(sizes="imix", templates=1200))
    assert Counter(len(f) for f in frames_of(g)) == {60: 700, 590: 400, 1514: 100}
    g = GeneratorRx(GeneratorSpec(sizes=(100, 200), size_weights=(3, 1), templates=100, protocols={"udp": 1}))
    assert Counter(len(f) for f in frames_of(g)) == {100: 75, 200: 25}
    assert all(UDP in Ether(f) for f in frames_of(g))


def test_same_seed_same_frames_other_seed_other_frames() -> None:
    a = GeneratorRx(MIXED.model_copy(update={"templates": 50, "flows": 5}))
    b = GeneratorRx(MIXED.model_copy(update={"templates": 50, "flows": 5}))
    c = GeneratorRx(MIXED.model_copy(update={"templates": 50, "flows": 5, "seed": 8}))
    assert frames_of(a) == frames_of(b)
    assert frames_of(a) != frames_of(c)


# --------------------------------------------------------------------------- windows and limits


def collect(g: GeneratorRx, max_frames: int, calls: int) -> list[FrameBatch]:
    return [g.recv(max_frames) for _ in range(calls)]


def test_windows_are_views_that_never_cross_the_end() -> None:
    g = GeneratorRx(GeneratorSpec(templates=1000, count=2500))
    assert isinstance(g, RxBackend)
    sizes = [b.n for b in collect(g, 700, 7)]
    assert sizes == [700, 300, 700, 300, 500, 0, 0]
    assert g.exhausted
    assert g.stats() == {"frames": 2500, "bytes": 2500 * 60}


def test_window_contents_follow_the_cycle() -> None:
    g = GeneratorRx(GeneratorSpec(sizes=(60, 61, 62), templates=10, flows=3))
    expect = frames_of(g)
    got = []
    for b in collect(g, 4, 8):
        assert np.shares_memory(b.off, g.trace.offsets) and b.data is g.trace.data
        got += [b.data[b.off[i] : b.off[i] + b.length[i]].tobytes() for i in range(b.n)]
    assert [b for b in got] == (expect * 3)[: len(got)]
    assert len(got) == 4 + 4 + 2 + 4 + 4 + 2 + 4 + 4
    assert not g.exhausted  # count=None: endless


def test_count_zero_and_close() -> None:
    g = GeneratorRx(GeneratorSpec(count=0))
    assert g.exhausted and g.recv(10).n == 0
    g = GeneratorRx(GeneratorSpec())
    g.close()
    g.close()
    assert g.exhausted
    with pytest.raises(ValueError, match="closed"):
        g.recv(1)


def test_composition_over_predicts_delivered_frames() -> None:
    g = GeneratorRx(paper_traffic(count=2345))
    c = g.describe()
    sqli = np.isin(c.url, [c.urls.index(u) for u in PAPER_SQLI_URLS])
    seen = 0
    while not g.exhausted:
        b = g.recv(256)
        for i in range(b.n):
            frame = b.data[b.off[i] : b.off[i] + b.length[i]].tobytes()
            seen += any(frame[54:].startswith(request(u)) for u in PAPER_SQLI_URLS)
    assert seen == c.over(sqli, 2345)
    assert c.over(sqli, 2000) == 400


# --------------------------------------------------------------------------- rate limiter


def test_token_bucket_with_a_fake_clock() -> None:
    clock = FakeClock()
    g = GeneratorRx(GeneratorSpec(rate_pps=1000, burst=10), clock=clock)
    assert g.recv(100).n == 10  # starts full
    assert g.recv(100).n == 0
    clock.now += 1_000_000  # 1 ms = 1 token
    assert g.recv(100).n == 1
    clock.now += 4_999_999  # 4.999999 tokens
    assert g.recv(100).n == 4
    clock.now += 1  # the fraction was kept: now exactly 1 more
    assert g.recv(100).n == 1
    clock.now += 3_000_000
    assert g.recv(2).n == 2  # max_frames limits; the third token stays
    assert g.recv(100).n == 1
    clock.now += 10**9  # a long idle time fills the bucket, no more
    assert g.recv(100).n == 10
    assert g.stats()["frames"] == 10 + 1 + 4 + 1 + 2 + 1 + 10


def test_token_bucket_fractional_rate_and_default_burst() -> None:
    clock = FakeClock()
    g = GeneratorRx(GeneratorSpec(rate_pps=2.5), clock=clock)  # burst = max(1, 10 ms worth) = 1
    assert g.recv(10).n == 1
    clock.now += 399_999_999
    assert g.recv(10).n == 0
    clock.now += 1  # 0.4 s at 2.5 pps = exactly 1 frame
    assert g.recv(10).n == 1
    b = TokenBucket(1e6, 20_000)  # 10 ms of 1 Mpps
    assert b.allowed(0, 0) == 20_000
    b.took(20_000)
    assert b.allowed(7_000, 0) == 7  # 7 µs at 1 Mpps
    assert b.allowed(5_000, 0) == 7  # a clock going back adds nothing


def test_the_rate_limiter_respects_window_ends_and_count() -> None:
    clock = FakeClock()
    g = GeneratorRx(GeneratorSpec(templates=5, flows=1, count=8, rate_pps=1000, burst=100), clock=clock)
    assert [g.recv(100).n for _ in range(3)] == [5, 3, 0]
    assert g.exhausted


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"sizes": (40,)}, r"frame sizes \[40\] outside 60\.\.1514"),
        ({"sizes": (1515,)}, r"outside 60\.\.1514"),
        ({"sizes": ()}, "at least one frame size"),
        ({"rate_pps": -5}, "rate_pps"),
        ({"http_fraction": 0.5}, "needs at least one URL"),
        ({"http_fraction": 0.5, "urls": ("/",), "protocols": {"tcp": 1, "udp": 3}}, "exceeds the TCP share 0.25"),
        ({"urls": ("/a b",)}, "without spaces"),
        ({"urls": ("/" + "a" * 1500,)}, "does not fit"),
        ({"flows": 11, "templates": 10}, "exceeds templates=10"),
        ({"flows": 1, "protocols": {"tcp": 1, "udp": 1}}, "too few for 2 packet kinds"),
        ({"protocols": {"tcp": 1, "udp": 0.0001}}, r"packet kind 'udp' \(share 0\.0001\) gets no template out of 1000"),
        ({"sizes": (60, 70), "size_weights": (1,)}, "size_weights has 1 entries for 2 values"),
        ({"sizes": "imix", "size_weights": (1, 1, 1)}, "cannot be combined"),
        ({"url_weights": (1, -1), "urls": ("/a", "/b")}, "must be >= 0"),
        ({"protocols": {"sctp": 1}}, "protocols"),
        ({"src_mac": "02:00:00:00:00"}, "src_mac"),
        ({"src_net": "10.0.0.1/16"}, r"src_net\n.*not a valid IPv4 network"),
        ({"count": -1}, "count"),
        ({"flows": 2_000_000}, "flows"),
        ({"rate": 5}, "Extra inputs are not permitted"),
    ],
)
def test_bad_specs_are_rejected_with_clear_messages(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        GeneratorSpec.model_validate(fields)


def test_spec_from_json_round_trip() -> None:
    spec = GeneratorSpec.model_validate_json(MIXED.model_dump_json())
    assert spec == MIXED
    assert GeneratorSpec.model_validate({"kind": "generator", "sizes": "imix"}).size_list == (60, 590, 1514)


# --------------------------------------------------------------------------- the paper's traffic


def test_paper_traffic_is_200_byte_http_with_exactly_20_percent_sqli() -> None:
    g = GeneratorRx(paper_traffic(flows=50))
    dfa = compile_patterns(SQLI_SIGNATURES)
    flagged_dfa = flagged_re = 0
    for raw in frames_of(g):
        p = Ether(raw)
        assert len(raw) == 200 and p[TCP].dport == 80
        m = re.match(rb"GET (\S+) HTTP/1\.1\r\n", bytes(p[TCP].payload))
        assert m is not None
        url = m.group(1)
        flagged_dfa += dfa.search_urldecoded(url)
        decoded = unquote_to_bytes(url.replace(b"+", b" "))
        flagged_re += any(re.search(s.encode(), decoded, re.IGNORECASE | re.DOTALL) for s in SQLI_SIGNATURES)
    assert flagged_dfa == flagged_re == 200  # of 1000 templates
    assert len({five_tuple(Ether(raw)) for raw in frames_of(g)}) == 50


def test_paper_urls_each_match_or_not_as_intended() -> None:
    dfa = compile_patterns(SQLI_SIGNATURES)
    assert all(dfa.search_urldecoded(u.encode()) for u in PAPER_SQLI_URLS)
    assert not any(dfa.search_urldecoded(u.encode()) for u in PAPER_BENIGN_URLS)
