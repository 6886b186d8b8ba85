"""AF_PACKET send: pool frames out of an interface with one system call per batch.

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
"""

from __future__ import annotations

import errno
import mmap
import socket
import struct
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from micronf.dataplane.atomics import load_acquire, store_release
from micronf.dataplane.memcopy import copy_bytes
from micronf.dataplane.pool import M_DATA_OFF, M_LEN, PoolArrays
from micronf.io.afpacket import (
    ETH_HLEN,
    PACKET_LOSS,
    PACKET_TX_RING,
    PACKET_VERSION,
    SOL_PACKET,
    STATE_WORDS,
    TP_STATUS_SEND_REQUEST,
    TP_STATUS_SENDING,
    TPACKET_V2,
    VLAN_HLEN,
    AfPacketSpec,
    bind_socket,
    interface_mtu,
    map_ring,
    new_socket,
    release_map,
    set_ring,
)
from micronf.io.backend import Handles

__all__ = ["AfPacketTx", "warm_tx"]

# struct tpacket2_hdr: tp_status at 0, tp_len at 4; Tx data starts right after the aligned header
# (TPACKET2_HDRLEN - sizeof(struct sockaddr_ll) = 32).
_H2_LEN = 4
_H2_DATA = 32

_MMSG_WORDS = 8  # sizeof(struct mmsghdr) = 64 on LP64: msghdr (56) + msg_len + padding
_MSG_IOV = 2  # word index of msg_iov, msg_iovlen is the next word
_IOV_WORDS = 2  # struct iovec: base, len
_MSG_DONTWAIT = 0x40
_EAGAIN = errno.EAGAIN
_ENOBUFS = errno.ENOBUFS


# Tx counters (int64 words); _T_HEAD is the Tx ring's next frame.
_T_FRAMES, _T_BYTES, _T_TOO_LONG, _T_TOO_SHORT, _T_SEND_FAILED, _T_WOULD_BLOCK, _T_SYSCALLS, _T_HEAD = range(8)

U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Int = int | np.int64  # what numba kernels take and return as integers


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


# --------------------------------------------------------------------------- Tx kernels


@njit(cache=True, nogil=True, inline="always")
def _frame_fault(frame: U8, length: Int, max_len: int, room: Int) -> int:
    """0 if the frame can go out, else the counter it belongs to (too long / too short)."""
    if length < ETH_HLEN:
        return _T_TOO_SHORT
    if length > room:
        return _T_TOO_LONG
    # Like the kernel (packet_extra_vlan_len_allowed): 4 more bytes for an 802.1Q tag, not 802.1ad.
    tagged = frame[12] == 0x81 and frame[13] == 0x00
    if length > max_len + (VLAN_HLEN if tagged else 0):
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
    st = np.zeros(STATE_WORDS, np.int64)
    _tx_sendmmsg(p, handles, 0, -1, 0, np.zeros((0, _MMSG_WORDS), np.uint64), np.zeros((0, _IOV_WORDS), np.uint64),
                 np.zeros(0, np.int64), st)
    ring = np.zeros(0, np.uint8)
    _tx_ring(p, handles, 0, -1, 0, ring, ring.view(np.uint32), 1, st)
    _tx_kick(-1, st)  # fd -1: EBADF, nothing sent


# --------------------------------------------------------------------------- Tx


class AfPacketTx:
    """Send pool frames out of an interface, one system call per batch (see the module docstring)."""

    def __init__(self, spec: AfPacketSpec) -> None:
        self.spec = spec
        self._mm: mmap.mmap | None = None
        self._sock: socket.socket | None = new_socket(spec)
        self._fd = self._sock.fileno()
        self._st = np.zeros(STATE_WORDS, np.int64)
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
                set_ring(sock, PACKET_TX_RING, req, spec)
                self._mm = map_ring(sock, spec.block_size * blocks, spec)
            bind_socket(sock, spec, 0)  # protocol 0: a Tx socket receives nothing
            self.mtu = interface_mtu(sock, spec)
        except BaseException:
            self.close()
            raise
        self._max_len = self.mtu + ETH_HLEN
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
        release_map(mm)

    def __enter__(self) -> AfPacketTx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
