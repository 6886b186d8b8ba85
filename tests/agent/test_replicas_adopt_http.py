"""A replicated deployment adopted by the next agent (one replica died while no agent ran), and one
deployed, observed, scraped and removed through a real ``micronf agent`` over HTTP."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from micronf.agent.core import Agent
from micronf.api.client import AgentClient, AgentClientError
from micronf.api.models import DeployRequest
from micronf.api.statedir import agent_token_file, read_token
from micronf.dataplane.segment import list_segments
from tests.agent._agent_process import agent_process
from tests.agent.crashcount import wait_drained
from tests.agent.test_agent_restart import start_agent
from tests.procs import marked, running, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _body(name: str, total: int, rate_pps: int) -> dict[str, object]:
    return {"name": name, "mode": "replicas", "replicas": 2,
            "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader"}, {"name": "swap", "type": "MacSwapper"}],
                      "edges": [{"src": "chk", "label": "out", "dst": "swap"}], "entry": "chk"},
            "rx": {"kind": "generator", "count": total, "rate_pps": rate_pps, "flows": 64},
            "outputs": {"out": {"backend": {"kind": "null"}}}, "autoscale": {"enabled": False}}


def test_the_next_agent_adopts_every_replica_and_restarts_the_one_that_died(
        shm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICRONF_SHM_DIR", str(shm_dir))
    monkeypatch.setenv("MICRONF_STATE_DIR", str(tmp_path / "state"))  # the first agent's token
    total = 100_000
    first, url = start_agent(shm_dir, tmp_path / "agent.log")
    try:
        client = AgentClient(url, token=read_token(agent_token_file()))
        info = client.deploy(DeployRequest.model_validate(_body("adopt-rep", total, 20_000)))
        pids = [p.pid for p in info.processes]
        wait_for(lambda: min(r.tx["out"]["frames"] for r in client.stats("adopt-rep").replicas) > 1_000, 60,
                 "traffic through both replicas")
        first.proc.kill()  # the agent dies; the replicas go on
        first.proc.wait()
        os.kill(pids[1], signal.SIGKILL)  # and one replica too: no one restarts it, no one maps its segment
        wait_for(lambda: not running(pids[1]), 5, "the replica to die")
        assert running(pids[0])
        port = url.rsplit(":", 1)[1]
        with Agent(agent_id=port, detached=True, adopt=True, monitor=False, data_dir=tmp_path) as agent:
            (adopted,) = agent.deployments()
            assert adopted.mode == "replicas" and adopted.segments == info.segments
            assert adopted.processes[0].pid == pids[0] and adopted.processes[0].alive
            assert not adopted.processes[1].alive
            agent.tick()  # supervision: the dead replica is restarted from its segment
            (event,) = agent.stats("adopt-rep").restarts
            assert event.replica == 1 and all(p.alive for p in agent.deployment("adopt-rep").processes)
            s = wait_drained(agent, "adopt-rep")
            assert s.rx["frames"] == total and s.conservation.ok and s.conservation.in_flight == 0
            assert total == s.tx["out"]["frames"] + sum(s.drops.values())
            now = [p.pid for p in agent.deployment("adopt-rep").processes]
            agent.remove("adopt-rep")
        assert first.segments() == [] and not [p for p in [*pids, *now] if running(p)]
        assert marked(first.mark) == []
    finally:
        first.kill_all()


def test_deploy_replicas_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICRONF_STATE_DIR", str(tmp_path))  # the agent writes its token here
    total = 40_000
    with agent_process() as (url, _port):
        client = AgentClient(url, token=read_token(agent_token_file()))
        info = client.deploy(DeployRequest.model_validate(_body("http-rep", total, 100_000)))
        assert info.mode == "replicas" and len(info.processes) == 2 and all(p.alive for p in info.processes)
        deadline = time.monotonic() + 60
        while True:
            s = client.stats("http-rep")
            if s.rx["frames"] == total and s.conservation.in_flight == 0:
                break
            assert time.monotonic() < deadline, s.conservation
            time.sleep(0.1)
        assert s.conservation.ok and s.tx["out"]["frames"] == total - sum(s.drops.values())
        assert [r.index for r in s.replicas] == [0, 1] and all(r.rx["frames"] > 0 for r in s.replicas)
        samples = [smp for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text) for smp in f.samples
                   if smp.labels.get("deployment") == "http-rep"]
        per_replica = {smp.labels["replica"]: smp.value for smp in samples
                       if smp.name == "micronf_replica_tx_service_total" and smp.labels["counter"] == "frames"}
        assert per_replica == {str(r.index): r.tx["out"]["frames"] for r in s.replicas}
        swap_rx = {smp.value for smp in samples if smp.name == "micronf_nf_rx_packets_total"
                   and smp.labels["node"] == "swap"}
        assert swap_rx == {next(n for n in s.nodes if n.name == "swap").runtime["rx"]}  # the sum, one series
        client.remove("http-rep")
        assert not [i.name for i in list_segments() if i.name.endswith(("http-rep.r0", "http-rep.r1"))]
        fork = {"nodes": [{"name": "a", "type": "MacSwapper"}, {"name": "b", "type": "MacSwapper"},
                          {"name": "c", "type": "MacSwapper"}],
                "edges": [{"src": "a", "label": "out", "dst": "b"}, {"src": "c", "label": "out", "dst": "b"}],
                "entry": "a"}
        with pytest.raises(AgentClientError) as bad:
            client.deploy(DeployRequest.model_validate({**_body("http-rep", total, 100_000), "graph": fork}))
        assert bad.value.status == 400 and "fed by a, c" in bad.value.detail
