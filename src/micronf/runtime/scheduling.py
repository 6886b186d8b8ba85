"""CPU affinity and scheduling policy for µNF processes (paper §VI-E).

SCHED_FIFO/SCHED_RR are safe for micronf loops because every loop yields when its input is empty
(and, if asked, every k batches); the kernel's RT throttling stays as a last resort.
"""

from __future__ import annotations

import os

POLICIES = {"other": os.SCHED_OTHER, "fifo": os.SCHED_FIFO, "rr": os.SCHED_RR}


class SchedulingError(OSError):
    """The requested CPU or policy cannot be applied (e.g. real-time policy without privileges)."""


def apply_scheduling(pid: int, cpu: int | None, policy: str, priority: int = 1) -> None:
    """Pin ``pid`` (0 = this process) to ``cpu`` and set its policy; clear errors when not allowed."""
    if policy not in POLICIES:
        raise SchedulingError(f"unknown scheduling policy {policy!r} (use {', '.join(POLICIES)})")
    if cpu is not None:
        allowed = os.sched_getaffinity(0)
        if cpu not in allowed:
            raise SchedulingError(f"CPU {cpu} is not available (allowed: {sorted(allowed)})")
        os.sched_setaffinity(pid, {cpu})
    param = os.sched_param(priority if policy != "other" else 0)
    try:
        os.sched_setscheduler(pid, POLICIES[policy], param)
    except PermissionError as exc:
        raise SchedulingError(f"cannot set policy {policy!r}: {exc} (real-time policies need root or "
                              f"CAP_SYS_NICE)") from exc
