"""Port kinds on private memory: semantics without processes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from micronf.dataplane.pool import M_HASH, M_SYNC, PacketPool
from micronf.packet.flowhash import jump_hash
from micronf.ports.base import TABLE_WORDS
from micronf.ports.branch import BranchEgress
from micronf.ports.loadbalanced import LoadBalancedEgress
from micronf.ports.marker import MarkerEgress
from micronf.ports.memory import memory_link, memory_rings
from micronf.ports.pp import PPEgress, PPIngress
from micronf.ports.sync import SyncIngress
from micronf.ports.table import PortTable


def test_memory_link_moves_handles_in_order_and_reports_full() -> None:
    tx, rx = memory_link(capacity=8)
    hs = np.arange(10, dtype=np.uint32)
    assert tx.tx_burst(hs, 10) == 8  # only 8 fit: the caller keeps the other 2
    assert list(hs[:2]) == [8, 9]  # unsent handles are moved to the front for a retry or a drop
    out = np.empty(16, dtype=np.uint32)
    assert rx.rx_burst(out, 16) == 8
    assert list(out[:8]) == list(range(8))
    assert rx.rx_burst(out, 16) == 0


def test_branch_admits_all_or_nothing_and_resets_sync() -> None:
    pool = PacketPool.local(64)
    rings = memory_rings(3, capacity=4)
    hs = pool.alloc(6)
    pool.arrays.words[hs, M_SYNC] = 7
    PPEgress(rings, 1).tx_burst(np.array([60], dtype=np.uint32), 1)  # branch ring 1 has one slot taken
    branch = BranchEgress(pool.arrays, rings, [0, 1])
    assert branch.tx_burst(hs.copy(), 6) == 3  # ring 1 has room for 3: every branch gets exactly 3
    out = np.empty(8, dtype=np.uint32)
    assert list(out[: PPIngress(rings, 0).rx_burst(out, 8)]) == list(hs[:3])
    assert list(out[: PPIngress(rings, 1).rx_burst(out, 8)]) == [60, *hs[:3]]
    assert list(pool.arrays.words[hs[:3], M_SYNC]) == [0, 0, 0]
    assert list(pool.arrays.words[hs[3:], M_SYNC]) == [7, 7, 7]  # not sent: untouched


def test_sync_releases_only_fully_marked_packets_in_order() -> None:
    pool = PacketPool.local(64)
    rings = memory_rings(2, capacity=16)
    hs = pool.alloc(5)
    pool.arrays.words[hs, M_SYNC] = 0
    primary = MarkerEgress(pool.arrays, rings, 0)
    other = MarkerEgress(pool.arrays, rings, None)  # mark-only branch
    sync = SyncIngress(pool.arrays, rings, 0, need=2)
    out = np.empty(8, dtype=np.uint32)
    assert primary.tx_burst(hs.copy(), 5) == 5  # primary done with all 5 ...
    assert sync.rx_burst(out, 8) == 0  # ... but the other branch with none: nothing may pass
    assert other.tx_burst(hs[:2].copy(), 2) == 2
    assert sync.rx_burst(out, 8) == 2 and list(out[:2]) == list(hs[:2])
    assert other.tx_burst(hs[3:].copy(), 2) == 2  # packet 2 not done: 3 and 4 wait behind it (order)
    assert sync.rx_burst(out, 8) == 0
    assert other.tx_burst(hs[2:3].copy(), 1) == 1
    assert sync.rx_burst(out, 8) == 3 and list(out[:3]) == list(hs[2:])


def test_round_robin_spreads_evenly() -> None:
    pool = PacketPool.local(64)
    rings = memory_rings(3, capacity=64)
    lb = LoadBalancedEgress(pool.arrays, rings, [0, 1, 2], by_flow=False)
    hs = pool.alloc(30)
    assert lb.tx_burst(hs.copy(), 30) == 30
    out = np.empty(64, dtype=np.uint32)
    got = [list(out[: PPIngress(rings, r).rx_burst(out, 64)]) for r in range(3)]
    assert [len(g) for g in got] == [10, 10, 10]
    assert got[0] == list(hs[0::3])


def test_flow_affinity_keeps_flows_together() -> None:
    pool = PacketPool.local(600)
    rings = memory_rings(4, capacity=1024)
    lb = LoadBalancedEgress(pool.arrays, rings, [0, 1, 2, 3], by_flow=True)
    hs = pool.alloc(600)
    flows = np.arange(600) % 50 + 1  # 50 flows, 12 packets each
    pool.arrays.words[hs, M_HASH] = flows * 2654435761 % 2**32
    assert lb.tx_burst(hs.copy(), 600) == 600
    out = np.empty(1024, dtype=np.uint32)
    member_of: dict[int, set[int]] = {}
    for r in range(4):
        for h in out[: PPIngress(rings, r).rx_burst(out, 1024)]:
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
