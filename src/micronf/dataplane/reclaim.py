"""Find the packet buffers a crashed µNF held, and give them back.

When a µNF process dies, the batch it had dequeued (up to a burst of handles) is in no ring and
in no free list: lost, unless someone accounts for it. The supervisor pauses every other process
of the graph (each finishes the batch in hand, so no process holds a handle between batches)
and then every buffer is in exactly one of these places: the pool's free stack, a pool return
ring, or a graph ring. :func:`mark_reachable` marks them all; the unmarked ones are the dead
process's and go back on the free stack. This costs one pass over the rings (microseconds to a
few ms) and nothing at all on the packet path — no per-packet ownership tags.

Parallel branches (§V-B) need one more step: a packet the dead branch had taken sits in the
Sync ring waiting for a mark that will never come, blocking every packet behind it.
:func:`complete_sync_marks` gives it the missing mark: branches are read-only and never drop, so
the packet itself is unchanged (only the dead branch's counters miss it).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.pool import C_FREE_TOP, M_SYNC, PoolArrays, pool_free_owner
from micronf.dataplane.ring import CAP, HEAD, MASK, TAIL

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]


@njit(cache=True, nogil=True)
def _mark_ring(ctrl: I64, slots: U32, mark: U8) -> None:
    head, tail, mask = ctrl[HEAD], ctrl[TAIL], ctrl[MASK]
    for i in range(tail, head):
        mark[slots[i & mask]] = 1


@njit(cache=True, nogil=True)
def mark_reachable(p: PoolArrays, rctrl: I64, rslots: U32, mark: U8) -> None:
    """``mark[h] = 1`` for every handle on the free stack, in a return ring or in a graph ring."""
    for i in range(p.ctrl[C_FREE_TOP]):
        mark[p.free[i]] = 1
    for r in range(p.ret_ctrl.shape[0]):
        _mark_ring(p.ret_ctrl[r], p.ret_slots[r], mark)
    for r in range(rctrl.shape[0]):
        if rctrl[r, CAP] > 0:
            _mark_ring(rctrl[r], rslots[r], mark)


@njit(cache=True, nogil=True)
def free_unmarked(p: PoolArrays, mark: U8, scratch: U32) -> int:
    """Push every unmarked handle back on the free stack; returns how many."""
    n = 0
    for h in range(mark.shape[0]):
        if mark[h] == 0:
            scratch[n] = h
            n += 1
    if n:
        pool_free_owner(p, scratch, n)
    return n


@njit(cache=True, nogil=True)
def complete_sync_marks(p: PoolArrays, rctrl: I64, rslots: U32, sync_ring: int, need: int, branch_rings: I64) -> int:
    """Give packets waiting in ``sync_ring`` that no branch holds any more their missing marks."""
    held = np.zeros(p.free.shape[0], dtype=np.uint8)
    for b in range(branch_rings.shape[0]):
        _mark_ring(rctrl[branch_rings[b]], rslots[branch_rings[b]], held)
    ctrl = rctrl[sync_ring]
    fixed = 0
    for i in range(ctrl[TAIL], ctrl[HEAD]):
        h = rslots[sync_ring][i & ctrl[MASK]]
        if p.words[h, M_SYNC] < need and held[h] == 0:
            p.words[h, M_SYNC] = need
            fixed += 1
    return fixed


def warm() -> None:
    """Compile (or load) the kernels now, on a private pool: a restart must not wait for numba."""
    from micronf.dataplane.pool import PacketPool
    from micronf.dataplane.ring import CTRL_WORDS

    pool = PacketPool.local(8)
    rctrl = np.zeros((1, CTRL_WORDS), dtype=np.int64)
    rslots = np.zeros((1, 2), dtype=np.uint32)
    reclaim(pool.arrays, rctrl, rslots)
    complete_sync_marks(pool.arrays, rctrl, rslots, 0, 1, np.zeros(0, dtype=np.int64))


def reclaim(p: PoolArrays, rctrl: I64, rslots: U32) -> int:
    """Return every unreachable buffer to the pool (the graph must be paused); returns the count."""
    n_slots = p.free.shape[0]
    mark = np.zeros(n_slots, dtype=np.uint8)
    mark_reachable(p, rctrl, rslots, mark)
    return int(free_unmarked(p, mark, np.empty(n_slots, dtype=np.uint32)))
