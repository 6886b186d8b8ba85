"""Compiled dispatch from a port-table row to the port kind's kernel (used by the µNF hot loop)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.pool import PoolArrays
from micronf.ports.base import (
    EG_BRANCH,
    EG_KIND,
    EG_LB_FLOW,
    EG_LB_RR,
    EG_MARK_ONLY,
    EG_MARKER,
    EG_NRINGS,
    EG_RING0,
    IN_SYNC,
    MAX_FANOUT,
    Handles,
)
from micronf.ports.branch import branch_tx
from micronf.ports.loadbalanced import lb_tx
from micronf.ports.marker import mark
from micronf.ports.pp import RingCtrl, RingSlots, pp_rx, pp_tx
from micronf.ports.sync import sync_rx

Row = npt.NDArray[np.int64]


@njit(cache=True, nogil=True)
def ingress_rx(p: PoolArrays, rctrl: RingCtrl, rslots: RingSlots, row: Row, dst: Handles, max_n: int) -> int:
    """Receive a burst on the ingress described by ``row`` (kind, ring, need)."""
    if row[0] == IN_SYNC:
        got: int = sync_rx(p, rctrl, rslots, row[1], row[2], dst, max_n)
        return got
    got = pp_rx(rctrl, rslots, row[1], dst, max_n)
    return got


@njit(cache=True, nogil=True)
def egress_prepare(p: PoolArrays, row: Row, handles: Handles, n: int) -> None:
    """Once per packet before the first send attempt (markers mark here, so retries never re-mark)."""
    kind = row[EG_KIND]
    if kind in (EG_MARKER, EG_MARK_ONLY):
        mark(p, handles, n)


@njit(cache=True, nogil=True)
def egress_tx(p: PoolArrays, rctrl: RingCtrl, rslots: RingSlots, row: Row, cursor: npt.NDArray[np.int64],
              slot: int, handles: Handles, n: int, scratch: npt.NDArray[np.uint32]) -> int:
    """Send on the egress described by ``row``; returns how many did not fit (moved to the front)."""
    kind = row[EG_KIND]
    rings = row[EG_RING0 : EG_RING0 + MAX_FANOUT]
    left: int = 0
    if kind == EG_MARK_ONLY:
        left = 0  # the primary branch owns the handle: nothing to send
    elif kind == EG_BRANCH:
        left = branch_tx(p, rctrl, rslots, rings, row[EG_NRINGS], handles, n)
    elif kind in (EG_LB_RR, EG_LB_FLOW):
        left = lb_tx(p, rctrl, rslots, rings, row[EG_NRINGS], kind == EG_LB_FLOW, cursor, slot, handles, n, scratch)
    else:  # EG_PP, EG_MARKER
        left = pp_tx(rctrl, rslots, rings[0], handles, n)
    return left
