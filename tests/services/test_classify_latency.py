"""The Rx service's 5-tuple classifier and the Tx service's latency histogram, against independent models."""

from __future__ import annotations

import ipaddress
import random

import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from micronf.packet.rules import FlowRule
from micronf.services.classify import ACCEPT, DROP, UNMATCHED, classify_frame, compile_rules
from micronf.services.iomem import HIST_WORDS, bucket_of, bucket_upper, percentiles, record_latency

PROTO = {"tcp": 6, "udp": 17, "icmp": 1}


def _model(rules: list[FlowRule], pkt: Ether) -> int:
    """Exact rules first (in order), then wildcard rules in order; unmatched otherwise.

    A rule with ports matches only TCP/UDP packets (this traffic has no fragments).
    """
    if not rules:
        return ACCEPT
    if IP not in pkt:
        return UNMATCHED
    ip = pkt[IP]

    def hit(r: FlowRule) -> bool:
        for prefix, addr in ((r.src, ip.src), (r.dst, ip.dst)):
            if prefix != "any" and ipaddress.IPv4Address(addr) not in ipaddress.IPv4Network(prefix):
                return False
        if r.proto != "any" and PROTO.get(str(r.proto), r.proto) != ip.proto:
            return False
        if r.sport == r.dport == "any":
            return True
        if TCP not in ip and UDP not in ip:
            return False
        for spec, port in ((r.sport, ip.sport), (r.dport, ip.dport)):
            lo, _, hi = spec.partition("-")
            if spec != "any" and not int(lo) <= port <= int(hi or lo):
                return False
        return True

    def exact(r: FlowRule) -> bool:
        return (r.src.endswith("/32") and r.dst.endswith("/32") and r.proto != "any"
                and r.sport.isdigit() and r.dport.isdigit())

    for r in [r for r in rules if exact(r)] + [r for r in rules if not exact(r)]:
        if hit(r):
            return DROP if r.action == "deny" else ACCEPT
    return UNMATCHED


def _packets(rng: random.Random) -> list[Ether]:
    out: list[Ether] = []
    for _ in range(400):
        src = f"10.{rng.choice([0, 1, 2])}.{rng.randrange(4)}.{rng.randrange(1, 5)}"
        dst = f"192.168.{rng.randrange(3)}.{rng.randrange(1, 4)}"
        l4 = rng.choice([TCP(sport=rng.choice([1000, 1001, 5555]), dport=rng.choice([80, 443, 8080])),
                         UDP(sport=rng.choice([53, 1000]), dport=rng.choice([53, 5353])), ICMP()])
        out.append(Ether() / IP(src=src, dst=dst) / l4)
    out.append(Ether() / ARP())
    out.append(Ether() / IP(src="10.0.1.2", dst="192.168.1.3") / TCP(sport=1000, dport=80))  # exact-wins' flow
    return out


RULE_SETS = [
    [],
    [{"src": "10.0.0.0/16"}],
    [{"src": "10.1.0.0/16", "action": "drop"}, {"proto": "tcp", "dport": [80, 443]}],
    [{"src": "10.0.1.2", "dst": "192.168.1.3", "proto": "tcp", "sport": 1000, "dport": 80, "action": "drop"},
     {"src": "10.0.0.0/8", "proto": "tcp"}, {"proto": "udp", "sport": 53}, {"proto": "icmp", "dst": "192.168.2.0/24"}],
    [{"src": f"10.{a}.{b}.{c}", "dst": f"192.168.{d}.{e}", "proto": p, "sport": s, "dport": t, "action": act}
     for a in (0, 1) for b in range(2) for c in (1, 2) for d in range(2) for e in (1, 2)
     for p, s, t in (("tcp", 1000, 80), ("udp", 53, 53)) for act in ("accept",)] + [{"proto": 17, "action": "drop"}],
]


@pytest.mark.parametrize("raw", RULE_SETS, ids=["none", "prefix", "drop-then-range", "exact-wins", "many-exact"])
def test_classifier_matches_the_model(raw: list[dict[str, object]]) -> None:
    rules = [FlowRule.model_validate(r) for r in raw]
    tables = compile_rules(rules)
    pkts = _packets(random.Random(len(raw)))
    got = [classify_frame(np.frombuffer(bytes(p), dtype=np.uint8), tables) for p in pkts]
    want = [_model(rules, p) for p in pkts]
    assert got == want
    assert len(set(want)) > 1 or not rules  # the rule set really separates this traffic


def test_bad_rules_are_refused() -> None:
    for bad, msg in (({"src": "10.0.0.300/8"}, "an IPv4 address"), ({"dport": [90, 80]}, "lowest first"),
                     ({"proto": 300}, "0..255"), ({"sport": 70000}, "65535"), ({"action": "maybe"}, "allow")):
        with pytest.raises(ValueError, match=msg):
            FlowRule.model_validate(bad)


def test_latency_histogram_percentiles_within_a_bucket() -> None:
    rng = np.random.default_rng(7)
    ns = np.concatenate([rng.lognormal(9, 1.0, 20_000), rng.uniform(1e5, 3e6, 500)]).astype(np.int64)
    hist = np.zeros(HIST_WORDS, dtype=np.int64)
    ns_per_cycle = 0.4
    now = 10**12
    stamps = (now - (ns / ns_per_cycle)).astype(np.int64)
    record_latency(hist, stamps, stamps.shape[0], now, ns_per_cycle)
    got = percentiles(hist)
    assert got["count"] == ns.shape[0]
    assert got["max_ns"] == pytest.approx(ns.max(), rel=1e-6, abs=3)
    for q in (50, 90, 99):
        true = float(np.percentile(ns, q, method="higher"))
        assert true <= got[f"p{q}_ns"] * (1 + 1e-6) + 3
        assert got[f"p{q}_ns"] <= true * 1.125 + 64  # 8 buckets per power of two
    for v in (0, 63, 64, 65, 127, 128, 1000, 10**6, 10**9):
        b = bucket_of(v)
        assert v < bucket_upper(b) and (b == 0 or v >= bucket_upper(b - 1))
