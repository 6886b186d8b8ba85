"""Fast offline runs (issue 14): a chain fused in this process writes exactly what its µNF processes write.

The expected output is computed with scapy from the input, independently of the µNFs: 2 ×
IPTtlDecrementer takes 2 from every TTL (recomputing the IPv4 checksum); a TTL of 0 or 1 expires
at the first µNF, a TTL of 2 at the second; a frame that is not IPv4 leaves at the first µNF's
``not_ipv4`` exit. Both ways of running the graph (``in_process`` and µNF processes) get the same
capture; their pcaps must be identical byte for byte and their accounting exact
(``fed == written + freed inside``). Also: the CLI's default path runs in-process, its import
path loads no HTTP stack, agent or orchestrator, and oversize and empty captures still work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import rdpcap, wrpcap

from micronf.app.offline import OVERSIZE_EXIT, OfflineResult, run_offline
from micronf.io.pcap_read import read_pcap
from micronf.io.trace import Trace
from micronf.runtime.graph import GraphLayout, chain_spec, fuse_whole, plan

ROOT = Path(__file__).resolve().parents[2]
CHAIN = [("IPTtlDecrementer", {}), ("IPTtlDecrementer", {})]
EXPR = "IPTtlDecrementer -> IPTtlDecrementer"
pytestmark = pytest.mark.timeout(300)


def _traffic(n: int) -> list[Ether]:
    """IPv4 UDP/TCP frames of TTL 0..9 (every path through the chain), an ARP frame now and then."""
    pkts: list[Ether] = []
    for i in range(n):
        eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        if i % 97 == 5:
            pkts.append(Ether(bytes(eth / ARP(psrc="10.0.0.1", pdst=f"10.0.0.{i % 250 + 2}"))))
            continue
        l4 = TCP(sport=1024 + i, dport=80) if i % 2 else UDP(sport=1024 + i, dport=53)
        pkts.append(Ether(bytes(eth / IP(src=f"10.0.{i % 7}.1", dst="192.168.1.1", ttl=i % 10) / l4
                                / Raw(bytes(i % 40)))))
    return pkts


def _expected(pkts: list[Ether]) -> dict[str, list[bytes]]:
    """What each exit must hold, by scapy: TTL - 2 with a correct checksum out, the rest by reason."""
    out: dict[str, list[bytes]] = {"out": [], "IPTtlDecrementer0.expired": [], "expired": [],
                                   "IPTtlDecrementer0.not_ipv4": []}
    for p in pkts:
        if IP not in p:
            out["IPTtlDecrementer0.not_ipv4"].append(bytes(p))
        elif p[IP].ttl <= 1:
            out["IPTtlDecrementer0.expired"].append(bytes(p))
        elif p[IP].ttl == 2:  # the first µNF made it 1: it expires at the second, as the first left it
            q = p.copy()
            q[IP].ttl = 1
            del q[IP].chksum
            out["expired"].append(bytes(Ether(bytes(q))))
        else:
            q = p.copy()
            q[IP].ttl -= 2
            del q[IP].chksum
            out["out"].append(bytes(Ether(bytes(q))))
    return out


def _layout(in_process: bool) -> GraphLayout:
    spec = chain_spec(CHAIN)
    return plan(fuse_whole(spec) if in_process else spec, capture_drops=True, on_full="wait")


def _pcaps(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.pcap"))}


def _check_accounting(res: OfflineResult, n: int) -> None:
    assert res.fed == n and res.written + res.freed_inside == n and res.balanced
    assert res.freed_inside == 0  # every drop is captured: nothing is lost inside


@pytest.mark.timeout(600)
def test_in_process_and_processes_write_the_same_pcaps(tmp_path: Path) -> None:
    pkts = _traffic(3000)
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    want = _expected(pkts)
    assert sum(len(v) for v in want.values()) == len(pkts) and all(want.values())
    results = {}
    for in_process in (True, False):
        layout = _layout(in_process)
        assert len(layout.processes) == (1 if in_process else 2)
        out = tmp_path / ("inproc" if in_process else "procs")
        res = run_offline(layout, read_pcap(tmp_path / "in.pcap", mapped=in_process), out, loops=2,
                          in_process=in_process)
        _check_accounting(res, 2 * len(pkts))
        for name, frames in want.items():
            got = [bytes(p) for p in rdpcap(str(out / f"{name}.pcap"))]  # an independent reader
            assert got == frames * 2, name
            assert res.per_exit[name] == 2 * len(frames)
        for p in rdpcap(str(out / "out.pcap")):  # and the checksum is right, recomputed by scapy
            fixed = IP(bytes(p[IP]))
            del fixed.chksum
            assert IP(bytes(fixed)).chksum == p[IP].chksum
        results[in_process] = res
    assert results[True].per_exit == results[False].per_exit
    assert _pcaps(tmp_path / "inproc") == _pcaps(tmp_path / "procs")  # byte for byte, every exit


def test_cli_default_runs_in_process_and_matches_processes(tmp_path: Path) -> None:
    pkts = _traffic(500)
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    runs = {}
    for mode, extra in (("inproc", []), ("procs", ["--processes"])):
        proc = _micronf("chain", EXPR, "--pcap", str(tmp_path / "in.pcap"), "--out", str(tmp_path / mode), *extra)
        assert proc.returncode == 0, proc.stderr
        runs[mode] = " ".join(proc.stdout.split())  # as one line: the console wraps long ones
    assert "(fused, in this process)" in runs["inproc"] and "(2 processes)" in runs["procs"]
    for text in runs.values():
        assert f"{len(pkts)} in, {len(pkts)} written, 0 freed inside: conservation ok" in text
    assert _pcaps(tmp_path / "inproc") == _pcaps(tmp_path / "procs")
    assert [bytes(p) for p in rdpcap(str(tmp_path / "inproc" / "out.pcap"))] == _expected(pkts)["out"]


def test_run_pcap_runs_a_chain_sfc_in_process_with_the_same_pcaps(tmp_path: Path) -> None:
    """`micronf run SFC --pcap`: an SFC whose optimized graph is a chain (the edge firewall alone)
    runs fused in-process, the same pcaps as with --processes; the Fig. 11 graph is no chain."""
    from micronf.app import run

    sfc = tmp_path / "fw.yaml"
    sfc.write_text(f"kind: sfc\nname: fw\nimports: [{ROOT / 'examples' / 'templates'}/*.yaml]\n"
                   "vnfs:\n  - {name: firewall, template: edge-firewall}\n")
    assert len(run.offline_layout(run.load(sfc, live=False)[0]).processes) == 1
    assert len(run.offline_layout(run.load(None, live=False)[0]).processes) > 1
    pkts = [*_traffic(300), Ether(bytes(Ether() / IP(src="10.66.1.1", dst="10.1.0.1") / UDP()))]
    wrpcap(str(tmp_path / "in.pcap"), pkts)
    for mode, extra in (("inproc", []), ("procs", ["--processes"])):
        proc = _micronf("run", str(sfc), "--pcap", str(tmp_path / "in.pcap"), "--out", str(tmp_path / mode), "--json",
                        *extra)
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["packets_in"] == len(pkts) and summary["conservation_ok"]
        assert summary["dropped"]["firewall.filter.denied"] == 1
    assert _pcaps(tmp_path / "inproc") == _pcaps(tmp_path / "procs")


def test_in_process_takes_oversize_frames_whole_and_empty_captures(tmp_path: Path) -> None:
    """A frame longer than 65535 bytes goes whole to rx.oversize, the rest through the fused loop
    (pool and chunk sized for 64 KiB slots); a capture with no packet is an empty conserved run."""
    small = [bytes(p) for p in _traffic(40)]
    huge = bytes(Ether(src="02:00:00:00:00:09", dst="02:00:00:00:00:08", type=0x88B5) / Raw(b"z" * 69_000))
    trace = Trace.from_frames([*small[:20], huge, *small[20:], huge], ts_ns=list(range(42)))
    want = _expected([Ether(f) for f in small])
    for in_process in (True, False):
        out = tmp_path / f"o{int(in_process)}"
        res = run_offline(_layout(in_process), trace, out, loops=3, in_process=in_process)
        assert res.frame_capacity == 65535 and res.per_exit[OVERSIZE_EXIT] == 6
        _check_accounting(res, 3 * 42)
        got = read_pcap(out / "out.pcap")
        assert [got.frame(i) for i in range(len(got))] == want["out"] * 3
        over = read_pcap(out / f"{OVERSIZE_EXIT}.pcap")
        assert [over.frame(i) for i in range(len(over))] == [huge] * 6
    assert _pcaps(tmp_path / "o1") == _pcaps(tmp_path / "o0")
    res = run_offline(_layout(True), Trace.from_frames([]), tmp_path / "empty", in_process=True)
    assert res.fed == 0 and res.balanced and sum(res.per_exit.values()) == 0
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == sorted(f"{e}.pcap" for e in res.per_exit)


def test_a_graph_of_several_processes_is_refused_in_process(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fused into one process"):
        run_offline(_layout(False), Trace.from_frames([bytes(p) for p in _traffic(3)]), tmp_path, in_process=True)


HEAVY = ("fastapi", "uvicorn", "httpx", "starlette", "sqlite3", "micronf.agent", "micronf.orchestrator",
         "micronf.api.errors", "micronf.app.run")


def test_the_chain_command_loads_no_http_stack_agent_or_orchestrator(tmp_path: Path) -> None:
    """The whole `micronf chain` run, in a fresh interpreter: what it imported is checked after."""
    wrpcap(str(tmp_path / "in.pcap"), _traffic(50))
    code = f"""
        import sys
        from micronf.app.cli import app
        app(["chain", {EXPR!r}, "--pcap", {str(tmp_path / "in.pcap")!r}, "--out", {str(tmp_path / "o")!r}],
            standalone_mode=False)
        heavy = sorted(m for m in sys.modules if m.startswith({HEAVY!r}))
        assert not heavy, heavy
        assert "scipy.linalg" not in sys.modules  # numba's BLAS probe was spared
    """
    proc = _python(textwrap.dedent(code))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "out.pcap").exists()


def test_the_offline_run_command_loads_no_http_stack_or_agent(tmp_path: Path) -> None:
    """`micronf run SFC --pcap` composes with the orchestrator's code but needs no agent: no HTTP stack."""
    code = """
        import sys
        import micronf.app.cli
        from micronf.app import run
        comp, _ = run.load(None, live=False)
        run.offline_layout(comp)
        heavy = sorted(m for m in sys.modules if m.startswith(("fastapi", "uvicorn", "httpx", "starlette",
                                                               "micronf.agent", "micronf.api.errors")))
        assert not heavy, heavy
    """
    proc = _python(textwrap.dedent(code))
    assert proc.returncode == 0, proc.stderr


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=240,
                          check=False)


def _micronf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "micronf", *args], capture_output=True, text=True, env=_env(),
                          timeout=240, check=False)
