"""AF_PACKET backend: frames in and out of any kernel interface through mmap'ed packet rings.

Why: the Rx and Tx services need a real interface (a veth in a namespace in tests, a NIC in a
deployment) without a per-packet system call or a per-packet Python step. The kernel copies each
received frame once into a TPACKET_V3 ring we map; :class:`AfPacketRx` hands the frames out in
place (zero copy, the Rx service copies them into its pool). :class:`AfPacketTx` writes pool frames
out with one system call per batch.

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

Tx (:class:`AfPacketTx`)
------------------------
Two ways, chosen by :attr:`AfPacketSpec.tx_mode`, both measured by ``bench/io.py``:

* ``sendmmsg``: a numba kernel fills an ``mmsghdr``/``iovec`` array whose iovecs point straight at
  the pool slots (no copy in user space) and calls ``sendmmsg(MSG_DONTWAIT)`` itself (libc, bound
  at load time like :func:`micronf.dataplane.atomics.sched_yield`), retrying after partial sends.
* ``ring``: a ``PACKET_TX_RING`` of TPACKET_V2 frames; the kernel copies each pool frame into the
  next free ring frame, marks it ``TP_STATUS_SEND_REQUEST`` (release store) and kicks the socket
  with one ``send(NULL, 0, MSG_DONTWAIT)`` per batch. ``PACKET_LOSS`` is set so a frame the kernel
  rejects is skipped instead of stalling the ring.

Measured (``bench/io.py``, veth between two namespaces, bursts of 64, 2-vCPU VM under load):
``sendmmsg`` was faster at 5 of 6 frame sizes (64..1500 B) and cheaper, 2.3-2.8 µs of sender CPU
per frame (the kernel's veth path included) against 2.5-3.5 µs for the ring, so it is the default.
The Rx side kept up at every rate with 4-6% of a core, without kernel drops.

Frames longer than the interface MTU (+ 14 bytes of Ethernet header, + 4 with an 802.1Q tag), or
than a Tx ring frame, count as ``errors`` with reason ``too_long``, frames shorter than an Ethernet
header as ``too_short``; both are *taken* (the caller frees them) so one bad frame does not hold up
the batch. When the kernel has no room (``EAGAIN``/``ENOBUFS``, or the Tx ring is full) ``send``
returns the prefix taken and counts the rest in ``would_block``; other send errors count the frame
in ``errors`` (reason ``send_failed``) and go on with the next one.

Namespaces: with ``netns="NAME"`` the socket is created by a short-lived thread that first joins
``/var/run/netns/NAME`` (``setns`` changes only the calling thread); a socket stays in the
namespace it was created in, so everything else runs in the caller's thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import select
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from micronf.dataplane.atomics import load_acquire, store_release
from micronf.dataplane.memcopy import copy_bytes
from micronf.dataplane.pool import M_DATA_OFF, M_LEN, PoolArrays
from micronf.io.backend import FrameBatch, Handles

__all__ = [
    "AfPacketError",
    "AfPacketPermissionError",
    "AfPacketRx",
    "AfPacketSpec",
    "AfPacketTx",
    "InterfaceNotFoundError",
    "NetnsNotFoundError",
]

# <linux/if_packet.h>, <linux/if_ether.h>, <linux/sched.h>, <linux/sockios.h>
SOL_PACKET = 263
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_LOSS = 14
PACKET_IGNORE_OUTGOING = 23
TPACKET_V2 = 1
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
CLONE_NEWNET = 0x40000000
SIOCGIFMTU = 0x8921
NETNS_DIR = "/var/run/netns"

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
TP_STATUS_SENDING = 2

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
# struct tpacket2_hdr: tp_status at 0, tp_len at 4; Tx data starts right after the aligned header
# (TPACKET2_HDRLEN - sizeof(struct sockaddr_ll) = 32).
_H2_LEN = 4
_H2_DATA = 32

_ETH_HLEN = 14
_VLAN_HLEN = 4
_MMSG_WORDS = 8  # sizeof(struct mmsghdr) = 64 on LP64: msghdr (56) + msg_len + padding
_MSG_IOV = 2  # word index of msg_iov, msg_iovlen is the next word
_IOV_WORDS = 2  # struct iovec: base, len
_MSG_DONTWAIT = 0x40
_EAGAIN = errno.EAGAIN
_ENOBUFS = errno.ENOBUFS

# Rx walk state (int64 words).
_R_BLK, _R_HELD, _R_POS, _R_NUM, _R_OFF, _R_REL_FROM, _R_NREL, _R_FRAMES, _R_BYTES, _R_TRUNC, _R_BLOCKS = range(11)
# Tx counters (int64 words); _T_HEAD is the Tx ring's next frame.
_T_FRAMES, _T_BYTES, _T_TOO_LONG, _T_TOO_SHORT, _T_SEND_FAILED, _T_WOULD_BLOCK, _T_SYSCALLS, _T_HEAD = range(8)
_STATE_WORDS = 16

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
Int = int | np.int64  # what numba kernels take and return as integers


# --------------------------------------------------------------------------- errors


class AfPacketError(OSError):
    """Opening or using an AF_PACKET socket failed; the message names the interface."""


class InterfaceNotFoundError(AfPacketError):
    """No interface of that name in the (given) network namespace."""


class NetnsNotFoundError(AfPacketError, FileNotFoundError):
    """The named network namespace does not exist under /var/run/netns."""


class AfPacketPermissionError(AfPacketError, PermissionError):
    """AF_PACKET sockets (and joining a namespace) need CAP_NET_RAW / CAP_SYS_ADMIN."""


# --------------------------------------------------------------------------- the spec


def _pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


class AfPacketSpec(BaseModel):
    """An AF_PACKET endpoint on one interface, e.g. ``{"kind": "afpacket", "iface": "veth0"}``.

    The same spec opens an :class:`AfPacketRx` and an :class:`AfPacketTx`; the ring geometry
    fields apply to the Rx ring (and ``frame_size``/``block_size`` to the Tx ring).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["afpacket"] = "afpacket"
    iface: str = Field(min_length=1, max_length=15, description="interface name (IFNAMSIZ - 1 characters at most)")
    netns: str | None = Field(
        default=None, min_length=1, description="named network namespace (/var/run/netns/NAME) to open the socket in"
    )
    block_size: int = Field(
        default=1 << 20, description="Rx ring block size in bytes: a power of two, at least a page, at most 64 MiB"
    )
    block_count: int = Field(default=16, ge=2, le=1024, description="Rx ring blocks")
    frame_size: int = Field(
        default=2048,
        description="ring frame size in bytes (power of two, 256..block_size): the Tx ring's frame "
        "slot (largest frame: frame_size - 32); the Rx ring packs frames of any size into blocks",
    )
    block_timeout_ms: int = Field(
        default=4, ge=1, le=1000, description="the kernel hands over a partly filled Rx block after this long"
    )
    idle_poll_ms: int = Field(
        default=1, ge=0, le=10, description="recv() waits at most this long in poll() when no block is ready"
    )
    ignore_outgoing: bool = Field(
        default=True, description="do not receive the frames this host sends on the interface (PACKET_IGNORE_OUTGOING)"
    )
    tx_mode: Literal["sendmmsg", "ring"] = Field(
        default="sendmmsg", description="Tx path: sendmmsg from the pool slots, or a PACKET_TX_RING (see bench/io.py)"
    )
    tx_ring_frames: int = Field(
        default=4096, ge=16, le=1 << 20, description="Tx ring frames (rounded up to whole blocks), tx_mode='ring'"
    )

    @field_validator("iface")
    @classmethod
    def _iface_name(cls, v: str) -> str:
        if v in (".", "..") or any(c == "/" or c == ":" or c.isspace() for c in v):
            raise ValueError(f"{v!r} is not a valid interface name (no '/', ':' or whitespace)")
        return v

    @field_validator("netns")
    @classmethod
    def _netns_name(cls, v: str | None) -> str | None:
        if v is not None and (v in (".", "..") or "/" in v or "\0" in v):
            raise ValueError(f"{v!r} is not a valid network namespace name (a file name under {NETNS_DIR})")
        return v

    @model_validator(mode="after")
    def _geometry(self) -> AfPacketSpec:
        page = mmap.PAGESIZE
        if not _pow2(self.block_size) or not page <= self.block_size <= 1 << 26:
            raise ValueError(f"block_size must be a power of two in {page}..{1 << 26}, got {self.block_size}")
        if not _pow2(self.frame_size) or not 256 <= self.frame_size <= self.block_size:
            raise ValueError(f"frame_size must be a power of two in 256..block_size, got {self.frame_size}")
        return self

    @property
    def where(self) -> str:
        """Human-readable location for messages: ``interface 'veth0' (netns 'a')``."""
        return f"interface {self.iface!r}" + (f" (netns {self.netns!r})" if self.netns else "")


# --------------------------------------------------------------------------- libc calls from numba


def _i64(context: Any, builder: Any, value: Any, ty: Any) -> Any:
    return context.cast(builder, value, ty, types.int64)


@intrinsic
def _sys_sendmmsg(typingctx: Any, fd: Any, vec: Any, vlen: Any, flags: Any) -> Any:
    """libc ``sendmmsg(fd, (struct mmsghdr *)vec, vlen, flags)``; returns its int result."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        i32, i8p = ir.IntType(32), ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, ir.FunctionType(i32, [i32, i8p, i32, i32]), "sendmmsg"
        )
        a = [_i64(context, builder, v, t) for v, t in zip(args, sig.args, strict=True)]
        r = builder.call(fn, [builder.trunc(a[0], i32), builder.inttoptr(a[1], i8p), builder.trunc(a[2], i32),
                              builder.trunc(a[3], i32)])
        return builder.sext(r, ir.IntType(64))

    return types.int64(fd, vec, vlen, flags), codegen


@intrinsic
def _sys_send(typingctx: Any, fd: Any, buf: Any, length: Any, flags: Any) -> Any:
    """libc ``send(fd, (void *)buf, length, flags)``; returns its ssize_t result."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        i32, i64, i8p = ir.IntType(32), ir.IntType(64), ir.IntType(8).as_pointer()
        fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, ir.FunctionType(i64, [i32, i8p, i64, i32]), "send"
        )
        a = [_i64(context, builder, v, t) for v, t in zip(args, sig.args, strict=True)]
        return builder.call(fn, [builder.trunc(a[0], i32), builder.inttoptr(a[1], i8p), a[2], builder.trunc(a[3], i32)])

    return types.int64(fd, buf, length, flags), codegen


@intrinsic
def _sys_errno(typingctx: Any) -> Any:
    """The calling thread's ``errno`` (through glibc/musl ``__errno_location``)."""

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(  # type: ignore[no-untyped-call]
            builder.module, ir.FunctionType(i32.as_pointer(), []), "__errno_location"
        )
        return builder.sext(builder.load(builder.call(fn, [])), ir.IntType(64))

    return types.int64(), codegen


sys_sendmmsg = cast(Callable[[Int, Int, Int, Int], int], _sys_sendmmsg)
sys_send = cast(Callable[[Int, Int, Int, Int], int], _sys_send)
sys_errno = cast(Callable[[], int], _sys_errno)


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
                start -= _VLAN_HLEN
                for k in range(12):
                    ring[start + k] = ring[start + _VLAN_HLEN + k]
                ring[start + 12] = (tpid >> 8) & 0xFF
                ring[start + 13] = tpid & 0xFF
                ring[start + 14] = (tci >> 8) & 0xFF
                ring[start + 15] = tci & 0xFF
                snap += _VLAN_HLEN
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


# --------------------------------------------------------------------------- Tx kernels


@njit(cache=True, nogil=True, inline="always")
def _frame_fault(frame: U8, length: Int, max_len: int, room: Int) -> int:
    """0 if the frame can go out, else the counter it belongs to (too long / too short)."""
    if length < _ETH_HLEN:
        return _T_TOO_SHORT
    if length > room:
        return _T_TOO_LONG
    # Like the kernel (packet_extra_vlan_len_allowed): 4 more bytes for an 802.1Q tag, not 802.1ad.
    tagged = frame[12] == 0x81 and frame[13] == 0x00
    if length > max_len + (_VLAN_HLEN if tagged else 0):
        return _T_TOO_LONG
    return 0


@njit(cache=True, nogil=True, inline="always")
def _would_block(err: Int) -> bool:
    return err in (_EAGAIN, _ENOBUFS)


@njit(cache=True, nogil=True)
def _tx_sendmmsg(p: PoolArrays, handles: Handles, n: int, fd: int, max_len: int, msgs: U64, iovs: U64,
                 idx: I64, st: I64) -> int:
    """Send ``handles[:n]`` with ``sendmmsg``, iovecs pointing into the pool; returns the prefix taken.

    ``msgs[j]`` already points at ``iovs[j]`` (one iovec per message, set up once).
    """
    slot = p.data.shape[1]
    base = np.int64(p.data.ctypes.data)
    vec = np.int64(msgs.ctypes.data)
    m = 0
    for i in range(n):
        h = np.int64(handles[i])
        off = np.int64(p.words[h, M_DATA_OFF])
        ln = np.int64(p.words[h, M_LEN])
        fault = _frame_fault(p.data[h, off:], ln, max_len, slot - off)
        if fault:
            st[fault] += 1
            continue
        iovs[m, 0] = base + h * slot + off
        iovs[m, 1] = ln
        idx[m] = i
        m += 1
    sent = 0
    taken = n
    while sent < m:
        r = sys_sendmmsg(fd, vec + sent * _MMSG_WORDS * 8, m - sent, _MSG_DONTWAIT)
        st[_T_SYSCALLS] += 1
        if r > 0:
            for j in range(sent, sent + r):
                st[_T_BYTES] += np.int64(iovs[j, 1])
            st[_T_FRAMES] += r
            sent += r
            continue
        if _would_block(sys_errno()):
            taken = idx[sent]
            break
        st[_T_SEND_FAILED] += 1  # this frame cannot go (e.g. link down): count it, go on
        sent += 1
    if taken < n:
        st[_T_WOULD_BLOCK] += n - taken
    return taken


@njit(cache=True, nogil=True)
def _tx_ring(p: PoolArrays, handles: Handles, n: int, fd: int, max_len: int, ring: U8, ring32: U32,
             frame_size: int, st: I64) -> int:
    """Copy ``handles[:n]`` into free Tx ring frames and kick the socket once; returns the prefix taken."""
    n_frames = ring.shape[0] // frame_size
    slot = p.data.shape[1]
    head = st[_T_HEAD]
    taken = n
    for i in range(n):
        h = np.int64(handles[i])
        off = np.int64(p.words[h, M_DATA_OFF])
        ln = np.int64(p.words[h, M_LEN])
        fault = _frame_fault(p.data[h, off:], ln, max_len, min(slot - off, frame_size - _H2_DATA))
        if fault:
            st[fault] += 1
            continue
        fb = head * frame_size
        if np.int64(load_acquire(ring32, fb >> 2)) & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING):
            taken = i  # ring full: the kernel still owns the next frame
            break
        copy_bytes(ring, fb + _H2_DATA, p.data[h], off, ln)
        ring32[(fb + _H2_LEN) >> 2] = ln
        store_release(ring32, fb >> 2, TP_STATUS_SEND_REQUEST)
        st[_T_FRAMES] += 1
        st[_T_BYTES] += ln
        head = head + 1 if head + 1 < n_frames else 0
    st[_T_HEAD] = head
    if n > 0:
        # Kick even when nothing new was queued: frames left pending by an earlier EAGAIN must go.
        sys_send(fd, 0, 0, _MSG_DONTWAIT)
        st[_T_SYSCALLS] += 1
    if taken < n:
        st[_T_WOULD_BLOCK] += n - taken
    return taken


@njit(cache=True, nogil=True)
def _tx_kick(fd: int, st: I64) -> None:
    sys_send(fd, 0, 0, _MSG_DONTWAIT)
    st[_T_SYSCALLS] += 1


def warm_tx(p: PoolArrays) -> None:
    """Compile (or load) the Tx kernels for pool ``p``'s types without sending anything: the agent's
    Tx service runs them after it gave up root, when it can neither read numba's cache nor write it."""
    handles = np.zeros(1, np.uint32)
    st = np.zeros(_STATE_WORDS, np.int64)
    _tx_sendmmsg(p, handles, 0, -1, 0, np.zeros((0, _MMSG_WORDS), np.uint64), np.zeros((0, _IOV_WORDS), np.uint64),
                 np.zeros(0, np.int64), st)
    ring = np.zeros(0, np.uint8)
    _tx_ring(p, handles, 0, -1, 0, ring, ring.view(np.uint32), 1, st)
    _tx_kick(-1, st)  # fd -1: EBADF, nothing sent


# --------------------------------------------------------------------------- sockets


_libc = ctypes.CDLL(None, use_errno=True)


def _join_netns(spec: AfPacketSpec, fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        if err == errno.EPERM:
            raise AfPacketPermissionError(err, f"joining netns {spec.netns!r} for {spec.where} needs CAP_SYS_ADMIN")
        raise AfPacketError(err, f"cannot join netns {spec.netns!r} for {spec.where}: {os.strerror(err)}")


def _new_socket(spec: AfPacketSpec) -> socket.socket:
    """``socket(AF_PACKET, SOCK_RAW, 0)``, created inside ``spec.netns`` when one is given."""

    def create() -> socket.socket:
        try:
            return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError as exc:
            raise AfPacketPermissionError(
                exc.errno, f"AF_PACKET socket on {spec.where}: not permitted (needs CAP_NET_RAW, e.g. root)"
            ) from None

    if spec.netns is None:
        return create()
    path = os.path.join(NETNS_DIR, spec.netns)
    try:
        ns_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError as exc:
        raise AfPacketPermissionError(exc.errno, f"opening {path} for {spec.where}: not permitted") from None
    except FileNotFoundError:
        raise NetnsNotFoundError(
            errno.ENOENT, f"network namespace {spec.netns!r} for {spec.where} not found ({path}; "
            f"create it with `ip netns add {spec.netns}`)"
        ) from None
    result: list[socket.socket | BaseException] = []

    def in_netns() -> None:  # runs in a thread of its own: setns changes only that thread
        try:
            _join_netns(spec, ns_fd)
            result.append(create())
        except BaseException as exc:  # handed to the caller's thread
            result.append(exc)

    try:
        worker = threading.Thread(target=in_netns, name=f"afpacket-netns-{spec.netns}")
        worker.start()
        worker.join()
    finally:
        os.close(ns_fd)
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def _bind(sock: socket.socket, spec: AfPacketSpec, proto: int) -> None:
    try:
        sock.bind((spec.iface, proto))
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            ns = f"netns {spec.netns!r}" if spec.netns else "this network namespace"
            raise InterfaceNotFoundError(exc.errno, f"no interface {spec.iface!r} in {ns}") from None
        raise AfPacketError(exc.errno, f"cannot bind to {spec.where}: {exc.strerror}") from None


def _mtu(sock: socket.socket, spec: AfPacketSpec) -> int:
    req = struct.pack("16si12x", spec.iface.encode(), 0)
    return int(struct.unpack_from("i", fcntl.ioctl(sock.fileno(), SIOCGIFMTU, req), 16)[0])


def _map_ring(sock: socket.socket, size: int, spec: AfPacketSpec) -> mmap.mmap:
    try:
        return mmap.mmap(sock.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError as exc:
        raise AfPacketError(exc.errno, f"cannot map the {size >> 20} MiB packet ring of {spec.where}: "
                            f"{exc.strerror}") from None


def _set_ring(sock: socket.socket, option: int, req: bytes, spec: AfPacketSpec) -> None:
    try:
        sock.setsockopt(SOL_PACKET, option, req)
    except OSError as exc:
        raise AfPacketError(exc.errno, f"the kernel refused the packet ring geometry for {spec.where}: "
                            f"{exc.strerror}") from None


def _release_map(mm: mmap.mmap | None) -> None:
    """Unmap now if no frame batch still views the ring; otherwise when the last view goes."""
    if mm is not None:
        with contextlib.suppress(BufferError):
            mm.close()


# --------------------------------------------------------------------------- Rx


class AfPacketRx:
    """Receive frames from an interface through a TPACKET_V3 ring (see the module docstring)."""

    def __init__(self, spec: AfPacketSpec) -> None:
        self.spec = spec
        self._mm: mmap.mmap | None = None
        self._st = np.zeros(_STATE_WORDS, np.int64)
        self._off = np.zeros(0, np.int64)
        self._len = np.zeros(0, np.int32)
        self._kernel_drops = 0
        self._kernel_freezes = 0
        self._sock: socket.socket | None = _new_socket(spec)
        try:
            sock = self._sock
            sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            frame_nr = spec.block_size // spec.frame_size * spec.block_count
            req = struct.pack("7I", spec.block_size, spec.block_count, spec.frame_size, frame_nr,
                              spec.block_timeout_ms, 0, 0)
            _set_ring(sock, PACKET_RX_RING, req, spec)
            self._mm = _map_ring(sock, spec.block_size * spec.block_count, spec)
            if spec.ignore_outgoing:
                sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            _bind(sock, spec, ETH_P_ALL)
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
        _release_map(mm)

    def __enter__(self) -> AfPacketRx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- Tx


class AfPacketTx:
    """Send pool frames out of an interface, one system call per batch (see the module docstring)."""

    def __init__(self, spec: AfPacketSpec) -> None:
        self.spec = spec
        self._mm: mmap.mmap | None = None
        self._sock: socket.socket | None = _new_socket(spec)
        self._fd = self._sock.fileno()
        self._st = np.zeros(_STATE_WORDS, np.int64)
        self._ring: U8 | None = None
        self._ring32: U32 | None = None
        try:
            sock = self._sock
            if spec.tx_mode == "ring":
                per_block = spec.block_size // spec.frame_size
                blocks = -(-spec.tx_ring_frames // per_block)
                sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
                sock.setsockopt(SOL_PACKET, PACKET_LOSS, 1)
                req = struct.pack("4I", spec.block_size, blocks, spec.frame_size, blocks * per_block)
                _set_ring(sock, PACKET_TX_RING, req, spec)
                self._mm = _map_ring(sock, spec.block_size * blocks, spec)
            _bind(sock, spec, 0)  # protocol 0: a Tx socket receives nothing
            self.mtu = _mtu(sock, spec)
        except BaseException:
            self.close()
            raise
        self._max_len = self.mtu + _ETH_HLEN
        if self._mm is not None:
            self._ring = np.frombuffer(self._mm, dtype=np.uint8)
            self._ring32 = self._ring.view(np.uint32)
        self._grow(0)

    def _grow(self, n: int) -> None:
        """Size the sendmmsg arrays for ``n`` messages; message ``j`` points at iovec ``j`` for good."""
        self._msgs = np.zeros((n, _MMSG_WORDS), np.uint64)
        self._iovs = np.zeros((n, _IOV_WORDS), np.uint64)
        self._idx = np.zeros(n, np.int64)
        if n:
            self._msgs[:, _MSG_IOV] = self._iovs.ctypes.data + np.arange(n, dtype=np.uint64) * (_IOV_WORDS * 8)
            self._msgs[:, _MSG_IOV + 1] = 1

    def send(self, p: PoolArrays, handles: Handles, n: int) -> int:
        """Write the frames of ``handles[:n]``; returns how many were taken (a prefix)."""
        if self._sock is None:
            raise ValueError(f"send on a closed AfPacketTx ({self.spec.where})")
        if n > handles.shape[0]:
            raise ValueError(f"send: n = {n} but only {handles.shape[0]} handles")
        if self._ring is not None and self._ring32 is not None:
            return int(_tx_ring(p, handles, n, self._fd, self._max_len, self._ring, self._ring32,
                                self.spec.frame_size, self._st))
        if self._msgs.shape[0] < n:
            self._grow(max(n, 64))
        return int(_tx_sendmmsg(p, handles, n, self._fd, self._max_len, self._msgs, self._iovs, self._idx, self._st))

    def flush(self) -> None:
        """Ring mode: kick the socket so frames left pending by an earlier EAGAIN go out."""
        if self._sock is not None and self._ring is not None:
            _tx_kick(self._fd, self._st)

    def stats(self) -> dict[str, int]:
        """``frames``/``bytes`` handed to the kernel, ``errors`` (= ``too_long`` + ``too_short`` +
        ``send_failed``), ``would_block`` (frames not taken), ``syscalls``."""
        st = self._st
        errors = int(st[_T_TOO_LONG] + st[_T_TOO_SHORT] + st[_T_SEND_FAILED])
        return {
            "frames": int(st[_T_FRAMES]),
            "bytes": int(st[_T_BYTES]),
            "errors": errors,
            "too_long": int(st[_T_TOO_LONG]),
            "too_short": int(st[_T_TOO_SHORT]),
            "send_failed": int(st[_T_SEND_FAILED]),
            "would_block": int(st[_T_WOULD_BLOCK]),
            "syscalls": int(st[_T_SYSCALLS]),
        }

    def close(self) -> None:
        """Flush, close the socket and unmap the Tx ring (idempotent)."""
        if self._sock is not None:
            self.flush()
            sock, self._sock = self._sock, None
            sock.close()
        self._ring = self._ring32 = None
        mm, self._mm = self._mm, None
        _release_map(mm)

    def __enter__(self) -> AfPacketTx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
