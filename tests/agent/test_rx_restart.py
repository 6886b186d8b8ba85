"""kill -9 of the Rx service under traffic (issue 11 §1): the restarted service continues its source
where the killed one stopped, so every packet comes out at most once, in order, and
``in == out + dropped + lost_in_crash`` exactly."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import RawPcapReader

from micronf.agent.core import Agent
from micronf.api.models import DeployRequest, GraphStats
from micronf.dataplane.segment import Segment
from micronf.io.generator import build_templates
from micronf.io.generator_spec import GeneratorSpec
from micronf.io.pcap_write import PcapWriter
from micronf.services.iomem import J_ACTIVE, J_STATE
from tests.procs import stopped

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

GOOD, BAD = "10.0.0.2", "10.0.0.1"  # CheckIPHeader drops BAD as bad_src


def _request(name: str, rx: dict[str, Any], out: Path, busy_rx: bool = False) -> DeployRequest:
    # busy_rx: thousands of wildcard rules that match nothing before the one that accepts all make
    # the Rx service spend its time inside bursts, so a kill can land in one
    rules = [{"dport": [1, 2]}] * 3000 + [{"action": "accept"}] if busy_rx else []
    return DeployRequest.model_validate({
        "name": name,
        "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader", "config": {"bad_src": [BAD]}},
                            {"name": "swap", "type": "MacSwapper"}],
                  "edges": [{"src": "chk", "label": "out", "dst": "swap"}], "entry": "chk"},
        "rx": rx, "rules": rules, "ring_capacity": 4096, "pool_slots": 16384,
        "outputs": {"out": {"backend": {"kind": "pcap", "path": out.name}}}, "autoscale": {"enabled": False}})


def _rx_pid(agent: Agent, name: str) -> int:
    return next(p.pid for p in agent.deployment(name).processes if p.nodes == ["@rx"])


def _kill_mid_burst(pid: int, journal: np.ndarray, tries: int = 5_000) -> bool:
    """SIGSTOP the Rx service until it is caught inside a burst (its journal entry open), then
    SIGKILL it there; without luck, kill it wherever it is. Returns whether it was mid-burst."""
    for _ in range(tries):
        os.kill(pid, signal.SIGSTOP)
        while not stopped(pid):
            time.sleep(0.0001)
        if journal[J_STATE] == J_ACTIVE:
            os.kill(pid, signal.SIGKILL)
            return True
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.0005)
    os.kill(pid, signal.SIGKILL)
    return False


def _kill_rx(agent: Agent, name: str, journal: np.ndarray, *, mid_burst: bool) -> dict[str, Any]:
    """kill -9 the Rx service, wait for its restart; returns what the kill cost."""
    before = agent.stats(name)
    pid = _rx_pid(agent, name)
    if mid_burst:
        caught = _kill_mid_burst(pid, journal)
    else:
        os.kill(pid, signal.SIGKILL)
        caught = False
    deadline = time.monotonic() + 10
    while len(agent.stats(name).restarts) == len(before.restarts) or _rx_pid(agent, name) == pid:
        assert time.monotonic() < deadline, "the Rx service was not restarted"
        time.sleep(0.01)
    after = agent.stats(name)
    event = after.restarts[-1]
    assert event.nodes == ["@rx"] and "signal 9" in event.exit_status
    return {"mid_burst": caught, "at_frame": before.rx["frames"], "downtime_ms": round(event.downtime_ms, 1),
            "lost_in_crash": after.rx["lost_in_crash"] - before.rx["lost_in_crash"]}


def _wait_done(agent: Agent, name: str, total: int, timeout: float = 120.0) -> GraphStats:
    deadline = time.monotonic() + timeout
    while True:
        s = agent.stats(name)
        out = sum(t["frames"] for t in s.tx.values())
        if s.rx["exhausted"] and s.conservation.in_flight == 0 and out + sum(s.drops.values()) >= s.rx["frames"]:
            return s
        assert time.monotonic() < deadline, f"did not drain: {s.rx} {s.conservation}"
        assert s.rx["frames"] <= total, f"the source produced {s.rx['frames']} frames of {total}"
        time.sleep(0.05)


def _swapped(frame: bytes) -> bytes:
    """What MacSwapper makes of a frame: destination and source MAC exchanged."""
    return frame[6:12] + frame[0:6] + frame[12:]


def _check_sink(inputs: list[bytes], out: Path, s: GraphStats) -> list[int]:
    """Every output packet is a distinct input packet, in input order; returns their indices."""
    index = {_swapped(f): j for j, f in enumerate(inputs)}
    assert len(index) == len(inputs), "the test's input frames must be distinct"
    got = [index[bytes(data)] for data, _meta in RawPcapReader(str(out))]  # KeyError: a frame nobody sent
    assert all(a < b for a, b in itertools.pairwise(got)), "a packet came out twice or out of order"
    assert all(Ether(inputs[j])[IP].src == GOOD for j in got)
    total = len(inputs)
    assert s.rx["frames"] == total  # the source ran once: not replayed from its start
    assert len(got) == s.tx["out"]["frames"]
    assert total == len(got) + sum(v for k, v in s.drops.items() if k != "@rx.lost_in_crash") + s.rx["lost_in_crash"]
    assert s.conservation.ok and s.conservation.rx == s.conservation.tx + s.conservation.dropped
    return got


def test_kill_9_of_rx_during_a_generator_run(tmp_path: Path) -> None:
    total = 120_000
    # 60 kpps keeps the busy Rx service (~140 kpps at most here) inside a burst about half the time
    spec = GeneratorSpec(count=total, templates=total, rate_pps=60_000, flows=16, src_net="10.0.0.0/30")
    trace, _ = build_templates(spec)
    inputs = [trace.frame(i) for i in range(total)]
    out = tmp_path / "out.pcap"
    kills = []
    with Agent(data_dir=tmp_path) as agent:
        info = agent.deploy(_request("rx-gen", spec.model_dump(mode="json"), out, busy_rx=True))
        seg = Segment.attach(info.segment)
        try:
            journal = seg.view("rx.journal", np.int64)
            for k in range(3):
                deadline = time.monotonic() + 30
                while agent.stats("rx-gen").rx["frames"] < (k + 1) * total // 6:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                kills.append(_kill_rx(agent, "rx-gen", journal, mid_burst=True))
        finally:
            seg.close()
        s = _wait_done(agent, "rx-gen", total)
        agent.remove("rx-gen")
    got = _check_sink(inputs, out, s)
    print(f"\ngenerator: {total} generated, {len(got)} out, {sum(s.drops.values()) - s.rx['lost_in_crash']} "
          f"dropped, {s.rx['lost_in_crash']} lost_in_crash; kills: {kills}")
    assert all(k["at_frame"] < total for k in kills)  # killed while generating
    assert any(k["mid_burst"] and k["lost_in_crash"] > 0 for k in kills)  # a burst in hand: settled, not replayed
    assert s.rx["lost_in_crash"] == sum(k["lost_in_crash"] for k in kills)


def test_kill_9_of_rx_during_a_paced_pcap_replay(tmp_path: Path) -> None:
    n = 3_000
    gap_ns = 400_000  # 0.4 ms: 1.2 s of traffic
    inputs = [bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                    / IP(src=GOOD if i % 3 else BAD, dst="10.1.0.1", id=i % 65536)
                    / UDP(sport=1000 + i % 50, dport=5000) / f"seq={i:08d}".encode()) for i in range(n)]
    src = tmp_path / "in.pcap"
    with PcapWriter(src) as w:
        w.write_frames(inputs, ts_ns=np.arange(n, dtype=np.int64) * gap_ns)
    out = tmp_path / "out.pcap"
    kills = []
    with Agent(data_dir=tmp_path) as agent:
        info = agent.deploy(_request("rx-pcap", {"kind": "pcap", "path": src.name, "timing": "original"}, out))
        seg = Segment.attach(info.segment)
        try:
            journal = seg.view("rx.journal", np.int64)
            for k in range(2):
                deadline = time.monotonic() + 30
                while agent.stats("rx-pcap").rx["frames"] < (k + 1) * n // 3:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                kills.append(_kill_rx(agent, "rx-pcap", journal, mid_burst=False))
        finally:
            seg.close()
        s = _wait_done(agent, "rx-pcap", n)
        agent.remove("rx-pcap")
    got = _check_sink(inputs, out, s)
    print(f"\npcap: {n} in, {len(got)} out, {sum(s.drops.values()) - s.rx['lost_in_crash']} dropped, "
          f"{s.rx['lost_in_crash']} lost_in_crash; kills: {kills}")
    assert all(k["at_frame"] < n for k in kills)  # killed while replaying
