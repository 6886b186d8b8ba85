"""The agent API is safe to expose (issue 12): a bearer token, no bind without TLS unless asked,
bounded bodies, limits that are 4xx naming the field, replies that do not echo large inputs, and
an event loop that large requests never hold up."""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from micronf.agent import limits
from micronf.agent.core import Agent
from micronf.agent.server import create_app
from micronf.api.client import AgentClient
from micronf.api.security import check_exposure
from micronf.api.statedir import load_token, read_token
from micronf.app.cli import app as cli_app
from micronf.dataplane.segment import list_segments
from tests.agent._fake_agent import RUN_FAKE_AGENT, FakeAgent, request_body
from tests.agent.test_server import call

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"


def _from(app: FastAPI, client: str, method: str, url: str, **kw: Any) -> httpx.Response:
    """One request to ``app`` as if it came from the address ``client``."""
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as c:
            return await c.request(method, url, **kw)
    return anyio.run(send)


# -- authentication ------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "url"), [("GET", "/v1/deployments"), ("POST", "/v1/deployments"),
                                             ("GET", "/v1/deployments/web"), ("DELETE", "/v1/deployments/web"),
                                             ("GET", "/v1/deployments/web/stats"), ("GET", "/openapi.json")])
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer"],
                         ids=["no token", "wrong token", "not bearer", "empty"])
def test_every_route_but_health_needs_the_token(method: str, url: str, auth: str | None) -> None:
    agent = FakeAgent()
    app = create_app(agent, token=TOKEN)
    headers = {} if auth is None else {"Authorization": auth}
    r = call(app, method, url, headers=headers, json=request_body("web") if method == "POST" else None)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized", r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert agent.calls == []  # the core never saw it


def test_the_right_token_opens_the_api_and_health_is_open() -> None:
    agent = FakeAgent()
    app = create_app(agent, token=TOKEN)
    ok = {"Authorization": f"Bearer {TOKEN}"}
    assert call(app, "POST", "/v1/deployments", headers=ok, json=request_body("web")).status_code == 201
    assert call(app, "GET", "/v1/deployments/web", headers=ok).status_code == 200
    assert call(app, "GET", "/health").json()["status"] == "ok"


def test_metrics_are_open_on_loopback_only_unless_public() -> None:
    app = create_app(FakeAgent(), token=TOKEN)
    for client in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert _from(app, client, "GET", "/metrics").status_code == 200, client
    assert _from(app, "10.1.2.3", "GET", "/metrics").status_code == 401
    assert _from(app, "10.1.2.3", "GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    public = create_app(FakeAgent(), token=TOKEN, metrics_public=True)
    assert _from(public, "10.1.2.3", "GET", "/metrics").status_code == 200
    assert _from(public, "10.1.2.3", "GET", "/v1/deployments").status_code == 401


def test_the_token_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "agent" / "token"
    token = load_token(path)
    assert len(token) >= 40 and os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    assert load_token(path) == token == read_token(path)
    mine = tmp_path / "mine"
    mine.write_text("my-own-token\n")
    assert load_token(mine) == "my-own-token"


def test_the_client_sends_the_token_read_at_each_request(tmp_path: Path) -> None:
    seen: list[str | None] = []
    current = ["one"]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json=[])

    with AgentClient("http://agent", transport=httpx.MockTransport(handler), token=lambda: current[0]) as c:
        c.deployments()
        current[0] = "two"
        c.deployments()
    with AgentClient("http://agent", transport=httpx.MockTransport(handler)) as c:
        c.deployments()
    assert seen == ["Bearer one", "Bearer two", None]


# -- exposure ------------------------------------------------------------------------------------
def test_a_non_loopback_bind_without_tls_is_refused_unless_insecure(tmp_path: Path) -> None:
    env = {"MICRONF_STATE_DIR": str(tmp_path)}
    for command in ("agent", "orchestrator"):
        res = CliRunner().invoke(cli_app, [command, "--host", "0.0.0.0"], env=env)
        assert res.exit_code == 2, res.output
        assert "without TLS" in res.output and "--insecure" in res.output and "--tls-cert" in res.output
    assert check_exposure("127.0.0.1", tls=False, insecure=False) is None
    assert check_exposure("localhost", tls=False, insecure=False) is None
    assert check_exposure("0.0.0.0", tls=True, insecure=False) is None
    warning = check_exposure("192.0.2.1", tls=False, insecure=True)
    assert warning is not None and "clear text" in warning
    res = CliRunner().invoke(cli_app, ["agent", "--tls-cert", str(tmp_path)], env=env)
    assert res.exit_code == 2


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_tls_serves_https_with_the_given_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    trust = ssl.create_default_context(cafile=str(cert))
    with _fake_agent_process(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), scheme="https",
                             verify=trust) as url:
        token = read_token(tmp_path / "state" / "agent" / "token")
        with httpx.Client(base_url=url, verify=trust, timeout=10) as c:
            assert c.get("/v1/deployments").status_code == 401
            assert c.get("/v1/deployments", headers={"Authorization": f"Bearer {token}"}).json() == []
        with pytest.raises(httpx.TransportError):  # plain HTTP is not served
            httpx.get(url.replace("https", "http") + "/health", timeout=5)


# -- limits --------------------------------------------------------------------------------------
def test_a_50_mb_body_is_a_413_before_it_is_read() -> None:
    agent = FakeAgent()
    app = create_app(agent, token=None)
    big = b'{"name": "' + b"a" * (50 << 20) + b'"}'
    r = call(app, "POST", "/v1/deployments", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large" and len(r.content) < 500

    def chunks() -> Iterator[bytes]:  # streamed, no Content-Length: cut off at the limit
        yield b'{"name": "'
        for _ in range(50):
            yield b"a" * (1 << 20)

    async def streamed() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as c:
            async def body() -> Any:
                for c_ in chunks():
                    yield c_
            return await c.post("/v1/deployments", content=body(), headers={"content-type": "application/json"})

    r = anyio.run(streamed)
    assert r.status_code == 413 and len(r.content) < 500
    assert agent.calls == []


def test_large_inputs_are_not_echoed() -> None:
    app = create_app(FakeAgent(), token=None)
    r = call(app, "POST", "/v1/deployments", json={**request_body("web"), "name": "X" * 900_000})
    assert r.status_code == 422 and len(r.content) < 4000, len(r.content)
    assert r.json()["detail"].startswith("name: deployment name 'XXX")
    r = call(app, "POST", "/v1/deployments", json={**request_body("web"), "rules": [{"src": "x"}] * 20_000})
    assert r.status_code == 422 and len(r.content) < 20_000 and "more errors" in r.json()["detail"]


@pytest.mark.parametrize("body", [b'{"name": "\\udcff"}', b'{"name": "a", "graph": {"nodes": [{"name": "\\ud800"}]}}',
                                  b"[" * 100_000, b'{"a":' * 50_000],
                         ids=["lone surrogate", "lone surrogate deeper", "nested arrays", "nested objects"])
def test_bodies_python_cannot_hold_are_400s(body: bytes) -> None:
    r = call(create_app(FakeAgent(), token=None), "POST", "/v1/deployments", content=body,
             headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "bad_json", r.text


def test_a_graph_above_the_node_limit_is_a_422_naming_it() -> None:
    app = create_app(FakeAgent(), token=None, max_nodes=3)
    nodes = [{"name": f"n{i}", "type": "MacSwapper"} for i in range(4)]
    body = {"name": "big", "graph": {"nodes": nodes, "edges": [], "entry": "n0"}}
    r = call(app, "POST", "/v1/deployments", json=body)
    assert r.status_code == 422 and r.json()["detail"] == "graph.nodes: 4 µNFs, at most 3 per deployment on this agent"


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("ring_capacity", 1000, "ring_capacity: must be a power of two"),
    ("pool_slots", 100_000_000, "pool_slots: Input should be less than or equal to 16777216"),
])
def test_bad_sizes_are_422s_naming_the_field(tmp_path: Path, field: str, value: int, needle: str) -> None:
    with Agent(monitor=False, data_dir=tmp_path) as agent:
        r = call(create_app(agent, token=None), "POST", "/v1/deployments", json={**request_body("sized"), field: value})
    assert r.status_code == 422 and needle in r.json()["detail"], r.text
    assert not [s for s in list_segments() if "sized" in s.name]


def test_a_pool_larger_than_the_free_shared_memory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "shm_free", lambda shm_dir=limits.SHM_DIR: 64 << 20)
    with Agent(monitor=False, data_dir=tmp_path) as agent:
        r = call(create_app(agent, token=None), "POST", "/v1/deployments",
                 json={**request_body("huge"), "rx": None, "pool_slots": 1_000_000})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail.startswith("pool_slots/ring_capacity:") and "1,000,000 packet buffers" in detail
    assert "64 MiB free" in detail
    assert not [s for s in list_segments() if "huge" in s.name]


# -- the event loop ------------------------------------------------------------------------------
def test_agent_health_does_not_wait_for_a_deployment_in_progress(tmp_path: Path) -> None:
    with Agent(monitor=False, data_dir=tmp_path) as agent:
        held, release = threading.Event(), threading.Event()

        def deploying() -> None:  # what Agent.deploy does while its processes start (seconds)
            with agent._lock:
                held.set()
                release.wait(10)

        t = threading.Thread(target=deploying)
        t.start()
        held.wait(10)
        t0 = time.perf_counter()
        assert agent.health().deployments == 0
        took = time.perf_counter() - t0
        release.set()
        t.join()
    assert took < 0.1



@contextmanager
def _fake_agent_process(tmp_path: Path, *args: str, scheme: str = "http",
                        verify: ssl.SSLContext | bool = True) -> Iterator[str]:
    """`micronf agent ARGS` (the real command over the fake core) on a free port until its /health
    answers; its state directory is ``tmp_path/state``. Yields its URL; terminated at the end."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "FAKE_AGENT_LOG": str(tmp_path / "log"),
           "MICRONF_STATE_DIR": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-c", RUN_FAKE_AGENT, "agent", "--port", str(port),
                             "--log-level", "warning", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"{scheme}://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1, verify=verify).is_success:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the agent did not come up"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Six times: a body just under 1 MiB (a 10,000-µNF chain, ~0.1 s to validate, above the node
# limit: 422) and a 50 MB JSON body (413); prints the status codes as JSON.
_HOSTILE = """
import json, sys, httpx
url, token = sys.argv[1:]
n = 10_000
graph = {"nodes": [{"name": f"n{i}", "type": "MacSwapper"} for i in range(n)],
         "edges": [{"src": f"n{i}", "label": "out", "dst": f"n{i + 1}"} for i in range(n - 1)], "entry": "n0"}
big = json.dumps({"name": "big", "graph": graph}).encode()
assert len(big) < 1 << 20
huge = b'{"name": "' + b"a" * (50 << 20) + b'"}'
codes = []
with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
                  timeout=60) as c:
    for _ in range(6):
        codes.append(c.post("/v1/deployments", content=big).status_code)
        codes.append(c.post("/v1/deployments", content=huge).status_code)
print(json.dumps(codes))
"""


@pytest.mark.timeout(180)
def test_health_answers_within_100_ms_while_large_requests_are_rejected(tmp_path: Path) -> None:
    """Every /health poll while the hostile requests run is timed. Validating on the event loop
    stalled each poll for a whole validation (~0.1 s per graph, seconds per 50 MB body); on this
    shared 2-core machine the scheduler alone delays an odd poll past 100 ms, so: at most one poll
    in 20 over 100 ms, none over 1 s."""
    with _fake_agent_process(tmp_path) as url:
        token = read_token(tmp_path / "state" / "agent" / "token")
        codes: list[int] = []
        done = threading.Event()

        def hostile() -> None:  # another process: this one's GIL must not slow the /health polls
            out = subprocess.run([sys.executable, "-c", _HOSTILE, url, token], capture_output=True, text=True,
                                 timeout=120, check=True).stdout
            codes.extend(json.loads(out))
            done.set()

        took: list[float] = []
        with httpx.Client(base_url=url, timeout=10) as health:
            health.get("/health")
            t = threading.Thread(target=hostile)
            t.start()
            while not done.is_set():
                t0 = time.perf_counter()
                assert health.get("/health").status_code == 200
                took.append(time.perf_counter() - t0)
                time.sleep(0.01)
            t.join()
        assert codes == [422, 413] * 6
        slow = [round(x * 1000) for x in took if x > 0.1]
        assert len(slow) <= len(took) // 20 and max(took) < 1.0, f"/health over 100 ms (ms): {slow} of {len(took)}"
