"""What every ``eventfold`` command shares: its options, its one error path, its output.

Nothing here imports a database driver or SQLAlchemy: a command imports its backend when
it runs, so ``eventfold --help`` works with the ``cli`` extra alone and a command whose
extra is missing says which ``pip install`` to run.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from eventfold.errors import ConfigurationError, EventfoldError

if TYPE_CHECKING:
    from eventfold.ports import Storage

__all__ = [
    "AppOption",
    "CommandError",
    "DatabaseUrl",
    "JsonOption",
    "err",
    "fail",
    "load_app",
    "load_target",
    "missing_extra",
    "open_storage",
    "out",
    "print_rows",
    "reported",
    "run",
    "sql",
    "time_text",
    "using",
]

T = TypeVar("T")

SUPPORTED_URLS = "sqlite:///path/to.db, postgresql://user@host:5432/db[?schema=name] or memory://"

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
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print a JSON array instead of a table.", show_default=False)
]

# The top-level module a missing import names, and the extra that installs it.
_EXTRAS = {
    "asyncpg": "postgres",
    "aiosqlite": "sqlite",
    "sqlalchemy": "sqlite",  # or postgres: both extras bring it
    "greenlet": "sqlite",
    "aio_pika": "rabbitmq",
    "nats": "nats",
    "redis": "redis",
    "fastapi": "fastapi",
    "uvicorn": "fastapi",
    "jinja2": "admin",
    "multipart": "admin",
    "opentelemetry": "otel",
    "cryptography": "crypto",
}


class CommandError(Exception):
    """A failure told to the user in one line."""


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The one line that says which extra installs the module ``exc`` did not find."""
    top = (exc.name or "").split(".", maxsplit=1)[0]
    extra = _EXTRAS.get(top)
    if extra is None:
        return None
    also = " (or eventfold[postgres])" if top == "sqlalchemy" else ""
    return (
        f"this command needs the {top} package, which is not installed: "
        f"pip install 'eventfold[{extra}]'{also}"
    )


def fail(message: str, *, code: int = 1) -> typer.Exit:
    """Print ``message`` as one red line; the caller raises what this returns."""
    # Escaped: a message such as "pip install 'eventfold[postgres]'" is not markup.
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def reported() -> Iterator[None]:
    """The one error path: eventfold errors and missing extras become one line, exit 1."""
    try:
        yield
    except (EventfoldError, CommandError) as exc:
        raise fail(str(exc)) from None
    except ModuleNotFoundError as exc:
        line = missing_extra(exc)
        if line is None:
            raise
        raise fail(line) from None


def run(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run the coroutine ``work`` makes, reporting failures through :func:`reported`."""
    with reported():
        return asyncio.run(work())


def open_storage(database_url: str | None, *, must_exist: bool = True) -> Storage:
    """The storage the URL names; a SQLite file that is not there is an error, not created."""
    from eventfold.adapters.url import sqlite_path, storage_from_url

    url = require_url(database_url)
    storage = storage_from_url(url)
    if must_exist and url.lower().startswith("sqlite"):
        path = sqlite_path(url)
        if path != ":memory:" and not os.path.exists(path):
            msg = (
                f"no database file {path!r}: check the URL, or run `eventfold db init` to create it"
            )
            raise CommandError(msg)
    return storage


def require_url(database_url: str | None) -> str:
    """The database URL, or the error that says how to give one."""
    if not database_url:
        msg = f"no database: pass --database-url or set EVENTFOLD_DATABASE_URL ({SUPPORTED_URLS})"
        raise CommandError(msg)
    return database_url


async def using(storage: Storage, work: Callable[[Storage], Awaitable[T]]) -> T:
    """Run ``work`` on ``storage``, then close it."""
    try:
        return await work(storage)
    finally:
        await storage.close()


def load_app(path: str | None, database_url: str) -> Any:
    """The application ``module:attr`` names; a callable is called with the database URL."""
    if not path:
        msg = "which application? pass --app module:attr or set EVENTFOLD_APP"
        raise CommandError(msg)
    application = load_target(path, database_url, option="--app", what="the application")
    missing = [a for a in ("storage", "events", "projections") if not hasattr(application, a)]
    if missing:
        msg = f"the application {path!r} has no {', '.join(missing)}"
        raise ConfigurationError(msg)
    return application


def load_target(
    path: str, database_url: str, *, option: str, what: str, kind: type[T] | None = None
) -> Any:
    """The object ``module:attr`` names: a ``kind``, or a callable given the database URL."""
    module_name, _, attr = path.partition(":")
    if not attr:
        msg = f"{option} takes module:attr, got {path!r}"
        raise CommandError(msg)
    # A console script's sys.path holds its own directory, not the working directory:
    # look there first, as uvicorn and gunicorn do, so `--app myapp.main:app` finds the
    # project the command is run from.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        if isinstance(exc, ModuleNotFoundError) and missing_extra(exc):
            raise
        msg = (
            f"cannot load {what} {path!r}: {exc}; run the command from the "
            "directory that holds the module, or add it to PYTHONPATH"
        )
        raise CommandError(msg) from exc
    if kind is not None and isinstance(target, kind):
        return target
    loaded = target(database_url) if callable(target) else target
    if kind is not None and not isinstance(loaded, kind):
        msg = f"{path!r} is not a {kind.__name__} nor makes one"
        raise CommandError(msg)
    return loaded


def print_rows(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    *,
    as_json: bool,
    title: str | None = None,
    empty: str = "nothing to show",
    cells: Callable[[dict[str, Any]], Sequence[str]] | None = None,
) -> None:
    """A listing: a table for people, or with ``--json`` a JSON array for scripts.

    The table shows ``columns`` of each row, or what ``cells`` makes of it.
    """
    if as_json:
        # Plain print: a JSON document must not be wrapped or coloured by the console.
        sys.stdout.write(json.dumps([_plain(row) for row in rows], default=str) + "\n")
        return
    if not rows:
        out.print(empty, soft_wrap=True)
        return
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(cells(row) if cells else [time_text(row.get(c)) for c in columns]))
    out.print(table)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


async def sql(session: object, statement: object) -> list[dict[str, Any]]:
    """Run a SQLAlchemy statement in ``session``; a storage without SQL is told in one line."""
    execute_sql = getattr(session, "execute_sql", None)
    if execute_sql is None:
        msg = "this command reads eventfold's tables with SQL: use a SQLite or PostgreSQL URL"
        raise CommandError(msg)
    rows: list[dict[str, Any]] = await execute_sql(statement)
    return rows


def time_text(value: object) -> str:
    """A cell's text: a time to the second, nothing for None."""
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value) if value is not None else ""
