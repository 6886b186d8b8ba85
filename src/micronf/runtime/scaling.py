"""Scale a running graph: one more instance of a µNF, or one less, without losing a packet.

The runtime's mechanics behind the agent's autoscaler (§IV-E; the decisions are
``micronf.agent.autoscaler``'s), usable on any running :class:`GraphRuntime`:

- :func:`scale_out` starts a new instance of a µNF and turns each upstream point-to-point egress
  (or the Rx side's entry list) into a load balancer that includes it;
- :func:`scale_in` removes the newest instance again, in the reverse order.

Both rewrite the layout (stored in the segment, its generation bumped for the I/O services) and
the port tables the processes read; the processes pick a new table up at their next batch.
"""

from __future__ import annotations

import time

import numpy as np

from micronf.dataplane.atomics import py_store_release
from micronf.dataplane.control import ControlLine
from micronf.ports.base import EG_LB_FLOW, EG_LB_RR, EG_PP, IN_PP, MAX_FANOUT
from micronf.runtime.graph import EgressPlan, IngressPlan, ProcessPlan
from micronf.runtime.launch import GraphRuntime, LaunchError
from micronf.runtime.stage import GraphMemory, write_layout


def scale_out(g: GraphRuntime, name: str, *, by_flow: bool = True, timeout: float = 60.0) -> str:
    """Start one more instance of node ``name`` and load-balance its input over all instances.

    Order makes it lossless: the new instance gets fresh rings, downstream nodes get a new
    ingress for it, its process starts and reports ready, and only then is each upstream
    egress rewritten from point-to-point (or an existing load balancer) to a load balancer that
    includes the new ring. Packets already queued for the old instance stay there and are
    processed by it. Returns the new instance's name.
    """
    mem = g.memory()
    layout = g.layout
    if len(g.procs) != len(layout.processes):
        raise LaunchError(f"cannot scale {name!r}: the graph is not running (call start() first)")
    orig = layout.node(name)
    instances = [n for n in layout.nodes if n.name == name or n.instance_of == name]
    proc_index = len(layout.processes)
    node_index = len(layout.nodes)
    if proc_index >= g.max_processes or node_index >= len(layout.nodes) - len(instances) + 1 + g.spare_nodes:
        raise LaunchError(f"cannot scale {name!r}: no spare process slot left")
    if len(layout.processes[orig.process].nodes) != 1:
        raise LaunchError(f"cannot scale {name!r}: it is fused with other µNFs in one process")
    if any(i.kind != IN_PP for i in orig.ingress):
        raise LaunchError(f"cannot scale {name!r}: a Sync join cannot be scaled (its branches mark one copy)")
    if any(i.src == "@source" for i in orig.ingress) and len(orig.ingress) != 1:
        raise LaunchError(f"cannot scale {name!r}: the entry µNF can be scaled only when the graph's input is "
                          f"its only ingress")
    if any(e.kind not in (EG_PP,) for e in orig.egress):
        raise LaunchError(f"cannot scale {name!r}: its egress ports must all be point-to-point")
    rings = iter(_take_spare_rings(g, len(orig.ingress) + len(orig.egress)))
    new_name = f"{name}@{len(instances)}"
    ingress = [IngressPlan(kind=IN_PP, ring=next(rings), src=i.src) for i in orig.ingress]
    egress = []
    for e in orig.egress:
        ring = next(rings)
        egress.append(EgressPlan(kind=EG_PP, rings=[ring], on_full=e.on_full, dst=e.dst))
        _add_downstream_ingress(g, mem, e.rings[0], ring, new_name)
    node = orig.model_copy(update={"name": new_name, "index": node_index, "process": proc_index,
                                   "ingress": ingress, "egress": egress, "instance_of": name})
    layout.nodes.append(node)
    layout.processes.append(ProcessPlan(nodes=[node_index], client=proc_index, cpu=None,
                                        policy=layout.processes[orig.process].policy,
                                        priority=layout.processes[orig.process].priority))
    g.write_ports(mem, node)
    _publish_layout(g)
    g.start_process(proc_index, timeout)
    kind = EG_LB_FLOW if by_flow else EG_LB_RR
    for up_ing, new_ing in zip(orig.ingress, ingress, strict=True):
        if up_ing.src == "@source":
            _add_entry(g, new_ing.ring)
        else:
            _extend_upstream(g, mem, up_ing.src, up_ing.ring, new_ing.ring, kind)
    _publish_layout(g)
    return new_name


def scale_in(g: GraphRuntime, name: str, *, timeout: float = 10.0) -> str:
    """Remove the newest instance of node ``name`` (added by :func:`scale_out`); returns its name.

    Lossless in the reverse order of scale-out: the upstream load balancer (or the Rx side's
    entry list) stops sending to the instance; once its upstream processes run with the new
    table and its input ring stays empty, the instance's process is stopped. Its rings are not
    reused; its counters stay in the accounting (the node is marked ``retired``).
    """
    mem = g.memory()
    instances = [n for n in g.layout.nodes if n.instance_of == name and not n.retired]
    if not instances:
        raise LaunchError(f"cannot scale in {name!r}: it has no instance added by scale-out")
    inst = instances[-1]
    (ing,) = inst.ingress
    upstream_lines: list[ControlLine] = []
    if ing.src == "@source":
        entries = _entries(g)
        if int(entries[int(entries[0])]) != ing.ring:
            raise LaunchError(f"cannot scale in {inst.name!r}: it is not the newest entry instance")
        py_store_release(entries, 0, int(entries[0]) - 1)
    else:
        up = g.layout.node(ing.src)
        for e, eg in enumerate(up.egress):
            if ing.ring in eg.rings:
                rings = [r for r in eg.rings if r != ing.ring]
                kind = EG_PP if len(rings) == 1 else eg.kind
                up.egress[e] = eg.model_copy(update={"kind": kind, "rings": rings})
                table = mem.port_table(up)
                table.begin()
                table.set_egress(e, kind, rings, eg.on_full)
                table.publish()
        upstream_lines.append(g.line(up.process))
    calls = [(ln, ln.calls) for ln in upstream_lines]
    ring = mem.rings[ing.ring]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # upstream switched tables (two calls later) and the ring is empty
        switched = all(ln.calls >= before + 2 or ln.exited for ln, before in calls)
        if switched and len(ring) == 0:
            break
        time.sleep(0.005)
    time.sleep(0.01)
    g.stop_process(inst.process, timeout)
    inst.retired = True
    _publish_layout(g)
    return inst.name


def _publish_layout(g: GraphRuntime) -> None:
    """Store the layout in the segment and tell the I/O services it changed."""
    write_layout(g.segment(), g.layout)
    g.memory().control.bump_layout_generation()


def _entries(g: GraphRuntime) -> np.ndarray:
    """The graph's input rings as the Rx side sees them: ``[count, ring0, ring1, ...]``."""
    return g.segment().view("entries", np.int64)


def _add_entry(g: GraphRuntime, ring: int) -> None:
    entries = _entries(g)
    count = int(entries[0])
    if count >= MAX_FANOUT:
        raise LaunchError(f"the entry µNF already has {MAX_FANOUT} instances")
    entries[1 + count] = ring
    py_store_release(entries, 0, count + 1)  # the Rx side reads the count with acquire


def _take_spare_rings(g: GraphRuntime, n: int) -> list[int]:
    if len(g.layout.spare_rings) < n:
        raise LaunchError(f"not enough spare rings to scale out (need {n}, have {len(g.layout.spare_rings)})")
    taken, g.layout.spare_rings = g.layout.spare_rings[:n], g.layout.spare_rings[n:]
    return taken


def _add_downstream_ingress(g: GraphRuntime, mem: GraphMemory, old_ring: int, new_ring: int, src: str) -> None:
    """The node (or exit) fed by ``old_ring`` is also fed by ``new_ring`` from now on."""
    for node in g.layout.nodes:
        for row, ing in enumerate(node.ingress):
            if ing.ring != old_ring:
                continue
            node.ingress.append(IngressPlan(kind=IN_PP, ring=new_ring, src=src))
            new_row = len(node.ingress) - 1
            node.routes += [(new_row, col, value) for (r, col, value) in node.routes if r == row]
            g.write_ports(mem, node)
            return
    for ex in list(g.layout.exits):
        if ex.ring == old_ring:
            g.layout.exits.append(ex.model_copy(update={"ring": new_ring}))
            return
    raise LaunchError(f"nothing reads ring {old_ring}")


def _extend_upstream(g: GraphRuntime, mem: GraphMemory, src: str, old_ring: int, new_ring: int, kind: int) -> None:
    """Rewrite ``src``'s egress that feeds ``old_ring`` into a load balancer that also feeds ``new_ring``."""
    for node in g.layout.nodes:
        if node.name != src:
            continue
        for e, eg in enumerate(node.egress):
            if old_ring in eg.rings:
                if eg.kind not in (EG_PP, EG_LB_FLOW, EG_LB_RR):
                    raise LaunchError(f"cannot load-balance {src}'s egress of kind {eg.kind}")
                if len(eg.rings) >= MAX_FANOUT:
                    raise LaunchError(f"{src} already balances over {MAX_FANOUT} instances")
                node.egress[e] = eg.model_copy(update={"kind": kind, "rings": [*eg.rings, new_ring]})
                table = mem.port_table(node)
                table.begin()
                table.set_egress(e, kind, node.egress[e].rings, eg.on_full)
                table.publish()
                return
    raise LaunchError(f"no egress of {src!r} feeds ring {old_ring}")
