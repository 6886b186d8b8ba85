"""The ``replicas`` section of ``bench/chain.py``: K x IPTtlDecrementer as run-to-completion replicas.

One replica per core (:class:`micronf.services.replicas.ReplicaSet`): each is one process pinned to
its core that runs its own in-memory source (the generator, 64-byte UDP frames over 1024 flows,
endless; replica i replays the frames of flow shard i) → Rx (copy into its pool, classify, flow
hash) → the K µNFs fused → Tx (a null sink that counts) → free. Nothing crosses a core. The
previous best arrangement, Fig. 10 (d) (all K fused on one core, the bench's driver as source and
sink on the other), is measured in the same rounds, interleaved; the replicas run under the policy
of (d)'s µNF process (``--fig10-policy``: FIFO where allowed; a replica yields and sleeps when its
input is idle, like every loop).

Figures per run: Mpps leaving the replicas (all of them) over the window; ``machine cyc/pkt`` =
cores used x TSC rate / packet rate (what the whole machine spends per packet, the figure the
Click comparison of issue 14 uses); ``cpu cyc/pkt`` = the replicas' CPU time (from /proc) x TSC
rate / packets (robust to idle or stolen time); ``µNF cyc/pkt`` = the runtime's ``cycles``
counters (kernel + routing, summed over the chain). After each run: every replica stopped between
steps and ``rx == tx + dropped + in_flight`` checked on the merged counters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from _common import cpu_seconds, text_table
from chain_driver import NodeWindow, Run, Settings
from micronf.runtime.graph import GraphSpec, Policy, plan
from micronf.services.config import RxConfig, TxConfig, TxOutput
from micronf.services.replica import replica_spec
from micronf.services.replicas import MergedStats, ReplicaSet

if TYPE_CHECKING:
    from chain import Cell

# Click 2.1 on this machine class, best 2-core arrangement (two run-to-completion threads, each with
# its own input), K x DecIPTTL, 64 B: the reference figures, and its goal.
CLICK_MPPS = {1: 32.7, 2: 30.4, 4: 27.1, 8: 21.4}
GOAL = 1.2
SOURCE = {"kind": "generator", "flows": 1024, "templates": 32768, "sizes": [60], "protocols": {"udp": 1.0}}
RUNTIME_KEYS = ("rx", "full", "dropped", "cycles", "yields", "idle_polls")


def run_replicas(spec: GraphSpec, cpus: Sequence[int], s: Settings, burst: int, policy: Policy, tag: str) -> Run:
    """Run ``spec`` as one replica per CPU of ``cpus`` for warm-up + window, stop, check conservation."""
    exits = dict.fromkeys(x.name for x in plan(replica_spec(spec)).exits)
    rx = RxConfig(name=spec.name, burst=burst, coalesce_us=0, backend=SOURCE, policy=policy)
    tx = TxConfig(name=spec.name, burst=burst, coalesce_us=0, ns_per_cycle=1e9 / s.tsc_hz,
                  outputs=[TxOutput(exit=e, backend={"kind": "null"}) for e in exits])
    rs = ReplicaSet(spec, len(cpus), rx, tx, cpus=cpus, burst=burst)
    problems: list[str] = []
    rs.start()
    try:
        pids = rs.pids()
        time.sleep(s.warmup)
        a, cpu0, t0 = rs.stats(), [*map(cpu_seconds, pids)], time.perf_counter()
        sent0 = [rs.replica_stats(i).sent for i in range(rs.n)]
        time.sleep(s.seconds)
        b, cpu1, t1 = rs.stats(), [*map(cpu_seconds, pids)], time.perf_counter()
        sent1 = [rs.replica_stats(i).sent for i in range(rs.n)]
    finally:
        rs.stop()
    try:
        end: MergedStats = rs.stats()
    finally:
        rs.close()
    dt = t1 - t0
    sent = b.sent - a.sent
    nodes = [NodeWindow(n, *(b.nodes[n][k] - a.nodes[n][k] for k in RUNTIME_KEYS)) for n in b.nodes]
    if not end.conserved:
        problems.append(f"{tag}: conservation violated: rx {end.rx['frames']} != tx {end.sent} + dropped "
                        f"{end.dropped} + in flight {end.in_flight}")
    if sent <= 0:
        problems.append(f"{tag}: no packet left the replicas in the window")
    cpu = [y - x for x, y in zip(cpu0, cpu1, strict=True)]
    alone = sum((y - x) / max(c, 1e-9) for x, y, c in zip(sent0, sent1, cpu, strict=True)) / 1e6
    return Run(sent / dt / 1e6, nodes[0].rx / dt / 1e6, dt, sent, nodes, end.rx["frames"], end.sent,
               end.freed_inside, end.in_flight, end.conserved, 0, problems,
               sum(cpu) * s.tsc_hz / sent if sent > 0 else math.nan, alone)


def _f(x: float, nd: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:.{nd}f}"


def replica_report(cells: Sequence[Cell]) -> list[str]:
    """The section's table: per K, each arrangement's Mpps and Mpps with its cores alone, their
    ratios to Fig. 10 (d) and to Click, and what a packet costs."""
    rows = []
    for c in cells:
        base = [d for d in cells if d.k == c.k and "replicas" not in d.extra]
        click = CLICK_MPPS.get(c.k, math.nan)
        if not c.runs or not base or not base[0].runs:
            rows.append([c.name, str(c.k), "ERROR", "", "", "", "", "", "", "", (c.error or base[0].error)[:60]])
            continue
        alone = c.median(lambda r: r.alone_mpps)
        d_alone = base[0].median(lambda r: r.alone_mpps)
        rows.append([c.name, str(c.k), _f(c.mpps), _f(c.spread, 0), _f(c.mpps / base[0].mpps), _f(alone),
                     _f(alone / d_alone), _f(click, 1),
                     _f(alone / click) + (" ok" if alone >= GOAL * click else ""),
                     _f(c.median(lambda r: r.cpu_cycles_per_packet), 0),
                     _f(c.median(lambda r: r.cycles_per_packet), 0) + ("  !!!" if c.problems else "")])
    header = ("config", "K", "Mpps", "spr%", "x (d)", "alone Mpps", "x (d)", "Click", "x Click", "cpu cyc/pkt",
              "µNF cyc/pkt")
    return [f"# alone Mpps = packets / CPU time of the busiest core (each core's work as if it had the core to "
            f"itself: the robust figure on a shared machine); goal: >= {GOAL} x Click at every K; cpu cyc/pkt = "
            "CPU time of every process (driver included) per packet; µNF cyc/pkt = runtime cycles counters",
            *text_table(header, rows)]
