"""The agent's southbound HTTP API: a FastAPI app over an :class:`AgentCore`.

Why a thin layer: everything that deploys, supervises and counts lives in the agent core; this
module only validates requests (with the pydantic models of :mod:`micronf.api.models`), runs the
core's blocking calls in FastAPI's threadpool (every endpoint is a plain ``def``), serializes
deploy/remove with one lock so two deployments never race over CPUs or names, and turns every
failure into one JSON shape, ``{"error": kind, "detail": message}`` (:class:`ErrorReply`), so a
client never has to parse FastAPI's or Starlette's defaults and never sees a traceback.

In front of it all, :class:`micronf.api.security.Guard`: a bearer token on every route but
``/health`` (and ``/metrics`` from loopback), and a bounded request body. The deploy body is
decoded and validated in a worker thread (:func:`micronf.api.httperrors.json_body`), so a large
request never holds up the event loop; a graph of more than ``max_nodes`` µNFs is a 422.

Routes (all JSON except ``/metrics``):

========================================  =====================================================
``POST /v1/deployments``                  deploy a graph (201 DeploymentInfo; 400/409/413/422/500)
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
from typing import Any

from fastapi import Depends, FastAPI, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from micronf import __version__
from micronf.agent.metrics import AgentCollector
from micronf.api.errors import DeploymentNotFoundError
from micronf.api.httperrors import Precheck, body_openapi, error_responses, install_error_handlers, json_body
from micronf.api.models import DeploymentInfo, DeployRequest, GraphStats, Health
from micronf.api.protocol import AgentCore
from micronf.api.security import MAX_BODY, Guard, install_openapi

log = logging.getLogger(__name__)


_ERRORS = {
    400: "the request cannot be deployed as asked, or its body is not JSON",
    404: "no deployment has this name",
    409: "a deployment with this name already runs",
    422: "the request does not match the schema; `detail` names each bad field",
    500: "the deployment did not come up and was rolled back, or the agent failed",
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route can return."""
    return error_responses(_ERRORS, *statuses)


MAX_NODES = 512  # µNFs per deployment: each is a process on this machine


def _node_limit(max_nodes: int) -> Precheck:
    """The precheck of a deploy body: at most ``max_nodes`` µNFs (and 8 edges per µNF), counted
    in the decoded JSON before the (GIL-holding) model validation of a possibly huge graph."""

    def check(data: Any) -> None:
        graph = data.get("graph") if isinstance(data, dict) else None
        for key, limit in (("nodes", max_nodes), ("edges", 8 * max_nodes)):
            items = graph.get(key) if isinstance(graph, dict) else None
            if isinstance(items, list) and len(items) > limit:
                raise RequestValidationError([{  # no input: the message gives the count, not the whole list
                    "type": "too_long", "loc": ("body", "graph", key),
                    "msg": f"{len(items)} {'µNFs' if key == 'nodes' else 'edges'}, at most {limit} per "
                           "deployment on this agent"}])

    return check


def create_app(agent: AgentCore, *, token: str | None, metrics_public: bool = False, max_body: int = MAX_BODY,
               max_nodes: int = MAX_NODES) -> FastAPI:
    """The agent's HTTP app: the southbound API, ``/health``, ``/metrics`` and the OpenAPI schema.

    ``token``: the bearer token every route but ``/health`` needs (``None``: no authentication,
    for an app that is not exposed); ``metrics_public``: ``/metrics`` without the token from any
    client (default: only from loopback); ``max_body``: bytes per request body (larger: 413);
    ``max_nodes``: µNFs per deployment (more: 422). Each app gets its own Prometheus registry, so
    several apps (tests, or agents in one process) never share or collide on metrics.
    """
    app = FastAPI(
        title="micronf agent",
        version=__version__,
        description="Southbound API of a micronf agent: deploy processing graphs of µNFs on this machine, "
                    "remove them, read their counters. Every error reply is `{\"error\": kind, \"detail\": message}`.",
    )
    install_error_handlers(app)
    app.add_middleware(Guard, token=token, metrics_public=metrics_public, max_body=max_body)
    body = json_body(DeployRequest, _node_limit(max_nodes))
    lifecycle = threading.Lock()  # one deploy/remove at a time: names, CPUs and segments never race
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))

    @app.post("/v1/deployments", status_code=201, response_model=DeploymentInfo, tags=["deployments"],
              summary="Deploy a processing graph", responses=_errors(400, 409, 422, 500),
              openapi_extra=body_openapi(DeployRequest))
    def deploy(response: Response, req: DeployRequest = Depends(body)) -> DeploymentInfo:  # noqa: B008
        """Create the deployment's memory, start its µNFs and its Rx/Tx services. Comes up whole or
        is rolled back whole (500 `deployment_failed` says why). Capture files are names inside
        the agent's data directory."""
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

    install_openapi(app, DeployRequest)
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
