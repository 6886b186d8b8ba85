"""fuse_whole: a chain fuses into one process in chain order; anything else is refused with the reason."""

from __future__ import annotations

import pytest

from micronf.runtime.graph import (
    REPLICA_CLUSTER,
    EdgeSpec,
    GraphError,
    GraphSpec,
    NodeSpec,
    chain_spec,
    fuse_whole,
    plan,
)


def test_chain_fuses_into_one_process_in_chain_order() -> None:
    spec = chain_spec([("CheckIPHeader", {}), ("IPTtlDecrementer", {}), ("MacSwapper", {})])
    shuffled = spec.model_copy(update={"nodes": list(reversed(spec.nodes))})  # spec order is not chain order
    fused = fuse_whole(shuffled)
    assert [n.name for n in fused.nodes] == ["CheckIPHeader", "IPTtlDecrementer", "MacSwapper"]
    assert {n.cluster for n in fused.nodes} == {REPLICA_CLUSTER}
    layout = plan(fused)
    assert len(layout.processes) == 1
    assert [layout.nodes[i].name for i in layout.processes[0].nodes] == [n.name for n in fused.nodes]


def test_parallel_branches_do_not_fuse_whole() -> None:
    nodes = [NodeSpec(name=n, type=t) for n, t in
             [("chk", "CheckIPHeader"), ("a", "CountUrl"), ("b", "HttpClassifier"), ("ttl", "IPTtlDecrementer")]]
    edges = [EdgeSpec(src="chk", label="out", dst="a"), EdgeSpec(src="chk", label="out", dst="b"),
             EdgeSpec(src="a", label="out", dst="ttl"), EdgeSpec(src="b", label="out", dst="ttl")]
    with pytest.raises(GraphError, match="'chk' feeds a, b"):
        fuse_whole(GraphSpec(nodes=nodes, edges=edges, entry="chk"))


def test_node_off_the_chain_is_named() -> None:
    spec = chain_spec([("CheckIPHeader", {}), ("MacSwapper", {})])
    extra = spec.model_copy(update={"nodes": [*spec.nodes, NodeSpec(name="lost", type="MacSwapper")]})
    with pytest.raises(GraphError, match="lost not on the chain"):
        fuse_whole(extra)
