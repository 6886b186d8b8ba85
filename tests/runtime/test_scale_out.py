"""Scale-out while traffic flows: a point-to-point egress becomes load-balanced, nothing is lost."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from micronf.ports.base import EG_LB_FLOW, EG_LB_RR, EG_PP
from micronf.runtime.graph import chain_spec, plan
from micronf.runtime.launch import GraphRuntime, LaunchError
from micronf.runtime.scaling import scale_out
from tests.graphio import pump


def _frames(n: int) -> list[bytes]:
    return [bytes(Ether() / IP(src=f"10.1.{i % 250}.{i % 7}", dst="10.2.0.1") / UDP(sport=i % 4000, dport=80))
            for i in range(n)]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("by_flow", [True, False], ids=["flow-affinity", "round-robin"])
def test_live_pp_to_lb_swap_loses_nothing(by_flow: bool) -> None:
    spec = chain_spec([("MacSwapper", {}), ("BusyLoop", {"cycles": 2000}), ("MacSwapper", {})])
    layout = plan(spec, capture_drops=True, on_full="wait")
    total = 30_000
    scaled: list[str] = []
    with GraphRuntime(layout) as g:
        def swap_midway(fed: int) -> None:
            if fed >= total // 3 and not scaled:
                scaled.append(scale_out(g, "BusyLoop", by_flow=by_flow))

        out = pump(g, _frames(total), on_progress=swap_midway, timeout=300)
        head = g.layout.node("MacSwapper0")
        kinds = [e.kind for e in head.egress]
        first, second = g.node_stats("BusyLoop"), g.node_stats("BusyLoop@1")
        tail = g.node_stats("MacSwapper1")
        inside = g.freed_inside()
        assert g.mem is not None
        in_flight = g.mem.pool.stats().in_use
    assert kinds[0] == (EG_LB_FLOW if by_flow else EG_LB_RR)
    assert layout.node("MacSwapper1").egress[0].kind == EG_PP
    assert len(out["out"]) == total and inside == 0 and in_flight == 0  # rx == tx + drops + in flight
    assert first.runtime["rx"] + second.runtime["rx"] == total
    assert second.runtime["rx"] > total // 10  # the new instance really took traffic
    assert first.runtime["rx"] > total // 3  # and the old one kept what was queued for it
    assert tail.runtime["rx"] == total  # the join saw both instances' output
    assert scaled == ["BusyLoop@1"]


def test_scaling_a_graph_that_is_not_running_is_refused_clearly() -> None:
    layout = plan(chain_spec([("MacSwapper", {}), ("MacSwapper", {})]), capture_drops=True)
    g = GraphRuntime(layout)
    g.create()
    try:
        with pytest.raises(LaunchError, match="not running"):
            scale_out(g, "MacSwapper1")
    finally:
        g.close()
