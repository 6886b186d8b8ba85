"""In-memory ports: the same rings and port kernels on private memory, for unit tests.

``memory_rings(n, capacity)`` gives a ring table that lives in this process only; every port
class works on it unchanged, so port logic is tested without processes or shared memory.
"""

from __future__ import annotations

import numpy as np

from micronf.dataplane.ring import CTRL_WORDS, RingTable, ring_init
from micronf.ports.pp import PPEgress, PPIngress


def memory_rings(n: int, capacity: int = 1024) -> RingTable:
    """``n`` empty rings of ``capacity`` in private memory."""
    table = RingTable(np.zeros((n, CTRL_WORDS), dtype=np.int64), np.zeros((n, capacity), dtype=np.uint32))
    for i in range(n):
        ring_init(table.ctrl[i], capacity)
    return table


def memory_link(capacity: int = 1024) -> tuple[PPEgress, PPIngress]:
    """A connected point-to-point (egress, ingress) pair over one private ring."""
    rings = memory_rings(1, capacity)
    return PPEgress(rings, 0), PPIngress(rings, 0)
