"""Composition and optimization: the paper's Fig. 11 from the Fig. 1(b) templates and the Fig. 2(a)
SFC, the other examples, and the rules that keep a µNF (counters, writers in between, other configs).

Fig. 11 worked out from the paper: Edge Firewall = CheckIPHeader -> L3L4Filter; Monitoring =
CheckIPHeader -> HttpClassifier -http-> CountUrl -> PacketSizeCounter; Application Firewall =
CheckIPHeader -> HttpClassifier -http-> ValidateUrl. Joined: 9 µNFs, three CheckIPHeaders and two
HttpClassifiers (Table I: the repeated elements of configuration (i)). The optimized graph keeps one
of each (Table II's savings), runs the two read-only counters in parallel (§V-B) and has 6 µNFs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from micronf.orchestrator.compose import compose, compose_file
from micronf.orchestrator.load import load_sfc
from micronf.ports.base import EG_BRANCH, IN_SYNC
from micronf.runtime.graph import EdgeSpec, plan

from .sfcfiles import EXAMPLES, sfc, template, write_files


def _edges(spec_edges: list[EdgeSpec]) -> set[tuple[str, str, str, str | None]]:
    return {(e.src, e.label, e.dst, e.from_node) for e in spec_edges}


def test_fig11_exact_rewrites_and_graph() -> None:
    comp = compose_file(EXAMPLES / "sfc-fig11.yaml")
    assert [n.name for n in comp.before.spec.nodes] == [
        "firewall.check", "firewall.filter", "monitor.check", "monitor.classify", "monitor.urls", "monitor.sizes",
        "appfw.check", "appfw.classify", "appfw.validate"]
    assert comp.nodes_rewritten("remove") == [["monitor.check", "firewall.check"], ["appfw.check", "firewall.check"],
                                              ["appfw.classify", "monitor.classify"]]
    assert comp.nodes_rewritten("consolidate") == []
    assert comp.nodes_rewritten("parallelize") == [["monitor.urls", "monitor.sizes"]]
    after = comp.after.spec
    assert [(n.name, n.type) for n in after.nodes] == [
        ("firewall.check", "CheckIPHeader"), ("firewall.filter", "L3L4Filter"), ("monitor.classify", "HttpClassifier"),
        ("monitor.urls", "CountUrl"), ("monitor.sizes", "PacketSizeCounter"), ("appfw.validate", "ValidateUrl")]
    assert after.entry == "firewall.check"
    assert _edges(after.edges) == {
        ("firewall.check", "out", "firewall.filter", None), ("firewall.filter", "out", "monitor.classify", None),
        ("monitor.classify", "http", "monitor.urls", None), ("monitor.classify", "http", "monitor.sizes", None),
        ("monitor.urls", "out", "appfw.validate", None), ("monitor.sizes", "out", "appfw.validate", None)}
    assert comp.after.outputs == {"appfw.other": [("monitor.classify", "other")],
                                  "appfw.web": [("appfw.validate", "out")]}
    assert comp.before.outputs == {"appfw.other": [("appfw.classify", "other")],
                                   "appfw.web": [("appfw.validate", "out")]}
    reasons = {r.nodes[0]: r.reason for r in comp.rewrites}
    assert "'http' for the packets from monitor.sizes" in reasons["appfw.classify"]
    assert "exit 'appfw.other'" in reasons["appfw.classify"]
    assert "none drops" in reasons["monitor.urls"]


def test_fig11_optimized_graph_is_wired_with_branch_and_sync() -> None:
    comp = compose_file(EXAMPLES / "sfc-fig11.yaml")
    plan(comp.before.spec)
    layout = plan(comp.after.spec)
    assert [e.kind for e in layout.node("monitor.classify").egress if e.kind == EG_BRANCH] == [EG_BRANCH]
    syncs = [i for i in layout.node("appfw.validate").ingress if i.kind == IN_SYNC]
    assert len(syncs) == 1 and syncs[0].need == 2
    assert {(e.node, e.verdict) for e in layout.exits} == {("monitor.classify", "other"), ("appfw.validate", "out")}


def test_without_parallelization_the_counters_stay_chained_and_can_be_fused() -> None:
    comp = compose_file(EXAMPLES / "sfc-fig11.yaml", parallelize=False)
    assert comp.nodes_rewritten("parallelize") == []
    assert len(comp.nodes_rewritten("remove")) == 3
    after = comp.after.spec
    assert ("monitor.urls", "out", "monitor.sizes", None) in _edges(after.edges)
    assert ("monitor.sizes", "out", "appfw.validate", None) in _edges(after.edges)
    fused = after.model_copy(update={"nodes": [n.model_copy(update={"cluster": "all"}) for n in after.nodes]})
    layout = plan(fused)  # a chain: one run-to-completion process can hold it all
    assert len(layout.processes) == 1 and not any(i.kind == IN_SYNC for n in layout.nodes for i in n.ingress)


def test_full_fig1a_chain_ends_in_the_load_balancer() -> None:
    comp = compose_file(EXAMPLES / "sfc-fig1a.yaml")
    assert [r[0] for r in comp.nodes_rewritten("remove")] == [
        "monitor.check", "appfw.check", "appfw.classify", "lb.check"]
    assert comp.nodes_rewritten("parallelize") == [["monitor.urls", "monitor.sizes"]]
    assert comp.after.outputs == {"lb.out": [("lb.balance", "out")]}
    assert {(e.src, e.label) for e in comp.after.spec.edges if e.dst == "lb.balance"} == {
        ("appfw.validate", "out"), ("monitor.classify", "other")}
    plan(comp.after.spec)


def test_two_pools_consolidates_the_meters_with_a_mapping_table() -> None:
    comp = compose_file(EXAMPLES / "sfc-two-pools.yaml")
    assert [r[0] for r in comp.nodes_rewritten("remove")] == ["appfw.check", "web-lb.check", "other-lb.check"]
    assert comp.nodes_rewritten("consolidate") == [["web-meter.sizes", "other-meter.sizes"]]
    assert comp.nodes_rewritten("parallelize") == []
    edges = _edges(comp.after.spec.edges)
    assert {e for e in edges if e[0] == "web-meter.sizes"} == {
        ("web-meter.sizes", "out", "web-lb.balance", "appfw.validate"),
        ("web-meter.sizes", "out", "other-lb.balance", "appfw.classify")}
    assert {e[:3] for e in edges if e[2] == "web-meter.sizes"} == {
        ("appfw.validate", "out", "web-meter.sizes"), ("appfw.classify", "other", "web-meter.sizes")}
    other_lb = next(n for n in comp.after.spec.nodes if n.name == "other-lb.balance")
    assert other_lb.config["backends"] == [{"ip": "10.2.0.21"}, {"ip": "10.2.0.22"}]  # the SFC's override
    layout = plan(comp.after.spec)
    meter = layout.node("web-meter.sizes")
    by_src = {meter.ingress[r].src: meter.egress[eg].dst for r, _c, eg in meter.routes if eg >= 0}
    assert by_src == {"appfw.validate": "web-lb.balance", "appfw.classify": "other-lb.balance"}


def _compose(tmp_path: Path, templates: dict[str, dict], vnfs: list[dict], links: list[tuple[str, str, str]]):
    write_files(tmp_path, {f"templates/{k}.yaml": v for k, v in templates.items()})
    write_files(tmp_path, {"sfc.yaml": sfc(vnfs, links)})
    return compose(load_sfc(tmp_path / "sfc.yaml"))


def test_counters_and_checks_after_a_writer_are_kept(tmp_path: Path) -> None:
    chain = template("chain", [("c1", "CountUrl", {"urls": ["/a"]}), ("c2", "CountUrl", {"urls": ["/a"]}),
                               ("check1", "CheckIPHeader", {}), ("ttl", "IPTtlDecrementer", {}),
                               ("check2", "CheckIPHeader", {}), ("cls1", "HttpClassifier", {"ports": [80]}),
                               ("cls2", "HttpClassifier", {})],
                     [("c1", None, "c2"), ("c2", None, "check1"), ("check1", None, "ttl"), ("ttl", "out", "check2"),
                      ("check2", None, "cls1"), ("cls1", "http", "cls2"), ("cls1", "other", "cls2")],
                     {"out": ["ttl.expired", "cls2.http", "cls2.other"]})
    comp = _compose(tmp_path, {"chain": chain}, [{"name": "v", "template": "chain"}], [])
    # counters count (never redundant); TTL writes L3 that CheckIPHeader reads; other ports, other config
    assert comp.nodes_rewritten("remove") == []
    assert comp.nodes_rewritten("parallelize") == []  # c1 -> c2 is the entry: nothing feeds a Branch
    assert len(comp.after.spec.nodes) == 7


def test_a_branch_nobody_can_reach_any_more_is_removed(tmp_path: Path) -> None:
    split = template("split", [("cls", "HttpClassifier", {})], [], {"web": ["cls.http"], "other": ["cls.other"]})
    mon = template("mon", [("cls", "HttpClassifier", {}), ("urls", "CountUrl", {"urls": ["/x"]})],
                   [("cls", "http", "urls")], {"out": ["urls", "cls.other"]})
    comp = _compose(tmp_path, {"split": split, "mon": mon},
                    [{"name": "s", "template": "split"}, {"name": "m", "template": "mon"}], [("s", "other", "m")])
    assert comp.nodes_rewritten("remove") == [["m.cls", "s.cls"], ["m.urls", "m.cls"]]
    assert comp.after.outputs == {"s.web": [("s.cls", "http")], "m.out": [("s.cls", "other")]}
    plan(comp.after.spec)


def test_placement_hints_per_vnf_and_per_unf(tmp_path: Path) -> None:
    fw = template("fw", [("check", "CheckIPHeader", {}), ("filter", "L3L4Filter", {"default": "allow"})],
                  [("check", None, "filter")], {"out": ["filter"]})
    comp = _compose(tmp_path, {"fw": fw}, [{"name": "f", "template": "fw", "placement": {"agent": "a1", "cpu": 1},
                                            "unfs": {"filter": {"cpu": 0}}}], [])
    assert comp.after.placement["f.check"].model_dump() == {"agent": "a1", "cpu": 1}
    assert comp.after.placement["f.filter"].model_dump() == {"agent": "a1", "cpu": 0}
    assert [n.cpu for n in comp.after.spec.nodes] == [1, 0]


def test_declared_unf_from_a_descriptor_file(tmp_path: Path) -> None:
    write_files(tmp_path, {"templates/compressor.yaml": {
        "kind": "unf-descriptor", "type": "HttpCompressor", "labels": ["out", "skipped"],
        "descriptor": {"l3": "ReadWrite", "l4": "ReadWrite", "payload": "ReadWrite"}}})
    wan = template("wan", [("check", "CheckIPHeader", {}), ("zip", "HttpCompressor", {})], [("check", None, "zip")],
                   {"out": ["zip.out", "zip.skipped"]})
    comp = _compose(tmp_path, {"wan": wan}, [{"name": "w", "template": "wan"}], [])
    assert [n.type for n in comp.after.spec.nodes] == ["CheckIPHeader", "HttpCompressor"]
    assert comp.after.outputs == {"w.out": [("w.zip", "out"), ("w.zip", "skipped")]}


@pytest.mark.parametrize("sfc_file", sorted(EXAMPLES.glob("sfc-*.yaml")), ids=lambda p: p.name)
def test_every_example_composes_and_wires(sfc_file: Path) -> None:
    comp = compose_file(sfc_file)
    plan(comp.before.spec)
    plan(comp.after.spec)
    assert comp.rewrites


def test_unfs_on_different_agents_are_not_parallelized(tmp_path: Path) -> None:
    doc = sfc([{"name": "monitor", "template": "monitoring", "unfs": {"sizes": {"agent": "other-host"}}},
               {"name": "appfw", "template": "application-firewall"}], [("monitor", "out", "appfw")])
    doc["imports"] = [str(EXAMPLES / "templates" / "*.yaml")]
    write_files(tmp_path, {"sfc.yaml": doc})
    comp = compose(load_sfc(tmp_path / "sfc.yaml"))
    assert comp.nodes_rewritten("parallelize") == []
    doc["vnfs"][0]["unfs"] = {}
    write_files(tmp_path, {"sfc.yaml": doc})
    assert compose(load_sfc(tmp_path / "sfc.yaml")).nodes_rewritten("parallelize") == [
        ["monitor.urls", "monitor.sizes"]]
