"""In-memory ports: the same rings and port kernels on private memory, for unit tests.

``memory_rings(n, capacity)`` gives a ring table that lives in this process only; every port
class works on it unchanged, so port logic is tested without processes or shared memory.
"""

from __future__ import annotations

from micronf.dataplane.ring import RingTable
from micronf.dataplane.segment import PrivateMemory
from micronf.ports.pp import PPEgress, PPIngress


def memory_rings(n: int, capacity: int = 1024) -> RingTable:
    """``n`` empty rings of ``capacity`` in private memory."""
    return RingTable.format(PrivateMemory(RingTable.regions("rings", n, capacity)), "rings", n, capacity)


def memory_link(capacity: int = 1024) -> tuple[PPEgress, PPIngress]:
    """A connected point-to-point (egress, ingress) pair over one private ring."""
    rings = memory_rings(1, capacity)
    return PPEgress(rings, 0), PPIngress(rings, 0)
