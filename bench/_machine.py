"""Machine facts shared by the benchmarks' report headers."""

from __future__ import annotations

import platform
from pathlib import Path

RT_RUNTIME = Path("/proc/sys/kernel/sched_rt_runtime_us")


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def rt_runtime_us() -> int | None:
    """The kernel's RT throttling budget (-1: throttling off, None: unknown)."""
    try:
        return int(RT_RUNTIME.read_text())
    except (OSError, ValueError):
        return None
