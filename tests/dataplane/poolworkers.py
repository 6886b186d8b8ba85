"""Compiled owner/client loops for the concurrent pool accounting test."""

from __future__ import annotations

import numpy as np
from numba import njit

from micronf.dataplane.atomics import load_acquire, sched_yield, store_release
from micronf.dataplane.pool import C_FREE_TOP, pool_alloc, pool_free
from micronf.dataplane.ring import ring_count, ring_dequeue, ring_enqueue


@njit(cache=True)
def owner_alloc_loop(p, ring_ctrl, ring_slots, ctl, total, seed, out):
    """Allocate random bursts and deal them to the clients' rings until ``total`` are dealt, checking
    after every burst that free + queued in the deal rings never exceeds the capacity.
    out = [dealt, failed checks, exhaustion events, 0]. Finally sets ctl[1] = dealt so clients stop."""
    np.random.seed(seed)
    n_slots = p.free.shape[0]
    buf = np.empty(64, dtype=np.uint32)
    dealt = 0
    bad = 0
    exhausted = 0
    c = 0
    while dealt < total:
        want = np.random.randint(1, 65)
        k = pool_alloc(p, buf, want)
        if k < want:
            exhausted += 1
        sent = 0
        while sent < k:
            sent += ring_enqueue(ring_ctrl[c], ring_slots[c], buf[sent:], k - sent)
            if sent < k:
                sched_yield()
        dealt += k
        c = (c + 1) % ring_ctrl.shape[0]
        # Read the free side first: a handle moving from a deal ring to a return ring meanwhile is
        # then counted at most once, so free + queued <= capacity must hold exactly.
        free_now = p.ctrl[C_FREE_TOP]
        for r in range(p.ret_ctrl.shape[0]):
            free_now += ring_count(p.ret_ctrl[r])
        queued = 0
        for r in range(ring_ctrl.shape[0]):
            queued += ring_count(ring_ctrl[r])
        if free_now + queued > n_slots or free_now < 0:
            bad += 1
    store_release(ctl, 1, dealt)
    out[0] = dealt
    out[1] = bad
    out[2] = exhausted


@njit(cache=True)
def client_free_loop(p, client, in_ctrl, in_slots, ctl, seed, out):
    """Take handles from the owner's ring and free them in random bursts through return ring
    ``client`` until the owner is done and the ring is drained. out = [freed, out-of-range handles]."""
    np.random.seed(seed)
    n_slots = p.free.shape[0]
    buf = np.empty(64, dtype=np.uint32)
    freed = 0
    bad = 0
    while True:
        n = ring_dequeue(in_ctrl, in_slots, buf, np.random.randint(1, 65))
        if n == 0:
            done = load_acquire(ctl, 1)
            if done > 0 and ring_count(in_ctrl) == 0:
                break
            sched_yield()
            continue
        for i in range(n):
            if buf[i] >= n_slots:
                bad += 1
        freed += pool_free(p, client, buf, n)
    out[0] = freed
    out[1] = bad
