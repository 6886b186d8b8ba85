"""The orchestrator API is safe to expose (issue 12): a bearer token on every route but /health,
bounded bodies, /health `degraded` naming the agents that do not answer, each agent's own token
sent to it, and the client commands' token."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import typer
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from micronf.agent.server import create_app as agent_app
from micronf.api.client import AgentClientError
from micronf.api.statedir import agent_token_file, load_token, orchestrator_token_file, read_token_if_any
from micronf.app.cli import app as cli_app
from micronf.app.cli.control import _client_token
from micronf.app.cli.serve import _agent_token_files
from micronf.orchestrator.api import create_app
from micronf.orchestrator.placement import AgentRef
from micronf.orchestrator.service import PROBE_TIMEOUT_S, Orchestrator, http_agent
from micronf.orchestrator.store import Store
from tests.agent._fake_agent import FakeAgent, serving
from tests.orchestrator.test_api import AGENTS, UNREACHABLE, fig11_body

pytestmark = pytest.mark.timeout(60)
TOKEN = "orchestrator-token"


@pytest.fixture
def fakes() -> dict[str, FakeAgent]:
    return {a.url: FakeAgent() for a in AGENTS}


@pytest.fixture
def http(tmp_path: Path, fakes: dict[str, FakeAgent]) -> Iterator[TestClient]:
    orch = Orchestrator(Store(tmp_path / "orch.db"), AGENTS, connect=lambda ref: fakes[ref.url])
    yield TestClient(create_app(orch, token=TOKEN))
    orch.close()


@pytest.mark.parametrize(("method", "url"), [("POST", "/v1/sfcs"), ("GET", "/v1/sfcs"), ("GET", "/v1/sfcs/x"),
                                             ("DELETE", "/v1/sfcs/x"), ("GET", "/v1/sfcs/x/stats"),
                                             ("POST", "/v1/plan")])
@pytest.mark.parametrize("auth", [None, "Bearer nope"], ids=["no token", "wrong token"])
def test_every_route_but_health_needs_the_token(http: TestClient, fakes: dict[str, FakeAgent], method: str, url: str,
                                               auth: str | None) -> None:
    headers = {} if auth is None else {"Authorization": auth}
    r = http.request(method, url, headers=headers, json=fig11_body() if method == "POST" else None)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized", r.text
    assert all(f.calls == [] for f in fakes.values())


def test_with_the_token_it_works_and_bodies_are_bounded(http: TestClient) -> None:
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert http.post("/v1/sfcs", json=fig11_body(), headers=ok).status_code == 201
    assert http.get("/v1/sfcs", headers=ok).json()[0]["name"] == "fig11"
    body = b"{" + b" " * (2 << 20) + b"}"
    r = http.post("/v1/plan", content=body, headers={**ok, "content-type": "application/json"})
    assert r.status_code == 413 and len(r.content) < 500
    r = http.post("/v1/plan", json={"sfc": "x" * 500_000}, headers=ok)
    assert r.status_code == 400 and len(r.content) < 5000, len(r.content)


def test_health_is_open_and_degraded_when_an_agent_does_not_answer(http: TestClient,
                                                                   fakes: dict[str, FakeAgent]) -> None:
    h = http.get("/health").json()
    assert (h["status"], h["unreachable"]) == ("ok", [])
    fakes["http://b:2"].fail["health"] = UNREACHABLE
    h = http.get("/health")
    assert h.status_code == 200
    assert (h.json()["status"], h.json()["unreachable"]) == ("degraded", ["b"])
    assert [a["reachable"] for a in h.json()["agents"]] == [True, False]


def test_health_is_degraded_within_one_probe_when_agents_hang(tmp_path: Path) -> None:
    """Agents that accept connections and never answer (hung, not refusing): `/health` names them
    within about one probe's timeout, however many there are (probed at once, no retry), where it
    took 3 x 120 s for each."""
    fake = FakeAgent()
    with contextlib.ExitStack() as stack:
        refs = [AgentRef(url="http://ok:1", name="ok", cpus=(0,))]
        for i in range(3):
            listener = stack.enter_context(socket.socket())
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)  # never accepted: the kernel completes the handshake, nobody reads
            refs.append(AgentRef(url=f"http://127.0.0.1:{listener.getsockname()[1]}", name=f"hung{i}", cpus=(0,)))
        orch = Orchestrator(Store(tmp_path / "orch.db"), refs,
                            connect=lambda ref: fake if ref.name == "ok" else http_agent(ref))
        stack.callback(orch.close)
        http = TestClient(create_app(orch, token=TOKEN))
        t0 = time.monotonic()
        h = http.get("/health")
        took = time.monotonic() - t0
    assert h.status_code == 200
    assert (h.json()["status"], h.json()["unreachable"]) == ("degraded", ["hung0", "hung1", "hung2"])
    assert [a["reachable"] for a in h.json()["agents"]] == [True, False, False, False]
    assert PROBE_TIMEOUT_S <= took < 2 * PROBE_TIMEOUT_S + 0.5, took  # one after another: >= 3 probes


def test_the_orchestrator_sends_each_agent_its_token(tmp_path: Path) -> None:
    """As `micronf orchestrator` connects: the token file of each agent, read at each request."""
    agent = FakeAgent()
    with serving(agent_app(agent, token="agent-token")) as url:
        ref = AgentRef(url=url, name="a", cpus=(0,))
        files = _agent_token_files([ref], [f"a={tmp_path / 'a.token'}"])
        client = http_agent(ref, token=partial(read_token_if_any, files[url]))
        with pytest.raises(AgentClientError) as err:  # the agent's token file is not there yet
            client.deployments()
        assert err.value.status == 401
        (tmp_path / "a.token").write_text("agent-token\n")
        assert client.deployments() == [] and agent.calls == [("deployments", "")]
        (tmp_path / "a.token").write_text("an old token\n")
        with pytest.raises(AgentClientError, match="401 unauthorized"):
            client.deployments()
    refs = [AgentRef(url="http://x:1", name="x", cpus=(0,)), AgentRef(url="http://y:1", name="y", cpus=(0,))]
    assert _agent_token_files(refs, []) == {r.url: agent_token_file() for r in refs}
    assert _agent_token_files(refs, ["/t", "http://y:1=/y"]) == {"http://x:1": Path("/t"), "http://y:1": Path("/y")}
    with pytest.raises(typer.BadParameter, match="no --agent named 'z'"):
        _agent_token_files(refs, ["z=/t"])


def test_the_client_commands_find_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MICRONF_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("MICRONF_TOKEN", raising=False)
    assert _client_token(None) is None  # no orchestrator ever ran here: send none (the 401 says why)
    local = load_token(orchestrator_token_file())  # what `micronf orchestrator` creates at first start
    assert _client_token(None) == local
    monkeypatch.setenv("MICRONF_TOKEN", "from-env")
    assert _client_token(None) == "from-env"
    (tmp_path / "f").write_text("from-file\n")
    assert _client_token(tmp_path / "f") == "from-file"
    res = CliRunner().invoke(cli_app, ["list", "--token-file", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "cannot read the token file" in res.output


@pytest.mark.parametrize("imports", ["/etc/passwd", "/etc/*", "../../../../etc/passwd", "../*", "sub/../../x"])
def test_sfc_imports_cannot_read_the_orchestrators_files(http: TestClient, imports: str) -> None:
    sfc = f"kind: sfc\nname: x\nimports: ['{imports}']\nvnfs: [{{name: a, template: edge-firewall}}]\n"
    r = http.post("/v1/plan", json={"sfc": sfc}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("request.sfc.yaml: imports[0]: expected a ")
    assert "root:" not in r.text


@pytest.mark.parametrize("body", [
    {"sfc": "kind: sfc", "files": {"a\u0000b": "x"}},
    {"sfc": "kind: sfc", "files": {"a" * 300: "x"}},
    {"sfc": "kind: sfc", "files": {"a": "x", "a/b": "y"}},
    {"sfc": "x: " + "[" * 5000},
    b'{"sfc": "x", "files": {"a": "\\udcff"}}',
    b"[" * 100_000,
], ids=["NUL in a name", "name too long", "file and directory", "YAML nested deep", "lone surrogate", "JSON deep"])
def test_odd_sfc_requests_are_400s_not_500s(http: TestClient, body: dict[str, object] | bytes) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    r = (http.post("/v1/plan", content=body, headers=headers) if isinstance(body, bytes)
         else http.post("/v1/plan", json=body, headers=headers))
    assert r.status_code == 400 and r.json()["error"] in ("invalid_sfc", "bad_json"), r.text
