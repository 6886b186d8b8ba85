"""A linear pipeline of processes over bare SPSC rings: the subject of ``bench/ring.py``.

``source -> forward x K -> sink``, one OS process per stage, all sharing one segment:

- the *source* owns the packet pool: it allocates bursts (which writes each slot's metadata line),
  stamps a marker byte and enqueues them;
- each *forward* stage dequeues a burst, increments the marker byte (touching one cache line of
  every packet, as a header-rewriting µNF would) and enqueues to the next ring;
- the *sink* checks that the marker equals K (every stage saw every packet) and frees the burst
  through its pool return ring.

Full rings apply back-pressure (the stage retries, yielding), so the pipeline is lossless and the
sink's count is the throughput. Each loop is compiled whole: Python is entered only every
``ITERS_PER_CALL`` iterations to look at the clock. Loops yield the CPU when the input is empty
or the output is full (paper §VI-E), which makes SCHED_FIFO safe and sharing a core efficient.
Each loop borrows its arrays once per call (:func:`~micronf.dataplane.borrow.borrowed`, as the µNF
hot loop does): the inlined ring and pool calls then take and drop no reference per burst (before,
7-10 NRT increfs and 16-24 decrefs in each loop's machine code; locked instructions on the
arrays' meminfo). That took the pipeline from 0.64-0.81x to 0.94-1.19x the C reference at burst
64 (SCHED_FIFO, K = 1..4, one session). The burst buffer is the caller's (allocated once per
stage process), so it outlives the loop's borrowed view of it.

The same layout is driven by the C reference in ``bench/ring_ref.c`` so both are measured on
identical memory; this module launches either implementation. It lives with the benchmark, not in
the runtime, on purpose: it measures the rings and the pool alone against C, without the µNF loop
(``micronf bench-ring`` runs the same chain through the runtime, :mod:`micronf.app.demo`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.atomics import load_acquire, sched_yield, store_release
from micronf.dataplane.borrow import borrowed
from micronf.dataplane.pool import DATA_OFF, PacketPool, PoolArrays, pool_alloc, pool_free
from micronf.dataplane.ring import RingTable, ring_dequeue, ring_enqueue_at, ring_init
from micronf.dataplane.segment import Segment

MARK_OFF = DATA_OFF + 22  # the IPv4 TTL byte of an untagged frame: one cache line per packet
ITERS_PER_CALL = 1 << 16
# Control region (int64 words): go/stop flags, then one 128-byte line per stage.
W_GO = 0
W_STOP = 1
LINE = 16
S_COUNT = 0  # packets this stage has passed on
S_READY = 1  # 1 once the stage has attached and compiled
S_ERRORS = 2  # sink: packets whose marker was wrong
POLICIES = {"other": os.SCHED_OTHER, "fifo": os.SCHED_FIFO, "rr": os.SCHED_RR}


@njit(cache=True, nogil=True, inline="always")
def _push(ctrl: npt.NDArray[np.int64], slots: npt.NDArray[np.uint32], buf: npt.NDArray[np.uint32],
          n: int, ctl: npt.NDArray[np.int64], yield_idle: bool) -> bool:
    """Enqueue ``buf[0:n]`` completely (back-pressure), yielding while full; False if stopped."""
    sent = ring_enqueue_at(ctrl, slots, buf, 0, n)
    while sent < n:
        if load_acquire(ctl, W_STOP):
            return False
        if yield_idle:
            sched_yield()
        sent += ring_enqueue_at(ctrl, slots, buf, sent, n - sent)
    return True


@njit(cache=True, nogil=True)
def source_loop(p: PoolArrays, out_ctrl: npt.NDArray[np.int64], out_slots: npt.NDArray[np.uint32],
                ctl: npt.NDArray[np.int64], line: int, buf: npt.NDArray[np.uint32], yield_idle: bool,
                iters: int) -> int:
    """Allocate, mark and enqueue bursts of ``len(buf)`` for ``iters`` iterations; returns packets sent."""
    p, out_ctrl, out_slots, ctl, buf = borrowed((p, out_ctrl, out_slots, ctl, buf))
    burst = buf.shape[0]
    total = 0
    for _ in range(iters):
        if load_acquire(ctl, W_STOP):
            break
        n = pool_alloc(p, buf, burst)
        if n == 0:
            if yield_idle:
                sched_yield()
            continue
        for i in range(n):
            p.data[buf[i], MARK_OFF] = 0
        if not _push(out_ctrl, out_slots, buf, n, ctl, yield_idle):
            break
        total += n
        store_release(ctl, line + S_COUNT, ctl[line + S_COUNT] + n)
    return total


@njit(cache=True, nogil=True)
def forward_loop(p: PoolArrays, in_ctrl: npt.NDArray[np.int64], in_slots: npt.NDArray[np.uint32],
                 out_ctrl: npt.NDArray[np.int64], out_slots: npt.NDArray[np.uint32],
                 ctl: npt.NDArray[np.int64], line: int, buf: npt.NDArray[np.uint32], yield_idle: bool,
                 iters: int) -> int:
    """Dequeue up to ``len(buf)``, touch one cache line per packet, enqueue; returns packets forwarded."""
    p, in_ctrl, in_slots, out_ctrl, out_slots, ctl, buf = borrowed((p, in_ctrl, in_slots, out_ctrl, out_slots,
                                                                      ctl, buf))
    burst = buf.shape[0]
    total = 0
    for _ in range(iters):
        if load_acquire(ctl, W_STOP):
            break
        n = ring_dequeue(in_ctrl, in_slots, buf, burst)
        if n == 0:
            if yield_idle:
                sched_yield()
            continue
        for i in range(n):
            p.data[buf[i], MARK_OFF] += 1
        if not _push(out_ctrl, out_slots, buf, n, ctl, yield_idle):
            break
        total += n
        store_release(ctl, line + S_COUNT, ctl[line + S_COUNT] + n)
    return total


@njit(cache=True, nogil=True)
def sink_loop(p: PoolArrays, in_ctrl: npt.NDArray[np.int64], in_slots: npt.NDArray[np.uint32],
              ctl: npt.NDArray[np.int64], line: int, client: int, expect: int, buf: npt.NDArray[np.uint32],
              yield_idle: bool, iters: int) -> int:
    """Dequeue up to ``len(buf)``, verify the marker, free; returns packets received."""
    p, in_ctrl, in_slots, ctl, buf = borrowed((p, in_ctrl, in_slots, ctl, buf))
    burst = buf.shape[0]
    total = 0
    for _ in range(iters):
        if load_acquire(ctl, W_STOP):
            break
        n = ring_dequeue(in_ctrl, in_slots, buf, burst)
        if n == 0:
            if yield_idle:
                sched_yield()
            continue
        bad = 0
        for i in range(n):
            bad += p.data[buf[i], MARK_OFF] != expect
        pool_free(p, client, buf, n)
        total += n
        if bad:
            ctl[line + S_ERRORS] += bad
        store_release(ctl, line + S_COUNT, ctl[line + S_COUNT] + n)
    return total


# -- segment layout --------------------------------------------------------------------------
def segment_regions(stages: int, ring_capacity: int, pool_slots: int) -> dict[str, int]:
    """Regions of a pipeline segment: pool, K+1 rings, and the control lines."""
    return {
        **PacketPool.regions("pool", pool_slots, n_clients=1),
        **RingTable.regions("rings", stages + 1, ring_capacity),
        "ctl": (stages + 3) * LINE * 8,
    }


def warm_kernels() -> None:
    """Compile (or load from cache) the three stage loops in this process.

    Called by the launcher before starting stages: processes that start together with a cold
    cache would each compile the same code at once (seconds of CPU each).
    """
    ctrl = np.zeros((2, 48), dtype=np.int64)
    for row in ctrl:
        ring_init(row, 4)
    slots = np.zeros((2, 4), dtype=np.uint32)
    data = np.zeros((4, 2048), dtype=np.uint8)
    ret_ctrl = np.zeros((1, 48), dtype=np.int64)
    ring_init(ret_ctrl[0], 4)
    pool = PoolArrays(data, data.view(np.uint32), data.view(np.int64), np.zeros(64, dtype=np.int64),
                      np.zeros(4, dtype=np.uint32), ret_ctrl, np.zeros((1, 4), dtype=np.uint32))
    ctl = np.zeros(LINE * 4, dtype=np.int64)
    ctl[W_STOP] = 1
    buf = np.empty(1, dtype=np.uint32)
    source_loop(pool, ctrl[0], slots[0], ctl, LINE, buf, True, 1)
    forward_loop(pool, ctrl[0], slots[0], ctrl[1], slots[1], ctl, LINE, buf, True, 1)
    sink_loop(pool, ctrl[1], slots[1], ctl, LINE, 0, 1, buf, True, 1)


def _run_stage(segment: str, role: str, index: int, stages: int, burst: int, yield_idle: bool) -> None:
    """Body of one numba stage process: attach, report ready, wait for go, loop until stop."""
    seg = Segment.attach(segment)
    pool = PacketPool.attach(seg, "pool").arrays
    rings = RingTable.attach(seg, "rings")
    ctl = seg.view("ctl", np.int64)
    line = (index + 1) * LINE
    buf = np.empty(burst, dtype=np.uint32)  # the loops' burst buffer: alive across every call
    warm_kernels()
    ctl[line + S_READY] = 1
    while not ctl[W_GO] and not ctl[W_STOP]:
        time.sleep(0.001)
    while not ctl[W_STOP]:
        if role == "source":
            source_loop(pool, rings.ctrl[0], rings.slots[0], ctl, line, buf, yield_idle, ITERS_PER_CALL)
        elif role == "sink":
            sink_loop(pool, rings.ctrl[stages], rings.slots[stages], ctl, line, 0, stages, buf,
                      yield_idle, ITERS_PER_CALL)
        else:
            forward_loop(pool, rings.ctrl[index - 1], rings.slots[index - 1], rings.ctrl[index],
                         rings.slots[index], ctl, line, buf, yield_idle, ITERS_PER_CALL)


# -- launcher --------------------------------------------------------------------------------
@dataclass
class PipelineConfig:
    """One pipeline run: K forwarding stages, burst size, scheduling, implementation."""

    stages: int = 1
    burst: int = 64
    policy: str = "other"
    yield_idle: bool = True
    cpus: Sequence[int] = field(default_factory=lambda: sorted(os.sched_getaffinity(0)))
    ring_capacity: int = 1024
    pool_slots: int = 0  # 0: enough to fill every ring once
    impl: str = "numba"
    c_binary: str | None = None


@dataclass
class PipelineResult:
    """What a run measured at the sink, plus pool accounting for the conservation check."""

    config: PipelineConfig
    seconds: float
    packets: int
    mpps: float
    marker_errors: int
    allocated: int
    delivered: int
    in_flight: int
    alloc_failures: int


def _stage_command(cfg: PipelineConfig, seg: Segment, role: str, index: int) -> list[str]:
    if cfg.impl == "numba":
        return [sys.executable, str(Path(__file__).resolve()), "--segment", seg.name, "--role", role,
                "--index", str(index), "--stages", str(cfg.stages), "--burst", str(cfg.burst),
                "--yield-idle", str(int(cfg.yield_idle))]
    if cfg.c_binary is None:
        raise ValueError("impl='c' needs c_binary")
    r = seg.regions
    offsets = [r[k].offset for k in ("pool.ctrl", "pool.free", "pool.ret.ctrl", "pool.ret.slots",
                                     "pool.slots", "rings.ctrl", "rings.slots", "ctl")]
    return [cfg.c_binary, str(seg.path), role, str(index), str(cfg.stages), str(cfg.burst),
            str(int(cfg.yield_idle)), str(cfg.ring_capacity), str(MARK_OFF), *map(str, offsets)]


def _apply_scheduling(pid: int, cpu: int, policy: str) -> None:
    os.sched_setaffinity(pid, {cpu})
    if policy != "other":
        os.sched_setscheduler(pid, POLICIES[policy], os.sched_param(1))


def run_pipeline(cfg: PipelineConfig, seconds: float = 2.0, warmup: float = 0.5,
                 name: str | None = None) -> PipelineResult:
    """Start the stage processes, measure the sink's rate for ``seconds``, stop, account."""
    if cfg.policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {cfg.policy!r}")
    if cfg.stages < 1 or cfg.burst < 1 or cfg.burst > cfg.ring_capacity:
        raise ValueError("need stages >= 1 and 1 <= burst <= ring_capacity")
    pool_slots = cfg.pool_slots or (cfg.stages + 1) * cfg.ring_capacity + 4 * cfg.burst * (cfg.stages + 2)
    seg_name = name or f"pipeline-{os.getpid()}-{time.monotonic_ns()}"
    roles = [("source", 0)] + [("forward", i) for i in range(1, cfg.stages + 1)] + [("sink", cfg.stages + 1)]
    procs: list[subprocess.Popen[bytes]] = []
    if cfg.impl == "numba":
        warm_kernels()
    with Segment.create(seg_name, segment_regions(cfg.stages, cfg.ring_capacity, pool_slots)) as seg:
        pool = PacketPool.format(seg, "pool", pool_slots, n_clients=1)
        RingTable.format(seg, "rings", cfg.stages + 1, cfg.ring_capacity)
        ctl = seg.view("ctl", np.int64)
        try:
            for role, index in roles:
                procs.append(subprocess.Popen(_stage_command(cfg, seg, role, index)))
            deadline = time.monotonic() + 120
            while not all(ctl[(i + 1) * LINE + S_READY] for _, i in roles):
                if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                    raise RuntimeError("a pipeline stage failed to start")
                time.sleep(0.01)
            for k, proc in enumerate(procs):
                _apply_scheduling(proc.pid, cfg.cpus[k % len(cfg.cpus)], cfg.policy)
            sink_count = (cfg.stages + 2) * LINE + S_COUNT
            ctl[W_GO] = 1
            time.sleep(warmup)
            c0, t0 = int(ctl[sink_count]), time.perf_counter()
            time.sleep(seconds)
            c1, t1 = int(ctl[sink_count]), time.perf_counter()
        finally:
            ctl[W_STOP] = 1
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        stats = pool.stats()
        delivered = int(ctl[sink_count])
        errors = int(ctl[(cfg.stages + 2) * LINE + S_ERRORS])
        del pool, ctl
    return PipelineResult(cfg, t1 - t0, c1 - c0, (c1 - c0) / (t1 - t0) / 1e6, errors, stats.allocated,
                          delivered, stats.in_use, stats.alloc_failures)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of one numba stage process (started by :func:`run_pipeline`)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--segment", required=True)
    ap.add_argument("--role", choices=["source", "forward", "sink"], required=True)
    ap.add_argument("--index", type=int, required=True)
    ap.add_argument("--stages", type=int, required=True)
    ap.add_argument("--burst", type=int, required=True)
    ap.add_argument("--yield-idle", type=int, default=1)
    args = ap.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        _run_stage(args.segment, args.role, args.index, args.stages, args.burst, bool(args.yield_idle))


if __name__ == "__main__":
    main()
