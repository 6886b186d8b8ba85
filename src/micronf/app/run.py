"""The embedded mode (``micronf run``): compose an SFC, run its optimized µNF graph here, summarize.

No orchestrator service and no agent process: this process composes the SFC
(:func:`~micronf.orchestrator.compose.compose_file`) and then either

- **live** (:func:`run_live`): starts an in-process :class:`~micronf.agent.core.Agent`, deploys
  the optimized graph with the built-in generator as its Rx backend (the paper's traffic by
  default: 200-byte HTTP GETs, 20% with SQL-injection URLs) and a null Tx backend per exit, polls
  the agent's stats until every generated packet is accounted for (or the time is up, or the user
  stopped it: then the input stops and the graph drains, so the count is still exact), removes the
  deployment and returns a :class:`RunSummary`; or
- **offline** (:func:`offline_layout`, then :func:`~micronf.app.offline.run_offline` and
  :func:`offline_summary`): runs the optimized graph on a capture with the offline runner:
  back-pressure instead of drops, every exit (each label nobody links, each drop reason) written
  to its own pcap.

Both summaries speak the SFC's language: each exit of the graph is mapped back to the SFC output it
belongs to (``appfw.web``, ``appfw.other``) and each drop keeps its ``where.reason`` name
(``appfw.validate.sqli``), so one can check ``in == out + dropped (+ in flight)``. The console
rendering of a summary lives here too (:func:`print_summary`), so ``micronf run`` only parses
arguments.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from micronf.api.models import DeployRequest, GraphStats, LatencyStats, ScaleEventInfo
from micronf.app.offline import OVERSIZE_EXIT, OfflineResult
from micronf.io.generator_spec import PAPER_SQLI_URLS, GeneratorSpec
from micronf.orchestrator.arrange import Arrangement, ModeChoice, arrange
from micronf.orchestrator.compose import compose
from micronf.orchestrator.costmodel import Alternative, load_table
from micronf.orchestrator.load import load_sfc
from micronf.orchestrator.models import ComposedGraph, Composition
from micronf.orchestrator.placement import AgentRef, Candidate, Traffic, fit_to_cores, place
from micronf.runtime.catalog import explain_drop
from micronf.runtime.graph import ExitPlan, GraphError, GraphLayout, fuse_whole, plan

if TYPE_CHECKING:  # the live form imports it when it runs: the agent brings the HTTP stack, the offline form needs none
    from micronf.agent.core import Agent

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
"""The paper's templates and SFCs, installed with the package (``examples/`` in the repository)."""
DEFAULT_SFC = EXAMPLES / "sfc-fig11.yaml"
LOCAL_AGENT = AgentRef(url="http://localhost", name="local", cpus=tuple(sorted(os.sched_getaffinity(0))))
"""The in-process agent, as placement sees it: this machine's CPUs (those this process may use)."""
"""Firewall → Monitor → Application Firewall (paper Fig. 2(a); optimized it is Fig. 11)."""
POLL_S = 0.1
DRAIN_S = 10.0
"""How long a stopped live run waits for the packets in flight to reach Tx or be dropped."""
COLD_ATTEMPTS = 4
log = logging.getLogger("micronf.run")


class ExitCount(BaseModel):
    """One exit of the graph: the SFC output it is (None for a drop or an unlinked label), its packets."""

    exit: str
    output: str | None
    packets: int
    file: str | None = None


class RunSummary(BaseModel):
    """What ``micronf run`` reports (and prints as JSON with ``--json``)."""

    mode: Literal["live", "offline"]
    sfc: str
    file: str
    unfs_before: int
    unfs_after: int
    rewrites: list[str]  # "kind: node, node" per rewrite (``micronf plan`` gives the reasons)
    processes: int  # OS processes of the µNF graph (Rx/Tx services not included; replicas: one each)
    arrangement: str | None = None  # live: how it ran (pipelined, pipelined-fused, mix, replicas xN)
    packets_in: int
    outputs: dict[str, int]  # SFC output -> packets
    exits: list[ExitCount]
    dropped: dict[str, int]  # 'where.reason' -> packets
    drop_meanings: dict[str, str] = {}  # 'where.reason' -> what it means, in words
    in_flight: int
    processed: int  # packets that entered the graph and left it (out or dropped by it): not those dropped at Rx
    seconds: float
    mpps: float  # processed / seconds: the rate the graph sustained
    latency: LatencyStats | None  # live only: Rx stamp → Tx, ns
    conservation_ok: bool | None  # None: stopped early and the graph did not drain, counters read while moving
    interrupted: bool = False
    traffic: dict[str, int] | None = None  # live: what the generator sent, by sort ("http", "sqli", ...)
    scale_events: list[ScaleEventInfo] = []

    @property
    def packets_out(self) -> int:
        return sum(self.outputs.values())

    @property
    def packets_dropped(self) -> int:
        return sum(self.dropped.values())


class Progress(BaseModel):
    """A live snapshot for the progress display."""

    elapsed: float
    packets_in: int
    packets_out: int
    dropped: int
    in_flight: int
    total: int | None
    mpps: float  # packets the graph processed per second, over the last poll interval


def first_run() -> bool:
    """True when the kernels' on-disk cache is still empty: starting the µNFs will compile them."""
    cache = os.environ.get("NUMBA_CACHE_DIR")
    return cache is None or not any(Path(cache).rglob("*.nbi"))


def deployment_name(sfc: str) -> str:
    """An agent deployment name for this run: the SFC's name, made valid, and this process's id."""
    base = re.sub(r"[^a-z0-9-]+", "-", sfc.lower()).strip("-")[:24] or "sfc"
    return f"run-{base}-{os.getpid()}"


def rewrite_lines(comp: Composition) -> list[str]:
    """One short line per rewrite (kind and the µNFs it rewrote; ``micronf plan`` gives the reasons)."""
    return [f"{r.kind}: {', '.join(r.nodes if r.kind != 'remove' else r.nodes[:1])}" for r in comp.rewrites]


def _exit_counts(graph: ComposedGraph, exits: list[ExitPlan], counts: dict[str, int],
                 files: dict[str, Path] | None = None) -> tuple[list[ExitCount], dict[str, int]]:
    """Per exit: its SFC output and packets; and packets per SFC output (every output listed)."""
    rows = [ExitCount(exit=e.name, output=None if e.is_drop else graph.output_of(e.node, e.verdict),
                      packets=counts.get(e.name, 0), file=str(files[e.name]) if files else None) for e in exits]
    outputs = dict.fromkeys(graph.outputs, 0)
    for row in rows:
        if row.output is not None:
            outputs[row.output] += row.packets
    return rows, outputs


def traffic_counts(spec: GeneratorSpec, frames: int) -> dict[str, int]:
    """How many of the first ``frames`` generated frames are HTTP, carry an SQL-injection URL, etc."""
    from micronf.io.generator import GeneratorRx

    comp = GeneratorRx(spec).describe()
    http = comp.kind == 0
    sqli_urls = [i for i, u in enumerate(comp.urls) if u in PAPER_SQLI_URLS]
    return {"frames": frames, "http": comp.over(http, frames),
            "sqli": comp.over(np.isin(comp.url, sqli_urls), frames), "other": comp.over(~http, frames)}


def _live_request(comp: Composition, name: str, traffic: GeneratorSpec,
                  arrangement: Alternative | None = None) -> DeployRequest:
    """Placed as the orchestrator places it on an agent of this machine (its CPUs; ``arrangement``:
    :func:`arrange_live`'s choice, default pipelined, fused when cores are scarce)."""
    parts = place(comp.after, name, [Candidate(LOCAL_AGENT, 0)], Traffic(rx=traffic.model_dump(mode="json")),
                  arrangement=arrangement)
    return parts[0].request.model_copy(update={"ring_capacity": 4096})


def arrangement_name(alt: Alternative) -> str:
    """``replicas x2``, ``pipelined-fused``, ``mix``: how a graph runs, in a few words."""
    return f"{alt.name} x{alt.replicas}" if alt.mode == "replicas" else alt.name


def _accounted(s: GraphStats) -> tuple[int, int, int]:
    out = sum(t["frames"] for t in s.tx.values())
    return out, sum(s.drops.values()), s.conservation.in_flight


def _deploy(agent: Agent, req: DeployRequest, *, cold: bool) -> None:
    """Deploy; with a cold kernel cache, try again when the start timed out while compiling.

    The agent gives a graph two minutes to start, which a first compile of every kernel can exceed
    on a small, busy machine; what was compiled is cached, so each attempt gets further.
    """
    from micronf.api.errors import DeploymentFailedError

    for attempt in range(1, COLD_ATTEMPTS + 1):
        try:
            agent.deploy(req)
            return
        except DeploymentFailedError:
            if not cold or attempt == COLD_ATTEMPTS:
                raise
            log.warning("the µNFs did not start in time while compiling (attempt %d of %d); continuing",
                        attempt, COLD_ATTEMPTS)


def _drain(agent: Agent, name: str, timeout: float) -> GraphStats | None:
    """With the input paused: stats once the graph is empty and still (every packet reached Tx or was
    dropped, and two reads in a row agree: one read is not atomic, its counters are read one after
    the other), so the conservation check is exact; None on timeout."""
    deadline = time.monotonic() + timeout
    last: tuple[int, int, int] | None = None
    while True:
        s = agent.stats(name)
        now = _accounted(s)
        if now[2] == 0 and now == last:
            return s
        if time.monotonic() > deadline:
            return None
        last = now
        time.sleep(POLL_S / 10)


def run_live(comp: Composition, file: Path, traffic: GeneratorSpec, *, seconds: float | None = None,
             stop: threading.Event | None = None, on_deploying: Callable[[int], None] | None = None,
             on_progress: Callable[[Progress], None] | None = None,
             arrangement: Alternative | None = None) -> RunSummary:
    """Deploy ``comp``'s optimized graph on an in-process agent with ``traffic`` and run it.

    Ends when every frame of ``traffic.count`` is accounted for (out, dropped, nothing in flight),
    when ``seconds`` have passed since the deployment came up, or when ``stop`` is set (marked
    ``interrupted``). Stopped early, it drains: the input stops (the Rx service pauses) and the run
    waits, up to ``DRAIN_S``, until no packet is in flight, so the conservation check is exact
    (``conservation_ok`` None only when the graph did not drain). The deployment is always removed.
    ``on_deploying(processes)`` is called before the (possibly compiling) start. ``arrangement``
    (:func:`arrange_live`'s choice; default: pipelined) says how the graph runs.
    """
    from micronf.agent.core import Agent

    name = deployment_name(comp.sfc)
    req = _live_request(comp, name, traffic, arrangement)
    layout = plan(req.graph)
    processes = req.replicas if req.mode == "replicas" else len(layout.processes)
    stop = stop or threading.Event()
    drained: GraphStats | None = None
    with Agent() as agent:
        if on_deploying is not None:
            on_deploying(processes)
        _deploy(agent, req, cold=first_run())
        try:
            t0 = last_t = time.monotonic()
            last_processed = 0
            t_first: float | None = None
            while True:
                s = agent.stats(name)
                now = time.monotonic()
                out, dropped, in_flight = _accounted(s)
                done = out + dropped
                processed = s.rx["accepted"] - in_flight  # the rate counts what the graph processed, not Rx drops
                if t_first is None and s.rx["frames"]:
                    t_first = last_t
                if on_progress is not None:
                    on_progress(Progress(elapsed=now - t0, packets_in=s.rx["frames"], packets_out=out,
                                         dropped=dropped, in_flight=in_flight, total=traffic.count,
                                         mpps=(processed - last_processed) / max(now - last_t, 1e-9) / 1e6))
                last_t, last_processed = now, processed
                finished = (traffic.count is not None and s.rx["frames"] >= traffic.count and in_flight == 0
                            and done == s.rx["frames"])
                if finished or stop.is_set() or (seconds is not None and now - t0 >= seconds):
                    break
                stop.wait(POLL_S)
            if not finished:
                agent.pause_input(name)  # unconfirmed within its timeout, the request still stands: drain anyway
                drained = _drain(agent, name, DRAIN_S)
                s = drained or agent.stats(name)
            elapsed = max(time.monotonic() - (t_first if t_first is not None else t0), 1e-9)
        finally:
            agent.remove(name)
    out, dropped, in_flight = _accounted(s)
    rows, outputs = _exit_counts(comp.after, layout.exits, {k: t["frames"] for k, t in s.tx.items()})
    packets_in = s.rx["frames"]
    exact = finished or drained is not None
    processed = s.rx["accepted"] - in_flight
    return RunSummary(
        mode="live", sfc=comp.sfc, file=str(file), unfs_before=len(comp.before.spec.nodes),
        unfs_after=len(comp.after.spec.nodes), rewrites=rewrite_lines(comp), processes=processes,
        arrangement=arrangement_name(arrangement) if arrangement is not None else None,
        packets_in=packets_in, outputs=outputs, exits=rows, dropped=dict(sorted(s.drops.items())),
        drop_meanings=drop_meanings(comp, s.drops), in_flight=in_flight, processed=processed, seconds=elapsed,
        mpps=processed / elapsed / 1e6, latency=s.latency,
        conservation_ok=s.conservation.ok and in_flight == 0 and packets_in == out + dropped if exact else None,
        interrupted=stop.is_set() and not finished, traffic=traffic_counts(traffic, packets_in),
        scale_events=s.scale_events)


def drop_meanings(comp: Composition, drops: dict[str, int]) -> dict[str, str]:
    """What each drop ``where.reason`` of a run means (see :func:`~micronf.runtime.catalog.explain_drop`)."""
    types = {n.name: n.type for n in comp.after.spec.nodes}
    return {key: explain_drop(key, types) for key in sorted(drops)}


def offline_layout(comp: Composition, burst: int = 32, *, fused: bool = True) -> GraphLayout:
    """The optimized graph wired for the offline runner: drops captured, back-pressure on full rings;
    with ``fused``, every µNF in one process when the graph is a chain (see
    :func:`~micronf.runtime.graph.fuse_whole`: the runner then runs it in-process), else as placed."""
    spec = comp.after.spec.model_copy(update={"burst": burst})
    if fused:
        with contextlib.suppress(GraphError):  # not a chain: its µNFs run as processes
            spec = fuse_whole(spec)
    return plan(spec, capture_drops=True, on_full="wait")


def offline_summary(comp: Composition, file: Path, layout: GraphLayout, res: OfflineResult) -> RunSummary:
    """The :class:`RunSummary` of ``run_offline(layout, ...)`` (``layout`` from :func:`offline_layout`)."""
    rows, outputs = _exit_counts(comp.after, layout.exits, res.per_exit, res.files)
    dropped = {e.name: res.per_exit[e.name] for e in layout.exits if e.is_drop and res.per_exit[e.name]}
    if res.per_exit.get(OVERSIZE_EXIT):  # longer than the frame capacity: dropped at input, never cut
        dropped[OVERSIZE_EXIT] = res.per_exit[OVERSIZE_EXIT]
    if res.freed_inside:
        dropped["(freed inside the graph)"] = res.freed_inside
    return RunSummary(
        mode="offline", sfc=comp.sfc, file=str(file), unfs_before=len(comp.before.spec.nodes),
        unfs_after=len(comp.after.spec.nodes), rewrites=rewrite_lines(comp), processes=len(layout.processes),
        packets_in=res.fed, outputs=outputs, exits=rows, dropped=dict(sorted(dropped.items())),
        drop_meanings=drop_meanings(comp, dropped), in_flight=0, processed=res.fed,
        seconds=res.seconds, mpps=res.fed / res.seconds / 1e6 if res.seconds > 0 else 0.0, latency=None,
        conservation_ok=res.balanced and res.fed == sum(outputs.values()) + sum(dropped.values()))


def load(sfc: Path | None, *, live: bool = True) -> tuple[Composition, Path]:
    """Compose ``sfc`` (default: the packaged Fig. 11 SFC); raises ``SpecError`` on invalid input.

    For a ``live`` run on a machine with fewer CPUs than µNFs, without parallel branches: the
    placement then chains and fuses them (see :mod:`micronf.orchestrator.placement`).
    """
    path = sfc or DEFAULT_SFC
    bundle = load_sfc(path)
    comp = compose(bundle)
    return fit_to_cores(bundle, comp, LOCAL_AGENT.cpus) if live else comp, path


def arrange_live(sfc: Path | None, mode: ModeChoice = "auto", replicas: int | None = None,
                 costs: Path | None = None) -> tuple[Composition, Path, Arrangement]:
    """Compose ``sfc`` (default: the packaged Fig. 11 SFC) and arrange it for this machine's CPUs as
    the orchestrator would (:func:`~micronf.orchestrator.arrange.arrange`): the composition to run
    and the arrangement (pass its ``chosen`` to :func:`run_live`). Raises ``SpecError``,
    ``CostTableError`` or ``PlacementError`` (replicas asked for where they cannot run)."""
    path = sfc or DEFAULT_SFC
    bundle = load_sfc(path)
    comp, arrangement = arrange(bundle, compose(bundle), LOCAL_AGENT.cpus, load_table(costs), mode=mode,
                                replicas=replicas)
    return comp, path, arrangement


# -- console rendering ----------------------------------------------------------------------------
def progress_table(p: Progress) -> Table:
    """The live progress line: packets in (of total), out, dropped, in flight, current rate."""
    table = Table("elapsed", "in", "out", "dropped", "in flight", "rate", box=None)
    total = f" / {p.total:,}" if p.total is not None else ""
    table.add_row(f"{p.elapsed:.1f} s", f"{p.packets_in:,}{total}", f"{p.packets_out:,}", f"{p.dropped:,}",
                  f"{p.in_flight:,}", f"{p.mpps:.3f} Mpps")
    return table


def print_summary(console: Console, s: RunSummary) -> None:
    """The final summary: in, out per SFC output, drops by reason, rate, latency, conservation."""
    title = f"{s.sfc}: {s.mode} run" + (" ([yellow]interrupted[/])" if s.interrupted else "")
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_row("µNFs", f"{s.unfs_before} joined along the SFC → {s.unfs_after} after optimization "
                  f"({len(s.rewrites)} rewrites), {s.processes} µNF process{'' if s.processes == 1 else 'es'}"
                  + (f" ({escape(s.arrangement)})" if s.arrangement else ""))
    table.add_row("packets in", f"{s.packets_in:,}")
    if s.traffic is not None:
        table.add_row("  of which", f"{s.traffic['http']:,} HTTP, {s.traffic['sqli']:,} with SQL-injection URLs")
    for output, n in s.outputs.items():
        table.add_row(f"out: {escape(output)}", f"{n:,}")
    for where, n in s.dropped.items():
        meaning = s.drop_meanings.get(where)
        table.add_row(f"dropped: {escape(where)}", f"{n:,}" + (f" [dim]— {escape(meaning)}[/]" if meaning else ""))
    if s.in_flight:
        table.add_row("in flight at stop", f"{s.in_flight:,}")
    at_rx = sum(n for where, n in s.dropped.items() if where.startswith("@rx."))
    table.add_row("rate", f"[bold]{s.mpps:.3f} Mpps[/] ({s.processed:,} packets processed by the graph in "
                  f"{s.seconds:.2f} s" + (f"; the {at_rx:,} dropped at Rx are not counted)" if at_rx else ")"))
    if s.latency is not None and s.latency.count:
        lat = s.latency
        table.add_row("latency (Rx→Tx)", f"p50 {lat.p50_ns / 1e3:,.1f} µs, p90 {lat.p90_ns / 1e3:,.1f} µs, "
                      f"p99 {lat.p99_ns / 1e3:,.1f} µs, max {lat.max_ns / 1e3:,.1f} µs")
    for ev in s.scale_events:
        table.add_row("scaled", f"{ev.action} {escape(ev.instance)}: {escape(ev.reason)}")
    verdict = {True: "[green]ok[/]", False: "[red]VIOLATED[/]",
               None: "[yellow]not checked[/] (the graph did not drain after the stop: counters read while "
                     "packets moved)"}[s.conservation_ok]
    flight = f" + {s.in_flight:,} in flight" if s.in_flight else ""
    table.add_row("conservation", f"{s.packets_in:,} in == {s.packets_out:,} out + {s.packets_dropped:,} dropped"
                  f"{flight}: {verdict}")
    console.print(table)
    if s.mode == "offline":
        files = Table("exit", "SFC output", "packets", "file", title="one pcap per exit", title_justify="left")
        for row in s.exits:
            if row.packets or row.output is not None:
                files.add_row(escape(row.exit), escape(row.output or "-"), f"{row.packets:,}", escape(row.file or ""))
        console.print(files)
        empty = sum(1 for row in s.exits if not row.packets and row.output is None)
        if empty:
            console.print(f"[dim]{empty} other exits received nothing (their pcaps are empty)[/]")
