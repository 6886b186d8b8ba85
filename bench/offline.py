"""Benchmark: an offline run end to end, pcap in -> 2 × IPTtlDecrementer -> pcap out (issue 14).

What it measures: the wall clock of the command a user types,
``micronf chain 'IPTtlDecrementer -> IPTtlDecrementer' --pcap IN --out DIR --force``, run as a
subprocess on a capture of ``--packets`` (default 2 M) 64-byte frames (IPv4/UDP, 256 flows, TTL 64,
generated once into ``--capture``, default /tmp). Each run is checked: its conservation line
(``N in, N written, 0 freed inside: conservation ok``) and the size of ``DIR/out.pcap``.

- **cold**: one run with an empty numba cache (a fresh ``NUMBA_CACHE_DIR``: every kernel and the
  chain's generated hot loop compile); ``--no-cold`` skips it (it takes a minute or more).
- **warm**: ``--repeat`` runs with the cache warm, the default mode (the chain fused in the CLI's
  own process) interleaved with ``--processes`` (one µNF process each, the zygote starting them);
  medians, and the spread.
- **breakdown** (warm, medians of ``--repeat``): a fresh interpreter does what the command does,
  step by step, with a clock between the steps: interpreter start, imports, planning (loads the
  µNF library), numba's NumPy support, numba's first cache load (the target context refresh every
  process pays once), reading the capture (mapped), the run (its packet loop apart). For
  reference, ``python -c pass`` and ``import numpy, numba`` alone.

Click (the issue's reference: 0.33 s for the same work with Click 2.1's userlevel driver on this
machine class) is compared only when a ``click`` binary is on the PATH; otherwise the report states
the reference figure.

Noise: a 2-vCPU VM shared with other work moves every figure by tens of percent; compare medians
of one run, and read the load average printed with the machine facts.

Usage::

    python bench/offline.py [--packets 2000000] [--repeat 5] [--no-cold] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import base_facts, text_table

BENCH_DIR = Path(__file__).resolve().parent
SRC_DIR = BENCH_DIR.parent / "src"
EXPR = "IPTtlDecrementer -> IPTtlDecrementer"
FRAME = 64
FLOWS = 256
CLICK_REFERENCE_S = 0.33  # issue 14: Click 2.1, FromDump -> DecIPTTL x 2 -> ToDump, 2 M packets


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = str(SRC_DIR) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _ipv4_checksum(header: bytes) -> int:
    total = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, len(header), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _template(flow: int) -> bytes:
    """A 64-byte Ethernet/IPv4/UDP frame of flow ``flow`` (TTL 64, valid IPv4 checksum)."""
    payload = 64 - 14 - 20 - 8
    ip = bytearray(b"\x45\x00" + (20 + 8 + payload).to_bytes(2, "big") + b"\x00\x01\x00\x00\x40\x11\x00\x00"
                   + bytes([10, 0, flow >> 8, flow & 0xFF]) + bytes([10, 1, 0, 1]))
    ip[10:12] = _ipv4_checksum(bytes(ip)).to_bytes(2, "big")
    udp = (1000 + flow).to_bytes(2, "big") + (80).to_bytes(2, "big") + (8 + payload).to_bytes(2, "big") + b"\0\0"
    eth = bytes.fromhex("020000000002" "020000000001" "0800")
    return eth + bytes(ip) + udp + b"x" * payload


def make_capture(path: Path, packets: int) -> None:
    """Write ``packets`` 64-byte frames (flows round robin, 1 µs apart) with micronf's own writer."""
    sys.path.insert(0, str(SRC_DIR))
    from micronf.io.pcap_write import PcapWriter

    frames = np.frombuffer(b"".join(_template(f) for f in range(FLOWS)), np.uint8).reshape(FLOWS, FRAME)
    step = 1 << 20
    tmp = path.with_suffix(".tmp")
    with PcapWriter(tmp, nanosecond=False) as w:
        for start in range(0, packets, step):
            n = min(step, packets - start)
            idx = np.arange(start, start + n)
            buf = frames[idx % FLOWS].reshape(-1)
            w.write(buf, np.arange(n) * FRAME, np.full(n, FRAME), 1_700_000_000 * 10**9 + idx * 1000)
    tmp.replace(path)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cli_run(capture: Path, out: Path, packets: int, *extra: str, env: dict[str, str]) -> tuple[float, float]:
    """One ``micronf chain`` run as a subprocess: its wall clock and CPU time (user + system, its
    processes included; s), after checking its output. CPU time hardly moves with the machine's load."""
    cmd = [sys.executable, "-m", "micronf", "chain", EXPR, "--pcap", str(capture), "--out", str(out), "--force",
           *extra]
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - c0
    text = " ".join(proc.stdout.split())
    if proc.returncode != 0 or f"{packets:,} in, {packets:,} written, 0 freed inside: conservation ok" not in text:
        raise RuntimeError(f"micronf chain failed ({proc.returncode}): {proc.stdout[-800:]} {proc.stderr[-800:]}")
    if (out / "out.pcap").stat().st_size != 24 + packets * (16 + FRAME):
        raise RuntimeError(f"{out / 'out.pcap'} has the wrong size")
    return seconds, cpu


BREAKDOWN = """
import gc, json, sys, time
from pathlib import Path
t = [time.perf_counter()]
from micronf.app.cli import app  # what the command imports
gc.freeze()  # as micronf.app.cli.main does
t.append(time.perf_counter())
from micronf.runtime.chainexpr import parse_chain
from micronf.runtime.graph import chain_spec, fuse_whole, plan
layout = plan(fuse_whole(chain_spec(parse_chain(EXPR))), capture_drops=True, on_full="wait")
t.append(time.perf_counter())
from micronf.app.offline import run_offline, skip_blas_probe
skip_blas_probe()
t.append(time.perf_counter())
from micronf.io.pcap_parse import limit_for
limit_for(0)  # the process's first cached kernel: numba's target context is set up here
t.append(time.perf_counter())
from micronf.io.linktype import read_ethernet
trace = read_ethernet(Path(CAPTURE), mapped=True)
t.append(time.perf_counter())
res = run_offline(layout, trace, Path(OUT), in_process=True)
t.append(time.perf_counter())
assert res.balanced and res.written == len(trace)
print(json.dumps({"steps": [b - a for a, b in zip(t, t[1:])], "loop": res.seconds}))
"""
STEPS = ["imports (micronf.app.cli)", "plan (loads the µNF library)", "numba NumPy support (no BLAS probe)",
         "numba first cache load (context refresh)", "read the capture (mapped)", "run (pump + hot loop + pcap out)"]
# not in the breakdown: the interpreter's exit (the command freezes its heap first: a few ms)


def breakdown(capture: Path, out: Path, repeat: int, env: dict[str, str]) -> dict[str, float]:
    """Medians of the steps of a warm run in a fresh interpreter (see the module docstring)."""
    def timed(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
        return time.perf_counter() - t0

    code = f"EXPR, CAPTURE, OUT = {EXPR!r}, {str(capture)!r}, {str(out)!r}\n" + textwrap.dedent(BREAKDOWN)
    samples: list[dict[str, Any]] = []
    starts, floors = [], []
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                              timeout=300)
        samples.append(json.loads(proc.stdout))
        starts.append(timed("pass"))
        floors.append(timed("import numpy, numba"))
    med = {name: statistics.median(s["steps"][i] for s in samples) for i, name in enumerate(STEPS)}
    med["  of which the packet loop"] = statistics.median(s["loop"] for s in samples)
    med["reference: python -c pass"] = statistics.median(starts)
    med["reference: python -c 'import numpy, numba'"] = statistics.median(floors)
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--capture", type=Path, default=None, help="default: /tmp/micronf-offline-<packets>.pcap")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-cold", action="store_true", help="skip the run with an empty numba cache")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    capture = args.capture or Path(tempfile.gettempdir()) / f"micronf-offline-{args.packets}.pcap"
    if not capture.exists() or capture.stat().st_size != 24 + args.packets * (16 + FRAME):
        make_capture(capture, args.packets)
    report: dict[str, Any] = {"machine": base_facts(), "packets": args.packets, "capture": str(capture),
                              "command": f"micronf chain '{EXPR}' --pcap {capture} --out DIR --force"}
    work = Path(tempfile.mkdtemp(prefix="micronf-offline-"))
    try:
        env = _env()
        cli_run(capture, work / "warmup", args.packets, env=env)  # the cache is warm from here on
        if not args.no_cold:
            cold_env = _env(NUMBA_CACHE_DIR=str(work / "cold-cache"))
            report["cold_s"] = cli_run(capture, work / "cold", args.packets, env=cold_env)[0]
        runs: dict[str, list[tuple[float, float]]] = {"in-process": [], "processes": []}
        for _ in range(args.repeat):  # interleaved: the machine's mood hits both alike
            runs["in-process"].append(cli_run(capture, work / "a", args.packets, env=env))
            runs["processes"].append(cli_run(capture, work / "b", args.packets, "--processes", env=env))
        report["warm"] = {k: {"median_s": statistics.median(w for w, _ in v), "min_s": min(w for w, _ in v),
                              "max_s": max(w for w, _ in v), "median_cpu_s": statistics.median(c for _, c in v),
                              "runs": v} for k, v in runs.items()}
        report["breakdown_s"] = breakdown(capture, work / "c", args.repeat, env)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    click = shutil.which("click")
    report["click"] = (f"{click} found: not run by this benchmark" if click else
                       f"not installed; reference {CLICK_REFERENCE_S} s (issue 14, same work, same machine class)")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    m = report["machine"]
    print(f"{m['cpu']}, {m['nproc']} CPUs, load {m['loadavg_at_start']}; {args.packets:,} packets of {FRAME} bytes")
    print(report["command"])
    rows = [[k, f"{v['median_s']:.3f}", f"{v['min_s']:.3f}-{v['max_s']:.3f}", f"{v['median_cpu_s']:.3f}"]
            for k, v in report["warm"].items()]
    if "cold_s" in report:
        rows.append(["in-process, cold numba cache (1 run)", f"{report['cold_s']:.3f}", "-", "-"])
    print("\n".join(text_table(["end to end (warm unless said)", "median s", "range s", "median CPU s"], rows)))
    print()
    print("\n".join(text_table(["breakdown of a warm in-process run", "median s"],
                               [[k, f"{v:.3f}"] for k, v in report["breakdown_s"].items()])))
    print(f"\nClick: {report['click']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
