"""The text report of ``bench/chain.py``: the Fig. 10 and Fig. 5 pivots, per-cell detail rows and
the per-µNF table, every figure also as a ratio to the driver's ceiling measured in the same rounds."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from _common import text_table
from chain_replicas import replica_report
from micronf.runtime.graph import GraphSpec

if TYPE_CHECKING:
    from chain import Cell

LINE_RATE_MPPS = 14.88  # 10 GbE, 64-byte frames

def _f(x: float, nd: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:.{nd}f}"


def _detail_rows(cells: Sequence[Cell], ceiling: float, hz: float) -> list[list[str]]:
    rows = []
    for c in cells:
        if c.error and not c.runs:
            rows.append([c.name, str(c.k), "ERROR", "", "", "", "", "", "", c.cores, c.error[:60]])
            continue
        cyc = c.median(lambda r: r.cycles_per_packet)
        full = c.median(lambda r: 100.0 * r.full / max(1, r.nodes[0].rx) if r.nodes else 0.0)
        rows.append([c.name, str(c.k), _f(c.mpps), _f(c.spread, 0), _f(c.mpps / ceiling if ceiling > 0 else
                                                                        float("nan")),
                     _f(c.median(lambda r: r.rx_mpps)), _f(cyc, 0), _f(cyc / hz * 1e9, 1), _f(full, 1),
                     f"{c.n_cores}/{c.n_procs}", c.cores + ("  !!!" if c.problems else "")])
    return rows


DETAIL_HEADER = ("config", "K", "Mpps", "spr%", "x ceil", "rx Mpps", "cyc/pkt", "ns/pkt*", "full%", "cores/procs",
                 "placement")


def idle_sleep(args: argparse.Namespace) -> str:
    if args.idle_sleep_us is not None:
        return str(args.idle_sleep_us)
    f = GraphSpec.model_fields.get("idle_sleep_us")
    return f"{f.default} (default)" if f is not None else "n/a"


def format_report(sections: dict[str, list[Cell]], ceilings: dict[str, Cell], facts: dict[str, Any],
                  command: str, args: argparse.Namespace, elapsed: float) -> str:
    hz = facts["tsc_ghz"] * 1e9
    lines = [
        f"# machine: {facts['cpu']}, nproc {facts['nproc']}, kernel {facts['kernel']}, python {facts['python']}, "
        f"numba {facts['numba']}, numpy {facts['numpy']}, TSC {facts['tsc_ghz']} GHz, "
        f"sched_rt_runtime_us {facts['sched_rt_runtime_us']}, load average at start "
        f"{' '.join(map(str, facts['loadavg_at_start']))}",
        f"# command: {command}",
        f"# {args.seconds:g} s measured after {args.warmup:g} s warm-up, median of {args.repeat} interleaved "
        f"run(s); burst {args.burst}, ring capacity {args.ring_capacity}, on_full={args.on_full}, "
        f"idle_sleep_us={idle_sleep(args)}, driver policy {args.driver_policy}; elapsed {elapsed:.0f} s",
        "# Mpps = packets reaching the sink per second; x ceil = Mpps / driver-alone Mpps of the same rounds; "
        "rx Mpps = into the first µNF; cyc/pkt = sum over the chain of runtime cycles/rx; ns/pkt* = cyc/pkt at "
        "the TSC rate; full% = packets dropped on full rings / rx of the first µNF; cores/procs = distinct cores "
        "/ processes, driver (source+sink) included",
    ]
    for name, c in ceilings.items():
        lines.append(f"# driver ceiling ({name} trace, source+sink loop alone on cpu{args.core1}): "
                     f"{_f(c.mpps)} Mpps (spread {_f(c.spread, 0)}%)")
    for section, cells in sections.items():
        ceil = ceilings["http" if section == "nfs-http" else "udp"].mpps
        if section == "fig10":
            lines += ["", f"## Fig. 10: K x IPTtlDecrementer, 64 B, policy {args.fig10_policy}"]
            lines += _pivot_table(cells)
            lines += ["", *text_table(DETAIL_HEADER, _detail_rows(cells, ceil, hz))]
        elif section == "replicas":
            lines += ["", f"## replicas: K x IPTtlDecrementer, 64 B, one run-to-completion replica per core "
                      f"(own source shard) vs Fig. 10 (d), both policy {args.fig10_policy}"]
            lines += _pivot_table(cells)
            lines += ["", *replica_report(cells)]
        elif section == "sched":
            lines += ["", "## Fig. 5: K x MacSwapper sharing one core (cpu"
                      f"{args.core0}), driver on cpu{args.core1}, 64 B"]
            lines += _pivot_table(cells)
            lines.append("")
            ceil_udp = ceilings["udp"].mpps
            for n in dict.fromkeys(c.name for c in cells):
                ok = [c.k for c in cells if c.name == n and c.runs and c.mpps >= LINE_RATE_MPPS]
                near = [c.k for c in cells if c.name == n and c.runs and ceil_udp > 0 and c.mpps >= 0.9 * ceil_udp]
                lines.append(f"# {n}: longest chain >= {LINE_RATE_MPPS} Mpps: {max(ok) if ok else 'none'}; "
                             f">= 90% of the driver ceiling ({_f(0.9 * ceil_udp)} Mpps): "
                             f"{max(near) if near else 'none'}")
            lines += ["", *text_table(DETAIL_HEADER, _detail_rows(cells, ceil, hz))]
        else:
            title = "64 B UDP" if section == "nfs" else "200 B HTTP GET, 20% SQL injection"
            lines += ["", f"## each µNF alone on cpu{args.core0} ({title}), driver on cpu{args.core1}, CFS"]
            rows = []
            for c in cells:
                if not c.runs:
                    rows.append([c.name, "ERROR", "", "", "", "", "", c.error[:70]])
                    continue
                cyc = c.median(lambda r: r.cycles_per_packet)
                rx = c.median(lambda r: r.rx_mpps)
                drop = c.median(lambda r: 100.0 * r.nodes[0].dropped / max(1, r.nodes[0].rx))
                rows.append([c.name, _f(rx), _f(1e3 / rx if rx > 0 else float("nan"), 1), _f(c.spread, 0),
                             _f(rx / ceil if ceil > 0 else float("nan")), _f(cyc, 0), _f(cyc / hz * 1e9, 1),
                             _f(drop, 1) + ("  !!!" if c.problems else "")])
            lines += text_table(("µNF", "Mpps", "ns/pkt", "spr%", "x ceil", "cyc/pkt", "ns/pkt*", "drop%"), rows)
    problems = [p for cells in sections.values() for c in cells for p in c.problems]
    problems += [p for c in ceilings.values() for p in c.problems]
    lines.append("")
    if problems:
        lines.append(f"# !!! {len(problems)} problem(s):")
        lines += [f"# !!! {p}" for p in problems]
    else:
        lines.append("# checks: conservation (fed == sunk + freed inside + in rings), pool accounting and "
                     "drain OK in every run")
    lines.append("# Mpps on a shared machine is noisy: compare ratios and cyc/pkt; spr% = (max-min)/median")
    return "\n".join(lines)



def _pivot_table(cells: Sequence[Cell]) -> list[str]:
    """Mpps with one row per K and one column per configuration."""
    names = list(dict.fromkeys(c.name for c in cells))
    pivot = []
    for k in sorted({c.k for c in cells}):
        row = [str(k)]
        for n in names:
            m = [c for c in cells if c.k == k and c.name == n]
            row.append(_f(m[0].mpps) if m and m[0].runs else "-")
        pivot.append(row)
    return text_table(["K", *names], pivot)
