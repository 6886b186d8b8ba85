"""The Tx service (§IV-C5, §VI-C): the graph's exits out through I/O backends, buffers back.

One process per deployed graph, forked by its zygote. Each loop: :func:`tx_collect` drains every
exit ring into a per-exit batch (one compiled call for all exits) and rewrites the destination MAC
to the exit's next hop; Python hands each non-empty batch to that exit's backend (``send`` is
itself one batched call); :func:`tx_release` counts what was sent and refused, records the
end-to-end latency of sent packets (Tx time - Rx stamp, see ``iomem``) and frees every buffer.
An exit with no configured output is drained and counted as ``no_output``. Exits added by a
scale-out of the last µNF (same exit name, new ring) are picked up when the layout changes.
Every :data:`FLUSH_S` the backends are flushed, so a pcap output is readable while the graph runs.
Once every output is open, the service becomes the graph's uid, with no capabilities
(:func:`~micronf.runtime.privileges.drop_for_service`): a pcap output is written (flushed, closed)
through the file it opened as root and never reopened, a packet socket needs no capability to send,
and every kernel it runs was loaded before (:func:`warm`).
"""

from __future__ import annotations

import os
import time

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.atomics import cycles, prefetch
from micronf.dataplane.borrow import borrowed
from micronf.dataplane.control import ControlLine
from micronf.dataplane.pool import M_DATA_OFF, M_LEN, Q_RX_TIME, PoolArrays, pool_free
from micronf.dataplane.ring import HEAD, ring_dequeue
from micronf.io.afpacket_tx import warm_tx as warm_afpacket_tx
from micronf.io.backend import TxBackend
from micronf.io.pcap_write import PcapWriter
from micronf.io.sequence import warm as warm_sequence
from micronf.io.specs import open_tx
from micronf.io.trace import batch_bytes
from micronf.runtime.privileges import drop_for_service
from micronf.runtime.process import Pacing
from micronf.runtime.scheduling import apply_scheduling
from micronf.runtime.stage import GraphMemory, read_layout
from micronf.services.config import TxConfig, read_tx_config
from micronf.services.iomem import TX_INDEX, TX_WORDS, record_latency, service_error

FLUSH_S = 0.5  # at most this long between a frame's transmission and its arrival in a pcap output
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
U8 = npt.NDArray[np.uint8]
T_FRAMES, T_BYTES, T_REFUSED, T_NO_OUTPUT, T_BATCHES = (
    TX_INDEX[k] for k in ("frames", "bytes", "refused", "no_output", "batches"))


@njit(cache=True, nogil=True)
def tx_collect(p: PoolArrays, rctrl: I64, rslots: U32, rings: I64, exit_of: I64, held: U32, n_held: I64,
               macs: U8, has_mac: U8) -> int:
    """Drain each ring ``rings[r]`` into ``held[exit_of[r]]`` (up to its room); rewrite destination
    MACs of exits with a next hop. Returns the packets taken."""
    # unreferenced views (the caller keeps the arrays alive): no refcounting per ring and frame
    p, rctrl, rslots, held = borrowed(p), borrowed(rctrl), borrowed(rslots), borrowed(held)
    room = held.shape[1]
    total = 0
    for r in range(rings.shape[0]):
        e = exit_of[r]
        start = n_held[e]
        k = ring_dequeue(rctrl[rings[r]], rslots[rings[r]], held[e, start:], room - start)
        if k == 0:
            continue
        n_held[e] = start + k
        total += k
        for i in range(start, start + k):  # the metadata lines (length, Rx stamp) come from another core
            prefetch(p.words[held[e, i]], 0)
        if has_mac[e]:
            for i in range(start, start + k):
                h = held[e, i]
                if p.words[h, M_LEN] >= 6:
                    o = int(p.words[h, M_DATA_OFF])
                    p.data[h, o : o + 6] = macs[e]
    return total


@njit(cache=True, nogil=True)
def tx_count(p: PoolArrays, handles: U32, n: int, sent: int, stats: I64, no_output: bool, hist: I64,
             ns_per_cycle: float, stamps: I64) -> None:
    """Count a batch of one exit after its backend took ``sent`` of ``n``; record the latency of the
    sent ones. The buffers are still held: a crash from here until :func:`tx_release` frees them
    leaves them counted but not freed (the supervisor's reclaim frees them without counting again)."""
    p = borrowed(p)  # unreferenced (the caller keeps it alive): no refcounting per call below
    now = cycles()
    nbytes = 0
    for i in range(sent):
        h = handles[i]
        nbytes += p.words[h, M_LEN]
        stamps[i] = p.qwords[h, Q_RX_TIME]
    record_latency(hist, stamps, sent, now, ns_per_cycle)
    stats[T_FRAMES] += sent
    stats[T_BYTES] += nbytes
    if no_output:
        stats[T_NO_OUTPUT] += n - sent
    else:
        stats[T_REFUSED] += n - sent
    stats[T_BATCHES] += 1


@njit(cache=True, nogil=True)
def tx_release(p: PoolArrays, client: int, handles: U32, n: int, sent: int, stats: I64, no_output: bool,
               hist: I64, ns_per_cycle: float, stamps: I64) -> None:
    """Count a batch (:func:`tx_count`), then free all ``n`` buffers through return ring ``client``."""
    tx_count(p, handles, n, sent, stats, no_output, hist, ns_per_cycle, stamps)
    pool_free(borrowed(p), client, handles, n)


def tx_done(mem: GraphMemory, exits: int) -> int:
    """Packets the Tx service counted over the first ``exits`` exits: sent, refused or without output."""
    txv = mem.seg.view("tx.stats", np.int64).reshape(-1, TX_WORDS)[:exits]
    return int(txv[:, [T_FRAMES, T_REFUSED, T_NO_OUTPUT]].sum())


def counted_unfreed(mem: GraphMemory, exits: int, client: int, line: ControlLine) -> int:
    """Buffers the Tx service (whose pool return ring is ``client``, control line ``line``) counted
    but did not free yet: it counts a batch (:func:`tx_count`), then frees it, so its counts minus
    the return ring's head minus what earlier crash reclaims settled on ``line`` is 0 between
    batches, and for a killed service exactly the counted part of the buffers it held (a reclaim
    frees them; they must not be counted again as lost)."""
    return tx_done(mem, exits) - int(mem.pool.arrays.ret_ctrl[client, HEAD]) - line.settled


def warm(segment: str) -> None:
    """Compile (or load) the Tx kernels with their real argument types (run in the zygote)."""
    mem = GraphMemory.attach(segment)
    held = np.zeros((1, 1), dtype=np.uint32)
    z64 = np.zeros(1, dtype=np.int64)
    tx_collect(mem.pool.arrays, mem.rings.ctrl, mem.rings.slots, np.zeros(0, np.int64), z64, held, z64,
               np.zeros((1, 6), np.uint8), np.zeros(1, np.uint8))
    tx_release(mem.pool.arrays, 0, held[0], 0, 0, np.zeros(8, np.int64), False,
               mem.seg.view("tx.hist", np.int64), 1.0, z64)
    # The pool-side kernels of every backend too (the null and pcap sinks: counting, gathering,
    # building records; AF_PACKET's): compiled lazily on the first frames, a cold cache made the Tx
    # service stall for ~0.4 s with traffic already flowing (ring full), and once the service has
    # dropped root (see the module docstring) it can neither read numba's cache nor write it.
    with PcapWriter(os.devnull) as writer:
        writer.write_pool(mem.pool.arrays, held[0], 0)
    batch_bytes(mem.pool.arrays.words, held[0], 0)  # the pcap and null sinks' byte count
    warm_afpacket_tx(mem.pool.arrays)
    warm_sequence(mem.pool.arrays)  # the seqcheck sink


def _mac_bytes(mac: str | None) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(mac.replace(":", "")), dtype=np.uint8) if mac else np.zeros(6, np.uint8)


class _Exits:
    """The exit rings of the current layout, grouped by exit name (stats row = first-seen order)."""

    def __init__(self, mem: GraphMemory, names: list[str]) -> None:
        layout = read_layout(mem.seg)
        self.rings = np.array([x.ring for x in layout.exits], dtype=np.int64)
        self.exit_of = np.array([names.index(x.name) for x in layout.exits], dtype=np.int64)


class TxStage:
    """The Tx service as the runtime's process runner runs it: every exit drained once per step."""

    def __init__(self, mem: GraphMemory, cfg: TxConfig, backends: list[TxBackend | None], client: int) -> None:
        self.mem = mem
        self.backends = backends
        self.client = client
        self.names = [out.exit for out in cfg.outputs]
        self.ns_per_cycle = cfg.ns_per_cycle
        self.macs = np.stack([_mac_bytes(out.next_hop_mac) for out in cfg.outputs])
        self.has_mac = np.array([out.next_hop_mac is not None for out in cfg.outputs], np.uint8)
        self.burst = max(cfg.burst, 256)
        self.held = np.empty((len(self.names), self.burst), dtype=np.uint32)
        self.n_held = np.zeros(len(self.names), dtype=np.int64)
        self.stamps = np.empty(self.burst, dtype=np.int64)
        self.stats = mem.seg.view("tx.stats", np.int64).reshape(-1, TX_WORDS)
        self.hist = mem.seg.view("tx.hist", np.int64)
        self.gen = mem.control.layout_generation
        self.exits = _Exits(mem, self.names)
        self.next_flush = time.monotonic() + FLUSH_S

    def step(self) -> int:
        mem, backends, held, n_held = self.mem, self.backends, self.held, self.n_held
        p = mem.pool.arrays
        if time.monotonic() >= self.next_flush:  # files stay readable while the graph runs
            for b in backends:
                if b is not None:
                    b.flush()
            self.next_flush = time.monotonic() + FLUSH_S
        if mem.control.layout_generation != self.gen:  # the layout was rewritten (scale-out): re-read the exits
            self.gen = mem.control.layout_generation
            self.exits = _Exits(mem, self.names)
        moved = tx_collect(p, mem.rings.ctrl, mem.rings.slots, self.exits.rings, self.exits.exit_of, held, n_held,
                           self.macs, self.has_mac)
        for e in np.flatnonzero(n_held):
            n = int(n_held[e])
            backend = backends[e]
            sent = backend.send(p, held[e], n) if backend is not None else 0
            tx_release(p, self.client, held[e], n, sent, self.stats[e], backend is None, self.hist, self.ns_per_cycle,
                       self.stamps)
            n_held[e] = 0
        return moved

    def close(self) -> None:
        close_outputs(self.backends)


def open_outputs(cfg: TxConfig) -> list[TxBackend | None]:
    """Every output of ``cfg`` opened (None: no backend); on failure those opened are closed again."""
    backends: list[TxBackend | None] = []
    try:
        for out in cfg.outputs:
            backends.append(open_tx(out.backend) if out.backend is not None else None)
    except BaseException:
        close_outputs(backends)
        raise
    return backends


def close_outputs(backends: list[TxBackend | None]) -> None:
    for b in backends:
        if b is not None:
            b.close()


def open_stage(mem: GraphMemory, line: ControlLine, client: str) -> tuple[TxStage, Pacing]:
    """The runner's entry (see ``micronf.runtime.process``): open every output, become the graph's
    uid; ``client`` is the service's pool return ring."""
    cfg = read_tx_config(mem.seg)
    backends: list[TxBackend | None] = []
    try:
        apply_scheduling(0, cfg.cpu, cfg.policy)
        backends = open_outputs(cfg)
        drop_for_service(mem)  # the outputs and sockets are open: the graph's uid from here on
    except (OSError, ValueError) as exc:
        close_outputs(backends)
        raise service_error(mem.seg, "Tx", cfg.name, exc) from None
    stage = TxStage(mem, cfg, backends, int(client))
    return stage, Pacing(burst=stage.burst, coalesce_us=cfg.coalesce_us)
