"""CountUrl: per-URL request counters against a Python reference; every frame passes unchanged."""

from __future__ import annotations

import random
import re

import pytest
from scapy.layers.inet import IP, TCP, UDP, IPOption_RR
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from micronf.nfs.count_url import CountUrl
from micronf.runtime.harness import run_kernel
from micronf.runtime.nf import DOC_SECTIONS, NFConfigError
from tests.nfs.sqli_corpus import reference_target

PAYLOAD_AT = 14 + 20 + 20  # Ether + IP + TCP without options


def tcp(payload: bytes, dport: int = 80) -> bytes:
    return bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=40000, dport=dport) / Raw(payload))


def expected_counters(payloads: list[bytes | None], urls: list[str], match: str) -> dict[str, int]:
    counts = dict.fromkeys([*(f"url{k}" for k in range(len(urls))), "other"], 0)
    for payload in payloads:
        raw = reference_target(payload) if payload is not None else None
        target = raw.decode("latin-1") if raw else None  # an empty target counts as no request
        hits = [k for k, u in enumerate(urls)
                if target is not None and (target.startswith(u) if match == "prefix" else u in target)]
        for k in hits:
            counts[f"url{k}"] += 1
        counts["other"] += not hits
    return counts


PAYLOADS = [
    b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /Index.html HTTP/1.1\r\n\r\n",
    b"POST /api/login HTTP/1.1\r\nContent-Length: 3\r\n\r\nx=1",
    b"GET /api/users?id=7 HTTP/1.1\r\n\r\n",
    b"GET /static/login.css HTTP/1.0\r\n\r\n",
    b"GET http://example.com/index.html HTTP/1.1\r\n\r\n",
    b"HEAD /api/ HTTP/1.1\r\n\r\n",
    b"GET /api",  # cut off mid-URL: the URL runs to the end of the frame
    b"GET /login\r\n",  # HTTP/0.9 style, no version
    b"HTTP/1.1 200 OK\r\nLocation: /api/login\r\n\r\n",
    b"x=/api/login&y=/index.html",
    b"get /index.html HTTP/1.1\r\n\r\n",
    b"GET  /index.html HTTP/1.1\r\n\r\n",  # two spaces: skipped, as lenient servers do
    b"GET\t/api/ x HTTP/1.1\r\n\r\n",  # a TAB and a raw space: the target is "/api/ x"
    b"GET /x?q=login HTTP/1.1 HTTP/1.0\r\n\r\n",  # only the last HTTP/d.d is the version
    b"GET /x?q=a  HTTP/1.1 /index.html\r\n\r\n",  # not a version at the end of the line
    b"",
]
URLS = ["/index.html", "/api/", "login"]


@pytest.mark.parametrize("match", ["prefix", "contains"])
def test_counters_match_a_python_reference(match: str) -> None:
    frames = [tcp(p) for p in PAYLOADS] * 5  # 70 frames: several batches
    run = run_kernel(CountUrl({"urls": URLS, "match": match}), frames)
    assert run.verdicts == ["out"] * len(frames)
    assert run.outputs["out"] == frames
    assert run.counters == expected_counters(PAYLOADS * 5, URLS, match)


@pytest.mark.parametrize("match", ["prefix", "contains"])
def test_overlapping_urls_on_random_targets(match: str) -> None:
    # URLs that are prefixes, suffixes and infixes of one another (an Aho-Corasick automaton must
    # follow its failure links to see them all), a duplicate, and targets built from their pieces
    urls = ["/a", "/ab", "ab", "b/a", "aab", "abab", "/ab", "b", "/a/b/a/b", "%2F"]
    rng = random.Random(5)
    pieces = ["/", "a", "b", "ab", "%2F", "%2f", "x", "?", "="]
    payloads: list[bytes | None] = [
        f"{rng.choice(['GET', 'POST'])} {''.join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))}"
        f"{rng.choice([' HTTP/1.1', '', chr(13), chr(10)])}\r\nX: /ab\r\n".encode()
        for _ in range(300)
    ]
    run = run_kernel(CountUrl({"urls": urls, "match": match}), [tcp(p) for p in payloads if p is not None])
    assert run.counters == expected_counters(payloads, urls, match)
    assert sum(v > 0 for v in run.counters.values()) >= 8  # most URLs, and "other", do occur


def test_known_counts_by_hand() -> None:
    run = run_kernel(CountUrl({"urls": URLS, "match": "prefix"}), [tcp(p) for p in PAYLOADS])
    # /index.html twice (once after two spaces); /api/ four times (once after a TAB, with a raw space)
    assert run.counters == {"url0": 2, "url1": 4, "url2": 0, "other": 11}
    run = run_kernel(CountUrl({"urls": URLS}), [tcp(p) for p in PAYLOADS])
    # contains: also the absolute URL and the line whose "HTTP/1.1" is not at its end; login in
    # "/x?q=login HTTP/1.1" (the version is the last one)
    assert run.counters == {"url0": 4, "url1": 4, "url2": 4, "other": 6}


def test_urls_are_raw_bytes_not_decoded() -> None:
    frames = [tcp(b"GET /a%20b HTTP/1.1\r\n\r\n"), tcp(b"GET /A%20B HTTP/1.1\r\n\r\n")]
    run = run_kernel(CountUrl({"urls": ["/a%20b", "%20"], "match": "prefix"}), frames)
    assert run.counters == {"url0": 1, "url1": 0, "other": 1}


def test_url_longer_than_request_target_or_frame() -> None:
    frames = [tcp(b"GET /a HTTP/1.1\r\n\r\n"), tcp(b"GET /ab")]
    run = run_kernel(CountUrl({"urls": ["/ab", "/a/"]}), frames)
    assert run.counters == {"url0": 1, "url1": 0, "other": 1}


def test_truncated_frames_never_read_past_the_end() -> None:
    full = tcp(b"GET /api/login HTTP/1.1\r\n\r\n")
    frames = [full[:k] for k in range(len(full) + 1)]
    payloads = [f[PAYLOAD_AT:] if len(f) >= PAYLOAD_AT else None for f in frames]
    for match in ("prefix", "contains"):
        run = run_kernel(CountUrl({"urls": ["/api/login", "/api/", "login"], "match": match}), frames)
        assert run.counters == expected_counters(payloads, ["/api/login", "/api/", "login"], match)
        assert run.outputs["out"] == frames


def test_encapsulations_and_non_tcp() -> None:
    req = Raw(b"GET /api/x HTTP/1.1\r\n\r\n")
    counted = [Ether() / Dot1Q(vlan=5) / IP() / TCP() / req, Ether() / IP(options=[IPOption_RR()]) / TCP() / req,
               Ether() / IP(flags="MF") / TCP() / req]
    not_counted = [Ether() / IP(frag=2, proto=6) / Raw(bytes(TCP() / req)), Ether() / IP() / UDP() / req,
                   Ether() / IP(ihl=3) / TCP() / req, Ether(type=0x86DD) / Raw(bytes(IP() / TCP() / req))]
    run = run_kernel(CountUrl({"urls": ["/api/"], "match": "prefix"}), [bytes(p) for p in counted + not_counted])
    assert run.counters == {"url0": len(counted), "other": len(not_counted)}


def test_counter_names_follow_config_order() -> None:
    nf = CountUrl({"urls": ["/b", "/a", "/c"]})
    assert nf.counter_names() == ("url0", "url1", "url2", "other")
    assert nf.config.match == "contains"


@pytest.mark.parametrize(
    ("config", "field"),
    [({}, "urls"), ({"urls": []}, "urls"), ({"urls": ["/a b"]}, "urls[0]"), ({"urls": ["/x", ""]}, "urls[1]"),
     ({"urls": ["/caf\u00e9"]}, "urls[0]"), ({"urls": ["/a"], "match": "regex"}, "match"),
     ({"urls": ["/a"], "mode": "prefix"}, "mode")],
)
def test_bad_config_is_rejected(config: dict[str, object], field: str) -> None:
    with pytest.raises(NFConfigError, match=f"CountUrl config: .*'?{re.escape(field)}"):
        CountUrl(config)


def test_descriptor_is_read_only_and_never_drops() -> None:
    assert CountUrl.descriptor.read_only and not CountUrl.descriptor.may_drop
    assert CountUrl.labels == ("out",) and CountUrl.drop_reasons == ()
    assert all(CountUrl.doc_sections()[s] for s in DOC_SECTIONS)
