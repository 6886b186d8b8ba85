"""The measuring core of ``bench/chain.py``: the driver (one compiled loop that is the pool owner,
the traffic source and the sink: :func:`micronf.app.offline.pump`), one measured run of a graph or
of the driver alone, and the run's conservation and pool checks; plus the machine facts (TSC rate,
real-time scheduling) every report starts with."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from _common import RT_RUNTIME, base_facts, cpu_seconds, rt_runtime_us
from micronf.app.offline import ST_FED, ST_IDLE, ST_LIMIT, ST_NEXT, ST_NPEND, ST_SUNK, ST_WORDS, pump
from micronf.dataplane.atomics import cycles
from micronf.dataplane.pool import PacketPool, PoolArrays
from micronf.dataplane.ring import CTRL_WORDS, RingTable, ring_init
from micronf.io.trace import Trace
from micronf.packet.jit import kernel
from micronf.runtime.graph import GraphSpec, Policy, plan
from micronf.runtime.launch import GraphRuntime

DRIVE_ITERS = 2048  # driver iterations per call into compiled code (a few ms)
DRAIN_SECONDS = 3.0  # at most this long to drain a graph after the measurement window
DRIVER_YIELD_EVERY = 1  # busy driver rounds between yields when the driver shares its core with µNFs
FEED_FOREVER = 1 << 62  # the driver's feed limit while measuring: never reached

U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]


@kernel
def _tsc() -> int:
    t: int = cycles()
    return t


def tsc_hz() -> float:
    """Ticks per second of the cycle counter the runtime's ``cycles`` counters use."""
    best = []
    for _ in range(3):
        t0, c0 = time.perf_counter_ns(), _tsc()
        time.sleep(0.05)
        t1, c1 = time.perf_counter_ns(), _tsc()
        best.append((c1 - c0) * 1e9 / (t1 - t0))
    return statistics.median(best)


def rt_allowed() -> tuple[bool, str]:
    """Can this process use SCHED_FIFO/RR safely (throttling on) and at all (privileges)?"""
    rt = rt_runtime_us()
    if rt is None or rt < 0:
        return False, f"RT throttling is off ({RT_RUNTIME} = {rt})"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError as exc:
        return False, f"cannot set SCHED_FIFO: {exc}"
    return True, ""


def machine_facts(hz: float) -> dict[str, Any]:
    return base_facts() | {"tsc_ghz": round(hz / 1e9, 3), "sched_rt_runtime_us": rt_runtime_us()}


@contextmanager
def driver_scheduling(cpu: int, policy: Policy) -> Iterator[None]:
    """Pin this process (the driver) to ``cpu`` with ``policy`` for the block, then undo it
    (children started later must not inherit either)."""
    old_aff = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    pol = {"other": os.SCHED_OTHER, "fifo": os.SCHED_FIFO, "rr": os.SCHED_RR}[policy]
    try:
        if policy != "other":
            os.sched_setscheduler(0, pol, os.sched_param(1))
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(0, old_aff)


# -- one run ---------------------------------------------------------------------------------
@dataclass
class Settings:
    seconds: float
    warmup: float
    burst: int
    ring_capacity: int
    on_full: str
    core0: int
    core1: int  # the driver's core (== core0 on a one-CPU machine)
    tsc_hz: float = math.nan  # for the CPU-time figures (cycles per packet)


@dataclass
class NodeWindow:
    """One µNF's runtime counters over the measurement window."""

    name: str
    rx: int
    full: int
    dropped: int
    cycles: int
    yields: int
    idle_polls: int

    @property
    def cycles_per_packet(self) -> float:
        return self.cycles / self.rx if self.rx else float("nan")


@dataclass
class Run:
    """One measured run of one graph (or of the bare driver)."""

    mpps: float  # packets reaching the sink per second
    rx_mpps: float  # packets entering the first µNF per second
    seconds: float
    sunk: int
    nodes: list[NodeWindow]
    fed_total: int
    sunk_total: int
    freed_inside_total: int
    in_rings_after: int
    conserved: bool
    driver_idle_rounds: int
    problems: list[str] = field(default_factory=list)
    cpu_cycles_per_packet: float = math.nan  # CPU time of every measured process (driver included) per packet
    alone_mpps: float = math.nan  # the rate if each core's work had its core alone: packets / busiest core's CPU time

    @property
    def full(self) -> int:
        return sum(n.full for n in self.nodes)

    @property
    def cycles_per_packet(self) -> float:
        """Sum over the chain of each µNF's cycles / its own rx."""
        vals = [n.cycles_per_packet for n in self.nodes if n.rx]
        return sum(vals) if vals else float("nan")


def _snapshot(g: GraphRuntime, names: Sequence[str]) -> dict[str, dict[str, int]]:
    return {n: g.node_stats(n).runtime for n in names}


class Driver:
    """The offline runner's :func:`~micronf.app.offline.pump` as an endless source and a sink that
    frees what it drains at once, with its buffers and the trace, for one pool."""

    def __init__(self, trace: Trace, burst: int, yield_every: int = 0) -> None:
        self.trace = trace
        self.burst = burst
        self.yield_every = yield_every
        self.st = np.zeros(ST_WORDS, dtype=np.int64)
        self.pend = np.empty(burst, dtype=np.uint32)

    def pump(self, p: PoolArrays, rctrl: I64, rslots: U32, entry: int, exits: I64, seconds: float,
             feed: bool = True, until: Callable[[], bool] | None = None) -> None:
        """Drive for ``seconds`` (or until ``until()``); without ``feed`` only drain (the pending
        burst still goes in)."""
        t = self.trace
        self.st[ST_LIMIT] = FEED_FOREVER if feed else self.st[ST_NEXT]
        held = np.empty((len(exits), max(self.burst, 256)), dtype=np.uint32)
        n_held = np.zeros(len(exits), dtype=np.int64)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pump(p, rctrl, rslots, entry, t.data, t.offsets, t.lengths, t.ts_ns, self.st, self.pend, exits,
                 held, n_held, self.burst, DRIVE_ITERS, False, self.yield_every)
            if until is not None and until():
                return


def run_ceiling(trace: Trace, s: Settings, driver_policy: Policy) -> Run:
    """The driver alone: a private pool and one ring that is both entry and exit (no µNF)."""
    pool = PacketPool.local(8192, n_clients=1)
    ctrl = np.zeros((1, CTRL_WORDS), dtype=np.int64)
    ring_init(ctrl[0], s.ring_capacity)
    rings = RingTable(ctrl, np.zeros((1, s.ring_capacity), dtype=np.uint32))
    d = Driver(trace, s.burst)
    exits = np.zeros(1, dtype=np.int64)
    with driver_scheduling(s.core1, driver_policy):
        d.pump(pool.arrays, rings.ctrl, rings.slots, 0, exits, s.warmup)
        s0, t0 = int(d.st[ST_SUNK]), time.perf_counter()
        d.pump(pool.arrays, rings.ctrl, rings.slots, 0, exits, s.seconds)
        s1, t1 = int(d.st[ST_SUNK]), time.perf_counter()
        d.pump(pool.arrays, rings.ctrl, rings.slots, 0, exits, 0.05, feed=False)
    left = len(rings[0])
    fed, sunk = int(d.st[ST_FED]), int(d.st[ST_SUNK])
    rate = (s1 - s0) / (t1 - t0) / 1e6
    run = Run(rate, rate, t1 - t0, s1 - s0, [], fed, sunk, 0, left, fed == sunk + left, int(d.st[ST_IDLE]))
    if not run.conserved:
        run.problems.append(f"ceiling: fed {fed} != sunk {sunk} + in ring {left}")
    return run


def run_graph(spec: GraphSpec, trace: Trace, s: Settings, driver_policy: Policy, tag: str) -> Run:
    """Deploy ``spec``, drive it for warm-up + window, drain, stop, check conservation."""
    layout = plan(spec, on_full="wait" if s.on_full == "wait" else "drop")
    names = [n.name for n in layout.nodes]
    g = GraphRuntime(layout, ring_capacity=s.ring_capacity)
    shares_core = any(proc.cpu in (s.core1, None) for proc in layout.processes)
    d = Driver(trace, s.burst, DRIVER_YIELD_EVERY if shares_core else 0)
    exits = np.array([e.ring for e in layout.exits], dtype=np.int64)
    problems: list[str] = []
    try:
        g.start()
        mem = g.memory()
        p, rctrl, rslots, entry = mem.pool.arrays, mem.rings.ctrl, mem.rings.slots, layout.entry_ring
        cores = [proc.cpu for proc in layout.processes]
        with driver_scheduling(s.core1, driver_policy):
            d.pump(p, rctrl, rslots, entry, exits, s.warmup)
            cpu0 = [*map(cpu_seconds, g.pids()), time.thread_time()]
            snap0, s0, t0 = _snapshot(g, names), int(d.st[ST_SUNK]), time.perf_counter()
            d.pump(p, rctrl, rslots, entry, exits, s.seconds)
            snap1, s1, t1 = _snapshot(g, names), int(d.st[ST_SUNK]), time.perf_counter()
            cpu1 = [*map(cpu_seconds, g.pids()), time.thread_time()]

            def drained() -> bool:
                return int(d.st[ST_FED]) == int(d.st[ST_SUNK]) + g.freed_inside()

            d.pump(p, rctrl, rslots, entry, exits, DRAIN_SECONDS, feed=False, until=drained)
            if not drained():
                problems.append(f"{tag}: not drained after {DRAIN_SECONDS:g} s")
    finally:
        g.stop()
    try:
        freed = g.freed_inside()
        in_rings = int(g.ring_occupancy().sum())
        fed, sunk, npend = int(d.st[ST_FED]), int(d.st[ST_SUNK]), int(d.st[ST_NPEND])
        pool = g.memory().pool.stats()
        conserved = fed == sunk + freed + in_rings
        if not conserved:
            problems.append(f"{tag}: conservation violated: fed {fed} != sunk {sunk} + freed inside {freed} "
                            f"+ in rings {in_rings}")
        if pool.in_use != in_rings + npend:
            problems.append(f"{tag}: pool has {pool.in_use} slots in use, expected {in_rings} in rings + "
                            f"{npend} pending")
        if pool.free_errors:
            problems.append(f"{tag}: {pool.free_errors} pool free errors (double frees)")
        nodes = []
        for n in names:
            a, b = snap0[n], snap1[n]
            nodes.append(NodeWindow(n, *(b[k] - a[k] for k in ("rx", "full", "dropped", "cycles", "yields",
                                                                 "idle_polls"))))
            if b["bad_verdict"]:
                problems.append(f"{tag}: {n} had {b['bad_verdict']} bad verdicts")
    finally:
        g.close()
    dt = t1 - t0
    if s1 - s0 <= 0:
        problems.append(f"{tag}: no packet reached the sink in the window")
    busy: dict[int | None, float] = {}  # CPU seconds per core in the window (None: a process not pinned)
    for core, before, after in zip([*cores, s.core1], cpu0, cpu1, strict=True):
        busy[core] = busy.get(core, 0.0) + after - before
    sunk_w = s1 - s0
    return Run(sunk_w / dt / 1e6, nodes[0].rx / dt / 1e6, dt, sunk_w, nodes, fed, sunk, freed, in_rings,
               conserved, int(d.st[ST_IDLE]), problems, sum(busy.values()) * s.tsc_hz / max(sunk_w, 1),
               sunk_w / max(max(busy.values()), 1e-9) / 1e6)


# -- graphs ----------------------------------------------------------------------------------
