"""An agent crash does not stop traffic, and the next agent adopts the running graph.

Real ``micronf agent`` processes over HTTP, a real graph with generator traffic; the graph's
processes are found through ``/proc`` (``tests.procs``), its Tx counter read straight from the
segment while no agent runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from micronf.agent.core import Agent
from micronf.api.errors import DeploymentExistsError
from micronf.api.models import DeployRequest
from micronf.dataplane.segment import Segment, segment_users
from tests.procs import Owner, cmdlines, marked, running, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TOTAL = 400_000  # 100 s at 4 kpps: still flowing while no agent runs, even when a cold-cache CI machine
# answers the deploy request only tens of seconds after the traffic started (seen once: all of 200,000 frames at
# 5 kpps had gone out before the first agent was killed)
BODY = {"name": "adopt",
        "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader"}, {"name": "swap", "type": "MacSwapper"}],
                  "edges": [{"src": "chk", "label": "out", "dst": "swap"}], "entry": "chk"},
        "rx": {"kind": "generator", "count": TOTAL, "rate_pps": 4_000, "flows": 32},
        "outputs": {"out": {"backend": {"kind": "null"}}}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_agent(shm_dir: Path, log: Path, *args: str, mark: str | None = None,
                port: int | None = None) -> tuple[Owner, str]:
    """A ``micronf agent`` on ``port`` (default: a free one; the next agent of the same graphs
    listens where the last one did: its identity, and so the segments it adopts, follow the port)."""
    port = port or _free_port()
    agent = Owner(shm_dir, "agent", "--port", str(port), *args, log=log, mark=mark)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert agent.proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 120, "the agent to serve")
    return agent, url


def tx_frames(shm_dir: Path, segment: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """Frames the Tx service sent, read from the segment (no agent needed)."""
    monkeypatch.setenv("MICRONF_SHM_DIR", str(shm_dir))
    seg = Segment.attach(segment)
    try:
        return int(seg.view("tx.stats", np.int64)[0])  # exit 0, counter "frames"
    finally:
        seg.close()


@pytest.fixture
def agents() -> Iterator[list[Owner]]:
    started: list[Owner] = []
    yield started
    for agent in started:
        agent.kill_all()


def test_graph_survives_kill9_of_its_agent_and_the_next_agent_adopts_it(
        shm_dir: Path, tmp_path: Path, agents: list[Owner], monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "agents.log"
    monkeypatch.setenv("MICRONF_STATE_DIR", str(tmp_path / "state"))  # the agents' token and data directory
    first, url = start_agent(shm_dir, log)
    port = int(url.rsplit(":", 1)[1])
    agents.append(first)
    token = (tmp_path / "state" / "agent" / "token").read_text().strip()
    http = httpx.Client(headers={"Authorization": f"Bearer {token}"})
    reply = http.post(f"{url}/v1/deployments", json=BODY, timeout=180)
    assert reply.status_code == 201, reply.text
    info = reply.json()
    segment = info["segment"]
    graph = {p["pid"] for p in info["processes"]}
    assert len(graph) == 4 and all(p["alive"] for p in info["processes"])  # chk, swap, Rx, Tx
    wait_for(lambda: tx_frames(shm_dir, segment, monkeypatch) > 5_000, 60, "traffic")
    zygotes = set(marked(first.mark)) - graph - {first.proc.pid}
    assert len(zygotes) == 1 and "micronf.runtime.zygote" in cmdlines(list(zygotes))[0]

    first.proc.kill()
    first.proc.wait()
    wait_for(lambda: not zygotes & set(marked(first.mark)), 2, "the zygote to exit with its agent")
    assert graph <= set(marked(first.mark)), "a graph process died with its agent"
    before = tx_frames(shm_dir, segment, monkeypatch)
    time.sleep(0.5)
    after = tx_frames(shm_dir, segment, monkeypatch)
    assert after > before, "no traffic while no agent runs"
    print(f"no agent: Tx {before} -> {after} frames in 0.5 s")

    second, url = start_agent(shm_dir, log, "--keep-graphs", mark=first.mark, port=port)
    agents.append(second)
    listed: list[dict[str, Any]] = http.get(f"{url}/v1/deployments", timeout=60).json()
    assert [d["name"] for d in listed] == ["adopt"] and listed[0]["segment"] == segment
    assert {p["pid"] for p in listed[0]["processes"]} == graph and all(p["alive"] for p in listed[0]["processes"])

    # supervision resumed: a µNF killed now is restarted by the new agent (from its new zygote)
    swap = next(p["pid"] for p in listed[0]["processes"] if p["nodes"] == ["swap"])
    os.kill(swap, signal.SIGKILL)
    wait_for(lambda: http.get(f"{url}/v1/deployments/adopt/stats", timeout=60).json()["restarts"], 30, "a restart")

    def drained() -> dict[str, Any] | None:
        s: dict[str, Any] = http.get(f"{url}/v1/deployments/adopt/stats", timeout=60).json()
        return s if s["rx"]["frames"] == TOTAL and s["conservation"]["in_flight"] == 0 else None

    wait_for(drained, 180, "every generated packet to be accounted for")
    s = drained()
    assert s is not None
    c = s["conservation"]
    assert c["ok"] and c["rx"] == c["tx"] + c["dropped"], c
    # in == out + dropped[reason], the Rx side's drops (e.g. entry_full) included
    assert s["tx"]["out"]["frames"] + sum(s["drops"].values()) == s["rx"]["frames"] == TOTAL, s["drops"]
    assert [e["nodes"] for e in s["restarts"]] == [["swap"]]

    # an upgrade: the agent stops (SIGTERM, --keep-graphs), the graph stays, the next agent adopts it
    graph = {p["pid"] for p in http.get(f"{url}/v1/deployments/adopt", timeout=60).json()["processes"]}
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(timeout=60) == 0
    assert graph <= set(marked(first.mark)) and second.segments()
    third, url = start_agent(shm_dir, log, mark=first.mark, port=port)
    agents.append(third)
    [again] = http.get(f"{url}/v1/deployments", timeout=60).json()
    assert {p["pid"] for p in again["processes"]} == graph and all(p["alive"] for p in again["processes"])
    restarts = http.get(f"{url}/v1/deployments/adopt/stats", timeout=60).json()["restarts"]
    assert [e["nodes"] for e in restarts] == [["swap"]]  # the history came along, in the segment

    assert http.delete(f"{url}/v1/deployments/adopt", timeout=60).status_code == 204
    assert set(marked(first.mark)) == {third.proc.pid}, cmdlines(marked(first.mark))
    assert third.segments() == []
    third.proc.send_signal(signal.SIGTERM)
    assert third.proc.wait(timeout=60) == 0


LEFTOVER = """
import os, signal, sys, time
from micronf.dataplane.segment import Segment
seg = Segment.create(sys.argv[1], {"data": 4096})
if sys.argv[2] == "mapped" and os.fork() == 0:  # the child keeps the mapping, the creator dies
    print("ready", flush=True)
    time.sleep(120)
    os._exit(0)
if sys.argv[2] != "mapped":
    print("ready", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _leftover(name: str, *, mapped: bool) -> None:
    """A dead creator's segment ``name`` (a killed agent's); with ``mapped``, a process still maps it."""
    proc = subprocess.Popen([sys.executable, "-c", LEFTOVER, name, "mapped" if mapped else "-"],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    assert proc.wait() == -signal.SIGKILL


def test_a_dead_agents_leftover_segment_never_blocks_a_redeploy(shm_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICRONF_SHM_DIR", str(shm_dir))
    body = {**BODY, "rx": {"kind": "generator", "count": 1_000, "rate_pps": 10_000}}
    req = DeployRequest.model_validate(body)
    _leftover("mnf-t1-adopt", mapped=False)  # left by an agent of id t1
    [path] = list(shm_dir.glob("micronf-*"))
    with Agent(agent_id="t1") as agent:
        info = agent.deploy(req)  # the leftover was removed, a fresh segment made
        assert info.segment == "mnf-t1-adopt" and all(p.alive for p in info.processes)
        agent.remove("adopt")
    assert not path.exists()
    _leftover("mnf-t1-adopt", mapped=True)
    holder = next(u for u in segment_users([path])[path])
    try:
        with Agent(agent_id="t1") as agent, \
                pytest.raises(DeploymentExistsError, match=f"still used by processes {holder.pid}"):
            agent.deploy(req)
        assert path.exists()
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        path.unlink()


def test_a_graph_that_cannot_be_adopted_is_stopped_and_removed(shm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead agent's segment that live processes map but that holds no deployment the new agent
    can read back: its processes are stopped and the segment removed, never left running unowned."""
    monkeypatch.setenv("MICRONF_SHM_DIR", str(shm_dir))
    _leftover("mnf-t2-unreadable", mapped=True)
    [path] = list(shm_dir.glob("micronf-*"))
    [holder] = segment_users([path])[path]
    _leftover("mnf-t3-unreadable", mapped=True)  # another agent's (id t3): not t2's to adopt or stop
    [other] = set(shm_dir.glob("micronf-*")) - {path}
    [bystander] = segment_users([other])[other]
    try:
        with Agent(agent_id="t2", detached=True, adopt=True, monitor=False) as agent:
            assert agent.deployments() == []
        assert not path.exists()
        wait_for(lambda: not running(holder.pid), 5, "the process mapping it to be stopped")
        assert other.exists() and running(bystander.pid)
    finally:
        os.kill(bystander.pid, signal.SIGKILL)
        other.unlink()


def test_a_dead_zygote_is_replaced_at_once_so_the_next_restart_is_quick(shm_dir: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICRONF_SHM_DIR", str(shm_dir))
    req = DeployRequest.model_validate({**BODY, "rx": {"kind": "generator", "count": 40_000, "rate_pps": 10_000}})
    with Agent(detached=True) as agent:
        info = agent.deploy(req)
        runtime = agent._get("adopt").runtime
        assert runtime.zygote is not None
        old = runtime.zygote._proc.pid
        os.kill(old, signal.SIGKILL)
        wait_for(lambda: runtime.zygote is not None and runtime.zygote._proc.pid != old and runtime.zygote.alive,
                 60, "a new zygote")
        assert all(p.alive for p in agent.deployment("adopt").processes)  # the graph did not notice
        swap = next(p.pid for p in info.processes if p.nodes == ["swap"])
        os.kill(swap, signal.SIGKILL)
        wait_for(lambda: agent.stats("adopt").restarts, 30, "the restart")
        assert agent.stats("adopt").restarts[0].downtime_ms < 1_000  # forked from the warm new zygote
        agent.remove("adopt")
