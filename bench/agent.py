"""Benchmark: the agent's control loops — autoscaling timeline, restart and deployment times.

Section ``autoscale`` (paper §IV-E, Fig. 8-style timeline): an in-process
:class:`micronf.agent.core.Agent` deploys ``CheckIPHeader -> BusyLoop`` fed by the generator Rx
service at ``--rate`` packets/s for ``--seconds``. BusyLoop costs ``--cycles`` TSC ticks per
packet (``--mode sleep``: the time passes without holding a CPU, so capacity does not depend on
how busy the two cores are; ``spin``: a CPU-bound µNF), so one instance cannot keep up; the
autoscaler sees drops on the CheckIPHeader→BusyLoop pair, starts a second instance behind a
flow-affinity load balancer, holds its cool-down, and scales back in once traffic stops. Every
``--sample`` seconds the bench records the offered load (frames the Rx service read), each
instance's rate and the drops; it prints the timeline, writes it as JSON with ``--json`` and draws
it as an SVG (``--plot``, default ``bench/out/agent-autoscale.svg``).

Section ``restart``: ``kill -9`` of a µNF under load, ``--restarts`` times: the supervisor's
downtime (pause the graph, reclaim the dead process's buffers, fork it again from the zygote,
ready) and the buffers reclaimed, plus the time to deploy and remove the graph.

Usage::

    python bench/agent.py [--only autoscale,restart] [--rate PPS] [--seconds S] [--cycles N]
                          [--mode sleep|spin] [--sample S] [--restarts N] [--json] [--plot FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import base_facts

BENCH_DIR = Path(__file__).resolve().parent
try:
    import micronf  # noqa: F401
except ImportError:  # a checkout without an installed package
    sys.path.insert(0, str(BENCH_DIR.parent / "src"))

from micronf.agent.core import Agent  # noqa: E402
from micronf.api.models import DeployRequest  # noqa: E402

SECTIONS = ("autoscale", "restart")


def _request(name: str, rate: float, count: int, cycles: int, mode: str, autoscale: dict[str, Any]) -> DeployRequest:
    return DeployRequest.model_validate({
        "name": name,
        "graph": {"nodes": [{"name": "chk", "type": "CheckIPHeader"},
                            {"name": "busy", "type": "BusyLoop", "config": {"cycles": cycles, "mode": mode}}],
                  "edges": [{"src": "chk", "label": "out", "dst": "busy"}], "entry": "chk"},
        "rx": {"kind": "generator", "count": count, "rate_pps": rate, "flows": 256},
        "outputs": {"out": {"backend": {"kind": "null"}}},
        "autoscale": autoscale,
    })


def section_autoscale(args: argparse.Namespace) -> dict[str, Any]:
    req = _request("bench-autoscale", args.rate, int(args.rate * args.seconds), args.cycles, args.mode,
                   {"interval_s": 0.2, "window": 3, "cooldown_s": args.cooldown, "max_instances": 4,
                    "idle_window": 10})
    rows: list[dict[str, Any]] = []
    with Agent() as agent:
        agent.deploy(req)
        t0 = time.monotonic()
        last: dict[str, int] = {"@offered": 0, "@drops": 0, "busy": 0}
        idle_since = None
        while True:
            time.sleep(args.sample)
            s = agent.stats(req.name)
            now = time.monotonic() - t0
            cur = {"@offered": s.rx["frames"], "@drops": sum(e.full for n in s.nodes for e in n.egress)
                   + s.rx["entry_full"]}
            cur |= {n.name: n.runtime["rx"] for n in s.nodes if n.name == "busy" or n.instance_of == "busy"}
            rates = {k: (v - last.get(k, 0)) / args.sample for k, v in cur.items()}
            last = cur
            live = [n.name for n in s.nodes if (n.name == "busy" or n.instance_of == "busy")
                    and n.name in agent.deployment(req.name).nodes]
            rows.append({"t": round(now, 3), "offered_pps": rates["@offered"], "drops_per_s": rates["@drops"],
                         "instances": {k: v for k, v in rates.items() if not k.startswith("@")}, "live": live,
                         "events": [e.model_dump() for e in s.scale_events if e.at >= time.time() - args.sample]})
            if s.rx["exhausted"] and idle_since is None:
                idle_since = now
            if idle_since is not None and (any(e.action == "in" for e in s.scale_events) or now - idle_since > 20):
                break
        events = [e.model_dump() for e in agent.stats(req.name).scale_events]
        cons = agent.stats(req.name).conservation.model_dump()
    return {"rate_pps": args.rate, "cycles": args.cycles, "mode": args.mode, "timeline": rows, "events": events,
            "conservation": cons}


def section_restart(args: argparse.Namespace) -> dict[str, Any]:
    req = _request("bench-restart", 2000, 10**9, 2_000_000, "spin", {"enabled": False})
    downtimes, reclaimed = [], []
    with Agent() as agent:
        t = time.monotonic()
        agent.deploy(req)
        deploy_s = time.monotonic() - t
        for k in range(args.restarts):
            time.sleep(0.5)
            victim = next(p for p in agent.deployment(req.name).processes if p.nodes == ["busy"])
            os.kill(victim.pid, signal.SIGKILL)
            while len(agent.stats(req.name).restarts) <= k:
                time.sleep(0.01)
            ev = agent.stats(req.name).restarts[k]
            downtimes.append(ev.downtime_ms)
            reclaimed.append(ev.reclaimed_buffers)
        t = time.monotonic()
        agent.remove(req.name)
        remove_s = time.monotonic() - t
    return {"deploy_s": deploy_s, "remove_s": remove_s, "downtime_ms": downtimes, "reclaimed": reclaimed,
            "downtime_ms_median": statistics.median(downtimes), "downtime_ms_max": max(downtimes)}


def plot_svg(result: dict[str, Any], path: Path) -> None:
    """The autoscaling timeline as a small self-contained SVG (no plotting library needed)."""
    rows = result["timeline"]
    w, h, pad = 760, 340, 50
    t_max = max(r["t"] for r in rows) or 1
    names = sorted({k for r in rows for k in r["instances"]})
    y_max = max([r["offered_pps"] for r in rows] + [r["drops_per_s"] for r in rows] + [1.0]) * 1.1

    def xy(t: float, v: float) -> str:
        return f"{pad + (w - 2 * pad) * t / t_max:.1f},{h - pad - (h - 2 * pad) * v / y_max:.1f}"

    colors = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    series = [("offered", "#000", [r["offered_pps"] for r in rows]), ("drops", "#d62728",
                                                                       [r["drops_per_s"] for r in rows])]
    series += [(n, colors[i % len(colors)], [r["instances"].get(n, 0.0) for r in rows]) for i, n in enumerate(names)]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
           f'font-size="11"><rect width="{w}" height="{h}" fill="white"/>',
           f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#444"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#444"/>',
           f'<text x="{w / 2}" y="{h - 12}" text-anchor="middle">time (s), max {t_max:.1f}</text>',
           f'<text x="12" y="{pad - 12}">packets/s (max {y_max:,.0f})</text>']
    for e in result["events"]:
        t_e = next((r["t"] for r in rows if any(x["instance"] == e["instance"] and x["action"] == e["action"]
                                                for x in r["events"])), None)
        if t_e is not None:
            x = xy(t_e, 0).split(",")[0]
            out.append(f'<line x1="{x}" y1="{pad}" x2="{x}" y2="{h - pad}" stroke="#999" stroke-dasharray="4"/>')
            out.append(f'<text x="{x}" y="{pad - 2}" text-anchor="middle">{e["action"]} {e["instance"]}</text>')
    for k, (label, color, values) in enumerate(series):
        pts = " ".join(xy(r["t"], v) for r, v in zip(rows, values, strict=True))
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>')
        out.append(f'<text x="{w - pad + 4}" y="{pad + 14 * k}" fill="{color}">{label}</text>')
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def _print_autoscale(r: dict[str, Any]) -> None:
    print(f"\n## autoscale: CheckIPHeader -> BusyLoop({r['cycles']} ticks, {r['mode']}), offered {r['rate_pps']:,.0f} "
          f"pps")
    print("| t (s) | offered pps | drops/s | per-instance pps | events |")
    print("|---|---|---|---|---|")
    for row in r["timeline"]:
        inst = ", ".join(f"{k} {v:,.0f}" for k, v in row["instances"].items() if k in row["live"])
        ev = ", ".join(f"{e['action']} {e['instance']}" for e in row["events"])
        print(f"| {row['t']:.1f} | {row['offered_pps']:,.0f} | {row['drops_per_s']:,.0f} | {inst} | {ev} |")
    print(f"conservation: {r['conservation']}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run ({', '.join(SECTIONS)})")
    ap.add_argument("--rate", type=float, default=3000.0, help="offered packets/s (autoscale)")
    ap.add_argument("--seconds", type=float, default=10.0, help="traffic duration (autoscale)")
    ap.add_argument("--cycles", type=int, default=1_000_000, help="BusyLoop TSC ticks per packet")
    ap.add_argument("--mode", choices=("sleep", "spin"), default="sleep")
    ap.add_argument("--cooldown", type=float, default=3.0)
    ap.add_argument("--sample", type=float, default=0.25)
    ap.add_argument("--restarts", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    ap.add_argument("--plot", type=Path, default=BENCH_DIR / "out" / "agent-autoscale.svg")
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    for s in only:
        if s not in SECTIONS:
            ap.error(f"unknown section {s!r} (sections: {', '.join(SECTIONS)})")
    result: dict[str, Any] = {"machine": base_facts()}
    if "autoscale" in only:
        result["autoscale"] = section_autoscale(args)
        plot_svg(result["autoscale"], args.plot)
    if "restart" in only:
        result["restart"] = section_restart(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"machine: {result['machine']}")
    if "autoscale" in result:
        _print_autoscale(result["autoscale"])
        print(f"plot: {args.plot}")
    if "restart" in result:
        r = result["restart"]
        print(f"\n## restart (kill -9 of a µNF under load, {len(r['downtime_ms'])} times)")
        print(f"downtime ms: median {r['downtime_ms_median']:.0f}, max {r['downtime_ms_max']:.0f} "
              f"(all: {', '.join(f'{d:.0f}' for d in r['downtime_ms'])}); buffers reclaimed: {r['reclaimed']}")
        print(f"deploy {r['deploy_s']:.2f} s, remove {r['remove_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
