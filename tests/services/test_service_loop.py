"""The I/O services' control loop: interrupt moderation of small bursts, readiness, stop."""

from __future__ import annotations

import numpy as np
import pytest

from micronf.dataplane.control import ControlBlock
from micronf.services import service_loop


def run(bursts: list[int], coalesce_us: int, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    """Run the loop over steps moving ``bursts`` packets (burst size 256), then stop: (moved, sleep after)."""
    ctl = ControlBlock(np.zeros(ControlBlock.nbytes(1) // 8, dtype=np.int64)).line(0)
    log: list[tuple[int, float]] = []

    def sleep(seconds: float) -> None:
        log[-1] = (log[-1][0], log[-1][1] + seconds)

    def step() -> int:
        assert ctl.ready  # ready before the first burst
        moved = bursts[len(log)]
        log.append((moved, 0.0))
        if len(log) == len(bursts):
            ctl.request_stop()
        return moved

    monkeypatch.setattr(service_loop.time, "sleep", sleep)
    monkeypatch.setattr(service_loop.os, "sched_yield", lambda: None)
    service_loop.run_service(ctl, step, burst=256, coalesce_us=coalesce_us)
    assert not ctl.ready  # no longer ready once stopped
    return log


def test_small_bursts_wait_and_busy_ones_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    log = run([1, 31, 32, 256, 200, 5], 100, monkeypatch)
    waited = [moved for moved, slept in log if slept == pytest.approx(100e-6)]
    assert waited == [1, 31, 5]  # under 256 / 8 = 32 frames: wait 100 µs for the next burst to build up
    assert [slept for moved, slept in log if moved >= 32] == [0.0, 0.0, 0.0]


def test_coalescing_off_never_waits_after_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    log = run([1, 2, 3], 0, monkeypatch)
    assert [slept for _, slept in log] == [0.0, 0.0, 0.0]
