"""The offline runner: push a pcap through a graph of µNFs, one pcap per exit.

Click-style (``FromDump -> ... -> ToDump``): ``micronf chain 'CheckIPHeader -> IPTtlDecrementer
-> MacSwapper' --pcap IN.pcap --out DIR`` plans the chain with every exit captured (each label
of the last µNF, every label nobody links, every drop reason of every µNF) and back-pressure
instead of drops on full rings, and runs this process as both the packet source (pool owner:
replays the trace) and the sink (drains the exit rings into one ``PcapWriter`` per exit). Both
sides run in one compiled loop (:func:`pump`, also the driver of ``bench/chain.py``); Python only
writes finished batches and watches the counters. It ends when every packet fed is accounted for:
``fed == written + freed inside the graph``; a graph that stops making progress is reported with
its counters instead of hanging.

The µNFs run either as processes (:class:`GraphRuntime` starts them; the pump feeds and drains
while they run), or, for a graph fused into one process (``runtime.graph.fuse_whole``),
in this process (``in_process``): no process is started, and rounds of the pump alternate with
calls of the process's own hot loop (:class:`_InProcess`). Same rings, same hot loop, same pcaps;
what it saves is the start-up (a zygote loading every hot loop, then the processes: ~0.6 s) and
every cross-core hand-off.

Frame capacity: the graph's pool is sized for the capture (:func:`frame_capacity_for`: the
default 1522 bytes, or the longest frame, at most 65535), so a capture of jumbo or GRO/TSO frames
goes through whole. A frame longer than 65535 bytes is never cut: it goes to its own exit,
``rx.oversize`` (``DIR/rx.oversize.pcap``), and counts as written. A capture without packets is an
empty run: every exit's pcap is written (empty) and nothing is started.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.atomics import sched_yield
from micronf.dataplane.pool import (
    DEFAULT_FRAME_CAPACITY,
    MAX_FRAME_CAPACITY,
    PoolArrays,
    pool_alloc,
    pool_free_owner,
    slot_size_for,
)
from micronf.dataplane.ring import ring_dequeue, ring_enqueue
from micronf.io.pcap_write import PcapWriter
from micronf.io.trace import Trace, fill_pool_from_trace
from micronf.ports.base import keep_unsent
from micronf.runtime.graph import GraphLayout
from micronf.runtime.launch import GraphRuntime

HOLD = 2048  # handles an exit may hold before Python writes them out
OVERSIZE_EXIT = "rx.oversize"  # where frames longer than the frame capacity go (no node name starts with "rx.")
POOL_BUDGET = 128 << 20  # bytes of packet buffers: large frame capacities get fewer slots
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]


# words of a pump's state ``st`` (int64; the compiled loop and Python both read it)
ST_NEXT = 0  # trace frames taken so far (the trace is replayed: frame ST_NEXT % len(trace) is next)
ST_LIMIT = 1  # feed until ST_NEXT reaches this (set it to ST_NEXT to stop feeding)
ST_NPEND = 2  # allocated frames not yet in the entry ring (pump's ``pend``)
ST_FED = 3  # frames enqueued into the entry ring
ST_SUNK = 4  # frames drained from the exit rings
ST_IDLE = 5  # rounds with nothing to do
ST_WORDS = 6


@njit(cache=True, nogil=True)
def pump(p: PoolArrays, rctrl: I64, rslots: U32, entry: int, tdata: npt.NDArray[np.uint8], toff: I64,
         tlen: npt.NDArray[np.int32], tts: I64, st: I64, pend: U32, exit_rings: I64, held: U32, n_held: I64,
         burst: int, max_iters: int, keep: bool, yield_every: int) -> int:
    """The packet driver of a graph run from this process: its source and its sink in one loop.

    Each round feeds a burst of trace frames into ring ``entry`` (allocated from the pool, filled
    from the trace, what the ring refuses retried next round, never dropped) while ``st[ST_NEXT] <
    st[ST_LIMIT]``, and drains every exit ring ``e`` into ``held[e]``: with ``keep`` the handles
    stay there (``n_held[e]`` of them) for Python to write out and free; without, they are freed
    at once. Yields the CPU in a round with nothing to do, and also after ``yield_every`` (> 0)
    busy rounds (a driver sharing its core with real-time µNFs must). Returns after ``max_iters``
    rounds, or when a hold is full, or when the pool ran dry while exits hold packets (Python must
    write them out to free buffers). Counts in ``st`` (see ``ST_*``); returns packets moved."""
    moved = 0
    busy = 0
    hold = held.shape[1]
    for _ in range(max_iters):
        work = 0
        starved = False
        if st[ST_NPEND] == 0 and st[ST_NEXT] < st[ST_LIMIT]:
            k = pool_alloc(p, pend, min(burst, st[ST_LIMIT] - st[ST_NEXT]))
            starved = k == 0
            if k > 0:
                fill_pool_from_trace(p, tdata, toff, tlen, tts, st[ST_NEXT] % toff.shape[0], pend, k)
                st[ST_NEXT] += k
                st[ST_NPEND] = k
        if st[ST_NPEND] > 0:
            sent = ring_enqueue(rctrl[entry], rslots[entry], pend, st[ST_NPEND])
            st[ST_NPEND] = keep_unsent(pend, sent, st[ST_NPEND])
            st[ST_FED] += sent
            work += sent
        full = False
        for e in range(exit_rings.shape[0]):
            r = exit_rings[e]
            k = ring_dequeue(rctrl[r], rslots[r], held[e, n_held[e] :], hold - n_held[e])
            if k > 0:
                st[ST_SUNK] += k
                work += k
                if keep:
                    n_held[e] += k
                    full = full or n_held[e] == hold
                else:
                    pool_free_owner(p, held[e], k)
        moved += work
        if full or (starved and work == 0 and n_held.sum() > 0):
            break
        if work == 0:
            st[ST_IDLE] += 1
            sched_yield()
        elif yield_every > 0:
            busy += 1
            if busy >= yield_every:
                busy = 0
                sched_yield()
    return moved


@dataclass
class OfflineResult:
    """What came out where, and the accounting."""

    fed: int
    per_exit: dict[str, int]  # includes OVERSIZE_EXIT
    freed_inside: int
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    frame_capacity: int = DEFAULT_FRAME_CAPACITY

    @property
    def written(self) -> int:
        return sum(self.per_exit.values())

    @property
    def balanced(self) -> bool:
        return self.fed == self.written + self.freed_inside


class GraphStalledError(RuntimeError):
    """The graph stopped making progress before every packet was accounted for."""


def skip_blas_probe() -> None:
    """Spare this process numba's BLAS probe: call before its first compile or cache load.

    Why: on its first compile or cache load numba imports its NumPy support, which probes for BLAS
    by importing ``scipy.linalg.cython_blas`` (scipy.linalg and OpenBLAS: 0.15-0.2 s, a third of an
    offline run's start-up). No micronf kernel calls BLAS. The probe's only lasting effect is
    ``np.correlate``/``np.convolve`` compiled without BLAS (same results); BLAS itself stays
    available (``np.dot`` and ``np.linalg`` import it when first compiled, as usual)."""
    blas = "scipy.linalg.cython_blas"
    if "numba.np.arraymath" in sys.modules or blas in sys.modules:
        return  # probed already, or BLAS loaded anyway
    sys.modules[blas] = None  # type: ignore[assignment]  # None: "import halted", the probe says no BLAS
    try:
        import numba.np.arraymath  # noqa: F401  (the probe runs at its import)
    finally:
        del sys.modules[blas]


def frame_capacity_for(trace: Trace) -> int:
    """The smallest frame capacity that fits every frame of ``trace``: the default (1522), or the
    longest frame when longer, at most 65535 (longer frames are oversize)."""
    longest = int(trace.lengths.max()) if len(trace) else 0
    return min(max(DEFAULT_FRAME_CAPACITY, longest), MAX_FRAME_CAPACITY)


def offline_capacity_note(res: OfflineResult) -> str:
    """One line saying which frame capacity the run used and why (printed by the CLI)."""
    cap, n = res.frame_capacity, res.per_exit.get(OVERSIZE_EXIT, 0)
    if n:
        return (f"frame capacity {cap} bytes (the maximum): {n:,} longer frames dropped whole as oversize, "
                f"written to {res.files[OVERSIZE_EXIT]}")
    why = "the default" if cap == DEFAULT_FRAME_CAPACITY else "the longest frame of the capture"
    return f"frame capacity {cap} bytes ({why}): every frame fits"


def _pool_slots(layout: GraphLayout, frame_capacity: int) -> int:
    """Packet buffers: GraphRuntime's default (enough to fill the rings), fewer when that would
    take more than POOL_BUDGET bytes (64 KiB frames); back-pressure makes a short pool only slower."""
    default = max(4096, layout.n_rings * 1024)
    return min(default, max(1024, POOL_BUDGET // slot_size_for(frame_capacity)))


def run_offline(layout: GraphLayout, trace: Trace, out_dir: Path, *, loops: int = 1, stall_timeout: float = 30.0,
                progress: Callable[[int, int], None] | None = None, in_process: bool = False) -> OfflineResult:
    """Run ``trace`` (``loops`` times) through ``layout`` and write ``out_dir/<exit>.pcap`` per exit
    (and ``out_dir/rx.oversize.pcap``), with the frame capacity :func:`frame_capacity_for` picks.

    ``in_process``: run the graph's one process (a graph fused whole, see
    :func:`~micronf.runtime.graph.fuse_whole`) in this process, between the pump's feed and drain
    (:class:`_InProcess`), instead of starting µNF processes: same hot loop, same outputs."""
    if not layout.capture_drops:
        raise ValueError("the offline runner needs a layout planned with capture_drops=True")
    if in_process and len(layout.processes) != 1:
        raise ValueError(f"only a graph fused into one process runs in-process ({len(layout.processes)} processes)")
    cap = frame_capacity_for(trace)
    fits = trace.lengths <= cap
    feed = trace.select(fits)
    out_dir.mkdir(parents=True, exist_ok=True)
    exits = layout.exits
    files = {e.name: out_dir / f"{e.name}.pcap" for e in exits}
    files[OVERSIZE_EXIT] = out_dir / f"{OVERSIZE_EXIT}.pcap"
    too_long = trace.select(~fits)
    with PcapWriter(files[OVERSIZE_EXIT], linktype=trace.linktype) as w:
        for _ in range(loops if len(too_long) else 0):  # no per-loop work when every frame fits
            w.write_trace(too_long)
    oversize = len(too_long) * loops
    writers = [PcapWriter(files[e.name], linktype=trace.linktype) for e in exits]
    total = len(feed) * loops
    try:
        if total == 0:
            counts, freed, seconds = [0] * len(exits), 0, 0.0
        else:
            drive = _InProcess(layout, cap) if in_process else _Processes(layout, cap)
            counts, freed, seconds = drive.run(feed, total, writers, stall_timeout,
                                               None if progress is None else lambda d, t: progress(d + oversize,
                                                                                                    t + oversize))
    finally:
        for w in writers:
            w.close()
    per_exit = {e.name: c for e, c in zip(exits, counts, strict=True)} | {OVERSIZE_EXIT: oversize}
    return OfflineResult(fed=total + oversize, per_exit=per_exit, freed_inside=freed, seconds=seconds, files=files,
                         frame_capacity=cap)


Progress = Callable[[int, int], None] | None


class _Driver:
    """What both ways of running the graph share: the pump's state, the holds, writing them out."""

    def __init__(self, layout: GraphLayout, frame_capacity: int) -> None:
        self.layout = layout
        self.cap = frame_capacity

    def setup(self, total: int, feed_burst: int, hold: int) -> None:
        n = len(self.layout.exits)
        self.st = np.zeros(ST_WORDS, dtype=np.int64)
        self.st[ST_LIMIT] = total
        self.pend = np.empty(feed_burst, dtype=np.uint32)
        self.exit_rings = np.array([e.ring for e in self.layout.exits], dtype=np.int64)
        self.held = np.empty((n, hold), dtype=np.uint32)
        self.n_held = np.zeros(n, dtype=np.int64)
        self.counts = [0] * n

    def pump(self, g: GraphRuntime, feed: Trace, burst: int, max_iters: int, yield_every: int) -> int:
        mem = g.memory()
        return int(pump(mem.pool.arrays, mem.rings.ctrl, mem.rings.slots, self.layout.entry_ring, feed.data,
                        feed.offsets, feed.lengths, feed.ts_ns, self.st, self.pend, self.exit_rings, self.held,
                        self.n_held, burst, max_iters, True, yield_every))

    def write_held(self, g: GraphRuntime, writers: list[PcapWriter]) -> None:
        """Write every exit's held handles to its pcap, then free them."""
        p = g.memory().pool.arrays
        for e, writer in enumerate(writers):
            n = int(self.n_held[e])
            if n:
                writer.write_pool(p, self.held[e], n)
                pool_free_owner(p, self.held[e], n)
                self.counts[e] += n
                self.n_held[e] = 0

    def fed_all(self, total: int) -> bool:
        return bool(self.st[ST_NEXT] == total and self.st[ST_NPEND] == 0)

    def stalled(self, g: GraphRuntime, total: int, done: int, stall_timeout: float) -> GraphStalledError:
        return GraphStalledError(f"no progress for {stall_timeout:.0f} s: fed {int(self.st[ST_FED])} of {total}, "
                                 f"accounted {done}; node counters: "
                                 + "; ".join(f"{n.name} {g.node_stats(n.name).runtime}" for n in self.layout.nodes))


class _Processes(_Driver):
    """The graph's µNFs as processes (started by :class:`GraphRuntime`); this process feeds and drains."""

    def run(self, feed: Trace, total: int, writers: list[PcapWriter], stall_timeout: float,
            progress: Progress) -> tuple[list[int], int, float]:
        layout = self.layout
        with GraphRuntime(layout, pool_slots=_pool_slots(layout, self.cap), frame_capacity=self.cap) as g:
            self.setup(total, layout.burst, min(HOLD, g.memory().pool.n_slots // 4))
            t0 = last_progress = time.monotonic()
            while True:
                moved = self.pump(g, feed, layout.burst, 1 << 14, 0)
                self.write_held(g, writers)
                freed = g.freed_inside()
                done = sum(self.counts) + freed
                now = time.monotonic()
                if moved:
                    last_progress = now
                if progress is not None:
                    progress(done, total)
                if self.fed_all(total) and done >= total:
                    break
                if now - last_progress > stall_timeout:
                    raise self.stalled(g, total, done, stall_timeout)
            return self.counts, freed, time.monotonic() - t0


IN_PROCESS_CHUNK = 4096  # packets fed per round when the graph runs in this process (also its ring capacity)


class _InProcess(_Driver):
    """The graph's one process run here: rounds of pump (drain the exits, feed a chunk) and one call
    of the process's hot loop (:class:`~micronf.runtime.unf.UnfStage`, what the µNF process would
    run), over the graph's memory without any process started.

    Why no exit ring ever fills (a full exit would make the loop wait forever for a drain that runs
    in this same thread): every ring holds a chunk; a round drains every exit whole (the holds take
    a ring each) before the loop runs, and the loop can move at most what the entry ring holds."""

    def run(self, feed: Trace, total: int, writers: list[PcapWriter], stall_timeout: float,
            progress: Progress) -> tuple[list[int], int, float]:
        from micronf.runtime.unf import UnfStage

        layout = self.layout.model_copy(update={"yield_idle": False, "idle_sleep_us": 0, "prefetch": 0})
        slots = _pool_slots(layout, self.cap)
        chunk = min(IN_PROCESS_CHUNK, 1 << ((slots // 4).bit_length() - 1))  # in flight: < 3 chunks
        g = GraphRuntime(layout, pool_slots=slots, frame_capacity=self.cap, ring_capacity=chunk, io_clients=1,
                         spare_processes=0, unprivileged=False)
        g.create()
        try:
            stage = UnfStage(g.memory(), g.line(0), 0, chunk // layout.burst + 1)
            self.setup(total, chunk, chunk)
            t0 = last_progress = time.monotonic()
            freed = done = 0
            while True:
                moved = self.pump(g, feed, chunk, 1, 0)
                self.write_held(g, writers)
                moved += stage.step()
                now = time.monotonic()
                if moved:
                    last_progress = now
                if self.fed_all(total):
                    freed = g.freed_inside()
                    done = sum(self.counts) + freed
                    if done >= total:
                        break
                if progress is not None:
                    progress(int(self.st[ST_SUNK]) + freed, total)
                if now - last_progress > stall_timeout:
                    raise self.stalled(g, total, done, stall_timeout)
            return self.counts, freed, time.monotonic() - t0
        finally:
            g.close()
