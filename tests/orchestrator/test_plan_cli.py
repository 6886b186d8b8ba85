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

from .sfcfiles import EXAMPLES, write_files

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
