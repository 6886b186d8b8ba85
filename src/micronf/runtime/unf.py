"""The µNF stage: process K of a graph layout (one µNF or a fused cluster) as the runner runs it.

Opening it (in the process the zygote forked): become the graph's uid (before any µNF code runs,
see ``micronf.runtime.privileges``), apply the process's CPU/scheduling choices, instantiate its
µNFs and load the generated hot loop. Each step is one call of the compiled loop, at most
``iters`` iterations or :data:`CYCLES_PER_CALL` TSC ticks; it returns after the batch in hand, so
the runner can honour a pause or stop between steps. Between steps the stage also picks up a
rewritten port table (e.g. PP → load-balanced after a scale-out). The loop idles inside its call
(see ``GraphLayout.yield_idle``/``idle_sleep_us``), so the runner adds no pacing. Counters live in
shared memory all along.
"""

from __future__ import annotations

import sys

from micronf.dataplane.control import ControlLine
from micronf.runtime.codegen import load_hot_loop
from micronf.runtime.loop import StageArrays
from micronf.runtime.privileges import drop_for_graph
from micronf.runtime.process import Pacing, StageError
from micronf.runtime.scheduling import SchedulingError, apply_scheduling
from micronf.runtime.stage import GraphMemory, build_stage, instantiate

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
        hot(mem.pool.arrays, mem.rings.ctrl, mem.rings.slots, mem.control.words, 0, plan.client, 0, 0,
            layout.yield_idle, plan.yield_every, layout.prefetch, layout.idle_polls, layout.idle_sleep_us, *stages,
            *(nf.kernel_state() for nf in nfs))


class UnfStage:
    """Process ``process`` of the layout in ``mem``, driven through control ``line``."""

    def __init__(self, mem: GraphMemory, line: ControlLine, process: int, iters: int) -> None:
        layout = mem.layout
        plan = layout.processes[process]
        self.mem = mem
        self.nodes = [layout.nodes[i] for i in plan.nodes]
        self.nfs = [instantiate(n) for n in self.nodes]
        self.tables = [mem.port_table(n) for n in self.nodes]
        self.hot = load_hot_loop([type(nf) for nf in self.nfs])
        self.stages = self._stages()
        self.states = [nf.kernel_state() for nf in self.nfs]  # built once: they depend on the config only
        self.versions = [t.version() for t in self.tables]
        self.args = (mem.pool.arrays, mem.rings.ctrl, mem.rings.slots, mem.control.words, line.stop_word,
                     plan.client)
        self.tail = (layout.yield_idle, plan.yield_every, layout.prefetch, layout.idle_polls, layout.idle_sleep_us)
        self.iters = iters
        self.hot(*self.args, 0, 0, *self.tail, *self.stages, *self.states)  # compile or load now

    def _stages(self) -> list[StageArrays]:
        burst = self.mem.layout.burst
        return [build_stage(self.mem, n, nf, burst) for n, nf in zip(self.nodes, self.nfs, strict=True)]

    def step(self) -> int:
        work: int = self.hot(*self.args, self.iters, CYCLES_PER_CALL, *self.tail, *self.stages, *self.states)
        now = [t.version() for t in self.tables]
        if now != self.versions and not any(v % 2 for v in now):
            # a port table was rewritten (and the writer is done): every handle of the last call is
            # already sent, so switching tables between calls loses nothing
            self.stages, self.versions = self._stages(), now
        return work

    def drain(self, batches: int) -> int:
        """Run at most ``batches`` batches and never idle (no yield, no sleep on an empty poll): a
        run-to-completion caller (``micronf.services.replica``) runs exactly the batches it just put
        into the entry ring, in the same process, so waiting for more would only stall it."""
        _, yield_every, prefetch, idle_polls, _ = self.tail
        work: int = self.hot(*self.args, batches, CYCLES_PER_CALL, False, yield_every, prefetch, idle_polls, 0,
                             *self.stages, *self.states)
        return work

    def close(self) -> None:
        """Nothing to release: the segment's views go with the process."""


def open_stage(mem: GraphMemory, line: ControlLine, process: str, iters: str = str(ITERS_PER_CALL)
               ) -> tuple[UnfStage, Pacing]:
    """The runner's entry (see ``micronf.runtime.process``): open µNF process ``process``."""
    k = int(process)
    layout = mem.layout
    if not 0 <= k < len(layout.processes):
        print(f"micronf-unf: graph {layout.name!r} has no process {k}", file=sys.stderr)
        raise StageError(2)
    drop_for_graph(mem, k)  # a µNF: its graph's uid, no capabilities it does not need
    plan = layout.processes[k]
    try:
        apply_scheduling(0, plan.cpu, plan.policy, plan.priority)
    except SchedulingError as exc:
        print(f"micronf-unf[{k}]: {exc}", file=sys.stderr)
        raise StageError(3) from None
    return UnfStage(mem, line, k, int(iters)), Pacing()
