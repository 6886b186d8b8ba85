"""The ``micronf`` command line with ordinary mistakes (issue 10 §4): every error is one line on
stderr with exit 2 (usage) or 1 (run time), stdout stays the command's output (JSON under
``--json``), nothing is started or written before the arguments are checked, tracebacks only with
``--debug``; ``--version``; readable config types; every drop reason explained.

Most tests run the real entry point (``python -m micronf``) as a subprocess; the few that must stop
the command at a chosen point use typer's CliRunner (stdout and stderr kept apart) with the step
that would start processes replaced by one that fails the test.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from pydantic import Field
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap
from typer.testing import CliRunner

import micronf
from micronf.app import cli
from micronf.app.cli import local
from micronf.runtime.catalog import SERVICE_DROPS, catalog, explain_drop, type_text

ROOT = Path(__file__).resolve().parents[2]
SFC = ROOT / "examples" / "sfc-fig11.yaml"
pytestmark = pytest.mark.timeout(120)


def _micronf(*args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "micronf", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False, cwd=cwd)


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _runner() -> CliRunner:
    return CliRunner()


class StartedError(Exception):
    """Raised by the stand-in for the step that starts processes: shows the checks before it passed."""


def _no_start(*_a: Any, **_k: Any) -> Any:
    raise StartedError


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "in.pcap"
    wrpcap(str(path), [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP() / UDP()] * 3)
    return path


# -- --version, --debug, errors ---------------------------------------------------------------------
def test_version_option_and_command() -> None:
    for args in (["--version"], ["version"]):
        proc = _micronf(*args)
        assert proc.returncode == 0 and proc.stdout == f"micronf {micronf.__version__}\n" and proc.stderr == ""


def test_no_command_prints_the_help_not_an_error() -> None:
    for args in ([], ["shm"]):
        proc = _micronf(*args)
        assert proc.returncode == 2 and "Usage:" in proc.stdout + proc.stderr and "error" not in proc.stderr


@pytest.mark.parametrize("args", [
    ["run", "/nonexistent/sfc.yaml"],
    ["run", "--packets", "0"],
    ["run", "--rate", "fast"],
    ["no-such-command"],
    ["plan"],
    ["nfs", "NoSuchNF"],
    ["schema", "no-such-kind"],
    ["chain", "MacSwapper -> NoSuchNF", "--pcap", "{pcap}", "--out", "{tmp}/o"],
    ["chain", "MacSwapper ->", "--pcap", "{pcap}", "--out", "{tmp}/o"],
    ["run", "--pcap", "{pcap}"],  # the offline form needs --out too
    ["run", "--json", "--pcap", "{pcap}"],
    ["plan", "--json", "{tmp}/missing.yaml"],
])
def test_usage_errors_are_one_line_on_stderr_with_exit_2(args: list[str], capture: Path, tmp_path: Path) -> None:
    proc = _micronf(*(a.format(pcap=capture, tmp=tmp_path) for a in args))
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""  # under --json too: stdout holds JSON or nothing
    _one_error_line(proc.stderr)


def test_unexpected_error_is_one_line_and_the_traceback_needs_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[Any]:
        raise RuntimeError("the catalog\nis broken")

    monkeypatch.setattr("micronf.runtime.catalog.catalog", broken)
    res = _runner().invoke(cli.app, ["nfs", "--json"])
    assert res.exit_code == 1 and res.stdout == ""
    line = _one_error_line(res.stderr)
    assert "RuntimeError: the catalog is broken" in line and "--debug" in line
    res = _runner().invoke(cli.app, ["--debug", "nfs", "--json"])
    assert isinstance(res.exception, RuntimeError) and res.exit_code == 1  # raised: Python prints the traceback


def test_runtime_failure_is_one_line_with_exit_1() -> None:
    proc = _micronf("list", "--orchestrator", "http://127.0.0.1:9")  # nothing listens on port 9
    assert proc.returncode == 1 and proc.stdout == ""
    assert "cannot reach the orchestrator" in _one_error_line(proc.stderr)


# -- captures and --out --------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["chain", "MacSwapper"], ["run", str(SFC)]])
@pytest.mark.parametrize("kind", ["header only", "one truncated record"])
def test_capture_without_a_complete_packet_is_one_line(command: list[str], kind: str, tmp_path: Path) -> None:
    pcap = tmp_path / "in.pcap"
    wrpcap(str(pcap), [Ether() / IP() / UDP()] if kind != "header only" else [])
    if kind != "header only":
        pcap.write_bytes(pcap.read_bytes()[:-5])
    proc = _micronf(*command, "--pcap", str(pcap), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and proc.stdout.count("error") == 0
    assert "no complete packet" in _one_error_line(proc.stderr)
    assert not (tmp_path / "out").exists()


def test_unreadable_capture_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "dir.pcap").mkdir()
    proc = _micronf("chain", "MacSwapper", "--pcap", str(tmp_path / "dir.pcap"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and proc.stdout == ""
    _one_error_line(proc.stderr)
    stub = tmp_path / "in.pcap"
    stub.write_bytes(b"\xd4\xc3\xb2\xa1")  # a pcap magic and nothing else: not a capture
    proc = _micronf("chain", "MacSwapper", "--pcap", str(stub), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and str(stub) in _one_error_line(proc.stderr)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [["chain", "MacSwapper"], ["run", str(SFC)]])
def test_bad_out_is_refused_before_anything_starts(command: list[str], capture: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("micronf.app.offline.run_offline", _no_start)
    (tmp_path / "afile").write_text("x")
    for out, why in ((tmp_path / "afile", "file"), (tmp_path / "afile" / "sub", "Not a directory"),
                     (Path("/proc/micronf-no-such-dir/out"), "cannot write")):
        res = _runner().invoke(cli.app, [*command, "--pcap", str(capture), "--out", str(out)])
        assert res.exit_code == 2, (out, res.output)
        assert why in _one_error_line(res.stderr)


def test_out_holding_an_earlier_run_is_refused_and_force_removes_only_its_files(
        capture: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("micronf.app.offline.run_offline", _no_start)
    out = tmp_path / "out"
    out.mkdir()
    # an earlier run of another chain: its manifest names its files
    (out / local.MANIFEST).write_text(json.dumps({"files": ["IPTtlDecrementer.expired.pcap", "out.pcap"]}))
    for name in ("IPTtlDecrementer.expired.pcap", "out.pcap", "MacSwapper.runt.pcap", "notes.txt", "mine.pcap"):
        (out / name).write_text(name)
    args = ["chain", "MacSwapper", "--pcap", str(capture), "--out", str(out)]
    res = _runner().invoke(cli.app, args)
    assert res.exit_code == 2 and "--force" in _one_error_line(res.stderr)
    assert len(list(out.iterdir())) == 6  # nothing touched
    res = _runner().invoke(cli.app, ["--debug", *args, "--force"])
    assert isinstance(res.exception, StartedError)  # the checks passed, the runner would start now
    assert sorted(p.name for p in out.iterdir()) == [local.MANIFEST, "mine.pcap", "notes.txt"]
    files = json.loads((out / local.MANIFEST).read_text())["files"]
    assert files == ["out.pcap", "MacSwapper.runt.pcap", "rx.oversize.pcap"]


def test_force_never_overwrites_the_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("micronf.app.offline.run_offline", _no_start)
    wrpcap(str(tmp_path / "out.pcap"), [Ether() / IP() / UDP()])
    res = _runner().invoke(cli.app, ["chain", "MacSwapper", "--pcap", str(tmp_path / "out.pcap"),
                                     "--out", str(tmp_path), "--force"])
    assert res.exit_code == 2 and "overwrite the input" in _one_error_line(res.stderr)
    assert (tmp_path / "out.pcap").stat().st_size > 24


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_chain_rerun_into_the_same_out(capture: Path, tmp_path: Path) -> None:
    """End to end: real processes write the pcaps; a second run needs --force and leaves one set."""
    out = tmp_path / "out"
    (tmp_path / "out").mkdir()
    (out / "keep.txt").write_text("mine")
    first = _micronf("chain", "IPTtlDecrementer", "--pcap", str(capture), "--out", str(out), timeout=240)
    assert first.returncode == 0, first.stderr
    assert (out / "expired.pcap").exists() and (out / "IPTtlDecrementer.bad_header.pcap").exists()
    again = _micronf("chain", "MacSwapper", "--pcap", str(capture), "--out", str(out), timeout=60)
    assert again.returncode == 2 and "--force" in _one_error_line(again.stderr)
    forced = _micronf("chain", "MacSwapper", "--pcap", str(capture), "--out", str(out), "--force", timeout=240)
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["keep.txt", local.MANIFEST, "out.pcap", "MacSwapper.runt.pcap", "rx.oversize.pcap"])


# -- plan ------------------------------------------------------------------------------------------------
def test_plan_writes_nothing_without_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = _runner().invoke(cli.app, ["plan", str(SFC)])
    assert res.exit_code == 0, res.output
    assert list(tmp_path.iterdir()) == []
    res = _runner().invoke(cli.app, ["plan", str(SFC), "--out", "drawings"])
    assert res.exit_code == 0, res.output
    assert {p.stem for p in (tmp_path / "drawings").iterdir()} == {"before", "after"}
    (tmp_path / "afile").write_text("x")
    res = _runner().invoke(cli.app, ["plan", str(SFC), "--out", "afile/d"])
    assert res.exit_code == 2 and "--out" in _one_error_line(res.stderr)


# -- nfs: types and drop reasons --------------------------------------------------------------------
def test_config_types_read_as_a_user_reads_them() -> None:
    types = {(e.name, f.name): f.type for e in catalog() for f in e.config}
    assert types[("HttpClassifier", "ports")] == "list of int 0..65535"
    assert types[("PacketSizeCounter", "bounds")] == "list of int 1..65535, at least 1"
    assert types[("BusyLoop", "cycles")] == "int 0..10000000"
    assert types[("BusyLoop", "mode")] == "one of spin, sleep"
    assert types[("CheckIPHeader", "bad_src")] == "list of IPv4 address"
    assert not [t for t in types.values() if re.search(r"Annotated|FieldInfo|typing|<class", t)]
    assert type_text(Annotated[int, Field(gt=0)] | None) == "int > 0 or null"
    assert type_text(Annotated[str, Field(min_length=1, max_length=20)]) == "str (1..20 characters)"
    assert type_text(Annotated[list[ipaddress.IPv4Network], Field(max_length=4)]) == "list of IPv4 network, at most 4"
    assert type_text(Literal["a", "b"]) == "one of a, b"
    assert type_text(dict[str, int]) == "mapping of str to int"


def test_nfs_prints_readable_types_and_explains_drops() -> None:
    res = _runner().invoke(cli.app, ["nfs"])
    assert res.exit_code == 0 and "FieldInfo" not in res.stdout and "Annotated" not in res.stdout
    text = " ".join(res.stdout.split())  # the table wraps: compare word sequences
    assert "list of int 0..65535" in text
    assert "sqli: requests whose URL matches a signature." in text
    for reason, meaning in SERVICE_DROPS.items():
        assert f"{reason} {' '.join(meaning.split())}" in text, reason
    entries = {e["name"]: e for e in json.loads(_runner().invoke(cli.app, ["nfs", "--json"]).stdout)}
    assert entries["ValidateUrl"]["drop_explanations"] == {"sqli": "requests whose URL matches a signature."}


def test_every_drop_reason_has_an_explanation_in_the_catalog_and_the_docs() -> None:
    library = [e for e in catalog() if e.module.startswith("micronf.nfs.")]
    docs = " ".join((ROOT / "docs" / "runtime.md").read_text(encoding="utf-8").split())
    for e in library:  # docs/runtime.md has a row per (type, reason), with the docstring's words
        assert set(e.drop_explanations) == set(e.drop_reasons), e.name
        for reason, meaning in e.drop_explanations.items():
            assert meaning, (e.name, reason)
            assert f"| {e.name} | `{reason}` | {' '.join(meaning.split())} |" in docs, (e.name, reason)
    for reason, meaning in SERVICE_DROPS.items():
        assert f"| `{reason}` | {meaning} |" in docs, reason


def test_explain_drop_reads_every_kind_of_drop_name() -> None:
    types = {"appfw.validate": "ValidateUrl", "firewall.check": "CheckIPHeader"}
    assert explain_drop("appfw.validate.sqli", types) == "requests whose URL matches a signature."
    assert explain_drop("firewall.check.bad_checksum", types).startswith("the header (options included)")
    assert explain_drop("@rx.entry_full", types) == SERVICE_DROPS["entry_full"]
    assert explain_drop("appfw.validate.full", types) == SERVICE_DROPS["full"]
    assert explain_drop("monitor.urls/monitor.sizes.lost_in_crash", types) == SERVICE_DROPS["lost_in_crash"]
    assert explain_drop("(freed inside the graph)", types) == SERVICE_DROPS["(freed inside the graph)"]
    assert explain_drop("x.no_such_reason", types) == ""


# -- run: --seconds, draining, the rate ------------------------------------------------------------------
def test_summary_explains_each_drop_and_rates_only_processed_packets() -> None:
    from rich.console import Console

    from micronf.app.run import RunSummary, drop_meanings, load, print_summary

    comp, path = load(SFC, live=False)
    dropped = {"@rx.entry_full": 300, "appfw.validate.sqli": 200, "appfw.validate.full": 5}
    s = RunSummary(mode="live", sfc=comp.sfc, file=str(path), unfs_before=9, unfs_after=6, rewrites=[], processes=1,
                   packets_in=1505, outputs={"appfw.web": 1000, "appfw.other": 0}, exits=[], dropped=dropped,
                   drop_meanings=drop_meanings(comp, dropped), in_flight=0, processed=1205, seconds=2.0,
                   mpps=1205 / 2.0 / 1e6, latency=None, conservation_ok=True)
    console = Console(record=True, width=400)
    print_summary(console, s)
    text = " ".join(console.export_text().split())
    assert "requests whose URL matches a signature." in text
    assert " ".join(SERVICE_DROPS["entry_full"].split()) in text and " ".join(SERVICE_DROPS["full"].split()) in text
    assert "0.001 Mpps (1,205 packets processed by the graph in 2.00 s; the 300 dropped at Rx are not counted)" in text
    assert "1,505 in == 1,000 out + 505 dropped: ok" in text



@pytest.mark.parametrize(("args", "count"), [([], 1_000_000), (["--seconds", "180"], None),
                                               (["--packets", "7", "--seconds", "2"], 7)])
def test_seconds_alone_runs_without_a_packet_limit(args: list[str], count: int | None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(_comp: Any, _path: Path, packets: int | None, _rate: float, seconds: float | None,
             _quiet: bool, arrangement: Any = None) -> Any:
        seen.update(packets=packets, seconds=seconds)
        raise StartedError

    monkeypatch.setattr(local, "_run_live_shown", fake)
    res = _runner().invoke(cli.app, ["--debug", "run", *args])
    assert isinstance(res.exception, StartedError)
    assert seen["packets"] == count


def _check_live_summary(s: dict[str, Any]) -> None:
    """Conservation checked, and exact: in == out + dropped, nothing in flight; the rate counts only
    the packets the graph processed; every drop explained."""
    assert s["conservation_ok"] is True and s["in_flight"] == 0
    dropped = sum(s["dropped"].values())
    assert s["packets_in"] == sum(s["outputs"].values()) + dropped
    at_rx = sum(n for k, n in s["dropped"].items() if k.startswith("@rx."))
    assert s["processed"] == s["packets_in"] - at_rx
    assert s["mpps"] == pytest.approx(s["processed"] / s["seconds"] / 1e6)
    assert set(s["drop_meanings"]) == set(s["dropped"]) and all(s["drop_meanings"].values())


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_live_run_stopped_by_time_drains_and_checks_conservation() -> None:
    proc = _micronf("run", "--seconds", "2", "--rate", "300000", "--json", timeout=360)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    s = json.loads(proc.stdout)
    assert not s["interrupted"] and s["seconds"] >= 1.5 and s["packets_in"] > 0
    _check_live_summary(s)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_live_run_stopped_by_sigint_drains_and_checks_conservation() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "micronf", "run", "--seconds", "300", "--rate", "50000", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while not list(Path("/dev/shm").glob(f"micronf-*-{proc.pid}*")):  # the deployment's segment
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stderr + stdout
    s = json.loads(stdout)
    assert s["interrupted"]
    _check_live_summary(s)


def test_bench_ring_runs_the_chain_through_the_runtime_and_accounts_for_every_packet() -> None:
    """``micronf bench-ring``: K forwarding µNFs started by the runtime, this process as source and
    sink; after the drain every stage saw every packet and nothing is missing."""
    res = _runner().invoke(cli.app, ["bench-ring", "--stages", "2", "--seconds", "0.3"])
    assert res.exit_code == 0, res.output
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in res.output.splitlines()
            if line.count("│") == 3}
    fed = int(rows["packets fed (source)"].replace(",", ""))
    assert fed > 0 and rows["packets delivered (sink)"] == rows["packets fed (source)"]
    assert rows["every stage saw every packet"] == "yes" and rows["freed inside the graph"] == "0"
    res = _runner().invoke(cli.app, ["bench-ring", "--policy", "idle"])
    assert res.exit_code == 2 and "must be one of other, fifo, rr" in res.output
