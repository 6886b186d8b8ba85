"""Placement's cost model: the packet rate each way of running a µNF graph on an agent's cores would reach.

Pure arithmetic over a :class:`CostTable` (cycles per packet, measured) and a graph's wiring; no
process is started. :mod:`micronf.orchestrator.arrange` asks it about the arrangements an agent's
cores allow and chooses.

The table (``costs.json`` beside this module, or the file an operator names: ``--costs``, or
``$MICRONF_COST_TABLE``) holds

- ``kernels``: cycles per packet of each µNF type's batch kernel, measured by ``bench/nfs.py
  --table`` on the paper's traffic (``unknown_kernel`` for a type it does not list);
- ``io``: the costs around the kernels: ``rx`` and ``tx`` (the Rx and Tx services per packet),
  ``ring_hop`` (a packet crossing between two processes through a ring, both ends and the cache
  lines that move between cores), ``fused_hop`` (from one µNF to the next inside one process),
  ``lb`` (a load-balanced egress choosing an instance), ``sync`` (one parallel branch's marker and
  its Sync join);
- ``clock_hz``: the TSC rate cycles are counted in.

The predictions (``stage`` = one OS process; ``core load`` = the cycles per packet of every stage
on that core):

- **pipelined** (the paper's model): a stage per µNF or fused cluster, Rx and Tx stages of their
  own. A stage costs its kernels + ``fused_hop`` between fused µNFs + ``ring_hop`` per ring it
  reads (+ ``sync`` per branch at a join); Rx costs ``rx``, Tx ``tx + ring_hop``. Pinned stages
  load their CPU; unpinned ones go to the least loaded core, largest first (what the OS's load
  balancing approaches). Rate = clock / the busiest core's load.
- **replicas**: N run-to-completion copies, each on its own core: rate = N × clock / (``rx`` +
  Σ kernels + (K - 1) × ``fused_hop`` + ``tx``).
- **mix**: pipelined, with the bottleneck stage's µNF scaled out behind a load-balanced port
  (``lb`` per packet more, its load split over the instances, the new ones unpinned), one
  instance at a time while that raises the rate.

What it ignores, knowingly: the traffic's label mix (every packet is assumed to visit every µNF:
an upper bound on work, exact for chains without early exits or drops); context switches and
cache sharing between stages on one core (the paper's §VI-E yields make them cheap, not free);
flow skew between replicas or instances (flow hashing is assumed to split evenly); NIC and memory
bandwidth, NUMA; the Rx service's own limits (a real NIC may deliver less than a core could read).
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from micronf.ports.base import EG_PP, IN_PP, IN_SYNC
from micronf.runtime.graph import GraphSpec, plan
from micronf.validation import describe_validation_errors

FORMAT = "micronf-cost-table/1"
TABLE_ENV = "MICRONF_COST_TABLE"
DEFAULT_TABLE = Path(__file__).with_name("costs.json")
MAX_INSTANCES = 8  # the autoscaler's ceiling per µNF (AutoscaleSpec.max_instances)


class CostTableError(ValueError):
    """A cost table that cannot be read or is not one."""


class IOCosts(BaseModel):
    """Cycles per packet around the kernels (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rx: float = Field(ge=0)
    tx: float = Field(ge=0)
    ring_hop: float = Field(ge=0)
    fused_hop: float = Field(ge=0)
    lb: float = Field(ge=0)
    sync: float = Field(ge=0)


class CostTable(BaseModel):
    """Measured cycles per packet: what the model predicts from (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["micronf-cost-table/1"]
    clock_hz: float = Field(gt=0, description="TSC ticks per second on the measured machine")
    kernels: dict[str, float] = Field(description="µNF type -> kernel cycles per packet")
    unknown_kernel: float = Field(gt=0, description="cycles per packet assumed for a type not in kernels")
    io: IOCosts
    io_source: str = Field("", description="where the io costs come from")
    machine: dict[str, Any] = Field(default_factory=dict, description="the machine the kernels were measured on")
    command: str = Field("", description="the command that measured them")
    traffic: str = ""

    def kernel(self, nf_type: str) -> float:
        """Cycles per packet of one µNF type's kernel."""
        return self.kernels.get(nf_type, self.unknown_kernel)


def load_table(path: Path | str | None = None) -> CostTable:
    """The cost table at ``path``, else at ``$MICRONF_COST_TABLE``, else the packaged one."""
    where = Path(path or os.environ.get(TABLE_ENV) or DEFAULT_TABLE)
    try:
        doc = json.loads(where.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CostTableError(f"cost table {where}: {exc}") from None
    try:
        return CostTable.model_validate(doc)
    except ValidationError as exc:
        raise CostTableError(f"cost table {where}: {describe_validation_errors(exc.errors())}") from None


# -- what is predicted ---------------------------------------------------------------------------
Mode = Literal["pipelined", "replicas"]


class Alternative(BaseModel):
    """One arrangement and its prediction (``mpps`` None: not possible here, ``why`` says why)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="pipelined, pipelined-fused, mix or replicas")
    mode: Mode = Field(description="what the deploy request says")
    mpps: float | None = Field(description="predicted packet rate, Mpps (None: not possible)")
    cycles_per_packet: float | None = Field(description="CPU cycles per packet over the whole machine (the work)")
    bottleneck_cycles: float | None = Field(description="cycles per packet of the busiest core (sets the rate)")
    bottleneck: str = Field("", description="what loads the busiest core")
    cores: int = Field(0, description="cores it keeps busy")
    replicas: int = 1
    scale: dict[str, int] = Field(default_factory=dict, description="mix: µNF -> instances")
    why: str


@dataclass(frozen=True)
class Stage:
    """One OS process of a pipelined deployment: its cycles per packet and where it runs."""

    name: str
    cycles: float
    cpu: int | None
    scalable: bool = False  # one unfused µNF the autoscaler may add instances of


def pipelined_stages(spec: GraphSpec, table: CostTable, *, rx_cpu: int | None = None, tx_cpu: int | None = None,
                     global_state: frozenset[str] = frozenset()) -> list[Stage]:
    """The stages of ``spec`` wired as the runtime wires it (clusters fused, parallel groups as
    Branch/Sync), Rx first and Tx last; a µNF of a type in ``global_state`` is never scalable."""
    layout = plan(spec)
    types = {n.name: n.type for n in spec.nodes}
    stages = [Stage("rx", table.io.rx, rx_cpu)]
    for proc in layout.processes:
        nodes = [layout.nodes[i] for i in proc.nodes]
        rings = [i for n in nodes for i in n.ingress if i.ring >= 0]  # -1: from the fused µNF before
        cycles = (sum(table.kernel(types[n.name]) for n in nodes) + (len(nodes) - 1) * table.io.fused_hop
                  + len(rings) * table.io.ring_hop + sum(i.kind == IN_SYNC for i in rings) * table.io.sync)
        scalable = (len(nodes) == 1 and all(i.kind == IN_PP for i in rings) and len(rings) == 1
                    and all(e.kind == EG_PP for e in nodes[0].egress) and types[nodes[0].name] not in global_state)
        name = nodes[0].name + (f" (+{len(nodes) - 1} fused)" if len(nodes) > 1 else "")
        stages.append(Stage(name, cycles, proc.cpu, scalable))
    stages.append(Stage("tx", table.io.tx + table.io.ring_hop, tx_cpu))
    return stages


def core_loads(stages: Sequence[Stage], cores: Sequence[int]) -> dict[int, list[Stage]]:
    """Each core's stages: pinned ones on their CPU, the others on the least loaded core, largest first."""
    on: dict[int, list[Stage]] = {c: [] for c in cores}
    load = dict.fromkeys(cores, 0.0)
    for s in stages:
        if s.cpu is not None:
            on.setdefault(s.cpu, []).append(s)
            load[s.cpu] = load.get(s.cpu, 0.0) + s.cycles
    heap = [(x, c) for c, x in load.items()]
    heapq.heapify(heap)
    for s in sorted((s for s in stages if s.cpu is None), key=lambda s: -s.cycles):
        x, least = heapq.heappop(heap)
        on[least].append(s)
        heapq.heappush(heap, (x + s.cycles, least))
    return on


def predict_pipelined(name: str, stages: Sequence[Stage], table: CostTable, cores: Sequence[int],
                      why: str, scale: Mapping[str, int] | None = None) -> Alternative:
    """The rate of ``stages`` on ``cores``: the busiest core bounds it."""
    on = core_loads(stages, cores)
    busiest = max(on, key=lambda c: (sum(s.cycles for s in on[c]), -c))
    load = sum(s.cycles for s in on[busiest])
    return Alternative(
        name=name, mode="pipelined", mpps=table.clock_hz / load / 1e6,
        cycles_per_packet=sum(s.cycles for s in stages), bottleneck_cycles=load,
        bottleneck=f"CPU {busiest}: " + " + ".join(f"{s.name} {s.cycles:.0f}" for s in on[busiest]),
        cores=sum(1 for c in on if on[c]), scale=dict(scale or {}), why=why)


def replica_cycles(types: Sequence[str], table: CostTable) -> float:
    """Cycles per packet of one run-to-completion replica running ``types`` in order."""
    return table.io.rx + sum(table.kernel(t) for t in types) + (len(types) - 1) * table.io.fused_hop + table.io.tx


def predict_replicas(types: Sequence[str], table: CostTable, n: int, why: str) -> Alternative:
    """``n`` replicas, one per core, each running every µNF of ``types`` between its Rx and Tx."""
    per = replica_cycles(types, table)
    return Alternative(name="replicas", mode="replicas", mpps=n * table.clock_hz / per / 1e6,
                       cycles_per_packet=per, bottleneck_cycles=per, bottleneck=f"each replica: {per:.0f}",
                       cores=n, replicas=n, why=why)


def scale_out(stages: Sequence[Stage], table: CostTable, cores: Sequence[int]) -> tuple[list[Stage], dict[str, int]]:
    """The mix: the stages with the bottleneck's µNF scaled out, one instance at a time while the
    predicted rate rises (at most :data:`MAX_INSTANCES` each); returns the stages and the
    instances per scaled µNF (empty: scaling out does not pay)."""
    count: dict[str, int] = {}

    def expand(counts: Mapping[str, int]) -> list[Stage]:
        out: list[Stage] = []
        for s in stages:
            k = counts.get(s.name, 1)
            if k == 1:
                out.append(s)
                continue
            share = (s.cycles + table.io.lb) / k
            out += [Stage(s.name, share, s.cpu, True)]
            out += [Stage(f"{s.name}@{j}", share, None, True) for j in range(1, k)]  # new instances: unpinned
        return out

    def busiest(ss: list[Stage]) -> tuple[float, list[Stage]]:
        on = core_loads(ss, cores)
        c = max(on, key=lambda c: sum(s.cycles for s in on[c]))
        return sum(s.cycles for s in on[c]), on[c]

    current = list(stages)
    load, top = busiest(current)
    while True:
        candidates = [s for s in top if s.scalable and count.get(s.name.split("@")[0], 1) < MAX_INSTANCES]
        if not candidates:
            return current, count
        target = max(candidates, key=lambda s: s.cycles).name.split("@")[0]
        trial = {**count, target: count.get(target, 1) + 1}
        expanded = expand(trial)
        new_load, new_top = busiest(expanded)
        if new_load >= load * 0.999:
            return current, count
        count, current, load, top = trial, expanded, new_load, new_top
