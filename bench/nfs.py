"""Benchmark: CPU cycles per packet of each µNF kernel of the paper's Fig. 11 SFC, before and after.

What it measures: each µNF's batch kernel, called exactly as the runtime calls it (batches of
``--batch`` handles of one pool), over the paper's traffic (``micronf.io.generator_spec.paper_traffic``:
200-byte HTTP GETs, 20% with SQL-injection URLs; its 1000 templates, one per pool slot). Cost is
read from the TSC around a compiled loop of ``--passes`` passes over all templates, so it is
cycles of the kernel alone: no rings, no Rx/Tx. The µNFs are configured as in
``examples/templates`` (CountUrl counts ``/login``, ``/admin``, ``/search``; L3L4Filter denies a
network and telnet).

Before/after in the same run: the µNF modules as they were at ``--baseline`` (a git revision,
default: the commit before the kernels were optimized) are read with ``git show`` into
``bench/out/baseline-<rev>/`` (so numba's cache reuses their compiled kernels), with their
imports of the other files that changed since then pointed at the baseline copies too. Only
modules that differ from the working tree get a baseline row. The baseline and current kernels
are measured alternately, ``--repeat`` rounds, and the medians are reported with their ratio.
Both must give the same verdicts and counters on every packet (checked; exit status 1 if not).

``--table FILE`` writes what placement's cost model (:mod:`micronf.orchestrator.costmodel`) reads:
the current kernels' median cycles/packet per µNF type, the TSC rate (the clock the model divides
by), the machine and this command; the I/O and hand-off costs, which this benchmark does not
measure, are copied from ``--io-from`` (default: the packaged table). ``--nfs all`` measures every
µNF type. The packaged default table (``src/micronf/orchestrator/costs.json``, the exact command
and machine recorded in it) was made with::

    python3 bench/nfs.py --nfs all --baseline '' --repeat 7 --passes 5 --table FILE

Usage::

    python bench/nfs.py [--nfs ValidateUrl,CountUrl|all] [--repeat R] [--passes P] [--batch B]
                        [--baseline REV] [--json] [--table FILE [--io-from FILE]]

This is a benchmark, not a test: numbers depend on the machine and its load (in the header).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from _common import base_facts, text_table

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SRC_DIR = REPO / "src"
BASELINE_REV = "fa59d50b2e4ece7e0d6bb5ff128ccad3f383b0b0"  # before the HTTP µNF kernels were optimized

# µNF name -> (module under micronf.nfs, config as in examples/templates)
SFC: dict[str, tuple[str, dict[str, Any]]] = {
    "CheckIPHeader": ("check_ip_header", {}),
    "L3L4Filter": (
        "l3l4_filter",
        {
            "default": "allow",
            "rules": [{"action": "deny", "src": "10.66.0.0/16"}, {"action": "deny", "proto": "tcp", "dport": 23}],
        },
    ),
    "HttpClassifier": ("http_classifier", {}),
    "CountUrl": ("count_url", {"urls": ["/login", "/admin", "/search"]}),
    "PacketSizeCounter": ("packet_size_counter", {}),
    "ValidateUrl": ("validate_url", {}),
}
# the other µNFs, measured only when named in --nfs (never in the default run or its fused row)
OTHERS: dict[str, tuple[str, dict[str, Any]]] = {
    "MacSwapper": ("mac_swapper", {}),
    "IPTtlDecrementer": ("ip_ttl_decrementer", {}),
    "FlowLoadBalancer": ("flow_load_balancer", {"backends": [{"ip": f"10.9.0.{i}"} for i in range(1, 5)]}),
}
KERNELS = {**SFC, **OTHERS}
CHAIN = "in sequence (fused)"
# the files a µNF module may import that can change with it (rewired to the baseline copies); the
# paths before issue 13 moved them to micronf.packet are listed too, for baselines older than that
HELPERS = {
    "micronf.packet.http": "packet/http.py",
    "micronf.packet.dfa": "packet/dfa.py",
    "micronf.packet.waf": "packet/waf.py",  # ValidateUrl's decode-and-match kernel
    "micronf.nfs.check_ip_header": "nfs/check_ip_header.py",  # L3L4Filter imports its header check
    "micronf.nfs._http": "nfs/_http.py",
    "micronf.dataplane.dfa": "dataplane/dfa.py",
    "micronf.dataplane.headers": "dataplane/headers.py",
    "micronf.runtime.nf": "runtime/nf.py",  # the µNF base class the µNFs of older revisions were written for
}


def _import_this_tree() -> None:
    """Import ``micronf`` from ``src/`` next to this directory, whatever is installed: the baseline
    is a revision of THIS tree, so "after" must be this tree too."""
    sys.path.insert(0, str(SRC_DIR))


# -- the baseline ------------------------------------------------------------------------------
def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, check=True, capture_output=True, text=True, timeout=60).stdout


def _changed(rev: str, rel: str) -> bool:
    """Whether ``src/micronf/<rel>`` differs between ``rev`` and the working tree."""
    return subprocess.run(
        ["git", "diff", "--quiet", rev, "--", f"src/micronf/{rel}"], cwd=REPO, timeout=60, check=False
    ).returncode != 0


def _exists(rev: str, rel: str) -> bool:
    """Whether ``src/micronf/<rel>`` exists at ``rev``."""
    return subprocess.run(
        ["git", "cat-file", "-e", f"{rev}:src/micronf/{rel}"], cwd=REPO, timeout=60, check=False, capture_output=True
    ).returncode == 0


def load_baseline(rev: str, modules: Sequence[str]) -> dict[str, ModuleType]:
    """The µNF ``modules`` (names under ``micronf.nfs``) as of ``rev``, for those that changed since.

    Each is written to ``bench/out/baseline-<rev>/micronf_baseline_<rev>/`` with ``from micronf.X``
    of a changed helper (:data:`HELPERS`) rewritten to the baseline copy, then imported with the
    µNF registry saved and restored (the baseline classes reuse the current names).
    """
    from micronf.runtime.nf import MicroNF

    full = _git("rev-parse", rev).strip()
    pkg = f"micronf_baseline_{full[:10]}"
    root = BENCH_DIR / "out" / f"baseline-{full[:10]}"
    (root / pkg).mkdir(parents=True, exist_ok=True)
    (root / pkg / "__init__.py").write_text("")
    helpers = {mod: rel for mod, rel in HELPERS.items() if _exists(full, rel) and _changed(full, rel)}
    sources = {m: _git("show", f"{full}:src/micronf/nfs/{m}.py") for m in modules}
    wanted = [m for m in modules if _changed(full, f"nfs/{m}.py") or any(h in sources[m] for h in helpers)]
    files = {
        **{mod.rsplit(".", 1)[1]: _git("show", f"{full}:src/micronf/{rel}") for mod, rel in helpers.items()},
        **{m: sources[m] for m in wanted},
    }
    for name, text in files.items():
        for mod in helpers:
            text = text.replace(f"from {mod} import", f"from {pkg}.{mod.rsplit('.', 1)[1]} import")
        path = root / pkg / f"{name}.py"
        if not path.is_file() or path.read_text() != text:  # keep mtimes (numba's cache key) stable
            path.write_text(text)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    saved = dict(MicroNF.registry)
    try:
        MicroNF.registry.clear()
        return {m: importlib.import_module(f"{pkg}.{m}") for m in wanted}
    finally:
        MicroNF.registry.clear()
        MicroNF.registry.update(saved)


# -- measuring ---------------------------------------------------------------------------------
def make_driver() -> Callable[..., None]:
    """A compiled loop: passes of ``kernel`` over all handles in batches, TSC ticks of each pass in ``ticks``."""
    from numba import njit

    from micronf.dataplane.atomics import cycles

    def drive(kernel: Any, p: Any, handles: Any, batch: int, ticks: Any, verdicts: Any, state: Any,
              counters: Any) -> None:
        n = handles.shape[0]
        for k in range(ticks.shape[0]):
            t0 = cycles()
            for b in range(0, n, batch):
                m = min(batch, n - b)
                kernel(p, handles[b:], m, verdicts[b:], state, counters)
            ticks[k] = cycles() - t0

    return njit(nogil=True)(drive)


def make_chain_driver(n: int) -> Callable[..., None]:
    """A compiled loop running ``n`` kernels one after the other on every batch: a fused µNF process
    (run to completion) without the routing. The parse cache is forgotten at the start of each pass,
    so every pass parses as fresh packets would."""
    from numba import njit

    from micronf.dataplane.atomics import cycles
    from micronf.dataplane.pool import pkt_forget_parse

    params = ", ".join(f"k{j}, s{j}, c{j}" for j in range(n))
    calls = "".join(f"\n            k{j}(p, handles[b:], m, verdicts[b:], s{j}, c{j})" for j in range(n))
    source = f"""
def drive(p, handles, batch, ticks, verdicts, {params}):
    n = handles.shape[0]
    for k in range(ticks.shape[0]):
        t0 = cycles()
        pkt_forget_parse(p, handles, n)
        for b in range(0, n, batch):
            m = min(batch, n - b){calls}
        ticks[k] = cycles() - t0
"""
    scope: dict[str, Any] = {"cycles": cycles, "pkt_forget_parse": pkt_forget_parse}
    exec(source, scope)
    return cast(Callable[..., None], njit(nogil=True)(scope["drive"]))


@dataclass
class Measured:
    nf: str
    version: str  # "baseline" or "current"
    pass_ticks: list[int] = field(default_factory=list)  # TSC ticks of each pass over the templates
    packets_per_pass: int = 0
    verdicts: npt.NDArray[np.int32] | None = None
    counters: list[int] = field(default_factory=list)

    @property
    def cycles(self) -> float:
        """Median over all passes: a pass that another process preempted is an outlier, not the norm."""
        return statistics.median(self.pass_ticks) / self.packets_per_pass


class Bench:
    """The traffic in a local pool, and the compiled driver that runs a kernel over it."""

    def __init__(self, batch: int, passes: int) -> None:
        from micronf.dataplane.pool import PacketPool
        from micronf.io.generator import build_templates
        from micronf.io.generator_spec import paper_traffic

        trace, _ = build_templates(paper_traffic())
        n = trace.offsets.shape[0]
        self.pool = PacketPool.local(n)
        self.handles = self.pool.alloc(n)
        self.frames = [bytes(trace.data[o : o + ln]) for o, ln in zip(trace.offsets, trace.lengths, strict=True)]
        self.batch, self.passes = batch, passes
        self.drive = make_driver()
        self.chain_drive: Callable[..., None] | None = None

    def once(self, cls: Any, config: dict[str, Any], passes: int) -> tuple[list[int], npt.NDArray[np.int32], Any]:
        """Run ``passes`` passes over freshly written frames (CheckIPHeader may trim them)."""
        for h, f in zip(self.handles.tolist(), self.frames, strict=True):
            self.pool.write_frame(h, f)
        nf = cls(config)
        state = nf.state()
        counters = np.zeros(max(len(nf.counter_names()), 1), dtype=np.int64)
        verdicts = np.full(self.handles.shape[0], -(2**31), dtype=np.int32)
        ticks = np.zeros(passes, dtype=np.int64)
        self.drive(cls.kernel, self.pool.arrays, self.handles, self.batch, ticks, verdicts, state, counters)
        return ticks.tolist(), verdicts, counters

    def measure(self, m: Measured, cls: Any, config: dict[str, Any]) -> None:
        if m.verdicts is None:  # first call: compile, and record the decisions of one pass
            _, m.verdicts, counters = self.once(cls, config, 1)
            m.counters = counters.tolist()
            m.packets_per_pass = self.handles.shape[0]
        m.pass_ticks += self.once(cls, config, self.passes)[0]

    def measure_chain(self, m: Measured, chain: Sequence[tuple[Any, dict[str, Any]]]) -> None:
        """Like :meth:`measure` for the kernels of ``chain`` (class, config) run in sequence on each batch."""
        if self.chain_drive is None:
            self.chain_drive = make_chain_driver(len(chain))
        for h, f in zip(self.handles.tolist(), self.frames, strict=True):
            self.pool.write_frame(h, f)
        nfs = [cls(config) for cls, config in chain]
        counters = [np.zeros(max(len(nf.counter_names()), 1), dtype=np.int64) for nf in nfs]
        verdicts = np.full(self.handles.shape[0], -(2**31), dtype=np.int32)
        passes = 1 if m.verdicts is None else self.passes
        ticks = np.zeros(passes, dtype=np.int64)
        per_nf = [x for nf, c in zip(nfs, counters, strict=True) for x in (type(nf).kernel, nf.state(), c)]
        self.chain_drive(self.pool.arrays, self.handles, self.batch, ticks, verdicts, *per_nf)
        if m.verdicts is None:  # first call: compile, and record the decisions of one pass
            m.verdicts, m.counters = verdicts, [int(x) for c in counters for x in c]
            m.packets_per_pass = self.handles.shape[0]
        else:
            m.pass_ticks += ticks.tolist()


def run(args: argparse.Namespace) -> tuple[list[tuple[Measured, Measured | None]], dict[str, Any]]:
    names = args.nfs
    bench = Bench(args.batch, args.passes)
    modules = [KERNELS[nf][0] for nf in names]
    base_mods = load_baseline(args.baseline, modules) if args.baseline else {}
    cur = {nf: importlib.import_module(f"micronf.nfs.{KERNELS[nf][0]}") for nf in names}
    pairs: list[tuple[Measured, Measured | None]] = []
    for nf in names:
        base = base_mods.get(KERNELS[nf][0])
        pairs.append((Measured(nf, "current"), Measured(nf, "baseline") if base is not None else None))
    chains: list[tuple[Measured, list[tuple[Any, dict[str, Any]]]]] = []
    if len(names) > 1:  # the kernels in sequence, as a fused process runs them (the parse cache at work)
        chains.append((Measured(CHAIN, "current"), [(getattr(cur[nf], nf), KERNELS[nf][1]) for nf in names]))
        if base_mods:
            old = [(getattr(base_mods.get(KERNELS[nf][0], cur[nf]), nf), KERNELS[nf][1]) for nf in names]
            chains.append((Measured(CHAIN, "baseline"), old))
    for _ in range(args.repeat):
        for (cur_m, base_m), nf in zip(pairs, names, strict=True):
            config = KERNELS[nf][1]
            bench.measure(cur_m, getattr(cur[nf], nf), config)
            if base_m is not None:
                bench.measure(base_m, getattr(base_mods[KERNELS[nf][0]], nf), config)
        for m, chain in chains:
            while not m.pass_ticks:  # the first call only compiles and records the verdicts
                bench.measure_chain(m, chain)
            bench.measure_chain(m, chain)
    if chains:
        pairs.append((chains[0][0], chains[1][0] if len(chains) > 1 else None))
    info = {"templates": len(bench.frames), "sizes": sorted({len(f) for f in bench.frames})}
    return pairs, info


def machine_facts() -> dict[str, Any]:
    return base_facts()


def tsc_hz(seconds: float = 0.2) -> float:
    """TSC ticks per second (what the runtime's ``cycles`` counter counts), over ``seconds`` of wall clock."""
    import time

    from numba import njit

    from micronf.dataplane.atomics import cycles

    read = cast(Callable[[], int], njit(lambda: cycles()))
    read()  # compile
    t0, c0 = time.perf_counter(), read()
    time.sleep(seconds)
    t1, c1 = time.perf_counter(), read()
    return (c1 - c0) / (t1 - t0)


def cost_table(pairs: Sequence[tuple[Measured, Measured | None]], facts: dict[str, Any], command: str,
               io_from: Path | None, batch: int) -> dict[str, Any]:
    """The cost model's table (see the module docstring): this run's kernels, the I/O costs of ``io_from``."""
    from micronf.orchestrator.costmodel import FORMAT, load_table

    io = load_table(io_from)
    kernels = {c.nf: round(c.cycles, 1) for c, _ in pairs if c.nf != CHAIN}
    return {
        "format": FORMAT, "command": command, "machine": facts, "clock_hz": round(tsc_hz()), "kernels": kernels,
        "unknown_kernel": max(kernels.values()), "io": io.io.model_dump(), "io_source": io.io_source,
        "traffic": "paper_traffic(): 200-byte HTTP GETs, 20% SQL-injection URLs; batches of "
                   f"{batch}; median cycles/packet over passes",
    }


def _mismatch(cur: Measured, base: Measured | None) -> str:
    if base is None or cur.verdicts is None or base.verdicts is None:
        return ""
    wrong = int(np.count_nonzero(cur.verdicts != base.verdicts))
    if wrong:
        return f"MISMATCH: verdicts differ on {wrong} packets"
    return "MISMATCH: counters differ" if cur.counters != base.counters else "same verdicts and counters"


def format_table(pairs: Sequence[tuple[Measured, Measured | None]], facts: dict[str, Any], info: dict[str, Any],
                 command: str, args: argparse.Namespace) -> str:
    lines = [
        f"# machine: {facts['cpu']}, nproc {facts['nproc']}, load avg {facts['loadavg_at_start'][0]}, "
        f"kernel {facts['kernel']}, python {facts['python']}, numba {facts['numba']}",
        f"# command: {command}",
        f"# traffic: paper_traffic() templates: {info['templates']} frames of {info['sizes']} B, 20% SQLi URLs; "
        f"batches of {args.batch}; {args.repeat} rounds x {args.passes} passes, before/after alternating",
        f"# baseline: {args.baseline or '-'}; cyc/pkt: TSC ticks per packet inside the kernel, median over passes",
    ]
    header = ("µNF", "before cyc/pkt", "after cyc/pkt", "speed-up", "check")

    def row(name: str, before: float | None, after: float, check: str) -> tuple[str, ...]:
        return (name, "(same)" if before is None else f"{before:.0f}", f"{after:.0f}",
                "-" if before is None else f"{before / after:.2f}x", check)

    kernels = [(c, b) for c, b in pairs if c.nf != CHAIN]
    total_b = sum((b or c).cycles for c, b in kernels)
    total_a = sum(c.cycles for c, _ in kernels)
    body = [row(c.nf, b.cycles if b else None, c.cycles, _mismatch(c, b)) for c, b in kernels]
    body.append(row("all of the above (sum)", total_b, total_a, ""))
    body += [row(c.nf, b.cycles if b else None, c.cycles, _mismatch(c, b)) for c, b in pairs if c.nf == CHAIN]
    return "\n".join([*lines, *text_table(header, body, right={1, 2, 3})])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Cycles per packet of the Fig. 11 µNF kernels, before and after")
    ap.add_argument("--nfs", type=lambda s: [x.strip() for x in s.split(",") if x.strip()], default=list(SFC),
                    help=f"comma-separated µNFs (default: all of {','.join(SFC)}; also {','.join(OTHERS)})")
    ap.add_argument("--repeat", type=int, default=15, help="rounds, before and after alternating (default 15)")
    ap.add_argument("--passes", type=int, default=10, help="passes over the 1000 templates per round (default 10)")
    ap.add_argument("--batch", type=int, default=32, help="handles per kernel call (default 32)")
    ap.add_argument("--baseline", default=BASELINE_REV, help="git revision of the 'before' kernels ('' for none)")
    ap.add_argument("--json", action="store_true", help="print a JSON document instead of the table")
    ap.add_argument("--table", type=Path, help="also write placement's cost table (cycles/packet per µNF type) here")
    ap.add_argument("--io-from", type=Path, help="the table whose I/O and hand-off costs --table copies "
                    "(default: the packaged one)")
    args = ap.parse_args(argv)
    if args.nfs == ["all"]:
        args.nfs = list(KERNELS)
    unknown = [nf for nf in args.nfs if nf not in KERNELS]
    if unknown or not args.nfs or args.repeat < 1 or args.passes < 1 or args.batch < 1:
        ap.error(f"need known --nfs (unknown: {unknown}), --repeat/--passes/--batch >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([Path(sys.executable).name, *sys.argv] if argv is None else ["nfs.py", *argv])
    _import_this_tree()
    facts = machine_facts()
    pairs, info = run(args)
    mismatch = any("MISMATCH" in _mismatch(c, b) for c, b in pairs)
    if args.table is not None:
        args.table.write_text(json.dumps(cost_table(pairs, facts, command, args.io_from, args.batch), indent=2) + "\n")
    if args.json:
        rows = [
            {"nf": c.nf, "after_cycles_per_packet": c.cycles, "after_pass_ticks": c.pass_ticks,
             "before_cycles_per_packet": b.cycles if b else None, "before_pass_ticks": b.pass_ticks if b else None,
             "packets_per_pass": c.packets_per_pass, "check": _mismatch(c, b)}
            for c, b in pairs
        ]
        print(json.dumps({"command": command, "machine": facts, "traffic": info, "args": vars(args), "rows": rows,
                          "mismatch": mismatch}, indent=2))
    else:
        print(format_table(pairs, facts, info, command, args))
        if mismatch:
            print("# !!! baseline and current kernels disagree: see the check column")
    return 1 if mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
