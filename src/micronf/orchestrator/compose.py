"""Composition (paper §IV-D2, §V-B): from an SFC request to one optimized µNF processing graph.

:func:`compose` instantiates every VNF's template (node names prefixed with the VNF name: ``monitor.
classify``), joins the VNFs along the SFC's links (each endpoint of a VNF output goes to the next
VNF's entry node) and gets the *unoptimized* graph. Then it rewrites it, keeping the semantics
(which packets leave by which SFC output) and recording every rewrite with its reason:

1. **remove** redundant µNFs. A µNF is a *verdict µNF* when its only effect is its verdict: it
   writes no part of the packet, keeps no state, and has several labels or may drop (a classifier
   or a check; a counter, whose counts are its purpose, is never removed). Its verdict depends only
   on the regions it reads, so once a packet has been through one, a second one with the same type
   and config gives the same verdict unless something in between wrote a region it reads. A
   forward data-flow pass computes, for every edge, the verdicts known for *every* packet on it;
   a verdict µNF whose verdict is known on all its inputs is removed and each input goes straight
   where that verdict leads (a second HttpClassifier: packets already classified ``http`` go to its
   ``http`` successor, the others to its ``other`` successor). Nodes no packet can reach any more
   are removed too.
2. **consolidate** µNFs of the same type, config and placement from paths that never meet (neither
   reaches the other) into one instance. Where the instances sent their output to different places,
   the merged node's edges carry ``from_node`` (the ingress→egress mapping table, §IV-C3): packets
   continue along the branch they came from. Needs stateless µNFs (merging state would mix VNFs)
   and inputs from distinct nodes (``from_node`` tells branches apart by the upstream node).
3. **parallelize** (§V-B) runs of consecutive µNFs that neither drop nor touch a region another
   one writes (``Descriptor.parallel_safe_with``) and that lead, whatever their verdict, to the next
   one: ``S -l-> A -> B -> J`` becomes ``S -l-> {A, B} -> J``, a parallel group (Branch at S,
   Marker on the branches, Sync at J) that :func:`micronf.runtime.graph.plan` wires.

The result is two :class:`ComposedGraph` (``GraphSpec`` + which exits are which SFC outputs +
placement hints), before and after, and the list of :class:`Rewrite`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from micronf.orchestrator.load import SFCBundle, UNFType, load_sfc, reachable
from micronf.orchestrator.models import Placement
from micronf.ports.base import MAX_FANOUT
from micronf.runtime.descriptor import REGIONS, Access, Descriptor
from micronf.runtime.graph import EdgeSpec, GraphSpec, NodeSpec

RewriteKind = Literal["remove", "consolidate", "parallelize"]


class Rewrite(BaseModel):
    """One optimization step: what was done to which nodes, and why it keeps the semantics."""

    model_config = ConfigDict(frozen=True)

    kind: RewriteKind
    nodes: list[str]  # the nodes rewritten: removed node / surviving node + merged ones / parallel branches
    reason: str


class ComposedGraph(BaseModel):
    """A µNF graph for an SFC: the spec, which exits are which SFC outputs, and placement hints."""

    model_config = ConfigDict(frozen=True)

    spec: GraphSpec
    outputs: dict[str, list[tuple[str, str]]]  # SFC output ("appfw.web") -> its exits (node, label)
    placement: dict[str, Placement]  # hints per node (only nodes that have some)

    def output_of(self, node: str, label: str) -> str | None:
        """The SFC output the exit ``(node, label)`` belongs to, if it is one."""
        for name, endpoints in self.outputs.items():
            if (node, label) in endpoints:
                return name
        return None


class Composition(BaseModel):
    """The unoptimized and the optimized graph of an SFC, and the rewrites between them."""

    model_config = ConfigDict(frozen=True)

    sfc: str
    before: ComposedGraph
    after: ComposedGraph
    rewrites: list[Rewrite]

    def nodes_rewritten(self, kind: RewriteKind) -> list[list[str]]:
        """The ``nodes`` of every rewrite of one kind, in order."""
        return [r.nodes for r in self.rewrites if r.kind == kind]


def compose(bundle: SFCBundle, *, parallelize: bool = True) -> Composition:
    """Instantiate and join the SFC's VNFs, then optimize (see the module docstring).

    ``parallelize=False`` skips step 3: parallel branches pay off only with a spare core per
    branch; on a small machine the same µNFs chained (and fused) are cheaper.
    """
    graph = _instantiate(bundle)
    before = graph.composed(bundle.sfc.name)
    rewrites: list[Rewrite] = []
    _remove_redundant(graph, rewrites)
    _consolidate(graph, rewrites)
    if parallelize:
        _parallelize(graph, rewrites)
    return Composition(sfc=bundle.sfc.name, before=before, after=graph.composed(bundle.sfc.name), rewrites=rewrites)


def compose_file(path: Path | str, *, parallelize: bool = True) -> Composition:
    """:func:`compose` of the SFC request in ``path`` (raises ``SpecError`` on invalid input)."""
    return compose(load_sfc(path), parallelize=parallelize)


# -- the working graph --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Node:
    name: str
    unf: UNFType
    config: dict[str, Any]
    placement: Placement | None

    @property
    def same_result(self) -> tuple[str, str]:
        """Equal for two µNFs that compute the same verdict on the same packet."""
        return self.unf.name, self.unf.config_key(self.config)


@dataclass(frozen=True)
class _Edge:
    src: str
    label: str
    dst: str
    from_node: str | None = None


class _Graph:
    """A mutable µNF graph: nodes in instantiation order, edges, entry, exits -> SFC outputs."""

    def __init__(self, nodes: list[_Node], edges: list[_Edge], entry: str, exits: dict[tuple[str, str], str]) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.edges = edges
        self.entry = entry
        self.exits = exits

    def ins(self, n: str) -> list[_Edge]:
        return [e for e in self.edges if e.dst == n]

    def outs(self, n: str, label: str | None = None) -> list[_Edge]:
        return [e for e in self.edges if e.src == n and (label is None or e.label == label)]

    def succ(self) -> dict[str, list[str]]:
        return {n: [e.dst for e in self.edges if e.src == n] for n in self.nodes}

    def reaches(self, a: str, b: str) -> bool:
        return b in reachable(self.succ(), a)

    def topo(self) -> list[str]:
        """Nodes in topological order, ties broken by instantiation order (deterministic)."""
        indeg = {n: 0 for n in self.nodes}
        for e in self.edges:
            indeg[e.dst] += 1
        order: list[str] = []
        ready = [n for n in self.nodes if indeg[n] == 0]
        while ready:
            n = ready.pop(0)
            order.append(n)
            for e in self.outs(n):
                indeg[e.dst] -= 1
                if indeg[e.dst] == 0:
                    ready.append(e.dst)
            ready.sort(key=list(self.nodes).index)
        return order

    def is_referenced(self, n: str) -> bool:
        """True when some edge routes by packets having come from ``n`` (``from_node``), or ``n`` does."""
        return any(e.from_node == n or (e.src == n and e.from_node is not None) for e in self.edges)

    def drop_node(self, n: str) -> None:
        del self.nodes[n]
        self.edges = [e for e in self.edges if n not in (e.src, e.dst)]
        self.exits = {k: v for k, v in self.exits.items() if k[0] != n}

    def composed(self, name: str) -> ComposedGraph:
        nodes = [NodeSpec(name=n.name, type=n.unf.name, config=n.config, cpu=n.placement.cpu if n.placement else None)
                 for n in self.nodes.values()]
        order = list(self.nodes).index
        edges = [EdgeSpec(src=e.src, label=e.label, dst=e.dst, from_node=e.from_node)
                 for e in sorted(self.edges, key=lambda e: (order(e.src), self.nodes[e.src].unf.labels.index(e.label),
                                                            order(e.dst)))]
        outputs: dict[str, list[tuple[str, str]]] = {}
        for (node, label), out in sorted(self.exits.items(), key=lambda kv: list(self.nodes).index(kv[0][0])):
            outputs.setdefault(out, []).append((node, label))
        hints = {n.name: n.placement for n in self.nodes.values() if n.placement is not None}
        return ComposedGraph(spec=GraphSpec(name=name, nodes=nodes, edges=edges, entry=self.entry),
                             outputs=outputs, placement=hints)


def _instantiate(bundle: SFCBundle) -> _Graph:
    """The unoptimized graph: every template instantiated, VNF outputs linked to the next VNF's entry."""
    sfc = bundle.sfc
    nodes: list[_Node] = []
    edges: list[_Edge] = []
    entry_of: dict[str, str] = {}
    for vnf in sfc.vnfs:
        tpl = bundle.templates[vnf.template].template
        for tn in tpl.nodes:
            hint = _merge_hints(vnf.placement, vnf.unfs.get(tn.name))
            config = {**tn.config, **vnf.config.get(tn.name, {})}
            nodes.append(_Node(f"{vnf.name}.{tn.name}", bundle.types[tn.type], config, hint))
        edges += [_Edge(f"{vnf.name}.{lk.src}", lk.label or "", f"{vnf.name}.{lk.dst}") for lk in tpl.links]
        entry_of[vnf.name] = f"{vnf.name}.{tpl.entry}"
    exits: dict[tuple[str, str], str] = {}
    for vnf in sfc.vnfs:
        next_vnf = {lk.label: lk.dst for lk in sfc.links if lk.src == vnf.name}
        for out, endpoints in bundle.templates[vnf.template].template.outputs.items():
            for endpoint in endpoints:
                node, label = endpoint.split(".")
                src = f"{vnf.name}.{node}"
                if out in next_vnf:
                    edges.append(_Edge(src, label, entry_of[next_vnf[out]]))
                else:
                    exits[(src, label)] = f"{vnf.name}.{out}"
    return _Graph(nodes, edges, entry_of[bundle.entry], exits)


def _merge_hints(vnf: Placement | None, unf: Placement | None) -> Placement | None:
    """A µNF's own hint wins field by field over its VNF's."""
    if vnf is None or unf is None:
        return unf or vnf
    return Placement(agent=unf.agent or vnf.agent, cpu=unf.cpu if unf.cpu is not None else vnf.cpu)


def _access_text(d: Descriptor) -> str:
    reads = [r for r in REGIONS if d.access(r) == Access.READ]
    writes = [r for r in REGIONS if d.access(r) == Access.WRITE]
    parts = ([f"reads {'/'.join(reads)}"] if reads else []) + ([f"writes {'/'.join(writes)}"] if writes else [])
    return ", ".join(parts) or "touches no header"


def _where(g: _Graph, src: str, label: str) -> str:
    dsts = [e.dst for e in g.outs(src, label)]
    return " and ".join(dsts) if dsts else f"exit {g.exits[(src, label)]!r}"


# -- 1. redundant µNFs --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Known:
    """A verdict known for every packet on an edge: which label, from which µNFs, what they read."""

    label: str
    origins: tuple[str, ...]
    reads: Descriptor


def _is_verdict_unf(unf: UNFType) -> bool:
    d = unf.descriptor
    return d.read_only and not d.stateful and (len(unf.labels) > 1 or d.may_drop)


def _known_verdicts(g: _Graph) -> dict[_Edge, dict[tuple[str, str], _Known]]:
    """Forward data flow: for every edge, the verdicts every packet on it already got."""
    known: dict[_Edge, dict[tuple[str, str], _Known]] = {}
    for n in g.topo():
        node = g.nodes[n]
        ins = [known[e] for e in g.ins(n)]
        common: dict[tuple[str, str], _Known] = {}
        for key, first in (ins[0].items() if ins else ()):
            if all(key in k and k[key].label == first.label for k in ins):
                origins = sorted({o for k in ins for o in k[key].origins})
                common[key] = replace(first, origins=tuple(origins))
        writes = [r for r in REGIONS if node.unf.descriptor.access(r) == Access.WRITE]
        common = {k: v for k, v in common.items() if all(v.reads.access(r) == Access.NOP for r in writes)}
        for e in g.outs(n):
            facts = dict(common)
            if _is_verdict_unf(node.unf):
                facts.setdefault(node.same_result, _Known(e.label, (n,), node.unf.descriptor))
            known[e] = facts
    return known


def _remove_redundant(g: _Graph, rewrites: list[Rewrite]) -> None:
    while True:
        known = _known_verdicts(g)
        victim = next((n for n in g.topo() if n != g.entry and _is_verdict_unf(g.nodes[n].unf) and g.ins(n)
                       and all(g.nodes[n].same_result in known[e] for e in g.ins(n))), None)
        if victim is None:
            return
        node = g.nodes[victim]
        ins = g.ins(victim)
        facts = [known[e][node.same_result] for e in ins]
        by_label: dict[str, list[str]] = {}
        for e, fact in zip(ins, facts, strict=True):
            by_label.setdefault(fact.label, []).append(e.src)
            g.edges += [_Edge(e.src, e.label, o.dst, e.from_node) for o in g.outs(victim, fact.label)]
            if (victim, fact.label) in g.exits:
                g.exits[(e.src, e.label)] = g.exits[(victim, fact.label)]
        moves = "; ".join(f"'{label}' for the packets from {' and '.join(srcs)}, which now go straight to "
                          f"{_where(g, victim, label)}" for label, srcs in by_label.items())
        origins = sorted({o for f in facts for o in f.origins})
        g.drop_node(victim)
        rewrites.append(Rewrite(kind="remove", nodes=[victim, *origins], reason=(
            f"{victim} is a {node.unf.name} with the same config as {' and '.join(origins)} earlier on every path "
            f"to it, and nothing in between writes what it reads ({_access_text(node.unf.descriptor)}), so its "
            f"verdict is already known: {moves}")))
        _remove_unreachable(g, rewrites, victim)


def _remove_unreachable(g: _Graph, rewrites: list[Rewrite], cause: str) -> None:
    live = reachable(g.succ(), g.entry)
    for n in [n for n in g.nodes if n not in live]:
        g.drop_node(n)
        rewrites.append(Rewrite(kind="remove", nodes=[n, cause], reason=(
            f"no packet can reach {n} any more: with {cause} gone, every packet that would have come here "
            f"is known to take another way")))


# -- 2. consolidation ---------------------------------------------------------------------------
def _routes(g: _Graph, n: str) -> dict[str, tuple[str, ...]]:
    """Where each label of ``n`` leads: the destinations, or ``("@exit", output)``."""
    out: dict[str, tuple[str, ...]] = {}
    for label in g.nodes[n].unf.labels:
        dsts = tuple(sorted(e.dst for e in g.outs(n, label)))
        out[label] = dsts or ("@exit", g.exits[(n, label)])
    return out


def _mergeable(g: _Graph, group: list[str]) -> bool:
    if any(n == g.entry or not g.ins(n) or g.is_referenced(n) for n in group):
        return False
    if any(g.reaches(a, b) for a in group for b in group if a != b):
        return False
    routes = [_routes(g, n) for n in group]
    if all(r == routes[0] for r in routes):
        return True  # same successors everywhere: no mapping table needed
    preds = [{e.src for e in g.ins(n)} for n in group]
    disjoint = sum(len(p) for p in preds) == len(set().union(*preds))
    per_label_ok = all(len({r[lab] for r in routes}) == 1 or all(r[lab][0] != "@exit" for r in routes)
                       for lab in routes[0])
    return disjoint and per_label_ok


def _consolidate(g: _Graph, rewrites: list[Rewrite]) -> None:
    groups: dict[tuple[str, str, Placement | None], list[str]] = {}
    for n in g.topo():
        node = g.nodes[n]
        if not node.unf.descriptor.stateful:
            groups.setdefault((*node.same_result, node.placement), []).append(n)
    for members in groups.values():
        chosen = members[:1]
        for m in members[1:]:
            if _mergeable(g, [*chosen, m]):
                chosen.append(m)
        if len(chosen) > 1:
            _merge(g, chosen, rewrites)


def _merge(g: _Graph, group: list[str], rewrites: list[Rewrite]) -> None:
    base, others = group[0], group[1:]
    routes = {n: _routes(g, n) for n in group}
    differ = [lab for lab in g.nodes[base].unf.labels if len({routes[n][lab] for n in group}) > 1]
    inputs = {n: list(dict.fromkeys(e.src for e in g.ins(n))) for n in group}
    mapped = [_Edge(base, lab, e.dst, src) for lab in differ for n in group for src in inputs[n]
              for e in g.outs(n, lab)]
    moved_in = [_Edge(e.src, e.label, base, e.from_node) for n in others for e in g.ins(n)]
    g.edges = [e for e in g.edges if not (e.src == base and e.label in differ)]
    for n in others:
        g.drop_node(n)
    g.edges += moved_in + mapped
    node = g.nodes[base]
    how = ("its ingress→egress mapping table keeps each packet on its own branch ("
           + "; ".join(f"'{e.label}' from {e.from_node} to {e.dst}" for e in mapped) + ")") if mapped \
        else "every instance sent its packets to the same places"
    rewrites.append(Rewrite(kind="consolidate", nodes=group, reason=(
        f"{', '.join(others)} and {base} are the same stateless µNF ({node.unf.name}, same config and placement) "
        f"on paths that never meet: one instance serves all of them (its counters add up) and {how}")))


# -- 3. parallelization -------------------------------------------------------------------------
def _sole_next(g: _Graph, n: str) -> str | None:
    """The one node every verdict of ``n`` leads to (no exits, no mapping table), or None."""
    outs = g.outs(n)
    labels = g.nodes[n].unf.labels
    if g.is_referenced(n) or {e.label for e in outs} != set(labels) or len(outs) != len(labels):
        return None
    dsts = {e.dst for e in outs}
    return dsts.pop() if len(dsts) == 1 else None


def _agent(g: _Graph, n: str) -> str | None:
    hint = g.nodes[n].placement
    return hint.agent if hint is not None else None


def _parallel_run(g: _Graph, first: str) -> tuple[_Edge, list[str], str] | None:
    ins = g.ins(first)
    if first == g.entry or len(ins) != 1 or ins[0].from_node is not None:
        return None
    head = ins[0]
    if len(g.outs(head.src, head.label)) != 1 or _sole_next(g, first) is None:
        return None
    run = [first]
    while len(run) < MAX_FANOUT:
        cand = _sole_next(g, run[-1])
        assert cand is not None
        d = g.nodes[cand].unf.descriptor
        if (cand == g.entry or any(e.src != run[-1] for e in g.ins(cand)) or _sole_next(g, cand) is None
                or _agent(g, cand) != _agent(g, first)  # §V-B: parallel µNFs share a machine
                or not all(g.nodes[m].unf.descriptor.parallel_safe_with(d) for m in run)):
            break
        run.append(cand)
    join = _sole_next(g, run[-1])
    assert join is not None
    return (head, run, join) if len(run) > 1 else None


def _parallelize(g: _Graph, rewrites: list[Rewrite]) -> None:
    while (found := next(filter(None, (_parallel_run(g, n) for n in g.topo())), None)) is not None:
        head, run, join = found
        g.edges = [e for e in g.edges if e != head and e.src not in run[:-1]]
        g.edges += [_Edge(head.src, head.label, m) for m in run]
        g.edges += [_Edge(m, label, join) for m in run[:-1] for label in g.nodes[m].unf.labels]
        accesses = "; ".join(f"{m} {_access_text(g.nodes[m].unf.descriptor)}" for m in run)
        rewrites.append(Rewrite(kind="parallelize", nodes=run, reason=(
            f"{' -> '.join(run)} follow each other, none drops, none writes a region another one touches "
            f"({accesses}) and all lead to {join}: they now process every packet {head.src} labels "
            f"'{head.label}' at the same time (Branch at {head.src}, Sync at {join}, §V-B)")))

