"""Whether a deployment's shared memory fits in what the shm filesystem has free.

Why: the segment is a sparse file on tmpfs (``/dev/shm``), so creating one far larger than the
memory succeeds, and the graph reports ``running`` until its pool is touched and the machine runs
out of memory (``pool_slots: 100000000`` made a 218 GB segment on a 24 GB tmpfs). The agent
therefore adds up the dominant regions (packet pool and rings) before it creates anything and
refuses, naming the fields, a deployment that does not fit.
"""

from __future__ import annotations

import os

from micronf.api.errors import InvalidDeploymentError
from micronf.dataplane.pool import PacketPool
from micronf.dataplane.ring import RingTable
from micronf.runtime.launch import GraphRuntime

SHM_DIR = "/dev/shm"


def segment_bytes(runtime: GraphRuntime) -> int:
    """Bytes of the packet pool and the rings of ``runtime``'s segment (the rest is small)."""
    pool = PacketPool.regions("pool", runtime.pool_slots, n_clients=runtime.n_clients)
    rings = RingTable.regions("rings", runtime.layout.n_rings, runtime.ring_capacity)
    return sum(pool.values()) + sum(rings.values())


def shm_free(shm_dir: str = SHM_DIR) -> int:
    """Bytes an unprivileged writer may still allocate in the shm filesystem."""
    st = os.statvfs(shm_dir)
    return st.f_bavail * st.f_frsize


def check_fits(runtime: GraphRuntime, *, shm_dir: str = SHM_DIR) -> None:
    """Raise :class:`InvalidDeploymentError` (HTTP 400) when the segment would not fit in the
    free shared memory; the message names ``pool_slots``/``ring_capacity`` and both sizes."""
    need = segment_bytes(runtime)
    free = shm_free(shm_dir)
    if need > free:
        raise InvalidDeploymentError(
            f"pool_slots/ring_capacity: the graph's shared memory would take {need / 2**20:,.0f} MiB "
            f"({runtime.pool_slots:,} packet buffers, {runtime.layout.n_rings} rings of {runtime.ring_capacity:,} "
            f"slots) but {shm_dir} has {free / 2**20:,.0f} MiB free: lower pool_slots (0: sized from the rings) "
            "or ring_capacity")
