"""Packet pool: metadata round trip across processes, alloc/free accounting under concurrent
processes, and exhaustion (counted, never a crash or a hang)."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from micronf.dataplane.pool import (
    DATA_OFF,
    DEFAULT_FRAME_CAPACITY,
    JUMBO_FRAME_CAPACITY,
    M_DATA_OFF,
    M_HASH,
    M_LEN,
    M_PORT,
    M_SFC,
    M_SYNC,
    M_VERDICT,
    Q_RX_TIME,
    PacketPool,
    slot_size_for,
)
from micronf.dataplane.ring import RingTable
from micronf.dataplane.segment import Segment

from .poolworkers import client_free_loop, owner_alloc_loop

FORK = mp.get_context("fork")


def _make(seg_name: str, n_slots: int, n_clients: int = 2, rings: int = 0, cap: int = 1024) -> Segment:
    regions = PacketPool.regions("pool", n_slots, n_clients=n_clients)
    if rings:
        regions |= RingTable.regions("rings", rings, cap)
    seg = Segment.create(seg_name, regions)
    PacketPool.format(seg, "pool", n_slots, n_clients=n_clients)
    if rings:
        RingTable.format(seg, "rings", rings, cap)
    return seg


def test_geometry_and_fresh_slots(seg_name: str) -> None:
    with _make(seg_name, 100) as seg:
        pool = PacketPool.attach(seg, "pool")
        # the default capacity: a 1518-byte frame + one VLAN tag; 192 + 1522 bytes -> 27 cache lines
        assert (pool.n_slots, pool.slot_size, pool.n_clients, pool.max_frame) == (100, 27 * 64, 2, 1522)
        s = pool.stats()
        assert (s.capacity, s.free, s.in_use, s.allocated, s.alloc_failures) == (100, 100, 0, 0, 0)
        hs = pool.alloc(100)
        assert sorted(hs.tolist()) == list(range(100))  # every slot exactly once
        assert all(int(pool.arrays.words[h, M_DATA_OFF]) == DATA_OFF for h in hs)


def test_metadata_and_frame_round_trip_between_processes(seg_name: str) -> None:
    frame = bytes(range(256)) * 5 + b"tail"

    def writer(name: str) -> None:
        seg = Segment.attach(name)
        pool = PacketPool.attach(seg, "pool")
        (h,) = pool.alloc(1)
        w = pool.arrays.words[h]
        w[M_PORT], w[M_HASH], w[M_VERDICT], w[M_SYNC], w[M_SFC] = 3, 0xDEADBEEF, 7, 2, (42 << 8) | 255
        pool.arrays.qwords[h, Q_RX_TIME] = -(2**62) + 5
        pool.write_frame(int(h), frame)

    with _make(seg_name, 16) as seg:
        proc = FORK.Process(target=writer, args=(seg_name,))
        proc.start()
        proc.join(30)
        assert proc.exitcode == 0
        pool = PacketPool.attach(seg, "pool")
        h = 0  # the first allocation returns handle 0
        w = pool.arrays.words[h]
        assert (int(w[M_LEN]), int(w[M_PORT]), int(w[M_HASH]), int(w[M_VERDICT])) == (len(frame), 3, 0xDEADBEEF, 7)
        assert (int(w[M_SYNC]), int(w[M_SFC])) == (2, (42 << 8) | 255)
        assert int(pool.arrays.qwords[h, Q_RX_TIME]) == -(2**62) + 5
        assert pool.read_frame(h) == frame
        assert pool.stats().in_use == 1


def test_frames_that_do_not_fit_are_refused(seg_name: str) -> None:
    with _make(seg_name, 4) as seg:
        pool = PacketPool.attach(seg, "pool")
        (h,) = pool.alloc(1)
        with pytest.raises(ValueError, match="exceeds"):
            pool.write_frame(int(h), b"x" * (pool.max_frame + 1))
        pool.write_frame(int(h), b"x" * pool.max_frame)
        assert pool.read_frame(int(h)) == b"x" * pool.max_frame


def test_exhaustion_is_counted_and_recovers(seg_name: str) -> None:
    with _make(seg_name, 64) as seg:
        pool = PacketPool.attach(seg, "pool")
        first = pool.alloc(50)
        second = pool.alloc(50)  # only 14 left: a short allocation, not an error
        assert (len(first), len(second)) == (50, 14)
        assert len(pool.alloc(10)) == 0
        s = pool.stats()
        assert (s.free, s.in_use, s.alloc_failures, s.allocated) == (0, 64, 36 + 10, 64)
        assert pool.free(second, client=1) == 14  # returned through a client's return ring
        assert pool.stats().free == 14
        again = pool.alloc(20)  # the owner reclaims the return ring when its stack runs short
        assert sorted(again.tolist()) == sorted(second.tolist())
        assert pool.stats().alloc_failures == 46 + 6


def test_double_free_is_counted_not_corrupting(seg_name: str) -> None:
    with _make(seg_name, 8) as seg:
        pool = PacketPool.attach(seg, "pool")
        hs = pool.alloc(8)
        assert pool.free(hs) == 8
        assert pool.free(hs[:3]) == 0  # the stack is full: these can only be double frees
        assert pool.stats().free_errors == 3
        assert pool.stats().free == 8


def test_bad_client_and_geometry_are_rejected(seg_name: str) -> None:
    with _make(seg_name, 8) as seg:
        pool = PacketPool.attach(seg, "pool")
        with pytest.raises(ValueError, match="client 5 out of range"):
            pool.free(pool.alloc(1), client=5)
    for kwargs in ({"n_slots": 0}, {"n_slots": 8, "frame_capacity": 63}, {"n_slots": 8, "frame_capacity": 65536},
                   {"n_slots": 8, "n_clients": 0}):
        with pytest.raises(ValueError):
            PacketPool.regions("pool", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("capacity", [64, 1500, DEFAULT_FRAME_CAPACITY, 9000, JUMBO_FRAME_CAPACITY, 65535])
def test_slot_size_follows_the_frame_capacity(capacity: int) -> None:
    """Slots hold metadata + headroom + the capacity, in an odd number of whole cache lines (the
    stride then spreads the slots' metadata lines over every cache set), and no more than needed."""
    size = slot_size_for(capacity)
    assert size % 64 == 0 and (size // 64) % 2 == 1
    assert DATA_OFF + capacity <= size < DATA_OFF + capacity + 128
    pool = PacketPool.local(4, capacity)
    assert (pool.slot_size, pool.max_frame) == (size, capacity)
    (h,) = pool.alloc(1)
    frame = bytes(range(256)) * (capacity // 256) + bytes(capacity % 256)
    pool.write_frame(int(h), frame)
    assert pool.read_frame(int(h)) == frame
    with pytest.raises(ValueError, match="frame capacity"):
        pool.write_frame(int(h), frame + b"x")


def _client(name: str, client: int, ring: int, seed: int, result: mp.Queue[list[int]]) -> None:
    seg = Segment.attach(name)
    pool = PacketPool.attach(seg, "pool")
    rings = RingTable.attach(seg, "rings")
    out = np.zeros(2, dtype=np.int64)
    client_free_loop(pool.arrays, client, rings.ctrl[ring], rings.slots[ring], seg.view("ctl", np.int64), seed, out)
    result.put([int(x) for x in out])


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_alloc_free_accounting_under_concurrent_processes(seg_name: str) -> None:
    """The owner allocates and deals handles to 3 client processes which free them through their
    own return rings in random bursts; every handle is accounted for at every step and at the end."""
    n_slots, n_clients, rounds = 256, 3, 1_000_000  # far fewer slots than the deal rings hold: it runs dry
    regions = PacketPool.regions("pool", n_slots, n_clients=n_clients)
    regions |= RingTable.regions("rings", n_clients, 1024)
    regions["ctl"] = 64
    with Segment.create(seg_name, regions) as seg:
        pool = PacketPool.format(seg, "pool", n_slots, n_clients=n_clients)
        rings = RingTable.format(seg, "rings", n_clients, 1024)
        ctl = seg.view("ctl", np.int64)
        results: mp.Queue[list[int]] = FORK.Queue()
        procs = [FORK.Process(target=_client, args=(seg_name, c, c, 10 + c, results)) for c in range(n_clients)]
        for p in procs:
            p.start()
        owner_out = np.zeros(4, dtype=np.int64)
        try:
            owner_alloc_loop(pool.arrays, rings.ctrl, rings.slots, ctl, rounds, 7, owner_out)
            freed = [results.get(timeout=150) for _ in procs]
        finally:
            ctl[0] = 1
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
        dealt, checks_failed, exhausted, _ = (int(x) for x in owner_out)
        total_freed = sum(f[0] for f in freed)
        stats = pool.stats()
        assert dealt >= rounds
        assert checks_failed == 0  # in-flight accounting held after every burst
        assert exhausted > 0  # the clients were slow enough for the pool to run dry at times
        assert total_freed == dealt and stats.allocated == dealt
        assert (stats.free, stats.in_use, stats.free_errors) == (n_slots, 0, 0)
        assert all(f[1] == 0 for f in freed)  # no handle seen out of range by a client
        # all handles are back exactly once: drain everything and compare
        everything = pool.alloc(n_slots)
        assert sorted(everything.tolist()) == list(range(n_slots))
        del pool, rings, ctl, everything
