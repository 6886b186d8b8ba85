"""Two `micronf agent` processes on one machine deploy graphs of the same name (issue 11 §4)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from micronf.agent.core import Agent
from micronf.agent.identity import agent_identity
from micronf.api.client import AgentClient
from micronf.api.models import DeployRequest
from micronf.api.statedir import read_token
from micronf.dataplane.segment import list_segments
from tests.agent._agent_process import agent_process

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]




def test_identity_follows_the_listening_address() -> None:
    assert agent_identity("127.0.0.1", 8771) == agent_identity("0.0.0.0", 8771) == "8771"
    assert agent_identity("127.0.0.2", 8771) != agent_identity("127.0.0.3", 8771)
    assert agent_identity("127.0.0.2", 8771).startswith("8771")
    with pytest.raises(ValueError, match="agent id"):
        Agent(monitor=False, agent_id="No/Slash")


def test_two_agents_on_one_machine_deploy_the_same_name(tmp_path: Path) -> None:
    total = 5_000
    body = {"name": "same-name",
            "graph": {"nodes": [{"name": "swap", "type": "MacSwapper"}], "edges": [], "entry": "swap"},
            "rx": {"kind": "generator", "count": total, "rate_pps": 20_000, "flows": 8},
            "outputs": {"out": {"backend": {"kind": "null"}}}}
    req = DeployRequest.model_validate(body)
    with ExitStack() as stack:
        tokens = [tmp_path / f"token{i}" for i in range(2)]
        agents = [stack.enter_context(agent_process("--token-file", str(t))) for t in tokens]
        clients = [AgentClient(url, token=read_token(t)) for (url, _), t in zip(agents, tokens, strict=True)]
        infos = [c.deploy(req) for c in clients]  # the second one used to fail: 500 SegmentError
        assert infos[0].segment != infos[1].segment
        assert [i.segment for i in infos] == [f"mnf-{port}-same-name" for _, port in agents]
        assert {i.segment for i in infos} <= {s.name for s in list_segments()}
        for c in clients:
            deadline = time.monotonic() + 60
            while True:
                s = c.stats("same-name")
                if s.rx["frames"] == total and s.conservation.in_flight == 0:
                    break
                assert time.monotonic() < deadline, s.conservation
                time.sleep(0.1)
            assert s.conservation.ok and s.tx["out"]["frames"] == total
        clients[0].remove("same-name")  # removing one leaves the other running
        assert [d.name for d in clients[1].deployments()] == ["same-name"]
        assert infos[1].segment in {s.name for s in list_segments()}
        clients[1].remove("same-name")
    assert not [s for s in list_segments() if "same-name" in s.name]
