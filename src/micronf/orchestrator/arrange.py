"""Choosing how an SFC's graph runs on its agent: pipelined, replicas or a mix (issue 14).

:func:`arrange` predicts every arrangement the agent's cores allow with the cost model
(:mod:`~micronf.orchestrator.costmodel`) and chooses:

- **pipelined** (the paper's model): one process per µNF with Branch/Sync parallelism, or, when
  the agent has fewer cores than µNFs, the chain fused per core with Rx and Tx on the first one
  (``pipelined-fused``, :mod:`~micronf.orchestrator.placement`);
- **mix**: pipelined, with the bottleneck µNF scaled out behind a load-balanced port onto the
  cores the pipeline leaves idle; deployed pipelined, the agent's autoscaler allowed that many
  instances (it adds them when the bottleneck drops packets: a deploy request cannot ask for
  instances up front);
- **replicas**: one run-to-completion copy of the whole chain per core, input split by flow.
  Only for a graph that fuses whole (:func:`~micronf.runtime.graph.fuse_whole`: a chain); a graph
  whose parallel groups stop it is tried again composed without them. Not when a µNF is pinned to
  a CPU by a placement hint, when a µNF type's descriptor says its state is global
  (``global_state``), or when the agent's CPUs are unknown (unless a replica count is given).

``mode`` ``auto`` takes the highest predicted rate, but leaves the paper's model (pipelined) only
for a gain of :data:`MARGIN` or more: the model is an estimate (see its docstring for what it
ignores), and pipelined keeps what replicas give up (one instance of each µNF's state, a restart
that costs one µNF's packets in flight, Branch/Sync latency). ``pipelined`` chooses the better
of pipelined and mix (both deploy as pipelined); ``replicas`` insists, and an impossible one is a
:class:`~micronf.orchestrator.placement.PlacementError` saying why.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from micronf.orchestrator.compose import compose
from micronf.orchestrator.costmodel import (
    Alternative,
    CostTable,
    Stage,
    pipelined_stages,
    predict_pipelined,
    predict_replicas,
    scale_out,
)
from micronf.orchestrator.load import SFCBundle
from micronf.orchestrator.models import Composition
from micronf.orchestrator.placement import PlacementError, cores_are_scarce, fit_to_cores, pipelined_spec
from micronf.runtime.graph import GraphError, fuse_whole

ModeChoice = Literal["auto", "pipelined", "replicas"]
MARGIN = 1.10
"""auto leaves pipelined only for a predicted rate at least this many times higher."""


class CannotRunError(PlacementError):
    """The composed graph cannot be wired here (e.g. a µNF type known only from a descriptor file)."""


class Arrangement(BaseModel):
    """What :func:`arrange` chose, every alternative it weighed, and why."""

    model_config = ConfigDict(frozen=True)

    requested: ModeChoice
    cpus: list[int] | None = Field(description="the agent's CPUs the prediction assumed (None: unknown)")
    chosen: Alternative
    reason: str = Field(description="why this one, in one line")
    alternatives: list[Alternative] = Field(description="every arrangement weighed, the chosen one included")
    costs: str = Field(description="the cost table: where its kernels were measured, and how")


def arrange(bundle: SFCBundle, comp: Composition, cpus: tuple[int, ...] | None, table: CostTable, *,
            mode: ModeChoice = "auto", replicas: int | None = None) -> tuple[Composition, Arrangement]:
    """The composition to deploy (``comp``, or ``bundle`` composed again without parallel groups)
    and the arrangement chosen for an agent offering ``cpus`` (see the module docstring)."""
    global_state = frozenset(t for t, u in bundle.types.items() if u.descriptor.global_state)
    pcomp = fit_to_cores(bundle, comp, cpus)
    spec, io_cpu = pipelined_spec(pcomp.after, cpus)
    try:
        stages = pipelined_stages(spec, table, rx_cpu=io_cpu, tx_cpu=io_cpu, global_state=global_state)
    except GraphError as exc:
        raise CannotRunError(f"the composed graph cannot run: {exc}") from None
    cores = list(cpus) if cpus else list(range(len(stages)))
    unknown = "" if cpus else "; the agent's CPUs are unknown: one core per process assumed"
    fused = cores_are_scarce(pcomp.after, cpus)
    pipe = predict_pipelined(
        "pipelined-fused" if fused else "pipelined", stages, table, cores,
        (f"{len(cores)} cores for {len(spec.nodes)} µNFs: chained, consecutive µNFs fused per core, Rx and Tx "
         f"on CPU {io_cpu}" if fused else "one process per µNF (Branch/Sync for parallel groups), Rx and Tx "
         "processes") + unknown)
    mix = _mix(stages, table, cpus)
    rep, rcomp = _replicas(bundle, comp, pcomp, cpus, table, replicas, global_state)
    options = [pipe, mix, rep]
    if mode == "replicas":
        if rep.mpps is None:
            raise PlacementError(f"mode replicas is not possible here: {rep.why}")
        chosen, reason = rep, "replicas were asked for"
    else:
        best = mix if mix.mpps is not None and mix.mpps > (pipe.mpps or 0) else pipe
        chosen, reason = best, ("pipelined was asked for" if mode == "pipelined" else "the highest predicted rate")
        if mode == "auto" and rep.mpps is not None:
            if rep.mpps >= MARGIN * (best.mpps or 0):
                chosen = rep
                reason = f"replicas predict {rep.mpps / (best.mpps or 1):.2f}x the best pipelined arrangement"
            else:
                reason = (f"replicas would predict only {rep.mpps / (best.mpps or 1):.2f}x {best.name} (less than "
                          f"the {MARGIN:.2f}x that leaving the paper's model takes)")
        if chosen is mix:
            reason += f"; {', '.join(f'{n} x{k}' for n, k in mix.scale.items())} by the autoscaler"
    arrangement = Arrangement(requested=mode, cpus=list(cpus) if cpus else None, chosen=chosen, reason=reason,
                              alternatives=options, costs=_provenance(table))
    return (rcomp if chosen is rep and rcomp is not None else pcomp), arrangement


def _mix(stages: list[Stage], table: CostTable, cpus: tuple[int, ...] | None) -> Alternative:
    """Pipelined with the bottleneck scaled out, or why that does not pay here."""
    if not cpus:
        return _impossible("mix", "pipelined", "the agent's CPUs are unknown")
    scaled, scale = scale_out(stages, table, cpus)
    if not scale:
        return _impossible("mix", "pipelined", "scaling out does not raise the rate: the busiest core has no "
                           "scalable µNF (Rx/Tx, fused, a Sync join or a Branch) or no core to spare")
    return predict_pipelined("mix", scaled, table, cpus,
                             "pipelined, " + ", ".join(f"{n} scaled to {k} instances" for n, k in scale.items())
                             + " behind a load-balanced port", scale)


def _replicas(bundle: SFCBundle, comp: Composition, chained: Composition, cpus: tuple[int, ...] | None,
              table: CostTable, count: int | None, global_state: frozenset[str]
              ) -> tuple[Alternative, Composition | None]:
    """N run-to-completion replicas of the whole chain (and the composition they run: ``comp``, or
    it without parallel groups, ``chained`` when that is one already), or why not."""
    pinned = [f"{n} on CPU {h.cpu}" for n, h in comp.after.placement.items() if h.cpu is not None]
    if pinned:
        return _impossible("replicas", "replicas", f"placement hints pin µNFs to CPUs ({', '.join(pinned)}): a "
                           "replica runs every µNF on its own core"), None
    rcomp = comp
    try:
        fuse_whole(comp.after.spec)
    except GraphError as exc:
        whole = _impossible("replicas", "replicas", f"the graph does not fuse whole: {exc}")
        if not comp.nodes_rewritten("parallelize"):
            return whole, None
        rcomp = chained if chained is not comp else compose(bundle, parallelize=False)
        try:
            fuse_whole(rcomp.after.spec)
        except GraphError:
            return whole, None
    nodes = rcomp.after.spec.nodes
    shared = sorted({n.type for n in nodes if n.type in global_state})
    if shared:
        return _impossible("replicas", "replicas", f"{', '.join(shared)} keeps global state (its descriptor): "
                           "one instance must see every packet"), None
    if count is None and not cpus:
        return _impossible("replicas", "replicas", "the agent's CPUs are unknown (give a replica count)"), None
    if count is not None and cpus and count > len(cpus):
        return _impossible("replicas", "replicas", f"{count} replicas for {len(cpus)} CPUs: each replica runs on a "
                           "core of its own (the agent refuses more)"), None
    n = count or len(cpus or ())
    regrouped = " (composed without parallel groups)" if rcomp is not comp else ""
    return predict_replicas([x.type for x in nodes], table, n,
                            f"{n} run-to-completion copies, each Rx shard -> {len(nodes)} µNFs fused -> Tx on its "
                            f"own core{regrouped}"), rcomp


def _impossible(name: str, mode: Literal["pipelined", "replicas"], why: str) -> Alternative:
    return Alternative(name=name, mode=mode, mpps=None, cycles_per_packet=None, bottleneck_cycles=None, why=why)


def _provenance(table: CostTable) -> str:
    m = table.machine
    where = f"{m.get('cpu', '?')}, {m.get('nproc', '?')} CPUs" if m else "an unrecorded machine"
    return f"kernels measured on {where} by `{table.command or '?'}`; clock {table.clock_hz / 1e9:.2f} GHz"
