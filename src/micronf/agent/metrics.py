"""Prometheus metrics of an agent, read from the agent at scrape time.

Why a custom collector instead of ``Counter``/``Gauge`` objects: the counters already live in
shared memory (bumped once per batch by compiled code) and the agent reports them as
:class:`~micronf.api.models.GraphStats`; copying them into client-library objects on every change
would be a second source of truth. :class:`AgentCollector` instead asks the agent for
``deployments()`` and ``stats(name)`` when Prometheus scrapes and turns the snapshot into metric
families, so ``/metrics`` and ``GET /v1/deployments/{name}/stats`` can never disagree.

Every series carries ``deployment``; per-µNF series also ``node``, ``type`` and ``instance_of``
(the node a scaled-out instance copies, ``""`` for an original). Families:

* µNF loop: ``micronf_nf_{rx,tx}_packets_total``, ``micronf_nf_{batches,cycles,idle_polls,yields}_total``,
  ``micronf_nf_verdicts_total{verdict}`` (packets per egress label),
  ``micronf_nf_drops_total{reason,source}`` (``source="nf"``: the µNF's drop verdicts;
  ``"runtime"``: unconnected labels, full egresses, bad verdicts), ``micronf_nf_counter_total{counter}``
  (the µNF's own counters).
* ports: ``micronf_ring_occupancy`` / ``micronf_ring_capacity`` per ingress ``{src,ring}``;
  ``micronf_egress_{sent,full}_total{src,dst,kind}`` per egress.
* graph: ``micronf_graph_drops_total{where,reason}``, ``micronf_in_flight``, ``micronf_conservation_ok``,
  ``micronf_pool_{free,slots}``, ``micronf_pool_{allocations,alloc_failures}_total``,
  ``micronf_rx_service_total{counter}``, ``micronf_tx_service_total{output,counter}``, ``micronf_latency_seconds``,
  ``micronf_scale_events_total{node,action}``, ``micronf_reclaimed_buffers_total``.
* replicas (a deployment of mode ``replicas``; every family above is then the sum over its replicas):
  ``micronf_replica_rx_service_total{replica,counter}``, ``micronf_replica_tx_service_total{replica,output,counter}``,
  ``micronf_replica_in_flight{replica}``, ``micronf_replica_conservation_ok{replica}``.
* processes and agent: ``micronf_process_restarts_total{process,nodes}``, ``micronf_process_alive``,
  ``micronf_agent_uptime_seconds``, ``micronf_deployments``, ``micronf_processes``, ``micronf_processes_alive``.

Counter names end in ``_total`` in the exposition (the client library appends it to the family name).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from micronf.api.errors import DeploymentNotFoundError
from micronf.api.models import DeploymentInfo, GraphStats, LatencyStats, NodeStatsInfo
from micronf.runtime.verdict import Verdict

if TYPE_CHECKING:
    from micronf.api.protocol import AgentCore

# runtime counter of the µNF loop (micronf.runtime.loop.RC_NAMES) -> (family, help)
_LOOP = {
    "rx": ("micronf_nf_rx_packets", "Packets a µNF received from its ingress ports."),
    "tx": ("micronf_nf_tx_packets", "Packets a µNF handed to an egress (or to the next fused µNF)."),
    "batches": ("micronf_nf_batches", "Non-empty batches a µNF processed."),
    "cycles": ("micronf_nf_cycles", "CPU cycles (TSC) a µNF spent in its kernel and routing."),
    "idle_polls": ("micronf_nf_idle_polls", "Polls that found every ingress of a µNF empty."),
    "yields": ("micronf_nf_yields", "Voluntary CPU yields of a µNF (§VI-E)."),
}
# GraphStats.pool key -> (family, help, is a counter)
_POOL = {
    "free": ("micronf_pool_free", "Free packet buffers in the deployment's pool.", False),
    "slots": ("micronf_pool_slots", "Packet buffers in the deployment's pool.", False),
    "allocated": ("micronf_pool_allocations", "Buffers allocated from the deployment's pool.", True),
    "alloc_failures": ("micronf_pool_alloc_failures", "Buffer allocations that found the pool empty.", True),
}
# runtime losses reported as drops with source="runtime"
_RUNTIME_DROPS = ("unconnected", "full", "bad_verdict")
_NODE_LABELS = ("deployment", "node", "type", "instance_of")
_F = TypeVar("_F", CounterMetricFamily, GaugeMetricFamily)


class _Families:
    """The metric families of one scrape, created on first use; label names are fixed per family."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def _family(self, kind: type[_F], name: str, doc: str, labels: Mapping[str, str]) -> _F:
        fam = self._families.get(name)
        if fam is None:
            fam = self._families[name] = kind(name, doc, labels=list(labels))
        if not isinstance(fam, kind):
            raise TypeError(f"metric {name} used as both {fam.type} and {kind.__name__}")
        return fam

    def counter(self, name: str, doc: str, labels: Mapping[str, str], value: float) -> None:
        self._family(CounterMetricFamily, name, doc, labels).add_metric(list(labels.values()), value)

    def gauge(self, name: str, doc: str, labels: Mapping[str, str], value: float) -> None:
        self._family(GaugeMetricFamily, name, doc, labels).add_metric(list(labels.values()), value)

    def add(self, family: Metric) -> None:
        """A family built whole by the caller (the latency histogram)."""
        if family.name in self._families:
            self._families[family.name].samples.extend(family.samples)
        else:
            self._families[family.name] = family

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


class AgentCollector:
    """A prometheus_client collector over an agent: one snapshot of every deployment per scrape.

    Register it on a private :class:`prometheus_client.CollectorRegistry` (the server does, one per
    app); it has no ``describe`` so registering never calls the agent.
    """

    def __init__(self, agent: AgentCore) -> None:
        self._agent = agent

    def collect(self) -> Iterable[Metric]:
        out = _Families()
        health = self._agent.health()
        out.gauge("micronf_agent_uptime_seconds", "Seconds since the agent started.", {}, health.uptime_s)
        out.gauge("micronf_deployments", "Deployments the agent runs.", {}, health.deployments)
        out.gauge("micronf_processes", "Processes of every deployment (µNFs, fused clusters, Rx/Tx).", {},
                  health.processes)
        out.gauge("micronf_processes_alive", "Processes of every deployment that are alive.", {},
                  health.processes_alive)
        for info in self._agent.deployments():
            try:
                stats = self._agent.stats(info.name)
            except DeploymentNotFoundError:  # removed between the listing and now
                continue
            _processes(out, info)
            _graph(out, stats)
            for node in stats.nodes:
                _node(out, stats.name, node)
        return out


def _processes(out: _Families, info: DeploymentInfo) -> None:
    for p in info.processes:
        labels = {"deployment": info.name, "process": str(p.index), "nodes": ",".join(p.nodes)}
        out.counter("micronf_process_restarts", "Times the agent restarted this process after it died.",
                    labels, p.restarts)
        out.gauge("micronf_process_alive", "1 if the process is alive.", labels, 1 if p.alive else 0)


def _graph(out: _Families, s: GraphStats) -> None:
    dep = {"deployment": s.name}
    for key, n in s.drops.items():
        where, _, reason = key.rpartition(".")
        out.counter("micronf_graph_drops", "Every drop in the deployment, by where it happened and why.",
                    {**dep, "where": where, "reason": reason}, n)
    c = s.conservation
    out.gauge("micronf_in_flight", "Packets inside the graph (in rings or being processed).", dep, c.in_flight)
    out.gauge("micronf_conservation_ok", "1 if rx == tx + dropped + in_flight holds (judged on a consistent "
              "live reading, see docs/agent.md).", dep, 1 if c.ok else 0)
    for key, (name, doc, is_counter) in _POOL.items():
        if key in s.pool:
            (out.counter if is_counter else out.gauge)(name, doc, dep, s.pool[key])
    _services(out, "micronf", "the deployment", dep, s.rx, s.tx)
    out.add(latency_histogram(s.name, s.latency))
    events = Counter((e.node, e.action) for e in s.scale_events)
    scalable = sorted({n.name for n in s.nodes if n.instance_of is None} | {node for node, _ in events})
    for node in scalable:
        for action in ("out", "in"):
            out.counter("micronf_scale_events", "Autoscaler decisions: instances added (out) or removed (in).",
                        {**dep, "node": node, "action": action}, events[node, action])
    out.counter("micronf_reclaimed_buffers", "Buffers reclaimed from crashed processes at their restart.", dep,
                sum(r.reclaimed_buffers for r in s.restarts))
    _replicas(out, s)


def _services(out: _Families, prefix: str, of: str, labels: Mapping[str, str], rx: Mapping[str, int],
              tx: Mapping[str, Mapping[str, int]]) -> None:
    """The Rx and Tx services' counters ``of`` the deployment or of one replica."""
    for key, n in rx.items():
        out.counter(f"{prefix}_rx_service", f"Rx service counters of {of}, by counter.", {**labels, "counter": key}, n)
    for output, counters in tx.items():
        for key, n in counters.items():
            out.counter(f"{prefix}_tx_service", f"Tx service counters per output of {of}, by counter.",
                        {**labels, "output": output, "counter": key}, n)


def _replicas(out: _Families, s: GraphStats) -> None:
    """Each running replica's own figures (the graph's families hold their sums, those of replicas a
    scale-in removed included: a removed replica's series end)."""
    for r in s.replicas:
        if r.retired:
            continue
        rep = {"deployment": s.name, "replica": str(r.index)}
        _services(out, "micronf_replica", "one replica", rep, r.rx, r.tx)
        out.gauge("micronf_replica_in_flight", "Packets inside one replica.", rep, r.conservation.in_flight)
        out.gauge("micronf_replica_conservation_ok", "1 if rx == tx + dropped + in_flight holds for one replica.",
                  rep, 1 if r.conservation.ok else 0)


def latency_histogram(deployment: str, lat: LatencyStats) -> HistogramMetricFamily:
    """Rx→Tx latency as a Prometheus histogram in seconds: cumulative buckets from the per-bucket
    counts; ``_sum`` is approximated as each packet at its bucket's upper bound (capped at the max)."""
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    approx_sum_ns = 0.0
    for bound_ns, n in sorted(lat.buckets):
        approx_sum_ns += n * min(bound_ns, lat.max_ns)
        cumulative += n
        if math.isfinite(bound_ns):
            buckets.append((repr(bound_ns / 1e9), cumulative))
    buckets.append(("+Inf", lat.count))
    fam = HistogramMetricFamily(
        "micronf_latency_seconds",
        "Rx stamp to Tx end-to-end latency of transmitted packets. _sum is approximate: each packet counts "
        "at its bucket's upper bound (at most the maximum seen).",
        labels=["deployment"])
    fam.add_metric([deployment], buckets, approx_sum_ns / 1e9)
    return fam


def _node(out: _Families, deployment: str, n: NodeStatsInfo) -> None:
    labels = dict(zip(_NODE_LABELS, (deployment, n.name, n.type, n.instance_of or ""), strict=True))
    for key, (name, doc) in _LOOP.items():
        if key in n.runtime:
            out.counter(name, doc, labels, n.runtime[key])
    drops = "Packets a µNF dropped, by reason (source nf: its drop verdicts; runtime: unconnected label, " \
            "full egress, bad verdict)."
    for name, count in n.verdicts.items():
        verdict = Verdict(name)
        if verdict.is_drop:
            out.counter("micronf_nf_drops", drops, {**labels, "reason": verdict.reason, "source": "nf"}, count)
        else:
            out.counter("micronf_nf_verdicts", "Packets a µNF sent to each of its egress labels.",
                        {**labels, "verdict": verdict}, count)
    for reason in _RUNTIME_DROPS:
        if reason in n.runtime:
            out.counter("micronf_nf_drops", drops, {**labels, "reason": reason, "source": "runtime"},
                        n.runtime[reason])
    for key, count in n.counters.items():
        out.counter("micronf_nf_counter", "A µNF's own counters (see `micronf nfs`), by counter.",
                    {**labels, "counter": key}, count)
    for ing in n.ingress:
        ring = {**labels, "src": ing.src, "ring": str(ing.ring)}
        out.gauge("micronf_ring_occupancy", "Handles waiting in a µNF's ingress ring.", ring, ing.occupancy)
        out.gauge("micronf_ring_capacity", "Capacity of a µNF's ingress ring.", ring, ing.capacity)
    for eg in n.egress:
        pair = {"deployment": deployment, "src": n.name, "dst": eg.dst, "kind": eg.kind}
        out.counter("micronf_egress_sent", "Packets an egress port sent to its destination.", pair, eg.sent)
        out.counter("micronf_egress_full", "Packets an egress port could not enqueue (destination full).", pair,
                    eg.full)
