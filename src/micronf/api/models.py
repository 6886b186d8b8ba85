"""The agent's southbound API data: what a deployment asks for and what the agent reports.

These pydantic models are the contract between the orchestrator (or an operator with curl) and
an agent: the HTTP server validates requests with them and serializes replies from them, the
Prometheus collector reads the same stats, and the Python :class:`~micronf.agent.core.Agent`
takes and returns them directly. Requests are strict (``extra="forbid"``): a misspelt field is a
422 naming it, not a silently ignored option.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from micronf.dataplane.pool import DEFAULT_FRAME_CAPACITY, MAX_FRAME_CAPACITY
from micronf.packet.rules import FlowRule
from micronf.runtime.graph import GraphSpec, Policy

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
MAX_POOL_SLOTS = 1 << 24  # 16 M buffers of ~2 KB: 35 GB, more than any machine gives a graph


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# -- requests -----------------------------------------------------------------------------------
class OutputSpec(_Strict):
    """Where the Tx service sends one exit of the graph."""

    backend: dict[str, object] = Field(description='a Tx backend spec, e.g. {"kind": "afpacket", "iface": "veth1"}, '
                                       '{"kind": "pcap", "path": "out.pcap"} (a name inside the agent\'s data '
                                       'directory) or {"kind": "null"}')
    next_hop_mac: str | None = Field(None, description="rewrite the destination MAC to this (None: leave it)")
    overwrite: bool = Field(False, description="a pcap output may replace an existing file (default: refused)")

    @field_validator("next_hop_mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is not None and not _MAC.match(v):
            raise ValueError(f"not a MAC address: {v!r} (expected aa:bb:cc:dd:ee:ff)")
        return v


class AutoscaleSpec(_Strict):
    """Drop-driven scale-out (§IV-E) and idle-driven scale-in of the µNFs behind each port."""

    enabled: bool = True
    interval_s: float = Field(0.25, gt=0, le=10, description="how often every egress→ingress pair is sampled")
    window: int = Field(4, ge=1, le=1000, description="consecutive samples with drops that trigger a scale-out")
    min_drops: int = Field(1, ge=1, description="drops per sample that count as 'dropping'")
    cooldown_s: float = Field(5.0, ge=0, description="no further decision for this node until this has passed")
    max_instances: int = Field(4, ge=1, le=8)
    scale_in: bool = True
    idle_window: int = Field(20, ge=1, description="consecutive low-load samples before an instance is removed")
    idle_busy: float = Field(0.2, ge=0, le=1, description="a group is low-load when its total busy fraction is "
                             "below this times (instances - 1)")
    by_flow: bool = Field(True, description="scale out with flow affinity (consistent hash) instead of round-robin")


class DeployRequest(_Strict):
    """Deploy one processing graph: its µNFs, where its packets come from and where they go."""

    name: str = Field(description="deployment name: lowercase letters, digits and '-', at most 40",
                      json_schema_extra={"pattern": _NAME.pattern})
    graph: GraphSpec
    rx: dict[str, object] | None = Field(None, description='an Rx backend spec, e.g. {"kind": "generator", ...}, '
                                         '{"kind": "pcap", "path": NAME} (a capture in the agent\'s data directory) or '
                                         '{"kind": "afpacket", "iface": ...}; '
                                         "None: the graph gets no traffic from this agent")
    rules: list[FlowRule] = Field(default_factory=list, description="5-tuple rules of the Rx service (empty: all)")
    outputs: dict[str, OutputSpec] = Field(default_factory=dict, description="exit name → output; exits not "
                                           "listed are drained and counted as dropped (reason no_output)")
    capture_drops: bool = Field(False, description="make every drop reason an exit (e.g. to write it to a pcap)")
    on_full: Literal["drop", "wait"] = Field(
        "drop", description="what a µNF does with a packet whose next ring is full: 'drop' counts it (reason "
        "full) so a slow µNF never stalls the ones before it; 'wait' holds it until there is room, pushing "
        "back to the Rx service (which then counts entry_full)")
    autoscale: AutoscaleSpec = Field(default_factory=AutoscaleSpec)
    mode: Literal["pipelined", "replicas"] = Field(
        "pipelined", description="'pipelined' (the paper's model): one process per µNF or fused cluster, the "
        "Rx and Tx services in processes of their own, packets handed between cores through rings; 'replicas': "
        "`replicas` run-to-completion copies of the graph, each one process pinned to its own core running its "
        "shard of the input (by flow: every packet of a flow goes to one replica) through every µNF fused, then "
        "out; the graph must fuse whole (no parallel Branch/Sync group, every µNF fed only by the one before)")
    replicas: int = Field(1, ge=1, le=64, description="copies of the graph when mode is 'replicas'")
    replica_cpus: list[int] | None = Field(None, description="CPU of each replica (None: replica i on CPU i modulo "
                                           "the agent's CPUs)")
    rx_cpu: int | None = Field(None, ge=0, description="CPU for the Rx service (None: any)")
    tx_cpu: int | None = Field(None, ge=0, description="CPU for the Tx service (None: any)")
    io_policy: Policy = "other"
    burst: int = Field(64, ge=1, le=1024, description="frames per Rx/Tx burst")
    io_coalesce_us: int = Field(100, ge=0, le=10_000, description="Rx/Tx interrupt moderation (a NIC's "
                                "rx-usecs/tx-usecs, adaptive): after a burst of less than 1/8 of the maximum, the "
                                "Rx (Tx) service waits this long before polling again, so low rates move in fuller "
                                "bursts at a fraction of the CPU, adding at most this much latency; busier bursts "
                                "never wait. 0: poll continuously")
    pool_slots: int = Field(0, ge=0, le=MAX_POOL_SLOTS, description="packet buffers (0: sized from the rings); "
                            "the agent also refuses a pool larger than the free shared memory")
    ring_capacity: int = Field(1024, ge=16, le=1 << 20, description="slots per ring, a power of two",
                               json_schema_extra={"enum": [1 << k for k in range(4, 21)]})

    @field_validator("ring_capacity")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of two (16, 32, ..., {1 << 20}), got {v}")
        return v
    frame_capacity: int = Field(DEFAULT_FRAME_CAPACITY, ge=64, le=MAX_FRAME_CAPACITY,
                                description="longest frame in bytes a packet buffer takes (1522: 1518 + one VLAN "
                                "tag; 9216 for jumbo frames; up to 65535 for GRO/TSO traffic); a longer frame is "
                                "dropped at Rx and counted as oversize, never cut")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"deployment name {v!r} must be 1-40 of [a-z0-9-], starting with a letter or digit")
        return v

    @model_validator(mode="after")
    def _replicas_consistent(self) -> DeployRequest:
        if self.mode == "pipelined" and self.replicas != 1:
            raise ValueError(f"replicas={self.replicas} needs mode 'replicas' (pipelined graphs scale per µNF)")
        if self.replica_cpus is not None and len(self.replica_cpus) != self.replicas:
            raise ValueError(f"replica_cpus names {len(self.replica_cpus)} CPUs for {self.replicas} replicas")
        if self.replica_cpus is not None and any(c < 0 for c in self.replica_cpus):
            raise ValueError("replica_cpus must be CPU numbers (>= 0)")
        return self

    @model_validator(mode="after")
    def _graph_named(self) -> DeployRequest:
        if self.graph.name != self.name:
            object.__setattr__(self, "graph", self.graph.model_copy(update={"name": self.name}))
        return self


# -- replies ------------------------------------------------------------------------------------
class ProcessInfo(BaseModel):
    """One OS process of a deployment (a µNF, a fused cluster, or the Rx/Tx service)."""

    index: int
    nodes: list[str]
    pid: int
    alive: bool
    cpu: int | None
    policy: str
    restarts: int
    replica: int | None = Field(None, description="mode 'replicas': the replica this process runs")


class ScaleEventInfo(BaseModel):
    at: float
    node: str
    instance: str
    action: Literal["out", "in"]
    reason: str


class RestartEventInfo(BaseModel):
    at: float
    process: int
    nodes: list[str]
    exit_status: str
    reclaimed_buffers: int = Field(description="packets the dead process held that were lost (counted as "
                                   "'<nodes>.lost_in_crash'); buffers it had already counted as sent or dropped "
                                   "are reclaimed too but not counted again")
    downtime_ms: float
    replica: int | None = Field(None, description="mode 'replicas': the replica whose process died")


class DeploymentInfo(BaseModel):
    """A deployment as the agent runs it."""

    name: str
    segment: str = Field(description="its shared-memory segment (mode 'replicas': replica 0's)")
    segments: list[str] = Field(default_factory=list, description="every segment of the deployment: its one, "
                                "or (mode 'replicas') each replica's in replica order")
    mode: Literal["pipelined", "replicas"] = "pipelined"
    state: Literal["running", "stopping"]
    created_at: float
    entry: str
    nodes: list[str]
    exits: list[str]
    outputs: dict[str, str]
    processes: list[ProcessInfo]


class IngressStats(BaseModel):
    src: str
    ring: int
    occupancy: int
    capacity: int


class EgressStats(BaseModel):
    dst: str
    kind: str
    sent: int
    full: int


class NodeStatsInfo(BaseModel):
    """Counters of one µNF instance."""

    name: str
    type: str
    instance_of: str | None
    runtime: dict[str, int]
    verdicts: dict[str, int]
    counters: dict[str, int]
    ingress: list[IngressStats]
    egress: list[EgressStats]


class LatencyStats(BaseModel):
    """Rx stamp → Tx end-to-end latency of transmitted packets, in nanoseconds."""

    count: int
    p50_ns: float
    p90_ns: float
    p99_ns: float
    max_ns: float
    buckets: list[tuple[float, int]] = Field(description="(upper bound ns, count) per non-empty bucket")


class Conservation(BaseModel):
    """``rx == tx + dropped + in_flight``: every packet that entered is accounted for.

    Read live from counters that only grow, twice: ``ok`` is false only when the readings prove a
    leak or a lost packet (see ``Deployment.stats``); the figures are the second reading's, so
    under traffic they may differ by what moved meanwhile, idle they add up exactly."""

    rx: int
    tx: int
    dropped: int
    in_flight: int
    ok: bool


class ReplicaStats(BaseModel):
    """One replica of a replicated graph: its own counters (the graph's are their sums)."""

    index: int
    segment: str
    cpu: int
    rx: dict[str, int]
    tx: dict[str, dict[str, int]]
    drops: dict[str, int]
    nodes: list[NodeStatsInfo]
    conservation: Conservation
    retired: bool = Field(False, description="a scale-in removed it: its final figures (still in the sums)")


class GraphStats(BaseModel):
    """Every counter of a deployment; a replicated one reads as one graph (every counter the sum over
    its replicas, conservation judged for each), with each replica's own in ``replicas``."""

    name: str
    at: float
    rx: dict[str, int]
    tx: dict[str, dict[str, int]]
    drops: dict[str, int] = Field(description="every drop in the graph by 'where.reason'")
    nodes: list[NodeStatsInfo]
    pool: dict[str, int]
    latency: LatencyStats
    conservation: Conservation
    scale_events: list[ScaleEventInfo]
    restarts: list[RestartEventInfo]
    replicas: list[ReplicaStats] = Field(default_factory=list, description="mode 'replicas': per replica")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    uptime_s: float
    deployments: int
    processes: int
    processes_alive: int


ErrorKind = Annotated[str, Field(description="machine-readable error kind")]


class ErrorReply(BaseModel):
    """Body of every 4xx/5xx reply."""

    error: ErrorKind
    detail: str
