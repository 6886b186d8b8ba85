"""The process runner's control loop around any stage: readiness, stop, pause, and the pacing of a
service stage (interrupt moderation of small bursts)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from micronf.dataplane.control import ControlBlock, ControlLine
from micronf.runtime import process


def fresh_line() -> ControlLine:
    return ControlBlock(np.zeros(ControlBlock.nbytes(1) // 8, dtype=np.int64)).line(0)


class Steps:
    """A stage moving ``bursts[i]`` packets in step i, then asking its own line to stop."""

    def __init__(self, line: ControlLine, bursts: list[int]) -> None:
        self.line = line
        self.bursts = bursts
        self.log: list[tuple[int, float]] = []  # (moved, slept after)
        self.closed = False

    def step(self) -> int:
        assert self.line.ready  # ready before the first step
        moved = self.bursts[len(self.log)]
        self.log.append((moved, 0.0))
        if len(self.log) == len(self.bursts):
            self.line.request_stop()
        return moved

    def close(self) -> None:
        self.closed = True


def run(bursts: list[int], pacing: process.Pacing, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, float]]:
    """Run the loop over ``bursts``, then stop: (moved, sleep after) per step."""
    line = fresh_line()
    stage = Steps(line, bursts)

    def sleep(seconds: float) -> None:
        stage.log[-1] = (stage.log[-1][0], stage.log[-1][1] + seconds)

    monkeypatch.setattr(process.time, "sleep", sleep)
    monkeypatch.setattr(process.os, "sched_yield", lambda: None)
    process.run_stage(line, stage, pacing)
    assert not line.ready  # no longer ready once stopped
    assert line.calls == len(bursts) and line.starts == 1
    return stage.log


def test_small_bursts_wait_and_busy_ones_do_not(monkeypatch: pytest.MonkeyPatch) -> None:
    log = run([1, 31, 32, 256, 200, 5], process.Pacing(burst=256, coalesce_us=100), monkeypatch)
    waited = [moved for moved, slept in log if slept == pytest.approx(100e-6)]
    assert waited == [1, 31, 5]  # under 256 / 8 = 32 frames: wait 100 µs for the next burst to build up
    assert [slept for moved, slept in log if moved >= 32] == [0.0, 0.0, 0.0]


def test_coalescing_off_never_waits_after_traffic(monkeypatch: pytest.MonkeyPatch) -> None:
    log = run([1, 2, 3], process.Pacing(burst=256, coalesce_us=0), monkeypatch)
    assert [slept for _, slept in log] == [0.0, 0.0, 0.0]


def test_a_stage_that_idles_inside_its_step_is_never_paced(monkeypatch: pytest.MonkeyPatch) -> None:
    log = run([0] * 100 + [1, 0], process.Pacing(), monkeypatch)  # a µNF's compiled loop idles itself
    assert all(slept == 0.0 for _, slept in log)


@pytest.mark.timeout(30)
def test_a_pause_is_honoured_between_steps_and_resumed() -> None:
    line = fresh_line()
    steps = 0
    paused_at: list[int] = []

    class Counting:
        def step(self) -> int:
            nonlocal steps
            steps += 1
            return 1

        def close(self) -> None:
            pass

    runner = threading.Thread(target=process.run_stage, args=(line, Counting(), process.Pacing()))
    runner.start()
    try:
        line.request_pause()
        while not line.paused:
            pass
        paused_at.append(steps)
        threading.Event().wait(0.05)
        assert steps == paused_at[0]  # no step while paused
        line.resume()
        while steps < paused_at[0] + 10:
            pass
        assert not line.paused
    finally:
        line.request_stop()
        runner.join(10)
    assert not runner.is_alive() and not line.ready
