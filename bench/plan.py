"""Benchmark: the control plane on large inputs (compose, wire, place, ``micronf plan``).

Two generated inputs, each size in a fresh interpreter:

``chain N``  one VNF template whose N µNFs form a chain, cycling through CheckIPHeader, L3L4Filter,
             HttpClassifier (``other`` to an output), CountUrl, PacketSizeCounter, IPTtlDecrementer
             (``expired`` to an output), MacSwapper: every rewrite kind applies many times (a
             CheckIPHeader after MacSwapper is redundant; after IPTtlDecrementer it is not).
``sfc N``    an SFC of N chained VNFs cycling through the example templates edge-firewall,
             monitoring, application-firewall (``web`` to the next VNF, ``other`` an exit) and
             load-balancer (it rewrites the headers, so the next VNF's checks stay).

Timed steps, in CPU seconds of the measuring process (on a loaded machine the wall clock mostly
measures the other load; ``--json`` has both): ``compose`` = load + check + compose (:func:`compose_file`, what the
orchestrator does per deploy), ``wire`` = :func:`micronf.runtime.graph.plan` of the optimized
graph (what the agent does), ``place`` = :func:`~micronf.orchestrator.placement.place` on a 2-CPU
agent with the chained composition (``parallelize=False``, fused, as the orchestrator does when
cores are scarce), ``arrange`` = :func:`~micronf.orchestrator.arrange.arrange` for that agent
(the cost model over every arrangement: pipelined, mix, replicas; what the orchestrator adds per
deploy before placing), ``cli`` = ``micronf plan`` in-process (compose, both drawings as DOT, the
report printed to a discarded console).

``--measure [SFC]`` (default: the Fig. 11 SFC) instead compares the cost model's predicted rates
with measured ones on this machine (``bench/plan_measure.py``): each mode of ``--modes`` forced,
deployed on an in-process agent with the paper's traffic at full speed, ``--repeat`` interleaved
rounds; it also prints the in-situ cycles per packet of every µNF and of the Rx and Tx services
beside the cost table's. Replicas are measured only where the agent runs them (issue 14's agent
work); an agent without it is reported, not measured. ``--before REF`` measures the same inputs with the code
of git revision REF (extracted with ``git archive``) in the same run; a size the old code cannot
handle shows its exception (``RecursionError``) or ``>T s`` after ``--limit``.

Usage::

    python bench/plan.py [--chain 1000,10000] [--sfc 100,1000] [--before 31f887a] [--limit 120] [--json]
    python bench/plan.py --measure [SFC] [--modes pipelined,replicas] [--repeat 3] [--seconds 3] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_TEMPLATES = ROOT / "src" / "micronf" / "examples" / "templates"

# (type, config, label to the next node, other labels -> output); cycled along the chain
CHAIN_PATTERN: list[tuple[str, dict[str, Any], str, list[str]]] = [
    ("CheckIPHeader", {}, "out", []),
    ("L3L4Filter", {"default": "allow", "rules": [{"action": "deny", "proto": "tcp", "dport": 23}]}, "out", []),
    ("HttpClassifier", {}, "http", ["other"]),
    ("CountUrl", {"urls": ["/login"]}, "out", []),
    ("PacketSizeCounter", {}, "out", []),
    ("MacSwapper", {}, "out", []),
    ("CheckIPHeader", {}, "out", []),
    ("IPTtlDecrementer", {}, "out", ["expired"]),
]
# (template, output to the next VNF); cycled along the SFC
SFC_PATTERN = [("edge-firewall", "out"), ("monitoring", "out"), ("application-firewall", "web"),
               ("load-balancer", "out")]


def write_chain(directory: Path, n: int) -> Path:
    """An SFC of one VNF whose template is a chain of ``n`` µNFs (see the module docstring)."""
    nodes, links = [], []
    outputs: dict[str, list[str]] = {"out": []}
    for k in range(n):
        nf_type, config, label, others = CHAIN_PATTERN[k % len(CHAIN_PATTERN)]
        name = f"n{k}"
        nodes.append({"name": name, "type": nf_type, "config": config})
        if k + 1 < n:
            links.append({"src": name, "label": label, "dst": f"n{k + 1}"})
        else:
            outputs["out"].append(f"{name}.{label}")
        for other in others:
            outputs.setdefault(other, []).append(f"{name}.{other}")
    (directory / "templates").mkdir(parents=True, exist_ok=True)
    template = {"kind": "vnf-template", "name": "long", "nodes": nodes, "links": links, "outputs": outputs}
    (directory / "templates" / "long.json").write_text(json.dumps(template))
    sfc = {"kind": "sfc", "name": f"chain{n}", "imports": ["templates/*.json"],
           "vnfs": [{"name": "v", "template": "long"}]}
    path = directory / "sfc.json"
    path.write_text(json.dumps(sfc))
    return path


def write_sfc(directory: Path, n: int) -> Path:
    """An SFC of ``n`` chained VNFs over the example templates (see the module docstring)."""
    (directory / "templates").mkdir(parents=True, exist_ok=True)
    for name, _out in SFC_PATTERN:
        src = EXAMPLE_TEMPLATES / f"{name}.yaml"
        (directory / "templates" / f"{name}.json").write_text(json.dumps(yaml.safe_load(src.read_text())))
    vnfs = [{"name": f"v{k}", "template": SFC_PATTERN[k % len(SFC_PATTERN)][0]} for k in range(n)]
    links = [{"src": f"v{k}", "label": SFC_PATTERN[k % len(SFC_PATTERN)][1], "dst": f"v{k + 1}"}
             for k in range(n - 1)]
    sfc = {"kind": "sfc", "name": f"sfc{n}", "imports": ["templates/*.json"], "vnfs": vnfs, "links": links}
    path = directory / "sfc.json"
    path.write_text(json.dumps(sfc))
    return path


def measure(kind: str, n: int) -> dict[str, Any]:
    """Time every step on one generated input (in this interpreter, with whatever micronf it imports)."""
    from rich.console import Console

    from micronf.app.render import write_drawing
    from micronf.app.report import print_plan
    from micronf.orchestrator.arrange import arrange
    from micronf.orchestrator.compose import compose, compose_file
    from micronf.orchestrator.costmodel import load_table
    from micronf.orchestrator.load import load_sfc
    from micronf.orchestrator.placement import AgentRef, Candidate, Traffic, place
    from micronf.runtime.graph import plan

    sys.setrecursionlimit(1000)  # the interpreter's default: what a user's `micronf plan` has
    out: dict[str, Any] = {"kind": kind, "n": n}
    with tempfile.TemporaryDirectory() as tmp:
        path = (write_chain if kind == "chain" else write_sfc)(Path(tmp), n)
        with _step(out, "compose"):
            comp = compose_file(path)
        out |= {"unfs_before": len(comp.before.spec.nodes), "unfs_after": len(comp.after.spec.nodes),
                "rewrites": len(comp.rewrites)}
        with _step(out, "wire"):
            layout = plan(comp.after.spec)
        out |= {"processes": len(layout.processes), "rings": layout.n_rings - len(layout.spare_rings)}
        chained = compose_file(path, parallelize=False)
        agent = AgentRef(url="http://127.0.0.1:8771", name="local", cpus=(0, 1))
        with _step(out, "place"):
            place(chained.after, "bench", [Candidate(agent, 0)], Traffic())
        bundle, table = load_sfc(path), load_table()
        with _step(out, "arrange"):
            _, arrangement = arrange(bundle, compose(bundle), agent.cpus, table)
        out["arrangement"] = arrangement.chosen.name
        with _step(out, "cli"):
            comp = compose_file(path)
            drawings = [write_drawing(g, stage, Path(tmp) / stage) for stage, g in
                        (("before", comp.before), ("after", comp.after))]
            with open(os.devnull, "w", encoding="utf-8") as devnull:
                print_plan(Console(file=devnull, width=160), comp, drawings)
    return out


@contextlib.contextmanager
def _step(out: dict[str, Any], name: str) -> Iterator[None]:
    """Time a step: CPU seconds of this process as ``name`` (what the step costs, whatever else the
    machine runs), wall-clock seconds as ``name_wall``."""
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    out[name] = round(time.process_time() - cpu, 3)
    out[f"{name}_wall"] = round(time.perf_counter() - wall, 3)


def run_one(src: Path, kind: str, n: int, limit: float) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter importing micronf from ``src``; failures as ``error``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, __file__, "--one", f"{kind}:{n}"]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "n": n, "error": f">{limit:g} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["exit status " + str(proc.returncode)])[-1]
        return {"kind": kind, "n": n, "error": last.split(":")[0][:40]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@contextlib.contextmanager
def old_tree(ref: str) -> Iterator[Path]:
    """The source directory of revision ``ref``, extracted (``git archive``) into a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp) / "src"


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _cell(r: dict[str, Any] | None, key: str) -> str:
    if r is None:
        return "-"
    return str(r["error"]) if "error" in r else f"{r[key]:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chain", type=_sizes, default=[100, 300, 900, 1000, 3000, 10000],
                    help="chain lengths (µNFs in one template)")
    ap.add_argument("--sfc", type=_sizes, default=[30, 100, 300, 1000], help="SFC lengths (chained VNFs)")
    ap.add_argument("--before", metavar="REF", help="also measure git revision REF (e.g. 31f887a)")
    ap.add_argument("--limit", type=float, default=120.0, help="seconds allowed per size and code version")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # KIND:N, internal: measure one size here
    ap.add_argument("--measure", nargs="?", type=Path, const=ROOT / "src" / "micronf" / "examples" / "sfc-fig11.yaml",
                    metavar="SFC", help="predicted vs measured rates of SFC on this machine (see the docstring)")
    ap.add_argument("--modes", default="pipelined,replicas", help="--measure: modes, comma-separated")
    ap.add_argument("--repeat", type=int, default=3, help="--measure: interleaved rounds")
    ap.add_argument("--seconds", type=float, default=3.0, help="--measure: measured window")
    ap.add_argument("--warmup", type=float, default=1.0, help="--measure: seconds before the window")
    args = ap.parse_args()
    if args.measure:
        return _measure(args)
    if args.one:
        kind, _, n = args.one.partition(":")
        print(json.dumps(measure(kind, int(n))))
        return 0
    cases = [("chain", n) for n in args.chain] + [("sfc", n) for n in args.sfc]
    after = [run_one(ROOT / "src", kind, n, args.limit) for kind, n in cases]
    before: list[dict[str, Any] | None] = [None] * len(cases)
    if args.before:
        with old_tree(args.before) as src:
            before = [run_one(src, kind, n, args.limit) for kind, n in cases]
    if args.json:
        print(json.dumps({"after": after, "before": before if args.before else None}, indent=2))
        return 0
    print("CPU seconds per step (see --help); µNFs: before → after optimization")
    print(f"{'input':>12} {'µNFs':>12} {'rewrites':>8} | {'compose':>8} {'wire':>6} {'place':>6} {'arrange':>7} "
          f"{'cli':>6} | chosen" + (f" | before: {'compose':>8} {'wire':>6} {'place':>6} {'cli':>6}"
                                    if args.before else ""))
    for (kind, n), new, old in zip(cases, after, before, strict=True):
        unfs = f"{new.get('unfs_before', '?')}→{new.get('unfs_after', '?')}"
        row = f"{kind + ' ' + str(n):>12} {unfs:>12} {new.get('rewrites', '-')!s:>8} | " + " ".join(
            f"{_cell(new, k):>{w}}" for k, w in (("compose", 8), ("wire", 6), ("place", 6), ("arrange", 7),
                                                 ("cli", 6))) + f" | {new.get('arrangement', '-')}"
        if args.before:
            row += " |         " + " ".join(
                f"{_cell(old, k):>{w}}" for k, w in (("compose", 8), ("wire", 6), ("place", 6), ("cli", 6)))
        print(row)
    return 1 if any("error" in r for r in after) else 0


def _measure(args: argparse.Namespace) -> int:
    import shlex

    import plan_measure
    from micronf.orchestrator.costmodel import load_table

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rows = plan_measure.run(args.measure, modes, args.repeat, args.seconds, args.warmup)
    if args.json:
        print(json.dumps({"command": shlex.join(sys.argv), "loadavg": os.getloadavg(), "rows": rows}, indent=2))
        return 0
    print(f"# command: {shlex.join(sys.argv)}; load avg at end {os.getloadavg()[0]:.2f}; medians of {args.repeat}")
    print("\n".join(plan_measure.report(rows, load_table())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
