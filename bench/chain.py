"""Benchmark: µNF chains through the real runtime (paper §VI-E Fig. 5, §VII-C1 Fig. 10, per-µNF costs).

Every measurement deploys a graph with :class:`micronf.runtime.launch.GraphRuntime` (one OS process
per µNF or per fused cluster, SPSC rings in one shared segment) and drives it from this process:
one compiled loop (:func:`micronf.app.offline.pump`, the offline runner's driver) is at once the pool
owner, the traffic source (``pool_alloc`` + ``fill_pool_from_trace`` of an in-memory trace of
64-byte UDP/IPv4 frames, or 200-byte HTTP GETs, into the entry ring, as fast as the ring takes
them) and the sink (drains every exit ring, ``pool_free_owner``). The driver is pinned to the last
CPU, the µNFs to the first (and, for the two-core configurations, also the last) CPU, so the
driver occupies a core too: every row says how many distinct cores it used, driver included.

Throughput = packets reaching the sink per second over ``--seconds`` after ``--warmup``. Each run
is then drained and checked: ``fed == sunk + freed inside the graph + left in rings`` and the pool
holds exactly the handles in rings (+ the driver's pending burst). ``full`` = packets a µNF dropped
because the next ring was full (``--on-full drop``, the default, like a DPDK app freeing what
``rte_ring_enqueue_burst`` refused); with ``--on-full wait`` the µNFs back-pressure instead.
``cyc/pkt`` = the runtime's ``cycles`` counter over ``rx`` (TSC ticks inside the µNF's kernel and
routing per packet, summed over the chain): unlike Mpps it hardly depends on what else shares the
core, so it is the robust figure on a noisy machine.

Sections (``--only``):

``fig10``  K x IPTtlDecrementer, K = 1, 2, 4, 8: (a) pipelined, one process per µNF, all on one
           core; (b) pipelined on two cores (first ceil(K/2) µNFs on core 0, the rest on core 1);
           (c) two fused clusters, one per core; (d) run-to-completion, all K fused on one core.
``sched``  K x MacSwapper sharing one core, K = 1..8 (a variant stops when it collapses), for
           CFS / FIFO / RR with voluntary yield (when idle, and also every 8 busy batches), CFS
           without yield, and RR without yield (time-sliced, K <= 4, short runs). Reports the
           longest chain at >= 14.88 Mpps per variant.
``nfs``    every µNF of the library alone on core 0: Mpps, ns/packet, cycles/packet.
``replicas`` K x IPTtlDecrementer, K = 1, 2, 4, 8, as run-to-completion replicas, one per core, each
           with its own in-memory source shard (``chain_replicas.py``), against Fig. 10 (d) in the
           same rounds and Click's figures (issue 14).

A ``ceiling`` row (the driver alone, its entry ring wired straight to its sink, no µNF) is
measured in every repeat round: it is the most the driver can feed on its core, and every Mpps is
also given as a ratio to it (same run, same noise).

SCHED_FIFO/RR: µNF loops yield when their input is empty (``yield_idle``); real-time policies are
never combined with ``yield_idle=False`` except RR (time-sliced by the kernel) in short runs. When
a real-time µNF shares the driver's core, the driver takes the same policy (it yields when idle),
otherwise the driver stays on CFS. Real-time policies are skipped when the kernel's RT throttling
is off or the policy cannot be set.

Usage::

    python bench/chain.py [--seconds S] [--repeat R] [--json] [--quick] [--only fig10|sched|nfs|replicas]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from _common import int_list
from chain_driver import Run, Settings, machine_facts, rt_allowed, run_ceiling, run_graph, tsc_hz
from chain_replicas import run_replicas
from chain_report import LINE_RATE_MPPS, format_report, idle_sleep
from chain_traffic import COUNT_URLS, http_trace, udp_trace
from micronf.io.trace import Trace
from micronf.runtime.graph import EdgeSpec, GraphSpec, NodeSpec, Policy, chain_names
from micronf.runtime.launch import LaunchError
from micronf.runtime.nf import nf_class

QUICK_NFS = ["MacSwapper", "L3L4Filter", "FlowLoadBalancer", "ValidateUrl"]  # --quick: one per code path
COLLAPSE_MPPS = 0.05  # a scheduling variant stops growing K below this rate



def chain(types: Sequence[tuple[str, dict[str, Any]]], cpus: Sequence[int], clusters: Sequence[str | None],
          policy: Policy, **kwargs: Any) -> GraphSpec:
    """A linear chain with node k pinned to ``cpus[k]`` and fused into ``clusters[k]`` (None: own process)."""
    names = chain_names([t for t, _ in types])
    nodes = [NodeSpec(name=n, type=t, config=c, cpu=cpu, cluster=cl, policy=policy)
             for n, (t, c), cpu, cl in zip(names, types, cpus, clusters, strict=True)]
    edges = [EdgeSpec(src=a.name, label=nf_class(a.type).labels[0], dst=b.name)
             for a, b in pairwise(nodes)]
    return GraphSpec(name="bench", nodes=nodes, edges=edges, entry=nodes[0].name, **kwargs)


@dataclass
class Cell:
    """One configuration to measure, with its runs."""

    section: str
    name: str  # row label, e.g. "(a) 1C pipelined" or "FIFO+yield"
    k: int
    spec: GraphSpec | None  # None: the driver ceiling
    trace: str  # "udp" or "http"
    driver_policy: Policy
    cores: str  # human description of the CPU placement
    n_cores: int  # distinct cores used, driver included
    n_procs: int  # µNF processes (+1 for the driver)
    extra: dict[str, Any] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    error: str = ""

    def median(self, f: Callable[[Run], float]) -> float:
        vals = [f(r) for r in self.runs if not math.isnan(f(r))]
        return statistics.median(vals) if vals else float("nan")

    @property
    def mpps(self) -> float:
        return self.median(lambda r: r.mpps)

    @property
    def spread(self) -> float:
        vals = [r.mpps for r in self.runs]
        med = self.mpps
        return 100.0 * (max(vals) - min(vals)) / med if vals and med > 0 else float("nan")

    @property
    def problems(self) -> list[str]:
        return [p for r in self.runs for p in r.problems] + ([self.error] if self.error else [])

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section, "name": self.name, "k": self.k, "cores": self.cores,
            "n_cores": self.n_cores, "processes": self.n_procs, "driver_policy": self.driver_policy,
            "mpps": self.mpps, "spread_pct": self.spread, "rx_mpps": self.median(lambda r: r.rx_mpps),
            "cycles_per_packet": self.median(lambda r: r.cycles_per_packet),
            "full_per_run": [r.full for r in self.runs], **self.extra, "problems": self.problems,
            "error": self.error, "runs": [{**asdict(r), "full": r.full} for r in self.runs],
        }


def _placement(cpus: Sequence[int], core1: int) -> tuple[str, int]:
    used = sorted(set(cpus))
    shared = " (shared with the µNFs)" if core1 in used else ""
    desc = " ".join(f"cpu{c}x{list(cpus).count(c)}" for c in used) + f" + driver cpu{core1}{shared}"
    return desc, len(set(used) | {core1})


def fig10_cells(ks: Sequence[int], policy: Policy, s: Settings, gkw: dict[str, Any],
                driver_policy: Policy) -> list[Cell]:
    cells = []
    c0, c1 = s.core0, s.core1
    for k in ks:
        types: list[tuple[str, dict[str, Any]]] = [("IPTtlDecrementer", {})] * k
        half = (k + 1) // 2
        split = [c0] * half + [c1] * (k - half)
        configs: list[tuple[str, list[int], list[str | None]]] = [
            ("(a) pipelined 1C", [c0] * k, [None] * k),
            ("(b) pipelined 2C", split, [None] * k),
            ("(c) 2 fused clusters 2C", split, [*(["c0"] * half), *(["c1"] * (k - half))]),
            ("(d) run-to-completion 1C", [c0] * k, ["all"] * k),
        ]
        for name, cpus, clusters in configs:
            if k == 1 and name.startswith(("(b)", "(c)")):
                continue  # identical to (a) / (d) with a single µNF
            spec = chain(types, cpus, clusters, policy, **gkw)
            desc, n_cores = _placement(cpus, c1)
            drv: Policy = policy if c1 in cpus else driver_policy
            n_procs = len({cl if cl is not None else f"#{i}" for i, cl in enumerate(clusters)})
            cells.append(Cell("fig10", name, k, spec, "udp", drv, desc, n_cores,
                              n_procs + 1, {"policy": policy}))
    return cells


@dataclass(frozen=True)
class Variant:
    name: str
    policy: Policy
    yield_idle: bool
    yield_every: int
    max_k: int = 64


def sched_variants(rt_ok: bool) -> list[Variant]:
    out = [Variant("CFS+yield", "other", True, 0), Variant("CFS+yield/8", "other", True, 8)]
    if rt_ok:
        out += [Variant("FIFO+yield", "fifo", True, 0), Variant("FIFO+yield/8", "fifo", True, 8),
                Variant("RR+yield", "rr", True, 0), Variant("RR+yield/8", "rr", True, 8)]
    out.append(Variant("CFS no yield", "other", False, 0))
    if rt_ok:
        out.append(Variant("RR no yield", "rr", False, 0, max_k=4))  # time-sliced; short runs only
    return out


def sched_cell(v: Variant, k: int, s: Settings, gkw: dict[str, Any], driver_policy: Policy) -> Cell:
    kw = {**gkw, "yield_idle": v.yield_idle, "yield_every": v.yield_every}
    spec = chain([("MacSwapper", {})] * k, [s.core0] * k, [None] * k, v.policy, **kw)
    desc, n_cores = _placement([s.core0] * k, s.core1)
    return Cell("sched", v.name, k, spec, "udp", driver_policy, desc, n_cores, k + 1,
                {"policy": v.policy, "yield_idle": v.yield_idle, "yield_every": v.yield_every})


NF_CONFIGS: list[tuple[str, dict[str, Any], str]] = [
    ("MacSwapper", {}, "udp"),
    ("IPTtlDecrementer", {}, "udp"),
    ("CheckIPHeader", {"bad_src": ["0.0.0.0", "255.255.255.255", "10.0.255.255"]}, "udp"),
    ("L3L4Filter", {"rules": [
        {"action": "deny", "proto": "tcp", "dport": "23"},
        {"action": "deny", "src": "172.16.0.0/12"},
        {"action": "deny", "proto": "udp", "dport": "53"},
        {"action": "allow", "proto": "tcp", "dport": "80"},
        {"action": "allow", "src": "10.0.0.0/8", "proto": "udp", "dport": "1000-1999"},
    ], "default": "deny"}, "udp"),
    ("FlowLoadBalancer", {"backends": [
        {"ip": "192.168.10.1", "mac": "02:00:00:00:10:01"},
        {"ip": "192.168.10.2", "mac": "02:00:00:00:10:02"},
        {"ip": "192.168.10.3", "mac": "02:00:00:00:10:03"},
        {"ip": "192.168.10.4", "mac": "02:00:00:00:10:04"},
    ]}, "udp"),
    ("PacketSizeCounter", {}, "udp"),
    ("BusyLoop", {"cycles": 100}, "udp"),
    ("HttpClassifier", {"ports": [80, 8080]}, "http"),
    ("ValidateUrl", {}, "http"),
    ("CountUrl", {"urls": COUNT_URLS}, "http"),
]


def nf_cells(s: Settings, gkw: dict[str, Any], only: Sequence[str] | None, driver_policy: Policy) -> list[Cell]:
    cells = []
    for t, cfg, trace in NF_CONFIGS:
        if only and t not in only:
            continue
        spec = chain([(t, cfg)], [s.core0], [None], "other", **gkw)
        desc, n_cores = _placement([s.core0], s.core1)
        cells.append(Cell("nfs", t, 1, spec, trace, driver_policy, desc, n_cores, 2, {"config": cfg}))
    return cells


def replica_cells(ks: Sequence[int], policy: Policy, s: Settings, gkw: dict[str, Any], driver_policy: Policy,
                  cpus: Sequence[int], burst: int) -> list[Cell]:
    """Per K: Fig. 10 (d) (all fused on core 0, the driver on the last core) and one replica per CPU,
    the replicas under the same policy as the µNF process of (d) (a like-for-like comparison)."""
    cells = []
    for k in ks:
        types: list[tuple[str, dict[str, Any]]] = [("IPTtlDecrementer", {})] * k
        desc, n_cores = _placement([s.core0], s.core1)
        cells.append(Cell("replicas", "(d) run-to-completion 1C", k, chain(types, [s.core0] * k, ["all"] * k, policy,
                                                                            **gkw), "udp", driver_policy, desc,
                          n_cores, 2, {"policy": policy}))
        cells.append(Cell("replicas", f"(r) {len(cpus)} replicas", k, chain(types, [s.core0] * k, [None] * k,
                                                                              policy, **gkw), "udp", policy,
                          " ".join(f"cpu{c}" for c in cpus), len(cpus), len(cpus),
                          {"replicas": len(cpus), "cpus": list(cpus), "replica_burst": burst, "policy": policy}))
    return cells


def ceiling_cell(s: Settings, trace: str, driver_policy: Policy) -> Cell:
    return Cell("ceiling", f"driver alone ({trace})", 0, None, trace, driver_policy, f"driver cpu{s.core1}", 1, 1)


# -- running cells ---------------------------------------------------------------------------
def run_cell(cell: Cell, traces: dict[str, Trace], s: Settings) -> None:
    tag = f"{cell.section} {cell.name} K={cell.k}"
    try:
        if cell.spec is None:
            cell.runs.append(run_ceiling(traces[cell.trace], s, cell.driver_policy))
        elif "replicas" in cell.extra:
            x = cell.extra
            cell.runs.append(run_replicas(cell.spec, x["cpus"], s, x["replica_burst"], x["policy"], tag))
        else:
            cell.runs.append(run_graph(cell.spec, traces[cell.trace], s, cell.driver_policy, tag))
    except (LaunchError, OSError) as exc:
        cell.error = f"{tag}: {type(exc).__name__}: {exc}"
    last = cell.runs[-1] if cell.runs else None
    msg = (f"{last.mpps:.2f} Mpps, {last.cycles_per_packet:.0f} cyc/pkt, full {last.full}" if last
           else cell.error)
    print(f"  {tag}: {msg}", file=sys.stderr, flush=True)
    for p in last.problems if last else []:
        print(f"!!! {p}", file=sys.stderr, flush=True)


def run_rounds(cells: list[Cell], traces: dict[str, Trace], s: Settings, repeat: int,
               ceilings: dict[str, Cell]) -> None:
    """``repeat`` rounds over all cells (order rotated per round), a ceiling run per round."""
    for r in range(repeat):
        for c in ceilings.values():
            run_cell(c, traces, s)
        order = cells[r % len(cells):] + cells[: r % len(cells)] if cells else []
        for c in order:
            if c.error:
                continue
            run_cell(c, traces, s)


def run_sched(variants: Sequence[Variant], ks: Sequence[int], traces: dict[str, Trace], s: Settings,
              repeat: int, gkw: dict[str, Any], ceilings: dict[str, Cell], rr_noyield_seconds: float,
              driver_policy: Policy) -> list[Cell]:
    """Per K (ascending): every variant still alive, ``repeat`` interleaved rounds; a variant that
    collapsed (median < COLLAPSE_MPPS) is not tried at larger K."""
    cells: list[Cell] = []
    dead: set[str] = set()
    for k in ks:
        row = [sched_cell(v, k, s, gkw, driver_policy) for v in variants if v.name not in dead and k <= v.max_k]
        for r in range(repeat):
            for c in ceilings.values():
                run_cell(c, traces, s)
            for c in row[r % len(row):] + row[: r % len(row)] if row else []:
                if c.error:
                    continue
                short = c.extra["policy"] != "other" and not c.extra["yield_idle"]
                run_cell(c, traces, s if not short else Settings(**{**asdict(s), "seconds": min(
                    s.seconds, rr_noyield_seconds), "warmup": min(s.warmup, rr_noyield_seconds)}))
        for c in row:
            if c.error or not c.mpps >= COLLAPSE_MPPS:
                dead.add(c.name)
        cells += row
    return cells


# -- command line ----------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="µNF chains through the micronf runtime (Fig. 5, Fig. 10, per µNF)")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per run (default 1.5; quick 0.3)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before measuring (default 0.5; quick 0.2)")
    ap.add_argument("--repeat", type=int, default=None, help="interleaved runs per cell (default 3; quick 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run: few cells, short runs (< 2 min, warm cache)")
    ap.add_argument("--only", choices=["fig10", "sched", "nfs", "replicas"], action="append",
                    help="run only this section (repeatable)")
    ap.add_argument("--fig10-k", type=int_list, default=None, help="K values for fig10 (default 1,2,4,8)")
    ap.add_argument("--sched-k", type=int_list, default=None, help="K values for sched (default 1..8)")
    ap.add_argument("--fig10-policy", choices=["other", "fifo", "rr"], default=None,
                    help="µNF policy for fig10 (default fifo when allowed, else other)")
    ap.add_argument("--nfs", default=None, help="comma-separated µNF types for the nfs section (default all)")
    ap.add_argument("--driver-policy", choices=["other", "fifo"], default="other",
                    help="policy of the driver on its own core (default other; fifo steadies the source on an "
                    "otherwise busy machine; a driver sharing a core with µNFs takes their policy)")
    ap.add_argument("--burst", type=int, default=64, help="µNF and driver burst (default 64, as in the paper)")
    ap.add_argument("--ring-capacity", type=int, default=1024, help="ring capacity (default 1024)")
    ap.add_argument("--on-full", choices=["drop", "wait"], default="drop", help="µNF egress full policy")
    ap.add_argument("--rr-noyield-seconds", type=float, default=0.5,
                    help="cap on warm-up and window of the RR-without-yield runs (default 0.5)")
    ap.add_argument("--idle-sleep-us", type=int, default=None,
                    help="GraphSpec.idle_sleep_us for every graph (default: the runtime's default)")
    ap.add_argument("--replica-burst", type=int, default=4096,
                    help="frames per replica step in the replicas section (default 4096)")
    ap.add_argument("--json", action="store_true", help="print a JSON document instead of the tables")
    args = ap.parse_args(argv)
    q = args.quick
    args.seconds = args.seconds if args.seconds is not None else (0.3 if q else 1.5)
    args.warmup = args.warmup if args.warmup is not None else (0.2 if q else 0.5)
    args.repeat = args.repeat if args.repeat is not None else (1 if q else 3)
    args.fig10_k = args.fig10_k or ([2] if q else [1, 2, 4, 8])
    args.sched_k = args.sched_k or ([2] if q else list(range(1, 9)))
    if args.repeat < 1 or args.seconds <= 0 or args.warmup < 0 or not 1 <= args.burst <= 1024:
        ap.error("need --repeat >= 1, --seconds > 0, --warmup >= 0, 1 <= --burst <= 1024")
    if args.ring_capacity < 2 * args.burst or args.ring_capacity & (args.ring_capacity - 1):
        ap.error("--ring-capacity must be a power of two >= 2 x burst")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv] if argv is None else ["chain.py", *argv])
    cpus = sorted(os.sched_getaffinity(0))
    args.core0, args.core1 = cpus[0], cpus[-1]
    rt_ok, rt_why = rt_allowed()
    if not rt_ok:
        print(f"chain.py: real-time policies skipped: {rt_why}", file=sys.stderr)
    if args.fig10_policy is None:
        args.fig10_policy = "fifo" if rt_ok else "other"
    elif args.fig10_policy != "other" and not rt_ok:
        print(f"chain.py: --fig10-policy {args.fig10_policy} not possible: {rt_why}", file=sys.stderr)
        return 2
    if args.driver_policy != "other" and not rt_ok:
        print(f"chain.py: --driver-policy {args.driver_policy} not possible: {rt_why}", file=sys.stderr)
        return 2
    sections_wanted = args.only or ["fig10", "sched", "nfs", "replicas"]
    hz = tsc_hz()
    s = Settings(args.seconds, args.warmup, args.burst, args.ring_capacity, args.on_full, args.core0, args.core1, hz)
    gkw: dict[str, Any] = {"burst": args.burst}
    if args.idle_sleep_us is not None:  # the runtime's idle back-off (GraphSpec.idle_sleep_us), if it has one
        if "idle_sleep_us" not in GraphSpec.model_fields:
            print("chain.py: this micronf has no idle_sleep_us setting", file=sys.stderr)
            return 2
        gkw["idle_sleep_us"] = args.idle_sleep_us
    facts = machine_facts(hz)
    if len(cpus) < 2:
        print("chain.py: one CPU only: driver and µNFs share it; two-core rows are meaningless", file=sys.stderr)
    start = time.monotonic()
    print("chain.py: building traces (scapy) ...", file=sys.stderr, flush=True)
    traces = {"udp": udp_trace()}
    if "nfs" in sections_wanted:
        traces["http"] = http_trace()
    ceilings = {t: ceiling_cell(s, t, args.driver_policy) for t in traces}

    sections: dict[str, list[Cell]] = {}
    if "fig10" in sections_wanted:
        print(f"chain.py: fig10 (policy {args.fig10_policy}) ...", file=sys.stderr, flush=True)
        cells = fig10_cells(args.fig10_k, args.fig10_policy, s, gkw, args.driver_policy)
        run_rounds(cells, traces, s, args.repeat, ceilings)
        sections["fig10"] = cells
    if "replicas" in sections_wanted:
        print("chain.py: replicas ...", file=sys.stderr, flush=True)
        cells = replica_cells(args.fig10_k, args.fig10_policy, s, gkw, args.driver_policy, cpus, args.replica_burst)
        run_rounds(cells, traces, s, args.repeat, ceilings)
        sections["replicas"] = cells
    if "sched" in sections_wanted:
        print("chain.py: sched ...", file=sys.stderr, flush=True)
        variants = sched_variants(rt_ok)
        if args.quick:
            variants = [v for v in variants if v.name in ("CFS+yield", "FIFO+yield", "RR+yield", "CFS no yield")]
        sections["sched"] = run_sched(variants, args.sched_k, traces, s, args.repeat, gkw, ceilings,
                                      args.rr_noyield_seconds, args.driver_policy)
    if "nfs" in sections_wanted:
        print("chain.py: nfs ...", file=sys.stderr, flush=True)
        only = [x.strip() for x in args.nfs.split(",")] if args.nfs else (QUICK_NFS if args.quick else None)
        cells = nf_cells(s, gkw, only, args.driver_policy)
        run_rounds(cells, traces, s, args.repeat, ceilings)
        sections["nfs"] = [c for c in cells if c.trace == "udp"]
        sections["nfs-http"] = [c for c in cells if c.trace == "http"]
    elapsed = time.monotonic() - start
    all_cells = [c for cells in sections.values() for c in cells] + list(ceilings.values())
    if args.json:
        doc = {
            "benchmark": "micronf chains (Fig. 5, Fig. 10, per µNF)",
            "command": command,
            "machine": facts,
            "settings": {**asdict(s), "repeat": args.repeat, "fig10_policy": args.fig10_policy,
                         "driver_policy": args.driver_policy, "idle_sleep_us": idle_sleep(args),
                         "line_rate_mpps": LINE_RATE_MPPS, "rt_policies": rt_ok},
            "elapsed_seconds": elapsed,
            "ceilings": {k: c.to_json() for k, c in ceilings.items()},
            "sections": {k: [c.to_json() for c in v] for k, v in sections.items()},
        }
        print(json.dumps(doc, indent=2, default=float))
    else:
        print(format_report(sections, ceilings, facts, command, args, elapsed))
    return 1 if any(c.problems for c in all_cells) else 0


if __name__ == "__main__":
    sys.exit(main())
