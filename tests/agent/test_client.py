"""AgentClient against a real uvicorn server (real HTTP on 127.0.0.1) serving a fake agent core,
its retry policy, and the `micronf agent` command as a real process stopped by a signal."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from micronf.agent.server import create_app
from micronf.api.client import AgentClient, AgentClientError
from micronf.api.errors import AgentError, InvalidDeploymentError
from micronf.api.models import DeployRequest
from micronf.api.statedir import read_token_if_any
from tests.agent._fake_agent import RUN_FAKE_AGENT, FakeAgent, graph_stats, request_body, serving

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


class UnavailableError(AgentError):
    kind = "busy"
    status = 503


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent()


@pytest.fixture
def url(agent: FakeAgent) -> Iterator[str]:
    """A real uvicorn server on a free port of 127.0.0.1, in a thread, serving ``agent``."""
    with serving(create_app(agent, token=None)) as base:
        yield base


def client(url: str, retries: int = 3) -> AgentClient:
    return AgentClient(url, timeout=10, retries=retries, backoff=0.01)


def test_round_trip(url: str, agent: FakeAgent) -> None:
    req = DeployRequest.model_validate(request_body("web"))
    with client(url) as c:
        info = c.deploy(req)
        assert info == agent.infos["web"]
        assert c.deployments() == [info]
        assert c.deployment("web") == info
        assert c.stats("web") == graph_stats("web")
        assert c.health().deployments == 1
        c.remove("web")
        assert c.deployments() == []
    assert [m for m, _ in agent.calls] == ["deploy", "deployments", "deployment", "stats", "health", "remove",
                                           "deployments"]


def test_errors_carry_status_kind_and_detail(url: str, agent: FakeAgent) -> None:
    with client(url) as c:
        with pytest.raises(AgentClientError) as err:
            c.stats("ghost")
        assert (err.value.status, err.value.kind, err.value.detail) == (404, "not_found", "no deployment named 'ghost'")
        c.deploy(DeployRequest.model_validate(request_body("web")))
        with pytest.raises(AgentClientError) as err:
            c.deploy(DeployRequest.model_validate(request_body("web")))
        assert (err.value.status, err.value.kind) == (409, "exists")
    assert agent.count("stats") == 1 and agent.count("deploy") == 2, "4xx are not retried"


def test_retries_a_read_on_503(url: str, agent: FakeAgent) -> None:
    agent.fail["health"] = UnavailableError("agent is starting")
    agent.fail_times["health"] = 2
    with client(url, retries=3) as c:
        assert c.health().status == "ok"
    assert agent.count("health") == 3


def test_gives_up_after_the_retries(url: str, agent: FakeAgent) -> None:
    agent.fail["deployments"] = UnavailableError("agent is shutting down")
    with client(url, retries=2) as c, pytest.raises(AgentClientError) as err:
        c.deployments()
    assert (err.value.status, err.value.kind, err.value.detail) == (503, "busy", "agent is shutting down")
    assert agent.count("deployments") == 3


def test_a_deploy_the_agent_received_is_never_resent(url: str, agent: FakeAgent) -> None:
    req = DeployRequest.model_validate(request_body("web"))
    for exc, status in ((InvalidDeploymentError("unknown exit 'oops' in outputs"), 400),
                        (UnavailableError("try later"), 503)):
        agent.fail["deploy"] = exc
        agent.calls.clear()
        with client(url, retries=3) as c, pytest.raises(AgentClientError) as err:
            c.deploy(req)
        assert err.value.status == status and err.value.detail == str(exc)
        assert agent.count("deploy") == 1


def _counting_transport(exc: Exception) -> tuple[httpx.MockTransport, list[str]]:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.method)
        raise exc

    return httpx.MockTransport(handler), sent


@pytest.mark.parametrize(("exc", "deploy_attempts"), [
    (httpx.ConnectError("connection refused"), 3),  # never reached the agent: safe to resend
    (httpx.ReadTimeout("no reply in time"), 1),  # the agent may be deploying it right now
])
def test_transport_errors(exc: Exception, deploy_attempts: int) -> None:
    transport, sent = _counting_transport(exc)
    with AgentClient("http://agent", retries=2, backoff=0, transport=transport) as c:
        with pytest.raises(AgentClientError) as err:
            c.health()
        assert (err.value.status, err.value.kind) == (None, "unreachable")
        assert sent == ["GET"] * 3
        sent.clear()
        with pytest.raises(AgentClientError):
            c.deploy(DeployRequest.model_validate(request_body("web")))
        assert sent == ["POST"] * deploy_attempts


def test_unreachable_agent() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with client(f"http://127.0.0.1:{port}", retries=1) as c, pytest.raises(AgentClientError) as err:
        c.health()
    assert err.value.status is None and err.value.kind == "unreachable"


def test_a_reply_that_is_not_an_error_reply() -> None:
    transport = httpx.MockTransport(lambda _r: httpx.Response(502, text="<html>bad gateway</html>"))
    with AgentClient("http://agent", retries=0, transport=transport) as c, pytest.raises(AgentClientError) as err:
        c.deployments()
    assert (err.value.status, err.value.kind, err.value.detail) == (502, "http_error", "<html>bad gateway</html>")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="retries"):
        AgentClient("http://agent", retries=-1)


# -- the command ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_agent_command_removes_deployments_on_signal(tmp_path: Path, sig: signal.Signals) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "agent.json"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "FAKE_AGENT_LOG": str(log),
           "MICRONF_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-c", RUN_FAKE_AGENT, "agent", "--port", str(port),
                             "--log-level", "warning"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    token = lambda: read_token_if_any(tmp_path / "state" / "agent" / "token")  # noqa: E731 - written at start
    try:
        with AgentClient(f"http://127.0.0.1:{port}", timeout=10, retries=60, backoff=0.1, max_backoff=0.5,
                         token=token) as c:
            assert c.health().status == "ok"
            c.deploy(DeployRequest.model_validate(request_body("web")))
            c.deploy(DeployRequest.model_validate(request_body("api")))
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out.decode()
    done = json.loads(log.read_text())
    assert done["left"] == []
    assert sorted(arg for method, arg in done["calls"] if method == "remove") == ["api", "web"]


def test_agent_command_help() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-m", "micronf", "agent", "--help"], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for option in ("--host", "--port", "--log-level", "8771", "127.0.0.1", "/metrics"):
        assert option in out
