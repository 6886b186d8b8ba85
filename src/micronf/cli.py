"""The ``micronf`` command line."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer._click.exceptions import (  # typer vendors click (typer._click)
    ClickException,
    NoArgsIsHelpError,
    UsageError,
)
from typer.core import TyperGroup

from micronf import __version__

if TYPE_CHECKING:
    from micronf.api.protocol import AgentCore
    from micronf.io.pcap import Trace
    from micronf.orchestrator.compose import Composition
    from micronf.orchestrator.embedded import RunSummary
    from micronf.orchestrator.placement import AgentRef
    from micronf.runtime.graph import GraphLayout
    from micronf.runtime.offline import OfflineResult


class CliError(Exception):
    """A failure to report as one ``error:`` line on stderr (exit 1; 2 for bad input)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Group(TyperGroup):
    """The ``micronf`` command group: every error is one ``error: ...`` line on stderr.

    Exit codes: 2 for usage errors (bad options, arguments, input files), 1 for failures at run
    time, the command's own code otherwise. An unexpected exception is one line too; its traceback
    is printed only with the global ``--debug`` option. Stdout keeps only what a command prints, so
    ``--json`` output stays parseable whatever happens.
    """

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, windows_expand_args: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra)
        _state["debug"] = False
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except CliError as exc:
            code = _error_line(str(exc), exc.exit_code)
        except NoArgsIsHelpError as exc:  # ``micronf`` or ``micronf shm`` alone: the help (rich prints it itself)
            if exc.format_message():
                err_console.print(exc.format_message(), markup=False)
            code = 2
        except UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            code = _error_line(exc.format_message() + hint, 2)
        except ClickException as exc:
            code = _error_line(exc.format_message(), exc.exit_code)
        except typer.Abort:
            code = _error_line("aborted", 130)
        except Exception as exc:
            if _state["debug"]:
                raise
            code = _error_line(f"{type(exc).__name__}: {exc} (micronf --debug ... prints the traceback)", 1)
        sys.exit(code if isinstance(code, int) else 0)


def _error_line(message: str, code: int) -> int:
    """Print ``error: message`` as one line on stderr; return ``code``."""
    err_console.print(f"[red]error:[/] {escape(' '.join(message.split()))}")
    return code


_state = {"debug": False}
app = typer.Typer(
    cls=_Group,
    help="micronf: network functions and service chains built from small packet-processing processes.",
    no_args_is_help=True,
    add_completion=False,
)
shm_app = typer.Typer(help="Inspect and clean shared-memory segments.", no_args_is_help=True)
app.add_typer(shm_app, name="shm")
console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)
"""Errors, warnings and progress: stdout is the commands' output only (JSON under ``--json``)."""


def _print_version(value: bool) -> None:
    if value:
        console.print(f"micronf {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Print the traceback of an unexpected error."),
    _version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                  help="Print the version and exit."),
) -> None:
    """micronf: network functions and service chains built from small packet-processing processes."""
    _state["debug"] = debug


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def stop_signals(handler: Callable[[int, FrameType | None], None] = signal.default_int_handler) -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP (``timeout``, ``kill``, a closed terminal) do what Ctrl-C
    does: ``handler`` (by default: raise KeyboardInterrupt), so a run stops, reports and removes
    its processes and shared memory instead of dying with them left behind."""
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@app.command("bench-ring")
def bench_ring(
    stages: int = typer.Option(1, min=1, max=16, help="Forwarding stages between source and sink."),
    seconds: float = typer.Option(3.0, min=0.1, help="Measurement time."),
    burst: int = typer.Option(64, min=1, max=1024, help="Packets per burst."),
    policy: str = typer.Option("other", help="Scheduling policy: other (CFS), fifo or rr."),
) -> None:
    """Data-plane demo: packets flow source -> forwarder(s) -> sink, one process each, over
    shared-memory rings; prints the rate and checks that every packet is accounted for."""
    from micronf.dataplane.pipeline import POLICIES, PipelineConfig, run_pipeline

    if policy not in POLICIES:
        raise typer.BadParameter(f"must be one of {', '.join(POLICIES)}", param_hint="--policy")
    cpus = sorted(os.sched_getaffinity(0))
    console.print(
        f"[bold]micronf {__version__}[/] ring demo: source -> {stages} x forward -> sink "
        f"({stages + 2} processes on CPUs {cpus}, burst {burst}, policy {policy})"
    )
    console.print("starting processes (the first run compiles the kernels, ~10 s) ...")
    t0 = time.monotonic()
    cfg = PipelineConfig(stages=stages, burst=burst, policy=policy, cpus=cpus)
    try:
        res = run_pipeline(cfg, seconds=seconds)
    except PermissionError as exc:
        raise CliError(f"cannot apply policy {policy!r}: {exc} (real-time policies need root)") from exc
    ok = res.marker_errors == 0 and res.allocated == res.delivered + res.in_flight
    table = Table(title="demo result", show_header=False)
    table.add_row("throughput", f"[bold]{res.mpps:.2f} Mpps[/] ({res.packets:,} packets in {res.seconds:.2f} s)")
    table.add_row("packets allocated (rx)", f"{res.allocated:,}")
    table.add_row("packets delivered (tx)", f"{res.delivered:,}")
    table.add_row("in flight at stop", f"{res.in_flight:,}")
    table.add_row("pool exhausted (bursts short)", f"{res.alloc_failures:,}")
    table.add_row("marker errors", f"{res.marker_errors:,}")
    table.add_row("conservation rx == tx + in_flight", "[green]ok[/]" if ok else "[red]VIOLATED[/]")
    table.add_row("wall time", f"{time.monotonic() - t0:.1f} s")
    console.print(table)
    if not ok:
        raise typer.Exit(1)


@app.command()
def run(
    sfc: Path | None = typer.Argument(None, exists=True, dir_okay=False,
                                      help="The SFC request (default: the paper's Fig. 11 SFC, "
                                      "Firewall -> Monitor -> Application Firewall)."),
    pcap: Path | None = typer.Option(None, "--pcap", exists=True, dir_okay=False,
                                     help="Offline form: run the SFC on this capture (needs --out)."),
    out: Path | None = typer.Option(None, "--out", file_okay=False, help="Offline form: one pcap per exit here."),
    force: bool = typer.Option(False, "--force", help="Offline form: replace the pcaps of an earlier run in --out "
                               "(only micronf's own files there)."),
    packets: int | None = typer.Option(None, min=1, help="Live: packets the generator sends (default: 1,000,000; "
                                       "with --seconds alone: no limit)."),
    rate: float = typer.Option(200_000.0, min=0.001, help="Live: packets per second the generator offers "
                                      "(200k: what the Fig. 11 graph sustains on a 2-core machine; more "
                                      "than the graph takes: the surplus is counted as dropped at Rx)."),
    seconds: float | None = typer.Option(None, min=0.1, help="Live: stop after this long (the graph then drains: "
                                         "the packets in it still reach Tx or a drop, and are counted)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no live display)."),
) -> None:
    """Run an SFC here, embedded: compose and optimize it, run its µNF graph (real processes), and
    print a summary: packets in, out per SFC output, dropped by reason, rate, latency, conservation.

    Live (default): an in-process agent deploys the graph with the built-in generator (the paper's
    traffic: 200-byte HTTP GETs, 20% with SQL-injection URLs). Offline (--pcap IN --out DIR): the
    graph runs on the capture and every exit (each SFC output label and each drop reason) is
    written to DIR/<exit>.pcap (an earlier run's pcaps there are refused, or replaced with --force).
    Ctrl-C, SIGTERM or SIGHUP stop a live run cleanly: the input stops, the graph drains, and the
    summary is exact; a killed run (kill -9) takes its processes with it (`micronf shm gc` removes
    the segment).
    """
    from micronf.orchestrator import embedded
    from micronf.orchestrator.models import SpecError

    if (pcap is None) != (out is None):
        raise typer.BadParameter("the offline form needs both --pcap and --out", param_hint="--pcap/--out")
    try:
        comp, path = embedded.load(sfc, live=pcap is None)
    except SpecError as exc:
        raise CliError(str(exc), 2) from exc
    say = (lambda *_a, **_k: None) if as_json else console.print
    say(f"[bold]micronf {__version__}[/]: SFC {escape(comp.sfc)} ({escape(str(path))}): "
        f"{len(comp.before.spec.nodes)} µNFs joined → {len(comp.after.spec.nodes)} after optimization")
    for line in embedded.rewrite_lines(comp):
        say(f"  [dim]{escape(line)}[/]")
    if pcap is not None and out is not None:
        layout = embedded.offline_layout(comp)
        trace = _read_trace(pcap)
        _prepare_out(out, [e.name for e in layout.exits], force=force, inputs=(pcap,))
        with stop_signals():
            res = _run_offline_shown(layout, trace, out, 1, quiet=as_json)
        summary = embedded.offline_summary(comp, path, layout, res)
    else:
        count = packets if packets is not None else None if seconds is not None else 1_000_000
        summary = _run_live_shown(comp, path, count, rate, seconds, as_json)
    if as_json:
        print(summary.model_dump_json(indent=2))
    else:
        embedded.print_summary(console, summary)
    if summary.conservation_ok is False:
        raise typer.Exit(1)
    if summary.interrupted:
        raise typer.Exit(130)


def _run_live_shown(comp: Composition, path: Path, packets: int | None, rate: float | None, seconds: float | None,
                    quiet: bool) -> RunSummary:
    """``embedded.run_live`` with a status while the µNFs start and a live progress table; Ctrl-C
    (SIGINT), SIGTERM and SIGHUP only ask the run to stop, so the deployment is always removed."""
    import threading

    from rich.live import Live

    from micronf.api.errors import DeploymentFailedError
    from micronf.io.generator import paper_traffic
    from micronf.orchestrator import embedded

    stop = threading.Event()
    live = Live(console=console, transient=True, auto_refresh=False)
    status = console.status("")

    def deploying(processes: int) -> None:
        if quiet:
            return
        first = embedded.first_run()
        status.update(f"starting {processes} µNF processes + Rx/Tx"
                      + (" (compiling the kernels: first run only, a minute or two)" if first else " ..."))
        status.start()

    def progress(p: embedded.Progress) -> None:
        if quiet:
            return
        status.stop()
        live.start()
        live.update(embedded.progress_table(p), refresh=True)

    try:
        with stop_signals(lambda _s, _f: stop.set()):
            return embedded.run_live(comp, path, paper_traffic(count=packets, rate_pps=rate), seconds=seconds,
                                     stop=stop, on_deploying=deploying, on_progress=progress)
    except DeploymentFailedError as exc:
        raise CliError(str(exc)) from exc
    finally:
        status.stop()
        live.stop()


@app.command()
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


@app.command()
def chain(
    expr: str = typer.Argument(..., help="The chain, e.g. 'CheckIPHeader -> IPTtlDecrementer -> MacSwapper'; "
                               "configs inline: 'L3L4Filter(default=\"allow\")'."),
    pcap: Path = typer.Option(..., "--pcap", exists=True, dir_okay=False, help="Input capture (pcap or pcapng)."),
    out: Path = typer.Option(..., "--out", file_okay=False, help="Directory for one pcap per exit."),
    config: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False,
                                       help="YAML/JSON file: node name or µNF type -> config."),
    loop: int = typer.Option(1, min=1, help="Replay the capture this many times."),
    burst: int = typer.Option(32, min=1, max=1024, help="Packets per burst."),
    fused: bool = typer.Option(False, help="Run every µNF in one process (run-to-completion) instead of one each."),
    force: bool = typer.Option(False, "--force", help="Replace the pcaps of an earlier run in --out (only micronf's "
                               "own files there)."),
) -> None:
    """Run a chain of µNFs (real processes) over a capture; write every exit to its own pcap.

    Exits are the last µNF's labels (DIR/out.pcap, ...), every label nobody links
    (DIR/<node>.<label>.pcap) and every drop reason (DIR/<node>.<reason>.pcap): nothing disappears.
    Ctrl-C, SIGTERM or SIGHUP stop it and remove its processes and shared memory; so does kill -9
    (then `micronf shm gc` removes the segment).
    """
    from micronf.runtime.chainexpr import ChainSyntaxError, load_config_file, merge_configs, parse_chain
    from micronf.runtime.graph import GraphError, chain_names, chain_spec, plan

    try:
        elements = parse_chain(expr)
        names = chain_names([t for t, _ in elements])
        if config is not None:
            elements = merge_configs(elements, names, load_config_file(config))
        layout = plan(chain_spec(elements, burst=burst, cluster="all" if fused else None),
                      capture_drops=True, on_full="wait")
    except (ChainSyntaxError, GraphError) as exc:
        raise CliError(str(exc), 2) from exc
    trace = _read_trace(pcap)
    _prepare_out(out, [e.name for e in layout.exits], force=force, inputs=(pcap,))
    console.print(f"{len(trace):,} packets from {pcap} -> {' -> '.join(names)} "
                  f"({'1 fused process' if fused else f'{len(names)} processes'})")
    with stop_signals():
        res = _run_offline_shown(layout, trace, out, loop)
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
                  f" ({rate:.2f} Mpps over {res.seconds:.2f} s, processes already running)")
    if not res.balanced:
        raise typer.Exit(1)


def _read_trace(pcap: Path) -> Trace:
    """The capture's packets; a truncated last record is a warning, a broken file an error (exit 2)."""
    from micronf.io.linktype import read_ethernet
    from micronf.io.pcap import PcapError

    try:
        trace = read_ethernet(pcap)  # raw IP and Linux cooked captures get Ethernet headers
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
    from micronf.runtime.offline import OVERSIZE_EXIT

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


def _run_offline_shown(layout: GraphLayout, trace: Trace, out: Path, loop: int, quiet: bool = False) -> OfflineResult:
    """``run_offline`` with a progress bar; a stalled graph is an error (exit 1)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from micronf.runtime.offline import GraphStalledError, offline_capacity_note, run_offline

    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("packets", total=len(trace) * loop)
        try:
            res = run_offline(layout, trace, out, loops=loop,
                              progress=lambda done, _t: bar.update(task, completed=done))
        except GraphStalledError as exc:
            raise CliError(str(exc)) from exc
    if not quiet:
        console.print(f"[dim]{offline_capacity_note(res)}[/]")
    return res


@shm_app.command("ls")
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


@shm_app.command("gc")
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


@app.command()
def version() -> None:
    """Print the micronf version (as ``micronf --version``)."""
    _print_version(True)


# -- serving an API safely (see docs/security.md) ------------------------------------------------
_TLS_CERT = typer.Option(None, "--tls-cert", exists=True, dir_okay=False, help="Serve HTTPS with this certificate "
                         "(PEM; with --tls-key).")
_TLS_KEY = typer.Option(None, "--tls-key", exists=True, dir_okay=False, help="The certificate's private key (PEM).")
_INSECURE = typer.Option(False, "--insecure", help="Allow a non-loopback --host without TLS (the token and every "
                         "request then cross the network in clear text).")
_MAX_BODY = typer.Option(1 << 20, "--max-body", min=1024, help="Largest request body in bytes (larger: 413).")


def _freeze_heap() -> None:
    """Exempt what is loaded at start (numba, numpy, the µNF modules: a large heap) from the
    garbage collector: a full collection triggered by a request's many small objects otherwise
    stops the server, /health included, for 100+ ms."""
    import gc

    gc.collect()
    gc.freeze()


def _serving(host: str, tls_cert: Path | None, tls_key: Path | None, insecure: bool,
             token_file: Path) -> tuple[str, dict[str, Any]]:
    """The API token (from ``token_file``, created when missing) and uvicorn's TLS options; refuses
    (exit 2) a non-loopback bind without TLS unless ``insecure``, and warns when it is allowed."""
    from micronf.api.security import ExposureError, check_exposure
    from micronf.api.statedir import TokenError, load_token

    if (tls_cert is None) != (tls_key is None):
        raise typer.BadParameter("give both --tls-cert and --tls-key, or neither", param_hint="--tls-cert/--tls-key")
    try:
        warning = check_exposure(host, tls=tls_cert is not None, insecure=insecure)
    except ExposureError as exc:
        raise CliError(str(exc), 2) from exc
    if warning:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")
    try:
        token = load_token(token_file)
    except TokenError as exc:
        raise CliError(str(exc), 2) from exc
    tls = {} if tls_cert is None else {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)}
    return token, tls


@app.command()
def agent(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every interface; needs --tls-cert/"
                             "--tls-key or --insecure)."),
    port: int = typer.Option(8771, min=1, max=65535, help="TCP port to listen on."),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug or trace."),
    token_file: Path | None = typer.Option(None, "--token-file", dir_okay=False, help="The API's bearer token "
                                           "(created, mode 0600, with a new random token when missing; default: "
                                           "STATE/agent/token, STATE = $MICRONF_STATE_DIR or ~/.local/state/micronf)."),
    data_dir: Path | None = typer.Option(None, "--data-dir", file_okay=False, help="The only directory capture "
                                         "files of a deploy request may be in, by name (default: STATE/agent/data)."),
    metrics_public: bool = typer.Option(False, "--metrics-public", help="Serve /metrics without the token to any "
                                        "client (default: only to loopback clients)."),
    tls_cert: Path | None = _TLS_CERT,
    tls_key: Path | None = _TLS_KEY,
    insecure: bool = _INSECURE,
    max_body: int = _MAX_BODY,
    keep_graphs: bool = typer.Option(False, "--keep-graphs", help="On SIGTERM/Ctrl+C leave the graphs running "
                                     "for the next agent to adopt (an upgrade) instead of removing them."),
) -> None:
    """Run the agent of this machine: the southbound HTTP API that deploys processing graphs of µNFs
    here, with GET /health, GET /metrics (Prometheus) and GET /openapi.json (the API's schema).
    Every route but /health (and /metrics from loopback) needs the bearer token in --token-file.

    On SIGTERM or Ctrl+C it stops serving, then removes every deployment (its processes and shared
    memory) before it exits (with --keep-graphs: leaves them running); a second signal during that
    cleanup exits at once. The graphs do not depend on the agent process: if it dies (kill -9, a
    crash) they keep forwarding, and the next agent started on this machine adopts them.
    """
    import signal

    import uvicorn

    from micronf.agent.core import Agent
    from micronf.agent.identity import agent_identity
    from micronf.agent.server import create_app, stop_all
    from micronf.api.statedir import agent_token_file

    levels = ("critical", "error", "warning", "info", "debug", "trace")
    if log_level not in levels:
        raise typer.BadParameter(f"must be one of {', '.join(levels)}", param_hint="--log-level")
    token, tls = _serving(host, tls_cert, tls_key, insecure, token_file or agent_token_file())
    # graphs outlive this process; adopt those a previous agent on this address left
    core = Agent(agent_id=agent_identity(host, port), data_dir=data_dir, detached=True, adopt=True)
    api = create_app(core, token=token, metrics_public=metrics_public, max_body=max_body)
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level=log_level, **tls))
    _freeze_heap()

    def _stop(_signum: int, _frame: object) -> None:
        server.should_exit = True

    # uvicorn installs its own handlers while serving and re-raises the signal afterwards: into
    # these, so the process goes on to the cleanup below instead of dying by the default action.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    try:
        server.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        if keep_graphs:
            core.leave_running()
        else:
            stop_all(core)  # also when uvicorn could not start (it exits 1 after logging why, e.g. port taken)


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


@app.command("plan")
def plan_sfc(
    sfc: Path = typer.Argument(..., help="The SFC request (YAML or JSON), e.g. examples/sfc-fig11.yaml."),
    out: Path | None = typer.Option(None, "--out", file_okay=False,
                                    help="Draw both graphs here (before/after .dot, and .svg with Graphviz)."),
    as_json: bool = typer.Option(False, "--json", help="Print the composition (graphs and rewrites) as JSON."),
) -> None:
    """Dry run: compose the SFC into a µNF graph, optimize it, print both graphs and every rewrite
    with its reason. Writes nothing unless --out DIR is given: then it draws them (DIR/before.svg,
    DIR/after.svg; .dot without Graphviz)."""
    from micronf.orchestrator.compose import compose_file
    from micronf.orchestrator.models import SpecError
    from micronf.orchestrator.render import INSTALL_HINT, write_drawing
    from micronf.orchestrator.report import print_plan

    try:
        comp = compose_file(sfc)
    except SpecError as exc:
        raise CliError(str(exc), 2) from exc
    if as_json:
        print(comp.model_dump_json(indent=2))
        return
    try:
        drawings = [] if out is None else [write_drawing(g, f"{comp.sfc}: {stage}", out / stage)
                                           for stage, g in (("before", comp.before), ("after", comp.after))]
    except OSError as exc:
        raise CliError(f"cannot write the drawings to --out {out}: {exc.strerror or exc}", 2) from exc
    print_plan(console, comp, drawings)
    if any(p.suffix == ".dot" for p in drawings):
        console.print(f"[yellow]no SVG:[/] {INSTALL_HINT}")


@app.command()
def schema(
    kind: str | None = typer.Argument(None, help="unf-descriptor, vnf-template or sfc (default: all three)."),
    out: Path | None = typer.Option(None, "--out", file_okay=False, help="Write KIND.schema.json files here."),
) -> None:
    """Print (or write) the JSON Schema of the orchestrator's input files."""
    from micronf.orchestrator.models import KINDS, json_schemas

    if kind is not None and kind not in KINDS:
        raise CliError(f"no file kind {kind!r} (kinds: {', '.join(KINDS)})", 2)
    schemas = {k: s for k, s in json_schemas().items() if kind in (None, k)}
    if out is None:
        print(json.dumps(schemas[kind] if kind else schemas, indent=2))
        return
    out.mkdir(parents=True, exist_ok=True)
    for k, s in schemas.items():
        (out / f"{k}.schema.json").write_text(json.dumps(s, indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {out / f'{k}.schema.json'}")


# -- the orchestrator and its clients -----------------------------------------------------------
ORCHESTRATOR_URL = "http://127.0.0.1:8770"
_ORCH_OPTION = typer.Option(ORCHESTRATOR_URL, "--orchestrator", help="The orchestrator's URL.")
_TOKEN_OPTION = typer.Option(None, "--token-file", dir_okay=False, help="The orchestrator's token file (default: "
                             "$MICRONF_TOKEN, else STATE/orchestrator.token, the local orchestrator's).")


def _client_token(token_file: Path | None) -> str | None:
    """The token the client commands send: --token-file, else $MICRONF_TOKEN, else the local
    orchestrator's default token file if there is one (so the local demo needs no setup)."""
    from micronf.api.statedir import TokenError, orchestrator_token_file, read_token, read_token_if_any

    if token_file is not None:
        try:
            return read_token(token_file)
        except TokenError as exc:
            raise typer.BadParameter(str(exc), param_hint="--token-file") from exc
    return os.environ.get("MICRONF_TOKEN") or read_token_if_any(orchestrator_token_file())


@app.command()
def orchestrator(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (non-loopback: needs --tls-cert/--tls-key "
                             "or --insecure)."),
    port: int = typer.Option(8770, min=1, max=65535, help="TCP port to listen on."),
    db: Path = typer.Option(Path("~/.local/state/micronf/orchestrator.db"), help="The SQLite state file."),
    agents: list[str] = typer.Option(["http://127.0.0.1:8771"], "--agent", help="An agent, [NAME=]URL[#cpus=LIST] "
                                     "(repeat for several; a loopback agent offers this machine's CPUs)."),
    reconcile_s: float = typer.Option(10.0, "--reconcile-interval", min=0.1,
                                      help="Seconds between reconciles with the agents."),
    log_level: str = typer.Option("info", help="uvicorn log level: critical, error, warning, info, debug or trace."),
    token_file: Path | None = typer.Option(None, "--token-file", dir_okay=False, help="The API's bearer token "
                                           "(created, mode 0600, when missing; default: STATE/orchestrator.token; "
                                           "the micronf client commands read it by default)."),
    agent_tokens: list[str] = typer.Option([], "--agent-token-file", help="[AGENT=]FILE: the token file of an "
                                           "agent (AGENT: its name or URL; without: every agent). Read at each "
                                           "request. Default: the local agent's, STATE/agent/token."),
    tls_cert: Path | None = _TLS_CERT,
    tls_key: Path | None = _TLS_KEY,
    insecure: bool = _INSECURE,
    max_body: int = _MAX_BODY,
) -> None:
    """Run the orchestrator: the northbound HTTP API (SFC create/list/get/delete, stats, plan) over
    the given agents, with every deployment kept in a SQLite file. On start it reconciles the stored
    deployments with the agents (redeploys what a restarted agent lost), then again periodically.
    Every route but /health needs the bearer token in --token-file; each agent gets its own token."""
    import logging
    from functools import partial

    import uvicorn

    from micronf.api.statedir import agent_token_file, orchestrator_token_file, read_token_if_any
    from micronf.orchestrator.api import create_app
    from micronf.orchestrator.placement import AgentRef
    from micronf.orchestrator.service import Orchestrator, http_agent
    from micronf.orchestrator.store import Store, StoreError

    try:
        refs = [AgentRef.parse(a) for a in agents]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--agent") from exc
    try:
        store = Store(db)
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    token, tls = _serving(host, tls_cert, tls_key, insecure, token_file or orchestrator_token_file())
    files = _agent_token_files(refs, agent_tokens)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def connect(ref: AgentRef) -> AgentCore:  # the token file is read per request: the agent may start later
        return http_agent(ref, token=partial(read_token_if_any, files.get(ref.url, agent_token_file())))

    orch = Orchestrator(store, refs, connect=connect)
    _freeze_heap()
    with orch.running(reconcile_s):
        uvicorn.run(create_app(orch, token=token, max_body=max_body), host=host, port=port, log_level=log_level,
                    **tls)
    store.close()


def _agent_token_files(refs: list[AgentRef], items: list[str]) -> dict[str, Path]:
    """Agent URL -> its token file, from ``--agent-token-file [AGENT=]FILE`` items (see orchestrator)."""
    from micronf.api.statedir import agent_token_file

    files = {r.url: agent_token_file() for r in refs}
    for item in items:
        who, sep, file = item.rpartition("=")
        hit = [r for r in refs if not sep or who in (r.name, r.url)]
        if not hit:
            raise typer.BadParameter(f"no --agent named {who!r} (agents: {', '.join(r.name for r in refs)})",
                                     param_hint="--agent-token-file")
        for r in hit:
            files[r.url] = Path(file).expanduser()
    return files


def _orch_call(base: str, method: str, path: str, body: object = None, token_file: Path | None = None) -> object:
    """One request to the orchestrator (with the token of :func:`_client_token`); failures end the
    command with a readable message."""
    import httpx

    from micronf.api.statedir import bearer

    headers = bearer(_client_token(token_file))
    try:
        resp = httpx.request(method, base.rstrip("/") + path, json=body, timeout=300.0, headers=headers)
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach the orchestrator at {base} ({type(exc).__name__}: {exc}); "
                       "is `micronf orchestrator` running?") from exc
    if resp.is_success:
        return resp.json() if resp.content else None
    try:
        err = resp.json()
        what = f"{err['error']}: {err['detail']}"
    except (ValueError, KeyError, TypeError):
        what = resp.text[:500] or resp.reason_phrase
    raise CliError(f"({resp.status_code}) {what}")


def _json_arg(text: str, param: str) -> object:
    """A JSON value given inline or as @FILE (JSON or YAML)."""
    import yaml

    try:
        return yaml.safe_load(Path(text[1:]).read_text(encoding="utf-8")) if text.startswith("@") else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"expected JSON or @FILE: {exc}", param_hint=param) from exc


@app.command()
def deploy(
    sfc: Path = typer.Argument(..., exists=True, dir_okay=False, help="The SFC request (YAML or JSON)."),
    name: str | None = typer.Option(None, help="Deployment name (default: the SFC's name)."),
    agent: str | None = typer.Option(None, help="Run on this agent (name or URL; default: hinted or least loaded)."),
    rx: str | None = typer.Option(None, help='Rx backend spec, JSON or @FILE, e.g. \'{"kind": "pcap", "path": '
                                  '"in.pcap"}\' (default: no traffic).'),
    outputs: list[str] = typer.Option([], "--output", help="OUTPUT=SPEC: where an SFC output (e.g. appfw.web) or "
                                      'exit goes, SPEC an output JSON or @FILE, e.g. \'{"backend": {"kind": "null"}}\' '
                                      "(repeatable; default: every exit to null)."),
    orchestrator_url: str = _ORCH_OPTION,
    token_file: Path | None = _TOKEN_OPTION,
) -> None:
    """Deploy an SFC: the orchestrator composes it into an optimized µNF graph and deploys it on an
    agent. The SFC file and the templates it imports are sent with the request."""
    from micronf.orchestrator.models import SpecError
    from micronf.orchestrator.service import read_sfc_source

    try:
        text, files = read_sfc_source(sfc)
    except SpecError as exc:
        raise CliError(str(exc), 2) from exc
    outs: dict[str, object] = {}
    for item in outputs:
        key, sep, spec = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected OUTPUT=SPEC, got {item!r}", param_hint="--output")
        outs[key] = _json_arg(spec, "--output")
    body = {"sfc": text, "files": files, "name": name, "agent": agent, "outputs": outs,
            "rx": None if rx is None else _json_arg(rx, "--rx")}
    info = _orch_call(orchestrator_url, "POST", "/v1/sfcs", body, token_file)
    assert isinstance(info, dict)
    console.print(f"deployed [bold]{escape(info['name'])}[/] ({len(info['graph']['nodes'])} µNFs, "
                  f"{len(info['rewrites'])} rewrites) on {', '.join(info['agents'])}: {info['state']}")


@app.command()
def undeploy(name: str = typer.Argument(..., help="The deployment."), orchestrator_url: str = _ORCH_OPTION,
             token_file: Path | None = _TOKEN_OPTION) -> None:
    """Remove a deployment from its agents and from the orchestrator."""
    _orch_call(orchestrator_url, "DELETE", f"/v1/sfcs/{name}", token_file=token_file)
    console.print(f"undeployed {escape(name)}")


def _deployments_table(infos: list[dict[str, object]]) -> Table:
    table = Table(title="SFC deployments")
    for col in ("name", "sfc", "state", "agents", "µNFs", "updated", "error"):
        table.add_column(col)
    for i in infos:
        graph = i["graph"]
        assert isinstance(graph, dict) and isinstance(i["agents"], list) and isinstance(i["updated_at"], float)
        table.add_row(str(i["name"]), str(i["sfc"]), str(i["state"]), ", ".join(i["agents"]),
                      str(len(graph["nodes"])), datetime.fromtimestamp(i["updated_at"]).strftime("%H:%M:%S"),
                      escape(str(i["error"] or "")))
    return table


@app.command("list")
def list_sfcs(orchestrator_url: str = _ORCH_OPTION, token_file: Path | None = _TOKEN_OPTION) -> None:
    """List the SFC deployments the orchestrator knows, with their state."""
    infos = _orch_call(orchestrator_url, "GET", "/v1/sfcs", token_file=token_file)
    assert isinstance(infos, list)
    console.print(_deployments_table(infos))


def _status_table(now: dict[str, Any], before: dict[str, Any] | None) -> Table:
    """Per-µNF rows (rate from the two samples), SFC totals in the caption."""
    dt = now["at"] - before["at"] if before else 0.0
    prev = {u["name"]: u for u in before["unfs"]} if before else {}
    table = Table(title=f"{now['name']} ({now['state']})")
    table.add_column("µNF", no_wrap=True, min_width=max((len(u["name"]) for u in now["unfs"]), default=3))
    for col in ("type", "cpu", "inst", "rate kpps", "packets", "dropped", "ring"):
        table.add_column(col, justify="left" if col == "type" else "right")
    for u in now["unfs"]:
        p = prev.get(u["name"])
        rate = f"{(u['packets_in'] - p['packets_in']) / dt / 1e3:,.1f}" if p and dt > 0 else "-"
        table.add_row(u["name"], u["type"], str(u["cpu"] if u["cpu"] is not None else "-"), str(u["instances"]),
                      rate, f"{u['packets_in']:,}", f"{u['dropped']:,}",
                      f"{u['ring_occupancy']}/{u['ring_capacity']}")
    lat, cons = now["latency"], now["conservation"]
    outs = ", ".join(f"{k} {v:,}" for k, v in now["outputs"].items()) or "-"
    drops = ", ".join(f"{k} {v:,}" for k, v in sorted(now["drops"].items())) or "none"
    table.caption = (f"in {now['packets_in']:,} → out {now['packets_out']:,} ({outs}); drops: {drops}; latency "
                     f"p50 {lat['p50_ns'] / 1e3:,.1f} µs p99 {lat['p99_ns'] / 1e3:,.1f} µs; "
                     f"conservation {'ok' if cons['ok'] else 'VIOLATED'} (in flight {cons['in_flight']})")
    return table


@app.command()
def status(
    name: str | None = typer.Argument(None, help="A deployment (default: list them all)."),
    watch: bool = typer.Option(False, "--watch", help="Refresh until Ctrl+C."),
    interval: float = typer.Option(1.0, min=0.1, help="Seconds between the two samples a rate comes from."),
    orchestrator_url: str = _ORCH_OPTION,
    token_file: Path | None = _TOKEN_OPTION,
) -> None:
    """The live state of a deployment: per µNF its rate (from two samples), packets, drops and ring
    occupancy; per SFC packets in/out per output, drops by reason, latency p50/p99, conservation."""
    from rich.live import Live

    if name is None:
        list_sfcs(orchestrator_url, token_file)
        return
    path = f"/v1/sfcs/{name}/stats"

    def sample() -> dict[str, Any]:
        s = _orch_call(orchestrator_url, "GET", path, token_file=token_file)
        assert isinstance(s, dict)
        return s

    before = sample()
    time.sleep(interval)
    now = sample()
    if not watch:
        console.print(_status_table(now, before))
        return
    with Live(_status_table(now, before), console=console, auto_refresh=False) as live:
        try:
            while True:
                time.sleep(interval)
                before, now = now, sample()
                live.update(_status_table(now, before), refresh=True)
        except KeyboardInterrupt:
            pass
