"""What the benchmarks share: machine facts for their report headers, argument parsing helpers."""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Container, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

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


def package_version(name: str) -> str:
    """The installed version of distribution ``name`` ("-" when it is not installed)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def base_facts() -> dict[str, Any]:
    """What every benchmark report starts with: CPU, cores, kernel, versions, load at start."""
    return {
        "cpu": cpu_model(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpus": sorted(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numba": package_version("numba"),
        "numpy": package_version("numpy"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15 of stat(5))


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


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Container[int] | None = None) -> list[str]:
    """A plain-text table: header, rule, rows; columns in ``right`` right-aligned (default: all
    but the first), trailing spaces trimmed."""
    widths = [max(len(x[i]) for x in (header, *rows)) for i in range(len(header))]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if (i > 0 if right is None else i in right) else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)]
