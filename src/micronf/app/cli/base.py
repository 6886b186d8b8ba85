"""What every ``micronf`` command shares: the error convention, the consoles, stop signals.

Why a module of its own: the commands live in several modules (:mod:`.local`, :mod:`.serve`,
:mod:`.control`) and :mod:`micronf.app.cli` registers them all; this is what they have in common
and what the command group itself needs.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer._click.exceptions import (  # typer vendors click (typer._click)
    ClickException,
    NoArgsIsHelpError,
    UsageError,
)
from typer.core import TyperGroup

from micronf import __version__


class CliError(Exception):
    """A failure to report as one ``error:`` line on stderr (exit 1; 2 for bad input)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Group(TyperGroup):
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
        state["debug"] = False
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
            if state["debug"]:
                raise
            code = _error_line(f"{type(exc).__name__}: {exc} (micronf --debug ... prints the traceback)", 1)
        sys.exit(code if isinstance(code, int) else 0)


def _error_line(message: str, code: int) -> int:
    """Print ``error: message`` as one line on stderr; return ``code``."""
    err_console.print(f"[red]error:[/] {escape(' '.join(message.split()))}")
    return code


state = {"debug": False}
console = Console()
err_console = Console(stderr=True, soft_wrap=True, highlight=False)
"""Errors, warnings and progress: stdout is the commands' output only (JSON under ``--json``)."""


def print_version(value: bool) -> None:
    if value:
        console.print(f"micronf {__version__}", highlight=False)
        raise typer.Exit()




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

