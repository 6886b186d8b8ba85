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

import sys

import typer

from micronf.app.cli import control, local, serve
from micronf.app.cli.base import Group, print_version, state

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
    """Console-script entry point."""
    sys.exit(app())

