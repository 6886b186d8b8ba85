"""The agent's Rx and Tx services give up root too (issue 12, paper §VIII): once their capture files,
packet sockets and rings are open, they run as their graph's uid with no capability, an empty
bounding set and ``no_new_privs`` — and traffic still flows, every packet accounted for.

As on the µNF test (tests/runtime/test_privileges.py), Python, numba and numba's cache live under
/root (mode 0700) on the test machine: a service that still had to import a module or load a
kernel after the drop would fail here, so the traffic checks also show that it needs none."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from micronf.agent.core import Agent
from micronf.api.models import DeployRequest, GraphStats
from micronf.dataplane.segment import list_segments
from micronf.io.generator import build_templates
from micronf.io.generator_spec import GeneratorSpec
from micronf.io.pcap_read import read_pcap
from micronf.runtime.privileges import UID_BASE_ENV, drop_for_service
from micronf.runtime.stage import GraphMemory
from tests import netns
from tests.agent.test_agent_veth import capture
from tests.netns import NetLab, send_frames

lab = netns.lab
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the services drop to another uid"),
              pytest.mark.timeout(300)]

NEXT_HOP = "02:00:00:00:0e:0f"
GRAPH = {"nodes": [{"name": "ttl", "type": "IPTtlDecrementer"}], "edges": [], "entry": "ttl"}


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _services(agent: Agent, name: str) -> dict[str, int]:
    """The pids of the deployment's Rx and Tx services."""
    return {p.nodes[0]: p.pid for p in agent.deployment(name).processes if p.nodes[0] in ("@rx", "@tx")}


def _segment_path(agent: Agent, name: str) -> Path:
    segment = agent.deployment(name).segment
    return next(s.path for s in list_segments() if s.name == segment)


def _graph_uid(agent: Agent, name: str) -> int:
    return _segment_path(agent, name).stat().st_uid


def _assert_unprivileged(pid: int, uid: int) -> None:
    st = _status(pid)
    assert st["Uid"].split() == [str(uid)] * 4 and st["Gid"].split() == [str(uid)] * 4 and st["Groups"] == ""
    assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == int(st["CapInh"], 16) == 0
    assert int(st["CapBnd"], 16) == 0 and int(st["CapAmb"], 16) == 0 and st["NoNewPrivs"] == "1"


def _drained(agent: Agent, name: str, total: int, timeout: float = 60.0) -> GraphStats:
    deadline = time.monotonic() + timeout
    while True:
        s = agent.stats(name)
        if s.rx["frames"] == total and s.conservation.in_flight == 0 and s.conservation.ok:
            return s
        assert time.monotonic() < deadline, f"graph did not drain: {s.rx} {s.conservation}"
        time.sleep(0.05)


def _expected(frames: list[bytes], next_hop: str | None = None) -> tuple[list[bytes], int]:
    """What IPTtlDecrementer sends on (scapy: TTL - 1, checksum recomputed, next hop MAC), and how
    many frames expire."""
    out = []
    for f in frames:
        pkt = Ether(f)
        if pkt[IP].ttl <= 1:
            continue
        pkt[IP].ttl -= 1
        del pkt[IP].chksum
        if next_hop is not None:
            pkt[Ether].dst = next_hop
        out.append(bytes(Ether(bytes(pkt))))
    return out, len(frames) - len(out)


def _try_open_as_service(own: str, other: Path) -> tuple[str, str]:
    """In a forked child that attached the segment named ``own`` and dropped as its graph's services
    do: open segment file ``other``, then its own again, read-write; what happened each time."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        result = b"?"
        try:
            os.close(r)
            mem = GraphMemory.attach(own)
            drop_for_service(mem)
            outcomes = []
            for path in (other, mem.seg.path):
                try:
                    os.close(os.open(path, os.O_RDWR))
                    outcomes.append("opened")
                except PermissionError:
                    outcomes.append("PermissionError")
            result = " ".join(outcomes).encode()
        except BaseException as exc:  # anything else is a failure the parent reports
            result = repr(exc).encode()
        finally:
            os.write(w, result)
            os._exit(0)
    os.close(w)
    try:
        got = os.read(r, 200).decode().split()
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert len(got) == 2, got
    return got[0], got[1]


def test_generator_rx_and_pcap_tx_run_as_the_graphs_uid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UID_BASE_ENV, raising=False)
    total = 3000
    gen: dict[str, Any] = {"kind": "generator", "count": total, "rate_pps": 3000, "flows": 8}
    trace, _ = build_templates(GeneratorSpec.model_validate(gen))
    frames = [trace.frame(i % len(trace)) for i in range(total)]
    want, _ = _expected(frames)
    assert want == [_expected([f])[0][0] for f in frames]  # generated TTLs are > 1: all go out
    reqs = [DeployRequest.model_validate({
        "name": name, "graph": GRAPH, "rx": gen, "ring_capacity": 4096,
        "outputs": {"out": {"backend": {"kind": "pcap", "path": f"{name}.pcap"}}}}) for name in ("a", "b")]
    with Agent(data_dir=tmp_path) as agent:
        for req in reqs:
            agent.deploy(req)
        uids = {name: _graph_uid(agent, name) for name in ("a", "b")}
        assert uids["a"] != uids["b"] and 0 not in uids.values()
        for name, uid in uids.items():
            pids = _services(agent, name)
            assert set(pids) == {"@rx", "@tx"}
            for pid in pids.values():  # the generator and the pcap writer need no capability at all
                _assert_unprivileged(pid, uid)
        seg = {name: agent.deployment(name).segment for name in ("a", "b")}
        assert _try_open_as_service(seg["a"], _segment_path(agent, "b")) == ("PermissionError", "opened")
        assert _try_open_as_service(seg["b"], _segment_path(agent, "a")) == ("PermissionError", "opened")
        for name in ("a", "b"):
            s = _drained(agent, name, total)
            assert s.conservation.rx == s.conservation.tx + s.conservation.dropped and s.conservation.dropped == 0
            assert s.tx["out"]["frames"] == total
            time.sleep(1.0)  # the periodic flush (as the graph's uid): the output is complete while it runs
            live = read_pcap(tmp_path / f"{name}.pcap")
            assert [live.frame(i) for i in range(len(live))] == want
            assert all(p.restarts == 0 for p in agent.deployment(name).processes)
        agent.remove("a")
        agent.remove("b")
    for name in ("a", "b"):  # closed by the dropped service: still complete, readable
        got = read_pcap(tmp_path / f"{name}.pcap")
        assert [got.frame(i) for i in range(len(got))] == want


@pytest.mark.slow
@pytest.mark.parametrize("tx_mode", ["sendmmsg", "ring"])
def test_afpacket_rx_and_tx_run_as_the_graphs_uid_without_capabilities(lab: NetLab, tx_mode: str) -> None:
    src, dut, sink = lab.netns(3)
    a = lab.veth(src, dut)
    b = lab.veth(dut, sink)
    frames = [bytes(Ether(src=a.mac_a, dst=a.mac_b) / IP(src="192.0.2.1", dst="198.51.100.7", ttl=1 if i % 10 == 0
                                                         else 64) / UDP(sport=4000 + i, dport=53) / (b"q" * (i % 50)))
              for i in range(300)]
    want, expired = _expected(frames, NEXT_HOP)
    req = DeployRequest.model_validate({
        "name": "veth-priv", "graph": GRAPH,
        "rx": {"kind": "afpacket", "iface": a.if_b, "netns": dut},
        "outputs": {"out": {"backend": {"kind": "afpacket", "iface": b.if_a, "netns": dut, "tx_mode": tx_mode},
                            "next_hop_mac": NEXT_HOP}},
        "rules": [{"src": "192.0.2.0/24"}], "autoscale": {"enabled": False}})
    with Agent() as agent:
        agent.deploy(req)
        uid = _graph_uid(agent, "veth-priv")
        for pid in _services(agent, "veth-priv").values():  # sockets opened (in the namespace) before the drop
            _assert_unprivileged(pid, uid)
        catcher = lab.spawn(sink, capture, b.if_b, len(want), 60.0)
        time.sleep(0.5)  # the sink's socket is bound
        lab.call(src, send_frames, a.if_a, frames, 50, 0.002)
        got = catcher.result(90)
        s = _drained(agent, "veth-priv", len(frames))
        assert all(p.restarts == 0 for p in agent.deployment("veth-priv").processes)
        agent.remove("veth-priv")
    assert got == want
    assert s.rx["accepted"] == len(frames) and s.tx["out"]["frames"] == len(want)
    assert s.tx["expired"]["no_output"] == expired
    assert s.conservation.rx == s.conservation.tx + s.conservation.dropped == len(frames)
