"""Per-frame sequence numbers: the generator stamps them, the ``seqcheck`` sink checks them.

Why: counters prove that ``in == out + dropped`` but not that no frame went out twice (a
restarted Rx replaying its source, a reclaimed buffer sent again) nor that a frame is the one
that went in. With ``GeneratorSpec(sequence=True)`` frame ``j`` of the run (counted from 0 over
every restart of the Rx service: the source resumes its position) carries ``j`` as a 64-bit
big-endian number, and a :class:`SeqCheckTx` at the Tx side records each number in a bitmap and
counts the ones it sees twice.

Where the stamp is, so that no µNF of the paper's chains judges it: in a TCP segment, the
sequence and acknowledgment fields (high 32 bits in ``seq``, low 32 in ``ack``); in a UDP
datagram, the first 8 payload bytes. HTTP payloads, addresses, ports, lengths and the IPv4
header are untouched, so every verdict stays what it was without the stamp; the TCP/UDP
checksum is updated incrementally (RFC 1624), so it stays right. Frames that are not IPv4
TCP/UDP (or too short to hold a stamp) are counted ``unstamped`` by the sink.

The sink's state is a file (a name in the agent's data directory, like a pcap output) that it
maps shared, so a killed and restarted Tx service goes on with the same bitmap and counters, and
the file can be read at any time (:func:`read_seqcheck`, which also combines the files of a graph's
exits). Layout: :data:`HEADER_WORDS` int64
words (see :data:`COUNTERS`), a flow table of :data:`FLOW_SLOTS` pairs (flow hash + 1, highest
sequence number + 1) for the reordering check, then the bitmap of ``capacity`` bits.

Counters: ``frames`` checked, ``distinct`` sequence numbers seen, ``duplicates`` (seen before),
``out_of_range`` (>= ``capacity``), ``unstamped``, ``reordered`` (lower than an earlier frame of
the same flow, flows told apart by the Rx service's flow hash; frames without a hash are not
checked). A Tx service killed inside a batch may have recorded frames its counters do not show
yet (they are then ``lost_in_crash``): ``frames`` may exceed the Tx count by those, never a
number twice.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from numba import njit
from pydantic import BaseModel, ConfigDict, Field

from micronf.dataplane.pool import M_DATA_OFF, M_HASH, M_LEN, PoolArrays
from micronf.io.backend import I32, I64, U8, Handles

U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]

__all__ = [
    "COUNTERS",
    "SeqCheckTx",
    "SeqCheckTxSpec",
    "read_seqcheck",
    "read_stamp",
    "stamp_frames",
]

COUNTERS: tuple[str, ...] = ("frames", "distinct", "duplicates", "out_of_range", "unstamped", "reordered")
HEADER_WORDS = 16  # magic, capacity, the counters, room to grow
FLOW_SLOTS = 1 << 16
_MAGIC = 0x4D4E465345513031  # "MNFSEQ01"
_C0 = 2  # first counter word
_FRAMES, _DISTINCT, _DUPS, _RANGE, _UNSTAMPED, _REORDERED = range(_C0, _C0 + len(COUNTERS))
MAX_CAPACITY = 1 << 36  # 8 GiB of bitmap: far more than a soak produces


@njit(cache=True, nogil=True, inline="always")
def _stamp_at(frame: U8) -> tuple[int, int, bool]:
    """``(stamp offset, checksum offset, udp)`` in an IPv4 TCP/UDP frame; offset -1 when none."""
    n = frame.shape[0]
    if n < 34 or frame[12] != 0x08 or frame[13] != 0x00 or (frame[14] >> 4) != 4:
        return -1, -1, False
    l4 = 14 + 4 * (int(frame[14]) & 0xF)
    proto = frame[23]
    if proto == 6 and n >= l4 + 20:
        return l4 + 4, l4 + 16, False
    if proto == 17 and n >= l4 + 16:
        return l4 + 8, l4 + 6, True
    return -1, -1, False


@njit(cache=True, nogil=True)
def stamp_frames(data: U8, off: I64, length: I32, n: int, first: int) -> None:
    """Write ``first + i`` into frame ``i`` of a batch (``data[off[i] : off[i] + length[i]]``),
    updating the TCP/UDP checksum incrementally (RFC 1624 eq. 3); other frames are left alone."""
    for i in range(n):
        ln = int(length[i])
        if ln <= 0:
            continue
        o = off[i]
        frame = data[o : o + ln]
        at, csum_at, udp = _stamp_at(frame)
        if at < 0:
            continue
        seq = first + i
        old_csum = (int(frame[csum_at]) << 8) | int(frame[csum_at + 1])
        acc = (~old_csum) & 0xFFFF
        for k in range(4):
            p = at + 2 * k
            old = (int(frame[p]) << 8) | int(frame[p + 1])
            new = (seq >> (48 - 16 * k)) & 0xFFFF
            frame[p] = new >> 8
            frame[p + 1] = new & 0xFF
            acc += ((~old) & 0xFFFF) + new
        if udp and old_csum == 0:
            continue  # a UDP datagram without a checksum keeps none
        while acc >> 16:
            acc = (acc & 0xFFFF) + (acc >> 16)
        c = (~acc) & 0xFFFF
        if udp and c == 0:
            c = 0xFFFF  # RFC 768: 0 means "no checksum"
        frame[csum_at] = c >> 8
        frame[csum_at + 1] = c & 0xFF


@njit(cache=True, nogil=True)
def read_stamp(frame: U8) -> int:
    """The sequence number stamped in ``frame``, or -1 when it has no place for one."""
    at, _, _ = _stamp_at(frame)
    if at < 0:
        return -1
    seq = 0
    for k in range(8):
        seq = (seq << 8) | int(frame[at + k])
    return seq


@njit(cache=True, nogil=True)
def _check(data: U8, words: U32, handles: Handles, n: int, head: I64, flows: I64, bits: U64) -> None:
    """Record the sequence numbers of pool frames ``handles[:n]`` (see the module docstring)."""
    capacity = head[1]
    mask = flows.shape[0] // 2 - 1
    for i in range(n):
        h = handles[i]
        w = words[h]
        o = np.int64(w[M_DATA_OFF])
        seq = read_stamp(data[h, o : o + np.int64(w[M_LEN])])
        head[_FRAMES] += 1
        if seq < 0:
            head[_UNSTAMPED] += 1
            continue
        if seq >= capacity:
            head[_RANGE] += 1
            continue
        word = seq >> 6
        bit = np.uint64(1) << np.uint64(seq & 63)
        if bits[word] & bit:
            head[_DUPS] += 1
        else:
            bits[word] |= bit
            head[_DISTINCT] += 1
        fh = np.int64(w[M_HASH])
        if fh == 0:
            continue
        s = fh & mask
        for _ in range(mask + 1):  # linear probing; a full table stops checking new flows
            key = flows[2 * s]
            if key == fh + 1:
                if seq + 1 < flows[2 * s + 1]:
                    head[_REORDERED] += 1
                else:
                    flows[2 * s + 1] = seq + 1
                break
            if key == 0:
                flows[2 * s] = fh + 1
                flows[2 * s + 1] = seq + 1
                break
            s = (s + 1) & mask


class SeqCheckTxSpec(BaseModel):
    """Check the generator's sequence stamps: count frames, duplicates and reordering (a test sink)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["seqcheck"] = "seqcheck"
    path: Path = Field(description="The state file (bitmap and counters), a name in the agent's data directory; "
                       "kept across a Tx restart, read with micronf.io.sequence.read_seqcheck.")
    capacity: int = Field(ge=1, le=MAX_CAPACITY, description="Sequence numbers 0..capacity-1 are tracked "
                          "(one bit each: 500 M frames take 64 MB); give the generator's count.")


def _size(capacity: int) -> int:
    return 8 * (HEADER_WORDS + 2 * FLOW_SLOTS + (capacity + 63) // 64)


class _State:
    """The mapped state file: header, flow table and bitmap as numpy views."""

    def __init__(self, path: Path, capacity: int | None, *, write: bool) -> None:
        fd = os.open(path, (os.O_RDWR if write else os.O_RDONLY) | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if capacity is not None and size == 0:  # new: sized here, zero-filled by the kernel
                size = _size(capacity)
                os.ftruncate(fd, size)
            self.map = mmap.mmap(fd, size, prot=mmap.PROT_READ | (mmap.PROT_WRITE if write else 0))
        finally:
            os.close(fd)
        words = np.frombuffer(self.map, dtype=np.int64)
        self.head = words[:HEADER_WORDS]
        if capacity is not None and self.head[0] == 0:
            self.head[1] = capacity
            self.head[0] = _MAGIC
        cap = int(self.head[1])
        if self.head[0] != _MAGIC or size != _size(cap) or (capacity is not None and cap != capacity):
            del words
            self.close()
            raise ValueError(f"{path}: not a seqcheck state file for capacity {capacity or cap}")
        self.flows = words[HEADER_WORDS : HEADER_WORDS + 2 * FLOW_SLOTS]
        self.bits = words[HEADER_WORDS + 2 * FLOW_SLOTS :].view(np.uint64)

    def counters(self) -> dict[str, int]:
        return {name: int(self.head[_C0 + k]) for k, name in enumerate(COUNTERS)} | {"capacity": int(self.head[1])}

    def close(self) -> None:
        self.head = self.flows = self.bits = np.zeros(0, np.int64)  # drop the views before unmapping
        self.map.close()


class SeqCheckTx:
    """A :class:`~micronf.io.backend.TxBackend` that takes every frame and checks its stamp."""

    def __init__(self, spec: SeqCheckTxSpec) -> None:
        self.spec = spec
        self._state = _State(spec.path, spec.capacity, write=True)

    def send(self, p: PoolArrays, handles: Handles, n: int) -> int:
        """Record ``handles[:n]``; returns ``n``."""
        if n > 0:
            s = self._state
            _check(p.data, p.words, handles, n, s.head, s.flows, s.bits)
        return max(n, 0)

    def flush(self) -> None:
        """Nothing is buffered: the counters are in the shared mapping."""

    def stats(self) -> dict[str, int]:
        return self._state.counters()

    def close(self) -> None:
        self._state.close()


def warm(p: PoolArrays) -> None:
    """Load the stamp and check kernels now (in the zygote): on their first call numba compiles or
    reads its cache, which a service that has dropped root (see ``micronf.runtime.privileges``)
    can do neither of."""
    stamp_frames(np.zeros(64, np.uint8), np.zeros(1, np.int64), np.zeros(1, np.int32), 0, 0)
    _check(p.data, p.words, np.zeros(1, np.uint32), 0, np.zeros(HEADER_WORDS, np.int64), np.zeros(2, np.int64),
           np.zeros(1, np.uint64))


def read_seqcheck(*paths: Path) -> dict[str, int]:
    """The counters of one ``seqcheck`` state file (also while its Tx service runs), or of several
    of the same capacity (one per exit of a graph) summed, where a number recorded in more than one
    file is a duplicate too and ``distinct`` counts the numbers recorded anywhere."""
    if not paths:
        raise ValueError("read_seqcheck: give at least one state file")
    states = [_State(p, None, write=False) for p in paths]
    try:
        total = {k: sum(s.counters()[k] for s in states) for k in COUNTERS}
        total["capacity"] = states[0].counters()["capacity"]
        if any(s.counters()["capacity"] != total["capacity"] for s in states):
            raise ValueError(f"seqcheck files of different capacities: {', '.join(map(str, paths))}")
        if len(states) > 1:
            seen = np.zeros_like(states[0].bits)
            for s in states:
                total["duplicates"] += int(np.bitwise_count(seen & s.bits).sum())
                seen |= s.bits
            total["distinct"] = int(np.bitwise_count(seen).sum())
        return total
    finally:
        for s in states:
            s.close()
