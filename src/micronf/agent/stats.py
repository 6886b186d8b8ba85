"""A deployment's counters as the agent's API reports them, and live conservation.

Everything here reads the graph's segment (per-µNF runtime counters, the Rx/Tx services' counters,
the pool's monotonic counters) while packets move; nothing writes. :class:`GraphCounters` turns
them into one :class:`~micronf.api.models.GraphStats`: per-node counters, drops by reason, latency
percentiles, and ``rx == tx + dropped + in_flight`` judged without a torn snapshot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from micronf.api.models import (
    Conservation,
    DeployRequest,
    EgressStats,
    GraphStats,
    IngressStats,
    LatencyStats,
    NodeStatsInfo,
    RestartEventInfo,
    ScaleEventInfo,
)
from micronf.dataplane.pool import C_ALLOCATED, C_OWNER_FREED
from micronf.dataplane.ring import HEAD
from micronf.ports.base import EG_BRANCH, EG_LB_FLOW, EG_LB_RR, EG_LOCAL, EG_MARK_ONLY, EG_MARKER, EG_PP
from micronf.runtime.graph import NodePlan
from micronf.runtime.launch import GraphRuntime
from micronf.runtime.loop import (
    RC_BAD_VERDICT,
    RC_DROPPED,
    RC_EG_FULL0,
    RC_EG_SENT0,
    RC_FULL,
    RC_UNCONNECTED,
)
from micronf.runtime.verdict import drop_counts
from micronf.services.iomem import RX_COUNTERS, RX_INDEX, TX_COUNTERS, TX_INDEX, TX_WORDS, percentiles

EG_KIND_NAMES = {EG_PP: "pp", EG_BRANCH: "branch", EG_MARKER: "marker", EG_MARK_ONLY: "mark_only",
                 EG_LB_RR: "lb_rr", EG_LB_FLOW: "lb_flow", EG_LOCAL: "local"}
CONSERVATION_READS = 3  # pairs of passes live conservation is judged on (see GraphCounters._conservation)


@dataclass(frozen=True)
class _Tally:
    """Monotonic counters of one graph, read in one pass (see :meth:`GraphCounters._conservation`)."""

    accepted: int  # packets the Rx service put into the graph
    sent: int  # packets the Tx service sent
    done: int  # packets that left it: sent, refused, freed inside, lost in a µNF crash
    allocated: int  # buffers ever allocated
    freed: int  # buffers ever freed (by the owner, and through every return ring)


class GraphCounters:
    """The counters of one deployment: its runtime, its request, its exit names and its restarts
    (whose reclaimed buffers count as ``lost_in_crash``)."""

    def __init__(self, runtime: GraphRuntime, req: DeployRequest, exit_names: list[str],
                 restarts: list[RestartEventInfo], *, io_burst: int | None = None) -> None:
        self.runtime = runtime
        self.io_burst = max(req.burst, 256) if io_burst is None else io_burst  # frames an Rx/Tx burst moves
        self.req = req
        self.exit_names = exit_names
        self.restarts = restarts

    def _node_stats(self, node: NodePlan) -> NodeStatsInfo:
        g = self.runtime
        mem = g.memory()
        s = g.node_stats(node.name)
        rc = mem.runtime_counters(node)
        ingress = [IngressStats(src=i.src, ring=i.ring, occupancy=len(mem.rings[i.ring]) if i.ring >= 0 else 0,
                                capacity=mem.rings[i.ring].capacity if i.ring >= 0 else 0) for i in node.ingress]
        egress = [EgressStats(dst=e.dst, kind=EG_KIND_NAMES.get(e.kind, str(e.kind)), sent=int(rc[RC_EG_SENT0 + k]),
                              full=int(rc[RC_EG_FULL0 + k])) for k, e in enumerate(node.egress)]
        return NodeStatsInfo(name=node.name, type=node.type, instance_of=node.instance_of, runtime=s.runtime,
                             verdicts=s.verdicts, counters=s.counters, ingress=ingress, egress=egress)

    def _tally(self) -> _Tally:
        """One pass over the monotonic counters live conservation is judged on (see :meth:`_conservation`)."""
        g = self.runtime
        mem = g.memory()
        seg = g.segment()
        accepted = int(seg.view("rx.stats", np.int64)[RX_INDEX["accepted"]])
        txv = seg.view("tx.stats", np.int64).reshape(-1, TX_WORDS)[: len(self.exit_names)]
        sent = int(txv[:, TX_INDEX["frames"]].sum())
        done = sent + int(txv[:, [TX_INDEX["refused"], TX_INDEX["no_output"]]].sum())
        for node in g.layout.nodes:
            rc = mem.runtime_counters(node)
            done += int(rc[RC_DROPPED] + rc[RC_UNCONNECTED] + rc[RC_FULL] + rc[RC_BAD_VERDICT])
        done += sum(ev.reclaimed_buffers for ev in self.restarts if ev.nodes != ["@rx"])
        p = mem.pool.arrays
        freed = int(p.ctrl[C_OWNER_FREED]) + int(p.ret_ctrl[:, HEAD].sum())
        return _Tally(accepted=accepted, sent=sent, done=done, allocated=int(p.ctrl[C_ALLOCATED]), freed=freed)

    def _held_bound(self) -> int:
        """Buffers the processes may hold between counting and handing over: a burst each (the Rx
        service's allocated but not yet accepted, the Tx service's and each µNF process's counted
        but not yet freed)."""
        g = self.runtime
        live = sum(1 for k, plan_ in enumerate(g.layout.processes)
                   if not all(g.layout.nodes[i].retired for i in plan_.nodes))
        return 2 * self.io_burst + live * g.layout.burst

    def _conservation(self) -> Conservation:
        """Whether every accepted packet is accounted for, judged live without a torn snapshot.

        The terms are counters that only grow (packets accepted, packets done = sent + refused +
        freed inside + lost in a µNF crash, buffers allocated, buffers freed), read in two passes
        back to back: at an instant between them each term lies between its two readings. In a
        healthy graph the buffers in use (allocated - freed) equal accepted - done plus what the
        processes hold between counting and handing over (0 ≤ held ≤ :meth:`_held_bound`: the Rx
        service counts a packet accepted after allocating it; µNFs and the Tx service count
        before they free). So a healthy graph provably satisfies ``allocated₁ - freed₂ ≤
        accepted₂ - done₁ + bound`` (else buffers are in use that no accepted packet explains: a
        leak) and ``allocated₂ - freed₁ ≥ accepted₁ - done₂`` (else accepted packets are neither
        done nor in a buffer). The slack is what moved during a pass (microseconds); a pass that
        was preempted has more, so the judgement takes :data:`CONSERVATION_READS` pairs and is
        ``ok`` only if every pair is. Idle, the passes agree and the check is exact up to
        ``bound``. The figures reported are the last pass's.
        """
        bound = self._held_bound()
        ok = True
        for _ in range(CONSERVATION_READS):
            before, after = self._tally(), self._tally()
            ok = ok and (before.allocated - after.freed <= after.accepted - before.done + bound
                         and after.allocated - before.freed >= before.accepted - after.done)
        return Conservation(rx=after.accepted, tx=after.sent, dropped=after.done - after.sent,
                            in_flight=after.allocated - after.freed, ok=ok)

    def stats(self, scale_events: list[ScaleEventInfo]) -> GraphStats:
        """Every counter of the graph (read while packets move) and its conservation.

        Conservation is judged first and the counters read after it, so they are at least as recent:
        a reader that sees nothing in flight once the source is exhausted reads final counters."""
        cons = self._conservation()
        g = self.runtime
        seg = g.segment()
        rxv = seg.view("rx.stats", np.int64)
        rx = {k: int(rxv[i]) for i, k in enumerate(RX_COUNTERS)}
        txv = seg.view("tx.stats", np.int64).reshape(-1, TX_WORDS)
        tx = {name: {k: int(txv[e, i]) for i, k in enumerate(TX_COUNTERS)} for e, name in enumerate(self.exit_names)}
        nodes = [self._node_stats(n) for n in g.layout.nodes]
        drops: dict[str, int] = {}
        for k in ("unmatched", "rule_drop", "pool_empty", "entry_full", "oversize", "lost_in_crash"):
            if rx[k]:
                drops[f"@rx.{k}"] = rx[k]
        for n in nodes:
            for reason, count in drop_counts(n.verdicts).items():
                if count and not g.layout.capture_drops:
                    key = f"{n.instance_of or n.name}.{reason}"
                    drops[key] = drops.get(key, 0) + count
            for k in ("unconnected", "full", "bad_verdict"):
                if n.runtime[k]:
                    key = f"{n.instance_of or n.name}.{k}"
                    drops[key] = drops.get(key, 0) + n.runtime[k]
        for name, t in tx.items():
            for k in ("refused", "no_output"):
                if t[k]:
                    drops[f"{name}.{k}"] = t[k]
        for ev in self.restarts:  # packets a crashed µNF held: reclaimed, counted as dropped (the Rx
            if ev.reclaimed_buffers and ev.nodes != ["@rx"]:  # service counts its own, never accepted)
                key = f"{'/'.join(ev.nodes)}.lost_in_crash"
                drops[key] = drops.get(key, 0) + ev.reclaimed_buffers
        pool = g.memory().pool.stats()
        lat = percentiles(seg.view("tx.hist", np.int64))
        return GraphStats(
            name=self.req.name, at=time.time(), rx=rx, tx=tx, drops=drops, nodes=nodes,
            pool={"slots": pool.capacity, "free": pool.free, "in_use": pool.in_use, "allocated": pool.allocated,
                  "alloc_failures": pool.alloc_failures},
            latency=LatencyStats(**lat), conservation=cons, scale_events=list(scale_events),
            restarts=list(self.restarts))
