"""Graph planning: wiring decisions and a table of broken graphs with the error each must give."""

from __future__ import annotations

from typing import Any

import pytest

from micronf.ports.base import EG_BRANCH, EG_LOCAL, EG_MARK_ONLY, EG_MARKER, EG_PP, IN_SYNC, ROUTE_FREE
from micronf.runtime.graph import EdgeSpec, GraphError, GraphSpec, NodeSpec, chain_names, chain_spec, plan


def _spec(nodes: list[tuple[str, str, dict[str, Any]]], edges: list[tuple[str, str, str]], entry: str,
          **kw: Any) -> GraphSpec:
    return GraphSpec(nodes=[NodeSpec(name=n, type=t, config=c, **kw) for n, t, c in nodes],
                     edges=[EdgeSpec(src=s, label=lab, dst=d) for s, lab, d in edges], entry=entry)


def test_chain_wiring_exits_and_routes() -> None:
    layout = plan(chain_spec([("CheckIPHeader", {}), ("IPTtlDecrementer", {}), ("MacSwapper", {})]))
    names = [e.name for e in layout.exits]
    assert names == ["IPTtlDecrementer.expired", "out"]  # drops not captured: they are freed
    check = layout.node("CheckIPHeader")
    assert [e.kind for e in check.egress] == [EG_PP]
    # every CheckIPHeader drop reason frees the buffer, its label goes to egress 0
    assert {(c, v) for (_r, c, v) in check.routes} == {(0, 0), *((c, ROUTE_FREE) for c in range(1, 10))}
    assert len({r for n in layout.nodes for e in n.egress for r in e.rings}) == 4  # 2 links + 2 exits
    assert layout.entry_ring == 0 and layout.node("CheckIPHeader").ingress[0].src == "@source"


def test_capture_drops_gives_every_reason_its_exit() -> None:
    layout = plan(chain_spec([("MacSwapper", {})]), capture_drops=True)
    assert [(e.name, e.is_drop) for e in layout.exits] == [("out", False), ("MacSwapper.runt", True)]
    assert len({e.ring for e in layout.exits}) == 2


def test_parallel_group_gets_branch_marker_and_sync() -> None:
    layout = plan(_spec(
        [("a", "CheckIPHeader", {}), ("c1", "PacketSizeCounter", {}), ("c2", "CountUrl", {"urls": ["/x"]}),
         ("z", "MacSwapper", {})],
        [("a", "out", "c1"), ("a", "out", "c2"), ("c1", "out", "z"), ("c2", "out", "z")], "a"))
    assert layout.node("a").egress[0].kind == EG_BRANCH and len(layout.node("a").egress[0].rings) == 2
    assert layout.node("c1").egress[0].kind == EG_MARKER and layout.node("c2").egress[0].kind == EG_MARK_ONLY
    (sync,) = layout.node("z").ingress
    assert sync.kind == IN_SYNC and sync.need == 2 and sync.ring == layout.node("c1").egress[0].rings[0]


def test_fused_cluster_links_are_local() -> None:
    layout = plan(chain_spec([("CheckIPHeader", {}), ("MacSwapper", {})], cluster="c"))
    assert len(layout.processes) == 1 and layout.processes[0].nodes == [0, 1]
    assert layout.node("CheckIPHeader").egress[0].kind == EG_LOCAL


def test_chain_names_number_repeated_types() -> None:
    assert chain_names(["A", "B", "A", "A"]) == ["A0", "B", "A1", "A2"]


BROKEN = [
    ("unknown type", [("a", "NoSuchNF", {})], [], "a", "unknown µNF type 'NoSuchNF'"),
    ("bad config", [("a", "BusyLoop", {"cycles": -1})], [], "a", "node 'a': BusyLoop config: cycles"),
    ("unknown key", [("a", "BusyLoop", {"cylces": 1})], [], "a", "cylces: Extra inputs are not permitted"),
    ("missing entry", [("a", "MacSwapper", {})], [], "b", "entry 'b' is not a node"),
    ("dangling edge", [("a", "MacSwapper", {})], [("a", "out", "b")], "a", "no node named 'b'"),
    ("unknown label", [("a", "MacSwapper", {}), ("b", "MacSwapper", {})], [("a", "http", "b")], "a",
     "MacSwapper has no label 'http'"),
    ("cycle", [("a", "MacSwapper", {}), ("b", "MacSwapper", {})], [("a", "out", "b"), ("b", "out", "a")], "a",
     "cycle: a -> b -> a"),
    ("unreachable", [("a", "MacSwapper", {}), ("b", "MacSwapper", {})], [], "a", "'b' is not reachable"),
    ("dropping branch", [("a", "MacSwapper", {}), ("b", "MacSwapper", {}), ("c", "PacketSizeCounter", {}),
                         ("z", "MacSwapper", {})],
     [("a", "out", "b"), ("a", "out", "c"), ("b", "out", "z"), ("c", "out", "z")], "a", "may drop packets"),
    ("branches not joining", [("a", "MacSwapper", {}), ("b", "PacketSizeCounter", {}),
                              ("c", "PacketSizeCounter", {})],
     [("a", "out", "b"), ("a", "out", "c")], "a", "exactly one next node"),
]


@pytest.mark.parametrize(("case", "nodes", "edges", "entry", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_graphs_are_explained(case: str, nodes: list[tuple[str, str, dict[str, Any]]],
                                     edges: list[tuple[str, str, str]], entry: str, message: str) -> None:
    with pytest.raises(GraphError, match=message.replace("(", r"\(")):
        plan(_spec(nodes, edges, entry))


def test_spec_validation_rejects_duplicate_and_bad_names() -> None:
    with pytest.raises(ValueError, match="two nodes are named 'a'"):
        _spec([("a", "MacSwapper", {}), ("a", "MacSwapper", {})], [], "a")
    with pytest.raises(ValueError, match="must start with a letter"):
        NodeSpec(name="1x", type="MacSwapper")


def test_fusing_a_node_with_two_inputs_is_refused() -> None:
    spec = GraphSpec(
        nodes=[NodeSpec(name="a", type="HttpClassifier"), NodeSpec(name="b", type="MacSwapper", cluster="k"),
               NodeSpec(name="c", type="MacSwapper", cluster="k")],
        edges=[EdgeSpec(src="a", label="http", dst="b"), EdgeSpec(src="a", label="other", dst="c"),
               EdgeSpec(src="b", dst="c")],
        entry="a")
    with pytest.raises(GraphError, match="must be fed only by 'b'"):
        plan(spec)


def test_consolidated_node_routes_by_ingress() -> None:
    """A node shared by two paths sends each packet on along its own path (mapping table, §IV-C3)."""
    spec = GraphSpec(
        nodes=[NodeSpec(name="cls", type="HttpClassifier"), NodeSpec(name="p1", type="MacSwapper"),
               NodeSpec(name="p2", type="MacSwapper"), NodeSpec(name="shared", type="PacketSizeCounter"),
               NodeSpec(name="after1", type="MacSwapper"), NodeSpec(name="after2", type="MacSwapper")],
        edges=[EdgeSpec(src="cls", label="http", dst="p1"), EdgeSpec(src="cls", label="other", dst="p2"),
               EdgeSpec(src="p1", dst="shared"), EdgeSpec(src="p2", dst="shared"),
               EdgeSpec(src="shared", dst="after1", from_node="p1"),
               EdgeSpec(src="shared", dst="after2", from_node="p2")],
        entry="cls")
    shared = plan(spec).node("shared")
    srcs = [i.src for i in shared.ingress]
    dsts = [e.dst for e in shared.egress]
    route = {r: v for (r, c, v) in shared.routes if c == 0}
    assert dsts[route[srcs.index("p1")]] == "after1" and dsts[route[srcs.index("p2")]] == "after2"


def test_real_time_unfs_sharing_a_core_also_yield_after_each_batch() -> None:
    types = [("MacSwapper", {}), ("MacSwapper", {}), ("MacSwapper", {})]
    shared = plan(chain_spec(types, cpus=[0], policy="fifo"))
    assert [p.yield_every for p in shared.processes] == [1, 1, 1]
    apart = plan(chain_spec(types, cpus=[0, 1, 2], policy="fifo"))
    assert [p.yield_every for p in apart.processes] == [0, 0, 0]
    cfs = plan(chain_spec(types, cpus=[0], policy="other"))
    assert [p.yield_every for p in cfs.processes] == [0, 0, 0]
    explicit = plan(chain_spec(types, cpus=[0], policy="fifo", yield_every=8))
    assert [p.yield_every for p in explicit.processes] == [8, 8, 8]
