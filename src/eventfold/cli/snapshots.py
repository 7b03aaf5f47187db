"""``eventfold snapshots``: list, take and drop the snapshots of event-sourced aggregates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from eventfold.cli._common import (
    AppOption,
    CommandError,
    DatabaseUrl,
    JsonOption,
    fail,
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
    from eventfold.ports import SnapshotRecord, Storage

__all__ = ["app"]

app = typer.Typer(help="Snapshots of event-sourced aggregates.", no_args_is_help=True)


@app.command("list")
def snapshots_list(
    database_url: DatabaseUrl = None,
    limit: Annotated[int, typer.Option(help="At most this many snapshots")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Every snapshot: its stream, version, state type and when it was taken."""
    with reported():
        storage = open_storage(database_url)
    rows = run(lambda: using(storage, lambda s: _snapshot_rows(s, limit)))
    print_rows(
        rows,
        ["stream_id", "version", "state_type", "schema_version", "taken_at"],
        as_json=as_json,
        title=storage.name,
        empty="no snapshots",
    )


async def _snapshot_rows(storage: Storage, limit: int) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from eventfold.adapters.sql.schema import snapshots

    columns = [
        snapshots.c[name]
        for name in ("stream_id", "version", "state_type", "schema_version", "taken_at")
    ]
    query = select(*columns).order_by(snapshots.c.stream_id).limit(limit)
    async with storage.transaction() as session:
        return await sql(session, query)


@app.command("take")
def snapshots_take(
    stream_id: str, database_url: DatabaseUrl = None, app_path: AppOption = None
) -> None:
    """Fold a stream's events into its aggregate's state and save that as its snapshot."""
    with reported():
        application = load_app(app_path, require_url(database_url))
    snapshot = run(lambda: using(application.storage, lambda _: _take(application, stream_id)))
    out.print(f"[green]snapshot of {stream_id} taken at version {snapshot.version}")


async def _take(application: Any, stream_id: str) -> SnapshotRecord:
    from eventfold.ports import SnapshotRecord

    persistence = getattr(application, "model", None)
    model = None if persistence is None else persistence.for_stream(stream_id)
    if model is None:
        msg = f"no event-sourced type of the application keeps its events in {stream_id!r}"
        raise CommandError(msg)
    async with application.storage.transaction() as session:
        stored = await session.read_stream(stream_id)
        if not stored:
            msg = f"no stream {stream_id!r} in {application.storage.name}"
            raise CommandError(msg)
        events = [application.events.decode(e.type_name, e.schema_version, e.data) for e in stored]
        aggregate_id = stream_id.removeprefix(f"{model.name}-")
        aggregate = model.aggregate_type.rehydrate(aggregate_id, events)
        snapshot = SnapshotRecord(
            stream_id,
            stored[-1].version,
            model.state_name,
            model.state_version,
            model.state_codec.encode(aggregate.state),
            datetime.now(UTC),
        )
        await session.save_snapshot(snapshot)
    return snapshot


@app.command("drop")
def snapshots_drop(
    stream_ids: Annotated[
        list[str] | None, typer.Argument(help="Streams whose snapshot to drop.")
    ] = None,
    drop_all: Annotated[bool, typer.Option("--all", help="Drop every snapshot.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete snapshots; aggregates then load from their events until the next one is taken."""
    if bool(stream_ids) == drop_all:
        raise fail("name streams or pass --all (not both)", code=2)
    with reported():
        storage = open_storage(database_url)
    count = run(lambda: using(storage, lambda s: _drop(s, None if drop_all else stream_ids)))
    out.print(f"dropped {count} snapshot(s)")


async def _drop(storage: Storage, stream_ids: list[str] | None) -> int:
    from sqlalchemy import delete, func, select

    from eventfold.adapters.sql.schema import snapshots

    where = [] if stream_ids is None else [snapshots.c.stream_id.in_(stream_ids)]
    async with storage.transaction() as session:
        counted = await sql(
            session, select(func.count().label("n")).select_from(snapshots).where(*where)
        )
        await sql(session, delete(snapshots).where(*where))
    return int(counted[0]["n"])
