"""The ``micronf`` commands that run on this machine alone: ``bench-ring``, ``run`` (an SFC,
embedded), ``nfs`` (the catalog), ``chain`` (µNFs over a capture), ``shm ls|gc``, ``version``."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

import typer
from rich.markup import escape
from rich.table import Table

from micronf import __version__
from micronf.app.cli.base import CliError, console, err_console, print_version, stop_signals
from micronf.runtime.graph import Policy
from micronf.runtime.launch import LaunchError

if TYPE_CHECKING:
    from micronf.app.offline import OfflineResult
    from micronf.app.run import RunSummary
    from micronf.io.trace import Trace
    from micronf.orchestrator.costmodel import Alternative
    from micronf.orchestrator.models import Composition
    from micronf.runtime.graph import GraphLayout


def bench_ring(
    stages: int = typer.Option(1, min=1, max=16, help="Forwarding stages between source and sink."),
    seconds: float = typer.Option(3.0, min=0.1, help="Measurement time."),
    burst: int = typer.Option(64, min=1, max=1024, help="Packets per burst."),
    policy: str = typer.Option("other", help="Scheduling policy: other (CFS), fifo or rr."),
) -> None:
    """Data-plane demo: packets flow source -> forwarder(s) -> sink, one process each, over
    shared-memory rings; prints the rate and checks that every packet is accounted for."""
    from micronf.app.demo import FORWARDER, run_ring_demo
    from micronf.runtime.scheduling import POLICIES

    if policy not in POLICIES:
        raise typer.BadParameter(f"must be one of {', '.join(POLICIES)}", param_hint="--policy")
    cpus = sorted(os.sched_getaffinity(0))
    console.print(
        f"[bold]micronf {__version__}[/] ring demo: source -> {stages} x {FORWARDER} -> sink "
        f"({stages} µNF processes on CPUs {cpus}, source and sink in this one; burst {burst}, policy {policy})"
    )
    console.print("starting processes (the first run compiles the kernels, ~10 s) ...")
    t0 = time.monotonic()
    try:
        res = run_ring_demo(stages, seconds=seconds, burst=burst, policy=cast(Policy, policy), cpus=cpus)
    except LaunchError as exc:
        raise CliError(f"cannot start the graph with policy {policy!r}: {exc} (real-time policies need root)") from exc
    ok = res.conserved and res.every_stage_saw_every_packet and res.freed_inside == 0
    table = Table(title="demo result", show_header=False)
    table.add_row("throughput", f"[bold]{res.mpps:.2f} Mpps[/] ({res.packets:,} packets in {res.seconds:.2f} s)")
    table.add_row("packets fed (source)", f"{res.fed:,}")
    table.add_row("packets delivered (sink)", f"{res.delivered:,}")
    table.add_row("in flight after the drain", f"{res.in_flight:,}")
    table.add_row("freed inside the graph", f"{res.freed_inside:,}")
    table.add_row("every stage saw every packet", "[green]yes[/]" if res.every_stage_saw_every_packet else "[red]NO[/]")
    table.add_row("conservation fed == delivered + freed + in flight", "[green]ok[/]" if res.conserved
                  else "[red]VIOLATED[/]")
    table.add_row("wall time", f"{time.monotonic() - t0:.1f} s")
    console.print(table)
    if not ok:
        raise typer.Exit(1)


def run(
    sfc: Path | None = typer.Argument(None, exists=True, dir_okay=False,
                                      help="The SFC request (default: the paper's Fig. 11 SFC, "
                                      "Firewall -> Monitor -> Application Firewall)."),
    pcap: Path | None = typer.Option(None, "--pcap", exists=True, dir_okay=False,
                                     help="Offline form: run the SFC on this capture (needs --out)."),
    out: Path | None = typer.Option(None, "--out", file_okay=False, help="Offline form: one pcap per exit here."),
    force: bool = typer.Option(False, "--force", help="Offline form: replace the pcaps of an earlier run in --out "
                               "(only micronf's own files there)."),
    processes: bool = typer.Option(False, "--processes", help="Offline form: run the µNFs as processes even when "
                                   "the graph is a chain (which otherwise runs fused in this process)."),
    packets: int | None = typer.Option(None, min=1, help="Live: packets the generator sends (default: 1,000,000; "
                                       "with --seconds alone: no limit)."),
    rate: float = typer.Option(200_000.0, min=0.001, help="Live: packets per second the generator offers "
                                      "(200k: what the Fig. 11 graph sustains on a 2-core machine; more "
                                      "than the graph takes: the surplus is counted as dropped at Rx)."),
    seconds: float | None = typer.Option(None, min=0.1, help="Live: stop after this long (the graph then drains: "
                                         "the packets in it still reach Tx or a drop, and are counted)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no live display)."),
    mode: str = typer.Option("auto", "--mode", help="Live: auto (the cost model chooses, see `micronf plan`), "
                             "pipelined or replicas."),
    replicas: int | None = typer.Option(None, "--replicas", min=1, max=64, help="Live: replicas when replicas run "
                                        "(default: one per CPU)."),
) -> None:
    """Run an SFC here, embedded: compose and optimize it, run its µNF graph (real processes), and
    print a summary: packets in, out per SFC output, dropped by reason, rate, latency, conservation.

    Live (default): an in-process agent deploys the graph with the built-in generator (the paper's
    traffic: 200-byte HTTP GETs, 20% with SQL-injection URLs). Offline (--pcap IN --out DIR): the
    graph runs on the capture and every exit (each SFC output label and each drop reason) is
    written to DIR/<exit>.pcap (an earlier run's pcaps there are refused, or replaced with --force);
    a graph that is a chain runs fused in this process (--processes: as processes).
    Ctrl-C, SIGTERM or SIGHUP stop a live run cleanly: the input stops, the graph drains, and the
    summary is exact; a killed run (kill -9) takes its processes with it (`micronf shm gc` removes
    the segment).
    """
    from micronf.app import run as runner
    from micronf.app.cli.control import _mode
    from micronf.documents import SpecError
    from micronf.orchestrator.costmodel import CostTableError
    from micronf.orchestrator.placement import PlacementError

    if (pcap is None) != (out is None):
        raise typer.BadParameter("the offline form needs both --pcap and --out", param_hint="--pcap/--out")
    mode_choice = _mode(mode)
    if pcap is not None and (mode_choice != "auto" or replicas is not None):
        raise typer.BadParameter("--mode and --replicas choose how the live form runs; the offline form (--pcap) "
                                 "runs the graph in this process", param_hint="--mode/--replicas")
    arrangement = None
    try:
        if pcap is None:
            comp, path, arrangement = runner.arrange_live(sfc, mode_choice, replicas)
        else:
            comp, path = runner.load(sfc, live=False)
    except (SpecError, CostTableError, PlacementError) as exc:
        raise CliError(str(exc), 2) from exc
    say = (lambda *_a, **_k: None) if as_json else console.print
    say(f"[bold]micronf {__version__}[/]: SFC {escape(comp.sfc)} ({escape(str(path))}): "
        f"{len(comp.before.spec.nodes)} µNFs joined → {len(comp.after.spec.nodes)} after optimization")
    for line in runner.rewrite_lines(comp):
        say(f"  [dim]{escape(line)}[/]")
    if arrangement is not None:
        say(f"  runs as [bold]{escape(runner.arrangement_name(arrangement.chosen))}[/] on CPUs "
            f"{', '.join(map(str, arrangement.cpus or []))}: {escape(arrangement.reason)} (`micronf plan` shows "
            "the alternatives)")
    if pcap is not None and out is not None:
        layout = runner.offline_layout(comp, fused=not processes)
        trace = _read_trace(pcap)
        _prepare_out(out, [e.name for e in layout.exits], force=force, inputs=(pcap,))
        with stop_signals():
            res = _run_offline_shown(layout, trace, out, 1, quiet=as_json,
                                     in_process=not processes and len(layout.processes) == 1)
        summary = runner.offline_summary(comp, path, layout, res)
    else:
        count = packets if packets is not None else None if seconds is not None else 1_000_000
        summary = _run_live_shown(comp, path, count, rate, seconds, as_json,
                                  arrangement=arrangement.chosen if arrangement is not None else None)
    if as_json:
        print(summary.model_dump_json(indent=2))
    else:
        runner.print_summary(console, summary)
    if summary.conservation_ok is False:
        raise typer.Exit(1)
    if summary.interrupted:
        raise typer.Exit(130)


def _run_live_shown(comp: Composition, path: Path, packets: int | None, rate: float | None, seconds: float | None,
                    quiet: bool, *, arrangement: Alternative | None = None) -> RunSummary:
    """``runner.run_live`` with a status while the µNFs start and a live progress table; Ctrl-C
    (SIGINT), SIGTERM and SIGHUP only ask the run to stop, so the deployment is always removed."""
    import threading

    from rich.live import Live

    from micronf.api.errors import DeploymentFailedError
    from micronf.app import run as runner
    from micronf.io.generator_spec import paper_traffic

    stop = threading.Event()
    live = Live(console=console, transient=True, auto_refresh=False)
    status = console.status("")

    def deploying(processes: int) -> None:
        if quiet:
            return
        first = runner.first_run()
        status.update(f"starting {processes} µNF processes + Rx/Tx"
                      + (" (compiling the kernels: first run only, a minute or two)" if first else " ..."))
        status.start()

    def progress(p: runner.Progress) -> None:
        if quiet:
            return
        status.stop()
        live.start()
        live.update(runner.progress_table(p), refresh=True)

    try:
        with stop_signals(lambda _s, _f: stop.set()):
            return runner.run_live(comp, path, paper_traffic(count=packets, rate_pps=rate), seconds=seconds,
                                     stop=stop, on_deploying=deploying, on_progress=progress,
                                     arrangement=arrangement)
    except DeploymentFailedError as exc:
        raise CliError(str(exc)) from exc
    finally:
        status.stop()
        live.stop()


def nfs(
    name: str | None = typer.Argument(None, help="Show only this µNF."),
    as_json: bool = typer.Option(False, "--json", help="Print the catalog as JSON."),
) -> None:
    """List the µNF catalog: descriptor, config fields, labels, drop reasons, counters."""
    from micronf.runtime.catalog import SERVICE_DROPS, catalog

    entries = [e for e in catalog() if name is None or e.name == name]
    if name is not None and not entries:
        raise CliError(f"no µNF named {name!r} (try `micronf nfs`)", 2)
    if as_json:
        print(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    for e in entries:
        d = e.descriptor
        access = " ".join(f"{r}={d[r]}" for r in ("l2", "l3", "l4", "payload"))
        console.rule(f"[bold]{e.name}[/]")
        console.print(e.summary)
        console.print(f"[dim]descriptor:[/] stateful={d['stateful']} {access} may_drop={d['may_drop']}")
        console.print(f"[dim]labels:[/] {', '.join(e.labels)}   [dim]drop reasons:[/] {'' if e.drop_reasons else '-'}")
        for reason, text in e.drop_explanations.items():
            console.print(f"  {escape(reason)}: {escape(text)}")
        if e.config:
            table = Table("config", "type", "default", "description", box=None, pad_edge=False)
            for f in e.config:
                table.add_row(f.name, f.type, "(required)" if f.required else repr(f.default), f.description)
            console.print(table)
        if e.counters and e.counters != "(none)":
            console.print(f"[dim]counters:[/] {e.counters}")
        if e.notes:
            console.print(f"[dim]notes:[/] {e.notes}")
    if name is None:
        console.rule("[bold]drops outside the µNFs' own reasons[/]")
        console.print("A drop is counted as WHERE.REASON: a µNF's own reason (above), or one of these, at a µNF "
                      "(its ring or verdict) or at @rx / an exit (the Rx/Tx services):")
        table = Table("reason", "meaning", box=None, pad_edge=False)
        for reason, text in SERVICE_DROPS.items():
            table.add_row(escape(reason), escape(text))
        console.print(table)


def chain(
    expr: str = typer.Argument(..., help="The chain, e.g. 'CheckIPHeader -> IPTtlDecrementer -> MacSwapper'; "
                               "configs inline: 'L3L4Filter(default=\"allow\")'."),
    pcap: Path = typer.Option(..., "--pcap", exists=True, dir_okay=False, help="Input capture (pcap or pcapng)."),
    out: Path = typer.Option(..., "--out", file_okay=False, help="Directory for one pcap per exit."),
    config: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False,
                                       help="YAML/JSON file: node name or µNF type -> config."),
    loop: int = typer.Option(1, min=1, help="Replay the capture this many times."),
    burst: int = typer.Option(32, min=1, max=1024, help="Packets per burst."),
    processes: bool = typer.Option(False, "--processes", help="Run the µNFs as processes over shared-memory "
                                   "rings (one per µNF) instead of in this process."),
    fused: bool = typer.Option(False, help="With --processes: run every µNF in one process (run-to-completion) "
                               "instead of one each."),
    force: bool = typer.Option(False, "--force", help="Replace the pcaps of an earlier run in --out (only micronf's "
                               "own files there)."),
) -> None:
    """Run a chain of µNFs over a capture; write every exit to its own pcap.

    By default the chain runs fused in this process (its compiled hot loop between reading the
    capture and writing the pcaps: nothing to start); --processes runs one process per µNF (or one
    with --fused) over shared-memory rings, as a deployed graph runs. Both write the same pcaps.
    Exits are the last µNF's labels (DIR/out.pcap, ...), every label nobody links
    (DIR/<node>.<label>.pcap) and every drop reason (DIR/<node>.<reason>.pcap): nothing disappears.
    Ctrl-C, SIGTERM or SIGHUP stop it and remove its processes and shared memory; so does kill -9
    (then `micronf shm gc` removes the segment).
    """
    from micronf.runtime.chainexpr import ChainSyntaxError, load_config_file, merge_configs, parse_chain
    from micronf.runtime.graph import GraphError, chain_names, chain_spec, fuse_whole, plan

    in_process = not (processes or fused)
    try:
        elements = parse_chain(expr)
        names = chain_names([t for t, _ in elements])
        if config is not None:
            elements = merge_configs(elements, names, load_config_file(config))
        spec = chain_spec(elements, burst=burst, cluster="all" if fused else None)
        layout = plan(fuse_whole(spec) if in_process else spec, capture_drops=True, on_full="wait")
    except (ChainSyntaxError, GraphError) as exc:
        raise CliError(str(exc), 2) from exc
    trace = _read_trace(pcap)
    _prepare_out(out, [e.name for e in layout.exits], force=force, inputs=(pcap,))
    how = "fused, in this process" if in_process else "1 fused process" if fused else f"{len(names)} processes"
    console.print(f"{len(trace):,} packets from {pcap} -> {' -> '.join(names)} ({how})")
    with stop_signals():
        res = _run_offline_shown(layout, trace, out, loop, in_process=in_process)
    main_outputs = {e.name for e in layout.exits if not e.is_drop and "." not in e.name}
    table = Table("exit", "packets", "file")
    empty = 0
    for name_, count in res.per_exit.items():
        if count or name_ in main_outputs:
            table.add_row(name_, f"{count:,}", str(res.files[name_]))
        else:
            empty += 1
    if res.freed_inside:
        table.add_row("(freed inside the graph)", f"{res.freed_inside:,}", "-")
    console.print(table)
    if empty:
        console.print(f"[dim]{empty} other exits received nothing (their empty pcaps are in {out})[/]")
    rate = res.fed / res.seconds / 1e6 if res.seconds > 0 else 0.0
    verdict = "[green]ok[/]" if res.balanced else "[red]VIOLATED[/]"
    console.print(f"{res.fed:,} in, {res.written:,} written, {res.freed_inside:,} freed inside: conservation {verdict}"
                  f" ({rate:.2f} Mpps over {res.seconds:.2f} s{'' if in_process else ', processes already running'})")
    if not res.balanced:
        raise typer.Exit(1)


def _read_trace(pcap: Path) -> Trace:
    """The capture's packets; a truncated last record is a warning, a broken file an error (exit 2)."""
    from micronf.app.offline import skip_blas_probe
    from micronf.io.linktype import read_ethernet
    from micronf.io.trace import PcapError

    skip_blas_probe()  # reading is the run's first numba call
    try:
        trace = read_ethernet(pcap, mapped=True)  # raw IP and Linux cooked captures get Ethernet headers
    except PcapError as exc:
        raise CliError(str(exc), 2) from exc
    except OSError as exc:
        raise CliError(f"cannot read {pcap}: {exc.strerror or exc}", 2) from exc
    if len(trace) == 0:
        why = "its only record is truncated" if trace.truncated else "it has a header only"
        raise CliError(f"{pcap} holds no complete packet ({why}): nothing to run", 2)
    if trace.truncated:
        err_console.print(f"[yellow]warning:[/] {escape(str(pcap))} ends in a truncated record; "
                          f"using the {len(trace)} complete ones")
    return trace


MANIFEST = "micronf-manifest.json"
"""The file an offline run writes in its --out directory first: which files there are its own."""


def _prepare_out(out: Path, exits: list[str], *, force: bool, inputs: tuple[Path, ...]) -> None:
    """Make ``out`` ready for one pcap per exit before any process starts (errors exit 2).

    ``out`` must be (or be creatable as) a writable directory. Files of an earlier run there (the
    pcaps this run writes, those its manifest lists, the manifest) would mix with the new ones: they
    are refused, or with ``force`` removed — only those, never another file. Then the manifest of
    this run is written: it names the files that are micronf's, and proves the directory writable.
    """
    from micronf.app.offline import OVERSIZE_EXIT

    names = [f"{e}.pcap" for e in [*exits, OVERSIZE_EXIT]]  # the runner writes the oversize pcap too
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is not a directory", 2)
    manifest = out / MANIFEST
    listed: list[str] = []
    if manifest.is_file():
        try:
            listed = [str(f) for f in json.loads(manifest.read_text(encoding="utf-8"))["files"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CliError(f"{manifest} is not a micronf manifest ({exc}); remove it or use another --out", 2) from exc
    ours = [out / f for f in dict.fromkeys(names + listed) if Path(f).name == f] + [manifest]
    for path in inputs:
        if any(o.exists() and o.samefile(path) for o in ours):
            raise CliError(f"--out {out} would overwrite the input {path}; choose another --out", 2)
    present = [o for o in ours if o.is_file()]
    if present and not force:
        raise CliError(f"--out {out} holds the output of an earlier run ({len(present)} files, e.g. "
                       f"{present[0].name}); use --force to replace them or choose another directory", 2)
    try:
        for old in present:
            old.unlink()
        out.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"micronf": __version__, "files": names}, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write to --out {out}: {exc.strerror or exc}", 2) from exc


def _run_offline_shown(layout: GraphLayout, trace: Trace, out: Path, loop: int, quiet: bool = False,
                       in_process: bool = False) -> OfflineResult:
    """``run_offline`` with a progress bar; a stalled graph is an error (exit 1)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from micronf.app.offline import GraphStalledError, offline_capacity_note, run_offline

    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("packets", total=len(trace) * loop)
        try:
            res = run_offline(layout, trace, out, loops=loop, in_process=in_process,
                              progress=lambda done, _t: bar.update(task, completed=done))
        except GraphStalledError as exc:
            raise CliError(str(exc)) from exc
    if not quiet:
        console.print(f"[dim]{offline_capacity_note(res)}[/]")
    return res


def shm_ls() -> None:
    """List micronf shared-memory segments and whether their creator still runs (a segment whose
    creator is gone but that processes still map is a graph left running by a dead agent)."""
    from micronf.dataplane.segment import list_segments, segment_users

    table = Table("name", "size", "owner pid", "created", "state")
    infos = list_segments()
    users = segment_users(i.path for i in infos if i.valid and not i.owner_alive)
    for info in infos:
        state = "invalid" if not info.valid else ("live" if info.owner_alive else "[yellow]stale[/]")
        if users.get(info.path):
            state = f"[yellow]owner gone[/], mapped by {len(users[info.path])} process(es)"
        created = datetime.fromtimestamp(info.created).isoformat(timespec="seconds") if info.valid else "-"
        table.add_row(str(info.path), f"{info.size:,}", str(info.owner_pid or "-"), created, state)
    console.print(table)


def shm_gc(
    invalid: bool = typer.Option(False, "--invalid", help="Also remove micronf-* files that are not valid segments."),
    kill: bool = typer.Option(False, "--kill", help="Also stop the processes still mapping a segment whose creator "
                              "is dead (SIGTERM, then SIGKILL), then remove it."),
) -> None:
    """Remove segments whose creator is dead (e.g. after a crash or kill -9).

    A segment that live processes still map (a graph whose agent died keeps forwarding, and the next
    agent adopts it) is kept and its processes are named; --kill stops them and removes it.
    """
    from micronf.dataplane.segment import remove_stale, stale_segments

    if not kill:
        for info, users in stale_segments(include_invalid=invalid):
            if users:
                who = ", ".join(f"{u.pid} ({escape(u.command[:60])})" for u in users)
                console.print(f"[yellow]kept[/] {info.path}: its creator (pid {info.owner_pid}) is gone but "
                              f"{len(users)} process(es) still map it: {who}; --kill stops them", soft_wrap=True)
    removed = remove_stale(include_invalid=invalid, kill=kill)
    for info in removed:
        console.print(f"removed {info.path} (owner pid {info.owner_pid or '-'})")
    console.print(f"{len(removed)} segment(s) removed")


def version() -> None:
    """Print the micronf version (as ``micronf --version``)."""
    print_version(True)

