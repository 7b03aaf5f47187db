"""``eventfold projections``: lag, rebuild, reset, retry and skip."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer

from eventfold.cli._common import (
    AppOption,
    CommandError,
    DatabaseUrl,
    JsonOption,
    load_app,
    open_storage,
    out,
    print_rows,
    reported,
    require_url,
    run,
    sql,
    using,
)

if TYPE_CHECKING:
    from eventfold.application.readside.projections import ProjectionRunner
    from eventfold.ports import Storage, StoredEvent

__all__ = ["app"]

app = typer.Typer(
    help="Projections: lag, rebuild, reset, and getting past an event that fails.",
    no_args_is_help=True,
)


@app.command("status")
def projections_status(database_url: DatabaseUrl = None, as_json: JsonOption = False) -> None:
    """Each projection's checkpoint and how far it is behind the log (events, seconds)."""
    with reported():
        storage = open_storage(database_url)
    rows = run(lambda: using(storage, _lags))

    def cells(row: dict[str, Any]) -> list[str]:
        style = "green" if row["events_behind"] == 0 else "yellow"
        return [
            row["name"],
            f"position {row['position']}",
            f"[{style}]{row['events_behind']}",
            f"{row['seconds_behind']:.1f}",
        ]

    print_rows(
        rows,
        ["projection", "checkpoint", "events behind", "seconds behind"],
        as_json=as_json,
        title=storage.name,
        empty="no projection has saved a checkpoint yet",
        cells=cells,
    )


async def _lags(storage: Storage) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from eventfold.adapters.sql.schema import checkpoints
    from eventfold.application.readside.projections import projection_lag

    async with storage.transaction() as session:
        names = await sql(session, select(checkpoints.c.name).order_by(checkpoints.c.name))
    now = datetime.now(UTC)
    rows = []
    for row in names:
        lag = await projection_lag(storage, row["name"], now)
        rows.append(
            {
                "name": lag.name,
                "position": lag.checkpoint.position,
                "events_behind": lag.events_behind,
                "seconds_behind": lag.seconds_behind,
            }
        )
    return rows


@app.command("rebuild")
def projections_rebuild(
    name: str, database_url: DatabaseUrl = None, app_path: AppOption = None
) -> None:
    """Clear a projection's read model and replay the whole log into it, in one transaction."""
    application, runner = _application(app_path, database_url, name)
    done = run(lambda: using(application.storage, lambda _: _rebuild(application, runner, name)))
    out.print(f"[green]rebuilt {name}: {done} events replayed")


async def _rebuild(application: Any, runner: ProjectionRunner, name: str) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    await _create_read_model(application, name)
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


@app.command("reset")
def projections_reset(
    name: str, database_url: DatabaseUrl = None, app_path: AppOption = None
) -> None:
    """Clear a projection's read model and move its checkpoint to the start of the log.

    Unlike ``rebuild``, nothing is replayed here: the projection's running worker replays
    the log, and readers see the read model fill up again.
    """
    application, _ = _application(app_path, database_url, name)
    run(lambda: using(application.storage, lambda _: _reset(application, name)))
    out.print(f"[green]reset {name}: its read model is empty and it starts over from the log")


async def _reset(application: Any, name: str) -> None:
    from eventfold.application.readside.projections import ProjectionContext
    from eventfold.ports import LOG_START

    projection = next(p for p in application.projections if p.name == name)
    await _create_read_model(application, name)
    async with application.storage.transaction() as session:
        loaded = await session.load_checkpoint(name)
        # Compare-and-set: a worker that moved the checkpoint meanwhile makes this fail.
        await session.save_checkpoint(name, LOG_START, expected=loaded)
        context = ProjectionContext(session, rebuilding=True)
        await projection.reset(context)
        await context.flush()


@app.command("retry")
def projections_retry(
    name: str, database_url: DatabaseUrl = None, app_path: AppOption = None
) -> None:
    """Apply the events after a projection's checkpoint now; a failure is told in one line.

    Use it after fixing the cause of a failure (a handler's bug, a missing table): the
    projection goes on from the event it stopped at.
    """
    application, runner = _application(app_path, database_url, name)

    async def retry(_: Storage) -> int:
        await _create_read_model(application, name)
        return await runner.catch_up(name)

    done = run(lambda: using(application.storage, retry))
    out.print(f"[green]{name} caught up: {done} events applied")


@app.command("skip")
def projections_skip(name: str, database_url: DatabaseUrl = None) -> None:
    """Move a projection's checkpoint past the next event, the one it fails on.

    The skipped event is never applied to this projection: use it for an event the
    projection cannot handle and should not have seen.
    """
    with reported():
        storage = open_storage(database_url)
    skipped = run(lambda: using(storage, lambda s: _skip(s, name)))
    out.print(
        f"[yellow]{name} skipped {skipped.type_name} (stream {skipped.stream_id} "
        f"v{skipped.version}, position {skipped.position})",
        highlight=False,
    )


async def _skip(storage: Storage, name: str) -> StoredEvent:
    from eventfold.ports import LOG_START

    async with storage.transaction() as session:
        loaded = await session.load_checkpoint(name)
        if loaded is None:
            msg = f"no projection {name!r} has saved a checkpoint in {storage.name}"
            raise CommandError(msg)
        after = await session.read_log(after=loaded or LOG_START, limit=1)
        if not after:
            msg = f"{name} is at the head of the log: there is no event to skip"
            raise CommandError(msg)
        await session.save_checkpoint(name, after[0].log_position, expected=loaded)
    return after[0]


# -- helpers -------------------------------------------------------------------------------


def _application(
    app_path: str | None, database_url: str | None, name: str
) -> tuple[Any, ProjectionRunner]:
    """The application and a runner of its projections; an unknown name is an error."""
    from eventfold.application.readside.projections import ProjectionRunner

    with reported():
        application = load_app(app_path, require_url(database_url))
        runner = ProjectionRunner(application.storage, application.events, application.projections)
        if name not in runner.projections:
            msg = f"no projection named {name!r}; the application has {sorted(runner.projections)}"
            raise CommandError(msg)
    return application, runner


async def _create_read_model(application: Any, name: str) -> None:
    # A database made by `eventfold db init` has eventfold's tables only: create the
    # projection's own read-model tables if they are missing (idempotent).
    from eventfold.adapters.sql.read_model import create_read_models

    await create_read_models(
        application.storage, [p for p in application.projections if p.name == name]
    )
