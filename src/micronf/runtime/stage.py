"""Attach to a graph segment and assemble what a µNF process's hot loop needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micronf.dataplane.control import ControlBlock
from micronf.dataplane.pool import PacketPool
from micronf.dataplane.ring import RingTable
from micronf.dataplane.segment import Segment, read_json, write_json
from micronf.ports.base import EG_KIND, EG_LOCAL, MAX_EG, MAX_FANOUT, TABLE_WORDS
from micronf.ports.table import PortSnapshot, PortTable
from micronf.runtime.graph import GraphLayout, NodePlan
from micronf.runtime.loop import RC_WORDS, StageArrays
from micronf.runtime.nf import MicroNF, nf_class

SPARE_NC_WORDS = 256  # µNF counters a scaled-out instance may have


def node_regions(layout: GraphLayout, spare_nodes: int) -> dict[str, int]:
    """Per-node regions (port table, runtime counters, the µNF's own counters), plus ``spare_nodes``
    empty slots for instances added by scale-out while the graph runs."""
    regions: dict[str, int] = {}
    sizes = [max(1, len(n.counters)) for n in layout.nodes] + [SPARE_NC_WORDS] * spare_nodes
    for index, nc in enumerate(sizes):
        regions[f"nf{index}.ports"] = TABLE_WORDS * 8
        regions[f"nf{index}.rc"] = RC_WORDS * 8
        regions[f"nf{index}.nc"] = nc * 8
    return regions


def write_layout(seg: Segment, layout: GraphLayout) -> None:
    write_json(seg, "layout", layout.model_dump(mode="json"))


def read_layout(seg: Segment) -> GraphLayout:
    return GraphLayout.model_validate(read_json(seg, "layout"))


@dataclass
class GraphMemory:
    """The views of one graph segment every process uses."""

    seg: Segment
    layout: GraphLayout
    pool: PacketPool
    rings: RingTable
    control: ControlBlock

    @classmethod
    def attach(cls, name: str) -> GraphMemory:
        seg = Segment.attach(name)
        return cls.of(seg)

    @classmethod
    def of(cls, seg: Segment) -> GraphMemory:
        return cls(seg, read_layout(seg), PacketPool.attach(seg, "pool"), RingTable.attach(seg, "rings"),
                   ControlBlock(seg.view("ctl", np.int64)))

    def port_table(self, node: NodePlan) -> PortTable:
        return PortTable(self.seg.view(f"nf{node.index}.ports", np.int64))

    def runtime_counters(self, node: NodePlan) -> np.ndarray:
        return self.seg.view(f"nf{node.index}.rc", np.int64)

    def nf_counters(self, node: NodePlan) -> np.ndarray:
        return self.seg.view(f"nf{node.index}.nc", np.int64)


def local_columns(snap: PortSnapshot, n_labels: int) -> np.ndarray:
    """Per ingress row of ``snap``'s route table: the first label column routed to an in-process
    (``EG_LOCAL``) egress, i.e. to the next fused µNF, or -1. The hot loop's free hand-off
    (:func:`~micronf.runtime.loop.pass_local`) takes a batch whose verdicts are all that label."""
    cols = np.full(snap.route.shape[0], -1, dtype=np.int64)
    for row, routes in enumerate(snap.route):
        for col in range(min(n_labels, routes.shape[0])):
            e = int(routes[col])
            if e >= 0 and snap.eg_tab[e, EG_KIND] == EG_LOCAL:
                cols[row] = col
                break
    return cols


def build_stage(mem: GraphMemory, node: NodePlan, nf: MicroNF, burst: int) -> StageArrays:
    """The hot loop's arrays for ``node`` from the current port table."""
    snap = mem.port_table(node).snapshot()
    n_labels = len(type(nf).labels)
    return StageArrays(
        in_tab=snap.in_tab,
        eg_tab=snap.eg_tab,
        route=snap.route,
        n_labels=n_labels,
        cursor=np.zeros(MAX_EG, dtype=np.int64),
        rc=mem.runtime_counters(node),
        handles=np.empty(burst, dtype=np.uint32),
        verdicts=np.empty(burst, dtype=np.int32),
        staging=np.empty((MAX_EG, burst), dtype=np.uint32),
        counts=np.zeros(MAX_EG, dtype=np.int64),
        scratch=np.empty((MAX_FANOUT, burst), dtype=np.uint32),
        freebuf=np.empty(burst, dtype=np.uint32),
        nfc=mem.nf_counters(node),
        local_col=local_columns(snap, n_labels),
    )


def instantiate(node: NodePlan) -> MicroNF:
    """The µNF object of a node (config already validated when the layout was planned)."""
    return nf_class(node.type)(node.config)
