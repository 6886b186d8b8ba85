"""Benchmark: the numba data-plane pipeline against its C reference on the same shared memory.

What it measures: the sink throughput (million packets per second) of the linear pipeline
``source -> forward x K -> sink`` of ``bench/ring_pipeline.py``, one OS process per stage
linked by SPSC rings of packet handles, once with the numba stage loops and once with the C
reference ``bench/ring_ref.c`` (same algorithm, same segment layout, same scheduling: every stage
pinned round-robin over the machine's CPUs, same policy on both sides, yield when idle). Each
forwarding stage touches one cache line of every packet, the source allocates from the shared
pool and the sink frees through a return ring, so the figure covers the whole packet life cycle.

For every (policy, K, burst) the two implementations run alternately (numba, C, numba, C, ...)
``--repeat`` times; the table shows the median Mpps of each and the ratio numba / C. Each run
is also checked: pool conservation (``allocated == delivered + in_flight``) and zero marker
errors (every stage saw every packet); a violation is flagged loudly and makes the exit status 1.

Target: micronf >= 0.9x C for K = 1..4 at burst 64, same policy on both sides (issue 14; it was 0.8x).

Noise: with more stages than CPUs, stages share cores and the rate of a run depends on the order
in which the scheduler cycles them (fixed when the run starts), so runs of *either* side are often
bimodal (e.g. 12 or 27 Mpps). The table therefore also shows each side's spread and the ratio of
the best runs; on a loaded or shared machine raise ``--repeat`` before trusting a ratio.

SCHED_FIFO: the stage loops yield when idle or back-pressured, and the kernel's RT throttling
(``/proc/sys/kernel/sched_rt_runtime_us``, 95% by default) keeps the launcher alive; runs stay
short, always yield, and ``fifo`` is refused when throttling is disabled.

Usage::

    python bench/ring.py [--seconds S] [--repeat R] [--stages 1,2,3,4] [--bursts 32,64,256]
                         [--policies other,fifo] [--json]

``micronf`` is imported from the environment, else from ``src/`` next to this directory (the
stage processes get the same ``PYTHONPATH``). The C reference is compiled with the system
``cc -O3 -march=native`` into a temporary directory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _common import RT_RUNTIME, base_facts, int_list, rt_runtime_us, text_table

BENCH_DIR = Path(__file__).resolve().parent
C_SOURCE = BENCH_DIR / "ring_ref.c"
SRC_DIR = BENCH_DIR.parent / "src"
TARGET_BURST = 64
TARGET_RATIO = 0.9


def _ensure_micronf_importable() -> None:
    """Make ``micronf`` importable here and in the stage processes (they inherit PYTHONPATH)."""
    if importlib.util.find_spec("micronf") is not None:
        return
    sys.path.insert(0, str(SRC_DIR))
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(SRC_DIR) + (os.pathsep + old if old else "")


def _pipeline_module() -> Any:
    """``ring_pipeline`` (next to this file), imported at run time.

    Imported dynamically so that ``mypy bench/ring.py`` checks this file on its own (``micronf``
    need not be installed: :func:`_ensure_micronf_importable` falls back to ``src/``).
    """
    return importlib.import_module("ring_pipeline")


# -- results ---------------------------------------------------------------------------------
@dataclass
class Run:
    """One pipeline run of one implementation."""

    impl: str
    mpps: float
    seconds: float
    packets: int
    allocated: int
    delivered: int
    in_flight: int
    marker_errors: int
    alloc_failures: int
    problems: list[str] = field(default_factory=list)


@dataclass
class Row:
    """All runs of one (policy, K, burst) cell and their medians."""

    policy: str
    stages: int
    burst: int
    numba: list[Run] = field(default_factory=list)
    c: list[Run] = field(default_factory=list)

    @property
    def numba_mpps(self) -> float:
        return statistics.median(r.mpps for r in self.numba)

    @property
    def c_mpps(self) -> float:
        return statistics.median(r.mpps for r in self.c)

    @property
    def ratio(self) -> float:
        return self.numba_mpps / self.c_mpps if self.c_mpps > 0 else float("nan")

    @property
    def best_ratio(self) -> float:
        """Best numba run / best C run: robust to runs that landed in a slow scheduling phase."""
        best_c = max(r.mpps for r in self.c)
        return max(r.mpps for r in self.numba) / best_c if best_c > 0 else float("nan")

    @staticmethod
    def spread(runs: Sequence[Run]) -> float:
        """(max - min) / median of the runs' Mpps, in percent: the noise of one side of a cell."""
        values = [r.mpps for r in runs]
        med = statistics.median(values)
        return 100.0 * (max(values) - min(values)) / med if med > 0 else float("nan")

    @property
    def problems(self) -> list[str]:
        return [p for r in self.numba + self.c for p in r.problems]

    @property
    def below_target(self) -> bool:
        return self.burst == TARGET_BURST and not self.ratio >= TARGET_RATIO

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "stages": self.stages,
            "burst": self.burst,
            "numba_mpps": self.numba_mpps,
            "c_mpps": self.c_mpps,
            "ratio": self.ratio,
            "numba_best_mpps": max(r.mpps for r in self.numba),
            "c_best_mpps": max(r.mpps for r in self.c),
            "best_ratio": self.best_ratio,
            "numba_spread_pct": self.spread(self.numba),
            "c_spread_pct": self.spread(self.c),
            "below_target": self.below_target,
            "problems": self.problems,
            "runs": {"numba": [asdict(r) for r in self.numba], "c": [asdict(r) for r in self.c]},
        }


# -- machine facts and the C build -----------------------------------------------------------
def _first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "?"
    return out.splitlines()[0].strip() if out else "?"


def machine_facts(cc: str) -> dict[str, Any]:
    """CPU, kernel and tool versions for the report header."""

    return base_facts() | {"cc": _first_line([cc, "--version"]), "sched_rt_runtime_us": rt_runtime_us()}


def build_c(cc: str, out_dir: Path) -> Path:
    """Compile ``ring_ref.c`` with ``cc -O3 -march=native``; returns the binary's path."""
    binary = out_dir / "ring_ref"
    cmd = [cc, "-O3", "-march=native", "-Wall", "-Wextra", "-o", str(binary), str(C_SOURCE)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"ring.py: compiling the C reference failed:\n$ {shlex.join(cmd)}\n{proc.stderr}")
    if proc.stderr.strip():
        print(f"ring.py: compiler warnings:\n{proc.stderr}", file=sys.stderr)
    return binary


# -- running ---------------------------------------------------------------------------------
def run_once(impl: str, policy: str, stages: int, burst: int, seconds: float, warmup: float,
             c_binary: Path) -> Run:
    """One pipeline run through :func:`ring_pipeline.run_pipeline`, checked."""
    pipeline = _pipeline_module()
    cfg = pipeline.PipelineConfig(stages=stages, burst=burst, policy=policy, yield_idle=True,
                         cpus=sorted(os.sched_getaffinity(0)), impl=impl,
                         c_binary=str(c_binary) if impl == "c" else None)
    res = pipeline.run_pipeline(cfg, seconds=seconds, warmup=warmup)
    run = Run(impl, float(res.mpps), float(res.seconds), int(res.packets), int(res.allocated),
              int(res.delivered), int(res.in_flight), int(res.marker_errors), int(res.alloc_failures))
    tag = f"{impl} policy={policy} K={stages} burst={burst}"
    if res.allocated != res.delivered + res.in_flight:
        run.problems.append(f"{tag}: conservation violated: allocated {res.allocated} != delivered "
                            f"{res.delivered} + in flight {res.in_flight}")
    if res.marker_errors:
        run.problems.append(f"{tag}: {res.marker_errors} marker errors")
    if res.packets <= 0:
        run.problems.append(f"{tag}: no packets reached the sink")
    return run


def prewarm(c_binary: Path) -> None:
    """One short unrecorded numba run, so the kernels are compiled once and every measured run's
    stage processes load them from numba's cache instead of all compiling at the same time."""
    print("ring.py: compiling / loading the numba stage loops (one unrecorded run)...", file=sys.stderr,
          flush=True)
    run_once("numba", "other", 1, TARGET_BURST, 0.1, 0.1, c_binary)


def run_matrix(args: argparse.Namespace, c_binary: Path) -> list[Row]:
    """Every (policy, K, burst), numba and C interleaved ``repeat`` times."""
    prewarm(c_binary)
    rows: list[Row] = []
    cells = [(p, k, b) for p in args.policies for k in args.stages for b in args.bursts]
    for n, (policy, stages, burst) in enumerate(cells, 1):
        row = Row(policy, stages, burst)
        for _ in range(args.repeat):
            for impl, runs in (("numba", row.numba), ("c", row.c)):
                run = run_once(impl, policy, stages, burst, args.seconds, args.warmup, c_binary)
                runs.append(run)
                for problem in run.problems:
                    print(f"!!! {problem}", file=sys.stderr)
        print(f"[{n}/{len(cells)}] policy={policy} K={stages} burst={burst}: "
              f"numba {[round(r.mpps, 2) for r in row.numba]} C {[round(r.mpps, 2) for r in row.c]} "
              f"-> ratio {row.ratio:.2f}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


# -- output ----------------------------------------------------------------------------------
def _note(row: Row) -> str:
    if row.problems:
        return "VIOLATION"
    return f"< {TARGET_RATIO}x" if row.below_target else ""


def format_table(rows: Sequence[Row], facts: dict[str, Any], command: str, elapsed: float,
                 args: argparse.Namespace) -> str:
    """The plain-text report: header lines, then one line per cell."""
    lines = [
        f"# machine: {facts['cpu']}, nproc {facts['nproc']}, kernel {facts['kernel']}, "
        f"python {facts['python']}, numba {facts['numba']}, numpy {facts['numpy']}, "
        f"sched_rt_runtime_us {facts['sched_rt_runtime_us']}, load average at start "
        f"{' '.join(map(str, facts['loadavg_at_start']))}",
        f"# cc: {facts['cc']}",
        f"# command: {command}",
        f"# {args.seconds:g} s measured after {args.warmup:g} s warm-up, median of {args.repeat} "
        f"interleaved runs per side; elapsed {elapsed:.0f} s",
    ]
    header = ("policy", "K", "burst", "micronf Mpps", "C Mpps", "ratio", "spread % (numba/C)",
              "best ratio", "note")
    body = [(r.policy, str(r.stages), str(r.burst), f"{r.numba_mpps:.2f}", f"{r.c_mpps:.2f}",
             f"{r.ratio:.3f}", f"{r.spread(r.numba):.0f}/{r.spread(r.c):.0f}", f"{r.best_ratio:.3f}", _note(r))
            for r in rows]
    lines += text_table(header, body, right={1, 2, 3, 4, 5, 6, 7})
    target = [r for r in rows if r.burst == TARGET_BURST]
    if target:
        worst = min(target, key=lambda r: r.ratio)
        verdict = "met" if not any(r.below_target for r in target) else "NOT met"
        lines.append(f"# target micronf >= {TARGET_RATIO}x C at burst {TARGET_BURST}: {verdict} "
                     f"(worst {worst.ratio:.2f} at policy={worst.policy} K={worst.stages})")
    problems = [p for r in rows for p in r.problems]
    if problems:
        lines.append(f"# !!! {len(problems)} CHECK VIOLATIONS (conservation / marker errors):")
        lines += [f"# !!! {p}" for p in problems]
    else:
        lines.append("# checks: conservation and marker errors OK in every run")
    lines.append("# Mpps and ratio are medians of the runs; spread = (max - min) / median over the runs of one "
                 "side; best ratio = best numba run / best C run. Large spreads mean the medians (and so the "
                 "ratio) are noise-dominated: raise --repeat.")
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------
def _policy_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    bad = [v for v in values if v not in ("other", "fifo", "rr")]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"policies are other, fifo, rr; got {text!r}")
    return values


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="micronf numba pipeline vs the C reference (bench/ring_ref.c)")
    ap.add_argument("--seconds", type=float, default=1.5, help="measured seconds per run (default 1.5)")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring (default 0.5)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs per side (default 3)")
    ap.add_argument("--stages", type=int_list, default=[1, 2, 3, 4], help="K values (default 1,2,3,4)")
    ap.add_argument("--bursts", type=int_list, default=[32, 64, 256], help="bursts (default 32,64,256)")
    ap.add_argument("--policies", type=_policy_list, default=["other", "fifo"],
                    help="scheduling policies (default other,fifo)")
    ap.add_argument("--cc", default="cc", help="C compiler (default cc)")
    ap.add_argument("--json", action="store_true", help="print a JSON document instead of the table")
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.seconds <= 0 or args.warmup < 0:
        ap.error("need --repeat >= 1, --seconds > 0, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv] if argv is None else ["ring.py", *argv])
    cc = shutil.which(args.cc)
    if cc is None:
        print(f"ring.py: no C compiler {args.cc!r} on PATH (install gcc or pass --cc)", file=sys.stderr)
        return 2
    if any(p != "other" for p in args.policies):
        rt = rt_runtime_us()
        if rt is None or rt < 0:
            print(f"ring.py: refusing real-time policies: RT throttling is off ({RT_RUNTIME} = {rt})",
                  file=sys.stderr)
            return 2
    _ensure_micronf_importable()
    facts = machine_facts(cc)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="micronf-ring-bench-") as tmp:
        binary = build_c(cc, Path(tmp))
        try:
            rows = run_matrix(args, binary)
        except PermissionError as exc:
            print(f"ring.py: cannot apply the scheduling policy ({exc}); real-time policies need "
                  "root or CAP_SYS_NICE", file=sys.stderr)
            return 2
    elapsed = time.monotonic() - start
    if args.json:
        doc = {
            "benchmark": "micronf ring pipeline: numba vs C reference",
            "command": command,
            "machine": facts,
            "settings": {"seconds": args.seconds, "warmup": args.warmup, "repeat": args.repeat,
                         "yield_idle": True, "target": {"burst": TARGET_BURST, "ratio": TARGET_RATIO}},
            "elapsed_seconds": elapsed,
            "rows": [r.to_json() for r in rows],
        }
        print(json.dumps(doc, indent=2))
    else:
        print(format_table(rows, facts, command, elapsed, args))
    return 1 if any(r.problems for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
