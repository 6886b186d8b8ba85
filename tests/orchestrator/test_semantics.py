"""The optimized graph has the semantics of the joined one: the same traffic, run through both by real
µNF processes (the offline runner), leaves by the same SFC outputs, byte for byte.

Traffic (scapy): HTTP requests with clean URLs and with SQL-injection URLs, HTTP responses, non-HTTP
TCP/UDP/ICMP, packets the edge firewall denies, and malformed IPv4 headers. The expected outputs
are also computed independently, from the packets and Python's ``re`` on the URL-decoded URLs.
"""

from __future__ import annotations

import re
from collections import Counter
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from urllib.parse import unquote_to_bytes

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import rdpcap, wrpcap

from micronf.app.offline import run_offline
from micronf.io.pcap_read import read_pcap
from micronf.orchestrator.compose import compose_file
from micronf.orchestrator.models import ComposedGraph
from micronf.packet.sqli import SQLI_SIGNATURES
from micronf.runtime.graph import plan

from .sfcfiles import EXAMPLES

CLEAN = ["/index.html", "/login?user=bob", "/search?q=red+shoes", "/admin/panel", "/img/logo.png"]
SQLI = ["/login?user=admin'--", "/item?id=1%20UNION%20SELECT%20password%20FROM%20users",
        "/search?q=x'%20OR%20'1'='1", "/p?id=1;%20DROP%20TABLE%20users;%20"]
METHODS = (b"GET ", b"POST ", b"PUT ", b"DELETE ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"CONNECT ", b"TRACE ")


def _traffic() -> list[Ether]:
    pkts: list[Ether] = []
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    for i in range(300):
        src = f"10.0.{i % 5}.{1 + i % 200}"
        kind = i % 10
        if kind < 4:
            url = SQLI[i % len(SQLI)] if i % 5 == 0 else CLEAN[i % len(CLEAN)]
            l4 = TCP(sport=20000 + i, dport=80, flags="PA") / Raw(f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        elif kind == 4:
            l4 = TCP(sport=80, dport=20000 + i, flags="PA") / Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        elif kind == 5:
            l4 = UDP(sport=5353, dport=53) / Raw(bytes(20 + i % 30))
        elif kind == 6:
            l4 = TCP(sport=30000 + i, dport=443, flags="PA") / Raw(b"\x16\x03\x01" + bytes(40))
        elif kind == 7:
            l4 = ICMP() / Raw(b"ping")
        elif kind == 8:  # denied by the edge firewall: blocked network, or telnet
            src = "10.66.3.4" if i % 20 == 8 else src
            l4 = TCP(sport=40000 + i, dport=23 if i % 20 == 18 else 80) / Raw(b"GET / HTTP/1.1\r\n\r\n")
        else:
            l4 = TCP(sport=50000 + i, dport=80) / Raw(f"GET {CLEAN[0]} HTTP/1.0\r\n\r\n".encode())
        pkt = Ether(bytes(eth / IP(src=src, dst="192.168.1.10", ttl=64) / l4))
        if i % 37 == 5:
            pkt[IP].chksum ^= 0x0F0F  # malformed: bad header checksum
        pkts.append(pkt)
    return pkts


def _expected(pkts: list[Ether]) -> dict[str, Counter[bytes]]:
    """Which SFC output each packet of the Fig. 11 SFC leaves by; drops: "sqli" (the Application
    Firewall's) and "bad" (malformed, or denied by the Edge Firewall)."""
    out: dict[str, Counter[bytes]] = {"appfw.web": Counter(), "appfw.other": Counter(), "sqli": Counter(),
                                      "bad": Counter()}
    signatures = [re.compile(s.encode(), re.IGNORECASE | re.DOTALL) for s in SQLI_SIGNATURES]
    for p in pkts:
        good = IP(bytes(p[IP]))
        del good.chksum
        ip = p[IP]
        payload = bytes(ip[TCP].payload) if TCP in ip else b""
        denied = IPv4Address(ip.src) in IPv4Network("10.66.0.0/16") or (TCP in ip and ip[TCP].dport == 23)
        if IP(bytes(good)).chksum != ip.chksum or denied:
            out["bad"][bytes(p)] += 1
        elif payload.startswith(METHODS) or payload.startswith(b"HTTP/1."):
            target = payload.split(b" ")[1] if payload.startswith(METHODS) else b""
            url = unquote_to_bytes(target.replace(b"+", b" "))
            sqli = any(s.search(url) for s in signatures)
            out["sqli" if sqli else "appfw.web"][bytes(p)] += 1
        else:
            out["appfw.other"][bytes(p)] += 1
    return out


def _run(graph: ComposedGraph, pcap: Path, out: Path) -> dict[str, Counter[bytes]]:
    """Run the graph over the capture; packets per SFC output, and per drop exit (``drop <node>.<reason>``)."""
    layout = plan(graph.spec, capture_drops=True, on_full="wait")
    res = run_offline(layout, read_pcap(pcap), out)
    assert res.balanced and res.freed_inside == 0
    got: dict[str, Counter[bytes]] = {}
    for e in layout.exits:
        key = f"drop {e.node}.{e.verdict}" if e.is_drop else graph.output_of(e.node, e.verdict)
        assert key is not None, f"exit {e.name} is no SFC output"
        frames = Counter(bytes(p) for p in rdpcap(str(res.files[e.name])))
        if frames:
            got.setdefault(key, Counter()).update(frames)
    return got


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_fig11_before_and_after_give_the_same_outputs(tmp_path: Path) -> None:
    pkts = _traffic()
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    comp = compose_file(EXAMPLES / "sfc-fig11.yaml")
    before = _run(comp.before, tmp_path / "in.pcap", tmp_path / "before")
    after = _run(comp.after, tmp_path / "in.pcap", tmp_path / "after")
    assert before == after
    expected = _expected(pkts)
    assert after["appfw.web"] == expected["appfw.web"]
    assert after["appfw.other"] == expected["appfw.other"]
    assert after["drop appfw.validate.sqli"] == expected["sqli"]
    others = sum((c for k, c in after.items() if k.startswith("drop firewall.")), Counter())
    assert others == expected["bad"]
    assert set(after) == {"appfw.web", "appfw.other", "drop appfw.validate.sqli", "drop firewall.check.bad_checksum",
                          "drop firewall.filter.denied"}
    assert all(c.total() > 0 for c in expected.values())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_consolidated_meter_keeps_each_packet_on_its_branch(tmp_path: Path) -> None:
    pkts = _traffic()
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    comp = compose_file(EXAMPLES / "sfc-two-pools.yaml")
    before = _run(comp.before, tmp_path / "in.pcap", tmp_path / "before")
    after = _run(comp.after, tmp_path / "in.pcap", tmp_path / "after")
    assert before == after
    expected = _expected(pkts)
    assert after["web-lb.out"].total() == expected["appfw.web"].total()
    assert after["other-lb.out"].total() == expected["appfw.other"].total()
    web_ips = {str(Ether(f)[IP].dst) for f in after["web-lb.out"]}
    other_ips = {str(Ether(f)[IP].dst) for f in after["other-lb.out"]}
    assert web_ips <= {"10.1.0.11", "10.1.0.12", "10.1.0.13"} and other_ips <= {"10.2.0.21", "10.2.0.22"}
