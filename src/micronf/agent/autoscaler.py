"""The agent's autoscaler (§IV-E) as decisions on numbers, apart from the processes it scales.

Two steps, both free of processes and clocks (the caller passes the time):

- :class:`Sampler` turns the graph's monotonic counters into a :class:`Sample`: per µNF, the drops
  since the previous reading because a ring into it was full (on each EgressPort→IngressPort pair,
  and on the Rx service's entry), and per live instance the fraction of the interval it was busy.
  The first reading of a counter is its baseline (no change yet).
- :class:`Autoscaler` turns samples into :class:`Decision` s under an :class:`AutoscaleSpec`:
  ``window`` dropping samples in a row scale a µNF out (up to ``max_instances``); a scaled µNF
  whose instances are all lightly loaded (total busy fraction below ``idle_busy`` × (instances −
  1) for ``idle_window`` samples, no drops) is scaled in by one instance. After every decision
  carried out (or refused by the runtime), the µNF's cool-down must pass before its next one;
  drops keep being counted meanwhile.

``Deployment.autoscale`` reads the counters, applies the decisions and reports each back with
:meth:`Autoscaler.done`.

A replicated graph (mode ``replicas``) is scaled by the same :class:`Autoscaler`, its replicas being
the instances of one target, :data:`REPLICAS`: :class:`ReplicaSampler` turns the frames its input
lost (summed over the replicas: the kernel's full socket ring, an empty pool, a full entry ring) and
each replica process's CPU time into a :class:`Sample` of that target. ``window`` samples in a row
with input drops add a replica (``ReplicatedDeployment`` refuses it, and the cool-down starts, when
no CPU is free); every replica lightly loaded for ``idle_window`` samples removes the newest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from micronf.api.models import AutoscaleSpec
from micronf.ports.base import EG_LOCAL, EG_MARK_ONLY
from micronf.runtime.graph import GraphLayout, NodePlan
from micronf.runtime.loop import RC_CYCLES, RC_EG_FULL0

ENTRY = ("@rx", 0)  # the counter key of the Rx service's entry (drops because the entry ring was full)
REPLICAS = "@replicas"  # the target whose instances are a replicated graph's replicas


@dataclass(frozen=True)
class Sample:
    """One reading of the graph, as changes since the previous reading."""

    drops: dict[str, int]  # µNF (base name) -> drops into it on its most dropping ring pair
    instances: dict[str, list[str]]  # µNF (base name) -> its live instances (itself first)
    busy: dict[str, float]  # live instance -> fraction of the interval it was busy


@dataclass(frozen=True)
class Decision:
    """Scale ``node`` out by one instance, or in by its newest, because of ``reason``."""

    node: str
    action: Literal["out", "in"]
    reason: str


@dataclass
class Sampler:
    """Reads counters into samples (see the module docstring); keeps the previous readings."""

    last_at: float | None = None
    full: dict[tuple[str, int], int] = field(default_factory=dict)  # (node, egress) or ENTRY -> ring-full count
    cycles: dict[str, int] = field(default_factory=dict)  # instance -> busy TSC cycles

    def due(self, now: float, interval_s: float) -> bool:
        """Whether ``interval_s`` has passed since the previous reading (or there was none)."""
        return self.last_at is None or now - self.last_at >= interval_s

    def read(self, layout: GraphLayout, counters: Callable[[NodePlan], np.ndarray], *, entry: str, entry_full: int,
             ns_per_cycle: float, now: float) -> Sample:
        """A sample of ``layout``'s live nodes; ``counters(node)``: its runtime counters (``RC_*``),
        ``entry_full``: the Rx service's count of frames the entry ring had no room for."""
        elapsed = now - self.last_at if self.last_at is not None else 0.0
        self.last_at = now
        drops: dict[str, int] = {}
        instances: dict[str, list[str]] = {n.instance_of or n.name: [] for n in layout.nodes}
        busy: dict[str, float] = {}

        def saw(key: tuple[str, int], count: int, into: list[str]) -> None:
            new = count - self.full.get(key, count)
            self.full[key] = count
            for target in into:
                drops[target] = max(drops.get(target, 0), new)

        saw(ENTRY, entry_full, [entry])
        for node in layout.nodes:
            if node.retired:
                continue
            instances[node.instance_of or node.name].append(node.name)
            rc = counters(node)
            for e, eg in enumerate(node.egress):
                if eg.dst.startswith("@exit") or eg.kind in (EG_MARK_ONLY, EG_LOCAL):
                    continue
                into = [layout.node(dst).instance_of or dst for dst in eg.dst.split("|")]
                saw((node.name, e), int(rc[RC_EG_FULL0 + e]), into)
            c = int(rc[RC_CYCLES])
            spent = (c - self.cycles.get(node.name, c)) * ns_per_cycle / 1e9
            busy[node.name] = spent / elapsed if elapsed > 0 else 0.0
            self.cycles[node.name] = c
        return Sample(drops=drops, instances=instances, busy=busy)


@dataclass
class Autoscaler:
    """Decisions from samples (see the module docstring): per µNF, its runs of dropping and of idle
    samples and the end of its cool-down."""

    spec: AutoscaleSpec
    streak: dict[str, int] = field(default_factory=dict)  # µNF -> dropping samples in a row
    idle: dict[str, int] = field(default_factory=dict)  # µNF -> low-load samples in a row
    cooldown_until: dict[str, float] = field(default_factory=dict)  # µNF -> no decision before (monotonic s)

    def decide(self, sample: Sample, now: float) -> list[Decision]:
        """What to do after ``sample``, taken at ``now`` (at most one decision per µNF)."""
        spec = self.spec
        decisions = []
        for target, instances in sample.instances.items():
            dropping = sample.drops.get(target, 0) >= spec.min_drops
            self.streak[target] = self.streak.get(target, 0) + 1 if dropping else 0
            if now < self.cooldown_until.get(target, 0.0):
                continue
            if self.streak[target] >= spec.window and len(instances) < spec.max_instances:
                decisions.append(Decision(target, "out", f"{self.streak[target]} samples in a row with drops "
                                                         f"into {target}"))
                continue
            if not spec.scale_in or len(instances) < 2 or dropping:
                self.idle[target] = 0
                continue
            busy = sum(sample.busy.get(inst, 0.0) for inst in instances)
            low = busy < spec.idle_busy * (len(instances) - 1)
            self.idle[target] = self.idle.get(target, 0) + 1 if low else 0
            if self.idle[target] >= spec.idle_window:
                decisions.append(Decision(target, "in", f"{len(instances)} instances {busy:.0%} busy in total for "
                                                        f"{self.idle[target]} samples"))
        return decisions

    def done(self, decision: Decision, now: float, *, applied: bool) -> None:
        """``decision`` was carried out (``applied``) or refused by the runtime, ending at ``now``:
        the µNF's cool-down starts; a carried-out decision also starts its runs afresh."""
        if applied:
            self.streak[decision.node] = 0
            self.idle[decision.node] = 0
        self.cooldown_until[decision.node] = now + self.spec.cooldown_s


@dataclass
class ReplicaSampler:
    """Reads a replicated graph into samples of the target :data:`REPLICAS` (see the module docstring)."""

    last_at: float | None = None
    drops: int | None = None  # input drops over every replica at the previous reading
    cpu: dict[int, float] = field(default_factory=dict)  # replica process (pid) -> CPU seconds

    def due(self, now: float, interval_s: float) -> bool:
        return self.last_at is None or now - self.last_at >= interval_s

    def read(self, *, drops: int, cpu_s: list[tuple[int, float]], now: float) -> Sample:
        """A sample from ``drops``, the frames the input lost so far (every replica), and ``cpu_s``, per
        replica its process's pid and CPU seconds so far (a new pid, a restarted replica, starts afresh)."""
        elapsed = now - self.last_at if self.last_at is not None else 0.0
        self.last_at = now
        new = drops - (drops if self.drops is None else self.drops)
        self.drops = drops
        names = [f"r{i}" for i in range(len(cpu_s))]
        busy = {name: (s - self.cpu.get(pid, s)) / elapsed if elapsed > 0 else 0.0
                for name, (pid, s) in zip(names, cpu_s, strict=True)}
        self.cpu = dict(cpu_s)
        return Sample(drops={REPLICAS: max(new, 0)}, instances={REPLICAS: names}, busy=busy)
