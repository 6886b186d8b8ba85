"""Schemathesis over both OpenAPI documents (issue 12): no 500, every response matches its schema,
with the token and without it (then 401 everywhere but /health).

Bounded for CI: a few derandomized examples per operation (``MICRONF_FUZZ_EXAMPLES`` for more).
The agent side never starts a process: the agent app's core is :class:`DryAgent`, which validates
a deploy request as the real agent does (capture files confined to a data directory, the graph
planned, its shared memory checked against the free space) and then records it as the fake does;
the orchestrator's agents are DryAgents too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from micronf.agent.deployment import Deployment
from micronf.agent.files import confine
from micronf.agent.server import create_app as agent_app
from micronf.api.models import DeploymentInfo, DeployRequest
from micronf.orchestrator.api import create_app as orchestrator_app
from micronf.orchestrator.placement import AgentRef
from micronf.orchestrator.service import Orchestrator
from micronf.orchestrator.store import Store
from tests.agent._fake_agent import FakeAgent

pytestmark = pytest.mark.timeout(300)
TOKEN = "fuzz-token"
# 12 examples per operation in CI (~30 s for all); MICRONF_FUZZ_EXAMPLES=500 for a deeper run by hand
FUZZ = settings(max_examples=int(os.environ.get("MICRONF_FUZZ_EXAMPLES", "12")), derandomize=True, deadline=None,
                database=None, suppress_health_check=list(HealthCheck))


class DryAgent(FakeAgent):
    """A fake agent core that validates deploy requests like the real one, starting nothing."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = data_dir

    def deploy(self, req: DeployRequest) -> DeploymentInfo:
        with confine(req, self.data_dir) as confined:
            Deployment(confined, agent_id="fuzz")  # plans the graph and checks its memory; start() is what is skipped
        return super().deploy(req)


_DATA = Path(tempfile.mkdtemp(prefix="micronf-fuzz-"))  # the schemas are built at import, before fixtures


def _agent_app() -> FastAPI:
    return agent_app(DryAgent(_DATA / "agent"), token=TOKEN)


def _orchestrator_app() -> FastAPI:
    agents = [AgentRef(url="http://a:1", name="a", cpus=(0, 1))]
    fakes = {a.url: DryAgent(_DATA / "orch-agent") for a in agents}
    orch = Orchestrator(Store(_DATA / "orch.db"), agents, connect=lambda ref: fakes[ref.url])
    return orchestrator_app(orch, token=TOKEN)


def _schema(app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Bearer {TOKEN}"})


AGENT = _schema(_agent_app())
ORCHESTRATOR = _schema(_orchestrator_app())
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# A schema-valid request may still be one that cannot be deployed (an unknown µNF type, an entry that
# is no node, wiring the µNF does not have): the APIs answer those 400/422 by design, which the
# "schema-valid data is accepted" check would call a failure. Every other check runs.
EXCLUDED = [schemathesis.checks.positive_data_acceptance]


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    shutil.rmtree(_DATA, ignore_errors=True)


@AGENT.parametrize()
@FUZZ
def test_agent_api_with_the_token(case: Any) -> None:
    case.call_and_validate(headers=AUTH, excluded_checks=EXCLUDED)


@AGENT.parametrize()
@FUZZ
def test_agent_api_without_the_token(case: Any) -> None:
    response = case.call_and_validate(headers={"Authorization": "Bearer wrong"}, excluded_checks=EXCLUDED)
    # the ASGI test client is not a loopback address: /metrics wants the token from it too
    assert (response.status_code == 401) == (case.path != "/health"), response.text


@ORCHESTRATOR.parametrize()
@FUZZ
def test_orchestrator_api_with_the_token(case: Any) -> None:
    case.call_and_validate(headers=AUTH, excluded_checks=EXCLUDED)


@ORCHESTRATOR.parametrize()
@FUZZ
def test_orchestrator_api_without_the_token(case: Any) -> None:
    response = case.call_and_validate(headers={"Authorization": "Bearer wrong"}, excluded_checks=EXCLUDED)
    assert (response.status_code == 401) == (case.path != "/health"), response.text
