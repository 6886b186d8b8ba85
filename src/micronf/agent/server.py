"""The agent's southbound HTTP API: a FastAPI app over an :class:`AgentCore`.

Why a thin layer: everything that deploys, supervises and counts lives in the agent core; this
module only validates requests (with the pydantic models of :mod:`micronf.agent.models`), runs the
core's blocking calls in FastAPI's threadpool (every endpoint is a plain ``def``), serializes
deploy/remove with one lock so two deployments never race over CPUs or names, and turns every
failure into one JSON shape, ``{"error": kind, "detail": message}`` (:class:`ErrorReply`), so a
client never has to parse FastAPI's or Starlette's defaults and never sees a traceback.

Routes (all JSON except ``/metrics``):

========================================  =====================================================
``POST /v1/deployments``                  deploy a graph (201 DeploymentInfo; 400/409/422/500)
``GET /v1/deployments``                   list deployments
``GET /v1/deployments/{name}``            one deployment (404 if unknown)
``DELETE /v1/deployments/{name}``         stop and remove it (204; 404 if unknown)
``GET /v1/deployments/{name}/stats``      per-µNF, per-port, pool, latency and Rx/Tx counters
``GET /health``                           liveness and process counts
``GET /metrics``                          Prometheus text format (:mod:`micronf.agent.metrics`)
``GET /openapi.json``, ``/docs``          the schema of all of the above
========================================  =====================================================
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from micronf import __version__
from micronf.agent.errors import AgentError, DeploymentNotFoundError
from micronf.agent.metrics import AgentCollector
from micronf.agent.models import DeploymentInfo, DeployRequest, ErrorReply, GraphStats, Health

log = logging.getLogger(__name__)


class AgentCore(Protocol):
    """What the HTTP layer needs from the agent (``micronf.agent.core.Agent`` implements it).

    Every call may block (``deploy`` starts processes and can take seconds); failures are
    :class:`~micronf.agent.errors.AgentError` subclasses whose ``kind``/``status`` become the reply.
    """

    def deploy(self, req: DeployRequest) -> DeploymentInfo:
        """Bring the whole deployment up or roll it back whole (InvalidDeployment/Exists/Failed)."""
        ...

    def remove(self, name: str) -> None:
        """Stop every process of the deployment and free its memory (DeploymentNotFoundError)."""
        ...

    def deployments(self) -> list[DeploymentInfo]:
        """Every deployment this agent runs."""
        ...

    def deployment(self, name: str) -> DeploymentInfo:
        """One deployment (DeploymentNotFoundError)."""
        ...

    def stats(self, name: str) -> GraphStats:
        """A snapshot of the deployment's counters (DeploymentNotFoundError)."""
        ...

    def health(self) -> Health:
        """Liveness and process counts of the agent."""
        ...


class ValidationErrorReply(ErrorReply):
    """A 422 reply: ``detail`` names every bad field; ``errors`` is pydantic's raw list."""

    errors: list[dict[str, Any]]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route can return."""
    what = {
        400: "the request cannot be deployed as asked, or its body is not JSON",
        404: "no deployment has this name",
        409: "a deployment with this name already runs",
        422: "the request does not match the schema; `detail` names each bad field",
        500: "the deployment did not come up and was rolled back, or the agent failed",
    }
    return {s: {"model": ValidationErrorReply if s == 422 else ErrorReply, "description": what[s]} for s in statuses}


def _field_path(loc: Sequence[int | str]) -> str:
    """``("body", "graph", "nodes", 1, "type")`` -> ``graph.nodes[1].type`` (the body is implied)."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """One line per pydantic error, ``field.path: problem``, joined with ``; ``."""
    lines = []
    for e in errors:
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{_field_path(e.get('loc', ()))}: {msg}")
    return "; ".join(lines)


def _error(status: int, kind: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail, **extra}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    """Make every failure an :class:`ErrorReply`; client mistakes are 4xx, never a traceback."""

    @app.exception_handler(AgentError)
    async def _agent_error(_req: Request, exc: AgentError) -> JSONResponse:
        return _error(exc.status, exc.kind, str(exc) or exc.kind)

    @app.exception_handler(RequestValidationError)
    async def _invalid(req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        bad_json = [e for e in errors if e.get("type") == "json_invalid"]
        if bad_json:
            e = bad_json[0]
            why = (e.get("ctx") or {}).get("error", "cannot be decoded")
            pos = e["loc"][-1] if len(e.get("loc", ())) > 1 else "?"
            return _error(400, "bad_json", f"request body is not valid JSON: {why} (at character {pos})")
        detail = describe_validation_errors(errors)
        content_type = req.headers.get("content-type", "")
        if content_type and "json" not in content_type:  # FastAPI then validates the raw bytes
            detail += f" (the body was sent as {content_type!r}: send JSON with Content-Type: application/json)"
        return _error(422, "invalid_request", detail, errors=jsonable_encoder(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error(404, "no_route", f"no route {req.method} {req.url.path} (see /openapi.json)")
        if exc.status_code == 405:
            return _error(405, "method_not_allowed", f"{req.method} is not allowed on {req.url.path}")
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(req: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", req.method, req.url.path)
        return _error(500, "internal", f"{type(exc).__name__}: {exc}")


def create_app(agent: AgentCore) -> FastAPI:
    """The agent's HTTP app: the southbound API, ``/health``, ``/metrics`` and the OpenAPI schema.

    Each app gets its own Prometheus registry, so several apps (tests, or agents in one process)
    never share or collide on metrics.
    """
    app = FastAPI(
        title="micronf agent",
        version=__version__,
        description="Southbound API of a micronf agent: deploy processing graphs of µNFs on this machine, "
                    "remove them, read their counters. Every error reply is `{\"error\": kind, \"detail\": message}`.",
    )
    _install_error_handlers(app)
    lifecycle = threading.Lock()  # one deploy/remove at a time: names, CPUs and segments never race
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))

    @app.post("/v1/deployments", status_code=201, response_model=DeploymentInfo, tags=["deployments"],
              summary="Deploy a processing graph", responses=_errors(400, 409, 422, 500))
    def deploy(req: DeployRequest, response: Response) -> DeploymentInfo:
        """Create the deployment's memory, start its µNFs and its Rx/Tx services. Comes up whole or
        is rolled back whole (500 `deployment_failed` says why)."""
        with lifecycle:
            info = agent.deploy(req)
        response.headers["Location"] = f"/v1/deployments/{info.name}"
        return info

    @app.get("/v1/deployments", response_model=list[DeploymentInfo], tags=["deployments"],
             summary="List deployments")
    def deployments() -> list[DeploymentInfo]:
        """Every deployment this agent runs, with its processes."""
        return agent.deployments()

    @app.get("/v1/deployments/{name}", response_model=DeploymentInfo, tags=["deployments"],
             summary="Get one deployment", responses=_errors(404, 422))
    def deployment(name: str) -> DeploymentInfo:
        """The deployment's nodes, exits, outputs and processes."""
        return agent.deployment(name)

    @app.delete("/v1/deployments/{name}", status_code=204, response_class=Response, tags=["deployments"],
                summary="Remove a deployment", responses=_errors(404, 422))
    def remove(name: str) -> Response:
        """Stop every process of the deployment and free its shared memory."""
        with lifecycle:
            agent.remove(name)
        return Response(status_code=204)

    @app.get("/v1/deployments/{name}/stats", response_model=GraphStats, tags=["deployments"],
             summary="Counters of one deployment", responses=_errors(404, 422))
    def stats(name: str) -> GraphStats:
        """Per-µNF and per-port counters, pool, Rx/Tx services, latency, conservation, scaling and
        restart events."""
        return agent.stats(name)

    @app.get("/health", response_model=Health, tags=["agent"], summary="Agent health")
    def health() -> Health:
        """Liveness, uptime and how many processes are alive."""
        return agent.health()

    @app.get("/metrics", response_class=Response, tags=["agent"], summary="Prometheus metrics",
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    def metrics() -> Response:
        """Every deployment's counters in the Prometheus text format (read at scrape time)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def stop_all(agent: AgentCore) -> None:
    """Remove every deployment, then call the agent's ``close()`` if it has one (agent shutdown).

    A deployment that vanishes meanwhile is fine; any other failure is logged and the rest are
    still removed, so one stuck deployment does not leave the others' processes running.
    """
    for info in agent.deployments():
        try:
            agent.remove(info.name)
        except DeploymentNotFoundError:
            pass
        except Exception:
            log.exception("removing deployment %r at shutdown failed", info.name)
    close = getattr(agent, "close", None)
    if callable(close):
        close()
