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

The result is two :class:`~micronf.orchestrator.models.ComposedGraph` (``GraphSpec`` + which exits
are which SFC outputs + placement hints), before and after, and the list of
:class:`~micronf.orchestrator.models.Rewrite`.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from micronf.orchestrator.load import SFCBundle, UNFType, load_sfc
from micronf.orchestrator.models import ComposedGraph, Composition, Placement, Rewrite
from micronf.ports.base import MAX_FANOUT
from micronf.runtime.descriptor import REGIONS, Access, Descriptor
from micronf.runtime.graph import EdgeSpec, GraphSpec, NodeSpec


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

    @cached_property
    def same_result(self) -> tuple[str, str]:
        """Equal for two µNFs that compute the same verdict on the same packet (computed once: it
        validates the config)."""
        return self.unf.name, self.unf.config_key(self.config)


@dataclass(frozen=True)
class _Edge:
    src: str
    label: str
    dst: str
    from_node: str | None = None


class _Graph:
    """A mutable µNF graph: nodes in instantiation order, edges, entry, exits -> SFC outputs.

    Edges are indexed by source and destination (insertion-ordered, so every listing is
    deterministic), with counts for :meth:`is_referenced`: every query and update costs the
    degree of the nodes involved, not the size of the graph (10,000-node chains compose in
    seconds)."""

    def __init__(self, nodes: list[_Node], edges: list[_Edge], entry: str, exits: dict[tuple[str, str], str]) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.position = {n.name: k for k, n in enumerate(nodes)}  # instantiation order, kept after drops
        self._in: dict[str, dict[_Edge, None]] = {n.name: {} for n in nodes}
        self._out: dict[str, dict[_Edge, None]] = {n.name: {} for n in nodes}
        self._referenced: Counter[str] = Counter()  # node -> edges routed by packets from it, or from it routing
        self.entry = entry
        self.exits = exits
        for e in edges:
            self.add_edge(e)

    @property
    def edges(self) -> list[_Edge]:
        return [e for n in self.nodes for e in self._out[n]]

    def add_edge(self, e: _Edge) -> None:
        self._out[e.src][e] = None
        self._in[e.dst][e] = None
        if e.from_node is not None:
            self._referenced.update((e.from_node, e.src))

    def remove_edge(self, e: _Edge) -> None:
        del self._out[e.src][e], self._in[e.dst][e]
        if e.from_node is not None:
            self._referenced.subtract((e.from_node, e.src))

    def ins(self, n: str) -> list[_Edge]:
        return list(self._in[n])

    def outs(self, n: str, label: str | None = None) -> list[_Edge]:
        return [e for e in self._out[n] if label is None or e.label == label]

    def topo(self) -> list[str]:
        """Nodes in topological order, ties broken by instantiation order (deterministic)."""
        indeg = {n: len(self._in[n]) for n in self.nodes}
        ready = [(self.position[n], n) for n in self.nodes if indeg[n] == 0]
        order: list[str] = []
        while ready:
            _, n = heapq.heappop(ready)
            order.append(n)
            for e in self._out[n]:
                indeg[e.dst] -= 1
                if indeg[e.dst] == 0:
                    heapq.heappush(ready, (self.position[e.dst], e.dst))
        return order

    def is_referenced(self, n: str) -> bool:
        """True when some edge routes by packets having come from ``n`` (``from_node``), or ``n`` does."""
        return self._referenced[n] > 0

    def drop_node(self, n: str) -> None:
        for e in [*self._in[n], *self._out[n]]:
            self.remove_edge(e)
        for label in self.nodes.pop(n).unf.labels:
            self.exits.pop((n, label), None)
        del self._in[n], self._out[n]

    def composed(self, name: str) -> ComposedGraph:
        nodes = [NodeSpec(name=n.name, type=n.unf.name, config=n.config, cpu=n.placement.cpu if n.placement else None)
                 for n in self.nodes.values()]
        pos = self.position
        edges = [EdgeSpec(src=e.src, label=e.label, dst=e.dst, from_node=e.from_node)
                 for e in sorted(self.edges, key=lambda e: (pos[e.src], self.nodes[e.src].unf.labels.index(e.label),
                                                            pos[e.dst]))]
        outputs: dict[str, list[tuple[str, str]]] = {}
        for (node, label), out in sorted(self.exits.items(), key=lambda kv: pos[kv[0][0]]):
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
    links: dict[str, dict[str, str]] = {}  # VNF -> its output -> the next VNF
    for lk in sfc.links:
        links.setdefault(lk.src, {})[lk.label] = lk.dst
    for vnf in sfc.vnfs:
        next_vnf = links.get(vnf.name, {})
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


def _facts_in(known: dict[_Edge, dict[tuple[str, str], _Known]], ins: list[_Edge]) -> dict[tuple[str, str], _Known]:
    """The verdicts every packet arriving by ``ins`` got: known on every input, with the same label."""
    common: dict[tuple[str, str], _Known] = {}
    facts = [known[e] for e in ins]
    for key, first in (facts[0].items() if facts else ()):
        if all(key in k and k[key].label == first.label for k in facts):
            origins = sorted({o for k in facts for o in k[key].origins})
            common[key] = replace(first, origins=tuple(origins))
    return common


def _remove_redundant(g: _Graph, rewrites: list[Rewrite]) -> None:
    """One forward data-flow pass in topological order: for every edge, the verdicts every packet on it
    already got; a verdict µNF whose verdict is known on all its inputs is removed on the spot.

    One pass is enough, and removes what removing the first redundant µNF and starting over would:
    a removal only changes what is known downstream of the removed node (its inputs now lead straight
    to its successors, which come later in the order, with the facts those inputs carried), so the
    facts of every node are final when the pass reaches it.
    """
    known: dict[_Edge, dict[tuple[str, str], _Known]] = {}
    for n in g.topo():
        node = g.nodes.get(n)
        if node is None:
            continue  # removed on the way: unreachable after an upstream removal
        ins = g.ins(n)
        if (n != g.entry and _is_verdict_unf(node.unf) and ins
                and all(node.same_result in known[e] for e in ins)):
            _remove_known(g, n, [known[e][node.same_result] for e in ins], known, rewrites)
            continue
        common = _facts_in(known, ins)
        writes = [r for r in REGIONS if node.unf.descriptor.access(r) == Access.WRITE]
        common = {k: v for k, v in common.items() if all(v.reads.access(r) == Access.NOP for r in writes)}
        for e in g.outs(n):
            facts = dict(common)
            if _is_verdict_unf(node.unf):
                facts.setdefault(node.same_result, _Known(e.label, (n,), node.unf.descriptor))
            known[e] = facts


def _remove_known(g: _Graph, victim: str, facts: list[_Known], known: dict[_Edge, dict[tuple[str, str], _Known]],
                  rewrites: list[Rewrite]) -> None:
    """Remove ``victim``, whose verdict on its inputs is ``facts``: each input goes where its verdict leads."""
    node = g.nodes[victim]
    ins = g.ins(victim)
    by_label: dict[str, list[str]] = {}
    for e, fact in zip(ins, facts, strict=True):
        by_label.setdefault(fact.label, []).append(e.src)
        for o in g.outs(victim, fact.label):
            moved = _Edge(e.src, e.label, o.dst, e.from_node)
            g.add_edge(moved)
            known[moved] = known[e]  # the same packets, the same facts
        if (victim, fact.label) in g.exits:
            g.exits[(e.src, e.label)] = g.exits[(victim, fact.label)]
    moves = "; ".join(f"'{label}' for the packets from {' and '.join(srcs)}, which now go straight to "
                      f"{_where(g, victim, label)}" for label, srcs in by_label.items())
    origins = sorted({o for f in facts for o in f.origins})
    successors = [e.dst for e in g.outs(victim)]
    g.drop_node(victim)
    rewrites.append(Rewrite(kind="remove", nodes=[victim, *origins], reason=(
        f"{victim} is a {node.unf.name} with the same config as {' and '.join(origins)} earlier on every path "
        f"to it, and nothing in between writes what it reads ({_access_text(node.unf.descriptor)}), so its "
        f"verdict is already known: {moves}")))
    _remove_unreachable(g, rewrites, victim, successors)


def _remove_unreachable(g: _Graph, rewrites: list[Rewrite], cause: str, candidates: list[str]) -> None:
    """Remove the nodes no packet reaches any more now that ``cause`` is gone (``candidates``: its successors).

    Every node was reachable from the entry before, and the graph is acyclic, so a node is unreachable
    exactly when it has no input left or all its inputs come from unreachable nodes: follow the
    successors of each node removed, in instantiation order in the rewrites.
    """
    gone: list[str] = []
    todo = list(candidates)
    while todo:
        n = todo.pop()
        if n in g.nodes and n != g.entry and not g.ins(n):
            todo += [e.dst for e in g.outs(n)]
            g.drop_node(n)
            gone.append(n)
    for n in sorted(gone, key=g.position.__getitem__):
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


class _Reach:
    """Which candidate nodes each node reaches, as a bit set (an int) over the candidates: reachability
    queries between candidates in O(1) instead of a graph walk each (a 10,000-node chain asks ~10,000)."""

    def __init__(self, g: _Graph, candidates: list[str]) -> None:
        self.bit = {n: 1 << k for k, n in enumerate(candidates)}
        self.below: dict[str, int] = {}
        for n in reversed(g.topo()):
            below = 0
            for e in g.outs(n):
                below |= self.bit.get(e.dst, 0) | self.below[e.dst]
            self.below[n] = below

    def merged(self, group: list[str]) -> None:
        """``group[0]`` now has every input and every successor of the group (see :func:`_merge`)."""
        mask = reach = 0
        for m in group:
            mask |= self.bit[m]
            reach |= self.below[m]
        base = self.bit[group[0]]
        for n, below in self.below.items():
            if below & mask:
                self.below[n] = below | base | reach
        self.below[group[0]] = reach


class _Mergeable:
    """A growing group of same-type, same-config, same-placement µNFs that one instance can replace:
    :meth:`offer` takes a µNF when the group with it still can be merged. The conditions: no member is
    the entry, unfed, or referenced by a mapping table; no member reaches another; and either every
    member's labels lead to the same places, or the members' upstream nodes differ (a mapping table
    tells their packets apart) and no label that leads to different places is an exit."""

    def __init__(self, g: _Graph, reach: _Reach, first: str) -> None:
        self.g, self.reach = g, reach
        self.members = [first]
        self.open = self._eligible(first)  # nothing joins a group whose first µNF cannot be merged
        self.mask, self.below = reach.bit[first], reach.below[first]
        self.routes = _routes(g, first)
        self.same_routes = True
        self.preds = {e.src for e in g.ins(first)}
        self.disjoint = True
        self.seen = {lab: {r} for lab, r in self.routes.items()}  # label -> the routes the members give it
        self.exits = {lab for lab, r in self.routes.items() if r[0] == "@exit"}  # labels an exit for some member

    def _eligible(self, n: str) -> bool:
        return not (n == self.g.entry or not self.g.ins(n) or self.g.is_referenced(n))

    def offer(self, m: str) -> None:
        if not self.open or not self._eligible(m):
            return
        if self.reach.below[m] & self.mask or self.below & self.reach.bit[m]:
            return
        routes = _routes(self.g, m)
        same = self.same_routes and routes == self.routes
        preds = {e.src for e in self.g.ins(m)}
        disjoint = self.disjoint and not preds & self.preds
        per_label_ok = all(len(self.seen[lab] | {r}) == 1 or (r[0] != "@exit" and lab not in self.exits)
                           for lab, r in routes.items())
        if not (same or (disjoint and per_label_ok)):
            return
        self.members.append(m)
        self.mask |= self.reach.bit[m]
        self.below |= self.reach.below[m]
        self.same_routes, self.disjoint = same, disjoint
        self.preds |= preds
        for lab, r in routes.items():
            self.seen[lab].add(r)
            if r[0] == "@exit":
                self.exits.add(lab)


def _consolidate(g: _Graph, rewrites: list[Rewrite]) -> None:
    groups: dict[tuple[str, str, Placement | None], list[str]] = {}
    for n in g.topo():
        node = g.nodes[n]
        if not node.unf.descriptor.stateful:
            groups.setdefault((*node.same_result, node.placement), []).append(n)
    several = [members for members in groups.values() if len(members) > 1]
    reach = _Reach(g, [n for members in several for n in members])
    for members in several:
        group = _Mergeable(g, reach, members[0])
        for m in members[1:]:
            group.offer(m)
        if len(group.members) > 1:
            _merge(g, group.members, rewrites)
            reach.merged(group.members)


def _merge(g: _Graph, group: list[str], rewrites: list[Rewrite]) -> None:
    base, others = group[0], group[1:]
    routes = {n: _routes(g, n) for n in group}
    differ = [lab for lab in g.nodes[base].unf.labels if len({routes[n][lab] for n in group}) > 1]
    inputs = {n: list(dict.fromkeys(e.src for e in g.ins(n))) for n in group}
    mapped = [_Edge(base, lab, e.dst, src) for lab in differ for n in group for src in inputs[n]
              for e in g.outs(n, lab)]
    moved_in = [_Edge(e.src, e.label, base, e.from_node) for n in others for e in g.ins(n)]
    for e in g.outs(base):
        if e.label in differ:
            g.remove_edge(e)
    for n in others:
        g.drop_node(n)
    for e in moved_in + mapped:
        g.add_edge(e)
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
    """One pass in topological order, each run rewritten where it starts. A rewrite gives no node before
    it a run (the run's head now has several edges for one label, its join several inputs: both end a
    run), and the order stays topological (the new edges go from the head to the run and from the run
    to the join), so nothing is missed that starting over after each rewrite would find."""
    for n in g.topo():
        found = _parallel_run(g, n)
        if found is None:
            continue
        head, run, join = found
        g.remove_edge(head)
        for e in [e for m in run[:-1] for e in g.outs(m)]:
            g.remove_edge(e)
        for m in run:
            g.add_edge(_Edge(head.src, head.label, m))
        for m in run[:-1]:
            for label in g.nodes[m].unf.labels:
                g.add_edge(_Edge(m, label, join))
        accesses = "; ".join(f"{m} {_access_text(g.nodes[m].unf.descriptor)}" for m in run)
        rewrites.append(Rewrite(kind="parallelize", nodes=run, reason=(
            f"{' -> '.join(run)} follow each other, none drops, none writes a region another one touches "
            f"({accesses}) and all lead to {join}: they now process every packet {head.src} labels "
            f"'{head.label}' at the same time (Branch at {head.src}, Sync at {join}, §V-B)")))

