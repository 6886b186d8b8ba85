"""The Rx/Tx services' part of a graph segment: their config, counters and latency histogram.

The agent creates these regions with the graph (``io_regions``), writes the services' config
(:mod:`micronf.services.config`), and reads the counters the services bump (plain int64 words, each
written by one process only). A service that cannot start (e.g. an interface that does not
exist) writes its error text into ``io.error`` before exiting, so the agent can report *why* a
deployment failed, not just that a process died.

Crash safety of the Rx service: ``rx.journal`` records the burst in hand (its frame count, the
counters before it, the entry rings' heads) while the service works on it, so a restarted Rx
service settles a burst its predecessor was killed in and continues its source where it stopped
(see :mod:`micronf.services.rx`).

Latency: the Rx service stamps each packet with the TSC (``Q_RX_TIME``); the Tx service turns
``now - stamp`` into nanoseconds (``ns_per_cycle`` calibrated by the agent) and counts it in a
log-linear histogram (8 buckets per power of two from 64 ns, like HdrHistogram with 3 significant
bits): p50/p90/p99 come out within 12.5 %, max exactly.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from micronf.dataplane.atomics import cycles
from micronf.dataplane.segment import Memory, read_json, write_json
from micronf.ports.base import MAX_FANOUT
from micronf.runtime.process import StageError
from micronf.services.config import CONFIG_BYTES, RX_CONFIG, TX_CONFIG

RX_COUNTERS = ("frames", "bytes", "accepted", "unmatched", "rule_drop", "pool_empty", "entry_full", "oversize",
               "batches", "exhausted", "kernel_drops", "lost_in_crash")
RX_INDEX = {name: i for i, name in enumerate(RX_COUNTERS)}
RX_STAT_WORDS = 64
# rx.journal (int64 words): state (J_IDLE / J_ACTIVE), frames in the burst, number of entry rings,
# then the entry rings and their heads when the burst began, then the Rx counters before it.
J_STATE, J_N, J_RINGS = 0, 1, 2
J_RING0 = 8
J_HEAD0 = J_RING0 + MAX_FANOUT
J_SNAP0 = J_HEAD0 + MAX_FANOUT
J_WORDS = J_SNAP0 + RX_STAT_WORDS
J_IDLE, J_ACTIVE = 0, 1
TX_COUNTERS = ("frames", "bytes", "refused", "no_output", "batches")
TX_INDEX = {name: i for i, name in enumerate(TX_COUNTERS)}
TX_WORDS = 8  # per exit
MAX_EXITS = 256
SUB_BITS = 3
MIN_EXP = 6  # first bucket boundary 2**6 ns
N_BUCKETS = 1 + (63 - MIN_EXP) * (1 << SUB_BITS)
H_COUNT, H_SUM, H_MAX = N_BUCKETS, N_BUCKETS + 1, N_BUCKETS + 2
HIST_WORDS = N_BUCKETS + 3
ERROR_BYTES = 4096

I64 = npt.NDArray[np.int64]


def io_regions() -> dict[str, int]:
    """Regions the Rx/Tx services need in the graph segment."""
    return {
        RX_CONFIG: CONFIG_BYTES,
        TX_CONFIG: CONFIG_BYTES,
        "io.error": ERROR_BYTES,
        "rx.stats": RX_STAT_WORDS * 8,
        "rx.journal": J_WORDS * 8,
        "tx.stats": MAX_EXITS * TX_WORDS * 8,
        "tx.hist": HIST_WORDS * 8,
    }


def write_error(mem: Memory, text: str) -> None:
    """Record why a service could not run (cut to fit the region)."""
    write_json(mem, "io.error", text[: ERROR_BYTES // 8])


def service_error(mem: Memory, service: str, graph: str, exc: BaseException) -> StageError:
    """Report why ``service`` (``"Rx"``, ``"Tx"``, ...) of graph ``graph`` could not open, in the
    segment (for the agent) and on stderr; returns the error its stage raises (exit status 3)."""
    write_error(mem, f"{service} service: {exc}")
    print(f"micronf-{service.lower()}[{graph}]: {exc}", file=sys.stderr)
    return StageError(3)


def read_error(mem: Memory) -> str:
    text = read_json(mem, "io.error")
    return str(text) if text else ""


# -- latency ------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def bucket_of(ns: int) -> int:
    """Histogram bucket of a latency in nanoseconds."""
    if ns < (1 << MIN_EXP):
        return 0
    e = 0  # the highest set bit, by halving (6 steps instead of a scan from bit 63)
    for shift in (32, 16, 8, 4, 2, 1):
        if ns >> (e + shift):
            e += shift
    sub = (ns >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1)
    return 1 + (e - MIN_EXP) * (1 << SUB_BITS) + sub


def bucket_upper(b: int) -> float:
    """Upper bound (ns, exclusive) of bucket ``b``."""
    if b == 0:
        return float(1 << MIN_EXP)
    e = MIN_EXP + (b - 1) // (1 << SUB_BITS)
    sub = (b - 1) % (1 << SUB_BITS)
    return float((1 << e) + (sub + 1) * (1 << (e - SUB_BITS)))


@njit(cache=True, nogil=True)
def record_latency(hist: I64, stamps: I64, n: int, now: int, ns_per_cycle: float) -> None:
    """Count ``n`` packets whose Rx stamps (TSC) are ``stamps[:n]``, sent at TSC ``now``."""
    for i in range(n):
        d = now - stamps[i]
        ns = int(d * ns_per_cycle) if d > 0 else 0
        hist[bucket_of(ns)] += 1
        hist[H_SUM] += ns
        if ns > hist[H_MAX]:
            hist[H_MAX] = ns
    hist[H_COUNT] += n


def percentiles(hist: I64) -> dict[str, Any]:
    """p50/p90/p99/max (ns) and the non-empty buckets of a histogram region."""
    counts = hist[:N_BUCKETS].astype(np.int64)
    total = int(counts.sum())
    out: dict[str, Any] = {"count": total, "max_ns": float(hist[H_MAX]),
                           "buckets": [(bucket_upper(b), int(c)) for b, c in enumerate(counts) if c]}
    cum = np.cumsum(counts)
    for q in (50, 90, 99):
        if total == 0:
            out[f"p{q}_ns"] = 0.0
            continue
        b = int(np.searchsorted(cum, np.int64(math.ceil(total * q / 100))))
        out[f"p{q}_ns"] = min(bucket_upper(b), float(hist[H_MAX]))
    return out


@njit(cache=True, nogil=True)
def tsc_now() -> int:
    """The TSC, callable from Python."""
    return cycles()


def calibrate_ns_per_cycle(seconds: float = 0.02) -> float:
    """Nanoseconds per TSC tick, measured against the monotonic clock."""
    c0, t0 = tsc_now(), time.perf_counter_ns()
    time.sleep(seconds)
    c1, t1 = tsc_now(), time.perf_counter_ns()
    return (t1 - t0) / max(c1 - c0, 1)
