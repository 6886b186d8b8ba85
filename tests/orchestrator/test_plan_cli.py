"""``micronf plan`` and ``micronf schema`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import micronf.app.cli as cli
import micronf.app.render as render
from micronf.app.cli import control

from .sfcfiles import EXAMPLES, sfc, template, write_files

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide console, so table cells are not wrapped in the middle of a node name."""
    monkeypatch.setattr(control, "console", Console(width=400, force_terminal=False))


@pytest.mark.skipif(render.shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
def test_plan_prints_graphs_and_rewrites_and_draws_svgs(tmp_path: Path) -> None:
    res = runner.invoke(cli.app, ["plan", str(EXAMPLES / "sfc-fig11.yaml"), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "before: 9 µNFs" in out and "after: 6 µNFs" in out
    assert "3 remove, 0 consolidate, 1 parallelize" in out
    for removed in ("monitor.check", "appfw.check", "appfw.classify"):
        assert f"{removed} is a " in out  # the reason of its removal
    assert "Sync at appfw.validate" in out
    assert "exits: monitor.classify.other (appfw.other), out (appfw.web)" in out
    for stage in ("before", "after"):
        svg = (tmp_path / f"{stage}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
        assert "monitor.urls" in (tmp_path / f"{stage}.dot").read_text()
    assert "appfw.classify" in (tmp_path / "before.svg").read_text()
    assert "appfw.classify" not in (tmp_path / "after.svg").read_text()


def test_plan_without_graphviz_writes_dot_and_says_how(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render.shutil, "which", lambda _name: None)
    res = runner.invoke(cli.app, ["plan", str(EXAMPLES / "sfc-two-pools.yaml"), "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after.dot", "before.dot"]
    assert "apt-get install graphviz" in res.output
    assert "consolidate" in res.output and "'out' from appfw.classify to other-lb.balance" in res.output
    dot = (tmp_path / "after.dot").read_text()
    assert '"web-meter.sizes" -> "other-lb.balance" [label="out (from appfw.classify)"];' in dot


def test_plan_json_is_the_composition() -> None:
    res = runner.invoke(cli.app, ["plan", str(EXAMPLES / "sfc-fig11.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert [r["kind"] for r in doc["rewrites"]] == ["remove", "remove", "remove", "parallelize"]
    assert len(doc["after"]["spec"]["nodes"]) == 6


def test_plan_of_invalid_input_prints_the_error_without_traceback(tmp_path: Path) -> None:
    write_files(tmp_path, {"sfc.yaml": {"kind": "sfc", "name": "x", "vnfs": [{"name": "a", "template": "nope"}]}})
    res = runner.invoke(cli.app, ["plan", str(tmp_path / "sfc.yaml"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert f"error: {tmp_path}/sfc.yaml: vnfs[0].template: expected an imported template (there are none), " \
           "found 'nope'" in res.output
    assert "Traceback" not in res.output
    assert isinstance(res.exception, SystemExit)  # typer.Exit, not a crash
    assert not (tmp_path / "o").exists()


def test_schema_prints_and_writes(tmp_path: Path) -> None:
    res = runner.invoke(cli.app, ["schema"])
    assert res.exit_code == 0
    assert set(json.loads(res.output)) == {"unf-descriptor", "vnf-template", "sfc"}
    res = runner.invoke(cli.app, ["schema", "sfc"])
    assert json.loads(res.output)["title"] == "SFCRequest"
    res = runner.invoke(cli.app, ["schema", "--out", str(tmp_path)])
    assert res.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sfc.schema.json", "unf-descriptor.schema.json", "vnf-template.schema.json"]
    assert runner.invoke(cli.app, ["schema", "nope"]).exit_code == 2


def _costs(tmp_path: Path) -> Path:
    """A cost table where every kernel costs 10 cycles (none listed), clock 1 GHz."""
    path = tmp_path / "costs.json"
    path.write_text(json.dumps({
        "format": "micronf-cost-table/1", "clock_hz": 1e9, "kernels": {}, "unknown_kernel": 10,
        "io": {"rx": 100, "tx": 40, "ring_hop": 43, "fused_hop": 14, "lb": 10, "sync": 20}}))
    return path


def test_plan_shows_the_arrangement_its_alternatives_and_why(tmp_path: Path) -> None:
    """Fig. 11 on 2 CPUs, by hand: pipelined-fused puts Rx (100) and Tx (40 + 43 ring) on CPU 0 =
    183 and the 6 chained µNFs fused on CPU 1 (6 x 10 + 5 x 14 + 43 = 173): 1e9 / 183 = 5.46 Mpps,
    356 cycles of work per packet; replicas: 100 + 60 + 70 + 40 = 270 per packet on each of 2 cores,
    7.41 Mpps, 1.36x: replicas."""
    res = runner.invoke(cli.app, ["plan", str(EXAMPLES / "sfc-fig11.yaml"), "--cpus", "0-1",
                                  "--costs", str(_costs(tmp_path))])
    assert res.exit_code == 0, res.output
    rows = {line.split("│")[2].strip(): [c.strip() for c in line.split("│")[3:7]]
            for line in res.output.splitlines() if line.count("│") == 7 and "Mpps" not in line}
    assert rows == {"pipelined-fused": ["5.46", "356", "183", "2"], "mix": ["-", "-", "-", "-"],
                    "replicas x2": ["7.41", "270", "270", "2"]}
    assert "arrangement on CPUs 0, 1 (mode auto)" in res.output
    assert "  replicas: 2 run-to-completion copies" in res.output and "(composed without parallel groups)" in res.output
    assert "  mix: scaling out does not raise the rate" in res.output
    assert "chosen: replicas x2 (replicas predict 1.36x the best pipelined arrangement)" in res.output
    assert "before: 9 µNFs" in res.output  # the composition is printed as before


def test_plan_json_has_the_arrangement_and_modes_can_be_forced(tmp_path: Path) -> None:
    costs = str(_costs(tmp_path))
    res = runner.invoke(cli.app, ["plan", str(EXAMPLES / "sfc-fig11.yaml"), "--cpus", "0-1", "--costs", costs,
                                  "--json"])
    assert res.exit_code == 0, res.output
    arr = json.loads(res.output)["arrangement"]
    assert arr["chosen"]["name"] == "replicas" and arr["chosen"]["replicas"] == 2 and arr["cpus"] == [0, 1]
    assert {a["name"]: a["mpps"] and round(a["mpps"], 2) for a in arr["alternatives"]} == {
        "pipelined-fused": 5.46, "mix": None, "replicas": 7.41}
    res = runner.invoke(cli.app, ["plan", str(EXAMPLES / "sfc-fig11.yaml"), "--cpus", "0-1", "--costs", costs,
                                  "--mode", "pipelined", "--json"])
    assert json.loads(res.output)["arrangement"]["chosen"]["name"] == "pipelined-fused"
    res = runner.invoke(cli.app, ["plan", str(EXAMPLES / "sfc-fig1a.yaml"), "--mode", "replicas"])
    assert res.exit_code == 2 and "mode replicas is not possible here: the graph does not fuse whole" in res.output
    res = runner.invoke(cli.app, ["plan", str(EXAMPLES / "sfc-fig11.yaml"), "--mode", "fast"])
    assert res.exit_code == 2 and "expected one of auto, pipelined, replicas" in res.output


class _StartedError(Exception):
    """Raised by the stand-in for the step that starts processes."""


def test_run_takes_mode_and_replicas_to_the_live_request(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`micronf run --mode/--replicas` reach the deploy request the embedded agent would get."""
    from micronf.api.models import DeployRequest
    from micronf.app import run
    from micronf.app.cli import local
    from micronf.io.generator_spec import paper_traffic
    from micronf.orchestrator.costmodel import Alternative
    from micronf.orchestrator.models import Composition

    seen: list[DeployRequest] = []

    def fake(comp: Composition, _path: Path, _packets: int | None, _rate: float, _seconds: float | None,
             _quiet: bool, arrangement: Alternative | None = None) -> None:
        seen.append(run._live_request(comp, "x", paper_traffic(count=1), arrangement))
        raise _StartedError

    monkeypatch.setattr(local, "_run_live_shown", fake)
    for args in (["--mode", "replicas", "--replicas", "1"], ["--mode", "pipelined"]):
        res = runner.invoke(cli.app, ["--debug", "run", *args])
        assert isinstance(res.exception, _StartedError), res.output
    replicas, piped = seen
    assert (replicas.mode, replicas.replicas) == ("replicas", 1)
    assert (piped.mode, piped.replicas) == ("pipelined", 1)
    res = runner.invoke(cli.app, ["run", str(EXAMPLES / "sfc-fig1a.yaml"), "--mode", "replicas"])
    assert res.exit_code == 2 and "the graph does not fuse whole" in res.output
    pcap = tmp_path / "in.pcap"
    pcap.write_bytes(b"")
    res = runner.invoke(cli.app, ["run", "--pcap", str(pcap), "--out", str(tmp_path / "o"), "--mode", "replicas"])
    assert res.exit_code == 2 and "the offline form (--pcap) runs the graph in this process" in res.output


def test_deploy_sends_mode_and_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[object] = []

    def call(_base: str, method: str, path: str, body: object = None, _token: object = None) -> object:
        sent.append(body)
        return {"name": "fig11", "graph": {"nodes": []}, "rewrites": [], "agents": ["http://a:1"], "state": "running",
                "mode": "replicas", "replicas": 2}

    monkeypatch.setattr(control, "_orch_call", call)
    res = runner.invoke(cli.app, ["deploy", str(EXAMPLES / "sfc-fig11.yaml"), "--mode", "replicas", "--replicas", "2"])
    assert res.exit_code == 0 and "(0 µNFs, 0 rewrites, 2 replicas) on http://a:1: running" in res.output
    res = runner.invoke(cli.app, ["deploy", str(EXAMPLES / "sfc-fig11.yaml")])
    assert res.exit_code == 0, res.output
    assert [(b["mode"], b["replicas"]) for b in sent if isinstance(b, dict)] == [("replicas", 2), ("auto", None)]


def test_plan_of_a_graph_that_cannot_run_here_still_prints_the_composition(tmp_path: Path) -> None:
    """A µNF type known only from a descriptor file composes but cannot be wired: no arrangement."""
    write_files(tmp_path, {
        "templates/zip.yaml": {"kind": "unf-descriptor", "type": "HttpCompressor",
                               "descriptor": {"payload": "ReadWrite"}},
        "templates/wan.yaml": template("wan", [("check", "CheckIPHeader", {}), ("zip", "HttpCompressor", {})],
                                       [("check", None, "zip")], {"out": ["zip"]}),
        "sfc.yaml": sfc([{"name": "w", "template": "wan"}], [])})
    res = runner.invoke(cli.app, ["plan", str(tmp_path / "sfc.yaml")])
    assert res.exit_code == 0, res.output
    assert "after: 2 µNFs" in res.output
    assert "no arrangement: the composed graph cannot run: node 'w.zip'" in " ".join(res.output.split())
    res = runner.invoke(cli.app, ["plan", str(tmp_path / "sfc.yaml"), "--json"])
    assert json.loads(res.output)["arrangement"].startswith("the composed graph cannot run")
