"""The Rx service (§IV-C4, §VI-C): frames from an I/O backend into the graph, classified.

One process per deployed graph, forked by the graph's zygote, and the pool's owner (the only
allocator). Per burst, Python calls the backend's ``recv`` once and :func:`rx_burst` once; the
kernel allocates buffers, copies each frame into its slot (whole, never cut: see ``oversize``),
stamps the Rx time (TSC, once per burst) and the input port, computes the flow hash (stored in
the metadata: load balancers downstream reuse it; a replayed trace hands it over, computed once:
``FrameBatch.hashes``), classifies the 5-tuple (``classify``) and sends
accepted packets to the graph's entry — or, once the entry µNF was scaled out, to one of its
instances by consistent hash of the flow (flow affinity). Everything else is counted and freed:
``unmatched``, ``rule_drop``, ``pool_empty`` (allocation failed), ``entry_full`` (the entry ring
was full), ``oversize`` (longer than the graph's frame capacity, or marked by the backend with a
negative length as cut). Nothing is held between bursts, so pausing it (the supervisor's accounting) is safe.
Once its backend is open (the capture read, the packet socket bound), the service becomes the
graph's uid, with no capabilities (:func:`~micronf.runtime.privileges.drop_for_service`).
After a burst the entry could not take whole, the service sleeps ~50 µs: on a machine with few
cores an Rx spinning on frames the graph cannot take only steals CPU from the graph (the frames
are dropped and counted either way, as a NIC ring overflows). Small bursts are moderated
(``io_coalesce_us``, see :mod:`micronf.runtime.process`).

A killed Rx service neither replays nor loses track of its source. The source's position is the
``frames`` counter in the graph segment: a replayed source (generator, pcap) that a restarted
service opens continues from it (:meth:`~micronf.io.replay.FrameReplay.resume`), not from the
first frame. Each burst runs inside a journal entry (``rx.journal``: the frame count, the counters
before it, the entry rings' heads) and the entry is closed when the burst's counters are final.
A service killed in between leaves it open; its successor settles it before it reads a frame
(:func:`settle`): the counters go back to the journal's, ``frames`` advances by the whole burst,
the frames that entered the graph (the entry rings' heads moved by that much: only this process
produces into them) are ``accepted`` and the rest of the burst is ``lost_in_crash``. (The
agent's crash reclaim has meanwhile given the buffers the dead process held back to the pool.)
So after any number of kill -9, ``frames == accepted + drops + lost_in_crash`` exactly and no
frame enters the graph twice.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.atomics import cycles, fence_seq_cst, load_acquire, prefetch_write, store_release
from micronf.dataplane.borrow import borrowed
from micronf.dataplane.control import ControlLine
from micronf.dataplane.memcopy import copy_bytes
from micronf.dataplane.pool import (
    C_FRAME_CAP,
    DATA_OFF,
    M_DATA_OFF,
    M_HASH,
    M_LEN,
    M_PORT,
    Q_RX_TIME,
    PoolArrays,
    pool_alloc,
    pool_free_owner,
)
from micronf.dataplane.ring import HEAD, ring_enqueue
from micronf.io.backend import RxBackend
from micronf.io.replay import FrameReplay, TimestampPacer
from micronf.io.sequence import warm as warm_sequence
from micronf.io.specs import open_rx
from micronf.packet.flowhash import frame_flow_hash, jump_hash
from micronf.ports.base import MAX_FANOUT
from micronf.runtime.privileges import drop_for_service
from micronf.runtime.process import Pacing
from micronf.runtime.scheduling import apply_scheduling
from micronf.runtime.stage import GraphMemory
from micronf.services.classify import ACCEPT, DROP, RuleTables, classify_frame, compile_rules
from micronf.services.config import RxConfig, read_rx_config
from micronf.services.iomem import (
    J_ACTIVE,
    J_HEAD0,
    J_IDLE,
    J_N,
    J_RING0,
    J_RINGS,
    J_SNAP0,
    J_STATE,
    RX_COUNTERS,
    RX_INDEX,
    service_error,
)

PREFETCH_AHEAD = 8  # frames: the slots of frame i + 8 are fetched while frame i is copied
BACKOFF_S = 0.00005  # pause after a burst the entry ring could not take whole (the frames are counted as dropped)
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]
U8 = npt.NDArray[np.uint8]
I32 = npt.NDArray[np.int32]
# counters, by index (see iomem.RX_COUNTERS)
R_FRAMES, R_BYTES, R_ACCEPTED, R_UNMATCHED, R_RULE_DROP, R_POOL_EMPTY, R_ENTRY_FULL, R_OVERSIZE, R_BATCHES = (
    RX_INDEX[k] for k in ("frames", "bytes", "accepted", "unmatched", "rule_drop", "pool_empty", "entry_full",
                          "oversize", "batches"))
R_LOST = RX_INDEX["lost_in_crash"]
N_COUNTERS = len(RX_COUNTERS)


@njit(cache=True, nogil=True, inline="always")
def _prefetch_slot(p: PoolArrays, h: int, ln: int) -> None:
    """Fetch for writing the lines of slot ``h`` that the copy of an ``ln``-byte frame will write:
    its metadata line and the frame's lines. They were last used by the graph's processes, often on
    another core: without this, each line's ownership transfer stalls the copy in turn."""
    slot = p.data[h]
    prefetch_write(slot, 0)
    for off in range(DATA_OFF, min(DATA_OFF + ln, slot.shape[0]), 64):
        prefetch_write(slot, off)


@njit(cache=True, nogil=True, inline="always")
def _journal_open(journal: I64, stats: I64, rctrl: I64, entries: I64, n_entries: int, n: int) -> None:
    """Record the burst about to be worked on, then mark the journal active (release: a successor
    that sees it active sees the record; the fence: no counter of the burst changes before)."""
    for i in range(N_COUNTERS):
        journal[J_SNAP0 + i] = stats[i]
    for e in range(n_entries):
        r = entries[1 + e]
        journal[J_RING0 + e] = r
        journal[J_HEAD0 + e] = rctrl[r, HEAD]
    journal[J_RINGS] = n_entries
    journal[J_N] = n
    store_release(journal, J_STATE, J_ACTIVE)
    fence_seq_cst()


@njit(cache=True, nogil=True)
def rx_burst(p: PoolArrays, rctrl: I64, rslots: U32, entries: I64, journal: I64, data: U8, off: I64, length: I32,
             n: int, hashes: U32, rules: RuleTables, port: int, stats: I64, hbuf: U32, out: U32, rest: U32) -> int:
    """Move frames ``0..n-1`` into the graph (see the module docstring); returns packets accepted.
    ``hashes``: the frames' flow hashes when the backend knows them (else empty: computed here).
    ``hbuf``/``out``/``rest`` are scratch arrays of at least ``n`` handles."""
    # unreferenced views (the caller keeps the arrays alive): no refcounting per helper call and frame
    p, data, rules, hbuf, hashes = borrowed(p), borrowed(data), borrowed(rules), borrowed(hbuf), borrowed(hashes)
    known = hashes.shape[0] >= n
    rctrl, rslots = borrowed(rctrl), borrowed(rslots)
    n_entries = max(min(load_acquire(entries, 0), MAX_FANOUT), 1)
    _journal_open(journal, stats, rctrl, entries, n_entries, n)
    stats[R_FRAMES] += n
    stats[R_BATCHES] += 1
    k = pool_alloc(p, hbuf, n)
    stats[R_POOL_EMPTY] += n - k
    now = cycles()
    cap = p.ctrl[C_FRAME_CAP]
    n_out = 0
    n_rest = 0
    for i in range(min(PREFETCH_AHEAD, k)):
        _prefetch_slot(p, hbuf[i], int(length[i]))
    for i in range(k):
        if i + PREFETCH_AHEAD < k:
            _prefetch_slot(p, hbuf[i + PREFETCH_AHEAD], int(length[i + PREFETCH_AHEAD]))
        h = hbuf[i]
        ln = int(length[i])
        stats[R_BYTES] += abs(ln)
        if ln < 0 or ln > cap:  # never cut a frame to fit: drop it whole
            stats[R_OVERSIZE] += 1
            rest[n_rest] = h
            n_rest += 1
            continue
        start = int(p.words[h, M_DATA_OFF])
        src = off[i]
        copy_bytes(p.data[h], start, data, src, ln)
        p.words[h, M_LEN] = ln
        p.words[h, M_PORT] = port
        p.qwords[h, Q_RX_TIME] = now
        frame = p.data[h, start : start + ln]
        verdict = classify_frame(frame, rules)
        if verdict == ACCEPT:
            fh = hashes[i] if known else frame_flow_hash(frame)
            p.words[h, M_HASH] = fh
            out[n_out] = h
            n_out += 1
        else:
            stats[R_RULE_DROP if verdict == DROP else R_UNMATCHED] += 1
            rest[n_rest] = h
            n_rest += 1
    sent_total = 0
    if n_entries == 1:
        sent_total = ring_enqueue(rctrl[entries[1]], rslots[entries[1]], out, n_out)
        for j in range(sent_total, n_out):
            rest[n_rest] = out[j]
            n_rest += 1
    else:  # flow affinity over the entry µNF's instances: sort into contiguous groups in hbuf
        pos = 0
        for e in range(n_entries):
            m = 0
            for j in range(n_out):
                if jump_hash(p.words[out[j], M_HASH], n_entries) == e:
                    hbuf[pos + m] = out[j]
                    m += 1
            if m:
                r = entries[1 + e]
                sent = ring_enqueue(rctrl[r], rslots[r], hbuf[pos:], m)
                sent_total += sent
                for j in range(pos + sent, pos + m):
                    rest[n_rest] = hbuf[j]
                    n_rest += 1
            pos += m
    stats[R_ACCEPTED] += sent_total
    stats[R_ENTRY_FULL] += n_out - sent_total
    if n_rest:
        pool_free_owner(p, rest, n_rest)
    store_release(journal, J_STATE, J_IDLE)
    return sent_total


def settle(journal: I64, stats: I64, rctrl: I64) -> int:
    """Close the journal entry of a burst a killed Rx process left open (see the module docstring);
    returns the frames lost in the crash. Idempotent: killed while settling, the next one redoes it."""
    if int(journal[J_STATE]) != J_ACTIVE:  # its writer is dead: a plain read
        return 0
    n = int(journal[J_N])
    entered = sum(int(rctrl[int(journal[J_RING0 + e]), HEAD]) - int(journal[J_HEAD0 + e])
                  for e in range(int(journal[J_RINGS])))
    stats[:N_COUNTERS] = journal[J_SNAP0 : J_SNAP0 + N_COUNTERS]
    stats[R_FRAMES] += n
    stats[R_ACCEPTED] += entered
    stats[R_LOST] += n - entered
    journal[J_STATE] = J_IDLE
    return n - entered


def warm(segment: str) -> None:
    """Compile (or load) the Rx kernel with its real argument types (run in the zygote)."""
    mem = GraphMemory.attach(segment)
    scratch = np.zeros(1, dtype=np.uint32)
    journal = np.zeros(J_SNAP0 + N_COUNTERS, np.int64)  # not the graph's: warming must not touch it
    rx_burst(mem.pool.arrays, mem.rings.ctrl, mem.rings.slots, mem.seg.view("entries", np.int64), journal,
             np.zeros(1, np.uint8), np.zeros(1, np.int64), np.zeros(1, np.int32), 0, scratch, compile_rules([]), 0,
             np.zeros(64, np.int64), scratch, scratch, scratch)
    # the pcap pacer too: compiled on its first call, it held a replay back while its clock ran,
    # and then the frames due meanwhile went out at once
    TimestampPacer(np.array([0, 1], np.int64)).allowed(0, 0)
    warm_sequence(mem.pool.arrays)  # the generator's sequence stamp (and the sink's check)


class RxStage:
    """The Rx service as the runtime's process runner runs it: one backend burst per step."""

    def __init__(self, mem: GraphMemory, cfg: RxConfig, backend: RxBackend | None) -> None:
        self.backend = backend
        self.rules = compile_rules(cfg.rules)
        self.stats = stats = mem.seg.view("rx.stats", np.int64)
        journal = mem.seg.view("rx.journal", np.int64)
        lost = settle(journal, stats, mem.rings.ctrl)
        if lost:
            print(f"micronf-rx[{cfg.name}]: {lost} frames of the burst in hand were lost in the crash",
                  file=sys.stderr)
        if isinstance(backend, FrameReplay):  # a restart continues the source where it stopped
            backend.resume(int(stats[R_FRAMES]))
        self.kernel_drops = int(stats[RX_INDEX["kernel_drops"]])  # what earlier processes' sockets counted
        self.burst = max(cfg.burst, 256)
        self.hbuf, self.out, self.rest = (np.empty(self.burst, dtype=np.uint32) for _ in range(3))
        self.args = (mem.pool.arrays, mem.rings.ctrl, mem.rings.slots, mem.seg.view("entries", np.int64), journal)
        self.next_stats = 0.0

    def step(self, limit: int = 0) -> int:
        """One backend burst of at most ``limit`` frames (0: the service's burst) into the graph."""
        backend, stats = self.backend, self.stats
        if backend is None:
            return 0
        b = backend.recv(limit or self.burst)
        if time.monotonic() >= self.next_stats:  # what the backend lost before us (e.g. a full kernel ring)
            stats[RX_INDEX["kernel_drops"]] = self.kernel_drops + backend.stats().get("kernel_drops", 0)
            self.next_stats = time.monotonic() + 0.1
        if b.n:
            full = stats[R_ENTRY_FULL]
            rx_burst(*self.args, b.data, b.off, b.length, b.n, b.hashes, self.rules, 0, stats, self.hbuf, self.out,
                     self.rest)
            if stats[R_ENTRY_FULL] != full:  # the graph is saturated: let it run instead of spinning on drops
                time.sleep(BACKOFF_S)
        elif backend.exhausted:
            stats[RX_INDEX["exhausted"]] = 1
        return b.n

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()


def open_input(cfg: RxConfig) -> RxBackend | None:
    """The configured backend, taking only the config's flow shard (None: no traffic)."""
    return open_rx(cfg.backend, cfg.sharding) if cfg.backend is not None else None


def open_stage(mem: GraphMemory, line: ControlLine) -> tuple[RxStage, Pacing]:
    """The runner's entry (see ``micronf.runtime.process``): open the backend, become the graph's uid."""
    cfg = read_rx_config(mem.seg)
    try:
        apply_scheduling(0, cfg.cpu, cfg.policy)
        backend = open_input(cfg)
        drop_for_service(mem)  # the capture is read, the socket open: the graph's uid from here on
    except (OSError, ValueError) as exc:
        raise service_error(mem.seg, "Rx", cfg.name, exc) from None
    stage = RxStage(mem, cfg, backend)
    return stage, Pacing(burst=stage.burst, coalesce_us=cfg.coalesce_us)
