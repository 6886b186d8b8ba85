"""What the orchestrator's northbound API speaks: its requests, replies and errors.

Why apart from :mod:`~micronf.orchestrator.service`: the HTTP layer (:mod:`~micronf.orchestrator.api`)
and the clients (``micronf deploy``, :func:`read_sfc_source`) need the shapes, not the service.
"""

from __future__ import annotations

from glob import glob
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from micronf.api.httperrors import ApiError
from micronf.api.models import Conservation, DeployRequest, GraphStats, LatencyStats
from micronf.documents import SpecError, read_document
from micronf.orchestrator.arrange import Arrangement
from micronf.orchestrator.models import Composition, Rewrite
from micronf.orchestrator.placement import Traffic
from micronf.orchestrator.store import State
from micronf.runtime.graph import GraphSpec

# -- errors (each becomes {"error": kind, "detail": message} with its status) --------------------


class InvalidSFCError(ApiError):
    """The SFC, its files or its traffic options are invalid, or it cannot be placed as asked."""

    kind = "invalid_sfc"
    status = 400


class SFCNotFoundError(ApiError):
    kind = "not_found"
    status = 404


class SFCExistsError(ApiError):
    kind = "exists"
    status = 409


class AgentRejectedError(ApiError):
    """An agent refused the generated request (e.g. an Rx backend it cannot open)."""

    kind = "rejected_by_agent"
    status = 400


class DeployFailedError(ApiError):
    """An agent failed to bring the deployment up; everything was rolled back."""

    kind = "deployment_failed"
    status = 502


class AgentUnavailableError(ApiError):
    kind = "agent_unreachable"
    status = 503


# -- requests and replies ------------------------------------------------------------------------
class SFCCreate(Traffic):
    """``POST /v1/sfcs`` and ``POST /v1/plan``: an SFC request, the files it imports, and its traffic."""

    sfc: str | dict[str, Any] = Field(description="the SFC request: YAML or JSON text, or the object itself")
    files: dict[str, str] = Field(
        default_factory=dict, description="the files its `imports` name: path relative to the SFC -> content "
        "(e.g. {\"templates/edge-firewall.yaml\": \"kind: vnf-template ...\"})")
    name: str | None = Field(None, description="deployment name (default: the SFC's name)")
    agent: str | None = Field(None, description="run on this agent (name or URL; default: hinted or least loaded)")
    mode: Literal["auto", "pipelined", "replicas"] = Field(
        "auto", description="how the graph runs on the agent's cores: 'pipelined' (the paper's model: a process per "
        "µNF or fused cluster; the better of plain and scaled-out bottleneck), 'replicas' (run-to-completion copies, "
        "one per core; a chain only) or 'auto' (the cost model's choice, see `micronf plan`)")
    replicas: int | None = Field(None, ge=1, le=64, description="copies when replicas are chosen (default: one per "
                                 "CPU of the agent)")


class SFCInfo(BaseModel):
    """A deployment as the orchestrator knows it."""

    name: str
    sfc: str = Field(description="the SFC request's name")
    state: State
    error: str | None = Field(description="why the last deploy/reconcile failed (None: it did not)")
    created_at: float
    updated_at: float
    agents: list[str] = Field(description="URL of every agent running a part")
    graph: GraphSpec = Field(description="the optimized µNF graph as deployed (with the CPUs placement chose)")
    mode: Literal["pipelined", "replicas"] = Field("pipelined", description="how it runs (placement's choice)")
    replicas: int = Field(1, description="copies of the graph when mode is replicas")
    outputs: dict[str, list[str]] = Field(description="SFC output -> the graph exits (Tx names) it leaves by")
    rewrites: list[Rewrite]


class PlanReply(BaseModel):
    """A dry run: what ``POST /v1/sfcs`` would deploy, where."""

    name: str
    composition: Composition
    parts: dict[str, DeployRequest] = Field(description="agent URL -> the request it would get")
    arrangement: Arrangement = Field(description="pipelined, mix or replicas: the choice, the alternatives' "
                                     "predicted rates, and why")


class UNFStats(BaseModel):
    """One µNF of a deployment (its scaled-out instances summed)."""

    name: str
    type: str
    agent: str
    cpu: int | None
    instances: int
    packets_in: int
    packets_out: int
    dropped: int
    drops: dict[str, int] = Field(description="by reason (the µNF's own drop reasons, full/unconnected egress)")
    ring_occupancy: int = Field(description="packets waiting in its ingress rings")
    ring_capacity: int
    cycles: int = Field(description="CPU cycles spent processing (busy time)")


class SFCStats(BaseModel):
    """Counters of one deployment: per SFC, per µNF, and the raw agent snapshots."""

    name: str
    state: State
    at: float = Field(description="when the (latest) agent snapshot was taken, Unix time")
    packets_in: int = Field(description="packets the Rx service accepted into the graph")
    packets_out: int
    outputs: dict[str, int] = Field(description="packets sent per SFC output (exits of no output by exit name)")
    drops: dict[str, int] = Field(description="every drop by 'where.reason'")
    latency: LatencyStats = Field(description="Rx→Tx latency (end to end while an SFC runs on one agent)")
    conservation: Conservation = Field(description="rx == tx + dropped + in_flight, summed over parts")
    unfs: list[UNFStats]
    graphs: dict[str, GraphStats] = Field(description="agent URL -> its raw snapshot")


class ReconcileAction(BaseModel):
    """What :meth:`Orchestrator.reconcile` did to one deployment."""

    model_config = ConfigDict(frozen=True)

    name: str
    before: State
    after: State | None = Field(description="None: forgotten (its removal completed)")
    action: str


# -- the SFC source ------------------------------------------------------------------------------
def read_sfc_source(path: Path | str) -> tuple[str, dict[str, str]]:
    """The text of an SFC file and of every file its imports match (keyed relative to the SFC's
    directory): what a client sends in :class:`SFCCreate` so the orchestrator needs no access to
    the client's files. Imports outside the SFC's directory are refused (they have no relative key)."""
    path = Path(path)
    doc = read_document(path)
    imports = doc.get("imports", []) if isinstance(doc, dict) else []
    files: dict[str, str] = {}
    base = path.parent.resolve()
    for i, pattern in enumerate(imports if isinstance(imports, list) else []):
        for match in sorted(glob(str(path.parent / str(pattern)))):
            resolved = Path(match).resolve()
            if not resolved.is_relative_to(base):
                raise SpecError(str(path), f"imports[{i}]", "a file in the SFC's directory or below it "
                                "(it is sent to the orchestrator by its relative path)", repr(match))
            files[resolved.relative_to(base).as_posix()] = resolved.read_text(encoding="utf-8")
    return path.read_text(encoding="utf-8"), files
