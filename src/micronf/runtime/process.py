"""The µNF process: one entry point for every µNF (and every fused cluster of µNFs).

``python -m micronf.runtime.process SEGMENT PROCESS`` attaches to the graph's segment, reads the
layout stored there, applies its CPU/scheduling choices, loads the generated hot loop, reports
ready in the segment's control line, then runs the compiled loop in slices of ``--iters``
iterations, returning to Python in between only to: notice SIGTERM/SIGINT or a stop request,
pick up a rewritten port table (e.g. PP → load-balanced after a scale-out), and bump its
heartbeat, and honour a *pause*: ``P_STOP = PAUSE`` makes the loop return after the batch in
hand (every handle it took is forwarded or freed by then), report ``P_PAUSED`` and wait; the
supervisor pauses a graph to account for the buffers a crashed µNF held. Counters live in shared
memory all along. Exit status 0 after a clean stop.

Processes are normally forked by the graph's zygote (``micronf.runtime.zygote``), which calls
:func:`run` with string arguments; ``python -m micronf.runtime.process`` is the same entry point.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

import numpy as np

from micronf.runtime.codegen import load_hot_loop
from micronf.runtime.loop import StageArrays
from micronf.runtime.scheduling import SchedulingError, apply_scheduling
from micronf.runtime.stage import (
    P_CALLS,
    P_PAUSED,
    P_PID,
    P_READY,
    P_STARTS,
    P_STOP,
    PAUSE,
    STOP,
    GraphMemory,
    build_stage,
    ctl_line,
    instantiate,
)
from micronf.runtime.zygote import started

ITERS_PER_CALL = 4096
CYCLES_PER_CALL = 10_000_000  # ~3-5 ms of TSC: the longest a process goes without seeing a new port table


def warm_all(mem: GraphMemory) -> None:
    """Load (compiling if needed) every process's hot loop of the graph, with its real argument types."""
    layout = mem.layout
    for plan in layout.processes:
        nodes = [layout.nodes[i] for i in plan.nodes]
        nfs = [instantiate(n) for n in nodes]
        hot = load_hot_loop([type(nf) for nf in nfs])
        stages = [build_stage(mem, n, nf, layout.burst) for n, nf in zip(nodes, nfs, strict=True)]
        hot(mem.pool.arrays, mem.rings.ctrl, mem.rings.slots, mem.ctl, 0, plan.client, 0, 0, layout.yield_idle,
            plan.yield_every, layout.prefetch, layout.idle_polls, layout.idle_sleep_us, *stages,
            *(nf.kernel_state() for nf in nfs))


def wait_while_paused(ctl: np.ndarray, line: int) -> None:
    """Report paused and sleep until the supervisor resumes (or stops) this process."""
    ctl[line + P_PAUSED] = 1
    while ctl[line + P_STOP] == PAUSE and ctl[P_STOP] == 0:
        time.sleep(0.0005)
    ctl[line + P_PAUSED] = 0


def run(segment: str, process: int | str, iters: int | str = ITERS_PER_CALL) -> int:
    """Run process ``process`` of the graph in ``segment`` until stopped; returns the exit status."""
    process, iters = int(process), int(iters)
    mem = GraphMemory.attach(segment)
    layout = mem.layout
    if not 0 <= process < len(layout.processes):
        print(f"micronf-unf: graph {layout.name!r} has no process {process}", file=sys.stderr)
        return 2
    plan = layout.processes[process]
    line = ctl_line(process)
    try:
        apply_scheduling(0, plan.cpu, plan.policy, plan.priority)
    except SchedulingError as exc:
        print(f"micronf-unf[{process}]: {exc}", file=sys.stderr)
        return 3
    nodes = [layout.nodes[i] for i in plan.nodes]
    nfs = [instantiate(n) for n in nodes]
    tables = [mem.port_table(n) for n in nodes]
    hot = load_hot_loop([type(nf) for nf in nfs])

    def stages() -> list[StageArrays]:
        return [build_stage(mem, n, nf, layout.burst) for n, nf in zip(nodes, nfs, strict=True)]

    current = stages()
    states = [nf.kernel_state() for nf in nfs]  # built once: they depend on the config only
    versions = [t.version() for t in tables]
    args = (mem.pool.arrays, mem.rings.ctrl, mem.rings.slots, mem.ctl, line + P_STOP, plan.client)
    hot(*args, 0, 0, layout.yield_idle, plan.yield_every, layout.prefetch, layout.idle_polls,
            layout.idle_sleep_us, *current, *states)  # compile or load now

    def on_signal(signum: int, frame: FrameType | None) -> None:
        mem.ctl[line + P_STOP] = STOP

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    mem.ctl[line + P_PID] = os.getpid()
    mem.ctl[line + P_STARTS] += 1
    mem.ctl[line + P_READY] = 1
    started()
    while mem.ctl[line + P_STOP] != STOP and mem.ctl[P_STOP] == 0:
        if mem.ctl[line + P_STOP] == PAUSE:
            wait_while_paused(mem.ctl, line)
            continue
        hot(*args, iters, CYCLES_PER_CALL, layout.yield_idle, plan.yield_every, layout.prefetch, layout.idle_polls,
            layout.idle_sleep_us, *current, *states)
        mem.ctl[line + P_CALLS] += 1
        now = [t.version() for t in tables]
        if now != versions and not any(v % 2 for v in now):
            # a port table was rewritten (and the writer is done): every handle of the last call is
            # already sent, so switching tables between calls loses nothing
            current, versions = stages(), now
    mem.ctl[line + P_READY] = 0
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="micronf-unf", description="Run one µNF process of a deployed graph.")
    ap.add_argument("segment", help="the graph's shared-memory segment name")
    ap.add_argument("process", type=int, help="index of this process in the graph layout")
    ap.add_argument("--iters", type=int, default=ITERS_PER_CALL, help="loop iterations between control checks")
    args = ap.parse_args(argv)
    sys.exit(run(args.segment, args.process, args.iters))


if __name__ == "__main__":
    main()
