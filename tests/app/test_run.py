"""``micronf run``: the embedded mode, end to end with real processes (live and offline form).

Expectations are computed independently of the data path: the live run's from the generator's own
description of what it sends (which template carries which URL), the offline run's from the
scapy-built packets themselves (addresses, ports, checksums, URLs chosen by the test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

from micronf.io.generator import GeneratorRx
from micronf.io.generator_spec import PAPER_BENIGN_URLS, PAPER_SQLI_URLS, paper_traffic
from micronf.io.pcap_read import read_pcap

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SRC = Path(__file__).resolve().parents[2] / "src"
SFC = Path(__file__).resolve().parents[2] / "examples" / "sfc-fig11.yaml"


def _micronf(*args: str, timeout: float = 540) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "micronf", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def _summary(*args: str) -> dict[str, Any]:
    proc = _micronf(*args, "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_live_run_of_the_paper_sfc_accounts_for_every_packet() -> None:
    n = 20_000
    # paced well below what the graph takes, so no packet is lost to a full ring and the verdicts are exact
    s = _summary("run", "--packets", str(n), "--rate", "20000")
    comp = GeneratorRx(paper_traffic(count=n)).describe()
    sqli = comp.over(np.isin(comp.url, [comp.urls.index(u) for u in PAPER_SQLI_URLS]), n)
    benign = comp.over(np.isin(comp.url, [comp.urls.index(u) for u in PAPER_BENIGN_URLS]), n)
    assert sqli == n // 5 and benign + sqli == n  # the paper's mix: 20% SQL injection, all HTTP
    assert s["packets_in"] == n and s["in_flight"] == 0 and not s["interrupted"]
    assert s["dropped"] == {"appfw.validate.sqli": sqli}
    assert s["outputs"] == {"appfw.web": benign, "appfw.other": 0}
    assert n == sum(s["outputs"].values()) + sum(s["dropped"].values())
    assert s["conservation_ok"]
    assert (s["unfs_before"], s["unfs_after"]) == (9, 6)
    assert s["latency"]["count"] == benign and 0 < s["latency"]["p50_ns"] <= s["latency"]["max_ns"]
    assert s["mpps"] > 0


def _offline_traffic() -> tuple[list[Ether], dict[str, list[bytes]]]:
    """Packets for every path of the Fig. 11 graph, and the frames each exit must get."""
    want: dict[str, list[bytes]] = {"out": [], "monitor.classify.other": [], "appfw.validate.sqli": [],
                                    "firewall.check.bad_checksum": [], "firewall.filter.denied": []}
    pkts: list[Ether] = []

    def add(exit_: str, pkt: Ether) -> None:
        pkt = Ether(bytes(pkt))
        pkts.append(pkt)
        want[exit_].append(bytes(pkt))

    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    urls = [(u, "out") for u in PAPER_BENIGN_URLS] + [(u, "appfw.validate.sqli") for u in PAPER_SQLI_URLS]
    for i in range(60):
        url, exit_ = urls[i % len(urls)]
        get = f"GET {url} HTTP/1.1\r\nHost: example.com\r\n\r\n".encode()
        add(exit_, eth / IP(src=f"10.0.{i % 5}.{i + 1}", dst="10.1.0.1") / TCP(sport=2000 + i, dport=80, flags="PA")
            / Raw(get))
    for i in range(25):  # not HTTP: UDP, and TCP to another port
        l4 = UDP(sport=3000 + i, dport=53) if i % 2 else TCP(sport=3000 + i, dport=443)
        add("monitor.classify.other", eth / IP(src="10.0.9.9", dst="10.1.0.2") / l4 / Raw(b"x" * i))
    for i in range(7):  # denied by the edge firewall: the blocked network, and telnet
        ip = IP(src=f"10.66.1.{i + 1}", dst="10.1.0.3") if i % 2 else IP(src="10.0.1.1", dst="10.1.0.3")
        add("firewall.filter.denied", eth / ip / TCP(sport=4000 + i, dport=23 if i % 2 == 0 else 80) / Raw(b"GET"))
    for i in range(4):
        bad = Ether(bytes(eth / IP(src="10.0.0.1", dst="10.1.0.4") / UDP(sport=5000 + i, dport=9)))
        bad[IP].chksum ^= 0x0F0F
        add("firewall.check.bad_checksum", bad)
    return pkts, want


def test_offline_run_writes_one_pcap_per_exit(tmp_path: Path) -> None:
    pkts, want = _offline_traffic()
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    out = tmp_path / "out"
    s = _summary("run", str(SFC), "--pcap", str(tmp_path / "in.pcap"), "--out", str(out))
    assert s["mode"] == "offline" and s["packets_in"] == len(pkts) and s["conservation_ok"]
    assert s["outputs"] == {"appfw.web": len(want["out"]), "appfw.other": len(want["monitor.classify.other"])}
    assert s["dropped"] == {k: len(v) for k, v in want.items() if k not in ("out", "monitor.classify.other")}
    assert set(s["drop_meanings"]) == set(s["dropped"]) and all(s["drop_meanings"].values())  # each in words
    files = {row["exit"]: row for row in s["exits"]}
    for exit_, frames in want.items():
        trace = read_pcap(out / f"{exit_}.pcap")
        assert files[exit_]["file"] == str(out / f"{exit_}.pcap") and files[exit_]["packets"] == len(frames)
        assert sorted(trace.frame(i) for i in range(len(trace))) == sorted(frames), exit_
    others = [p for p in out.glob("*.pcap") if p.stem not in want]
    assert others and all(len(read_pcap(p)) == 0 for p in others)  # every other drop reason: an empty pcap


def test_offline_form_needs_both_pcap_and_out(tmp_path: Path) -> None:
    wrpcap(str(tmp_path / "in.pcap"), [Ether() / IP() / UDP()])
    proc = _micronf("run", str(SFC), "--pcap", str(tmp_path / "in.pcap"), timeout=120)
    assert proc.returncode == 2 and "--pcap and --out" in proc.stdout + proc.stderr
