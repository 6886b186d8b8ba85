"""The ``micronf`` command line."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime

import typer
from rich.console import Console
from rich.table import Table

from micronf import __version__

app = typer.Typer(
    help="micronf: network functions and service chains built from small packet-processing processes.",
    no_args_is_help=True,
    add_completion=False,
)
shm_app = typer.Typer(help="Inspect and clean shared-memory segments.", no_args_is_help=True)
app.add_typer(shm_app, name="shm")
console = Console()


@app.command()
def run(
    stages: int = typer.Option(1, min=1, max=16, help="Forwarding stages between source and sink."),
    seconds: float = typer.Option(3.0, min=0.1, help="Measurement time."),
    burst: int = typer.Option(64, min=1, max=1024, help="Packets per burst."),
    policy: str = typer.Option("other", help="Scheduling policy: other (CFS), fifo or rr."),
) -> None:
    """Run the built-in demo: packets flow source -> forwarder(s) -> sink, one process each, over
    shared-memory rings; prints the rate and checks that every packet is accounted for."""
    from micronf.dataplane.pipeline import POLICIES, PipelineConfig, run_pipeline

    if policy not in POLICIES:
        raise typer.BadParameter(f"must be one of {', '.join(POLICIES)}", param_hint="--policy")
    cpus = sorted(os.sched_getaffinity(0))
    console.print(
        f"[bold]micronf {__version__}[/] demo: source -> {stages} x forward -> sink "
        f"({stages + 2} processes on CPUs {cpus}, burst {burst}, policy {policy})"
    )
    console.print("starting processes (the first run compiles the kernels, ~10 s) ...")
    t0 = time.monotonic()
    cfg = PipelineConfig(stages=stages, burst=burst, policy=policy, cpus=cpus)
    try:
        res = run_pipeline(cfg, seconds=seconds)
    except PermissionError as exc:
        console.print(f"[red]cannot apply policy {policy!r}: {exc} (real-time policies need root)[/]")
        raise typer.Exit(1) from exc
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


@shm_app.command("ls")
def shm_ls() -> None:
    """List micronf shared-memory segments and whether their creator still runs."""
    from micronf.dataplane.segment import list_segments

    table = Table("name", "size", "owner pid", "created", "state")
    for info in list_segments():
        state = "invalid" if not info.valid else ("live" if info.owner_alive else "[yellow]stale[/]")
        created = datetime.fromtimestamp(info.created).isoformat(timespec="seconds") if info.valid else "-"
        table.add_row(str(info.path), f"{info.size:,}", str(info.owner_pid or "-"), created, state)
    console.print(table)


@shm_app.command("gc")
def shm_gc(
    invalid: bool = typer.Option(False, "--invalid", help="Also remove micronf-* files that are not valid segments."),
) -> None:
    """Remove segments whose creator is dead (e.g. after a crash or kill -9)."""
    from micronf.dataplane.segment import remove_stale

    removed = remove_stale(include_invalid=invalid)
    for info in removed:
        console.print(f"removed {info.path} (owner pid {info.owner_pid or '-'})")
    console.print(f"{len(removed)} segment(s) removed")


@app.command()
def version() -> None:
    """Print the micronf version."""
    console.print(__version__)


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
