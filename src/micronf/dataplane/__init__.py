"""The shared-memory data plane: segments, the packet pool, SPSC rings, atomics and header helpers.

Everything here is usable from numba-compiled code (the ``*_enqueue``/``pool_*``/``pkt_*``
kernels and the atomics) or is control-plane Python that sets memory up (``Segment``,
``PacketPool``, ``RingTable``). No HTTP, pydantic or logging on this path.
"""

from micronf.dataplane.pool import PacketPool, PoolArrays, PoolStats
from micronf.dataplane.ring import Ring, RingTable
from micronf.dataplane.segment import Segment, SegmentError, SegmentNotFoundError, list_segments, remove_stale

__all__ = [
    "PacketPool",
    "PoolArrays",
    "PoolStats",
    "Ring",
    "RingTable",
    "Segment",
    "SegmentError",
    "SegmentNotFoundError",
    "list_segments",
    "remove_stale",
]
