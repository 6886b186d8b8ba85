"""The agent with real processes: pcap in → Rx → µNFs → Tx → pcap out, supervision, autoscaling, rollback."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from micronf.agent.core import Agent
from micronf.api.errors import DeploymentFailedError, InvalidDeploymentError
from micronf.api.models import DeployRequest, GraphStats
from micronf.dataplane.segment import list_segments
from micronf.io.pcap_read import read_pcap
from micronf.io.pcap_write import PcapWriter

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NEXT_HOP = "02:aa:bb:cc:dd:ee"


def _chain(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name,
            "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader"}, {"name": "ttl", "type": "IPTtlDecrementer"}],
                      "edges": [{"src": "chk", "label": "out", "dst": "ttl"}], "entry": "chk"},
            **extra}


def _wait_done(agent: Agent, name: str, total: int, timeout: float = 60.0) -> GraphStats:
    """Wait until every one of ``total`` frames entered and the graph is empty again."""
    deadline = time.monotonic() + timeout
    while True:
        s = agent.stats(name)
        entered = s.rx["frames"]
        # the per-reason counts of the graph (not the Rx service's) caught up with the total too
        settled = sum(v for k, v in s.drops.items() if not k.startswith("@rx.")) == s.conservation.dropped
        if entered == total and s.conservation.in_flight == 0 and s.conservation.ok and settled:
            return s
        assert time.monotonic() < deadline, f"graph did not drain: {s.rx} {s.conservation}"
        time.sleep(0.05)


def _frames() -> list[bytes]:
    frames = []
    for i in range(300):
        ttl = 1 if i % 10 == 0 else 64  # every tenth expires
        l4 = TCP(sport=1000 + i, dport=80) if i % 2 else UDP(sport=2000 + i, dport=53)
        frames.append(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") /
                            IP(src=f"10.0.{i % 7}.1", dst="10.1.0.1", ttl=ttl) / l4 / (b"x" * (i % 40))))
    frames.append(b"\x02" * 12 + b"\x08\x00" + b"\x45" * 10)  # truncated IP header: CheckIPHeader drops it
    return frames


def test_pcap_in_graph_pcap_out_byte_for_byte(tmp_path: Path) -> None:
    frames = _frames()
    src = tmp_path / "in.pcap"
    with PcapWriter(src) as w:
        w.write_frames(frames)
    req = DeployRequest.model_validate(_chain(  # file names inside the agent's data directory
        "pcap-e2e", rx={"kind": "pcap", "path": "in.pcap"}, ring_capacity=4096,
        outputs={"out": {"backend": {"kind": "pcap", "path": "out.pcap"}, "next_hop_mac": NEXT_HOP},
                 "expired": {"backend": {"kind": "pcap", "path": "expired.pcap"}}}))
    with Agent(data_dir=tmp_path) as agent:
        agent.deploy(req)
        s = _wait_done(agent, "pcap-e2e", len(frames))
        agent.remove("pcap-e2e")
    # expectations from scapy: TTL - 1 with a recomputed checksum, destination MAC = next hop
    want_out, want_expired = [], []
    for f in frames[:-1]:
        pkt = Ether(f)
        if pkt[IP].ttl <= 1:
            want_expired.append(f)
            continue
        pkt[IP].ttl -= 1
        del pkt[IP].chksum
        pkt[Ether].dst = NEXT_HOP
        want_out.append(bytes(Ether(bytes(pkt))))
    got_out = read_pcap(tmp_path / "out.pcap")
    got_expired = read_pcap(tmp_path / "expired.pcap")
    assert [got_out.frame(i) for i in range(len(got_out))] == want_out
    assert [got_expired.frame(i) for i in range(len(got_expired))] == want_expired
    assert s.conservation.rx == len(frames) and s.conservation.tx == len(frames) - 1
    assert s.drops == {"chk.bad_length": 1} or sum(s.drops.values()) == 1, s.drops
    assert s.latency.count == len(frames) - 1 and 0 < s.latency.p50_ns <= s.latency.max_ns


def test_bad_requests_and_failed_deployment_leave_nothing(tmp_path: Path) -> None:
    with Agent(data_dir=tmp_path) as agent:
        with pytest.raises(InvalidDeploymentError, match="no label 'nope'"):
            agent.deploy(DeployRequest.model_validate(
                {"name": "bad", "graph": {"nodes": [{"name": "a", "type": "MacSwapper"}, {"name": "b",
                                          "type": "MacSwapper"}], "edges": [{"src": "a", "label": "nope", "dst": "b"}],
                                          "entry": "a"}}))
        with pytest.raises(InvalidDeploymentError, match="exits the graph does not have: nowhere"):
            agent.deploy(DeployRequest.model_validate(
                _chain("bad2", outputs={"nowhere": {"backend": {"kind": "null"}}})))
        with pytest.raises(InvalidDeploymentError, match=r"rx: .*'carrier-pigeon'.*'generator', 'pcap', 'afpacket'"):
            agent.deploy(DeployRequest.model_validate(_chain("bad3", rx={"kind": "carrier-pigeon"})))
        with pytest.raises(InvalidDeploymentError, match=r"rx.path: no file 'no-such-file\.pcap'"):
            agent.deploy(DeployRequest.model_validate(_chain("bad4", rx={"kind": "pcap", "path": "no-such-file.pcap"})))
        with pytest.raises(DeploymentFailedError, match=r"mnf-nosuch0"):  # valid, but the Rx service cannot start
            agent.deploy(DeployRequest.model_validate(_chain("fails", rx={"kind": "afpacket", "iface": "mnf-nosuch0"})))
        assert agent.deployments() == []
        assert not [s for s in list_segments() if "fails" in s.name]
        assert not [p for p in _micronf_pids() if "fails" in p[1]]


def _micronf_pids() -> list[tuple[int, str]]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "micronf" in cmd:
                out.append((int(d), cmd))
    return out


def test_kill_9_restarts_within_a_second_without_leaking_buffers() -> None:
    # the victim holds a batch most of the time (~0.8 ms per packet), so killing it loses buffers
    total = 6_000
    req = DeployRequest.model_validate({
        "name": "supervised",
        "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader"},
                            {"name": "busy", "type": "BusyLoop", "config": {"cycles": 2_000_000}}],
                  "edges": [{"src": "chk", "label": "out", "dst": "busy"}], "entry": "chk"},
        "rx": {"kind": "generator", "count": total, "rate_pps": 2_000, "flows": 64},
        "outputs": {"out": {"backend": {"kind": "null"}}}, "autoscale": {"enabled": False}})
    with Agent() as agent:
        info = agent.deploy(req)
        victim = next(p for p in info.processes if p.nodes == ["busy"])
        time.sleep(0.5)  # under load
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not agent.stats("supervised").restarts:
            assert time.monotonic() < deadline, "no restart"
            time.sleep(0.02)
        event = agent.stats("supervised").restarts[0]
        assert event.nodes == ["busy"] and "signal 9" in event.exit_status
        assert event.downtime_ms < 1000
        assert event.reclaimed_buffers > 0  # the batch the dead process held
        now = next(p for p in agent.deployment("supervised").processes if p.nodes == ["busy"])
        assert now.alive and now.pid != victim.pid and now.restarts == 1
        s = _wait_done(agent, "supervised", total, timeout=120)
        # every buffer is back: nothing in flight, the pool whole, every packet accounted for
        assert s.pool["free"] == s.pool["slots"]
        lost = event.reclaimed_buffers
        assert s.conservation.rx + s.rx["entry_full"] + s.rx["pool_empty"] == total
        assert s.drops["busy.lost_in_crash"] == lost
        assert s.conservation.ok and s.conservation.tx + s.conservation.dropped == s.conservation.rx


def test_scaling_out_the_entry_node_spreads_flows_from_the_rx_service() -> None:
    rate = 3_000  # the sleeping BusyLoop entry takes ~2.4 kpps alone
    req = DeployRequest.model_validate({
        "name": "entry",
        "graph": {"nodes": [{"name": "busy", "type": "BusyLoop", "config": {"cycles": 1_000_000, "mode": "sleep"}},
                            {"name": "ttl", "type": "IPTtlDecrementer"}],
                  "edges": [{"src": "busy", "label": "out", "dst": "ttl"}], "entry": "busy"},
        "rx": {"kind": "generator", "count": rate * 8, "rate_pps": rate, "flows": 256},
        "outputs": {"out": {"backend": {"kind": "null"}}},
        "autoscale": {"interval_s": 0.2, "window": 3, "cooldown_s": 30.0, "scale_in": False},
    })
    with Agent() as agent:
        agent.deploy(req)
        s = _wait_done(agent, "entry", rate * 8, timeout=120)
    assert [(e.node, e.instance, e.action) for e in s.scale_events] == [("busy", "busy@1", "out")]
    assert s.rx["entry_full"] > 0  # what made it scale
    busy = {n.name: n.runtime["rx"] for n in s.nodes if n.name.startswith("busy")}
    assert busy["busy@1"] > 0 and busy["busy"] > 0
    assert s.conservation.ok and s.tx["out"]["frames"] == s.rx["accepted"]


def test_autoscaling_on_drops_with_cooldown_and_scale_in() -> None:
    # one sleeping BusyLoop instance takes ~2.4 kpps (1M TSC ticks ~ 0.4 ms per packet), two ~4.8: its
    # speed does not depend on how busy the machine's two cores are
    rate = 3_000
    req = DeployRequest.model_validate({
        "name": "scaled",
        "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader"},
                            {"name": "busy", "type": "BusyLoop", "config": {"cycles": 1_000_000, "mode": "sleep"}}],
                  "edges": [{"src": "chk", "label": "out", "dst": "busy"}], "entry": "chk"},
        "rx": {"kind": "generator", "count": rate * 14, "rate_pps": rate, "flows": 256},
        "outputs": {"out": {"backend": {"kind": "null"}}},
        "autoscale": {"interval_s": 0.2, "window": 3, "cooldown_s": 3.0, "max_instances": 3, "idle_window": 5},
    })
    with Agent() as agent:
        agent.deploy(req)
        deadline = time.monotonic() + 60
        while not agent.stats("scaled").scale_events:
            assert time.monotonic() < deadline, "never scaled out"
            time.sleep(0.1)
        # drops into busy stop: a whole second without a new one while traffic still flows
        calm = False
        while agent.stats("scaled").rx["exhausted"] == 0 and not calm:
            before = agent.stats("scaled").nodes[0].egress[0].full
            time.sleep(1.0)
            s = agent.stats("scaled")
            calm = s.nodes[0].egress[0].full == before and s.rx["exhausted"] == 0
        assert calm, "drops never stopped after scaling out"
        s = _wait_done(agent, "scaled", rate * 14, timeout=120)
        outs = [e for e in s.scale_events if e.action == "out"]
        assert outs[0].node == "busy" and outs[0].instance == "busy@1"
        for a, b in itertools.pairwise(outs):
            assert b.at - a.at >= 3.0  # the cool-down held
        busy = [n for n in s.nodes if n.name == "busy" or n.instance_of == "busy"]
        assert len(busy) >= 2 and all(n.runtime["rx"] > 0 for n in busy)  # the new instance took traffic
        # no traffic any more: the extra instances are idle and get removed
        deadline = time.monotonic() + 30
        while not any(e.action == "in" for e in agent.stats("scaled").scale_events):
            assert time.monotonic() < deadline, "never scaled in"
            time.sleep(0.1)
        assert agent.stats("scaled").conservation.ok
