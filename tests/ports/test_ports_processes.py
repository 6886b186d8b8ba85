"""Ports under real µNF processes: Branch/Marker/Sync with 2 and 3 branches."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from micronf.runtime.graph import EdgeSpec, GraphSpec, NodeSpec, plan
from micronf.runtime.launch import GraphRuntime
from tests.graphio import pump


@pytest.fixture(autouse=True)
def _probe_nfs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICRONF_NF_MODULES", "tests.probe_nfs")


def _frames(n: int) -> list[bytes]:
    return [bytes(Ether() / IP(dst="10.0.0.1") / UDP(sport=1000 + i % 500, dport=53) / Raw(bytes(64)))
            for i in range(n)]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("branches", [2, 3])
def test_branch_sync_no_early_release_no_loss(branches: int) -> None:
    """Packets fan out to parallel Stamp µNFs of different speeds; the join checks every stamp is
    present. A Sync port that let a packet through early would show up as ``missing``."""
    offsets = [60 + k for k in range(branches)]
    nodes = [NodeSpec(name="head", type="MacSwapper")]
    nodes += [NodeSpec(name=f"b{k}", type="Stamp", config={"offset": off, "cycles": 200 * (k + 1) * (k % 2)})
              for k, off in enumerate(offsets)]
    nodes += [NodeSpec(name="join", type="CheckStamps", config={"offsets": offsets})]
    edges = [EdgeSpec(src="head", dst=f"b{k}") for k in range(branches)]
    edges += [EdgeSpec(src=f"b{k}", dst="join") for k in range(branches)]
    spec = GraphSpec(name="par", nodes=nodes, edges=edges, entry="head")
    layout = plan(spec, capture_drops=True, on_full="wait")
    join = layout.node("join")
    assert [i.kind for i in join.ingress] == [1] and join.ingress[0].need == branches  # one Sync ingress
    total = 20_000
    with GraphRuntime(layout) as g:
        out = pump(g, _frames(total))
        stats = {n.name: g.node_stats(n.name) for n in layout.nodes}
        assert g.mem is not None
        in_flight = g.mem.pool.stats().in_use
        lost_inside = g.freed_inside()
    assert len(out["ok"]) == total
    assert out["missing"] == [] and stats["join"].counters["missing"] == 0
    for k in range(branches):
        assert stats[f"b{k}"].runtime["rx"] == total  # every branch saw every packet
    assert stats["join"].runtime["rx"] == total  # and the join exactly once each
    assert total == sum(len(v) for v in out.values()) + lost_inside + in_flight  # conservation
    assert in_flight == 0
