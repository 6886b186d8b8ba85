"""The ``replicas`` section of ``bench/chain.py``: K x IPTtlDecrementer as run-to-completion replicas.

One replica per core (:class:`micronf.services.replicas.ReplicaSet`): each is one process pinned to
its core that runs its own in-memory source (the generator, 64-byte UDP frames over 1024 flows,
endless; replica i replays the frames of flow shard i) → Rx (copy into its pool, classify, flow
hash) → the K µNFs fused → Tx (a null sink that counts) → free. Nothing crosses a core. The
previous best arrangement, Fig. 10 (d) (all K fused on one core, the bench's driver as source and
sink on the other), is measured in the same rounds, interleaved.

Figures per run: Mpps leaving the replicas (all of them) over the window; ``machine cyc/pkt`` =
cores used x TSC rate / packet rate (what the whole machine spends per packet, the figure the
Click comparison of issue 14 uses); ``cpu cyc/pkt`` = the replicas' CPU time (from /proc) x TSC
rate / packets (robust to idle or stolen time); ``µNF cyc/pkt`` = the runtime's ``cycles``
counters (kernel + routing, summed over the chain). After each run: every replica stopped between
steps and ``rx == tx + dropped + in_flight`` checked on the merged counters.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from _common import text_table
from chain_driver import NodeWindow, Run, Settings
from micronf.runtime.graph import GraphSpec, plan
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


def _cpu_ticks(pids: Sequence[int]) -> int:
    """utime + stime of ``pids`` (clock ticks)."""
    total = 0
    for pid in pids:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total


def run_replicas(spec: GraphSpec, cpus: Sequence[int], s: Settings, burst: int, hz: float, tag: str) -> Run:
    """Run ``spec`` as one replica per CPU of ``cpus`` for warm-up + window, stop, check conservation."""
    exits = dict.fromkeys(x.name for x in plan(replica_spec(spec)).exits)
    rx = RxConfig(name=spec.name, burst=burst, coalesce_us=0, backend=SOURCE)
    tx = TxConfig(name=spec.name, burst=burst, coalesce_us=0, ns_per_cycle=1e9 / hz,
                  outputs=[TxOutput(exit=e, backend={"kind": "null"}) for e in exits])
    rs = ReplicaSet(spec, len(cpus), rx, tx, cpus=cpus, burst=burst)
    problems: list[str] = []
    rs.start()
    try:
        pids = rs.pids()
        time.sleep(s.warmup)
        a, ticks0, t0 = rs.stats(), _cpu_ticks(pids), time.perf_counter()
        time.sleep(s.seconds)
        b, ticks1, t1 = rs.stats(), _cpu_ticks(pids), time.perf_counter()
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
    cpu_s = (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK")
    return Run(sent / dt / 1e6, nodes[0].rx / dt / 1e6, dt, sent, nodes, end.rx["frames"], end.sent,
               end.freed_inside, end.in_flight, end.conserved, 0, problems,
               cpu_s * hz / sent if sent > 0 else math.nan)


def _f(x: float, nd: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:.{nd}f}"


def replica_report(cells: Sequence[Cell], hz: float) -> list[str]:
    """The section's table: per K, each arrangement's Mpps, its ratio to Fig. 10 (d) and to Click,
    and what a packet costs."""
    rows = []
    for c in cells:
        base = [d for d in cells if d.k == c.k and d.extra.get("replicas") is None]
        d_mpps = base[0].mpps if base and base[0].runs else math.nan
        click = CLICK_MPPS.get(c.k, math.nan)
        if not c.runs:
            rows.append([c.name, str(c.k), "ERROR", "", "", "", "", "", "", c.error[:60]])
            continue
        mpps = c.mpps
        rows.append([c.name, str(c.k), _f(mpps), _f(c.spread, 0), _f(mpps / d_mpps), _f(click, 1),
                     _f(mpps / click) + (" ok" if mpps >= GOAL * click else ""),
                     _f(c.n_cores * hz / (mpps * 1e6), 0) if mpps > 0 else "-",
                     _f(c.median(lambda r: r.cpu_cycles_per_packet), 0), _f(c.median(lambda r: r.cycles_per_packet), 0)
                     + ("  !!!" if c.problems else "")])
    header = ("config", "K", "Mpps", "spr%", "x (d)", "Click", "x Click", "machine cyc/pkt", "cpu cyc/pkt",
              "µNF cyc/pkt")
    return [f"# goal: >= {GOAL} x Click at every K; machine cyc/pkt = cores x TSC / rate; cpu cyc/pkt = the "
            "processes' CPU time per packet ((d): the µNF process only); µNF cyc/pkt = runtime cycles counters",
            *text_table(header, rows)]
