"""What the benchmarks share: machine facts for their report headers, argument parsing helpers."""

from __future__ import annotations

import argparse
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


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated positive integers ("1,2,4")."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values
