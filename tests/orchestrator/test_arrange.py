"""Placement's choice between pipelined, mix and replicas (orchestrator/arrange.py, costmodel.py).

Every expected rate is computed here by hand from the constructed cycle table (the formulas are
spelled out in each test), not by the model's functions; the decisions follow from them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from micronf.orchestrator.arrange import MARGIN, arrange
from micronf.orchestrator.compose import compose
from micronf.orchestrator.costmodel import Alternative, CostTable, CostTableError, load_table
from micronf.orchestrator.load import SFCBundle, load_sfc
from micronf.orchestrator.northbound import InvalidSFCError, SFCCreate, read_sfc_source
from micronf.orchestrator.placement import AgentRef, Candidate, PlacementError, Traffic, place
from micronf.orchestrator.service import Orchestrator
from micronf.orchestrator.store import Store
from tests.agent._fake_agent import FakeAgent

from .sfcfiles import EXAMPLES, sfc, template, write_files

RX, TX, HOP, FUSED, LB, SYNC, CLOCK = 100.0, 40.0, 43.0, 14.0, 10.0, 20.0, 1e9


def table(kernels: dict[str, float], unknown: float = 10.0) -> CostTable:
    return CostTable.model_validate({
        "format": "micronf-cost-table/1", "clock_hz": CLOCK, "kernels": kernels, "unknown_kernel": unknown,
        "io": {"rx": RX, "tx": TX, "ring_hop": HOP, "fused_hop": FUSED, "lb": LB, "sync": SYNC}})


def by_name(alts: list[Alternative]) -> dict[str, Alternative]:
    return {a.name.replace("-fused", ""): a for a in alts}


def one_unf(tmp: Path, nf_type: str, placement: dict[str, int] | None = None) -> SFCBundle:
    vnf: dict[str, object] = {"name": "v", "template": "t"} | ({"placement": placement} if placement else {})
    write_files(tmp, {"templates/t.yaml": template("t", [("x", nf_type, {})], [], {"out": ["x"]}),
                      "sfc.yaml": sfc([vnf], [])})
    return load_sfc(tmp / "sfc.yaml")


def test_a_heavy_single_unf_goes_to_replicas(tmp_path: Path) -> None:
    bundle = one_unf(tmp_path, "MacSwapper")
    comp, arr = arrange(bundle, compose(bundle), (0, 1, 2, 3), table({"MacSwapper": 2000}))
    alts = by_name(arr.alternatives)
    # pipelined: the µNF alone on CPU 0 (2000 + a ring hop); Rx and Tx unpinned, on other cores
    assert alts["pipelined"].mpps == pytest.approx(CLOCK / (2000 + HOP) / 1e6)
    # mix: 4 instances, each (2043 + lb) / 4 = 513.25, one per core; Rx lands beside one of them
    assert alts["mix"].scale == {"v.x": 4}
    assert alts["mix"].mpps == pytest.approx(CLOCK / ((2000 + HOP + LB) / 4 + RX) / 1e6)
    # replicas: 4 cores x clock / (rx + kernel + tx), no ring at all
    want = 4 * CLOCK / (RX + 2000 + TX) / 1e6
    assert alts["replicas"].mpps == pytest.approx(want) and alts["replicas"].cycles_per_packet == RX + 2000 + TX
    assert want / alts["mix"].mpps >= MARGIN  # 1.15x: the margin is met
    assert (arr.chosen.name, arr.chosen.replicas) == ("replicas", 4) and "1.15x" in arr.reason
    req = place(comp.after, "one", [Candidate(AgentRef("http://h:1", "h", (0, 1, 2, 3)), 0)], Traffic(),
                arrangement=arr.chosen)[0].request
    assert (req.mode, req.replicas, req.replica_cpus) == ("replicas", 4, [0, 1, 2, 3])
    assert [(n.cpu, n.cluster) for n in req.graph.nodes] == [(None, None)]


def test_a_light_unf_is_bound_by_rx_when_pipelined_so_replicas_win(tmp_path: Path) -> None:
    """A 10-cycle µNF on 4 cores: pipelined, the Rx process (100) bounds the rate, and no µNF
    instance can help it (no mix); replicas each read their own shard: 4 / 150 vs 1 / 100 per cycle."""
    bundle = one_unf(tmp_path, "MacSwapper")
    _, arr = arrange(bundle, compose(bundle), (0, 1, 2, 3), table({"MacSwapper": 10}))
    alts = by_name(arr.alternatives)
    assert alts["pipelined"].mpps == pytest.approx(CLOCK / RX / 1e6)  # each stage on its own core: Rx bounds
    assert alts["mix"].mpps is None and "does not raise the rate" in alts["mix"].why
    assert alts["replicas"].mpps == pytest.approx(4 * CLOCK / (RX + 10 + TX) / 1e6)
    assert arr.chosen.name == "replicas"


def test_a_parallel_branch_sync_graph_that_cannot_fuse_whole_stays_pipelined() -> None:
    bundle = load_sfc(EXAMPLES / "sfc-fig1a.yaml")  # the classifier forks to the load balancer: never a chain
    comp, arr = arrange(bundle, compose(bundle), tuple(range(8)), load_table())
    rep = by_name(arr.alternatives)["replicas"]
    assert rep.mpps is None and "does not fuse whole" in rep.why and "feeds" in rep.why
    assert arr.chosen.mode == "pipelined" and arr.chosen.name in ("pipelined", "mix")
    assert [r.kind for r in comp.rewrites].count("parallelize") == 1  # 8 cores: Branch/Sync kept
    with pytest.raises(PlacementError, match="mode replicas is not possible here: the graph does not fuse whole"):
        arrange(bundle, compose(bundle), tuple(range(8)), load_table(), mode="replicas")


def test_one_core_fuses_everything_into_one_replica() -> None:
    bundle = load_sfc(EXAMPLES / "sfc-fig11.yaml")
    comp, arr = arrange(bundle, compose(bundle), (0,), table({}, unknown=10.0))
    alts = by_name(arr.alternatives)
    # pipelined on 1 core: Rx, the 6 chained µNFs fused in one process, Tx, all on CPU 0
    unfs = 6 * 10 + 5 * FUSED
    assert alts["pipelined"].mpps == pytest.approx(CLOCK / (RX + (unfs + HOP) + (TX + HOP)) / 1e6)
    assert alts["replicas"].mpps == pytest.approx(CLOCK / (RX + unfs + TX) / 1e6)
    assert (arr.chosen.name, arr.chosen.replicas) == ("replicas", 1)
    assert "parallelize" not in [r.kind for r in comp.rewrites]  # the chain every replica runs
    req = place(comp.after, "fig11", [Candidate(AgentRef("http://h:1", "h", (0,)), 0)], Traffic(),
                arrangement=arr.chosen)[0].request
    assert (req.mode, req.replicas, req.replica_cpus) == ("replicas", 1, [0])


def test_the_mix_against_replicas_and_a_forced_pipelined(tmp_path: Path) -> None:
    """2 cores, a 600-cycle µNF: pipelined puts it alone on CPU 0 (643) and Rx + Tx on CPU 1 (183);
    the mix scales it to 2 instances ((643 + 10) / 2 = 326.5 each, Rx and Tx beside them: 426.5
    and 409.5; a third instance makes it worse); replicas: 2 / (100 + 600 + 40) per cycle, 1.15x
    the mix: past the margin, replicas. Asked for pipelined, the mix is the better of the two."""
    bundle = one_unf(tmp_path, "MacSwapper")
    _, arr = arrange(bundle, compose(bundle), (0, 1), table({"MacSwapper": 600}))
    alts = by_name(arr.alternatives)
    assert alts["mix"].mpps == pytest.approx(CLOCK / ((600 + HOP + LB) / 2 + RX) / 1e6)
    ratio = (2 * CLOCK / (RX + 600 + TX) / 1e6) / alts["mix"].mpps
    assert ratio == pytest.approx(1.1523, abs=1e-3) and arr.chosen.name == "replicas"
    forced = arrange(bundle, compose(bundle), (0, 1), table({"MacSwapper": 600}), mode="pipelined")[1]
    assert forced.chosen.name == "mix" and forced.chosen.scale == {"v.x": 2} and "asked for" in forced.reason


def test_replicas_refused_for_pinned_unfs_global_state_and_unknown_cpus(tmp_path: Path) -> None:
    pinned = one_unf(tmp_path / "a", "MacSwapper", placement={"cpu": 1})
    rep = by_name(arrange(pinned, compose(pinned), (0, 1), load_table())[1].alternatives)["replicas"]
    assert rep.mpps is None and "pin µNFs to CPUs (v.x on CPU 1)" in rep.why
    bundle = load_sfc(EXAMPLES / "sfc-fig11.yaml")
    u = bundle.types["CountUrl"]
    shared = dataclasses.replace(bundle, types={**bundle.types, "CountUrl": dataclasses.replace(
        u, descriptor=u.descriptor.model_copy(update={"global_state": True}))})
    _, arr = arrange(shared, compose(shared), (0, 1), load_table())
    assert "CountUrl keeps global state" in by_name(arr.alternatives)["replicas"].why
    assert arr.chosen.mode == "pipelined"
    _, arr = arrange(bundle, compose(bundle), None, load_table())
    assert arr.chosen.name == "pipelined" and "CPUs are unknown" in by_name(arr.alternatives)["replicas"].why
    _, arr = arrange(bundle, compose(bundle), None, load_table(), mode="replicas", replicas=3)
    assert (arr.chosen.mode, arr.chosen.replicas) == ("replicas", 3)


def test_the_mix_raises_the_autoscalers_ceiling() -> None:
    fig11 = compose(load_sfc(EXAMPLES / "sfc-fig11.yaml")).after
    mix = Alternative(name="mix", mode="pipelined", mpps=1.0, cycles_per_packet=1.0, bottleneck_cycles=1.0,
                      scale={"appfw.validate": 6}, why="")
    agent = AgentRef("http://h:1", "h", tuple(range(8)))
    req = place(fig11, "f", [Candidate(agent, 0)], Traffic(), arrangement=mix)[0].request
    assert req.mode == "pipelined" and req.autoscale.max_instances == 6 and req.autoscale.enabled


def test_cost_tables_from_a_file_or_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packaged = load_table()
    assert packaged.kernels["IPTtlDecrementer"] > 0 and packaged.machine["nproc"] >= 1 and "bench/nfs.py" in \
        packaged.command
    mine = tmp_path / "costs.json"
    mine.write_text(table({"MacSwapper": 7}).model_dump_json())
    monkeypatch.setenv("MICRONF_COST_TABLE", str(mine))
    assert load_table().kernels == {"MacSwapper": 7}
    doc = json.loads(mine.read_text())
    del doc["io"]["rx"]
    mine.write_text(json.dumps(doc))
    with pytest.raises(CostTableError, match=r"costs.json: io.rx: Field required"):
        load_table()


def test_the_orchestrator_sends_the_choice_to_the_agent(tmp_path: Path) -> None:
    agent = AgentRef(url="http://a:1", name="a", cpus=(0, 1))
    orch = Orchestrator(Store(tmp_path / "o.db"), [agent], connect=lambda _ref: FakeAgent(), costs=load_table())
    text, files = read_sfc_source(EXAMPLES / "sfc-fig11.yaml")
    try:
        auto = orch.plan(SFCCreate(sfc=text, files=files))
        req = auto.parts["http://a:1"]
        assert auto.arrangement.chosen.name == "replicas" and auto.arrangement.requested == "auto"
        assert (req.mode, req.replicas, req.replica_cpus) == ("replicas", 2, [0, 1])
        assert {(n.cpu, n.cluster) for n in req.graph.nodes} == {(None, None)}
        assert "parallelize" not in [r.kind for r in auto.composition.rewrites]
        assert {a.name for a in auto.arrangement.alternatives} == {"pipelined-fused", "mix", "replicas"}
        piped = orch.plan(SFCCreate(sfc=text, files=files, mode="pipelined")).parts["http://a:1"]
        assert (piped.mode, piped.replicas, piped.rx_cpu) == ("pipelined", 1, 0)
        assert {n.cpu for n in piped.graph.nodes} == {1}
        one = orch.plan(SFCCreate(sfc=text, files=files, mode="replicas", replicas=1)).parts["http://a:1"]
        assert (one.mode, one.replicas, one.replica_cpus) == ("replicas", 1, [0])
        with pytest.raises(InvalidSFCError, match="3 replicas for 2 CPUs: each replica runs on a core of its own"):
            orch.plan(SFCCreate(sfc=text, files=files, mode="replicas", replicas=3))
        info = orch.create(SFCCreate(sfc=text, files=files, name="fig11-r"))
        assert (info.mode, info.replicas, info.state) == ("replicas", 2, "running")
    finally:
        orch.close()


def test_branch_sync_costs_and_a_sync_join_is_not_scaled_out() -> None:
    """Fig. 11 on 8 CPUs keeps its parallel group (urls ‖ sizes, joined at appfw.validate). By hand,
    with every kernel 10 cycles but ValidateUrl 500: the 6 µNFs go to CPUs k*8//6 = 0, 1, 2, 4, 5,
    6, each a process reading one ring (+43); the join also pays `sync` (+20): validate = 563
    on CPU 6, the busiest. Rx (100) and Tx (83) take the free CPUs 3 and 7. The join cannot be
    scaled out (a Sync ingress), so no mix. Replicas run the chain composed without the group:
    100 + 5 x 10 + 500 + 5 x 14 + 40 = 760 cycles, 8 of them."""
    bundle = load_sfc(EXAMPLES / "sfc-fig11.yaml")
    comp, arr = arrange(bundle, compose(bundle), tuple(range(8)), table({"ValidateUrl": 500}, unknown=10.0))
    alts = by_name(arr.alternatives)
    assert alts["pipelined"].name == "pipelined" and alts["pipelined"].bottleneck == "CPU 6: appfw.validate 563"
    assert alts["pipelined"].mpps == pytest.approx(CLOCK / (500 + HOP + SYNC) / 1e6)
    assert alts["pipelined"].cycles_per_packet == pytest.approx(RX + 5 * (10 + HOP) + 500 + HOP + SYNC + TX + HOP)
    assert alts["mix"].mpps is None
    assert alts["replicas"].mpps == pytest.approx(8 * CLOCK / (RX + 5 * 10 + 500 + 5 * FUSED + TX) / 1e6)
    assert arr.chosen.name == "replicas" and "parallelize" not in [r.kind for r in comp.rewrites]
