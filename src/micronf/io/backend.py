"""The one interface every packet I/O backend offers the Rx and Tx services.

Why one interface: the Rx service (read bursts, stamp, classify, copy into the graph's pool) and
the Tx service (rewrite, write out, return buffers) must not care whether frames come from a
synthetic generator, a pcap replayed from memory or a kernel interface. Each backend turns its
source into *frame batches* — plain arrays compiled code can read — and each sink takes pool
handles, so no per-packet Python call exists on either side.

Rx: :meth:`RxBackend.recv` returns a :class:`FrameBatch`: frame ``i`` is ``data[off[i] : off[i] +
length[i]]``. A negative ``length[i]`` marks a frame of ``-length[i]`` bytes the backend could not
hold whole (e.g. cut by the kernel to fit its ring): it must not be read, and the Rx service drops
it as ``oversize`` (a frame is never forwarded cut). The frames stay valid until the next ``recv``
(or ``close``): an AF_PACKET backend hands out a TPACKET_V3 block in place and gives the block back
to the kernel on the next call; a generator or pcap backend hands out a window of frames it keeps in
memory. ``n == 0`` means nothing right now; ``exhausted`` says nothing will ever come again (a
finite pcap or a generator with a packet count, once every frame was handed out).

Tx: :meth:`TxBackend.send` writes the frames of pool slots ``handles[:n]`` and returns how many
it took; it never frees them (the Tx service frees every handle after the call and counts the
ones not taken as drops with the backend's reason).

Backends are built from a declarative, validated spec (:data:`RxSpec` / :data:`TxSpec`, a
pydantic discriminated union on ``kind``) by :func:`open_rx` / :func:`open_tx`, so the agent's
API and the CLI share one format, e.g. ``{"kind": "afpacket", "iface": "veth0"}``.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from micronf.dataplane.pool import PoolArrays

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
Handles = npt.NDArray[np.uint32]


NO_HASHES: Handles = np.zeros(0, np.uint32)


class FrameBatch(NamedTuple):
    """Frames ``data[off[i] : off[i] + length[i]]`` for ``i < n`` (arrays may be longer than ``n``);
    a negative length marks a frame the backend could only hold cut (see the module docstring).
    ``hashes``: each frame's flow hash (:func:`~micronf.packet.flowhash.frame_flow_hash`) when the
    backend knows it already, like a NIC's RSS hash in the descriptor (a replayed trace computes
    them once); empty otherwise, and the Rx service computes them."""

    data: U8
    off: I64
    length: I32
    n: int
    hashes: Handles = NO_HASHES


def empty_batch() -> FrameBatch:
    """A batch with no frames (what ``recv`` returns when nothing is waiting)."""
    return FrameBatch(np.zeros(0, np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int32), 0)


@runtime_checkable
class RxBackend(Protocol):
    """A source of frame batches."""

    @property
    def exhausted(self) -> bool:
        """True once no frame will ever come again (finite sources only)."""
        ...

    def recv(self, max_frames: int) -> FrameBatch:
        """Up to ``max_frames`` frames, valid until the next call; ``n == 0`` when none is waiting.
        Never blocks for long (at most ~1 ms), so the caller can notice a stop request."""
        ...

    def stats(self) -> dict[str, int]:
        """Backend counters, e.g. ``frames``, ``bytes``, ``kernel_drops``."""
        ...

    def close(self) -> None:
        """Release the source (socket, ring mapping); idempotent."""
        ...


@runtime_checkable
class TxBackend(Protocol):
    """A sink for frames held in pool slots."""

    def send(self, p: PoolArrays, handles: Handles, n: int) -> int:
        """Write the frames of ``handles[:n]`` (in order); returns how many were taken (a prefix).
        Does not free the handles."""
        ...

    def flush(self) -> None:
        """Push out anything buffered (a Tx ring kick, a file flush)."""
        ...

    def stats(self) -> dict[str, int]:
        """Backend counters, e.g. ``frames``, ``bytes``, ``errors``."""
        ...

    def close(self) -> None:
        """Flush and release the sink; idempotent."""
        ...
