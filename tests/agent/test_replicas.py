"""A graph deployed as 2 run-to-completion replicas through the agent, with real processes.

Flow affinity (every packet of a flow on the replica its flow hash names, checked with a second
implementation of the hashes: ``replicacheck``), merged stats equal to the sum of the replicas',
exact conservation after the drain, kill -9 of one replica under traffic (the other keeps
forwarding; only the dead one's in-flight packets are lost, exactly counted), and nothing left after
the undeploy."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scapy.utils import RawPcapReader

from micronf.agent.core import Agent
from micronf.api.errors import DeploymentFailedError
from micronf.api.models import DeployRequest, GraphStats
from micronf.dataplane.segment import list_segments
from micronf.io.generator import build_templates
from micronf.io.generator_spec import GeneratorSpec
from micronf.runtime.stage import GraphMemory
from micronf.services.iomem import J_ACTIVE, J_STATE, TX_INDEX, TX_WORDS
from micronf.services.replica import BATCH, DEFAULT_BURST
from tests.agent.crashcount import wait_drained
from tests.agent.replicacheck import Frame, parse
from tests.procs import cmdlines, running, stopped

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BAD = "10.0.0.1"  # CheckIPHeader drops it as bad_src
URL = b"/a"


def _spec(**kw: Any) -> GeneratorSpec:
    return GeneratorSpec.model_validate({"count": 60_000, "flows": 256, "templates": 1024, "http_fraction": 0.5,
                                         "urls": ["/a/x", "/b/y"], "protocols": {"tcp": 0.5, "udp": 0.5},
                                         "src_net": "10.0.0.0/29", **kw})


def _request(name: str, spec: GeneratorSpec, output: dict[str, Any]) -> DeployRequest:
    return DeployRequest.model_validate({
        "name": name, "mode": "replicas", "replicas": 2,
        "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader", "config": {"bad_src": [BAD]}},
                            {"name": "cu", "type": "CountUrl", "config": {"urls": [URL.decode()]}},
                            {"name": "ttl", "type": "IPTtlDecrementer"}],
                  "edges": [{"src": "chk", "label": "out", "dst": "cu"}, {"src": "cu", "label": "out", "dst": "ttl"}],
                  "entry": "chk"},
        "rx": spec.model_dump(mode="json"), "outputs": {"out": {"backend": output}}, "autoscale": {"enabled": False}})


def _input(spec: GeneratorSpec) -> list[Frame]:
    """The frames the generator sends, in order (template j % templates), parsed independently."""
    trace, _ = build_templates(spec)
    templates = [parse(bytes(trace.data[o:o + n])) for o, n in zip(trace.offsets, trace.lengths, strict=True)]
    assert spec.count is not None
    return [templates[j % len(templates)] for j in range(spec.count)]


def _expected(frames: list[Frame], replicas: int) -> list[dict[str, int]]:
    """Per replica: frames in, dropped as bad_src, out, requests for URL counted (after CheckIPHeader)."""
    out = [Counter[str]() for _ in range(replicas)]
    for f in frames:
        c = out[f.replica(replicas)]
        c["frames"] += 1
        if f.src == BAD:
            c["bad_src"] += 1
            continue
        c["out"] += 1
        c["url0"] += f.target is not None and URL in f.target
    return [dict(c) for c in out]


def _check_sum_of_replicas(s: GraphStats) -> None:
    """The graph's counters are the sums of its replicas'."""
    reps = s.replicas
    assert len(reps) == 2
    for key in ("frames", "accepted", "lost_in_crash"):
        assert s.rx[key] == sum(r.rx[key] for r in reps)
    assert s.tx["out"]["frames"] == sum(r.tx["out"]["frames"] for r in reps)
    assert s.drops == dict(sum((Counter(r.drops) for r in reps), Counter()))
    for node in s.nodes:
        parts = [next(n for n in r.nodes if n.name == node.name) for r in reps]
        assert all(p.counters.keys() == node.counters.keys() for p in parts)
        assert node.counters == {k: sum(p.counters[k] for p in parts) for k in node.counters}
        assert node.runtime["rx"] == sum(p.runtime["rx"] for p in parts)
    c = s.conservation
    assert (c.rx, c.tx, c.dropped, c.in_flight) == tuple(
        sum(getattr(r.conservation, k) for r in reps) for k in ("rx", "tx", "dropped", "in_flight"))


def _children() -> list[str]:
    """This process's live children (a zygote left behind would be one), with their command lines."""
    return cmdlines([int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit() and running(int(e.name))
                     and (e / "stat").read_text().rsplit(")", 1)[1].split()[1] == str(os.getpid())])


def _check_gone(agent: Agent, name: str, pids: list[int]) -> None:
    """Undeployed: no segment of it, none of its processes, no zygote (a child of this process)."""
    agent.remove(name)
    assert not [i.name for i in list_segments() if i.name.startswith(f"mnf-{agent.id}-{name}")]
    assert not [p for p in pids if running(p)]
    assert _children() == []


def test_flow_affinity_merged_stats_and_exact_conservation(tmp_path: Path) -> None:
    spec = _spec()
    frames = _input(spec)
    expected = _expected(frames, 2)
    with Agent(data_dir=tmp_path) as agent:
        info = agent.deploy(_request("rep", spec, {"kind": "pcap", "path": "out.pcap"}))
        assert info.mode == "replicas" and [p.replica for p in info.processes] == [0, 1]
        assert info.segments == [f"mnf-{agent.id}-rep.r0", f"mnf-{agent.id}-rep.r1"]
        assert len({p.cpu for p in info.processes}) == 2 and all(p.alive for p in info.processes)
        s = wait_drained(agent, "rep")
        _check_gone(agent, "rep", [p.pid for p in info.processes])
    assert s.rx["frames"] == len(frames) and s.conservation.ok
    assert s.conservation.in_flight == 0 and s.conservation.rx == s.conservation.tx + s.conservation.dropped
    _check_sum_of_replicas(s)
    for i, (rep, want) in enumerate(zip(s.replicas, expected, strict=True)):
        got = [parse(bytes(data)) for data, _ in RawPcapReader(str(tmp_path / f"out.r{i}.pcap"))]
        assert {f.replica(2) for f in got} == {i}, "a packet left through the replica its flow does not map to"
        assert len(got) == want["out"] == rep.tx["out"]["frames"]
        assert rep.rx["frames"] == want["frames"] and rep.drops == {"chk.bad_src": want["bad_src"]}
        assert next(n for n in rep.nodes if n.name == "cu").counters["url0"] == want["url0"]
    assert next(n for n in s.nodes if n.name == "cu").counters["url0"] == sum(w["url0"] for w in expected) > 0
    assert s.drops == {"chk.bad_src": sum(w["bad_src"] for w in expected)}
    assert not (tmp_path / "out.pcap").exists()


def _tx_frames(mem: GraphMemory) -> int:
    return int(mem.seg.view("tx.stats", np.int64).reshape(-1, TX_WORDS)[0, TX_INDEX["frames"]])


def _busy(mem: GraphMemory) -> bool:
    """Whether the (stopped) replica holds packets mid-step: an Rx burst open, or packets waiting in
    a ring for the fused µNFs or the Tx role."""
    rings = [mem.layout.entry_ring, *(x.ring for x in mem.layout.exits)]
    return mem.seg.view("rx.journal", np.int64)[J_STATE] == J_ACTIVE or any(len(mem.rings[r]) for r in rings)


def _held(mem: GraphMemory) -> int:
    """Buffers the (stopped) replica holds: in use, and in no ring."""
    return mem.pool.stats().in_use - sum(len(mem.rings[r]) for r in range(len(mem.rings)))


def _kill_mid_step(pid: int, mem: GraphMemory, tries: int = 2_000) -> tuple[bool, int]:
    """SIGSTOP the replica until it is caught inside a step, SIGKILL it there (without luck: wherever it
    is); returns whether it was caught mid-step and how many buffers it held then."""
    for _ in range(tries):
        os.kill(pid, signal.SIGSTOP)
        while not stopped(pid):
            time.sleep(0.0001)
        if _busy(mem):
            held = _held(mem)
            os.kill(pid, signal.SIGKILL)
            return True, held
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.0005)
    os.kill(pid, signal.SIGSTOP)
    while not stopped(pid):
        time.sleep(0.0001)
    held = _held(mem)
    os.kill(pid, signal.SIGKILL)
    return False, held


def test_kill_9_of_one_replica_loses_only_its_in_flight_packets(tmp_path: Path) -> None:
    spec = _spec(count=20_000_000)  # as fast as the replicas go (busy: the kill lands inside a step), for seconds
    name = "rep-kill"
    with Agent(data_dir=tmp_path, monitor=False) as agent:  # the test ticks it: a downtime long enough to watch
        info = agent.deploy(_request(name, spec, {"kind": "null"}))
        mems = [GraphMemory.attach(n) for n in info.segments]
        try:
            deadline = time.monotonic() + 60
            while min(_tx_frames(m) for m in mems) < 200_000:
                assert time.monotonic() < deadline, "no traffic through both replicas"
                time.sleep(0.01)
            victim = info.processes[1]
            caught, held = _kill_mid_step(victim.pid, mems[1])
            during = []  # (the live replica's tx, the dead one's) until the dead one is restarted
            for _ in range(10):
                during.append((_tx_frames(mems[0]), _tx_frames(mems[1])))
                time.sleep(0.02)
            agent.tick()  # the supervisor finds the dead replica and restarts it
            s = wait_drained(agent, name, timeout=120)
        finally:
            for m in mems:
                m.seg.close()
        _check_gone(agent, name, [victim.pid, *(p.pid for p in agent.deployment(name).processes)])
    assert len(during) >= 2 and during[-1][0] > during[0][0], f"the live replica stalled: {during}"
    assert during[-1][1] == during[0][1], "the killed replica sent while dead"
    (event,) = s.restarts
    assert event.replica == 1 and event.process == 1 and "signal 9" in event.exit_status
    r0, r1 = s.replicas
    lost_graph, lost_rx = s.drops.get("chk/cu/ttl.lost_in_crash", 0), s.rx["lost_in_crash"]
    assert lost_graph == event.reclaimed_buffers == r1.drops.get("chk/cu/ttl.lost_in_crash", 0)
    assert lost_rx == r1.rx["lost_in_crash"] and r0.rx["lost_in_crash"] == 0
    assert "chk/cu/ttl.lost_in_crash" not in r0.drops
    # a replica holds at most an Rx burst, a fused batch and a Tx burst (the rings take a whole burst)
    assert lost_graph <= held <= 2 * DEFAULT_BURST + BATCH, "more lost than the replica held in flight"
    assert lost_rx <= DEFAULT_BURST  # the frames of the Rx burst it was in, which no one will take again
    assert s.rx["frames"] == spec.count  # each shard's source resumed where it stopped, none replayed
    assert spec.count == s.tx["out"]["frames"] + sum(s.drops.values())  # the drops include both lost_in_crash
    assert s.conservation.ok and s.conservation.in_flight == 0
    _check_sum_of_replicas(s)
    print(f"\nkill -9 of replica 1 ({'inside' if caught else 'between'} a step): restarted in "
          f"{event.downtime_ms:.0f} ms; it held {held} buffers outside rings; lost in flight {lost_graph}, "
          f"{lost_rx} frames of its Rx burst; replica 0 sent {during[-1][0] - during[0][0]} while it was down")


def test_a_replica_that_cannot_start_fails_the_deployment_and_leaves_nothing(tmp_path: Path) -> None:
    req = _request("rep-bad", _spec(), {"kind": "null"}).model_copy(
        update={"rx": {"kind": "afpacket", "iface": "mnfnosuch0"}})
    with Agent(data_dir=tmp_path) as agent:
        with pytest.raises(DeploymentFailedError, match="mnfnosuch0"):
            agent.deploy(req)
        assert agent.deployments() == []
        assert not [i.name for i in list_segments() if i.name.startswith(f"mnf-{agent.id}-rep-bad")]
        assert _children() == []
