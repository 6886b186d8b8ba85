"""AF_PACKET receive: frames from an interface through an mmap'ed TPACKET_V3 ring, handed out in place.

Rx (:class:`AfPacketRx`)
------------------------
``socket(AF_PACKET, SOCK_RAW, 0)`` (protocol 0: nothing is queued before the ring exists), then
``PACKET_VERSION = TPACKET_V3``, ``PACKET_RX_RING``, ``mmap``, ``PACKET_IGNORE_OUTGOING`` (frames
this host sends on the interface are not received back) and only then ``bind((iface, ETH_P_ALL))``.
The kernel fills *blocks* (``block_size`` bytes, many frames each) and passes a block to user space
by setting its ``block_status`` to ``TP_STATUS_USER`` once it is full or ``block_timeout_ms`` after
its first frame. :meth:`AfPacketRx.recv` walks the blocks the kernel handed over with a numba kernel
(the ``tpacket3_hdr`` chain: ``tp_next_offset``, ``tp_snaplen``, ``tp_mac``) and returns a
:class:`~micronf.io.backend.FrameBatch` whose ``data`` is the whole ring. A block with more frames
than ``max_frames`` is handed out over several calls; a call that finishes a block goes on with the
next ready block. Finished blocks go back to the kernel (``TP_STATUS_KERNEL``, a release store
after every read of the block) at the start of the next call, since the caller reads the frames
between the calls. When nothing is ready, ``recv`` waits at most ``idle_poll_ms`` in ``poll`` and
returns an empty batch; while traffic flows it never makes a system call.

The kernel strips a frame's outer 802.1Q/802.1ad tag before packet sockets see it and reports it
in ``tp_vlan_tci``/``tp_vlan_tpid``; the Rx kernel puts the tag back in place (moving the MAC
addresses 4 bytes down into the gap the kernel leaves before ``tp_mac``, which is always >= 16
bytes), so frames come out as they were on the wire, like libpcap does.

Counters (:meth:`AfPacketRx.stats`): ``frames``/``bytes`` handed out, ``truncated`` (frames longer
than a block could hold: the kernel cut them, so they are handed out with a negative length, ``-wire
length``, and the Rx service drops them as ``oversize``), ``blocks`` taken, and the kernel's
``PACKET_STATISTICS`` (``kernel_drops``: frames lost because the ring was full; ``kernel_freezes``:
times the ring filled up). The kernel resets those on every read, so they are accumulated here.
"""

from __future__ import annotations

import mmap
import select
import socket
import struct

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.atomics import load_acquire, store_release
from micronf.io.afpacket import (
    ETH_P_ALL,
    PACKET_FANOUT,
    PACKET_FANOUT_HASH,
    PACKET_IGNORE_OUTGOING,
    PACKET_RX_RING,
    PACKET_STATISTICS,
    PACKET_VERSION,
    SOL_PACKET,
    STATE_WORDS,
    TP_STATUS_KERNEL,
    TP_STATUS_USER,
    TP_STATUS_VLAN_TPID_VALID,
    TP_STATUS_VLAN_VALID,
    TPACKET_V3,
    VLAN_HLEN,
    AfPacketError,
    AfPacketSpec,
    bind_socket,
    map_ring,
    new_socket,
    release_map,
    set_ring,
)
from micronf.io.backend import FrameBatch

__all__ = ["AfPacketRx"]

# struct tpacket_block_desc (V3 block header): block_status, num_pkts, offset_to_first_pkt.
_BD_STATUS = 8
_BD_NUM_PKTS = 12
_BD_FIRST = 16
# struct tpacket3_hdr
_H3_NEXT = 0
_H3_SNAPLEN = 12
_H3_LEN = 16
_H3_STATUS = 20
_H3_MAC = 24
_H3_VLAN_TCI = 32
_H3_VLAN_TPID = 36

# Rx walk state (int64 words).
_R_BLK, _R_HELD, _R_POS, _R_NUM, _R_OFF, _R_REL_FROM, _R_NREL, _R_FRAMES, _R_BYTES, _R_TRUNC, _R_BLOCKS = range(11)

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Int = int | np.int64  # what numba kernels take and return as integers


# --------------------------------------------------------------------------- Rx kernel


@njit(cache=True, nogil=True, inline="always")
def _u16(b: U8, i: Int) -> Int:
    return np.int64(b[i]) | (np.int64(b[i + 1]) << 8)


@njit(cache=True, nogil=True, inline="always")
def _u32(b32: U32, i: Int) -> Int:
    """The little-endian u32 at byte offset ``i`` (4-byte aligned) of the ring."""
    return np.int64(b32[i >> 2])


@njit(cache=True, nogil=True)
def _rx_walk(ring: U8, ring32: U32, block_size: int, st: I64, out_off: I64, out_len: I32, max_frames: int) -> int:
    """Hand out up to ``max_frames`` frames from the blocks the kernel passed to user space.

    First returns the blocks finished by the previous call to the kernel, then walks the current
    block (and the following ready ones) from where the previous call stopped. Frame ``i`` is
    ``ring[out_off[i] : out_off[i] + out_len[i]]``. ``st`` holds the walk position and counters.
    """
    n_blocks = ring.shape[0] // block_size
    b = st[_R_REL_FROM]
    for _ in range(st[_R_NREL]):
        store_release(ring32, (b * block_size + _BD_STATUS) >> 2, TP_STATUS_KERNEL)
        b = b + 1 if b + 1 < n_blocks else 0
    st[_R_NREL] = 0
    n = 0
    nbytes: Int = 0
    while n < max_frames and st[_R_NREL] < n_blocks:
        blk = st[_R_BLK]
        base = blk * block_size
        if st[_R_HELD] == 0:
            if np.int64(load_acquire(ring32, (base + _BD_STATUS) >> 2)) & TP_STATUS_USER == 0:
                break
            st[_R_HELD] = 1
            st[_R_POS] = 0
            st[_R_NUM] = _u32(ring32, base + _BD_NUM_PKTS)
            st[_R_OFF] = _u32(ring32, base + _BD_FIRST)
            st[_R_BLOCKS] += 1
        pos, num, off = st[_R_POS], st[_R_NUM], st[_R_OFF]
        while pos < num and n < max_frames:
            h = base + off
            snap = _u32(ring32, h + _H3_SNAPLEN)
            start = h + _u16(ring, h + _H3_MAC)
            wire = _u32(ring32, h + _H3_LEN)
            status = _u32(ring32, h + _H3_STATUS)
            if status & TP_STATUS_VLAN_VALID:
                # Put the stripped tag back: MACs 4 bytes down, then TPID and TCI (big-endian).
                tpid = _u16(ring, h + _H3_VLAN_TPID) if status & TP_STATUS_VLAN_TPID_VALID else 0x8100
                tci = _u32(ring32, h + _H3_VLAN_TCI)
                start -= VLAN_HLEN
                for k in range(12):
                    ring[start + k] = ring[start + VLAN_HLEN + k]
                ring[start + 12] = (tpid >> 8) & 0xFF
                ring[start + 13] = tpid & 0xFF
                ring[start + 14] = (tci >> 8) & 0xFF
                ring[start + 15] = tci & 0xFF
                snap += VLAN_HLEN
            out_off[n] = start
            out_len[n] = snap
            if wire > snap:  # cut by the kernel (longer than a block): handed out as "do not read"
                st[_R_TRUNC] += 1
                out_len[n] = -wire
            nbytes += snap
            n += 1
            pos += 1
            off += _u32(ring32, h + _H3_NEXT)
        st[_R_POS] = pos
        st[_R_OFF] = off
        if pos < num:
            break
        # Block finished: its frames are in this batch, so it goes back at the next call.
        if st[_R_NREL] == 0:
            st[_R_REL_FROM] = blk
        st[_R_NREL] += 1
        st[_R_HELD] = 0
        st[_R_BLK] = blk + 1 if blk + 1 < n_blocks else 0
    st[_R_FRAMES] += n
    st[_R_BYTES] += nbytes
    return n


def _join_fanout(sock: socket.socket, spec: AfPacketSpec, group: int) -> None:
    try:
        sock.setsockopt(SOL_PACKET, PACKET_FANOUT, (group & 0xFFFF) | (PACKET_FANOUT_HASH << 16))
    except OSError as exc:  # e.g. EINVAL: the group exists on this interface with another mode
        raise AfPacketError(exc.errno, f"cannot join packet fanout group {group} on {spec.where}: "
                            f"{exc.strerror}") from None


# --------------------------------------------------------------------------- Rx


class AfPacketRx:
    """Receive frames from an interface through a TPACKET_V3 ring (see the module docstring).

    With ``fanout_group`` the socket joins that ``PACKET_FANOUT`` group in hash mode once bound:
    the kernel spreads the interface's frames over the group's sockets (one per replica of a
    graph) by flow, so each flow reaches one socket only (see :mod:`micronf.io.shard`)."""

    def __init__(self, spec: AfPacketSpec, fanout_group: int | None = None) -> None:
        self.spec = spec
        self._mm: mmap.mmap | None = None
        self._st = np.zeros(STATE_WORDS, np.int64)
        self._off = np.zeros(0, np.int64)
        self._len = np.zeros(0, np.int32)
        self._kernel_drops = 0
        self._kernel_freezes = 0
        self._sock: socket.socket | None = new_socket(spec)
        try:
            sock = self._sock
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame_nr = spec.block_size // spec.frame_size * spec.block_count
            req = struct.pack("7I", spec.block_size, spec.block_count, spec.frame_size, frame_nr,
                              spec.block_timeout_ms, 0, 0)
            set_ring(sock, PACKET_RX_RING, req, spec)
            self._mm = map_ring(sock, spec.block_size * spec.block_count, spec)
            if spec.ignore_outgoing:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            bind_socket(sock, spec, ETH_P_ALL)
            if fanout_group is not None:
                _join_fanout(sock, spec, fanout_group)
        except BaseException:
            self.close()
            raise
        self._ring = np.frombuffer(self._mm, dtype=np.uint8)
        self._ring32 = self._ring.view(np.uint32)
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | select.POLLERR)
        # Compile (or load from cache) the walk now: a first recv that pauses for it while traffic
        # already flows would let the ring fill up and the kernel drop frames.
        _rx_walk(self._ring, self._ring32, spec.block_size, self._st, self._off, self._len, 0)

    @property
    def exhausted(self) -> bool:
        """An interface never runs dry for good."""
        return False

    def recv(self, max_frames: int) -> FrameBatch:
        """Up to ``max_frames`` frames (views into the ring, valid until the next call)."""
        if self._sock is None:
            raise ValueError(f"recv on a closed AfPacketRx ({self.spec.where})")
        if self._off.shape[0] < max_frames:
            self._off = np.zeros(max_frames, np.int64)
            self._len = np.zeros(max_frames, np.int32)
        n = int(_rx_walk(self._ring, self._ring32, self.spec.block_size, self._st, self._off, self._len, max_frames))
        if n == 0 and self.spec.idle_poll_ms and self._poll.poll(self.spec.idle_poll_ms):
            n = int(_rx_walk(self._ring, self._ring32, self.spec.block_size, self._st, self._off, self._len,
                             max_frames))
        return FrameBatch(self._ring, self._off, self._len, n)

    def _read_kernel_stats(self) -> None:
        if self._sock is not None:
            _packets, drops, freezes = struct.unpack("3I", self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
            self._kernel_drops += drops
            self._kernel_freezes += freezes

    def stats(self) -> dict[str, int]:
        """``frames``, ``bytes``, ``truncated``, ``blocks``, ``kernel_drops``, ``kernel_freezes``."""
        self._read_kernel_stats()
        st = self._st
        return {
            "frames": int(st[_R_FRAMES]),
            "bytes": int(st[_R_BYTES]),
            "truncated": int(st[_R_TRUNC]),
            "blocks": int(st[_R_BLOCKS]),
            "kernel_drops": self._kernel_drops,
            "kernel_freezes": self._kernel_freezes,
        }

    def close(self) -> None:
        """Close the socket and unmap the ring (idempotent); counters stay readable."""
        if self._sock is not None:
            self._read_kernel_stats()
            sock, self._sock = self._sock, None
            sock.close()
        self._ring = np.zeros(0, np.uint8)
        self._ring32 = self._ring.view(np.uint32)
        mm, self._mm = self._mm, None
        release_map(mm)

    def __enter__(self) -> AfPacketRx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
