"""The northbound API over the real service and store, with in-memory fake agents: bad requests
get a 4xx naming the problem; deploy, rollback on failure, delete and reconcile do what they say."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from micronf.api.client import AgentClientError
from micronf.api.errors import DeploymentFailedError, InvalidDeploymentError
from micronf.orchestrator import service
from micronf.orchestrator.api import create_app
from micronf.orchestrator.northbound import read_sfc_source
from micronf.orchestrator.placement import AgentRef
from micronf.orchestrator.service import Orchestrator
from micronf.orchestrator.store import Store
from tests.agent._fake_agent import FakeAgent

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
AGENTS = [AgentRef(url="http://a:1", name="a", cpus=(0, 1)), AgentRef(url="http://b:2", name="b", cpus=(2, 3))]
UNREACHABLE = AgentClientError(None, "unreachable", "GET failed: ConnectError")


class Env:
    def __init__(self, tmp: Path) -> None:
        self.db = tmp / "orch.db"
        self.fakes = {a.url: FakeAgent() for a in AGENTS}
        self.orch = self.new_orchestrator()
        self.http = TestClient(create_app(self.orch, token=None))

    def new_orchestrator(self) -> Orchestrator:
        return Orchestrator(Store(self.db), AGENTS, connect=lambda ref: self.fakes[ref.url])


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path)
    yield e
    e.orch.close()


def fig11_body(**extra: Any) -> dict[str, Any]:
    text, files = read_sfc_source(EXAMPLES / "sfc-fig11.yaml")
    return {"sfc": text, "files": files, **extra}


def _err(resp: Any, status: int, kind: str, *needles: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"] == kind, body
    for n in needles:
        assert n in body["detail"], body["detail"]


def test_deploy_list_get_stats_delete(env: Env) -> None:
    # pipelined asked for: this test is about the paper's placement (auto chooses replicas here: test_arrange)
    r = env.http.post("/v1/sfcs", json=fig11_body(rx={"kind": "generator", "count": 100}, mode="pipelined"))
    assert r.status_code == 201, r.text
    info = r.json()
    assert r.headers["location"] == "/v1/sfcs/fig11"
    assert info["state"] == "running" and info["agents"] == ["http://a:1"]
    assert info["outputs"] == {"appfw.other": ["monitor.classify.other"], "appfw.web": ["out"]}
    # 6 µNFs on 2 CPUs: composed without parallel branches, fused in one process on CPU 1 (Rx/Tx on 0)
    assert [n["cpu"] for n in info["graph"]["nodes"]] == [1] * 6
    assert {rw["kind"] for rw in info["rewrites"]} == {"remove"}
    clusters = [n["cluster"] for n in info["graph"]["nodes"]]
    assert clusters == [clusters[0]] * 6 and clusters[0] is not None
    fake = env.fakes["http://a:1"]
    sent = fake.infos["fig11"]
    assert sent.nodes == [n["name"] for n in info["graph"]["nodes"]]
    assert [s["name"] for s in env.http.get("/v1/sfcs").json()] == ["fig11"]
    assert env.http.get("/v1/sfcs/fig11").json()["state"] == "running"
    stats = env.http.get("/v1/sfcs/fig11/stats").json()
    # the fake's snapshot (tests/agent/_fake_agent.py): chk 1000 in, 7 own drops + 2 unconnected + 1 full
    chk = next(u for u in stats["unfs"] if u["name"] == "chk")
    assert (chk["packets_in"], chk["dropped"], chk["ring_occupancy"], chk["cpu"]) == (1000, 10, 12, None)
    assert chk["drops"] == {"bad_checksum": 6, "bad_length": 1, "unconnected": 2, "full": 1}
    swap = next(u for u in stats["unfs"] if u["name"] == "swap")
    assert (swap["instances"], swap["packets_in"], swap["ring_capacity"]) == (2, 987, 1024)
    assert stats["packets_in"] == 1000 and stats["latency"]["p99_ns"] == 30000
    assert stats["graphs"]["http://a:1"]["name"] == "fig11"
    # a second deployment goes to the less loaded agent (the fake's fig11 has 6 live processes of 7)
    r = env.http.post("/v1/sfcs", json=fig11_body(name="fig11-b"))
    assert r.json()["agents"] == ["http://b:2"]
    assert env.http.delete("/v1/sfcs/fig11").status_code == 204
    assert "fig11" not in fake.infos
    _err(env.http.get("/v1/sfcs/fig11"), 404, "not_found", "fig11")
    assert [s["name"] for s in env.http.get("/v1/sfcs").json()] == ["fig11-b"]
    health = env.http.get("/health").json()
    assert health["deployments"] == {"running": 1} and [a["reachable"] for a in health["agents"]] == [True, True]


def test_bad_requests_get_4xx_naming_the_problem(env: Env) -> None:
    _err(env.http.post("/v1/sfcs", content=b"{nope", headers={"content-type": "application/json"}),
         400, "bad_json", "not valid JSON")
    _err(env.http.post("/v1/sfcs", json={"files": {}}), 422, "invalid_request", "sfc: Field required")
    _err(env.http.post("/v1/sfcs", json=fig11_body(outputs={"web": {"backend": {"kind": "null"}}})),
         400, "invalid_sfc", "outputs.web: no SFC output or exit has this name")
    _err(env.http.post("/v1/sfcs", json=fig11_body(bogus=1)), 422, "invalid_request", "bogus: Extra inputs")
    _err(env.http.post("/v1/sfcs", json={"sfc": "kind: sfc\nname: [unclosed"}), 400, "invalid_sfc",
         "request.sfc.yaml", "expected valid YAML")
    body = fig11_body()
    body["files"] = {k: v for k, v in body["files"].items() if "application-firewall" not in k}
    _err(env.http.post("/v1/sfcs", json=body), 400, "invalid_sfc",
         "request.sfc.yaml: vnfs[2].template: expected an imported template")
    body = fig11_body()
    body["files"]["../evil.yaml"] = "kind: vnf-template"
    _err(env.http.post("/v1/sfcs", json=body), 400, "invalid_sfc", "a relative path inside the SFC's directory")
    _err(env.http.post("/v1/sfcs", json=fig11_body(name="Bad_Name")), 400, "invalid_sfc",
         "deployment name 'Bad_Name' must be", "set `name`")
    _err(env.http.post("/v1/sfcs", json=fig11_body(agent="c")), 400, "invalid_sfc", "no agent named 'c'")
    _err(env.http.post("/v1/plan", json={"sfc": {"kind": "sfc", "name": "x", "vnfs": []}}), 400, "invalid_sfc",
         "vnfs")
    _err(env.http.get("/v1/sfcs/none/stats"), 404, "not_found", "no SFC deployment named 'none'")
    _err(env.http.delete("/v1/sfcs/none"), 404, "not_found")
    assert env.http.post("/v1/sfcs", json=fig11_body()).status_code == 201
    _err(env.http.post("/v1/sfcs", json=fig11_body()), 409, "exists", "fig11")
    assert sum(f.count("deploy") for f in env.fakes.values()) == 1  # no invalid request reached an agent


def test_plan_is_a_dry_run(env: Env) -> None:
    r = env.http.post("/v1/plan", json=fig11_body(agent="b"))
    assert r.status_code == 200, r.text
    plan = r.json()
    assert list(plan["parts"]) == ["http://b:2"] and plan["parts"]["http://b:2"]["name"] == "fig11"
    assert plan["composition"]["sfc"] == "fig11"
    # agent b offers CPUs 2 and 3: the arrangement for them, with every alternative's prediction
    arr = plan["arrangement"]
    assert arr["cpus"] == [2, 3] and arr["chosen"]["mode"] == plan["parts"]["http://b:2"]["mode"]
    assert {a["name"] for a in arr["alternatives"]} == {"pipelined-fused", "mix", "replicas"}
    assert env.http.get("/v1/sfcs").json() == []
    assert all(f.count("deploy") == 0 for f in env.fakes.values())


def test_failed_deploy_is_rolled_back_and_recorded(env: Env) -> None:
    fake = env.fakes["http://a:1"]
    fake.fail["deploy"] = DeploymentFailedError("µNF appfw.validate exited during start")
    _err(env.http.post("/v1/sfcs", json=fig11_body()), 502, "deployment_failed", "appfw.validate exited")
    assert fake.count("remove") == 1  # a 5xx does not prove the agent has nothing: removed to be sure
    info = env.http.get("/v1/sfcs/fig11").json()
    assert info["state"] == "failed" and "rolled back" in info["error"]
    fake.fail["deploy"] = InvalidDeploymentError("rx: no such pcap file")
    _err(env.http.post("/v1/sfcs", json=fig11_body()), 400, "rejected_by_agent", "no such pcap file")
    assert fake.count("remove") == 1  # a 4xx means nothing was deployed
    del fake.fail["deploy"]
    assert env.http.post("/v1/sfcs", json=fig11_body()).status_code == 201  # a failed one is replaced
    env.fakes["http://a:1"].fail["health"] = UNREACHABLE
    env.fakes["http://b:2"].fail["health"] = UNREACHABLE
    _err(env.http.post("/v1/sfcs", json=fig11_body(name="other")), 503, "agent_unreachable", "no agent is reachable")


def test_restart_reconciles_lost_and_unreachable_deployments(env: Env) -> None:
    assert env.http.post("/v1/sfcs", json=fig11_body()).status_code == 201
    assert env.http.post("/v1/sfcs", json=fig11_body(name="gone", agent="b")).status_code == 201
    a, b = env.fakes["http://a:1"], env.fakes["http://b:2"]
    assert env.orch.reconcile() == []  # all in order: nothing to do
    env.orch.close()
    a.infos.clear()  # agent a restarted: it lost fig11
    b.fail["deployment"] = UNREACHABLE
    orch = env.new_orchestrator()  # the orchestrator restarts on the same database
    acts = {x.name: x for x in orch.reconcile()}
    assert (acts["fig11"].after, acts["fig11"].action) == ("running", "redeployed on http://a:1 (the agent had "
                                                                      "lost it)")
    assert "fig11" in a.infos and a.infos["fig11"].nodes == [n.name for n in orch.get("fig11").graph.nodes]
    assert acts["gone"].after == "unreachable" and orch.get("gone").error is not None
    del b.fail["deployment"]
    acts = {x.name: x for x in orch.reconcile()}
    assert acts["gone"].after == "running" and orch.get("gone").error is None
    # a delete while the agent is unreachable stays 'deleting' and completes at a later reconcile
    b.fail["remove"] = UNREACHABLE
    http = TestClient(create_app(orch, token=None))
    _err(http.delete("/v1/sfcs/gone"), 503, "agent_unreachable", "did not remove it")
    assert orch.get("gone").state == "deleting" and "gone" in b.infos
    del b.fail["remove"]
    acts = {x.name: x for x in orch.reconcile()}
    assert acts["gone"].after is None and "gone" not in b.infos
    assert [s.name for s in orch.sfcs()] == ["fig11"]
    orch.close()


def test_a_refused_redeploy_is_retried_with_back_off_also_after_a_restart(env: Env,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent that lost a deployment and refuses it again (e.g. a segment still in use) does not
    leave the SFC 'failed' for good: reconcile retries with a doubling delay, and at once after an
    orchestrator restart."""
    monkeypatch.setattr(service, "RETRY_FIRST_S", 0.2)
    monkeypatch.setattr(service, "RETRY_MAX_S", 0.4)
    assert env.http.post("/v1/sfcs", json=fig11_body()).status_code == 201
    a = env.fakes["http://a:1"]
    a.infos.clear()  # the agent restarted and lost it
    a.fail["deploy"] = DeploymentFailedError("segment 'mnf-fig11' is still used by processes 7 (their agent is gone)")
    deploys = a.count("deploy")
    delays = []
    for _ in range(3):
        [act] = env.orch.reconcile()
        assert act.after == "retrying" and "still used" in (env.orch.get("fig11").error or "")
        delays.append(env.orch.get("fig11").error.split("retry in ")[1])  # type: ignore[union-attr]
        assert env.orch.reconcile() == []  # within the back-off: not asked again
        time.sleep(0.45)
    assert delays == ["0.2 s)", "0.4 s)", "0.4 s)"] and a.count("deploy") == deploys + 3  # doubling, capped
    env.orch.close()
    orch = env.new_orchestrator()  # restarted: the stored 'retrying' state is retried at once
    [act] = orch.reconcile()
    assert (act.before, act.after) == ("retrying", "retrying")
    del a.fail["deploy"]
    time.sleep(0.25)
    [act] = orch.reconcile()
    assert act.after == "running" and orch.get("fig11").error is None and "fig11" in a.infos
    assert orch.reconcile() == []
    orch.close()


def test_openapi_lists_the_routes(env: Env) -> None:
    paths = env.http.get("/openapi.json").json()["paths"]
    assert {"/v1/sfcs", "/v1/sfcs/{name}", "/v1/sfcs/{name}/stats", "/v1/plan", "/health"} <= set(paths)
    assert "503" in paths["/v1/sfcs"]["post"]["responses"]
