"""The compiled pieces of the µNF hot loop that do not depend on the µNF: routing and accounting.

The loop itself is generated per process (``micronf.runtime.codegen``) so it can call each µNF's
kernel as a compile-time constant (numba caches it then); everything generic lives here:

- :func:`route_batch` turns one verdict per packet into egress bursts through the ingress→egress
  mapping table (§IV-C3), applies each egress's full policy, returns dropped buffers to the pool
  and counts everything, so that at every return to Python
  ``rx == tx + dropped + unconnected + full + bad_verdict`` holds for the stage. It is inlined
  into the generated loop (a process's last µNF routes every batch), and sends a batch whose
  verdicts are all one label to a ring egress from where it is, without the per-packet pass;
  :func:`route_batch_call` is the same as a call, for the stages before the last.
- :func:`pass_local` is the free hand-off between fused µNFs: when every verdict of a batch is the
  label routed to the next fused µNF (the common case in a chain), it counts the batch as
  :func:`route_batch` would, in a few additions instead of per packet, and the generated loop runs
  the next kernel on the same handles array (no routing, no copy). Measured on a fused chain of
  IPTtlDecrementers: each further µNF cost ~25 cycles/packet with the per-packet routing step.
- :func:`prefetch_range` is the §V-A cache prefetch; the generated loop pipelines it: with
  ``prefetch = k`` it prefetches the first k frames, then runs the kernel on k packets at a time
  while the next k are being fetched.

Runtime counters (int64, in shared memory, one block per µNF, written only by its process) are
laid out by the ``RC_*`` constants.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.atomics import load_acquire, prefetch, sched_yield
from micronf.dataplane.pool import DATA_OFF, PoolArrays, pool_free
from micronf.ports.base import (
    EG_KIND,
    EG_LOCAL,
    EG_ON_FULL,
    FULL_WAIT,
    MAX_EG,
    MAX_VERDICTS,
    ROUTE_FREE,
    ROUTE_UNCONNECTED,
)
from micronf.ports.dispatch import egress_prepare, egress_tx
from micronf.ports.pp import RingCtrl, RingSlots

RC_RX = 0  # packets received
RC_TX = 1  # packets handed to an egress (or to the next fused µNF)
RC_DROPPED = 2  # drop verdicts whose buffer was freed
RC_UNCONNECTED = 3  # labels with no link
RC_FULL = 4  # packets an egress could not take (drop policy, or stop while waiting)
RC_BATCHES = 5
RC_IDLE = 6  # polls that found every ingress empty
RC_BAD_VERDICT = 7  # a kernel wrote a verdict outside its labels/drop reasons
RC_CYCLES = 8  # CPU cycles in kernel + routing
RC_YIELDS = 9
RC_IDLE_RUN = 10  # empty polls in a row right now (the loop's idle backoff state, kept across calls)
RC_VERDICT0 = 16  # + verdict column: packets per label / drop reason
RC_EG_SENT0 = RC_VERDICT0 + MAX_VERDICTS  # + egress: packets sent
RC_EG_FULL0 = RC_EG_SENT0 + MAX_EG  # + egress: packets that did not fit
RC_WORDS = RC_EG_FULL0 + MAX_EG
RC_NAMES = {"rx": RC_RX, "tx": RC_TX, "dropped": RC_DROPPED, "unconnected": RC_UNCONNECTED, "full": RC_FULL,
            "batches": RC_BATCHES, "idle_polls": RC_IDLE, "bad_verdict": RC_BAD_VERDICT, "cycles": RC_CYCLES,
            "yields": RC_YIELDS}

Handles = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]


class StageArrays(NamedTuple):
    """Everything the hot loop needs for one µNF of a process (built by ``micronf.runtime.stage``)."""

    in_tab: I64  # [n_in, IN_COLS]
    eg_tab: I64  # [n_eg, EG_COLS]
    route: I64  # [max(n_in, 1), n_verdicts]
    n_labels: int
    cursor: I64  # [MAX_EG] load-balancer positions
    rc: I64  # runtime counters (shared memory)
    handles: Handles  # [burst] this stage's input batch
    verdicts: npt.NDArray[np.int32]  # [burst]
    staging: npt.NDArray[np.uint32]  # [MAX_EG, burst] per-egress bursts
    counts: I64  # [MAX_EG]
    scratch: npt.NDArray[np.uint32]  # [MAX_FANOUT, burst] load-balancer buckets
    freebuf: Handles  # [burst]
    nfc: I64  # the µNF's own counters (shared memory)
    local_col: I64  # [max(n_in, 1)] per ingress: the label column routed to the next fused µNF, -1 if none


@njit(cache=True, nogil=True)
def prefetch_range(p: PoolArrays, handles: Handles, begin: int, end: int) -> None:
    """Prefetch the metadata line and the first three frame lines (Ethernet/IP/TCP headers and the
    start of the payload) of ``handles[begin:end]`` (§V-A). The frames were written by the Rx
    service, often on another core: each line is a cross-core transfer the kernels would stall on."""
    for i in range(begin, end):
        slot = p.data[handles[i]]
        prefetch(slot, 0)
        prefetch(slot, DATA_OFF)
        prefetch(slot, DATA_OFF + 64)
        prefetch(slot, DATA_OFF + 128)


@njit(cache=True, nogil=True, inline="always")
def uniform_label(verdicts: npt.NDArray[np.int32], n: int, n_labels: int) -> int:
    """The label every verdict of ``verdicts[0:n]`` is, or -1 (none: mixed, a drop, or ``n == 0``)."""
    if n == 0:
        return -1
    first = verdicts[0]
    diff = np.int32(0)
    for i in range(n):  # no early exit: the loop vectorizes, and the common case reads every verdict anyway
        diff |= verdicts[i] ^ first
    return int(first) if diff == 0 and 0 <= first < n_labels else -1


@njit(cache=True, nogil=True, inline="always")  # a call would copy the whole stage tuple, per batch
def pass_local(s: StageArrays, n: int, ingress: int) -> bool:
    """True when every verdict of ``s.verdicts[0:n]`` is the label routed from ``ingress`` to the next
    fused µNF (``s.local_col``); the batch is then counted exactly as :func:`route_batch` counts it
    (verdict column, egress sent, tx) and the packets stay where they are, for the next kernel.
    False (nothing counted) otherwise: the caller routes the batch with :func:`route_batch`."""
    col = s.local_col[ingress]
    if col < 0 or uniform_label(s.verdicts, n, s.n_labels) != col:
        return False
    rc = s.rc
    rc[RC_VERDICT0 + col] += n
    rc[RC_EG_SENT0 + s.route[ingress, col]] += n
    rc[RC_TX] += n
    return True


@njit(cache=True, nogil=True, inline="always")  # a call would copy the pool's and the stage's tuples, per batch
def route_batch(p: PoolArrays, rctrl: RingCtrl, rslots: RingSlots, s: StageArrays, handles: Handles, n: int,
                ingress: int, local_out: Handles, client: int, ctl: I64, stop_word: int) -> int:
    """Route ``handles[0:n]`` (the stage's batch: its own ``s.handles``, or the array an earlier fused
    µNF passed on whole) by ``s.verdicts``; returns how many went to ``local_out`` (fused next µNF).

    A batch whose verdicts are all one label routed to a ring egress (what a process's last µNF
    sends, most batches) goes out from where it is: no per-packet pass, no staging copy. With the
    inlining, a process's last µNF costs ~10 cycles/packet less (IPTtlDecrementer alone: ~25 -> ~15).

    The generated loop, its only caller (directly or through :func:`route_batch_call`), passes
    borrowed arrays (``micronf.dataplane.borrow``), so the egress and ring calls made here per
    batch count no references."""
    rc = s.rc
    label = uniform_label(s.verdicts, n, s.n_labels)
    whole = s.route[ingress, label] if label >= 0 else ROUTE_FREE
    if whole >= 0 and s.eg_tab[whole, EG_KIND] != EG_LOCAL:
        rc[RC_VERDICT0 + label] += n
        nfree = _send(p, rctrl, rslots, s, whole, handles, n, ctl, stop_word, 0)
        if nfree > 0:
            pool_free(p, client, s.freebuf, nfree)
        return 0
    n_cols = s.route.shape[1]
    nfree = 0
    nlocal = 0
    for i in range(n):
        h = handles[i]
        v = np.int64(s.verdicts[i])
        col = v if v >= 0 else s.n_labels - 1 - v
        if col < 0 or col >= n_cols:
            rc[RC_BAD_VERDICT] += 1
            s.freebuf[nfree] = h
            nfree += 1
            continue
        rc[RC_VERDICT0 + col] += 1
        e = s.route[ingress, col]
        if e >= 0:
            if s.eg_tab[e, EG_KIND] == EG_LOCAL:
                local_out[nlocal] = h
                nlocal += 1
                rc[RC_EG_SENT0 + e] += 1
            else:
                s.staging[e, s.counts[e]] = h
                s.counts[e] += 1
        else:
            s.freebuf[nfree] = h
            nfree += 1
            if e == ROUTE_UNCONNECTED:
                rc[RC_UNCONNECTED] += 1
            else:
                rc[RC_DROPPED] += 1
    rc[RC_TX] += nlocal
    for e in range(s.eg_tab.shape[0]):
        c = s.counts[e]
        if c == 0:
            continue
        s.counts[e] = 0
        nfree = _send(p, rctrl, rslots, s, e, s.staging[e], c, ctl, stop_word, nfree)
    if nfree > 0:
        pool_free(p, client, s.freebuf, nfree)
    return nlocal


@njit(cache=True, nogil=True)
def route_batch_call(p: PoolArrays, rctrl: RingCtrl, rslots: RingSlots, s: StageArrays, handles: Handles, n: int,
                     ingress: int, local_out: Handles, client: int, ctl: I64, stop_word: int) -> int:
    """:func:`route_batch` as a call, for the stages before a process's last: most of their batches
    are handed on by :func:`pass_local`, and an inlined copy per stage costs seconds of compilation."""
    nlocal: int = route_batch(p, rctrl, rslots, s, handles, n, ingress, local_out, client, ctl, stop_word)
    return nlocal


@njit(cache=True, nogil=True, inline="always")
def _send(p: PoolArrays, rctrl: RingCtrl, rslots: RingSlots, s: StageArrays, e: int, burst: Handles, c: int,
          ctl: I64, stop_word: int, nfree: int) -> int:
    """Send ``burst[0:c]`` on egress ``e`` with its full policy (wait, or give up what did not fit
    into ``s.freebuf`` after the ``nfree`` already there) and count it; returns the new ``nfree``."""
    rc = s.rc
    row = s.eg_tab[e]
    egress_prepare(p, row, burst, c)
    left = egress_tx(p, rctrl, rslots, row, s.cursor, e, burst, c, s.scratch)
    if left > 0 and row[EG_ON_FULL] == FULL_WAIT:
        while left > 0 and load_acquire(ctl, stop_word) == 0:
            sched_yield()
            rc[RC_YIELDS] += 1
            left = egress_tx(p, rctrl, rslots, row, s.cursor, e, burst, left, s.scratch)
    for j in range(left):
        s.freebuf[nfree] = burst[j]
        nfree += 1
    rc[RC_FULL] += left
    rc[RC_EG_FULL0 + e] += left
    rc[RC_EG_SENT0 + e] += c - left
    rc[RC_TX] += c - left
    return nfree
