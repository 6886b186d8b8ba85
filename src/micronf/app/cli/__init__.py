"""The ``micronf`` command line: one table of commands, each written in the module of its kind.

- :mod:`~micronf.app.cli.local`: what runs on this machine alone (``bench-ring``, ``run``,
  ``nfs``, ``chain``, ``shm``, ``version``);
- :mod:`~micronf.app.cli.serve`: the two servers (``agent``, ``orchestrator``);
- :mod:`~micronf.app.cli.control`: the orchestrator's input files and its clients (``plan``,
  ``schema``, ``deploy``, ``undeploy``, ``list``, ``status``);
- :mod:`~micronf.app.cli.base`: the error convention, consoles and stop signals they share.

The commands are registered here in the order ``micronf --help`` lists them.
"""

from __future__ import annotations

import gc
import sys

import typer

# Importing numba, pydantic and the commands builds a large heap of objects that live as long as
# the process; the collector walking it again and again while it grows costs 0.15-0.2 s of every
# command's start. So no collection while importing (and main exempts that heap for good).
_collecting = gc.isenabled()
gc.disable()
try:
    from micronf.app.cli import control, local, serve
    from micronf.app.cli.base import Group, print_version, state
finally:
    if _collecting:
        gc.enable()

app = typer.Typer(
    cls=Group,
    help="micronf: network functions and service chains built from small packet-processing processes.",
    no_args_is_help=True,
    add_completion=False,
)
shm_app = typer.Typer(help="Inspect and clean shared-memory segments.", no_args_is_help=True)
app.add_typer(shm_app, name="shm")


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Print the traceback of an unexpected error."),
    _version: bool = typer.Option(False, "--version", callback=print_version, is_eager=True,
                                  help="Print the version and exit."),
) -> None:
    """micronf: network functions and service chains built from small packet-processing processes."""
    state["debug"] = debug


for _name, _command in (
    ("bench-ring", local.bench_ring), ("run", local.run), ("nfs", local.nfs), ("chain", local.chain),
    ("version", local.version), ("agent", serve.agent), ("plan", control.plan_sfc), ("schema", control.schema),
    ("orchestrator", serve.orchestrator), ("deploy", control.deploy), ("undeploy", control.undeploy),
    ("list", control.list_sfcs), ("status", control.status),
):
    app.command(_name)(_command)
shm_app.command("ls")(local.shm_ls)
shm_app.command("gc")(local.shm_gc)


def main() -> None:
    """Console-script entry point (``micronf``, ``python -m micronf``)."""
    gc.freeze()  # what start-up loaded stays: exempt it from the collector's full passes (see below)
    try:
        sys.exit(app())
    finally:
        # The process ends here and its memory goes back whole: exempt the heap (numba's and
        # pydantic's objects, hundreds of thousands) from the interpreter's last collections, which
        # would only walk it: 0.3 s of CPU at the end of `micronf chain`, a third of a warm offline run.
        gc.freeze()

