"""The autoscaler's decisions, without processes: counters in, samples out; samples in, decisions out."""

from __future__ import annotations

import numpy as np
import pytest

from micronf.agent.autoscaler import Autoscaler, Decision, Sample, Sampler
from micronf.api.models import AutoscaleSpec
from micronf.runtime.graph import EdgeSpec, GraphLayout, GraphSpec, NodePlan, NodeSpec, plan
from micronf.runtime.loop import RC_CYCLES, RC_EG_FULL0, RC_WORDS


def _layout() -> GraphLayout:
    """chk -> busy, busy's second instance added as scale-out does (instance_of, its own process)."""
    spec = GraphSpec(nodes=[NodeSpec(name="chk", type="CheckIPHeader"), NodeSpec(name="busy", type="BusyLoop")],
                     edges=[EdgeSpec(src="chk", dst="busy")], entry="chk")
    layout = plan(spec)
    busy = layout.node("busy")
    layout.nodes.append(busy.model_copy(update={"name": "busy@1", "index": 2, "process": 2, "instance_of": "busy"}))
    return layout


class _Counters:
    """Runtime counters per node, set by hand."""

    def __init__(self, layout: GraphLayout) -> None:
        self.rc = {n.name: np.zeros(RC_WORDS, dtype=np.int64) for n in layout.nodes}

    def __call__(self, node: NodePlan) -> np.ndarray:
        return self.rc[node.name]


def test_the_first_reading_is_the_baseline_then_changes_are_reported() -> None:
    layout = _layout()
    c = _Counters(layout)
    c.rc["chk"][RC_EG_FULL0] = 500  # drops before the first reading (e.g. an adopted graph's)
    c.rc["busy"][RC_CYCLES] = 10**9
    s = Sampler()
    assert s.due(100.0, 0.25)
    first = s.read(layout, c, entry="chk", entry_full=7, ns_per_cycle=0.5, now=100.0)
    assert first.drops == {"chk": 0, "busy": 0} and first.busy == {"chk": 0.0, "busy": 0.0, "busy@1": 0.0}
    assert first.instances == {"chk": ["chk"], "busy": ["busy", "busy@1"]}
    assert not s.due(100.2, 0.25) and s.due(100.25, 0.25)

    c.rc["chk"][RC_EG_FULL0] += 30  # 30 frames chk could not put into busy's ring
    c.rc["busy"][RC_CYCLES] += 400_000_000  # 0.2 s at 0.5 ns per cycle, in a 0.5 s interval
    c.rc["busy@1"][RC_CYCLES] += 100_000_000  # 0.05 s: its first cycles are counted from 0
    second = s.read(layout, c, entry="chk", entry_full=12, ns_per_cycle=0.5, now=100.5)
    assert second.drops == {"chk": 5, "busy": 30}
    assert second.busy["busy"] == pytest.approx(0.4) and second.busy["busy@1"] == pytest.approx(0.1)
    assert second.busy["chk"] == 0.0


def test_a_retired_instance_is_no_longer_sampled() -> None:
    layout = _layout()
    c = _Counters(layout)
    s = Sampler()
    s.read(layout, c, entry="chk", entry_full=0, ns_per_cycle=1.0, now=1.0)
    layout.node("busy@1").retired = True
    sample = s.read(layout, c, entry="chk", entry_full=0, ns_per_cycle=1.0, now=2.0)
    assert sample.instances["busy"] == ["busy"] and "busy@1" not in sample.busy


def _sample(drops: int = 0, instances: int = 1, busy: float = 0.0) -> Sample:
    names = ["busy"] + [f"busy@{k}" for k in range(1, instances)]
    return Sample(drops={"busy": drops}, instances={"chk": ["chk"], "busy": names},
                  busy={"chk": 0.0, **{n: busy for n in names}})


SPEC = AutoscaleSpec(interval_s=0.25, window=3, min_drops=2, cooldown_s=5.0, max_instances=3, idle_window=4,
                     idle_busy=0.2)


def test_sustained_drops_scale_out_after_window_samples_in_a_row() -> None:
    a = Autoscaler(SPEC)
    t = 0.0
    assert a.decide(_sample(drops=5), t) == [] and a.decide(_sample(drops=5), t + 1) == []
    assert a.decide(_sample(drops=1), t + 2) == []  # below min_drops: the run starts again
    assert a.decide(_sample(drops=2), t + 3) == [] and a.decide(_sample(drops=2), t + 4) == []
    (d,) = a.decide(_sample(drops=9), t + 5)
    assert d == Decision("busy", "out", "3 samples in a row with drops into busy")


def test_the_cooldown_holds_the_next_decision_and_drops_keep_counting() -> None:
    a = Autoscaler(SPEC)
    for t in range(2):
        assert a.decide(_sample(drops=5), t) == []
    (d,) = a.decide(_sample(drops=5), 2.0)
    a.done(d, now=2.5, applied=True)  # the new instance took 0.5 s to start: the cool-down ends at 7.5
    for t in (3.0, 4.0, 5.0, 6.0, 7.0):  # still dropping, 5 samples in a row, but cooling down
        assert a.decide(_sample(drops=5, instances=2), t) == []
    (d,) = a.decide(_sample(drops=5, instances=2), 7.5)
    assert d.action == "out" and d.reason.startswith("6 samples in a row")


def test_no_more_instances_than_max_instances() -> None:
    a = Autoscaler(SPEC)
    for t in range(10):
        assert a.decide(_sample(drops=5, instances=3), t) == []


def test_a_refused_scale_out_cools_down_and_keeps_its_run() -> None:
    a = Autoscaler(SPEC)
    for t in range(2):
        a.decide(_sample(drops=5), t)
    (d,) = a.decide(_sample(drops=5), 2.0)
    a.done(d, now=2.0, applied=False)  # e.g. no spare process slot left
    assert a.decide(_sample(drops=5), 3.0) == []
    (d,) = a.decide(_sample(drops=5), 7.0)  # 5 dropping samples: 0, 1, 2, 3 and 7
    assert d.reason.startswith("5 samples")


def test_idle_instances_scale_in_one_at_a_time() -> None:
    a = Autoscaler(SPEC)
    # 3 instances 25% busy each: 75% in total, not below 0.2 x (3 - 1) = 40%: not idle
    for t in range(6):
        assert a.decide(_sample(instances=3, busy=0.25), t) == []
    # 10% each: 30% < 40%: idle_window low samples in a row scale in
    for t in range(6, 9):
        assert a.decide(_sample(instances=3, busy=0.1), t) == []
    (d,) = a.decide(_sample(instances=3, busy=0.1), 9.0)
    assert d == Decision("busy", "in", "3 instances 30% busy in total for 4 samples")
    a.done(d, now=9.0, applied=True)
    for t in range(10, 14):  # cooling down, then the idle run starts from 0
        assert a.decide(_sample(instances=2, busy=0.05), t) == []
    for t in range(14, 17):
        assert a.decide(_sample(instances=2, busy=0.05), t) == []
    (d,) = a.decide(_sample(instances=2, busy=0.05), 17.0)
    assert d.action == "in"


def test_drops_or_a_single_instance_or_scale_in_off_never_scale_in() -> None:
    a = Autoscaler(SPEC)
    for t in range(10):  # dropping now and then, below window: the idle run restarts each time
        assert a.decide(_sample(drops=5 if t % 3 == 0 else 0, instances=2), t) == []
    for t in range(10, 30):
        assert a.decide(_sample(instances=1), t) == []
    off = Autoscaler(SPEC.model_copy(update={"scale_in": False}))
    for t in range(30):
        assert off.decide(_sample(instances=3), t) == []
