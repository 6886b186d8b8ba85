"""The shared packet pool: fixed-size slots in shared memory, addressed by uint32 handles.

A handle is a slot index, not a pointer, so every process may map the pool at any address and
ASLR stays on (the paper's prototype had to disable it, §VI-B).

Slot layout (``slot_size`` bytes, derived from the pool's *frame capacity*, see
:func:`slot_size_for`; 1728 = 27 cache lines for the default capacity of 1522 bytes):

====================  =====================================================================
bytes 0..63           metadata, as uint32 words ``M_*`` (and int64 word ``Q_RX_TIME``)
bytes 64..191         headroom, so encapsulation (e.g. NSH) can prepend without a copy
bytes 192..           the frame; ``M_DATA_OFF`` says where it starts, ``M_LEN`` how long it is
====================  =====================================================================

The frame capacity (the longest frame a slot takes at the default data offset) is a per-pool,
hence per-graph, setting: :data:`DEFAULT_FRAME_CAPACITY` (1518-byte Ethernet frame + one 802.1Q
tag) up to :data:`MAX_FRAME_CAPACITY` (65535: the largest GRO/TSO frame a capture holds). It is
stored in the pool's control block, so every process attaching to the pool agrees on it. Whoever
fills slots never cuts a frame to fit: a longer frame is dropped and counted (``oversize``).

Allocation has one owner at a time (the Rx service of a graph, or a test's source): it pops
handles from a free stack in shared memory. Any other process frees through its own SPSC
*return ring* (``client`` number assigned by whoever builds the graph); the owner drains the
return rings into its stack when the stack runs short. Every ring holds at least ``n_slots``
handles, so a free can never fail for lack of room, and no process ever takes a lock: a process
killed at any point cannot wedge the pool. Exhaustion returns fewer handles than asked and is
counted (``alloc_failures``); it never blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.ring import RingTable, next_pow2, ring_count, ring_dequeue, ring_enqueue
from micronf.dataplane.segment import Memory, PrivateMemory, SegmentError

META_SIZE = 64
HEADROOM = 128
DATA_OFF = META_SIZE + HEADROOM
DEFAULT_FRAME_CAPACITY = 1522  # 1518 (Ethernet with FCS room) + one 802.1Q tag
JUMBO_FRAME_CAPACITY = 9216  # what jumbo-frame switches accept (9000-byte MTU + headers)
MAX_FRAME_CAPACITY = 65535  # the largest frame a capture of GRO/TSO traffic holds (IPv4 total length)


def slot_size_for(frame_capacity: int) -> int:
    """Slot size for frames of up to ``frame_capacity`` bytes: metadata + headroom + frame, rounded
    up to an *odd* number of 64-byte cache lines.

    Why odd: with a power-of-two stride every slot's metadata line falls in the same few cache sets
    (a 2 KiB stride uses 2 of the 64 sets of a 32 KiB 8-way L1, so a 64-packet batch evicts
    itself). An odd number of lines spreads consecutive slots over all sets, as DPDK's mempool
    does. Measured on the Fig. 11 graph (unf-1proc-pinned) with 33-line slots against 32: 1.77 ->
    2.31 Mpps in one A/B pair, +8 to +30 % over three pairs.
    """
    if not 64 <= frame_capacity <= MAX_FRAME_CAPACITY:
        raise ValueError(f"frame capacity must be in 64..{MAX_FRAME_CAPACITY} bytes, got {frame_capacity}")
    lines = -(-(DATA_OFF + frame_capacity) // 64)
    return 64 * (lines | 1)


DEFAULT_SLOT_SIZE = slot_size_for(DEFAULT_FRAME_CAPACITY)

# Metadata: uint32 word indices into ``words[h]``.
M_LEN = 0  # frame length in bytes
M_PORT = 1  # input port (Rx interface number)
M_HASH = 2  # flow hash (0 = not computed)
M_VERDICT = 3  # last verdict / egress label
M_SYNC = 4  # parallel-sync counter (atomic, §V-B)
M_SFC = 5  # SFC tag: service path id << 8 | service index (NSH, RFC 8300)
M_DATA_OFF = 6  # offset of the frame's first byte within the slot
M_FLAGS = 7
# words 10-11: micronf.io.trace.Q_TIMESTAMP_NS
M_HTTP_TARGET = 12  # parse cache: HTTP request-target offset in the frame + 2; 0 = not parsed, 1 = none
M_HTTP_END = 13  # parse cache: where that target ends + 1; 0 = not parsed (valid only when M_HTTP_TARGET > 1)
# int64 word index into ``qwords[h]``: bytes 32..39.
Q_RX_TIME = 4  # Rx timestamp (CPU cycles)

# Pool control block (int64 words): geometry, then the owner's counters on their own line.
_MAGIC_VALUE = 0x4D4E465F504F4F4C  # "MNF_POOL"
C_MAGIC = 0
C_NSLOTS = 1
C_SLOT_SIZE = 2
C_NCLIENTS = 3
C_FRAME_CAP = 4
C_FREE_TOP = 16
C_ALLOCATED = 17
C_ALLOC_FAIL = 18
C_FREE_ERRORS = 19
C_OWNER_FREED = 20  # handles the owner pushed back on its stack (with C_ALLOCATED and the return rings'
# heads, monotonic counts from which live accounting reads occupancy without a torn snapshot)
CTRL_WORDS = 64


class PoolArrays(NamedTuple):
    """The pool as numba sees it: zero-copy views of one shared region."""

    data: npt.NDArray[np.uint8]  # [n_slots, slot_size]
    words: npt.NDArray[np.uint32]  # [n_slots, slot_size // 4]
    qwords: npt.NDArray[np.int64]  # [n_slots, slot_size // 8]
    ctrl: npt.NDArray[np.int64]  # [CTRL_WORDS]
    free: npt.NDArray[np.uint32]  # [n_slots] free stack, owner only
    ret_ctrl: npt.NDArray[np.int64]  # [n_clients, ring.CTRL_WORDS]
    ret_slots: npt.NDArray[np.uint32]  # [n_clients, ret capacity]


Handles = npt.NDArray[np.uint32]


@njit(cache=True, nogil=True, inline="always")
def _reclaim(p: PoolArrays, top: int) -> int:
    """Owner: move everything waiting in the return rings onto the free stack; returns the new top."""
    n_slots = p.free.shape[0]
    for r in range(p.ret_ctrl.shape[0]):
        if top >= n_slots:
            break
        top += ring_dequeue(p.ret_ctrl[r], p.ret_slots[r], p.free[top:], n_slots - top)
    return top


@njit(cache=True, nogil=True, inline="always")
def pool_alloc(p: PoolArrays, out: Handles, n: int) -> int:
    """Owner: allocate up to ``n`` handles into ``out``; returns how many (short = exhaustion, counted).

    Each allocated slot gets an empty frame at the default data offset and cleared metadata.
    """
    top = p.ctrl[C_FREE_TOP]
    if top < n:
        top = _reclaim(p, top)
    k: int = min(n, top)
    for i in range(k):
        h = p.free[top - 1 - i]
        out[i] = h
        w = p.words[h]
        w[M_LEN] = 0
        w[M_PORT] = 0
        w[M_HASH] = 0
        w[M_VERDICT] = 0
        w[M_SYNC] = 0
        w[M_SFC] = 0
        w[M_DATA_OFF] = DATA_OFF
        w[M_FLAGS] = 0
        w[M_HTTP_TARGET] = 0
    p.ctrl[C_FREE_TOP] = top - k
    p.ctrl[C_ALLOCATED] += k
    if k < n:
        p.ctrl[C_ALLOC_FAIL] += n - k
    return k


@njit(cache=True, nogil=True, inline="always")
def pool_free_owner(p: PoolArrays, handles: Handles, n: int) -> int:
    """Owner: push ``n`` handles back on the free stack. More than fit means a double free: counted."""
    top = p.ctrl[C_FREE_TOP]
    room = p.free.shape[0] - top
    k: int = min(n, room)
    for i in range(k):
        p.free[top + i] = handles[i]
    p.ctrl[C_FREE_TOP] = top + k
    p.ctrl[C_OWNER_FREED] += k
    if k < n:
        p.ctrl[C_FREE_ERRORS] += n - k
    return k


@njit(cache=True, nogil=True, inline="always")
def pool_free(p: PoolArrays, client: int, handles: Handles, n: int) -> int:
    """Any process: return ``n`` handles through return ring ``client`` (never blocks, never fails
    unless a handle is freed twice)."""
    sent: int = ring_enqueue(p.ret_ctrl[client], p.ret_slots[client], handles, n)
    return sent


@njit(cache=True, nogil=True)
def pkt_frame(p: PoolArrays, h: int) -> npt.NDArray[np.uint8]:
    """The frame of packet ``h`` as a writable uint8 view (exactly ``M_LEN`` bytes)."""
    w = p.words[h]
    off = np.int64(w[M_DATA_OFF])
    return p.data[h, off : off + np.int64(w[M_LEN])]


@njit(cache=True, nogil=True)
def pkt_set_len(p: PoolArrays, h: int, length: int) -> None:
    """Set the frame length of ``h`` (caller keeps it within ``slot_size - data offset``); forgets
    what was parsed from the frame (see :func:`pkt_forget_parse`)."""
    p.words[h, M_LEN] = length
    p.words[h, M_HTTP_TARGET] = 0


@njit(cache=True, nogil=True)
def pkt_forget_parse(p: PoolArrays, handles: Handles, n: int) -> None:
    """Forget the parse cache (``M_HTTP_TARGET``) of ``handles[0:n]``.

    Why a parse cache: three µNFs of the paper's SFC look for the HTTP request-target (Ethernet,
    IPv4, TCP headers, then the method), ~65 cycles per packet each time. The first one to find it
    stores its offset in the metadata and the others read one word (like the header offsets a
    DPDK mbuf or a VPP buffer carries). The runtime calls this after every µNF that may write the
    L3, L4 or payload region (its descriptor says so), and :func:`pkt_set_len` forgets too, so a
    cached offset is never used on a frame that changed. L2 writes (MAC rewrites) keep it: they
    never move a header (a µNF adding or removing a tag declares L3 as written).
    """
    for i in range(n):
        p.words[handles[i], M_HTTP_TARGET] = 0


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of pool accounting, readable from any process."""

    capacity: int
    free: int
    in_use: int
    allocated: int
    alloc_failures: int
    free_errors: int


class PacketPool:
    """The packet pool of one segment (regions ``<prefix>.ctrl``, ``.free``, ``.slots``, ``.ret.*``)."""

    def __init__(self, arrays: PoolArrays) -> None:
        self.arrays = arrays
        self.n_slots = int(arrays.free.shape[0])
        self.slot_size = int(arrays.data.shape[1])
        self.n_clients = int(arrays.ret_ctrl.shape[0])
        self.max_frame = int(arrays.ctrl[C_FRAME_CAP])
        """The frame capacity: the longest frame a slot takes (at the default data offset)."""

    @staticmethod
    def regions(prefix: str, n_slots: int, frame_capacity: int = DEFAULT_FRAME_CAPACITY,
                n_clients: int = 8) -> dict[str, int]:
        """Region sizes to pass to :meth:`Segment.create` for a pool of this geometry."""
        if n_slots < 1 or n_slots >= 2**31:
            raise ValueError(f"n_slots must be in 1..2**31-1, got {n_slots}")
        slot_size = slot_size_for(frame_capacity)
        if n_clients < 1:
            raise ValueError(f"n_clients must be >= 1, got {n_clients}")
        return {
            f"{prefix}.ctrl": CTRL_WORDS * 8,
            f"{prefix}.free": n_slots * 4,
            **RingTable.regions(f"{prefix}.ret", n_clients, next_pow2(n_slots)),
            f"{prefix}.slots": n_slots * slot_size,
        }

    @classmethod
    def format(
        cls, seg: Memory, prefix: str, n_slots: int, frame_capacity: int = DEFAULT_FRAME_CAPACITY, n_clients: int = 8
    ) -> PacketPool:
        """Initialise a pool in a freshly created segment: every slot free, every ring empty."""
        ctrl = seg.view(f"{prefix}.ctrl", np.int64)
        ctrl[:] = 0
        ctrl[C_NSLOTS] = n_slots
        ctrl[C_SLOT_SIZE] = slot_size_for(frame_capacity)
        ctrl[C_FRAME_CAP] = frame_capacity
        ctrl[C_NCLIENTS] = n_clients
        RingTable.format(seg, f"{prefix}.ret", n_clients, next_pow2(n_slots))
        free = seg.view(f"{prefix}.free", np.uint32)
        free[:] = np.arange(n_slots - 1, -1, -1, dtype=np.uint32)  # handle 0 on top
        ctrl[C_FREE_TOP] = n_slots
        ctrl[C_MAGIC] = _MAGIC_VALUE
        return cls.attach(seg, prefix)

    @classmethod
    def attach(cls, seg: Memory, prefix: str) -> PacketPool:
        """Open the pool of an existing segment."""
        ctrl = seg.view(f"{prefix}.ctrl", np.int64)
        if int(ctrl[C_MAGIC]) != _MAGIC_VALUE:
            raise SegmentError(f"segment {seg.name!r}: region {prefix!r} holds no formatted packet pool")
        n_slots, slot_size = int(ctrl[C_NSLOTS]), int(ctrl[C_SLOT_SIZE])
        rings = RingTable.attach(seg, f"{prefix}.ret")
        slots = seg.view(f"{prefix}.slots", np.uint8, (n_slots, slot_size))
        return cls(
            PoolArrays(
                data=slots,
                words=slots.view(np.uint32),
                qwords=slots.view(np.int64),
                ctrl=ctrl,
                free=seg.view(f"{prefix}.free", np.uint32),
                ret_ctrl=rings.ctrl,
                ret_slots=rings.slots,
            )
        )

    @classmethod
    def local(cls, n_slots: int, frame_capacity: int = DEFAULT_FRAME_CAPACITY, n_clients: int = 1) -> PacketPool:
        """A pool in this process's private memory (unit tests, run-to-completion runs): same layout
        and kernels as a shared one, no segment."""
        memory = PrivateMemory(cls.regions("pool", n_slots, frame_capacity, n_clients))
        return cls.format(memory, "pool", n_slots, frame_capacity, n_clients)

    # -- control-plane helpers (tests, tools); the data path calls the kernels above --------
    def alloc(self, n: int) -> Handles:
        """Owner: allocate up to ``n`` handles (fewer when exhausted)."""
        out = np.empty(n, dtype=np.uint32)
        return out[: int(pool_alloc(self.arrays, out, n))]

    def free(self, handles: npt.ArrayLike, client: int | None = None) -> int:
        """Free ``handles``: on the owner's stack (``client=None``) or through a return ring."""
        hs = np.ascontiguousarray(handles, dtype=np.uint32)
        if client is None:
            return int(pool_free_owner(self.arrays, hs, hs.shape[0]))
        if not 0 <= client < self.n_clients:
            raise ValueError(f"client {client} out of range 0..{self.n_clients - 1}")
        return int(pool_free(self.arrays, client, hs, hs.shape[0]))

    def write_frame(self, h: int, frame: bytes) -> None:
        """Copy ``frame`` into slot ``h`` at its data offset and set its length (the parse cache is reset)."""
        if len(frame) > self.max_frame:
            raise ValueError(f"frame of {len(frame)} bytes exceeds the pool's frame capacity of {self.max_frame}")
        off = int(self.arrays.words[h, M_DATA_OFF])
        self.arrays.data[h, off : off + len(frame)] = np.frombuffer(frame, dtype=np.uint8)
        self.arrays.words[h, M_LEN] = len(frame)
        self.arrays.words[h, M_HTTP_TARGET] = 0

    def read_frame(self, h: int) -> bytes:
        """A copy of the frame in slot ``h``."""
        return bytes(pkt_frame(self.arrays, h))

    def stats(self) -> PoolStats:
        ctrl = self.arrays.ctrl
        waiting = sum(int(ring_count(self.arrays.ret_ctrl[r])) for r in range(self.n_clients))
        free = int(ctrl[C_FREE_TOP]) + waiting
        return PoolStats(
            capacity=self.n_slots,
            free=free,
            in_use=self.n_slots - free,
            allocated=int(ctrl[C_ALLOCATED]),
            alloc_failures=int(ctrl[C_ALLOC_FAIL]),
            free_errors=int(ctrl[C_FREE_ERRORS]),
        )
