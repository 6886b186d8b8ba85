"""Compiled producer/consumer loops used by the multi-process ring and pool tests."""

from __future__ import annotations

import numpy as np
from numba import njit

from micronf.dataplane.atomics import cycles, sched_yield
from micronf.dataplane.ring import ring_dequeue, ring_enqueue


@njit(cache=True)
def _delay(n_cycles):
    if n_cycles > 0:
        t0 = cycles()
        while cycles() - t0 < n_cycles:
            pass


@njit(cache=True)
def produce(ctrl, slots, total, seed, max_burst, delay_cycles, out):
    """Enqueue the sequence 0..total-1 (mod 2**32) in random bursts; out = [sent, times found full]."""
    np.random.seed(seed)
    buf = np.empty(max_burst, dtype=np.uint32)
    seq = 0
    full = 0
    while seq < total:
        n = min(np.random.randint(1, max_burst + 1), total - seq)
        for i in range(n):
            buf[i] = (seq + i) & 0xFFFFFFFF
        sent = 0
        while sent < n:
            k = ring_enqueue(ctrl, slots, buf[sent:], n - sent)
            if k < 0 or k > n - sent:
                out[0] = -1
                return
            sent += k
            if sent < n:
                full += 1
                sched_yield()
        seq += n
        _delay(delay_cycles)
    out[0] = seq
    out[1] = full


@njit(cache=True)
def consume(ctrl, slots, total, seed, max_burst, delay_cycles, out):
    """Dequeue ``total`` handles in random bursts, checking order.

    out = [received, errors, first_bad, times found empty]."""
    np.random.seed(seed)
    buf = np.empty(max_burst, dtype=np.uint32)
    expect = 0
    errors = 0
    first_bad = -1
    empty = 0
    while expect < total:
        n = ring_dequeue(ctrl, slots, buf, np.random.randint(1, max_burst + 1))
        if n == 0:
            empty += 1
            sched_yield()
            continue
        for i in range(n):
            if buf[i] != ((expect + i) & 0xFFFFFFFF):
                errors += 1
                if first_bad < 0:
                    first_bad = expect + i
        expect += n
        _delay(delay_cycles)
    out[0] = expect
    out[1] = errors
    out[2] = first_bad
    out[3] = empty
