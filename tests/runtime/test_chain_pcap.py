"""A real multi-process chain on pcap input: CheckIPHeader -> IPTtlDecrementer -> MacSwapper.

The expected output of every exit is computed with scapy from the input, independently of the
µNFs: bad checksums leave at CheckIPHeader, TTL <= 1 at IPTtlDecrementer.expired, the rest come
out with TTL - 1, a recomputed checksum and swapped MACs. Also run fused in one process
(run-to-completion) with pipelined prefetch (kernels called on sub-batches of 8): same bytes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import rdpcap, wrpcap

from micronf.io.pcap import read_pcap
from micronf.runtime.graph import chain_spec, plan
from micronf.runtime.offline import run_offline

CHAIN = [("CheckIPHeader", {}), ("IPTtlDecrementer", {}), ("MacSwapper", {})]


def _traffic(n: int) -> list[Ether]:
    pkts = []
    for i in range(n):
        l4 = TCP(sport=1024 + i, dport=80) if i % 2 else UDP(sport=1024 + i, dport=53)
        p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(
            src=f"10.0.{i % 7}.1", dst="192.168.1.1", ttl=i % 9) / l4 / Raw(bytes(i % 50))
        p = Ether(bytes(p))
        if i % 17 == 3:
            p[IP].chksum ^= 0x0101  # corrupt
        pkts.append(p)
    return pkts


def _expected(pkts: list[Ether]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {"out": [], "CheckIPHeader.bad_checksum": [], "IPTtlDecrementer.expired": []}
    for p in pkts:
        good = IP(bytes(p[IP]))
        del good.chksum
        if IP(bytes(good)).chksum != p[IP].chksum:
            out["CheckIPHeader.bad_checksum"].append(bytes(p))
        elif p[IP].ttl <= 1:
            out["IPTtlDecrementer.expired"].append(bytes(p))
        else:
            q = p.copy()
            q[IP].ttl -= 1
            del q[IP].chksum
            q = Ether(dst=p.src, src=p.dst) / IP(bytes(q[IP]))
            out["out"].append(bytes(q))
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("fused", [False, True], ids=["process-per-unf", "fused-run-to-completion"])
def test_chain_over_pcap_byte_for_byte(tmp_path: Path, fused: bool) -> None:
    pkts = _traffic(4000)
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    spec = chain_spec(CHAIN, cluster="all" if fused else None, prefetch=8 if fused else 0)
    layout = plan(spec, capture_drops=True, on_full="wait")
    assert len(layout.processes) == (1 if fused else 3)
    res = run_offline(layout, read_pcap(tmp_path / "in.pcap"), tmp_path / "out", loops=1)
    expected = _expected(pkts)
    assert sum(len(v) for v in expected.values()) == len(pkts)
    for name, frames in expected.items():
        got = [bytes(p) for p in rdpcap(str(tmp_path / "out" / f"{name}.pcap"))]  # an independent reader
        assert got == frames, name
        assert res.per_exit[name] == len(frames)
    assert sum(res.per_exit.values()) == len(pkts)  # every other exit is empty
    assert res.fed == len(pkts) and res.freed_inside == 0 and res.balanced
