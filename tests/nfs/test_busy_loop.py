"""BusyLoop: every frame passes unchanged, and at least ``cycles`` counter ticks go by per packet."""

from __future__ import annotations

import time

import pytest
from numba import njit
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from micronf.dataplane.atomics import cycles
from micronf.nfs.busy_loop import BusyLoop
from micronf.runtime.harness import run_kernel
from micronf.runtime.nf import DOC_SECTIONS, NFConfigError


@njit
def _now() -> int:
    return cycles()


def tsc_hz() -> float:
    """Rough ticks per second of the cycle counter, measured against the wall clock."""
    _now()  # compile first
    t0, c0 = time.perf_counter(), _now()
    time.sleep(0.05)
    return (_now() - c0) / (time.perf_counter() - t0)


FRAMES = [bytes(Ether() / IP() / TCP(sport=i)) for i in range(40)]


def test_frames_pass_unchanged() -> None:
    for n in (0, 500):
        run = run_kernel(BusyLoop({"cycles": n}), FRAMES)
        assert run.outputs["out"] == FRAMES
    assert run_kernel(BusyLoop(), [b"", b"\x00"]).verdicts == ["out", "out"]


def test_spends_at_least_the_budget_per_packet() -> None:
    budget = 2_000_000
    run_kernel(BusyLoop({"cycles": 1}), FRAMES[:1])  # compile outside the timing
    hz = tsc_hz()
    t0 = time.perf_counter()
    run = run_kernel(BusyLoop({"cycles": budget}), FRAMES)
    elapsed = time.perf_counter() - t0
    spent = run.counters["cycles_spent"]
    assert spent >= budget * len(FRAMES)
    assert elapsed >= 0.9 * budget * len(FRAMES) / hz  # the wall clock agrees that the time went by
    assert spent <= hz * elapsed * 1.1


def test_zero_cycles_spends_nothing_measurable() -> None:
    run = run_kernel(BusyLoop({"cycles": 0}), FRAMES)
    assert run.counters == {"cycles_spent": 0}


@pytest.mark.parametrize("config", [{"cycles": -1}, {"cycles": 10_000_001}, {"cycles": 1.5}, {"cylces": 100}])
def test_bad_config_is_rejected(config: dict[str, object]) -> None:
    with pytest.raises(NFConfigError, match="BusyLoop config"):
        BusyLoop(config)


def test_default_and_descriptor() -> None:
    assert BusyLoop().config.cycles == 100
    assert BusyLoop.descriptor.read_only and not BusyLoop.descriptor.may_drop
    assert all(BusyLoop.doc_sections()[s] for s in DOC_SECTIONS)
