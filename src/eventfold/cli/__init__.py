"""The ``eventfold`` command: tables, streams, projections, snapshots, the inbox and outbox.

Every command takes ``--database-url`` (or ``EVENTFOLD_DATABASE_URL``):
``sqlite:///app.db`` or ``postgresql://user@host:5432/db?schema=name``. What goes wrong is
told in one line with what to do about it, never as a traceback; a command whose extra is
not installed says which ``pip install`` to run. Every listing takes ``--json``.

Each command group is one module of this package with a Typer ``app``; add a group by
adding its module to ``_GROUPS``. Group modules import their backend only when a command
runs, so ``eventfold --help`` needs the ``cli`` extra alone.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from functools import cache
from typing import TYPE_CHECKING, Annotated

import typer

from eventfold.cli._common import fail, load_app, missing_extra

__all__ = ["app", "load_app", "main"]

_root_app = typer.Typer(
    help="eventfold: event store, projections, snapshots, inbox and outbox from the command line.",
    no_args_is_help=True,
)

# (name, module): each module holds a Typer `app` for `eventfold <name> ...`.
_GROUPS = (
    ("db", "eventfold.cli.db"),
    ("streams", "eventfold.cli.streams"),
    ("projections", "eventfold.cli.projections"),
    ("snapshots", "eventfold.cli.snapshots"),
    ("inbox", "eventfold.cli.inbox"),
    ("outbox", "eventfold.cli_outbox"),
    ("dead-letters", "eventfold.cli.dead_letters"),
    ("admin", "eventfold.cli.admin"),
    ("sagas", "eventfold.cli.sagas"),
    ("processes", "eventfold.cli.processes"),
)


def version() -> str:
    """The installed eventfold's version."""
    try:
        return importlib.metadata.version("eventfold")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "0+unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"eventfold {version()}")
        raise typer.Exit


@_root_app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """eventfold: event store, projections, snapshots, inbox and outbox."""


@cache
def _mounted() -> typer.Typer:
    # Mounted on first use, not at import: a group module may import eventfold.cli._common,
    # which imports this package first.
    for name, module_name in _GROUPS:
        _root_app.add_typer(importlib.import_module(module_name).app, name=name)
    return _root_app


if TYPE_CHECKING:
    app: typer.Typer
    """The ``eventfold`` Typer application, every command group mounted."""


def __getattr__(name: str) -> object:
    if name == "app":
        return _mounted()
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def main() -> None:
    """The ``eventfold`` console script."""
    try:
        _mounted()()
    except ModuleNotFoundError as exc:
        # The same line as inside a command, for an import Typer itself ran into.
        line = missing_extra(exc)
        if line is None:
            raise
        raise SystemExit(fail(line).exit_code) from None
