"""The process runner: one entry point for every process of a graph, µNFs and I/O services alike.

``run(SEGMENT, SLOT, STAGE, ARG...)`` attaches to the graph's segment, opens the *stage* named by
the module path ``STAGE`` (its ``open_stage(mem, line, *args)``: a µNF process is
``micronf.runtime.unf``, the Rx/Tx services are ``micronf.services.rx``/``tx``), and runs it under
one control protocol (see :mod:`micronf.dataplane.control`), whatever the stage does:

- report ``pid`` and ``ready`` once the stage is open (and drop the zygote's start-up priority boost);
- call ``stage.step()`` until the process's line or the graph asks to stop (or SIGTERM/SIGINT),
  counting each call (a heartbeat; the supervisor waits for it to know a rewritten port table
  is in use);
- honour a *pause* between steps: a step hands over (forwards or frees) every buffer it took, so
  after it the supervisor can account for every buffer (a crashed process's reclaim);
- back off as the stage's :class:`Pacing` says: a µNF's compiled loop idles inside its own
  call; a service's step is one burst, and the runner moderates small bursts and idles for it.

Interrupt moderation (a NIC's adaptive rx-usecs/tx-usecs): after a burst of less than 1/8 of the
stage's maximum, the runner sleeps ``coalesce_us`` before the next step. Without it a source
paced at 200 kpps was polled every few µs for one or two frames, and the Rx service, the Tx
service and the µNFs woken for each of them kept both cores of the test machine busy (198 % CPU,
Rx alone 91 %; p50 latency 2.9 ms as the µNFs waited for a CPU). With 100 µs: Rx 23-28 %, p50
latency 130-430 µs. Bursts of 1/8 or more never wait, so a busy graph is polled as before. An idle
service yields a few times, then sleeps 200 µs per poll: an idle graph costs no CPU.

Processes are normally forked by the graph's zygote (``micronf.runtime.zygote``), which calls
:func:`run` with string arguments; ``python -m micronf.runtime.process`` is the same entry point.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

from micronf.dataplane.control import ControlLine
from micronf.runtime.stage import GraphMemory

ENTRY = "micronf.runtime.process:run"  # what the zygote calls in a forked child
START_NICE = -10  # a forked child runs its start-up at this priority, so a restart is quick on a busy machine
SPIN_POLLS = 64  # empty steps (each followed by a yield) before an idle service starts sleeping
IDLE_SLEEP_S = 0.0002
_boosted = False


class Stage(Protocol):
    """What a process runs: one step at a time, between which it holds no buffer."""

    def step(self) -> int:
        """One slice of work; returns the packets it moved."""
        ...

    def close(self) -> None:
        """Release what the stage opened (after its last step)."""
        ...


@dataclass(frozen=True)
class Pacing:
    """How the runner waits between a stage's steps. ``burst`` 0: never (the stage idles inside
    its step, like a µNF's compiled loop); else the stage moves at most ``burst`` packets a step,
    is moderated after small ones (``coalesce_us``) and backs off when idle."""

    burst: int = 0
    coalesce_us: int = 0


class StageError(Exception):
    """A stage could not open (the reason was reported); the process exits with ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def boost_start() -> None:
    """In a child the zygote just forked: run the start-up at :data:`START_NICE` (when allowed)."""
    global _boosted
    try:
        os.setpriority(os.PRIO_PROCESS, 0, START_NICE)
        _boosted = True
    except PermissionError:
        pass


def started() -> None:
    """Once the stage is ready: drop the start-up priority boost (if any)."""
    global _boosted
    if _boosted:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
        _boosted = False


def wait_while_paused(line: ControlLine) -> None:
    """Report paused and sleep until the supervisor resumes (or stops) this process."""
    line.paused = True
    while line.pause_requested() and not line.should_stop():
        time.sleep(0.0005)
    line.paused = False


def run_stage(line: ControlLine, stage: Stage, pacing: Pacing) -> None:
    """Run ``stage`` in control ``line`` until this process or the graph is told to stop."""
    small = max(pacing.burst // 8, 1)
    coalesce_s = pacing.coalesce_us / 1e6
    line.pid = os.getpid()
    line.count_start()
    line.ready = True
    started()
    idle = 0
    try:
        while not line.should_stop():
            if line.pause_requested():
                wait_while_paused(line)
                continue
            moved = stage.step()
            line.count_call()
            if not pacing.burst:
                continue
            if moved:
                idle = 0
                if moved < small and coalesce_s > 0:
                    time.sleep(coalesce_s)
                continue
            idle += 1
            if idle > SPIN_POLLS:
                time.sleep(IDLE_SLEEP_S)
            else:
                os.sched_yield()
    finally:
        line.ready = False


def run(segment: str, slot: int | str, stage: str, *args: str) -> int:
    """Run the stage of module ``stage`` in control line ``slot`` of the graph in ``segment``
    until stopped; returns the exit status."""
    mem = GraphMemory.attach(segment)
    line = mem.control.line(int(slot))
    try:
        opened, pacing = importlib.import_module(stage).open_stage(mem, line, *args)
    except StageError as exc:
        return exc.status

    def on_signal(signum: int, frame: FrameType | None) -> None:
        line.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        run_stage(line, opened, pacing)
    finally:
        opened.close()
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 3:
        print("usage: python -m micronf.runtime.process SEGMENT SLOT STAGE_MODULE [ARG...]", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(*args))


if __name__ == "__main__":
    main()
