"""The ``eventfold`` command: create the tables, look at streams, watch and rebuild projections.

Every command takes ``--database-url`` (or ``EVENTFOLD_DATABASE_URL``):
``sqlite:///app.db`` or ``postgresql://user@host:5432/db?schema=name``. What goes wrong
with the database is told in one line with what to do about it, never as a traceback.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from eventfold.adapters.sql import metadata
from eventfold.adapters.sql.read_model import create_read_models
from eventfold.adapters.url import SUPPORTED_URLS, sqlite_path, storage_from_url
from eventfold.application.readside.projections import ProjectionRunner, projection_lag
from eventfold.cli_outbox import app as outbox_app
from eventfold.errors import ConfigurationError, EventfoldError
from eventfold.ports import Storage

__all__ = ["app", "main"]

T = TypeVar("T")

app = typer.Typer(
    help="eventfold: event store, projections and outbox from the command line.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="The framework's tables.", no_args_is_help=True)
streams_app = typer.Typer(help="Event streams.", no_args_is_help=True)
projections_app = typer.Typer(help="Projections: lag and rebuilds.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(streams_app, name="streams")
app.add_typer(projections_app, name="projections")
app.add_typer(outbox_app, name="outbox")

out = Console()
err = Console(stderr=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="EVENTFOLD_DATABASE_URL",
        help="sqlite:///app.db or postgresql://user@host:5432/db[?schema=name]",
        show_default=False,
    ),
]
AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        envvar="EVENTFOLD_APP",
        help="module:attr of the application: an object, or a callable taking the "
        "database URL, with .storage, .events and .projections",
        show_default=False,
    ),
]

_events = metadata.tables["eventfold_events"]
_checkpoints = metadata.tables["eventfold_checkpoints"]


class CommandError(Exception):
    """A failure told to the user in one line."""


# -- plumbing ------------------------------------------------------------------------------


def _run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``work``; an eventfold error becomes one red line and exit code 1."""
    try:
        return asyncio.run(work())
    except (EventfoldError, CommandError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _url(database_url: str | None) -> str:
    if not database_url:
        msg = f"no database: pass --database-url or set EVENTFOLD_DATABASE_URL ({SUPPORTED_URLS})"
        raise CommandError(msg)
    return database_url


def _open(database_url: str | None, *, must_exist: bool = True) -> Storage:
    """The storage the URL names; a SQLite file that is not there is an error, not created."""
    url = _url(database_url)
    storage = storage_from_url(url)
    if must_exist and url.lower().startswith("sqlite"):
        path = sqlite_path(url)
        if path != ":memory:" and not os.path.exists(path):
            msg = (
                f"no database file {path!r}: check the URL, or run `eventfold db init` to create it"
            )
            raise CommandError(msg)
    return storage


@contextmanager
def _closing_errors() -> Iterator[None]:
    # Typer runs the command; errors raised before asyncio.run are told the same way.
    try:
        yield
    except (EventfoldError, CommandError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


async def _using(storage: Storage, work: Callable[[Storage], Awaitable[T]]) -> T:
    try:
        return await work(storage)
    finally:
        await storage.close()


# -- db ------------------------------------------------------------------------------------


@db_app.command("init")
def db_init(database_url: DatabaseUrl = None) -> None:
    """Create eventfold's tables if missing (safe to run again)."""
    with _closing_errors():
        storage = _open(database_url, must_exist=False)
    _run(lambda: _using(storage, lambda s: s.create_schema()))
    out.print(f"[green]eventfold's tables are ready in {storage.name}")


# -- streams -------------------------------------------------------------------------------


@streams_app.command("list")
def streams_list(
    database_url: DatabaseUrl = None,
    limit: Annotated[int, typer.Option(help="At most this many streams")] = 100,
) -> None:
    """Every stream with its version and when it last changed."""
    with _closing_errors():
        storage = _open(database_url)
    rows = _run(lambda: _using(storage, lambda s: _stream_rows(s, limit)))
    table = Table("stream", "version", "events", "last event at", title=storage.name)
    for row in rows:
        table.add_row(row["stream_id"], str(row["version"]), str(row["n"]), _time(row["last"]))
    out.print(table if rows else "no streams yet")


async def _stream_rows(storage: Storage, limit: int) -> list[dict[str, Any]]:
    query = (
        select(
            _events.c.stream_id,
            func.max(_events.c.version).label("version"),
            func.count().label("n"),
            func.max(_events.c.occurred_at).label("last"),
        )
        .group_by(_events.c.stream_id)
        .order_by(_events.c.stream_id)
        .limit(limit)
    )
    async with storage.transaction() as session:
        return await _sql(session, query)


@streams_app.command("show")
def streams_show(stream_id: str, database_url: DatabaseUrl = None) -> None:
    """The events of one stream: version, type, time, metadata and payload."""
    with _closing_errors():
        storage = _open(database_url)
    stored = _run(lambda: _using(storage, lambda s: _read_stream(s, stream_id)))
    if not stored:
        err.print(f"[red]error:[/red] no stream {stream_id!r} in {storage.name}", highlight=False)
        raise typer.Exit(1)
    out.rule(f"{stream_id} ({len(stored)} events)")
    for event in stored:
        # One block per event: payloads are too wide for a table column.
        out.print(
            f"[bold]v{event.version}[/bold] {event.type_name} (schema v{event.schema_version}) "
            f"at {_time(event.occurred_at)}  actor={event.actor or '-'}  "
            f"correlation={event.correlation_id or '-'}",
            highlight=False,
        )
        out.print_json(event.data, indent=None)


async def _read_stream(storage: Storage, stream_id: str) -> list[Any]:
    async with storage.transaction() as session:
        return list(await session.read_stream(stream_id))


# -- projections ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lag:
    name: str
    position: int
    events_behind: int
    seconds_behind: float


@projections_app.command("status")
def projections_status(database_url: DatabaseUrl = None) -> None:
    """Each projection's checkpoint and how far it is behind the log (events, seconds)."""
    with _closing_errors():
        storage = _open(database_url)
    lags = _run(lambda: _using(storage, _lags))
    table = Table("projection", "checkpoint", "events behind", "seconds behind", title=storage.name)
    for lag in lags:
        style = "green" if lag.events_behind == 0 else "yellow"
        table.add_row(
            lag.name,
            f"position {lag.position}",
            f"[{style}]{lag.events_behind}",
            f"{lag.seconds_behind:.1f}",
        )
    out.print(table if lags else "no projection has saved a checkpoint yet")


async def _lags(storage: Storage) -> list[_Lag]:
    async with storage.transaction() as session:
        rows = await _sql(session, select(_checkpoints.c.name).order_by(_checkpoints.c.name))
    now = datetime.now(UTC)
    lags = []
    for row in rows:
        lag = await projection_lag(storage, row["name"], now)
        lags.append(_Lag(lag.name, lag.checkpoint.position, lag.events_behind, lag.seconds_behind))
    return lags


@projections_app.command("rebuild")
def projections_rebuild(
    name: str,
    database_url: DatabaseUrl = None,
    app_path: AppOption = None,
) -> None:
    """Clear a projection's read model and replay the whole log into it, in one transaction."""
    with _closing_errors():
        application = load_app(app_path, _url(database_url))
        storage: Storage = application.storage
    done = _run(lambda: _using(storage, lambda s: _rebuild(application, name)))
    out.print(f"[green]rebuilt {name}: {done} events replayed")


async def _rebuild(application: Any, name: str) -> int:
    runner = ProjectionRunner(application.storage, application.events, application.projections)
    if name not in runner.projections:
        msg = f"no projection named {name!r}; the application has {sorted(runner.projections)}"
        raise CommandError(msg)
    # A database made by `eventfold db init` has eventfold's tables only: create the
    # projection's own read-model tables if they are missing (idempotent).
    await create_read_models(
        application.storage, [p for p in application.projections if p.name == name]
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out) as progress:
        task = progress.add_task(f"rebuilding {name}", total=None)

        def report(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return await runner.rebuild(name, on_progress=report)


def load_app(path: str | None, database_url: str) -> Any:
    """The application ``module:attr`` names; a callable is called with the database URL."""
    if not path:
        msg = "which application? pass --app module:attr or set EVENTFOLD_APP"
        raise CommandError(msg)
    module_name, _, attr = path.partition(":")
    if not attr:
        msg = f"--app takes module:attr, got {path!r}"
        raise CommandError(msg)
    # A console script's sys.path holds its own directory, not the working directory:
    # look there first, as uvicorn and gunicorn do, so `--app myapp.main:app` finds the
    # project the command is run from.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        msg = (
            f"cannot load the application {path!r}: {exc}; run the command from the "
            "directory that holds the module, or add it to PYTHONPATH"
        )
        raise CommandError(msg) from exc
    application = target(database_url) if callable(target) else target
    missing = [a for a in ("storage", "events", "projections") if not hasattr(application, a)]
    if missing:
        msg = f"the application {path!r} has no {', '.join(missing)}"
        raise ConfigurationError(msg)
    return application


# -- helpers -------------------------------------------------------------------------------


async def _sql(session: Any, statement: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await session.execute_sql(statement)
    return rows


def _time(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value) if value is not None else ""


def _mount_outbox() -> None:
    """Mount ``eventfold outbox`` when the outbox commands are installed."""
    # Imported by name: the outbox commands ship separately and may not be installed.
    try:
        outbox = importlib.import_module("eventfold.cli_outbox")
    except ModuleNotFoundError:
        return
    app.add_typer(outbox.app, name="outbox")


_mount_outbox()


def main() -> None:
    """The ``eventfold`` console script."""
    app()
