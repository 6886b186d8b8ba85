"""Bring a planned graph to life on this machine: segment, rings, port tables, processes.

``GraphRuntime`` is what the agent (and the offline runner, tests and benchmarks) use: it
creates the graph's segment, formats the pool and rings, writes every µNF's port table and the
layout, starts the graph's zygote (a fork server that loads every hot loop once: µNF processes
then start in milliseconds, see ``micronf.runtime.zygote``), forks one process per µNF or fused
cluster from it, and waits for each to report ready. ``stop()`` asks every process to stop and
waits; ``close()`` removes the segment. By default the graph's processes end with the process
that started it (even on ``kill -9``); ``detached=True`` lets them outlive it (the agent's graphs,
see ``micronf.runtime.zygote``). Pool clients (and control lines) from ``max_processes``
on are for I/O processes (source, sink, Rx, Tx). Adding and removing instances of a µNF while
the graph runs is ``micronf.runtime.scaling``.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass

import numpy as np

from micronf.dataplane.control import ControlBlock, ControlLine
from micronf.dataplane.pool import DEFAULT_FRAME_CAPACITY, PacketPool
from micronf.dataplane.ring import HEAD, RingTable
from micronf.dataplane.segment import Segment
from micronf.ports.base import MAX_FANOUT
from micronf.runtime import unf
from micronf.runtime.graph import GraphLayout, NodePlan
from micronf.runtime.loop import RC_NAMES, RC_VERDICT0
from micronf.runtime.privileges import assign_uid, uid_base
from micronf.runtime.process import ENTRY
from micronf.runtime.stage import GraphMemory, node_regions, write_layout
from micronf.runtime.verdict import drop_counts, verdict_columns
from micronf.runtime.zygote import Child, Zygote, ZygoteError


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
                 ring_capacity: int = 1024, io_clients: int = 4, spare_processes: int = 8,
                 preload: tuple[str, ...] = (), extra_regions: dict[str, int] | None = None,
                 frame_capacity: int = DEFAULT_FRAME_CAPACITY, unprivileged: bool = True,
                 detached: bool = False) -> None:
        self.layout = layout
        self.detached = detached
        self.frame_capacity = frame_capacity  # longest frame the pool's slots take (see dataplane.pool)
        self.uid_base = uid_base() if unprivileged else None  # None: the µNFs keep our uid (see privileges)
        self.uid: int | None = None  # the graph's own uid, once created
        self.segment_name = segment or f"{layout.name}-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        self.ring_capacity = ring_capacity
        self.pool_slots = pool_slots or max(4096, 2 * layout.n_rings * ring_capacity // 2)
        self.max_processes = len(layout.processes) + spare_processes
        self.spare_nodes = spare_processes
        self.io_client_base = self.max_processes  # process k frees through client k; I/O after them
        self.n_clients = self.max_processes + io_clients
        self.procs: list[Child] = []
        self.io_clients = io_clients
        self.zygote: Zygote | None = None
        self.preload = preload
        self.extra_regions = extra_regions or {}
        self.seg: Segment | None = None
        self.mem: GraphMemory | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def create(self) -> GraphMemory:
        """Create and format the segment (no processes yet)."""
        layout_bytes = 4 * len(self.layout.model_dump_json()) + 65536  # room for scale-out instances
        regions = {
            **PacketPool.regions("pool", self.pool_slots, self.frame_capacity, n_clients=self.n_clients),
            **RingTable.regions("rings", self.layout.n_rings, self.ring_capacity),
            "ctl": ControlBlock.nbytes(self.max_processes + self.io_clients),
            "layout": layout_bytes,
            "entries": (1 + MAX_FANOUT) * 8,
            **self.extra_regions,
            **node_regions(self.layout, self.spare_nodes),
        }
        seg = Segment.create(self.segment_name, regions)
        self.seg = seg
        try:
            if self.uid_base is not None:
                self.uid = assign_uid(seg.path, self.uid_base)
            PacketPool.format(seg, "pool", self.pool_slots, self.frame_capacity, n_clients=self.n_clients)
            RingTable.format(seg, "rings", self.layout.n_rings, self.ring_capacity)
            write_layout(seg, self.layout)
            entries = seg.view("entries", np.int64)
            entries[0], entries[1] = 1, self.layout.entry_ring
            mem = GraphMemory.of(seg)
            for node in self.layout.nodes:
                self.write_ports(mem, node)
        except BaseException:
            seg.unlink()
            raise
        self.mem = mem
        return mem

    @staticmethod
    def write_ports(mem: GraphMemory, node: NodePlan) -> None:
        """Write ``node``'s port table (ingress, egress, routes) as its layout says."""
        table = mem.port_table(node)
        table.begin()
        table.init(len(node.ingress), len(node.egress), len(node.labels) + len(node.drop_reasons))
        for i, ing in enumerate(node.ingress):
            table.set_ingress(i, ing.kind, ing.ring, ing.need)
        for e, eg in enumerate(node.egress):
            table.set_egress(e, eg.kind, eg.rings, eg.on_full)
        for row, col, value in node.routes:
            table.set_route(row, col, value)
        table.publish()

    def start(self, timeout: float = 120.0) -> None:
        """Create (if needed), start the graph's zygote (it loads every hot loop once), fork every
        µNF process from it and wait until all report ready. On failure nothing is left running."""
        self.mem or self.create()
        try:
            self.zygote = Zygote(self.segment_name, preload=self.preload, timeout=timeout, detached=self.detached)
            for k in range(len(self.layout.processes)):
                self._spawn(k)
            self._wait_ready(range(len(self.procs)), timeout)
        except BaseException as exc:  # also Ctrl-C/SIGTERM while starting: nothing may stay behind
            self.stop()
            self.close()
            if isinstance(exc, LaunchError | ZygoteError):
                raise LaunchError(str(exc)) from None
            raise

    def adopt(self, seg: Segment, alive: set[int], timeout: float = 120.0) -> list[Child | None]:
        """Take over this graph, already running from ``seg`` (its creator is gone: an agent restart).

        The segment is the source of truth: the layout (with any scale-out instances) and every
        process's pid are read from it; ``alive`` are the pids that map it right now (so a reused
        pid is not mistaken for ours). A process not alive is adopted as exited, for the supervisor
        to restart. A new zygote is started for those restarts. Returns the children of the I/O
        control lines (None where nothing ever ran)."""
        seg.take_ownership()
        self.seg = seg
        self.mem = GraphMemory.of(seg)
        self.layout = self.mem.layout
        self.procs = [self._adopted(self.line(k), alive) for k in range(len(self.layout.processes))]
        io = [self._adopted(self.io_line(s), alive) if self.io_line(s).pid else None for s in range(self.io_clients)]
        self.zygote = Zygote(self.segment_name, preload=self.preload, timeout=timeout, detached=self.detached)
        return io

    @staticmethod
    def _adopted(line: ControlLine, alive: set[int]) -> Child:
        return Child(line.pid if line.pid in alive else 0, line, adopted=True)

    def ensure_zygote(self) -> Zygote:
        """The graph's zygote, started again (loading every hot loop: seconds) if it is gone."""
        if self.zygote is None or not self.zygote.alive:
            if self.zygote is not None:
                self.zygote.close()  # reap the dead one, close its pipes
            self.zygote = Zygote(self.segment_name, preload=self.preload, detached=self.detached)
        return self.zygote

    def _start(self, line: ControlLine, stage: str, *args: str) -> Child:
        """Fork the process runner (``micronf.runtime.process``) for the stage of module ``stage``
        in control ``line``."""
        line.prepare_start()
        return self.ensure_zygote().spawn(line, ENTRY, self.segment_name, str(line.slot), stage, *args)

    def _spawn(self, k: int) -> None:
        """(Re)start process ``k`` of the layout."""
        child = self._start(self.line(k), unf.__name__, str(k))
        if k < len(self.procs):
            self.procs[k].close()
            self.procs[k] = child
        else:
            self.procs.append(child)

    def restart_process(self, k: int) -> Child:
        """Start process ``k`` again (it died; the supervisor reclaimed what it held); returns its child."""
        self._spawn(k)
        return self.procs[k]

    def spawn_io(self, slot: int, stage: str, *args: str) -> Child:
        """Start an I/O service (the stage of module ``stage``, e.g. ``micronf.services.rx``, with
        ``args``) in control line ``io_line(slot)``; see :meth:`io_line`."""
        return self._start(self.io_line(slot), stage, *args)

    def line(self, k: int) -> ControlLine:
        """Control line of µNF process ``k``."""
        return self.memory().control.line(k)

    def io_line(self, slot: int) -> ControlLine:
        """Control line of I/O service ``slot`` (0 .. io_clients-1): after every µNF process slot."""
        if not 0 <= slot < self.io_clients:
            raise ValueError(f"I/O slot {slot} out of range 0..{self.io_clients - 1}")
        return self.line(self.max_processes + slot)

    def _wait_ready(self, processes: range, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(self.line(k).ready for k in processes):
            dead = [k for k in processes if self.procs[k].poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"process {dead[0]} exited with {self.procs[dead[0]].poll()}" if dead else "timeout"
                raise LaunchError(f"graph {self.layout.name!r} failed to start: {why}")
            time.sleep(0.002)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every process to stop, wait, kill what does not; then end the zygote."""
        if self.mem is not None:
            for k in range(len(self.procs)):
                self.line(k).request_stop()
        for p in self.procs:
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=timeout)
            p.close()
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None

    # -- pausing (the supervisor's accounting after a crash) ----------------------------------
    @staticmethod
    def pause(lines: list[ControlLine], timeout: float = 1.0) -> list[ControlLine]:
        """Ask the processes of control ``lines`` to pause after their batch in hand; returns the
        lines that did not confirm within ``timeout`` (dead or stuck)."""
        for line in lines:
            line.request_pause()
        deadline = time.monotonic() + timeout
        waiting = list(lines)
        while waiting and time.monotonic() < deadline:
            waiting = [ln for ln in waiting if not ln.paused and not ln.exited]
            time.sleep(0.0005)
        return waiting

    @staticmethod
    def resume(lines: list[ControlLine]) -> None:
        for line in lines:
            line.resume()

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

    # -- processes added and removed while the graph runs (see micronf.runtime.scaling) ----------
    def start_process(self, k: int, timeout: float) -> None:
        """Start process ``k``, just added to the layout, and wait until it reports ready."""
        self._spawn(k)
        self._wait_ready(range(k, k + 1), timeout)

    def stop_process(self, k: int, timeout: float) -> None:
        """Ask process ``k`` to stop and wait until it has."""
        self.line(k).request_stop()
        self.procs[k].wait(timeout=timeout)

    def segment(self) -> Segment:
        """The graph's shared-memory segment (after ``create``)."""
        if self.seg is None:
            raise RuntimeError("the graph has no segment")
        return self.seg

    # -- observation -------------------------------------------------------------------------
    def memory(self) -> GraphMemory:
        """The views of the graph's segment every process uses (after ``create``)."""
        if self.mem is None:
            raise RuntimeError("the graph has no segment (call create() or start())")
        return self.mem

    def pids(self) -> list[int]:
        return [self.line(k).pid for k in range(len(self.layout.processes))]

    def node_stats(self, name: str) -> NodeStats:
        mem = self.memory()
        node = self.layout.node(name)
        rc = mem.runtime_counters(node)
        verdicts = verdict_columns(node.labels, node.drop_reasons)
        nc = mem.nf_counters(node)
        return NodeStats(
            name=name,
            runtime={k: int(rc[i]) for k, i in RC_NAMES.items()},
            verdicts={v: int(rc[RC_VERDICT0 + c]) for c, v in enumerate(verdicts)},
            counters={c: int(nc[i]) for i, c in enumerate(node.counters)},
        )

    def freed_inside(self) -> int:
        """Packets whose buffer a µNF returned to the pool instead of passing on: drop verdicts not
        captured, unconnected labels, full egresses, bad verdicts (the graph's counted losses)."""
        total = 0
        for node in self.layout.nodes:
            rt = self.node_stats(node.name).runtime
            total += rt["dropped"] + rt["unconnected"] + rt["full"] + rt["bad_verdict"]
        return total

    def counted_frees(self, k: int) -> int:
        """Buffers process ``k`` has counted as the graph's drops (drop verdicts not captured, unconnected
        labels, full egresses, bad verdicts): each such packet bumps exactly one of these counters, and
        only then is its buffer freed through the process's return ring. So the counter sum minus that
        ring's head (minus what earlier reclaims settled, see :meth:`settle`) is what the process
        counted but did not yet free: 0 between batches, and for a killed process exactly the counted part
        of the buffers it held."""
        total = 0
        for i in self.layout.processes[k].nodes:
            s = self.node_stats(self.layout.nodes[i].name)
            total += s.runtime["unconnected"] + s.runtime["full"] + s.runtime["bad_verdict"]
            if not self.layout.capture_drops:
                total += sum(drop_counts(s.verdicts).values())
        return total

    def counted_unfreed(self) -> list[int]:
        """Per process: buffers counted as dropped but not yet freed (see :meth:`counted_frees`)."""
        mem = self.memory()
        heads = mem.pool.arrays.ret_ctrl[:, HEAD]
        return [self.counted_frees(k) - int(heads[proc.client]) - self.line(k).settled
                for k, proc in enumerate(self.layout.processes)]

    def settle(self, unfreed: list[int]) -> None:
        """After a reclaim freed the counted-but-unfreed buffers ``unfreed``: account them as freed."""
        for k, n in enumerate(unfreed):
            self.line(k).settle(n)

    def ring_occupancy(self) -> np.ndarray:
        """Handles waiting in each ring right now."""
        mem = self.memory()
        return np.array([len(mem.rings[i]) for i in range(len(mem.rings))])
