"""``eventfold projections``: lag, rebuild, reset, retry and skip."""

from __future__ import annotations

import os
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

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
    from eventfold.application.readside.health import ParkedFailure
    from eventfold.application.readside.projections import ProjectionRunner
    from eventfold.ports import Storage

__all__ = ["app"]

app = typer.Typer(
    help="Projections: lag, rebuild, reset, and getting past an event that fails.",
    no_args_is_help=True,
)


@app.command("status")
def projections_status(database_url: DatabaseUrl = None, as_json: JsonOption = False) -> None:
    """Each projection's state, checkpoint and lag (events readable now, events held back)."""
    with reported():
        storage = open_storage(database_url)
    rows = run(lambda: using(storage, _lags))

    def cells(row: dict[str, Any]) -> list[str]:
        style = "green" if row["events_behind"] == 0 else "yellow"
        held = "red" if row["not_yet_readable"] else "green"
        return [
            row["name"],
            _STATES[row["state"]],
            f"position {row['position']}",
            f"[{style}]{row['events_behind']}",
            f"[{held}]{row['not_yet_readable']}",
            f"{row['seconds_behind']:.1f}",
        ]

    print_rows(
        rows,
        # "behind": events readable now; "held back": committed, not readable yet.
        ["projection", "state", "checkpoint", "behind", "held back", "seconds"],
        as_json=as_json,
        title=storage.name,
        empty="no projection has saved a checkpoint yet",
        cells=cells,
    )
    if not as_json:
        for row in rows:
            if row["parked"] is not None:
                out.print(f"{row['name']}: {_parked_detail(row['parked'])}", soft_wrap=True)
        if rows and rows[0]["not_yet_readable"]:
            out.print(_held_back_detail(rows[0]), soft_wrap=True)


_STATES = {"failed": "[red]parked", "behind": "[yellow]behind", "caught up": "[green]ok"}


def _parked_detail(parked: dict[str, Any]) -> str:
    return (
        f"[red]parked[/red] at position {parked['position']} on {parked['type_name']} "
        f"{parked['event_id']} ({parked['stream_id']} v{parked['version']}): {parked['error']} "
        "- fix the handler and `projections retry`, or `projections skip --reason`"
    )


def _held_back_detail(row: dict[str, Any]) -> str:
    """The events committed but not readable yet (the same for every projection), and why."""
    detail = (
        f"[yellow]{row['not_yet_readable']} committed events are not readable yet[/yellow] "
        f"(readable up to position {row['readable_head']}, committed up to position "
        f"{row['committed_head']})"
    )
    blocker = row["blocker"]
    if blocker is None:
        return detail + ": a transaction that wrote them or an older one is ending"
    age = (
        "open for an unknown time"
        if blocker["age_seconds"] is None
        else (f"open for {blocker['age_seconds']:.1f} s")
    )
    return (
        f"{detail}: they wait for transaction pid {blocker['pid']} in database "
        f"{blocker['database']} (application {blocker['application_name']!r}, {age}) to end"
    )


async def _lags(storage: Storage) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from eventfold.adapters.sql.schema import checkpoints, documents
    from eventfold.application.readside.health import HEALTH_COLLECTION
    from eventfold.application.readside.projections import projection_lag

    # A projection that failed on its first event has saved no checkpoint, only its health.
    async with storage.transaction() as session:
        checkpointed = await sql(session, select(checkpoints.c.name))
        with_health = await sql(
            session, select(documents.c.key).where(documents.c.collection == HEALTH_COLLECTION)
        )
    names = sorted({row["name"] for row in checkpointed} | {row["key"] for row in with_health})
    now = datetime.now(UTC)
    rows = []
    for name in names:
        lag = await projection_lag(storage, name, now)
        blocker = lag.blocker
        rows.append(
            {
                "name": name,
                "state": lag.state,
                "position": lag.checkpoint.position,
                "events_behind": lag.events_behind,
                "not_yet_readable": lag.unreadable,
                "seconds_behind": lag.seconds_behind,
                "readable_head": lag.readable_head.position,
                "committed_head": lag.committed_head.position,
                "blocker": None if blocker is None else asdict(blocker),
                "parked": None if lag.parked is None else _parked_row(lag.parked),
            }
        )
    return rows


def _parked_row(parked: ParkedFailure) -> dict[str, Any]:
    return {
        "event_id": str(parked.event_id),
        "position": parked.position.position,
        "type_name": parked.type_name,
        "stream_id": parked.stream_id,
        "version": parked.version,
        "error": parked.error,
        "failed_at": parked.failed_at.isoformat(),
    }


@app.command("rebuild")
def projections_rebuild(
    name: str,
    database_url: DatabaseUrl = None,
    app_path: AppOption = None,
    keep_old: Annotated[
        bool, typer.Option("--keep-old", help="keep the old read model beside (<name>__old)")
    ] = False,
) -> None:
    """Replay the whole log into a new read model; queries see the old one until the swap.

    Table and document read models are rebuilt beside the live ones in batches: stop it
    (Ctrl-C) at any time and run the same command again to resume from the last batch.
    """
    application, runner = _application(app_path, database_url, name)
    try:
        done = run(
            lambda: using(
                application.storage, lambda _: _rebuild(application, runner, name, keep_old)
            )
        )
    except KeyboardInterrupt:
        out.print(
            f"[yellow]interrupted: the live {name} is untouched; run the same command to "
            "resume from the last batch"
        )
        raise typer.Exit(130) from None
    out.print(f"[green]rebuilt {name}: {done} events replayed")


async def _rebuild(application: Any, runner: ProjectionRunner, name: str, keep_old: bool) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    await _create_read_model(application, name)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("remaining"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=out) as progress:
        task = progress.add_task(f"rebuilding {name}", total=None, rate="")

        def report(done: int, total: int) -> None:
            speed = progress.tasks[task].speed
            rate = f"{speed:,.0f} events/s" if speed else ""
            progress.update(task, completed=done, total=total, rate=rate)

        return await runner.rebuild(name, on_progress=report, keep_old=keep_old)


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
    """Unpark a projection so its runners apply the event it failed on again.

    Use it after fixing the cause (a handler's bug, a missing table). With ``--app`` the
    events after the checkpoint are also applied now, and a failure is told in one line.
    """
    from eventfold.application.readside.health import projection_health, retry_projection

    if app_path is None and os.environ.get("EVENTFOLD_APP") is None:
        with reported():
            storage = open_storage(database_url)
        parked = run(lambda: using(storage, lambda s: retry_projection(s, name)))
        out.print(f"[green]{name} will retry event {parked.event_id} ({parked.type_name})")
        return
    application, runner = _application(app_path, database_url, name)

    async def retry(storage: Storage) -> int:
        if (await projection_health(storage, name)).parked is not None:
            await retry_projection(storage, name)
        await _create_read_model(application, name)
        return await runner.catch_up(name)

    done = run(lambda: using(application.storage, retry))
    out.print(f"[green]{name} caught up: {done} events applied")


@app.command("skip")
def projections_skip(
    name: str,
    reason: Annotated[str, typer.Option(help="why the event is skipped; kept on record")],
    event_id: Annotated[
        str | None, typer.Option(help="the parked event's id, to skip only what you saw")
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Unpark a projection past the event it failed on, recording why.

    The skipped event is never applied to this projection, rebuilds included; the skip
    and its reason stay in the projection's health.
    """
    from eventfold.application.readside.health import skip_parked_event

    with reported():
        storage = open_storage(database_url)
        expected = None if event_id is None else _event_id(event_id)
    skipped = run(
        lambda: using(
            storage,
            lambda s: skip_parked_event(
                s, name, reason=reason, now=datetime.now(UTC), event_id=expected
            ),
        )
    )
    out.print(
        f"[yellow]{name} skips {skipped.type_name} {skipped.event_id} "
        f"(position {skipped.position.position}): {reason}",
        highlight=False,
        soft_wrap=True,
    )


def _event_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        msg = f"--event-id {text!r} is not an event id (a UUID)"
        raise CommandError(msg) from None


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
