"""The Fig. 11 SFC with real µNF processes: a raw-space SQL injection is dropped by the application
firewall, its benign twin (same shape, same spaces) leaves by ``appfw.web``.

This is the issue's reproduction (``GET /item?q=1' OR 'a'='a HTTP/1.1`` used to be forwarded): packets
built with scapy, written to a pcap, run through the optimized Fig. 11 graph by the offline runner.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import rdpcap, wrpcap

from micronf.app.offline import run_offline
from micronf.io.pcap_read import read_pcap
from micronf.orchestrator.compose import compose_file
from micronf.packet.sqli import SQLI_SIGNATURES
from micronf.runtime.graph import plan
from tests.nfs.sqli_corpus import reference_is_sqli, reference_target

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# (injection, benign twin) request lines, raw spaces and TABs included
PAIRS = [
    (b"GET /item?q=1' OR 'a'='a HTTP/1.1", b"GET /item?q=rock 'n' roll HTTP/1.1"),
    (b"GET /list?cat=2 UNION SELECT username,password FROM users HTTP/1.1", b"GET /list?cat=union station HTTP/1.1"),
    (b"GET\t/p?id=1;\tDROP TABLE users\tHTTP/1.0", b"GET\t/p?id=1;\tsee\tdrop shipping\tHTTP/1.0"),
]


def _packet(line: bytes, i: int) -> Ether:
    payload = line + b"\r\nHost: shop.example\r\n\r\n"
    return Ether(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                       / IP(src=f"10.0.0.{i + 1}", dst="192.168.1.10")
                       / TCP(sport=20000 + i, dport=80, flags="PA") / Raw(payload)))


@pytest.mark.timeout(300)
def test_raw_space_injection_is_dropped_and_its_twin_passes(tmp_path: Path) -> None:
    pkts = [_packet(line, 2 * k + j) for k, pair in enumerate(PAIRS) for j, line in enumerate(pair)]
    sigs = list(SQLI_SIGNATURES)
    for k, pkt in enumerate(pkts):  # the independent reference agrees: even = injection, odd = twin
        target = reference_target(bytes(pkt[Raw].load))
        assert target is not None and reference_is_sqli(target, sigs) == (k % 2 == 0)
    wrpcap(str(tmp_path / "in.pcap"), pkts)

    graph = compose_file(EXAMPLES / "sfc-fig11.yaml").after
    layout = plan(graph.spec, capture_drops=True, on_full="wait")
    res = run_offline(layout, read_pcap(tmp_path / "in.pcap"), tmp_path / "out")
    assert res.fed == len(pkts) and res.balanced and res.freed_inside == 0  # in == out + dropped, none lost

    got: dict[str, Counter[bytes]] = {}
    for e in layout.exits:
        key = f"drop {e.node}.{e.verdict}" if e.is_drop else graph.output_of(e.node, e.verdict)
        frames = Counter(bytes(p) for p in rdpcap(str(res.files[e.name])))
        if frames:
            got.setdefault(str(key), Counter()).update(frames)
    assert got == {
        "drop appfw.validate.sqli": Counter(bytes(p) for p in pkts[0::2]),
        "appfw.web": Counter(bytes(p) for p in pkts[1::2]),
    }
