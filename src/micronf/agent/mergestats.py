"""A replicated graph's counters read as one graph's: the sums of its replicas' (mode ``replicas``).

Every replica is a whole copy of the graph in a segment of its own, counting what its shard of the
input did. :func:`merge` adds them up: Rx/Tx service counters, drops by ``where.reason``, the pool,
and per µNF (same name in every replica) its runtime counters, verdicts and own counters (CountUrl's
per-URL counts are µNF counters, so they merge too), ring occupancies and egress counts; the
latency histogram is merged bucket by bucket before its percentiles are taken. Conservation is
judged per replica (each on its own monotonic counters, see :class:`~micronf.agent.stats.GraphCounters`)
and holds for the graph when it holds for every replica; its figures are the sums. Each replica's
own figures stay in ``GraphStats.replicas``; a replica a scale-in removed counts with its final
figures (``retired``), so the graph's counters never go back.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import numpy as np
from pydantic import BaseModel

from micronf.api.models import (
    Conservation,
    EgressStats,
    GraphStats,
    IngressStats,
    LatencyStats,
    NodeStatsInfo,
    ReplicaStats,
    RestartEventInfo,
    ScaleEventInfo,
)
from micronf.services.iomem import H_MAX, percentiles

ALL_OF = ("exhausted",)  # Rx flags: the graph's is set when every replica's is


class Part(BaseModel):
    """One replica's stats, where it runs, and its raw latency histogram (``tx.hist``); ``retired``:
    its final figures, a scale-in removed it (kept in the agent's record, so a plain model)."""

    index: int
    segment: str
    cpu: int
    stats: GraphStats
    hist: list[int]
    retired: bool = False


def add(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    """Key-wise sum (keys in first-seen order)."""
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def _nodes(parts: Sequence[list[NodeStatsInfo]]) -> list[NodeStatsInfo]:
    """Per µNF name, its counters summed over the replicas (the layouts are the same)."""
    by_name: dict[str, list[NodeStatsInfo]] = {}
    for nodes in parts:
        for n in nodes:
            by_name.setdefault(n.name, []).append(n)
    out = []
    for name, ns in by_name.items():
        first = ns[0]
        ingress = [IngressStats(src=i.src, ring=i.ring, occupancy=sum(n.ingress[k].occupancy for n in ns),
                                capacity=sum(n.ingress[k].capacity for n in ns)) for k, i in enumerate(first.ingress)]
        egress = [EgressStats(dst=e.dst, kind=e.kind, sent=sum(n.egress[k].sent for n in ns),
                              full=sum(n.egress[k].full for n in ns)) for k, e in enumerate(first.egress)]
        out.append(NodeStatsInfo(name=name, type=first.type, instance_of=first.instance_of,
                                 runtime=add(n.runtime for n in ns), verdicts=add(n.verdicts for n in ns),
                                 counters=add(n.counters for n in ns), ingress=ingress, egress=egress))
    return out


def _latency(hists: Sequence[list[int]]) -> LatencyStats:
    """Percentiles of the replicas' histograms merged (counts and sums add up, the maximum is the largest)."""
    merged = np.sum(np.array(hists, dtype=np.int64), axis=0)
    merged[H_MAX] = max(h[H_MAX] for h in hists)
    return LatencyStats(**percentiles(merged))


def merge(name: str, parts: Sequence[Part], *, scale_events: list[ScaleEventInfo],
          restarts: list[RestartEventInfo]) -> GraphStats:
    """The graph ``name`` as one: its replicas' ``parts`` summed (see the module docstring)."""
    stats = [p.stats for p in parts]
    rx = add(s.rx for s in stats)
    for flag in ALL_OF:
        if flag in rx:
            rx[flag] = min(s.rx.get(flag, 0) for s in stats)
    exits = list(dict.fromkeys(e for s in stats for e in s.tx))
    tx = {e: add(s.tx[e] for s in stats if e in s.tx) for e in exits}
    cons = [s.conservation for s in stats]
    conservation = Conservation(rx=sum(c.rx for c in cons), tx=sum(c.tx for c in cons),
                                dropped=sum(c.dropped for c in cons), in_flight=sum(c.in_flight for c in cons),
                                ok=all(c.ok for c in cons))
    replicas = [ReplicaStats(index=p.index, segment=p.segment, cpu=p.cpu, rx=p.stats.rx, tx=p.stats.tx,
                             drops=p.stats.drops, nodes=p.stats.nodes, conservation=p.stats.conservation,
                             retired=p.retired)
                for p in parts]
    return GraphStats(name=name, at=time.time(), rx=rx, tx=tx, drops=add(s.drops for s in stats),
                      nodes=_nodes([s.nodes for s in stats]), pool=add(s.pool for s in stats),
                      latency=_latency([p.hist for p in parts]), conservation=conservation,
                      scale_events=list(scale_events), restarts=sorted(restarts, key=lambda ev: ev.at),
                      replicas=replicas)
