"""Processing graphs: what to run (``GraphSpec``) and how it is wired (``GraphLayout``).

A ``GraphSpec`` names µNF nodes (type + config + scheduling) and labelled edges: packets that
node ``src`` labels ``label`` go to node ``dst``. ``plan()`` validates it and decides the wiring:

- one SPSC ring per (src, dst) pair; an ingress port per upstream node; the ingress→egress
  mapping table (route) per node, so a node shared by several paths (``from_node`` on an edge)
  still sends each packet along its own branch (§IV-C3);
- several edges from the same (src, label) are a *parallel group* (§V-B): a Branch egress at
  ``src``, a Marker egress on the primary branch and mark-only on the others, and a Sync ingress
  at the node where the branches join. Branch µNFs must not drop;
- every (node, label) with no edge is an *exit*, with its own ring; with ``capture_drops`` every
  (node, drop reason) is an exit too (the offline runner writes each exit to its own pcap:
  nothing disappears);
- nodes with the same ``cluster`` run fused in one process, in order (run to completion): they
  must form a chain whose interior links are the only input of the next node.

The layout is plain data (pydantic), stored as JSON inside the graph's segment.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from micronf.ports.base import (
    EG_BRANCH,
    EG_LOCAL,
    EG_MARK_ONLY,
    EG_MARKER,
    EG_PP,
    FULL_DROP,
    FULL_WAIT,
    IN_PP,
    IN_SYNC,
    MAX_EG,
    MAX_FANOUT,
    MAX_IN,
    ROUTE_FREE,
    ROUTE_UNCONNECTED,
)
from micronf.runtime.digraph import find_cycle
from micronf.runtime.nf import MicroNF, NFConfigError, nf_class
from micronf.runtime.verdict import Verdict

Policy = Literal["other", "fifo", "rr"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class GraphError(ValueError):
    """A graph spec that cannot be wired; the message names the node or edge and the fix."""


class NodeSpec(BaseModel):
    """One µNF instance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: str
    config: dict[str, Any] = Field(default_factory=dict)
    cpu: int | None = Field(None, ge=0, description="CPU to pin the process to (None: any)")
    policy: Policy = "other"
    priority: int = Field(1, ge=1, le=99, description="real-time priority for fifo/rr")
    cluster: str | None = Field(None, description="nodes sharing a cluster run fused in one process")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"node name {v!r} must start with a letter or _ and use [A-Za-z0-9_.-]")
        return v


class EdgeSpec(BaseModel):
    """Packets that ``src`` labels ``label`` (and that entered ``src`` from ``from_node``) go to ``dst``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    src: str
    label: str = "out"
    dst: str
    from_node: str | None = Field(None, description="only packets that reached src from this node (consolidation)")


class GraphSpec(BaseModel):
    """A processing graph to deploy on one machine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "graph"
    nodes: list[NodeSpec]
    edges: list[EdgeSpec] = Field(default_factory=list)
    entry: str = Field(description="the node that receives the graph's input traffic")
    burst: int = Field(32, ge=1, le=1024)
    yield_idle: bool = True
    yield_every: int | None = Field(None, ge=0, description="also yield after this many busy batches (0: never; "
                                    "default: 1 for fifo/rr µNFs that share a CPU, else 0)")
    prefetch: int = Field(0, ge=0, le=1024, description="prefetch the first N packets of each batch (§V-A)")
    idle_polls: int = Field(4096, ge=1, description="empty polls in a row before an idle µNF starts sleeping")
    idle_sleep_us: int = Field(50, ge=0, le=100_000, description="sleep per poll once idle (0: never sleep, "
                               "always yield/spin: lowest latency, one busy core per µNF)")

    @model_validator(mode="after")
    def _names_unique(self) -> GraphSpec:
        seen: set[str] = set()
        for node in self.nodes:
            if node.name in seen:
                raise ValueError(f"two nodes are named {node.name!r}")
            seen.add(node.name)
        return self


# -- the wiring -------------------------------------------------------------------------------
class IngressPlan(BaseModel):
    kind: int
    ring: int
    need: int = 0
    src: str  # the upstream node ("@source" for the graph's input)


class EgressPlan(BaseModel):
    kind: int
    rings: list[int]
    on_full: int
    dst: str  # downstream node, exit name, or "" for mark-only


class NodePlan(BaseModel):
    name: str
    type: str
    config: dict[str, Any]
    index: int
    process: int
    labels: list[str]
    drop_reasons: list[str]
    counters: list[str]
    ingress: list[IngressPlan]
    egress: list[EgressPlan]
    routes: list[tuple[int, int, int]]  # (ingress row, verdict column, egress or ROUTE_*)
    instance_of: str | None = None  # set on instances added by scale-out: the node they replicate
    retired: bool = False  # an instance removed by scale-in (its counters stay for the accounting)


class ProcessPlan(BaseModel):
    nodes: list[int]  # node indices, in fused order
    client: int  # pool return ring
    cpu: int | None
    policy: Policy
    priority: int
    yield_every: int = 0


class ExitPlan(BaseModel):
    name: str  # e.g. "out", "IPTtlDecrementer.expired", "CheckIPHeader.bad_checksum"
    node: str
    verdict: str  # a label or a drop reason
    is_drop: bool
    ring: int


class GraphLayout(BaseModel):
    """Everything a process needs to attach to the graph: stored as JSON in the segment."""

    name: str
    nodes: list[NodePlan]
    processes: list[ProcessPlan]
    exits: list[ExitPlan]
    entry_ring: int
    n_rings: int
    spare_rings: list[int]
    burst: int
    yield_idle: bool
    prefetch: int
    idle_polls: int = 4096
    idle_sleep_us: int = 50
    capture_drops: bool

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def _nf(node: NodeSpec) -> MicroNF:
    try:
        cls = nf_class(node.type)
    except KeyError as exc:
        raise GraphError(f"node {node.name!r}: {exc.args[0]}") from None
    try:
        return cls(node.config)
    except NFConfigError as exc:
        raise GraphError(f"node {node.name!r}: {exc}") from None


def plan(spec: GraphSpec, *, capture_drops: bool = False, on_full: Literal["drop", "wait"] = "drop",
         spare_rings: int = 8) -> GraphLayout:
    """Validate ``spec`` and wire it (see the module docstring)."""
    nfs = _check_edges(spec)
    _check_acyclic(spec)
    groups = _edge_groups(spec)
    processes, proc_of = _clusters(spec)  # first: links inside a cluster are local, not rings
    w = _Wiring(spec, processes, proc_of, FULL_WAIT if on_full == "wait" else FULL_DROP)
    in_parallel = {d for dsts in groups.values() if len(dsts) > 1 for d in dsts}
    for (src, label, from_node), dsts in groups.items():
        if src in in_parallel:
            continue  # a branch's way to its join is wired with its parallel group (marker -> sync)
        if len(dsts) == 1:
            w.routes[src].append((from_node, label, w.link(src, dsts[0])))
        else:
            w.parallel(src, label, from_node, dsts, nfs)
    exits = w.exits(nfs, capture_drops)
    n_rings = w.rings + spare_rings
    return GraphLayout(
        name=spec.name, nodes=[w.node_plan(node, k, nfs[node.name]) for k, node in enumerate(spec.nodes)],
        processes=_process_plans(spec, processes), exits=exits, entry_ring=0, n_rings=n_rings,
        spare_rings=list(range(w.rings, n_rings)), burst=spec.burst, yield_idle=spec.yield_idle,
        prefetch=spec.prefetch, idle_polls=spec.idle_polls, idle_sleep_us=spec.idle_sleep_us,
        capture_drops=capture_drops,
    )


def _check_edges(spec: GraphSpec) -> dict[str, MicroNF]:
    """Every node's µNF (its config checked), once the entry and every edge's ends and label exist."""
    nodes = {n.name: n for n in spec.nodes}
    nfs = {n.name: _nf(n) for n in spec.nodes}
    if spec.entry not in nodes:
        raise GraphError(f"entry {spec.entry!r} is not a node (nodes: {', '.join(nodes)})")
    for e in spec.edges:
        for end in (e.src, e.dst):
            if end not in nodes:
                raise GraphError(f"edge {e.src} -[{e.label}]-> {e.dst}: no node named {end!r}")
        if e.label not in type(nfs[e.src]).labels:
            raise GraphError(f"edge {e.src} -[{e.label}]-> {e.dst}: {nodes[e.src].type} has no label {e.label!r} "
                             f"(labels: {', '.join(type(nfs[e.src]).labels)})")
        if e.from_node is not None and e.from_node not in nodes:
            raise GraphError(f"edge {e.src} -[{e.label}]-> {e.dst}: from_node {e.from_node!r} is not a node")
    return nfs


def _edge_groups(spec: GraphSpec) -> dict[tuple[str, str, str | None], list[str]]:
    """Destinations per (src, label, from_node), in edge order: more than one is a parallel group."""
    groups: dict[tuple[str, str, str | None], list[str]] = defaultdict(list)
    for e in spec.edges:
        dsts = groups[(e.src, e.label, e.from_node)]
        if e.dst in dsts:
            raise GraphError(f"edge {e.src} -[{e.label}]-> {e.dst} is given twice")
        dsts.append(e.dst)
    return groups


class _Wiring:
    """The ports, rings and routes of a graph as :func:`plan` decides them. Ring 0 is the graph's
    input (to the entry node); every further ring is numbered in the order it is needed."""

    def __init__(self, spec: GraphSpec, processes: list[list[int]], proc_of: dict[str, int], full: int) -> None:
        self.spec = spec
        self.full = full  # what an egress does when its ring is full (FULL_DROP / FULL_WAIT)
        self.proc_of = proc_of
        self.fused_at = {spec.nodes[i].name: k for members in processes for k, i in enumerate(members)}
        self.succs: dict[str, set[str]] = defaultdict(set)
        self.preds: dict[str, set[str]] = defaultdict(set)
        for e in spec.edges:
            self.succs[e.src].add(e.dst)
            self.preds[e.dst].add(e.src)
        self.rings = 1
        self.ingress: dict[str, list[IngressPlan]] = {n.name: [] for n in spec.nodes}
        self.egress: dict[str, list[EgressPlan]] = {n.name: [] for n in spec.nodes}
        self.routes: dict[str, list[tuple[str | None, str, int]]] = {  # (from_node, verdict, egress)
            n.name: [] for n in spec.nodes}
        self.ingress[spec.entry].append(IngressPlan(kind=IN_PP, ring=0, src="@source"))

    def ring(self) -> int:
        """A new ring."""
        self.rings += 1
        return self.rings - 1

    def link(self, src: str, dst: str) -> int:
        """The egress of ``src`` towards ``dst`` (creating it, and ``dst``'s ingress, on first use): in
        memory when ``dst`` runs right after ``src`` in one process, else point-to-point on a new ring."""
        for i, eg in enumerate(self.egress[src]):
            if eg.dst == dst and eg.kind in (EG_PP, EG_LOCAL):
                return i
        if self.proc_of[src] == self.proc_of[dst] and self.fused_at[dst] == self.fused_at[src] + 1:
            self.egress[src].append(EgressPlan(kind=EG_LOCAL, rings=[], on_full=self.full, dst=dst))
            self.ingress[dst].append(IngressPlan(kind=IN_PP, ring=-1, src=src))
        else:
            ring = self.ring()
            self.egress[src].append(EgressPlan(kind=EG_PP, rings=[ring], on_full=self.full, dst=dst))
            self.ingress[dst].append(IngressPlan(kind=IN_PP, ring=ring, src=src))
        return len(self.egress[src]) - 1

    def parallel(self, src: str, label: str, from_node: str | None, dsts: list[str], nfs: dict[str, MicroNF]) -> None:
        """A parallel group (§V-B): a Branch egress at ``src`` to every branch in ``dsts``; the first
        branch marks each copy done towards the join (Marker), the others mark only (mark-only); the
        join waits for all of them on a Sync ingress."""
        if len(dsts) > MAX_FANOUT:
            raise GraphError(f"{src} -[{label}]-> has {len(dsts)} parallel branches, at most {MAX_FANOUT}")
        join = _join_of(src, label, dsts, nfs, self.succs, self.preds)
        branch_rings = []
        for d in dsts:
            if self.proc_of[d] == self.proc_of[src]:
                raise GraphError(f"parallel branch {d!r} cannot be fused with {src!r}: branches need their own process")
            ring = self.ring()
            branch_rings.append(ring)
            self.ingress[d].append(IngressPlan(kind=IN_PP, ring=ring, src=src))
        self.egress[src].append(EgressPlan(kind=EG_BRANCH, rings=branch_rings, on_full=self.full, dst="|".join(dsts)))
        self.routes[src].append((from_node, label, len(self.egress[src]) - 1))
        sync_ring = self.ring()
        self.ingress[join].append(IngressPlan(kind=IN_SYNC, ring=sync_ring, need=len(dsts), src=dsts[0]))
        for k, d in enumerate(dsts):
            kind, rings = (EG_MARKER, [sync_ring]) if k == 0 else (EG_MARK_ONLY, [])
            self.egress[d].append(EgressPlan(kind=kind, rings=rings, on_full=FULL_WAIT, dst=join if k == 0 else ""))
            for lab in type(nfs[d]).labels:
                self.routes[d].append((None, lab, len(self.egress[d]) - 1))

    def exits(self, nfs: dict[str, MicroNF], capture_drops: bool) -> list[ExitPlan]:
        """An exit, with its own ring, per label no edge leaves by (see :func:`label_exits`) and, with
        ``capture_drops``, per drop reason."""
        exits: list[ExitPlan] = []

        def exit_(name: str, exit_name: str, verdict: str, route: str, is_drop: bool) -> None:
            ring = self.ring()
            exits.append(ExitPlan(name=exit_name, node=name, verdict=verdict, is_drop=is_drop, ring=ring))
            self.egress[name].append(EgressPlan(kind=EG_PP, rings=[ring], on_full=self.full, dst=f"@exit:{exit_name}"))
            self.routes[name].append((None, route, len(self.egress[name]) - 1))

        unrouted = label_exits(self.spec, {name: type(nf).labels for name, nf in nfs.items()})
        for name, nf in nfs.items():
            cls = type(nf)
            for lab in cls.labels:
                exit_name = unrouted.get((name, lab))
                if exit_name is not None:
                    exit_(name, exit_name, lab, lab, is_drop=False)
            for reason in cls.drop_reasons if capture_drops else ():
                exit_(name, f"{name}.{reason}", reason, Verdict.drop(reason), is_drop=True)
        return exits

    def node_plan(self, node: NodeSpec, index: int, nf: MicroNF) -> NodePlan:
        """``node``'s ports and its route table: per (ingress row, verdict column) the egress, or
        ROUTE_FREE for a drop reason, ROUTE_UNCONNECTED for a label with nowhere to go."""
        cls = type(nf)
        verdicts = cls.verdict_names()
        ins, egs = self.ingress[node.name], self.egress[node.name]
        if len(ins) > MAX_IN or len(egs) > MAX_EG:
            raise GraphError(f"node {node.name!r} has {len(ins)} ingress / {len(egs)} egress ports "
                             f"(limits {MAX_IN} / {MAX_EG})")
        if not ins:
            raise GraphError(f"node {node.name!r} is not reachable from the entry {self.spec.entry!r}")
        table: dict[tuple[int, int], int] = {}
        for col, v in enumerate(verdicts):
            for r in range(len(ins)):
                table[(r, col)] = ROUTE_FREE if v.is_drop else ROUTE_UNCONNECTED
        for from_node, verdict, eg_index in self.routes[node.name]:
            col = verdicts.index(verdict)
            for r, ing in enumerate(ins):
                if from_node is None or ing.src == from_node:
                    table[(r, col)] = eg_index
        return NodePlan(
            name=node.name, type=node.type, config=nf.config.model_dump(mode="json"), index=index,
            process=self.proc_of[node.name], labels=list(cls.labels), drop_reasons=list(cls.drop_reasons),
            counters=list(nf.counter_names()), ingress=ins, egress=egs,
            routes=[(r, c, v) for (r, c), v in sorted(table.items())],
        )


def _process_plans(spec: GraphSpec, processes: list[list[int]]) -> list[ProcessPlan]:
    """One plan per process, scheduled as its first node says. A real-time µNF yields only when idle
    by default; sharing a core with another one, it would never let its neighbour run while it has
    input (§VI-E: then it also yields after every batch)."""
    heads = [spec.nodes[members[0]] for members in processes]
    rt_on_cpu: dict[int, int] = defaultdict(int)
    for head in heads:
        if head.cpu is not None and head.policy != "other":
            rt_on_cpu[head.cpu] += 1
    plans = []
    for k, (members, head) in enumerate(zip(processes, heads, strict=True)):
        shared_rt = head.cpu is not None and rt_on_cpu[head.cpu] > 1
        every = spec.yield_every if spec.yield_every is not None else (1 if shared_rt else 0)
        plans.append(ProcessPlan(nodes=members, client=k, cpu=head.cpu, policy=head.policy,
                                 priority=head.priority, yield_every=every))
    return plans


def _check_acyclic(spec: GraphSpec) -> None:
    succ: dict[str, set[str]] = {n.name: set() for n in spec.nodes}
    for e in spec.edges:
        succ[e.src].add(e.dst)
    cycle = find_cycle({n: sorted(dsts) for n, dsts in succ.items()})
    if cycle is not None:
        raise GraphError(f"the graph has a cycle: {' -> '.join(cycle)}")


def _clusters(spec: GraphSpec) -> tuple[list[list[int]], dict[str, int]]:
    """Group nodes into processes: one per node, except ``cluster`` members fused in spec order."""
    processes: list[list[int]] = []
    proc_of: dict[str, int] = {}
    by_cluster: dict[str, int] = {}
    upstream: dict[str, set[str]] = defaultdict(set)
    for e in spec.edges:
        upstream[e.dst].add(e.src)
    for idx, node in enumerate(spec.nodes):
        if node.cluster is None:
            proc_of[node.name] = len(processes)
            processes.append([idx])
            continue
        if node.cluster not in by_cluster:
            by_cluster[node.cluster] = len(processes)
            processes.append([])
        k = by_cluster[node.cluster]
        if processes[k]:
            prev = spec.nodes[processes[k][-1]].name
            if upstream[node.name] != {prev} or node.name == spec.entry:
                raise GraphError(f"cluster {node.cluster!r}: {node.name!r} must be fed only by {prev!r} to be fused "
                                 f"after it (fused µNFs run as a chain)")
        processes[k].append(idx)
        proc_of[node.name] = k
    return processes, proc_of


def _join_of(src: str, label: str, dsts: list[str], nfs: dict[str, MicroNF], outs: Mapping[str, set[str]],
             ins: Mapping[str, set[str]]) -> str:
    """The node where parallel branches ``dsts`` meet again (every branch leads only there);
    ``outs``/``ins``: each node's successors/predecessors."""
    joins: set[str] = set()
    for d in dsts:
        if type(nfs[d]).descriptor.may_drop:
            raise GraphError(f"{src} -[{label}]-> {d}: {nfs[d].__class__.__name__} may drop packets, so it cannot run "
                             f"in parallel (§V-B); chain it instead")
        if ins[d] != {src} or len(outs[d]) != 1:
            raise GraphError(f"parallel branch {d!r} must have {src!r} as its only input and exactly one next node")
        joins |= outs[d]
    if len(joins) != 1:
        raise GraphError(f"the parallel branches of {src} -[{label}]-> ({', '.join(dsts)}) must all lead to one node")
    return joins.pop()


def label_exits(spec: GraphSpec, labels: Mapping[str, Sequence[str]]) -> dict[tuple[str, str], str]:
    """``(node, label) -> exit name`` for every label of a node (``labels``: node -> its type's labels)
    that no edge leaves by: the graph's exits besides drops, named by label on the last node and
    ``node.label`` elsewhere. A parallel branch has none: all its labels lead to its join. Needs
    no µNF instance, so a caller learns the exit names without wiring the graph."""
    linked = {(e.src, e.label) for e in spec.edges}
    dsts: dict[tuple[str, str, str | None], set[str]] = defaultdict(set)
    for e in spec.edges:
        dsts[(e.src, e.label, e.from_node)].add(e.dst)
    in_parallel = {d for group in dsts.values() if len(group) > 1 for d in group}
    last = _last_node(spec)
    return {(n.name, lab): lab if n.name == last else f"{n.name}.{lab}" for n in spec.nodes if n.name not in in_parallel
            for lab in labels[n.name] if (n.name, lab) not in linked}


def _last_node(spec: GraphSpec) -> str:
    """The node whose unlinked labels are the graph's main outputs (named just by label)."""
    has_out = {e.src for e in spec.edges}
    sinks = [n.name for n in spec.nodes if n.name not in has_out]
    return sinks[-1] if sinks else spec.nodes[-1].name


def chain_names(types: list[str]) -> list[str]:
    """Node names for a chain: the µNF type, numbered from 0 when a type appears more than once."""
    counts = {t: types.count(t) for t in types}
    seen: dict[str, int] = defaultdict(int)
    names = []
    for t in types:
        names.append(t if counts[t] == 1 else f"{t}{seen[t]}")
        seen[t] += 1
    return names


def chain_spec(types: list[tuple[str, dict[str, Any]]], *, cluster: str | None = None, cpus: list[int] | None = None,
               policy: Policy = "other", **kwargs: Any) -> GraphSpec:
    """A linear chain ``A -> B -> C`` (each node's first label feeds the next; its other labels are
    exits). ``cluster`` fuses every node into one process (run-to-completion); ``cpus`` pins node k
    to ``cpus[k % len(cpus)]``."""
    names = chain_names([t for t, _ in types])
    nodes = [NodeSpec(name=n, type=t, config=c, cluster=cluster, policy=policy,
                      cpu=cpus[k % len(cpus)] if cpus else None)
             for k, (n, (t, c)) in enumerate(zip(names, types, strict=True))]
    edges = [EdgeSpec(src=a.name, label=nf_class(a.type).labels[0], dst=b.name) for a, b in itertools.pairwise(nodes)]
    return GraphSpec(nodes=nodes, edges=edges, entry=nodes[0].name, **kwargs)


REPLICA_CLUSTER = "replica"  # the one cluster of a graph fused whole


def fuse_whole(spec: GraphSpec) -> GraphSpec:
    """``spec`` with every µNF fused into one process, in chain order from the entry: what one
    run-to-completion replica runs. Only a chain fuses whole (each µNF fed only by the one before
    it, feeding at most one next µNF): a parallel Branch/Sync group, a fork by label to two µNFs or
    a join raises :class:`GraphError` saying which node stops it."""
    succ: dict[str, set[str]] = defaultdict(set)
    pred: dict[str, set[str]] = defaultdict(set)
    for e in spec.edges:
        succ[e.src].add(e.dst)
        pred[e.dst].add(e.src)
    order = [spec.entry]
    while succ[order[-1]]:
        here = order[-1]
        if len(succ[here]) > 1:
            raise GraphError(f"{here!r} feeds {', '.join(sorted(succ[here]))}: only a chain of µNFs fuses whole "
                             "(run it pipelined)")
        (nxt,) = succ[here]
        if nxt in order:
            raise GraphError(f"the graph has a cycle through {nxt!r}")
        if pred[nxt] != {here}:
            raise GraphError(f"{nxt!r} is fed by {', '.join(sorted(pred[nxt]))}: only a chain of µNFs fuses whole "
                             "(run it pipelined)")
        order.append(nxt)
    if len(order) != len(spec.nodes):
        rest = sorted({n.name for n in spec.nodes} - set(order))
        raise GraphError(f"{', '.join(rest)} not on the chain from the entry {spec.entry!r}: only a chain of µNFs "
                         "fuses whole")
    by_name = {n.name: n for n in spec.nodes}
    return spec.model_copy(update={"nodes": [by_name[n].model_copy(update={"cluster": REPLICA_CLUSTER})
                                             for n in order]})
