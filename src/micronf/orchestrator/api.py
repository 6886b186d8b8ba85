"""The orchestrator's northbound HTTP API: a FastAPI app over an :class:`Orchestrator`.

A thin layer like the agent's (:mod:`micronf.agent.server`): requests are validated with the
service's pydantic models, every endpoint is a plain ``def`` (FastAPI runs it in its threadpool:
creating an SFC waits for agents to start processes), and every failure is one JSON shape,
``{"error": kind, "detail": message}``, by the same handlers as the agent's
(:mod:`micronf.api.httperrors`).

Routes:

========================================  =====================================================
``POST /v1/sfcs``                         compose, place and deploy an SFC (201 SFCInfo)
``GET /v1/sfcs``                          every SFC deployment and its state
``GET /v1/sfcs/{name}``                   one (404 if unknown)
``DELETE /v1/sfcs/{name}``                undeploy it (204)
``GET /v1/sfcs/{name}/stats``             per-SFC and per-µNF counters from its agents
``POST /v1/plan``                         dry run: composition and placement, nothing deployed
``GET /health``                           the orchestrator, its agents (``degraded`` when one is
                                          unreachable) and deployment counts
``GET /openapi.json``, ``/docs``          the schema of all of the above
========================================  =====================================================

The request body of ``POST /v1/sfcs`` and ``POST /v1/plan`` (:class:`SFCCreate`): ``sfc`` (the SFC
request as YAML/JSON text or as an object), ``files`` (the template/descriptor files its imports
name, by relative path: ``micronf deploy`` sends them), and optionally ``name``, ``agent``, ``rx``,
``rules``, ``outputs`` and ``autoscale`` (what the SFC does not say: where its traffic comes from
and where each output goes; see :class:`~micronf.orchestrator.placement.Traffic`).

As on the agent, :class:`micronf.api.security.Guard` sits in front (a bearer token on every route but
``/health``, a bounded body) and request bodies are decoded and validated in a worker thread.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from fastapi import Depends, FastAPI, Response
from pydantic import BaseModel, Field

from micronf import __version__
from micronf.api.httperrors import body_openapi, error_responses, install_error_handlers, json_body
from micronf.api.security import MAX_BODY, Guard, install_openapi
from micronf.orchestrator.northbound import PlanReply, SFCCreate, SFCInfo, SFCStats
from micronf.orchestrator.service import Orchestrator

_ERRORS = {
    400: "the SFC, its files or its options are invalid, cannot be placed, or an agent refused the request",
    404: "no SFC deployment has this name",
    409: "an SFC deployment with this name exists",
    422: "the request does not match the schema; `detail` names each bad field",
    502: "an agent failed to bring the deployment up; it was rolled back on every agent",
    503: "the agent it needs is unreachable",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(_ERRORS, *statuses)


class AgentHealth(BaseModel):
    url: str
    name: str
    reachable: bool


class OrchestratorHealth(BaseModel):
    status: Literal["ok", "degraded"] = Field(description="degraded: some agents do not answer")
    unreachable: list[str] = Field(description="names of the agents that do not answer")
    version: str
    uptime_s: float
    deployments: dict[str, int]
    agents: list[AgentHealth]


def create_app(orch: Orchestrator, *, token: str | None, max_body: int = MAX_BODY) -> FastAPI:
    """The northbound API app over ``orch`` (which the caller starts and closes); ``token``: the
    bearer token every route but ``/health`` needs (``None``: none); ``max_body``: bytes per body."""
    app = FastAPI(
        title="micronf orchestrator",
        version=__version__,
        description="Northbound API of the micronf orchestrator: deploy service function chains as optimized µNF "
                    "graphs on agents, list, remove, read their counters. Every error reply is "
                    "`{\"error\": kind, \"detail\": message}`.",
    )
    install_error_handlers(app)
    app.add_middleware(Guard, token=token, max_body=max_body)
    body = json_body(SFCCreate)
    started = time.monotonic()

    @app.post("/v1/sfcs", status_code=201, response_model=SFCInfo, tags=["sfcs"], summary="Deploy an SFC",
              responses=_errors(400, 409, 422, 502, 503), openapi_extra=body_openapi(SFCCreate))
    def create(response: Response, req: SFCCreate = Depends(body)) -> SFCInfo:  # noqa: B008
        """Compose the SFC into an optimized µNF graph, place it, deploy it. Comes up on every agent
        or is rolled back on every agent (the error stays readable on the failed deployment)."""
        info = orch.create(req)
        response.headers["Location"] = f"/v1/sfcs/{info.name}"
        return info

    @app.get("/v1/sfcs", response_model=list[SFCInfo], tags=["sfcs"], summary="List SFC deployments")
    def sfcs() -> list[SFCInfo]:
        return orch.sfcs()

    @app.get("/v1/sfcs/{name}", response_model=SFCInfo, tags=["sfcs"], summary="Get one SFC deployment",
             responses=_errors(404))
    def sfc(name: str) -> SFCInfo:
        return orch.get(name)

    @app.delete("/v1/sfcs/{name}", status_code=204, response_class=Response, tags=["sfcs"],
                summary="Undeploy an SFC", responses=_errors(404, 502, 503))
    def delete(name: str) -> Response:
        """Remove it from every agent and forget it (an unreachable agent: it stays `deleting`, retried)."""
        orch.delete(name)
        return Response(status_code=204)

    @app.get("/v1/sfcs/{name}/stats", response_model=SFCStats, tags=["sfcs"], summary="Counters of an SFC",
             responses=_errors(404, 502, 503))
    def stats(name: str) -> SFCStats:
        """Per SFC (packets in/out per output, drops, latency, conservation) and per µNF (packets,
        drops, ring occupancy, instances), with the agents' raw snapshots."""
        return orch.stats(name)

    @app.post("/v1/plan", response_model=PlanReply, tags=["sfcs"], summary="Dry run",
              responses=_errors(400, 422, 503), openapi_extra=body_openapi(SFCCreate))
    def plan(req: SFCCreate = Depends(body)) -> PlanReply:  # noqa: B008
        """What `POST /v1/sfcs` would deploy: the composition (graphs before and after, rewrites)
        and the request each agent would get. Nothing is deployed or stored."""
        return orch.plan(req)

    @app.get("/health", response_model=OrchestratorHealth, tags=["orchestrator"], summary="Orchestrator health")
    def health() -> OrchestratorHealth:
        """Uptime, deployments by state, and which agents answer (`degraded` when one does not)."""
        by_state: dict[str, int] = {}
        for info in orch.sfcs():
            by_state[info.state] = by_state.get(info.state, 0) + 1
        agents = [AgentHealth(url=c.agent.url, name=c.agent.name, reachable=c.load is not None)
                  for c in orch.candidates()]
        down = [a.name for a in agents if not a.reachable]
        return OrchestratorHealth(status="degraded" if down else "ok", unreachable=down, version=__version__,
                                  uptime_s=time.monotonic() - started, deployments=by_state, agents=agents)

    install_openapi(app, SFCCreate)
    return app
