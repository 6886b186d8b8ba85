"""Port kinds on private memory: semantics without processes, through the compiled dispatch the
µNF hot loop calls (``ingress_rx``, ``egress_prepare`` + ``egress_tx``) on port-table rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from micronf.dataplane.pool import M_HASH, M_SYNC, PacketPool
from micronf.dataplane.ring import RingTable
from micronf.dataplane.segment import PrivateMemory
from micronf.packet.flowhash import jump_hash
from micronf.ports.base import (
    EG_BRANCH,
    EG_COLS,
    EG_KIND,
    EG_LB_FLOW,
    EG_LB_RR,
    EG_MARK_ONLY,
    EG_MARKER,
    EG_NRINGS,
    EG_PP,
    EG_RING0,
    IN_PP,
    IN_SYNC,
    MAX_FANOUT,
    TABLE_WORDS,
)
from micronf.ports.dispatch import egress_prepare, egress_tx, ingress_rx
from micronf.ports.table import PortTable


def memory_rings(n: int, capacity: int) -> RingTable:
    """``n`` empty rings of ``capacity`` in private memory."""
    return RingTable.format(PrivateMemory(RingTable.regions("rings", n, capacity)), "rings", n, capacity)


class Egress:
    """An egress row of kind ``kind`` over ``members``, sent on as the hot loop does."""

    def __init__(self, pool: PacketPool, rings: RingTable, kind: int, members: Sequence[int]) -> None:
        self.pool, self.rings = pool, rings
        self.row = np.zeros(EG_COLS, dtype=np.int64)
        self.row[EG_KIND], self.row[EG_NRINGS] = kind, len(members)
        self.row[EG_RING0 : EG_RING0 + len(members)] = members
        self.cursor = np.zeros(1, dtype=np.int64)
        self.scratch = np.empty((MAX_FANOUT, 1024), dtype=np.uint32)

    def send(self, handles: np.ndarray, n: int) -> int:
        """How many of ``handles[0:n]`` were taken (the rest are moved to the front)."""
        egress_prepare(self.pool.arrays, self.row, handles, n)
        left = egress_tx(self.pool.arrays, self.rings.ctrl, self.rings.slots, self.row, self.cursor, 0, handles, n,
                         self.scratch)
        return n - int(left)


def receive(pool: PacketPool, rings: RingTable, ring: int, max_n: int, *, need: int = 0) -> list[int]:
    """What the ingress on ``ring`` (Sync when ``need``) releases now, up to ``max_n``."""
    out = np.empty(max_n, dtype=np.uint32)
    row = np.array([IN_SYNC if need else IN_PP, ring, need], dtype=np.int64)
    got = ingress_rx(pool.arrays, rings.ctrl, rings.slots, row, out, max_n)
    return [int(h) for h in out[:got]]


def test_point_to_point_moves_handles_in_order_and_reports_full() -> None:
    pool = PacketPool.local(16)
    rings = memory_rings(1, capacity=8)
    hs = np.arange(10, dtype=np.uint32)
    assert Egress(pool, rings, EG_PP, [0]).send(hs, 10) == 8  # only 8 fit: the caller keeps the other 2
    assert list(hs[:2]) == [8, 9]  # unsent handles are moved to the front for a retry or a drop
    assert receive(pool, rings, 0, 16) == list(range(8))
    assert receive(pool, rings, 0, 16) == []


def test_branch_admits_all_or_nothing_and_resets_sync() -> None:
    pool = PacketPool.local(64)
    rings = memory_rings(3, capacity=4)
    hs = pool.alloc(6)
    pool.arrays.words[hs, M_SYNC] = 7
    Egress(pool, rings, EG_PP, [1]).send(np.array([60], dtype=np.uint32), 1)  # branch ring 1 has one slot taken
    assert Egress(pool, rings, EG_BRANCH, [0, 1]).send(hs.copy(), 6) == 3  # ring 1 has room for 3: each gets 3
    assert receive(pool, rings, 0, 8) == list(hs[:3])
    assert receive(pool, rings, 1, 8) == [60, *hs[:3]]
    assert list(pool.arrays.words[hs[:3], M_SYNC]) == [0, 0, 0]
    assert list(pool.arrays.words[hs[3:], M_SYNC]) == [7, 7, 7]  # not sent: untouched


def test_sync_releases_only_fully_marked_packets_in_order() -> None:
    pool = PacketPool.local(64)
    rings = memory_rings(2, capacity=16)
    hs = pool.alloc(5)
    pool.arrays.words[hs, M_SYNC] = 0
    primary = Egress(pool, rings, EG_MARKER, [0])
    other = Egress(pool, rings, EG_MARK_ONLY, [])  # mark-only branch
    assert primary.send(hs.copy(), 5) == 5  # primary done with all 5 ...
    assert receive(pool, rings, 0, 8, need=2) == []  # ... but the other branch with none: nothing may pass
    assert other.send(hs[:2].copy(), 2) == 2
    assert receive(pool, rings, 0, 8, need=2) == list(hs[:2])
    assert other.send(hs[3:].copy(), 2) == 2  # packet 2 not done: 3 and 4 wait behind it (order)
    assert receive(pool, rings, 0, 8, need=2) == []
    assert other.send(hs[2:3].copy(), 1) == 1
    assert receive(pool, rings, 0, 8, need=2) == list(hs[2:])


def test_round_robin_spreads_evenly() -> None:
    pool = PacketPool.local(64)
    rings = memory_rings(3, capacity=64)
    hs = pool.alloc(30)
    assert Egress(pool, rings, EG_LB_RR, [0, 1, 2]).send(hs.copy(), 30) == 30
    got = [receive(pool, rings, r, 64) for r in range(3)]
    assert [len(g) for g in got] == [10, 10, 10]
    assert got[0] == list(hs[0::3])


def test_flow_affinity_keeps_flows_together() -> None:
    pool = PacketPool.local(600)
    rings = memory_rings(4, capacity=1024)
    hs = pool.alloc(600)
    flows = np.arange(600) % 50 + 1  # 50 flows, 12 packets each
    pool.arrays.words[hs, M_HASH] = flows * 2654435761 % 2**32
    assert Egress(pool, rings, EG_LB_FLOW, [0, 1, 2, 3]).send(hs.copy(), 600) == 600
    member_of: dict[int, set[int]] = {}
    for r in range(4):
        for h in receive(pool, rings, r, 1024):
            member_of.setdefault(int(flows[list(hs).index(h)]), set()).add(r)
    assert all(len(m) == 1 for m in member_of.values())  # every flow on exactly one instance
    assert len(Counter(next(iter(m)) for m in member_of.values())) == 4  # and all instances used


def test_jump_hash_is_consistent_when_instances_are_added() -> None:
    keys = np.random.default_rng(1).integers(1, 2**32, 20000)
    before = [jump_hash(int(k), 4) for k in keys]
    after = [jump_hash(int(k), 5) for k in keys]
    moved = sum(a != b for a, b in zip(before, after, strict=True))
    assert all(b == 4 for a, b in zip(before, after, strict=True) if a != b)  # movers go to the new one only
    assert 0.15 < moved / len(keys) < 0.25  # about 1/5
    assert sorted(Counter(after).values())[0] > 0.8 * len(keys) / 5


def test_port_table_round_trip_and_limits() -> None:
    table = PortTable.private()
    table.init(2, 3, 4)
    table.set_ingress(1, 1, 7, need=2)
    table.set_egress(2, 4, [3, 5], on_full=0)
    table.set_route(1, 3, 2)
    v = table.publish()
    snap = table.snapshot()
    assert snap.version == v
    assert snap.in_tab.tolist()[1] == [1, 7, 2]
    assert table.egress(2) == (4, 0, [3, 5])
    assert snap.route[1, 3] == 2 and snap.route[0, 0] == -2  # unrouted verdicts are "unconnected"
    with pytest.raises(ValueError, match="egress 5"):
        table.set_route(0, 0, 5)
    with pytest.raises(ValueError, match="out of range"):
        table.set_ingress(2, 0, 0)
    with pytest.raises(ValueError, match="limits"):
        table.init(9, 1, 1)
    with pytest.raises(ValueError, match="needs"):
        PortTable(np.zeros(TABLE_WORDS - 1, dtype=np.int64))
