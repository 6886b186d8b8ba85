"""The agent's HTTP layer over a fake agent core: routes, status codes, the error shape, the lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from micronf.agent.server import create_app, stop_all
from micronf.api.errors import AgentError, DeploymentFailedError, DeploymentNotFoundError, InvalidDeploymentError
from micronf.api.models import DeploymentInfo, DeployRequest, GraphStats
from tests.agent._fake_agent import FakeAgent, graph_stats, request_body

pytestmark = pytest.mark.timeout(60)


async def _send(app: FastAPI, method: str, url: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as c:
        return await c.request(method, url, **kw)


def call(app: FastAPI, method: str, url: str, **kw: Any) -> httpx.Response:
    """One request to the app in-process (no sockets), the endpoint running in the threadpool."""
    return anyio.run(lambda: _send(app, method, url, **kw))


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent()


@pytest.fixture
def app(agent: FakeAgent) -> FastAPI:
    return create_app(agent, token=None)


def test_deploy_list_get_stats_remove(app: FastAPI, agent: FakeAgent) -> None:
    body = request_body("web")
    r = call(app, "POST", "/v1/deployments", json=body)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/v1/deployments/web"
    assert DeploymentInfo.model_validate(r.json()) == agent.infos["web"]
    assert agent.calls == [("deploy", "web")]

    listed = call(app, "GET", "/v1/deployments")
    assert listed.status_code == 200
    assert [DeploymentInfo.model_validate(d) for d in listed.json()] == [agent.infos["web"]]
    got = call(app, "GET", "/v1/deployments/web")
    assert DeploymentInfo.model_validate(got.json()) == agent.infos["web"]
    stats = call(app, "GET", "/v1/deployments/web/stats")
    assert stats.status_code == 200
    assert GraphStats.model_validate(stats.json()) == graph_stats("web")

    gone = call(app, "DELETE", "/v1/deployments/web")
    assert gone.status_code == 204
    assert gone.content == b""
    assert "web" not in agent.infos
    assert call(app, "GET", "/v1/deployments/web").status_code == 404


def test_the_agent_gets_the_validated_request(app: FastAPI) -> None:
    seen: list[DeployRequest] = []

    class Recording(FakeAgent):
        def deploy(self, req: DeployRequest) -> DeploymentInfo:
            seen.append(req)
            return super().deploy(req)

    body = request_body("web")
    assert call(create_app(Recording(), token=None), "POST", "/v1/deployments", json=body).status_code == 201
    assert seen == [DeployRequest.model_validate(body)]
    assert seen[0].rules[0].dport == "53" and seen[0].graph.name == "web"


def test_health(app: FastAPI) -> None:
    call(app, "POST", "/v1/deployments", json=request_body("web"))
    r = call(app, "GET", "/health")
    assert r.status_code == 200
    # the fake's deployment has 2 processes, the second one dead
    assert r.json() == {"status": "ok", "version": "test", "uptime_s": 12.5, "deployments": 1,
                        "processes": 2, "processes_alive": 1}


def _without(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda b: b.pop(key)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set body[a][b]... (integer parts index lists) to value."""
    def edit(body: dict[str, Any]) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target: Any = body
        for p in parents:
            target = target[p]
        target[last] = value
    return edit


def _drop_node_type(body: dict[str, Any]) -> None:
    del body["graph"]["nodes"][1]["type"]


BAD_BODIES = [
    ("missing field", _without("graph"), "graph: Field required"),
    ("extra field", _set("colour", "blue"), "colour: Extra inputs are not permitted"),
    ("bad name", _set("name", "Web_1"), "name: deployment name 'Web_1' must be 1-40 of [a-z0-9-]"),
    ("bad MAC", _set("outputs.out.next_hop_mac", "02:00:00:00:zz"),
     "outputs.out.next_hop_mac: not a MAC address: '02:00:00:00:zz'"),
    ("bad prefix", _set("rules.0.src", "10.0.0.300/8"),
     "rules[0].src: '10.0.0.300/8' is not \"any\", an IPv4 address or a CIDR prefix"),
    ("bad port range", _set("rules.0.dport", [80, 10]),
     "rules[0].dport: [80, 10] is not a port range within 0..65535, lowest first"),
    ("node without type", _drop_node_type, "graph.nodes[1].type: Field required"),
    ("burst out of range", _set("burst", 0), "burst: Input should be greater than or equal to 1"),
]


@pytest.mark.parametrize(("edit", "detail"), [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_invalid_requests_are_422_naming_the_field(app: FastAPI, agent: FakeAgent,
                                                   edit: Callable[[dict[str, Any]], None], detail: str) -> None:
    body = request_body("web")
    edit(body)
    r = call(app, "POST", "/v1/deployments", json=body)
    assert r.status_code == 422, r.text
    reply = r.json()
    assert reply["error"] == "invalid_request"
    assert detail in reply["detail"]
    assert reply["errors"], "the raw pydantic errors are kept"
    assert agent.calls == []


def test_several_bad_fields_are_all_named(app: FastAPI) -> None:
    body = request_body("web")
    body["name"] = "-"
    body["rules"][0]["src"] = "nope"
    detail = call(app, "POST", "/v1/deployments", json=body).json()["detail"]
    assert detail.startswith("name: ") and "; rules[0].src: " in detail


@pytest.mark.parametrize(("content", "headers", "status", "kind", "detail"), [
    (b'{"name": "web", ', {"content-type": "application/json"}, 400, "bad_json", "request body is not valid JSON"),
    (b"[1, 2]", {"content-type": "application/json"}, 422, "invalid_request",
     "body: Input should be a valid dictionary"),
    (b"", {}, 422, "invalid_request", "body: Field required"),
    (b'{"name": "web"}', {"content-type": "text/plain"}, 422, "invalid_request",
     "send JSON with Content-Type: application/json"),
], ids=["malformed JSON", "not an object", "no body", "not sent as JSON"])
def test_unusable_bodies(app: FastAPI, agent: FakeAgent, content: bytes, headers: dict[str, str], status: int,
                         kind: str, detail: str) -> None:
    r = call(app, "POST", "/v1/deployments", content=content, headers=headers)
    assert (r.status_code, r.json()["error"]) == (status, kind)
    assert detail in r.json()["detail"]
    assert agent.calls == []


@pytest.mark.parametrize(("method", "url"), [
    ("GET", "/v1/deployments/ghost"), ("DELETE", "/v1/deployments/ghost"), ("GET", "/v1/deployments/ghost/stats"),
])
def test_unknown_deployment_is_404(app: FastAPI, method: str, url: str) -> None:
    r = call(app, method, url)
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "detail": "no deployment named 'ghost'"}


@pytest.mark.parametrize(("exc", "status", "kind"), [
    (InvalidDeploymentError("node 'chk': unknown µNF type 'Nope' (see `micronf nfs`)"), 400, "invalid_deployment"),
    (DeploymentFailedError("µNF 'swap' exited with status 1 before it was ready; rolled back"), 500,
     "deployment_failed"),
], ids=["invalid", "failed"])
def test_agent_errors_keep_their_message(app: FastAPI, agent: FakeAgent, exc: AgentError, status: int,
                                         kind: str) -> None:
    agent.fail["deploy"] = exc
    r = call(app, "POST", "/v1/deployments", json=request_body("web"))
    assert r.status_code == status
    assert r.json() == {"error": kind, "detail": str(exc)}


def test_duplicate_is_409(app: FastAPI) -> None:
    assert call(app, "POST", "/v1/deployments", json=request_body("web")).status_code == 201
    r = call(app, "POST", "/v1/deployments", json=request_body("web"))
    assert r.status_code == 409
    assert r.json()["error"] == "exists" and "'web' already exists" in r.json()["detail"]


def test_an_agent_bug_is_a_500_without_traceback(app: FastAPI, agent: FakeAgent) -> None:
    agent.fail["deployments"] = RuntimeError("boom")
    r = call(app, "GET", "/v1/deployments")
    assert r.status_code == 500
    assert r.json() == {"error": "internal", "detail": "RuntimeError: boom"}


def test_unknown_route_and_method_are_json(app: FastAPI) -> None:
    r = call(app, "GET", "/v2/nothing")
    assert (r.status_code, r.json()["error"]) == (404, "no_route")
    assert "/v2/nothing" in r.json()["detail"]
    r = call(app, "PUT", "/v1/deployments")
    assert (r.status_code, r.json()["error"]) == (405, "method_not_allowed")


def test_openapi_documents_models_and_errors(app: FastAPI) -> None:
    spec = call(app, "GET", "/openapi.json").json()
    post = spec["paths"]["/v1/deployments"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/DeployRequest")
    assert post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/DeploymentInfo")
    for status in ("400", "409", "500"):
        assert post["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorReply")
    assert post["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ValidationErrorReply")
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert set(spec["paths"]) == {"/v1/deployments", "/v1/deployments/{name}", "/v1/deployments/{name}/stats",
                                  "/health", "/metrics"}
    assert "404" in spec["paths"]["/v1/deployments/{name}"]["delete"]["responses"]


def test_deploy_and_remove_never_overlap() -> None:
    """A deploy that takes long holds off a concurrent remove until it is done."""
    entered, release = threading.Event(), threading.Event()
    events: list[str] = []

    class Slow(FakeAgent):
        def deploy(self, req: DeployRequest) -> DeploymentInfo:
            events.append(f"deploy {req.name} start")
            entered.set()
            release.wait(10)
            events.append(f"deploy {req.name} end")
            return super().deploy(req)

        def remove(self, name: str) -> None:
            events.append(f"remove {name}")
            super().remove(name)

    slow = Slow()
    FakeAgent.deploy(slow, DeployRequest.model_validate(request_body("old")))
    app = create_app(slow, token=None)
    codes: list[int] = []

    async def scenario() -> None:
        async def request(method: str, url: str, **kw: Any) -> None:
            codes.append((await _send(app, method, url, **kw)).status_code)

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: request("POST", "/v1/deployments", json=request_body("new")))
            await anyio.to_thread.run_sync(entered.wait, 10)
            tg.start_soon(lambda: request("DELETE", "/v1/deployments/old"))
            try:  # the remove has had time to reach the agent if nothing held it back
                assert not await anyio.to_thread.run_sync(lambda: _wait_for(events, "remove old", 0.5))
            finally:
                release.set()

    anyio.run(scenario)
    assert sorted(codes) == [201, 204]
    assert events == ["deploy new start", "deploy new end", "remove old"]


def _wait_for(events: list[str], item: str, seconds: float) -> bool:
    """Whether ``item`` shows up in ``events`` within ``seconds``."""
    deadline = time.monotonic() + seconds
    while item not in events and time.monotonic() < deadline:
        time.sleep(0.01)
    return item in events


def test_stop_all_removes_everything_and_closes(agent: FakeAgent) -> None:
    for name in ("a", "b", "c"):
        agent.deploy(DeployRequest.model_validate(request_body(name)))
    agent.fail["remove"] = RuntimeError("stuck")
    agent.fail_times["remove"] = 1  # the first removal fails, the others must still happen
    stop_all(agent)
    assert [arg for m, arg in agent.calls if m == "remove"] == ["a", "b", "c"]
    assert list(agent.infos) == ["a"]
    assert agent.closed


def test_stop_all_tolerates_a_deployment_that_vanished(agent: FakeAgent) -> None:
    agent.deploy(DeployRequest.model_validate(request_body("a")))
    agent.fail["remove"] = DeploymentNotFoundError("no deployment named 'a'")
    stop_all(agent)
    assert agent.closed
