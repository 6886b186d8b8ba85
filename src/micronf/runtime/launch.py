"""Bring a planned graph to life on this machine: segment, rings, port tables, processes.

``GraphRuntime`` is what the agent (and the offline runner, tests and benchmarks) use: it
creates the graph's segment, formats the pool and rings, writes every µNF's port table and the
layout, compiles the hot loops once in this process (so µNF processes starting together load
them from numba's cache instead of all compiling at once), starts one process per µNF or fused
cluster, and waits for each to report ready. ``stop()`` asks every process to stop and waits;
``close()`` removes the segment. Pool clients ``len(processes)`` and up are free for I/O
processes (source, sink, Rx, Tx).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from micronf.dataplane.pool import PacketPool
from micronf.dataplane.ring import RingTable
from micronf.dataplane.segment import Segment
from micronf.runtime.codegen import load_hot_loop
from micronf.runtime.graph import GraphLayout, NodePlan
from micronf.runtime.loop import RC_NAMES, RC_VERDICT0
from micronf.runtime.stage import (
    CTL_LINE,
    P_PID,
    P_READY,
    P_STOP,
    GraphMemory,
    build_stage,
    ctl_line,
    instantiate,
    node_regions,
    write_layout,
)


class LaunchError(RuntimeError):
    """A µNF process failed to start; the graph was torn down."""


@dataclass(frozen=True)
class NodeStats:
    """Counters of one µNF: runtime counters, per-verdict counts, and the µNF's own counters."""

    name: str
    runtime: dict[str, int]
    verdicts: dict[str, int]
    counters: dict[str, int]


class GraphRuntime:
    """A graph deployed on this machine (use as a context manager)."""

    def __init__(self, layout: GraphLayout, *, segment: str | None = None, pool_slots: int = 0,
                 ring_capacity: int = 1024, io_clients: int = 4, spare_processes: int = 8) -> None:
        self.layout = layout
        self.segment_name = segment or f"{layout.name}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.ring_capacity = ring_capacity
        self.pool_slots = pool_slots or max(4096, 2 * layout.n_rings * ring_capacity // 2)
        self.n_clients = len(layout.processes) + io_clients + spare_processes
        self.io_client_base = len(layout.processes)
        self.max_processes = len(layout.processes) + spare_processes
        self.procs: list[subprocess.Popen[bytes]] = []
        self.seg: Segment | None = None
        self.mem: GraphMemory | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def create(self) -> GraphMemory:
        """Create and format the segment (no processes yet)."""
        layout_bytes = len(self.layout.model_dump_json()) + 8
        regions = {
            **PacketPool.regions("pool", self.pool_slots, n_clients=self.n_clients),
            **RingTable.regions("rings", self.layout.n_rings, self.ring_capacity),
            "ctl": (self.max_processes + 1) * CTL_LINE * 8,
            "layout": layout_bytes,
            **node_regions(self.layout),
        }
        seg = Segment.create(self.segment_name, regions)
        self.seg = seg
        try:
            PacketPool.format(seg, "pool", self.pool_slots, n_clients=self.n_clients)
            RingTable.format(seg, "rings", self.layout.n_rings, self.ring_capacity)
            write_layout(seg, self.layout)
            mem = GraphMemory.of(seg)
            for node in self.layout.nodes:
                self._write_ports(mem, node)
        except BaseException:
            seg.unlink()
            raise
        self.mem = mem
        return mem

    @staticmethod
    def _write_ports(mem: GraphMemory, node: NodePlan) -> None:
        table = mem.port_table(node)
        table.init(len(node.ingress), len(node.egress), len(node.labels) + len(node.drop_reasons))
        for i, ing in enumerate(node.ingress):
            table.set_ingress(i, ing.kind, ing.ring, ing.need)
        for e, eg in enumerate(node.egress):
            table.set_egress(e, eg.kind, eg.rings, eg.on_full)
        for row, col, value in node.routes:
            table.set_route(row, col, value)
        table.publish()

    def warm(self) -> None:
        """Compile (or load) every process's hot loop here, with the very argument types it will use."""
        mem = self._memory()
        for plan in self.layout.processes:
            nodes = [self.layout.nodes[i] for i in plan.nodes]
            nfs = [instantiate(n) for n in nodes]
            hot = load_hot_loop([type(nf) for nf in nfs])
            stages = [build_stage(mem, n, nf, self.layout.burst) for n, nf in zip(nodes, nfs, strict=True)]
            hot(mem.pool.arrays, mem.rings.ctrl, mem.rings.slots, mem.ctl, 0, plan.client, 0,
                self.layout.yield_idle, self.layout.yield_every, self.layout.prefetch, *stages)

    def start(self, timeout: float = 120.0) -> None:
        """Create (if needed), warm, start every process and wait until all report ready."""
        mem = self.mem or self.create()
        self.warm()
        for k in range(len(self.layout.processes)):
            self.procs.append(subprocess.Popen([sys.executable, "-m", "micronf.runtime.process",
                                                self.segment_name, str(k)]))
        deadline = time.monotonic() + timeout
        while not all(mem.ctl[ctl_line(k) + P_READY] for k in range(len(self.procs))):
            dead = [k for k, p in enumerate(self.procs) if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                self.close()
                why = f"process {dead[0]} exited with {self.procs[dead[0]].returncode}" if dead else "timeout"
                raise LaunchError(f"graph {self.layout.name!r} failed to start: {why}")
            time.sleep(0.01)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every process to stop, wait, kill what does not."""
        if self.mem is not None:
            for k in range(len(self.procs)):
                self.mem.ctl[ctl_line(k) + P_STOP] = 1
        for p in self.procs:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        """Remove the segment (after ``stop``)."""
        if self.seg is not None:
            self.seg.unlink()
            self.seg = None
            self.mem = None

    def __enter__(self) -> GraphRuntime:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.close()

    # -- observation -------------------------------------------------------------------------
    def _memory(self) -> GraphMemory:
        if self.mem is None:
            raise RuntimeError("the graph has no segment (call create() or start())")
        return self.mem

    def pids(self) -> list[int]:
        mem = self._memory()
        return [int(mem.ctl[ctl_line(k) + P_PID]) for k in range(len(self.layout.processes))]

    def node_stats(self, name: str) -> NodeStats:
        mem = self._memory()
        node = self.layout.node(name)
        rc = mem.runtime_counters(node)
        verdicts = node.labels + [f"drop:{r}" for r in node.drop_reasons]
        nc = mem.nf_counters(node)
        return NodeStats(
            name=name,
            runtime={k: int(rc[i]) for k, i in RC_NAMES.items()},
            verdicts={v: int(rc[RC_VERDICT0 + c]) for c, v in enumerate(verdicts)},
            counters={c: int(nc[i]) for i, c in enumerate(node.counters)},
        )

    def ring_occupancy(self) -> np.ndarray:
        """Handles waiting in each ring right now."""
        mem = self._memory()
        return np.array([len(mem.rings[i]) for i in range(len(mem.rings))])
