"""`micronf agent` as the real product: a process serving the real core over HTTP, driven by AgentClient."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from micronf.api.client import AgentClient, AgentClientError
from micronf.api.models import DeployRequest
from micronf.api.statedir import agent_token_file, bearer, read_token
from micronf.dataplane.segment import list_segments
from tests.agent._agent_process import agent_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def agent_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("MICRONF_STATE_DIR", str(tmp_path))  # the agent writes its token here
    with agent_process() as (url, _port):
        yield url


def test_deploy_observe_scrape_remove_over_http(agent_url: str) -> None:
    token = read_token(agent_token_file())
    client = AgentClient(agent_url, token=token)
    total = 20_000
    body = {"name": "http-e2e",
            "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader"}, {"name": "swap", "type": "MacSwapper"}],
                      "edges": [{"src": "chk", "label": "out", "dst": "swap"}], "entry": "chk"},
            "rx": {"kind": "generator", "count": total, "rate_pps": 50_000, "flows": 32},
            "outputs": {"out": {"backend": {"kind": "null"}}}}
    info = client.deploy(DeployRequest.model_validate(body))
    assert [p.nodes for p in info.processes][:2] == [["chk"], ["swap"]] and all(p.alive for p in info.processes)
    with pytest.raises(AgentClientError) as dup:
        client.deploy(DeployRequest.model_validate(body))
    assert dup.value.status == 409 and "already running" in dup.value.detail
    deadline = time.monotonic() + 60
    while True:
        s = client.stats("http-e2e")
        if s.rx["frames"] == total and s.conservation.in_flight == 0:
            break
        assert time.monotonic() < deadline, s.conservation
        time.sleep(0.1)
    # every frame is out or dropped with a reason (the Rx side's, e.g. entry_full on a busy machine, included)
    assert s.conservation.ok and s.tx["out"]["frames"] == s.rx["frames"] - sum(s.drops.values())
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{agent_url}/metrics").text)}
    rx = {(smp.labels.get("node"), smp.name): smp.value for f in families.values() for smp in f.samples
          if smp.labels.get("deployment") == "http-e2e"}
    assert rx[("swap", "micronf_nf_rx_packets_total")] == next(n for n in s.nodes if n.name == "swap").runtime["rx"]
    client.remove("http-e2e")
    with pytest.raises(AgentClientError) as gone:
        client.stats("http-e2e")
    assert gone.value.status == 404
    bad = httpx.post(f"{agent_url}/v1/deployments", json={**body, "name": "Bad Name"}, headers=bearer(token))
    assert bad.status_code == 422 and "name" in bad.json()["detail"]
    assert not [seg for seg in list_segments() if "http-e2e" in seg.name]
    assert client.health().deployments == 0
