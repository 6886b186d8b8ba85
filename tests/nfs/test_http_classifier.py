"""HttpClassifier: request and status lines are ``http``, everything else ``other``, nothing changed."""

from __future__ import annotations

import re

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from micronf.nfs.http_classifier import HttpClassifier
from micronf.runtime.harness import run_kernel
from micronf.runtime.nf import DOC_SECTIONS, NFConfigError

METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE"]
# Reference classification, written independently of the kernel.
REQUEST_RE = re.compile(rb"^(?:" + b"|".join(m.encode() for m in METHODS) + rb")[ \t]")


def tcp(payload: bytes, sport: int = 40000, dport: int = 80) -> bytes:
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=sport, dport=dport) / Raw(payload))


def test_every_request_method_is_http_and_frames_are_untouched() -> None:
    frames = [tcp(f"{m} /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n".encode()) for m in METHODS]
    run = run_kernel(HttpClassifier(), frames)
    assert run.verdicts == ["http"] * len(METHODS)
    assert run.outputs["http"] == frames
    assert run.counters == {"requests": len(METHODS), "responses": 0}


def test_a_tab_after_the_method_counts_as_the_space() -> None:
    # lenient servers accept "GET<TAB>/x", so a WAF must see it as a request
    payloads = [b"GET\t/x HTTP/1.1\r\n\r\n", b"POST\t\t/y\tHTTP/1.0\r\n\r\n", b"GET\x0b/x HTTP/1.1\r\n"]
    assert [bool(REQUEST_RE.match(p)) for p in payloads] == [True, True, False]
    run = run_kernel(HttpClassifier(), [tcp(p) for p in payloads])
    assert run.verdicts == ["http", "http", "other"]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"GET",  # no space after the method
        b"GET/ HTTP/1.1\r\n",
        b"get / HTTP/1.1\r\n",  # methods are case-sensitive
        b"GETS / HTTP/1.1\r\n",
        b" GET / HTTP/1.1\r\n",
        b"FETCH / HTTP/1.1\r\n",
        b"HTTP/2 200\r\n",
        b"HTTP/1",
        b"\x16\x03\x01\x02\x00\x01",  # a TLS ClientHello
    ],
)
def test_payloads_that_are_not_an_http_start_line(payload: bytes) -> None:
    assert not REQUEST_RE.match(payload) and not payload.startswith(b"HTTP/1.")
    run = run_kernel(HttpClassifier(), [tcp(payload)])
    assert run.verdicts == ["other"]
    assert run.counters == {"requests": 0, "responses": 0}


def test_responses_are_http_unless_switched_off() -> None:
    frames = [tcp(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", sport=80, dport=40000),
              tcp(b"HTTP/1.0 404 Not Found\r\n\r\n", sport=80, dport=40000),
              tcp(b"GET / HTTP/1.1\r\n\r\n")]
    run = run_kernel(HttpClassifier(), frames)
    assert run.verdicts == ["http", "http", "http"]
    assert run.counters == {"requests": 1, "responses": 2}
    run = run_kernel(HttpClassifier({"responses": False}), frames)
    assert run.verdicts == ["other", "other", "http"]
    assert run.outputs["other"] == frames[:2]
    assert run.counters == {"requests": 1, "responses": 0}


def test_port_filter_matches_source_or_destination() -> None:
    frames = [tcp(b"GET / HTTP/1.1\r\n\r\n", dport=8080),
              tcp(b"HTTP/1.1 200 OK\r\n\r\n", sport=8080, dport=50000),
              tcp(b"GET / HTTP/1.1\r\n\r\n", dport=80),
              tcp(b"GET / HTTP/1.1\r\n\r\n", sport=8081, dport=8079)]
    run = run_kernel(HttpClassifier({"ports": [8080, 443]}), frames)
    assert run.verdicts == ["http", "http", "other", "other"]
    assert run.counters == {"requests": 1, "responses": 1}
    assert run_kernel(HttpClassifier(), frames).verdicts == ["http"] * 4


def test_encapsulations_and_header_variants() -> None:
    req = Raw(b"POST /login HTTP/1.1\r\n\r\n")
    cases = {
        "vlan": (Ether() / Dot1Q(vlan=7) / IP() / TCP() / req, "http"),
        "ip options": (Ether() / IP(options=[IPOption_RR()]) / TCP() / req, "http"),
        "tcp options": (Ether() / IP() / TCP(options=[("MSS", 1460), ("NOP", None), ("WScale", 7)]) / req, "http"),
        "first fragment": (Ether() / IP(flags="MF", frag=0) / TCP() / req, "http"),
        "non-first fragment": (Ether() / IP(frag=3, proto=6) / Raw(bytes(TCP() / req)), "other"),
        "udp": (Ether() / IP() / UDP(dport=80) / req, "other"),
        "ipv6": (Ether() / IPv6() / TCP() / req, "other"),
        "double vlan": (Ether() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP() / TCP() / req, "other"),
        "ihl below 5": (Ether() / IP(ihl=4) / TCP() / req, "other"),
        "tcp data offset below 5": (Ether() / IP() / TCP(dataofs=4) / req, "other"),
    }
    frames = [bytes(pkt) for pkt, _ in cases.values()]
    run = run_kernel(HttpClassifier(), frames)
    assert dict(zip(cases, run.verdicts, strict=True)) == {name: want for name, (_, want) in cases.items()}
    assert run.outputs["http"] == [f for f, (_, want) in zip(frames, cases.values(), strict=True) if want == "http"]


def test_truncated_frames_are_other_until_method_and_space_are_complete() -> None:
    full = tcp(b"DELETE /item/7 HTTP/1.1\r\n\r\n")
    payload_at = 14 + 20 + 20
    frames = [full[:k] for k in range(len(full) + 1)]
    run = run_kernel(HttpClassifier(), frames)
    expected = ["http" if k >= payload_at + len("DELETE ") else "other" for k in range(len(full) + 1)]
    assert run.verdicts == expected
    assert run.counters["requests"] == expected.count("http")


def test_mixed_batches_count_per_batch_boundaries() -> None:
    kinds = [tcp(b"GET /a HTTP/1.1\r\n\r\n"), tcp(b"HTTP/1.1 304 Not Modified\r\n\r\n"), tcp(b"body bytes"),
             bytes(Ether() / IP() / UDP() / Raw(b"GET / "))]
    frames = [kinds[i % 4] for i in range(203)]
    run = run_kernel(HttpClassifier(), frames, batch=32)
    assert run.count("http") == sum(1 for i in range(203) if i % 4 in (0, 1))
    assert run.counters == {"requests": sum(1 for i in range(203) if i % 4 == 0),
                            "responses": sum(1 for i in range(203) if i % 4 == 1)}


@pytest.mark.parametrize("config", [{"ports": [65536]}, {"ports": [-1]}, {"responses": "maybe"}, {"port": [80]}])
def test_bad_config_is_rejected(config: dict[str, object]) -> None:
    with pytest.raises(NFConfigError, match="HttpClassifier config"):
        HttpClassifier(config)


def test_descriptor_is_read_only_and_never_drops() -> None:
    d = HttpClassifier.descriptor
    assert d.read_only and not d.may_drop
    assert HttpClassifier.labels == ("http", "other") and HttpClassifier.drop_reasons == ()
    assert all(HttpClassifier.doc_sections()[s] for s in DOC_SECTIONS)
