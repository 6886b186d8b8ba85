"""SPSC ring: single-process semantics, and >= 10 M handles between two real processes."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from micronf.dataplane.ring import CTRL_WORDS, Ring, RingTable, next_pow2, ring_count, ring_init
from micronf.dataplane.segment import Segment

from .ringworkers import consume, produce

FORK = mp.get_context("fork")


def _local_ring(capacity: int) -> Ring:
    ctrl = np.zeros(CTRL_WORDS, dtype=np.int64)
    ring_init(ctrl, capacity)
    return Ring(ctrl, np.zeros(capacity, dtype=np.uint32))


def test_fill_drain_and_wrap() -> None:
    ring = _local_ring(8)
    assert ring.enqueue(np.arange(5)) == 5
    assert ring.enqueue(np.arange(5, 12)) == 3  # only 3 fit: returns how many
    assert len(ring) == 8
    assert ring.enqueue([99]) == 0
    assert list(ring.dequeue(6)) == [0, 1, 2, 3, 4, 5]
    assert ring.enqueue([100, 101, 102]) == 3  # wraps around the end of the slot array
    assert list(ring.dequeue(100)) == [6, 7, 100, 101, 102]
    assert len(ring.dequeue(4)) == 0 and len(ring) == 0


def test_zero_and_negative_bursts_are_noops() -> None:
    ring = _local_ring(4)
    assert ring.enqueue(np.empty(0)) == 0
    assert len(ring.dequeue(0)) == 0
    assert int(ring_count(ring.ctrl)) == 0


@pytest.mark.parametrize("capacity", [0, 1, 3, 100])
def test_capacity_must_be_a_power_of_two(capacity: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        ring_init(np.zeros(CTRL_WORDS, dtype=np.int64), capacity)


def test_next_pow2() -> None:
    assert [next_pow2(n) for n in (0, 1, 2, 3, 1000, 1024, 1025)] == [2, 2, 2, 4, 1024, 1024, 2048]


def test_control_block_layout_keeps_producer_and_consumer_lines_apart() -> None:
    from micronf.dataplane import ring as r

    lines = {name: getattr(r, name) * 8 // 128 for name in ("CAP", "MASK", "HEAD", "HEAD_SEEN_TAIL",
                                                                  "TAIL", "TAIL_SEEN_HEAD")}
    assert lines["CAP"] == lines["MASK"] == 0
    assert lines["HEAD"] == lines["HEAD_SEEN_TAIL"] == 1
    assert lines["TAIL"] == lines["TAIL_SEEN_HEAD"] == 2


def _producer(name: str, total: int, seed: int, burst: int, delay: int, result: mp.Queue[list[int]]) -> None:
    seg = Segment.attach(name)
    table = RingTable.attach(seg, "r")
    out = np.zeros(2, dtype=np.int64)
    produce(table.ctrl[0], table.slots[0], total, seed, burst, delay, out)
    result.put([int(x) for x in out])


def _consumer(name: str, total: int, seed: int, burst: int, delay: int, result: mp.Queue[list[int]]) -> None:
    seg = Segment.attach(name)
    table = RingTable.attach(seg, "r")
    out = np.zeros(4, dtype=np.int64)
    consume(table.ctrl[0], table.slots[0], total, seed, burst, delay, out)
    result.put([int(x) for x in out])


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("case", "capacity", "producer_delay", "consumer_delay"),
    [
        ("balanced", 256, 0, 0),
        ("consumer-slower", 64, 0, 2000),  # the ring is mostly full
        ("producer-slower", 64, 2000, 0),  # the ring is mostly empty
    ],
)
def test_ten_million_handles_between_two_processes(
    seg_name: str, case: str, capacity: int, producer_delay: int, consumer_delay: int
) -> None:
    total = 10_000_000
    # warm the numba cache in the parent so the children load instead of compiling
    warm = _local_ring(4)
    produce(warm.ctrl, warm.slots, 0, 0, 4, 0, np.zeros(2, dtype=np.int64))
    consume(warm.ctrl, warm.slots, 0, 0, 4, 0, np.zeros(4, dtype=np.int64))
    with Segment.create(seg_name, RingTable.regions("r", 1, capacity)) as seg:
        table = RingTable.format(seg, "r", 1, capacity)
        produced: mp.Queue[list[int]] = FORK.Queue()
        consumed: mp.Queue[list[int]] = FORK.Queue()
        procs = [
            FORK.Process(target=_producer, args=(seg_name, total, 1, 97, producer_delay, produced)),
            FORK.Process(target=_consumer, args=(seg_name, total, 2, 61, consumer_delay, consumed)),
        ]
        for p in procs:
            p.start()
        try:
            sent, found_full = produced.get(timeout=150)
            received, errors, first_bad, found_empty = consumed.get(timeout=150)
        finally:
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
        assert sent == total
        assert (received, errors, first_bad) == (total, 0, -1)
        assert len(table[0]) == 0
        # the scenario really happened: the slow side made the other one wait, often
        if case == "consumer-slower":
            assert found_full > total // 1000
        if case == "producer-slower":
            assert found_empty > total // 1000
        assert all(p.exitcode == 0 for p in procs)
        del table
