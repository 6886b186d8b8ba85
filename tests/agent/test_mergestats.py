"""A replicated graph's stats read as one graph: every counter the sum of its replicas' (no processes)."""

from __future__ import annotations

import numpy as np

from micronf.agent.mergestats import Part, merge
from micronf.api.models import (
    Conservation,
    EgressStats,
    GraphStats,
    IngressStats,
    LatencyStats,
    NodeStatsInfo,
    RestartEventInfo,
)
from micronf.services.iomem import H_COUNT, H_MAX, HIST_WORDS, bucket_of, percentiles


def _node(rx: int, url0: int, full: int) -> NodeStatsInfo:
    return NodeStatsInfo(name="cu", type="CountUrl", instance_of=None, runtime={"rx": rx, "tx": rx},
                         verdicts={"out": rx}, counters={"url0": url0, "other": rx - url0},
                         ingress=[IngressStats(src="@rx", ring=0, occupancy=3, capacity=1024)],
                         egress=[EgressStats(dst="@exit.out", kind="pp", sent=rx, full=full)])


def _hist(latencies_ns: list[int]) -> list[int]:
    h = np.zeros(HIST_WORDS, np.int64)
    for ns in latencies_ns:
        h[bucket_of(ns)] += 1
        h[H_MAX] = max(h[H_MAX], ns)
    h[H_COUNT] = len(latencies_ns)
    return [int(x) for x in h]


def _part(index: int, rx: int, url0: int, exhausted: int, lat: list[int], ok: bool = True) -> Part:
    s = GraphStats(name=f"g.r{index}", at=0.0, rx={"frames": rx, "accepted": rx, "exhausted": exhausted},
                   tx={"out": {"frames": rx - 1, "refused": 0}}, drops={"cu.full": 1},
                   nodes=[_node(rx, url0, 1)], pool={"slots": 100, "free": 90},
                   latency=LatencyStats(count=0, p50_ns=0, p90_ns=0, p99_ns=0, max_ns=0, buckets=[]),
                   conservation=Conservation(rx=rx, tx=rx - 1, dropped=1, in_flight=0, ok=ok), scale_events=[],
                   restarts=[])
    return Part(index=index, segment=f"seg.r{index}", cpu=index, stats=s, hist=_hist(lat))


def test_counters_add_up_and_the_breakdown_keeps_each_replica() -> None:
    event = RestartEventInfo(at=1.0, process=1, nodes=["cu"], exit_status="killed by signal 9", reclaimed_buffers=2,
                             downtime_ms=5.0, replica=1)
    fast, slow = [100] * 90, [100_000] * 10
    m = merge("g", [_part(0, 1000, 40, 1, fast), _part(1, 500, 7, 0, slow)], scale_events=[], restarts=[event])
    assert m.rx == {"frames": 1500, "accepted": 1500, "exhausted": 0}  # exhausted only once every replica is
    assert m.tx == {"out": {"frames": 1498, "refused": 0}} and m.drops == {"cu.full": 2}
    (node,) = m.nodes
    assert node.counters == {"url0": 47, "other": 1453} and node.runtime == {"rx": 1500, "tx": 1500}
    assert node.egress[0].sent == 1500 and node.egress[0].full == 2 and node.ingress[0].capacity == 2048
    assert m.pool == {"slots": 200, "free": 180}
    c = m.conservation
    assert (c.rx, c.tx, c.dropped, c.in_flight, c.ok) == (1500, 1498, 2, 0, True)
    assert [r.index for r in m.replicas] == [0, 1] and m.replicas[1].rx["frames"] == 500
    assert m.restarts == [event]
    # the latency of the whole: one histogram over both replicas' packets (not an average of percentiles)
    whole = percentiles(np.array(_hist(fast + slow), np.int64))
    assert (m.latency.count, m.latency.p50_ns, m.latency.p99_ns, m.latency.max_ns) == (
        100, whole["p50_ns"], whole["p99_ns"], 100_000.0)
    assert m.latency.p90_ns < 100_000 <= m.latency.p99_ns


def test_conservation_holds_only_if_it_holds_for_every_replica() -> None:
    m = merge("g", [_part(0, 10, 0, 1, []), _part(1, 10, 0, 1, [], ok=False)], scale_events=[], restarts=[])
    assert not m.conservation.ok and m.rx["exhausted"] == 1
