"""The control loop every I/O service process (Rx, Tx) runs around its compiled bursts.

Why one loop: the services must all behave the same towards the agent — report their pid and
readiness in their control line, stop when asked (or when the whole graph stops), pause after
the burst in hand when the supervisor asks (so it can account for every buffer), and back off
when idle (yield a few times, then sleep 200 µs per poll: an idle graph costs no CPU) — while
each only supplies ``step()``: one burst of work, returning how many packets it moved.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from micronf.runtime.process import wait_while_paused
from micronf.runtime.stage import P_PID, P_READY, P_STOP, PAUSE, STOP
from micronf.runtime.zygote import started

SPIN_POLLS = 64  # empty polls (each a yield) before the loop starts sleeping
IDLE_SLEEP_S = 0.0002


def run_service(ctl: npt.NDArray[np.int64], line: int, step: Callable[[], int]) -> None:
    """Run ``step`` until the service (control ``line``) or the graph is told to stop."""
    ctl[line + P_PID] = os.getpid()
    ctl[line + P_READY] = 1
    started()
    idle = 0
    try:
        while ctl[line + P_STOP] != STOP and ctl[P_STOP] == 0:
            if ctl[line + P_STOP] == PAUSE:
                wait_while_paused(ctl, line)
                continue
            if step():
                idle = 0
                continue
            idle += 1
            if idle > SPIN_POLLS:
                time.sleep(IDLE_SLEEP_S)
            else:
                os.sched_yield()
    finally:
        ctl[line + P_READY] = 0
