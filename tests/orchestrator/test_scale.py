"""The control plane on large inputs: a 10,000-µNF chain and a 1,000-VNF SFC load, compose, wire and
place without hitting the recursion limit, and the result is the one worked out by hand.

The inputs repeat a block whose optimization is easy to state. Chain: ``CheckIPHeader -> MacSwapper
-> PacketSizeCounter -> CountUrl``: MacSwapper writes only the Ethernet header, so every CheckIPHeader
after the first is redundant (removed); the two counters neither drop nor write, so they run in
parallel between one MacSwapper and the next (the last block's counters lead to the exit, not to a
join, and stay chained). SFC: VNFs ``check -> mac``, the same removal one level up. The timing goal
(< 5 s each) is ``bench/plan.py``'s; these tests check the results and that nothing recurses.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import micronf.app.cli as cli
from micronf.app.cli import control
from micronf.documents import SpecError
from micronf.orchestrator.compose import compose_file
from micronf.orchestrator.placement import AgentRef, Candidate, Traffic, place
from micronf.runtime.graph import EdgeSpec, GraphError, GraphSpec, NodeSpec, plan

from .sfcfiles import sfc, template, write_files

BLOCK = [("c", "CheckIPHeader"), ("m", "MacSwapper"), ("p", "PacketSizeCounter"), ("u", "CountUrl")]
URLS = {"urls": ["/login"]}


@pytest.fixture(autouse=True)
def _default_recursion_limit() -> Iterator[None]:
    """What a user's interpreter allows (pytest may have raised it): deep recursion would fail here."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(old)


def _chain_files(directory: Path, blocks: int) -> Path:
    names = [f"{k}{i}" for i in range(blocks) for k, _ in BLOCK]
    nodes = [(f"{k}{i}", t, URLS if t == "CountUrl" else {}) for i in range(blocks) for k, t in BLOCK]
    links: list[tuple[str, str | None, str]] = [(a, None, b) for a, b in itertools.pairwise(names)]
    write_files(directory, {"templates/long.json": template("long", nodes, links, {"out": [names[-1]]}),
                            "sfc.yaml": sfc([{"name": "v", "template": "long"}], [])})
    return directory / "sfc.yaml"


def test_10000_unf_chain_composes_wires_and_places(tmp_path: Path) -> None:
    blocks = 2500
    comp = compose_file(_chain_files(tmp_path, blocks))
    before, after = comp.before.spec, comp.after.spec
    assert len(before.nodes) == 10_000 and len(before.edges) == 9_999
    kept = ["c0"] + [f"{k}{i}" for i in range(blocks) for k in "mpu"]
    assert [n.name for n in after.nodes] == [f"v.{n}" for n in kept]  # instantiation order
    assert after.entry == "v.c0"
    last = blocks - 1
    expected = {("c0", "m0"), (f"m{last}", f"p{last}"), (f"p{last}", f"u{last}")}  # the last block stays a chain
    for i in range(blocks - 1):
        expected |= {(f"m{i}", f"p{i}"), (f"m{i}", f"u{i}"), (f"p{i}", f"m{i + 1}"), (f"u{i}", f"m{i + 1}")}
    assert {(e.src, e.dst) for e in after.edges} == {(f"v.{a}", f"v.{b}") for a, b in expected}
    assert len(after.edges) == len(expected) and all(e.label == "out" and e.from_node is None for e in after.edges)
    assert comp.nodes_rewritten("remove") == [[f"v.c{i}", "v.c0"] for i in range(1, blocks)]
    assert comp.nodes_rewritten("parallelize") == [[f"v.p{i}", f"v.u{i}"] for i in range(blocks - 1)]
    assert comp.nodes_rewritten("consolidate") == []
    assert comp.after.outputs == {"v.out": [(f"v.u{blocks - 1}", "out")]}

    layout = plan(after)  # what the agent wires: one process and ring per µNF, a Branch/Sync per pair
    assert len(layout.processes) == len(kept)
    assert [e.name for e in layout.exits] == ["out"]

    chained = compose_file(tmp_path / "sfc.yaml", parallelize=False)
    agent = AgentRef(url="http://127.0.0.1:8771", name="local", cpus=(0, 1))
    [part] = place(chained.after, "long", [Candidate(agent, 0)], Traffic())
    spec = part.request.graph
    assert {n.cpu for n in spec.nodes} == {1} and len({n.cluster for n in spec.nodes}) == 1  # one fused process
    assert len(plan(spec).processes) == 1


def test_1000_vnf_sfc_composes_and_wires(tmp_path: Path) -> None:
    vnfs = 1000
    tpl = template("cm", [("check", "CheckIPHeader", {}), ("mac", "MacSwapper", {})], [("check", None, "mac")],
                   {"out": ["mac"]})
    write_files(tmp_path, {"templates/cm.yaml": tpl, "sfc.json": sfc(
        [{"name": f"v{i}", "template": "cm"} for i in range(vnfs)],
        [(f"v{i}", "out", f"v{i + 1}") for i in range(vnfs - 1)])})
    comp = compose_file(tmp_path / "sfc.json")
    assert len(comp.before.spec.nodes) == 2 * vnfs and len(comp.before.spec.edges) == 2 * vnfs - 1
    after = comp.after.spec
    kept = ["v0.check"] + [f"v{i}.mac" for i in range(vnfs)]
    assert [n.name for n in after.nodes] == kept
    assert [(e.src, e.dst) for e in after.edges] == list(itertools.pairwise(kept))
    assert comp.nodes_rewritten("remove") == [[f"v{i}.check", "v0.check"] for i in range(1, vnfs)]
    assert comp.after.outputs == {f"v{vnfs - 1}.out": [(f"v{vnfs - 1}.mac", "out")]}
    assert len(plan(after).processes) == vnfs + 1


def test_long_cycles_are_reported_not_recursed(tmp_path: Path) -> None:
    n = 5000
    names = [f"n{i}" for i in range(n)]
    links: list[tuple[str, str | None, str]] = [(a, None, b) for a, b in itertools.pairwise(names)]
    write_files(tmp_path, {
        "templates/loop.json": template("loop", [(x, "MacSwapper", {}) for x in names],
                                        [*links, (names[-1], None, names[1])], {"out": []}),
        "sfc.yaml": sfc([{"name": "v", "template": "loop"}], [])})
    with pytest.raises(SpecError, match=r"links: expected links without a cycle, found the cycle n1 -> n2 -> .*n1$"):
        compose_file(tmp_path / "sfc.yaml")
    spec = GraphSpec(nodes=[NodeSpec(name=x, type="MacSwapper") for x in names],
                     edges=[EdgeSpec(src=a, dst=b) for a, _, b in links] + [EdgeSpec(src=names[-1], dst=names[1])],
                     entry="n0")
    with pytest.raises(GraphError, match=r"the graph has a cycle: n1 -> n2 -> .* -> n4999 -> n1$"):
        plan(spec)


def test_a_link_from_an_output_without_endpoints_is_an_error(tmp_path: Path) -> None:
    """Such a link leads no packet to the next VNF: its µNFs could never be reached."""
    tpl = template("t", [("m", "MacSwapper", {})], [], {"out": ["m"], "none": []})
    write_files(tmp_path, {"templates/t.yaml": tpl, "sfc.yaml": sfc(
        [{"name": "a", "template": "t"}, {"name": "b", "template": "t"}], [("a", "none", "b")])})
    with pytest.raises(SpecError, match=r"links\[0\]\.label: expected an output that some packets leave by "
                                        r"\(template t lists no endpoint for it\), found 'none'"):
        compose_file(tmp_path / "sfc.yaml")


def test_plan_prints_a_long_graph_as_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past 1,000 rows the tables are plain lines: every µNF, its type and where it leads."""
    monkeypatch.setattr(control, "console", Console(width=200, force_terminal=False))
    res = CliRunner().invoke(cli.app, ["plan", str(_chain_files(tmp_path, 260)), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "before: 1040 µNFs (templates joined along the SFC) (one line per row: µNF, type, config, next)" in lines
    assert "v.c0 (entry)\tCheckIPHeader\t\tout → v.m0" in lines
    assert 'v.u259\tCountUrl\t{"urls":["/login"]}\tout → v.out' in lines
    assert "after: 781 µNFs (optimized)" in res.output  # a table: fewer rows
    assert "259 remove, 0 consolidate, 259 parallelize: 1040 → 781 µNFs" in res.output
