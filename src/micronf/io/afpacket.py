"""AF_PACKET backend: frames in and out of any kernel interface through mmap'ed packet rings.

Why: the Rx and Tx services need a real interface (a veth in a namespace in tests, a NIC in a
deployment) without a per-packet system call or a per-packet Python step. The kernel copies each
received frame once into a TPACKET_V3 ring we map; :class:`AfPacketRx` hands the frames out in
place (zero copy, the Rx service copies them into its pool). :class:`AfPacketTx` writes pool frames
out with one system call per batch.

This module holds what both directions share: :class:`AfPacketSpec`, the errors, the constants of
``<linux/if_packet.h>`` and the socket setup; the Rx ring is in :mod:`micronf.io.afpacket_rx`, the Tx
paths in :mod:`micronf.io.afpacket_tx`.

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
import socket
import struct
import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AfPacketError",
    "AfPacketPermissionError",
    "AfPacketSpec",
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
PACKET_FANOUT = 18
PACKET_FANOUT_HASH = 0
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

ETH_HLEN = 14
VLAN_HLEN = 4
STATE_WORDS = 16  # int64 words of an Rx walk state / Tx counter array


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


# --------------------------------------------------------------------------- sockets


_libc = ctypes.CDLL(None, use_errno=True)


def _join_netns(spec: AfPacketSpec, fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        if err == errno.EPERM:
            raise AfPacketPermissionError(err, f"joining netns {spec.netns!r} for {spec.where} needs CAP_SYS_ADMIN")
        raise AfPacketError(err, f"cannot join netns {spec.netns!r} for {spec.where}: {os.strerror(err)}")


def new_socket(spec: AfPacketSpec) -> socket.socket:
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


def bind_socket(sock: socket.socket, spec: AfPacketSpec, proto: int) -> None:
    try:
        sock.bind((spec.iface, proto))
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.ENXIO):
            ns = f"netns {spec.netns!r}" if spec.netns else "this network namespace"
            raise InterfaceNotFoundError(exc.errno, f"no interface {spec.iface!r} in {ns}") from None
        raise AfPacketError(exc.errno, f"cannot bind to {spec.where}: {exc.strerror}") from None


def interface_mtu(sock: socket.socket, spec: AfPacketSpec) -> int:
    req = struct.pack("16si12x", spec.iface.encode(), 0)
    return int(struct.unpack_from("i", fcntl.ioctl(sock.fileno(), SIOCGIFMTU, req), 16)[0])


def map_ring(sock: socket.socket, size: int, spec: AfPacketSpec) -> mmap.mmap:
    try:
        return mmap.mmap(sock.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except OSError as exc:
        raise AfPacketError(exc.errno, f"cannot map the {size >> 20} MiB packet ring of {spec.where}: "
                            f"{exc.strerror}") from None


def set_ring(sock: socket.socket, option: int, req: bytes, spec: AfPacketSpec) -> None:
    try:
        sock.setsockopt(SOL_PACKET, option, req)
    except OSError as exc:
        raise AfPacketError(exc.errno, f"the kernel refused the packet ring geometry for {spec.where}: "
                            f"{exc.strerror}") from None


def release_map(mm: mmap.mmap | None) -> None:
    """Unmap now if no frame batch still views the ring; otherwise when the last view goes."""
    if mm is not None:
        with contextlib.suppress(BufferError):
            mm.close()
