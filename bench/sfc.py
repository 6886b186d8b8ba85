"""Benchmark: the paper's Fig. 11 SFC on this machine (§VII-C2 throughput, Table II CPU cost).

The SFC (Firewall → Monitor → Application Firewall, ``examples/sfc-fig11.yaml``) is composed and
deployed on an in-process :class:`~micronf.agent.core.Agent`, the way ``micronf run`` does, with the
built-in generator as the Rx backend at full speed (``paper_traffic()``: 200-byte HTTP GETs, 20%
with SQL-injection URLs, endless) and a null Tx backend on every exit. After ``--warmup`` the agent's
stats are read twice, ``--seconds`` apart:

- **Mpps** = packets that reached a final verdict per second: frames the Tx service sent (every SFC
  output) + drop verdicts of the µNFs (``sqli``, ``denied``, ...). Packets lost to overload (the
  entry ring full: ``@rx.entry_full``; a µNF's next ring full: ``*.full``) are not throughput; the
  table shows them as ``lost/s``.
- **cyc/pkt** = Σ of every µNF's ``cycles`` counter (TSC ticks inside its kernel and routing) over
  the packets that entered the graph (Rx ``accepted``): the cost of the processing itself, hardly
  affected by what else runs on the machine.
- **CPU ns/pkt** = CPU time (user + system, ``/proc/<pid>/stat``) of every process of the graph,
  Rx and Tx services included, over the same packets: everything, including polling, the
  generator's own work and the frames it makes that the entry ring refuses.

Variants (each deployed ``--repeat`` times, interleaved; medians):

``placed``      what ``micronf run`` / the orchestrator deploy on this machine: the placement decides
                (on 2 CPUs: chained, the µNFs sharing a CPU fused, Rx/Tx pinned beside them).
``unf``         the optimized graph (Fig. 11: 6 µNFs), one process per µNF, no autoscaling.
``unf-fused``   the same graph with CheckIPHeader → L3L4Filter → HttpClassifier fused in one process
                (run to completion, ``NodeSpec.cluster``): fewer processes than the machine's 2 cores
                have to share.
``unf-scaled``  the optimized graph with the agent's drop-driven autoscaler (§IV-E) allowed two
                instances per µNF (the paper's 4.1 Mpps came from a second HttpClassifier); the
                instances it started are listed.
``unf-2proc``   the optimized graph without the parallel group (the two counters chained: branches
                pay off only with a spare core each) fused into two run-to-completion processes.
``unf-1proc``   the same, all six µNFs in one process.
``unf-2proc-pinned``  unf-2proc with the first process and the Rx service on CPU 0, the second and Tx on CPU 1.
``unf-1proc-pinned``  the same, the µNF process pinned to CPU 1, the Rx and Tx services to CPU 0.
``replicas``    the chained optimized graph (as ``unf-1proc``) as one run-to-completion replica per CPU
                (:class:`~micronf.services.replicas.ReplicaSet`, runtime level, not through the agent):
                each process generates its own flow shard of the traffic, runs every µNF and the Tx
                on its core; nothing crosses a core.
``monolithic``  the paper's configuration (i), Table II's baseline: the *unoptimized* composition
                (9 µNFs: each VNF re-checks IP headers and re-classifies HTTP) with each VNF's µNFs
                fused into one process per VNF, the VNFs chained by rings.

The cost comparison (goal ≤ 0.83×) is ``unf`` / ``monolithic``, per packet entered, same traffic,
measured in separate runs with the generator paced at ``--cost-rate`` (default 50 kpps): at full
speed the generator keeps one of the two cores busy making frames the graph refuses, the µNFs
are preempted inside their kernels, and the ``cycles`` counters (wall-clock TSC) then measure the
contention more than the work.

Usage::

    python bench/sfc.py [--seconds S] [--warmup W] [--repeat R] [--only unf,monolithic] [--cost-rate PPS] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import cpu_model, cpu_seconds, text_table
from chain_driver import machine_facts, tsc_hz
from micronf.agent.core import Agent
from micronf.api.models import AutoscaleSpec, DeployRequest, GraphStats, OutputSpec
from micronf.app.run import DEFAULT_SFC, LOCAL_AGENT, deployment_name, load
from micronf.io.generator_spec import paper_traffic
from micronf.orchestrator.compose import compose_file
from micronf.orchestrator.placement import Candidate, Traffic, place
from micronf.runtime.graph import GraphSpec, plan
from micronf.runtime.verdict import drop_counts
from micronf.services.config import RxConfig, TxConfig, TxOutput
from micronf.services.replica import DEFAULT_BURST, replica_spec
from micronf.services.replicas import ReplicaSet

VARIANTS = ("placed", "unf", "unf-fused", "unf-scaled", "unf-2proc", "unf-2proc-pinned", "unf-1proc",
            "unf-1proc-pinned", "replicas", "monolithic")
COST_VARIANTS = ("placed", "unf", "unf-1proc", "replicas", "monolithic")
REPLICA_TEMPLATES = 16_000  # the generator's cycle for replicas: each shard's windows hold a whole burst
FUSED_FRONT = ("firewall.check", "firewall.filter", "monitor.classify")
GOAL_MPPS = 4.2
GOAL_COST = 0.83


def variant_graph(variant: str, prefetch: int = 0) -> GraphSpec:
    """The µNF graph a variant deploys (see the module docstring)."""
    comp = compose_file(DEFAULT_SFC, parallelize=not variant.startswith(("unf-2proc", "unf-1proc")))
    if variant == "monolithic":
        spec = comp.before.spec
        nodes = [n.model_copy(update={"cluster": n.name.split(".")[0]}) for n in spec.nodes]
    elif variant.startswith(("unf-2proc", "unf-1proc")):  # optimized, chained, fused into 2 or 1 processes
        spec = comp.after.spec
        half = (len(spec.nodes) + 1) // 2
        one = variant.startswith("unf-1proc")
        pinned = variant.endswith("pinned")
        nodes = [n.model_copy(update={"cluster": "all" if one else ("a" if k < half else "b"),
                                      "cpu": (1 if one or k >= half else 0) if pinned else None})
                 for k, n in enumerate(spec.nodes)]
    else:
        spec = comp.after.spec
        nodes = [n.model_copy(update={"cluster": "front" if variant == "unf-fused" and n.name in FUSED_FRONT
                                      else None}) for n in spec.nodes]
    return spec.model_copy(update={"nodes": nodes, "burst": 64, "prefetch": prefetch})


def request(variant: str, ring_capacity: int, rate: float | None, prefetch: int = 0) -> DeployRequest:
    if variant == "placed":
        comp, _ = load(None)
        part = place(comp.after, deployment_name("bench-placed"), [Candidate(LOCAL_AGENT, 0)],
                     Traffic(rx=paper_traffic(rate_pps=rate).model_dump(mode="json")), agent=None)[0]
        graph = part.request.graph.model_copy(update={"burst": 64, "prefetch": prefetch})
        return part.request.model_copy(update={"graph": graph, "ring_capacity": ring_capacity,
                                               "autoscale": AutoscaleSpec(enabled=False)})
    graph = variant_graph(variant, prefetch)
    null = OutputSpec(backend={"kind": "null"})
    autoscale = (AutoscaleSpec(enabled=True, max_instances=2, window=2, interval_s=0.2, cooldown_s=1.0,
                               scale_in=False) if variant == "unf-scaled" else AutoscaleSpec(enabled=False))
    pinned = {"rx_cpu": 0, "tx_cpu": 0 if variant.startswith("unf-1proc") else 1} if variant.endswith("pinned") else {}
    return DeployRequest(name=deployment_name(f"bench-{variant}"), graph=graph, **pinned,
                         rx=paper_traffic(rate_pps=rate).model_dump(mode="json"), ring_capacity=ring_capacity,
                         outputs={e.name: null for e in plan(graph).exits}, autoscale=autoscale)


@dataclass
class Sample:
    """Cumulative counters of a deployment at one moment."""

    t: float
    done: int  # Tx frames + drop verdicts
    lost: int  # entry ring full + µNF egress full
    accepted: int
    cycles: int
    cpu_s: float

    @classmethod
    def of_replicas(cls, rs: ReplicaSet) -> Sample:
        s = rs.stats()
        return cls(t=time.monotonic(), done=s.sent + sum(n["dropped"] for n in s.nodes.values()),
                   lost=s.rx["entry_full"] + sum(n["full"] for n in s.nodes.values()), accepted=s.rx["accepted"],
                   cycles=sum(n["cycles"] for n in s.nodes.values()), cpu_s=sum(map(cpu_seconds, rs.pids())))

    @classmethod
    def take(cls, s: GraphStats, pids: list[int]) -> Sample:
        verdict_drops = sum(sum(drop_counts(n.verdicts).values()) for n in s.nodes)
        return cls(t=time.monotonic(), done=sum(t["frames"] for t in s.tx.values()) + verdict_drops,
                   lost=s.rx["entry_full"] + sum(n.runtime["full"] for n in s.nodes), accepted=s.rx["accepted"],
                   cycles=sum(n.runtime["cycles"] for n in s.nodes), cpu_s=sum(map(cpu_seconds, pids)))


@dataclass
class Run:
    mpps: float
    lost_mpps: float
    cycles_per_packet: float
    cpu_ns_per_packet: float
    processes: int
    scaled: list[str] = field(default_factory=list)


def measure_replicas(seconds: float, warmup: float, rate: float | None, prefetch: int) -> Run:
    """The ``replicas`` variant: one replica per CPU of this process, measured like the others."""
    graph = variant_graph("unf-1proc", prefetch)
    traffic = paper_traffic(rate_pps=rate).model_copy(update={"templates": REPLICA_TEMPLATES})
    exits = dict.fromkeys(x.name for x in plan(replica_spec(graph)).exits)
    rx = RxConfig(name="sfc", burst=DEFAULT_BURST, coalesce_us=100 if rate else 0,
                  backend=traffic.model_dump(mode="json"))
    tx = TxConfig(name="sfc", burst=DEFAULT_BURST, coalesce_us=0, ns_per_cycle=1.0,
                  outputs=[TxOutput(exit=e, backend={"kind": "null"}) for e in exits])
    cpus = sorted(os.sched_getaffinity(0))
    with ReplicaSet(graph, len(cpus), rx, tx, cpus=cpus) as rs:
        time.sleep(warmup)
        a = Sample.of_replicas(rs)
        time.sleep(seconds)
        b = Sample.of_replicas(rs)
    dt = b.t - a.t
    accepted = max(b.accepted - a.accepted, 1)
    return Run(mpps=(b.done - a.done) / dt / 1e6, lost_mpps=(b.lost - a.lost) / dt / 1e6,
               cycles_per_packet=(b.cycles - a.cycles) / accepted,
               cpu_ns_per_packet=(b.cpu_s - a.cpu_s) * 1e9 / accepted, processes=len(cpus))


def measure(variant: str, seconds: float, warmup: float, ring_capacity: int, rate: float | None = None,
            prefetch: int = 0) -> Run:
    """Deploy one variant (generator at ``rate`` pps, None: full speed), measure one window, remove it."""
    if variant == "replicas":
        return measure_replicas(seconds, warmup, rate, prefetch)
    req = request(variant, ring_capacity, rate, prefetch)
    with Agent() as agent:
        agent.deploy(req)
        try:
            time.sleep(warmup)
            pids = [p.pid for p in agent.deployment(req.name).processes]
            a = Sample.take(agent.stats(req.name), pids)
            time.sleep(seconds)
            info = agent.deployment(req.name)
            s = agent.stats(req.name)
            b = Sample.take(s, sorted({*pids, *(p.pid for p in info.processes)}))
        finally:
            agent.remove(req.name)
    dt = b.t - a.t
    accepted = max(b.accepted - a.accepted, 1)
    return Run(mpps=(b.done - a.done) / dt / 1e6, lost_mpps=(b.lost - a.lost) / dt / 1e6,
               cycles_per_packet=(b.cycles - a.cycles) / accepted,
               cpu_ns_per_packet=(b.cpu_s - a.cpu_s) * 1e9 / accepted,
               processes=len(info.processes) - 2, scaled=[e.instance for e in s.scale_events if e.action == "out"])


def median_row(variant: str, runs: list[Run]) -> dict[str, Any]:
    def med(key: str) -> float:
        return float(statistics.median(getattr(r, key) for r in runs))

    mpps = [r.mpps for r in runs]
    return {"variant": variant, "runs": [asdict(r) for r in runs], "mpps": med("mpps"),
            "spread": (max(mpps) - min(mpps)) / max(statistics.median(mpps), 1e-12), "lost_mpps": med("lost_mpps"),
            "cycles_per_packet": med("cycles_per_packet"), "cpu_ns_per_packet": med("cpu_ns_per_packet"),
            "processes": runs[-1].processes, "scaled": sorted({i for r in runs for i in r.scaled})}


def _rows_table(rows: list[dict[str, Any]]) -> list[str]:
    table = [[r["variant"], str(r["processes"]), f"{r['mpps']:.3f}", f"{r['spread']:.0%}", f"{r['lost_mpps']:.3f}",
              f"{r['cycles_per_packet']:.0f}", f"{r['cpu_ns_per_packet']:.0f}", ", ".join(r["scaled"]) or "-"]
             for r in rows]
    return text_table(["variant", "procs", "Mpps", "spread", "lost/s M", "cyc/pkt", "CPU ns/pkt", "scaled out"],
                      table)


def report(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = ["# bench/sfc.py: the Fig. 11 SFC, 200-byte HTTP GETs (20% SQL injection)", f"# {doc['command']}",
             f"# {m['cpu']}, {m['nproc']} CPUs, load average at start {m['loadavg_at_start']}; {doc['seconds']} s "
             f"windows after {doc['warmup']} s, median of {doc['repeat']}", ""]
    rows = doc["rows"]
    if rows:
        rate = f"{doc['rate']:,.0f} pps" if doc.get("rate") else "full speed"
        lines += [f"throughput: generator at {rate}", *_rows_table(rows)]
        best = max(rows, key=lambda r: r["mpps"])
        lines += [f"best: {best['mpps']:.3f} Mpps ({best['variant']}); goal >= {GOAL_MPPS} Mpps: "
                  f"{'met' if best['mpps'] >= GOAL_MPPS else 'NOT met'}", ""]
    cost = doc.get("cost_ratio")
    if cost:
        lines += [f"cost (Table II): generator at {doc['cost_rate']:,.0f} pps", *_rows_table(doc["cost_rows"])]
        for variant, c in cost.items():
            lines.append(f"{variant} / monolithic chain: {c['cycles']:.2f}x µNF cycles per packet, {c['cpu']:.2f}x "
                         f"CPU time per packet (incl. Rx/Tx); goal <= {GOAL_COST}x: "
                         f"{'met' if c['cycles'] <= GOAL_COST else 'NOT met'} (cycles)")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="The Fig. 11 SFC through the agent: Mpps and cost per packet")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run (default 3)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds after deployment before measuring (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per variant, interleaved (default 3)")
    ap.add_argument("--only", default=",".join(VARIANTS), help=f"comma-separated variants of {', '.join(VARIANTS)}")
    ap.add_argument("--rate", type=float, default=None,
                    help="generator rate for the throughput runs, packets/s (default: full speed)")
    ap.add_argument("--prefetch", type=int, default=0, help="µNF loops prefetch this many frames ahead (§V-A)")
    ap.add_argument("--ring-capacity", type=int, default=1024, help="ring capacity (default 1024, the agent's)")
    ap.add_argument("--cost-rate", type=float, default=50_000.0,
                    help="generator rate (pps) of the cost runs of unf and monolithic (default 50000; 0: skip them)")
    ap.add_argument("--json", action="store_true", help="print a JSON document instead of the table")
    args = ap.parse_args(argv)
    args.only = [v for v in args.only.split(",") if v]
    if not args.only or set(args.only) - set(VARIANTS):
        ap.error(f"--only takes variants of {', '.join(VARIANTS)}")
    if args.repeat < 1 or args.seconds <= 0 or args.warmup < 0:
        ap.error("need --repeat >= 1, --seconds > 0, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv] if argv is None else ["sfc.py", *argv])
    facts = machine_facts(tsc_hz())
    cells = [("tput", v, args.rate) for v in args.only]
    cells += [("cost", v, args.cost_rate) for v in COST_VARIANTS if args.cost_rate]
    runs: dict[tuple[str, str, float | None], list[Run]] = {c: [] for c in cells}
    for k in range(args.repeat):
        for kind, v, rate in cells:
            print(f"sfc.py: {v} at {rate or 'full speed'} pps, run {k + 1}/{args.repeat} ...", file=sys.stderr,
                  flush=True)
            runs[(kind, v, rate)].append(measure(v, args.seconds, args.warmup, args.ring_capacity, rate, args.prefetch))
    rows = [median_row(v, rs) for (kind, v, _), rs in runs.items() if kind == "tput"]
    cost = [median_row(v, rs) for (kind, v, _), rs in runs.items() if kind == "cost"]
    doc: dict[str, Any] = {"command": command, "machine": facts, "cpu": cpu_model(), "seconds": args.seconds,
                           "warmup": args.warmup, "repeat": args.repeat, "rate": args.rate,
                           "cost_rate": args.cost_rate, "rows": rows, "cost_rows": cost}
    if cost:
        mono = next(r for r in cost if r["variant"] == "monolithic")
        doc["cost_ratio"] = {r["variant"]: {"cycles": r["cycles_per_packet"] / mono["cycles_per_packet"],
                                            "cpu": r["cpu_ns_per_packet"] / mono["cpu_ns_per_packet"]}
                             for r in cost if r is not mono}
    print(json.dumps(doc, indent=2) if args.json else report(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
