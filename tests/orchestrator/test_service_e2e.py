"""End to end with real processes: an agent and the orchestrator (``micronf agent`` and ``micronf
orchestrator`` subprocesses on free ports, a temporary database), ``micronf deploy`` of the paper's
Fig. 11 SFC with generated traffic, ``status``, an orchestrator restart (the deployment is still
known and reconciled), ``undeploy``; afterwards no µNF process and no shared-memory segment is left.

Expected counts come from the traffic itself, parsed with scapy: every HTTP request whose URL is
one of the generator's SQL-injection URLs is dropped by the application firewall, every other
one leaves by ``appfw.web``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from typer.testing import CliRunner

from micronf.api.statedir import agent_token_file, bearer, orchestrator_token_file, read_token
from micronf.app.cli import app
from micronf.dataplane.segment import list_segments
from micronf.io.generator import GeneratorRx
from micronf.io.generator_spec import PAPER_SQLI_URLS, paper_traffic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
COUNT = 20_000
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _serve(args: list[str], port: int, log: Path) -> Iterator[str]:
    """Run ``micronf ARGS`` until its /health answers; SIGTERM (then SIGKILL) it at the end."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "micronf", *args, "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"micronf {args[0]} exited: {log.read_text()[-2000:]}"
            try:
                if httpx.get(url + "/health", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"micronf {args[0]} did not come up: {log.read_text()[-2000:]}"
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _expected_web() -> int:
    """Packets that pass: the generated requests whose URL is not an SQL injection (via scapy)."""
    rx = GeneratorRx(paper_traffic(count=COUNT))
    benign = total = 0
    while total < COUNT:
        b = rx.recv(4096)
        for i in range(b.n):
            frame = bytes(b.data[b.off[i]: b.off[i] + b.length[i]])
            pkt = Ether(frame)
            assert pkt[TCP].dport == 80
            url = bytes(pkt[Raw].load).split(b" ")[1].decode()
            benign += url not in PAPER_SQLI_URLS
        total += b.n
    return benign


def _check_counts(s: dict[str, Any], want_web: int) -> None:
    """Every packet is accounted for: passed (benign), dropped as SQL injection, or lost to a full
    ring on this loaded machine (a capacity drop, counted by reason). Without capacity drops the
    outputs are exact."""
    assert s["conservation"]["ok"]
    web, other = s["outputs"]["appfw.web"], s["outputs"]["appfw.other"]
    sqli = s["drops"].get("appfw.validate.sqli", 0)
    capacity = sum(v for k, v in s["drops"].items() if k.endswith((".full", ".entry_full")))
    assert set(s["drops"]) <= {"appfw.validate.sqli"} | {k for k in s["drops"] if k.endswith("full")}
    assert other == 0 and web <= want_web and sqli <= COUNT - want_web
    assert web + sqli + capacity == COUNT
    if capacity == 0:
        assert (web, sqli) == (want_web, COUNT - want_web)


def _cli(*args: str) -> str:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return res.output


def _wait_drained(orch: str, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        s = httpx.get(f"{orch}/v1/sfcs/fig11/stats", timeout=30, headers=_auth("orchestrator")).json()
        entered = sum(g["rx"]["frames"] for g in s.get("graphs", {}).values())
        if entered == COUNT and s["conservation"]["in_flight"] == 0:
            return s
        assert time.monotonic() < deadline, f"traffic did not drain: {s}"
        time.sleep(0.2)


def test_deploy_status_restart_undeploy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # agent, orchestrator and CLI share a state directory: the tokens need no setup by hand
    monkeypatch.setenv("MICRONF_STATE_DIR", str(tmp_path / "state"))
    agent_port, orch_port = _free_port(), _free_port()
    db = tmp_path / "orch.db"
    orch_args = ["orchestrator", "--db", str(db), "--agent", f"http://127.0.0.1:{agent_port}",
                 "--reconcile-interval", "0.5", "--log-level", "warning"]
    rx = paper_traffic(count=COUNT, rate_pps=10_000).model_dump(mode="json")
    want_web = _expected_web()
    assert 0 < want_web < COUNT
    with _serve(["agent", "--log-level", "warning"], agent_port, tmp_path / "agent.log") as agent:
        with _serve(orch_args, orch_port, tmp_path / "orch1.log") as orch:
            # an unreachable orchestrator is a clear error, not a traceback
            res = CliRunner().invoke(app, ["list", "--orchestrator", f"http://127.0.0.1:{_free_port()}"])
            assert res.exit_code == 1 and "cannot reach the orchestrator" in res.output
            out = _cli("deploy", str(EXAMPLES / "sfc-fig11.yaml"), "--orchestrator", orch, "--rx",
                       json.dumps(rx))
            assert "deployed fig11" in out and "running" in out
            info = httpx.get(f"{agent}/v1/deployments/fig11", timeout=30, headers=_auth("agent")).json()
            pids = [p["pid"] for p in info["processes"]]
            segment = info["segment"]
            s = _wait_drained(orch)
            _check_counts(s, want_web)
            out = " ".join(_cli("status", "fig11", "--orchestrator", orch, "--interval", "0.2").split())
            for unf in ("firewall.check", "monitor.classify", "appfw.validate", "conservation ok"):
                assert unf in out
            assert "p99" in out
        # the orchestrator is gone; the deployment keeps running on the agent
        assert httpx.get(f"{agent}/v1/deployments/fig11", timeout=30, headers=_auth("agent")).is_success
        with _serve(orch_args, orch_port, tmp_path / "orch2.log") as orch:
            got = httpx.get(f"{orch}/v1/sfcs/fig11", timeout=30, headers=_auth("orchestrator")).json()
            assert got["state"] == "running" and got["agents"] == [f"http://127.0.0.1:{agent_port}"]
            assert "fig11" in _cli("list", "--orchestrator", orch)
            again = httpx.get(f"{agent}/v1/deployments/fig11", timeout=30, headers=_auth("agent")).json()
            assert again["created_at"] == info["created_at"]  # reconciled, not redeployed
            assert _wait_drained(orch)["outputs"] == s["outputs"]
            out = _cli("undeploy", "fig11", "--orchestrator", orch)
            assert "undeployed fig11" in out
            assert httpx.get(f"{orch}/v1/sfcs", timeout=30, headers=_auth("orchestrator")).json() == []
        assert httpx.get(f"{agent}/v1/deployments", timeout=30, headers=_auth("agent")).json() == []
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if _alive(p)], "µNF processes outlived the undeploy"
    assert segment not in {i.name for i in list_segments()}


def _auth(server: str) -> dict[str, str]:
    """The bearer header for the agent or the orchestrator (their token files in the state dir)."""
    return bearer(read_token(agent_token_file() if server == "agent" else orchestrator_token_file()))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
