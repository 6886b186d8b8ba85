"""Placement: one agent per graph (hinted, forced or least loaded), CPU blocks, outputs per exit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from micronf.orchestrator.compose import compose, compose_file
from micronf.orchestrator.load import load_sfc
from micronf.orchestrator.models import ComposedGraph, Placement
from micronf.orchestrator.placement import (
    AgentRef,
    Candidate,
    NoAgentError,
    PlacementError,
    Traffic,
    cores_are_scarce,
    exit_outputs,
    fit_to_cores,
    parse_cpus,
    place,
    target_cpus,
)
from micronf.runtime.graph import plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
A = AgentRef(url="http://10.0.0.1:8771", name="a", cpus=(0, 1))
B = AgentRef(url="http://10.0.0.2:8771", name="b", cpus=(2, 3, 4, 5, 6, 7))


@pytest.fixture(scope="module")
def fig11() -> ComposedGraph:
    return compose_file(EXAMPLES / "sfc-fig11.yaml").after


def _hinted(g: ComposedGraph, **hints: Placement) -> ComposedGraph:
    nodes = [n.model_copy(update={"cpu": hints[n.name].cpu}) if n.name in hints else n for n in g.spec.nodes]
    return g.model_copy(update={"placement": hints, "spec": g.spec.model_copy(update={"nodes": nodes})})


def test_least_loaded_reachable_agent_gets_the_whole_graph(fig11: ComposedGraph) -> None:
    parts = place(fig11, "fig11", [Candidate(A, 9), Candidate(B, 3)], Traffic())
    assert [p.agent for p in parts] == [B]
    assert [n.name for n in parts[0].request.graph.nodes] == [n.name for n in fig11.spec.nodes]
    parts = place(fig11, "fig11", [Candidate(A, 9), Candidate(B, None)], Traffic())
    assert [p.agent for p in parts] == [A]  # B is unreachable
    with pytest.raises(NoAgentError, match="no agent is reachable"):
        place(fig11, "fig11", [Candidate(A, None), Candidate(B, None)], Traffic())


@pytest.mark.parametrize("sfc", ["sfc-fig11.yaml", "sfc-fig1a.yaml", "sfc-two-pools.yaml"])
@pytest.mark.parametrize("stage", ["before", "after", "chained"])
def test_exit_names_are_the_wired_graphs(sfc: str, stage: str) -> None:
    """Placement names the exits without wiring the graph: the names and SFC outputs are those of
    the runtime's plan (parallel groups included: the Fig. 11 graph after optimization has one)."""
    comp = compose_file(EXAMPLES / sfc, parallelize=stage != "chained")
    graph = comp.before if stage == "before" else comp.after
    wired = {e.name: graph.output_of(e.node, e.verdict) for e in plan(graph.spec).exits if not e.is_drop}
    assert exit_outputs(graph) == wired and list(exit_outputs(graph)) == list(wired)


def test_scarce_cores_compose_the_sfc_again_as_a_chain() -> None:
    """The one place the policy is written: with fewer CPUs than µNFs the SFC is composed again
    without parallel branches (from the bundle already loaded); with enough, it stays as it was."""
    bundle = load_sfc(EXAMPLES / "sfc-fig11.yaml")
    comp = compose(bundle)
    assert comp.nodes_rewritten("parallelize")
    assert fit_to_cores(bundle, comp, B.cpus) is comp and fit_to_cores(bundle, comp, None) is comp
    chained = fit_to_cores(bundle, comp, A.cpus)
    assert not chained.nodes_rewritten("parallelize")
    assert chained == compose_file(EXAMPLES / "sfc-fig11.yaml", parallelize=False)


def test_cpus_in_contiguous_blocks_consecutive_unfs_share(fig11: ComposedGraph) -> None:
    n = len(fig11.spec.nodes)
    assert n == 6
    cpus = [node.cpu for node in place(fig11, "x", [Candidate(A, 0)], Traffic(), fuse=False)[0].request.graph.nodes]
    assert cpus == [0, 0, 0, 1, 1, 1]
    cpus = [node.cpu for node in place(fig11, "x", [Candidate(B, 0)], Traffic())[0].request.graph.nodes]
    assert cpus == [2, 3, 4, 5, 6, 7]  # enough cores: one each
    unknown = AgentRef(url="http://10.0.0.3:8771", name="c")
    cpus = [node.cpu for node in place(fig11, "x", [Candidate(unknown, 0)], Traffic())[0].request.graph.nodes]
    assert cpus == [None] * n


def test_scarce_cores_chain_and_fuse_neighbours(fig11: ComposedGraph) -> None:
    chained = compose_file(EXAMPLES / "sfc-fig11.yaml", parallelize=False).after
    assert cores_are_scarce(fig11, target_cpus(fig11, [Candidate(A, 0)]))  # 6 µNFs, 2 CPUs
    assert not cores_are_scarce(fig11, target_cpus(fig11, [Candidate(B, 0)])) and not cores_are_scarce(fig11, None)
    req = place(chained, "x", [Candidate(A, 0)], Traffic())[0].request
    names = [n.name for n in chained.spec.nodes]
    assert [(n.cpu, n.cluster) for n in req.graph.nodes] == [(1, f"cpu1-{names[0]}")] * 6
    assert (req.rx_cpu, req.tx_cpu) == (0, 0)  # the I/O services get the first CPU to themselves
    assert [p.nodes for p in plan(req.graph).processes] == [[0, 1, 2, 3, 4, 5]]  # one fused process
    wide = AgentRef(url="http://10.0.0.3:8771", name="c", cpus=(4, 5, 6))  # 3 CPUs, 6 µNFs
    req = place(chained, "x", [Candidate(wide, 0)], Traffic())[0].request
    assert [n.cpu for n in req.graph.nodes] == [5, 5, 5, 6, 6, 6] and (req.rx_cpu, req.tx_cpu) == (4, 4)
    assert [p.nodes for p in plan(req.graph).processes] == [[0, 1, 2], [3, 4, 5]]
    # With the parallel branches only the chain before them fuses: a branch member has its own process.
    req = place(fig11, "x", [Candidate(A, 0)], Traffic())[0].request
    assert len({n.cluster for n in req.graph.nodes[:3]}) == 1 and [n.cluster for n in req.graph.nodes[3:]] == [None] * 3
    assert len(plan(req.graph).processes) == 4  # the Branch stays between processes
    # Enough cores, or fusing turned off: one process per µNF and the I/O services unpinned.
    for req in (place(chained, "x", [Candidate(B, 0)], Traffic())[0].request,
                place(chained, "x", [Candidate(A, 0)], Traffic(), fuse=False)[0].request):
        assert [n.cluster for n in req.graph.nodes] == [None] * 6 and (req.rx_cpu, req.tx_cpu) == (None, None)


def test_cpu_hints_are_honoured_and_checked(fig11: ComposedGraph) -> None:
    first = fig11.spec.nodes[0].name
    g = _hinted(fig11, **{first: Placement(cpu=1)})
    nodes = place(g, "x", [Candidate(A, 0)], Traffic(), fuse=False)[0].request.graph.nodes
    assert nodes[0].cpu == 1
    assert [x.cpu for x in nodes[1:]] == [0, 0, 0, 1, 1]  # the other five spread over (0, 1)
    zero = _hinted(fig11, **{first: Placement(cpu=0)})  # fused: a hint may name the I/O services' CPU
    assert [x.cpu for x in place(zero, "x", [Candidate(A, 0)], Traffic())[0].request.graph.nodes] == [0] + [1] * 5
    with pytest.raises(PlacementError, match="hinted CPU 1 is not one the agent offers"):
        place(g, "x", [Candidate(B, 0)], Traffic())


def test_agent_hints(fig11: ComposedGraph) -> None:
    names = [n.name for n in fig11.spec.nodes]
    one = _hinted(fig11, **{names[0]: Placement(agent="a"), names[-1]: Placement(agent="a")})
    assert place(one, "x", [Candidate(A, 50), Candidate(B, 0)], Traffic())[0].agent == A  # hint beats load
    two = _hinted(fig11, **{names[0]: Placement(agent="a"), names[-1]: Placement(agent="b")})
    with pytest.raises(PlacementError, match=r"name 2 agents \(a: firewall.check; b: appfw.validate\).*one agent"):
        place(two, "x", [Candidate(A, 0), Candidate(B, 0)], Traffic())
    with pytest.raises(PlacementError, match="asks for agent 'b' but the placement hints name 'a'"):
        place(one, "x", [Candidate(A, 0), Candidate(B, 0)], Traffic(), agent="b")
    with pytest.raises(PlacementError, match=r"no agent named 'zz' is configured \(agents: a, b\)"):
        place(fig11, "x", [Candidate(A, 0), Candidate(B, 0)], Traffic(), agent="zz")
    with pytest.raises(NoAgentError, match=r"agent a .* is unreachable"):
        place(one, "x", [Candidate(A, None), Candidate(B, 0)], Traffic())
    assert place(fig11, "x", [Candidate(A, 0), Candidate(B, 9)], Traffic(), agent=B.url)[0].agent == B


def test_outputs_default_to_null_and_sfc_outputs_name_their_exits(fig11: ComposedGraph) -> None:
    req = place(fig11, "x", [Candidate(A, 0)], Traffic())[0].request
    # every unlinked label is an exit: the last node's label is named alone (the agent's naming)
    assert set(req.outputs) == {"out", "monitor.classify.other"}
    assert all(o.backend == {"kind": "null"} for o in req.outputs.values())
    pcap = {"backend": {"kind": "pcap", "path": "/tmp/web.pcap"}, "next_hop_mac": "02:00:00:00:00:09"}
    req = place(fig11, "x", [Candidate(A, 0)], Traffic.model_validate(
        {"outputs": {"appfw.web": pcap}, "rx": {"kind": "generator", "count": 10}}))[0].request
    assert req.outputs["out"].backend == pcap["backend"] and req.outputs["out"].next_hop_mac == pcap["next_hop_mac"]
    assert req.outputs["monitor.classify.other"].backend == {"kind": "null"}
    assert req.rx == {"kind": "generator", "count": 10} and req.name == req.graph.name == "x"
    req = place(fig11, "x", [Candidate(A, 0)], Traffic.model_validate(
        {"outputs": {"monitor.classify.other": pcap}}))[0].request
    assert req.outputs["monitor.classify.other"].backend == pcap["backend"]
    with pytest.raises(PlacementError, match=r"outputs.web: no SFC output or exit has this name \(known: "
                                             r"appfw.other, appfw.web, monitor.classify.other, out\)"):
        place(fig11, "x", [Candidate(A, 0)], Traffic.model_validate({"outputs": {"web": pcap}}))


def test_agent_ref_parse() -> None:
    assert AgentRef.parse("edge=http://10.0.0.2:8771/#cpus=2-3,6") == AgentRef(
        url="http://10.0.0.2:8771", name="edge", cpus=(2, 3, 6))
    assert AgentRef.parse("http://10.0.0.2:8771") == AgentRef(url="http://10.0.0.2:8771", name="10.0.0.2:8771")
    local = AgentRef.parse("http://127.0.0.1:8771")
    assert local.cpus == tuple(sorted(os.sched_getaffinity(0)))
    for bad in ("10.0.0.2:8771", "ftp://x", "http://h:1#cpu=1", "http://h:1#cpus=a-b"):
        with pytest.raises(ValueError, match=r"expected|the only option"):
            AgentRef.parse(bad)
    assert parse_cpus("0-2,5") == (0, 1, 2, 5)
