"""The ring demo (``micronf bench-ring``): the bare data plane at work, through the runtime.

``source -> forward x K -> sink``: K forwarding µNFs (:data:`FORWARDER`, which rewrites one
cache line of every packet, its Ethernet header, and drops nothing), one process each, pinned
round-robin over the given CPUs with the given scheduling policy, linked by SPSC rings with
back-pressure (a full ring makes the sender wait: lossless). This process is both the source
(the pool's owner: it replays a small generated trace into the entry ring) and the sink (it
drains the exit ring and frees the buffers), in the compiled loop of the offline runner
(:func:`micronf.app.offline.pump`). The graph is started by the same runtime as every other
graph (:class:`~micronf.runtime.launch.GraphRuntime`): no launcher, scheduling or control layout
of its own.

The rate is the sink's over ``seconds`` after a warm-up; then the source stops, the graph
drains, and the run is checked: every stage saw every packet fed (each µNF's ``rx`` counter),
nothing was freed inside the graph, and ``fed == delivered``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from micronf.app.offline import ST_FED, ST_LIMIT, ST_NEXT, ST_SUNK, ST_WORDS, pump
from micronf.io.generator import build_templates
from micronf.io.generator_spec import GeneratorSpec
from micronf.runtime.graph import Policy, chain_spec, plan
from micronf.runtime.launch import GraphRuntime

FORWARDER = "MacSwapper"
FEED_FOREVER = 1 << 62  # the source's feed limit while measuring: never reached
ITERS_PER_CALL = 4096  # driver rounds per call into compiled code (a few ms)
DRAIN_S = 10.0  # at most this long for the packets in the graph to reach the sink


@dataclass(frozen=True)
class DemoResult:
    """What the sink measured, and the accounting after the drain."""

    stages: int
    seconds: float
    packets: int  # delivered in the measurement window
    fed: int
    delivered: int
    freed_inside: int  # packets a µNF freed instead of passing on (0 in a lossless chain)
    in_flight: int  # still in the graph after the drain (0 unless it timed out)
    stage_rx: tuple[int, ...]  # packets each forwarder received

    @property
    def mpps(self) -> float:
        return self.packets / self.seconds / 1e6 if self.seconds > 0 else 0.0

    @property
    def every_stage_saw_every_packet(self) -> bool:
        return all(rx == self.fed for rx in self.stage_rx)

    @property
    def conserved(self) -> bool:
        return self.fed == self.delivered + self.freed_inside + self.in_flight


def run_ring_demo(stages: int, *, seconds: float, burst: int, policy: Policy, cpus: Sequence[int],
                  warmup: float = 0.5) -> DemoResult:
    """Run the demo (see the module docstring) and return its measurement."""
    spec = chain_spec([(FORWARDER, {})] * stages, cpus=list(cpus), policy=policy, burst=burst, name="bench-ring")
    layout = plan(spec, on_full="wait")
    trace, _ = build_templates(GeneratorSpec(sizes=(60,), flows=64, http_fraction=0.0))
    st = np.zeros(ST_WORDS, dtype=np.int64)
    st[ST_LIMIT] = FEED_FOREVER
    pend = np.empty(burst, dtype=np.uint32)
    exits = np.array([e.ring for e in layout.exits], dtype=np.int64)
    held = np.empty((len(exits), max(burst, 256)), dtype=np.uint32)
    n_held = np.zeros(len(exits), dtype=np.int64)
    with GraphRuntime(layout) as g:
        mem = g.memory()

        def drive(for_s: float, until_drained: bool = False) -> None:
            end = time.perf_counter() + for_s
            while time.perf_counter() < end:
                pump(mem.pool.arrays, mem.rings.ctrl, mem.rings.slots, layout.entry_ring, trace.data,
                     trace.offsets, trace.lengths, trace.ts_ns, st, pend, exits, held, n_held, burst,
                     ITERS_PER_CALL, False, 0)
                if until_drained and st[ST_FED] == st[ST_SUNK] + g.freed_inside():
                    return

        drive(warmup)
        s0, t0 = int(st[ST_SUNK]), time.perf_counter()
        drive(seconds)
        s1, t1 = int(st[ST_SUNK]), time.perf_counter()
        st[ST_LIMIT] = st[ST_NEXT]  # the source stops (its pending burst still goes in); the graph drains
        drive(DRAIN_S, until_drained=True)
        freed = g.freed_inside()
        in_flight = int(g.ring_occupancy().sum())
        rx = tuple(g.node_stats(n.name).runtime["rx"] for n in layout.nodes)
    return DemoResult(stages=stages, seconds=t1 - t0, packets=s1 - s0, fed=int(st[ST_FED]),
                      delivered=int(st[ST_SUNK]), freed_inside=freed, in_flight=in_flight, stage_rx=rx)
