"""The autoscaler on a replicated graph: decisions from samples (no processes), and a running graph
scaled in and out again, its counters whole across the resharding."""

from __future__ import annotations

from pathlib import Path

import pytest

from micronf.agent.autoscaler import REPLICAS, Autoscaler, Decision, ReplicaSampler
from micronf.agent.core import Agent
from micronf.agent.replicascale import refusal
from micronf.api.models import AutoscaleSpec, DeployRequest
from micronf.dataplane.segment import list_segments
from tests.procs import running, wait_for

SPEC = AutoscaleSpec(interval_s=0.1, window=3, cooldown_s=1.0, idle_window=4, idle_busy=0.6)


def _body(rx: dict[str, object], outputs: dict[str, object] | None = None, **kw: object) -> dict[str, object]:
    return {"name": "scale", "mode": "replicas", "replicas": 2,
            "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader"}, {"name": "swap", "type": "MacSwapper"}],
                      "edges": [{"src": "chk", "label": "out", "dst": "swap"}], "entry": "chk"},
            "rx": rx, "outputs": outputs or {"out": {"backend": {"kind": "null"}}}, **kw}


def test_input_drops_in_a_row_add_a_replica_and_idle_replicas_remove_one() -> None:
    sampler, scaler = ReplicaSampler(), Autoscaler(SPEC)
    cpu = [(101, 0.0), (102, 0.0)]
    assert scaler.decide(sampler.read(drops=500, cpu_s=cpu, now=0.0), 0.0) == []  # the baseline
    decisions = []
    for k in range(1, 4):  # busy (0.1 s of CPU per 0.1 s) and dropping: the third sample decides
        cpu = [(pid, s + 0.1) for pid, s in cpu]
        decisions += scaler.decide(sampler.read(drops=500 + 10 * k, cpu_s=cpu, now=0.1 * k), 0.1 * k)
    assert [(d.node, d.action) for d in decisions] == [(REPLICAS, "out")] and "3 samples" in decisions[0].reason
    scaler.done(decisions[0], 0.3, applied=True)
    # three replicas (a new pid starts from its own baseline), idle: after the cool-down, one goes
    cpu = [*cpu, (103, 5.0)]
    out = []
    for k in range(4, 30):
        out += scaler.decide(sampler.read(drops=530, cpu_s=cpu, now=0.1 * k), 0.1 * k)
        if out:
            break
    assert [(d.node, d.action) for d in out] == [(REPLICAS, "in")] and 0.1 * k >= 0.3 + SPEC.cooldown_s


def test_what_cannot_be_resharded_is_refused() -> None:
    def req(rx: dict[str, object], **kw: object) -> DeployRequest:
        return DeployRequest.model_validate(_body(rx, **kw))

    endless = {"kind": "generator", "rate_pps": 1000}
    assert refusal(req(endless), "out", replicas=2, free_cpus=1) is None
    assert refusal(req(endless), "in", replicas=2, free_cpus=0) is None
    assert "finite replay" in str(refusal(req({"kind": "generator", "count": 10}), "out", replicas=2, free_cpus=1))
    assert "no CPU" in str(refusal(req(endless), "out", replicas=2, free_cpus=0))
    assert "single replica" in str(refusal(req(endless, replicas=1), "in", replicas=1, free_cpus=1))
    files = {"out": {"backend": {"kind": "pcap", "path": "o.pcap"}}}
    assert "file per replica" in str(refusal(req(endless, outputs=files), "out", replicas=2, free_cpus=1))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_running_graph_scales_in_and_out_with_its_counters_whole(tmp_path: Path) -> None:
    req = DeployRequest.model_validate(_body({"kind": "generator", "rate_pps": 20_000, "flows": 64},
                                             autoscale=SPEC.model_dump()))
    with Agent(data_dir=tmp_path, monitor=False) as agent:  # the test ticks the monitor
        info = agent.deploy(req)
        wait_for(lambda: min(r.tx["out"]["frames"] for r in agent.stats("scale").replicas) > 1_000, 60, "traffic")
        before = agent.stats("scale")

        def scaled_in() -> bool:
            agent.tick()
            return bool(agent.stats("scale").scale_events)

        wait_for(scaled_in, 60, "the idle replicas to be scaled in")
        s = agent.stats("scale")
        (event,) = s.scale_events
        assert (event.node, event.instance, event.action) == (REPLICAS, "r1", "in")
        assert [(r.index, r.retired) for r in s.replicas] == [(0, False), (1, True)]
        assert s.rx["frames"] >= before.rx["frames"] and s.tx["out"]["frames"] >= before.tx["out"]["frames"]
        assert [p.replica for p in agent.deployment("scale").processes] == [0]
        assert info.segments[1] not in {i.name for i in list_segments()} and not running(info.processes[1].pid)
        r0 = s.replicas[0].rx["frames"]
        wait_for(lambda: agent.stats("scale").replicas[0].rx["frames"] > r0 + 2_000, 30, "replica 0 to take all")

        agent._get("scale").apply(Decision(REPLICAS, "out", "the test asks"))  # a generator never drops: by hand
        s = agent.stats("scale")
        assert [(e.instance, e.action) for e in s.scale_events] == [("r1", "in"), ("r1", "out")]
        assert [(r.index, r.retired) for r in s.replicas] == [(0, False), (1, False), (1, True)]
        wait_for(lambda: agent.stats("scale").replicas[1].rx["frames"] > 1_000, 30, "the new replica's traffic")

        assert agent.pause_input("scale")  # every replica stops after its step: nothing in flight
        s = agent.stats("scale")
        c = s.conservation
        assert c.ok and c.in_flight == 0 and c.rx == c.tx + c.dropped
        assert s.rx["frames"] == s.tx["out"]["frames"] + sum(s.drops.values())
        assert s.rx["frames"] == sum(r.rx["frames"] for r in s.replicas)
        pids = [p.pid for p in agent.deployment("scale").processes]
        agent.remove("scale")
    assert not [i.name for i in list_segments() if i.name.startswith(info.segments[0][:-3])]
    assert not [p for p in pids if running(p)]
    print(f"\nscaled in after {event.at - before.at:.1f} s idle; {s.rx['frames']} frames, all accounted for")
