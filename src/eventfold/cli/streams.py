"""``eventfold streams``: list the event streams, show one stream's events."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from eventfold.cli._common import (
    DatabaseUrl,
    JsonOption,
    fail,
    open_storage,
    out,
    print_rows,
    reported,
    run,
    sql,
    time_text,
    using,
)

if TYPE_CHECKING:
    from eventfold.ports import Storage, StoredEvent

__all__ = ["app"]

app = typer.Typer(help="Event streams.", no_args_is_help=True)


@app.command("list")
def streams_list(
    database_url: DatabaseUrl = None,
    limit: Annotated[int, typer.Option(help="At most this many streams")] = 100,
    as_json: JsonOption = False,
) -> None:
    """Every stream with its version and when it last changed."""
    with reported():
        storage = open_storage(database_url)
    rows = run(lambda: using(storage, lambda s: _stream_rows(s, limit)))
    print_rows(
        rows,
        ["stream", "version", "events", "last event at"],
        as_json=as_json,
        title=storage.name,
        empty="no streams yet",
        cells=lambda r: [r["stream_id"], str(r["version"]), str(r["events"]), time_text(r["last"])],
    )


async def _stream_rows(storage: Storage, limit: int) -> list[dict[str, Any]]:
    from sqlalchemy import func, select

    from eventfold.adapters.sql.schema import events

    query = (
        select(
            events.c.stream_id,
            func.max(events.c.version).label("version"),
            func.count().label("events"),
            func.max(events.c.occurred_at).label("last"),
        )
        .group_by(events.c.stream_id)
        .order_by(events.c.stream_id)
        .limit(limit)
    )
    async with storage.transaction() as session:
        return await sql(session, query)


@app.command("show")
def streams_show(
    stream_id: str, database_url: DatabaseUrl = None, as_json: JsonOption = False
) -> None:
    """The events of one stream: version, type, time, metadata and payload."""
    with reported():
        storage = open_storage(database_url)
    stored = run(lambda: using(storage, lambda s: _read_stream(s, stream_id)))
    if not stored:
        raise fail(f"no stream {stream_id!r} in {storage.name}")
    if as_json:
        sys.stdout.write(json.dumps([_describe(event) for event in stored]) + "\n")
        return
    out.rule(f"{stream_id} ({len(stored)} events)")
    for event in stored:
        # One block per event: payloads are too wide for a table column.
        out.print(
            f"[bold]v{event.version}[/bold] {event.type_name} (schema v{event.schema_version}) "
            f"at {time_text(event.occurred_at)}  actor={event.actor or '-'}  "
            f"correlation={event.correlation_id or '-'}",
            highlight=False,
        )
        out.print_json(event.data, indent=None)


async def _read_stream(storage: Storage, stream_id: str) -> list[StoredEvent]:
    async with storage.transaction() as session:
        return list(await session.read_stream(stream_id))


def _describe(event: StoredEvent) -> dict[str, Any]:
    return {
        "stream_id": event.stream_id,
        "version": event.version,
        "position": event.position,
        "event_id": str(event.event_id),
        "type": event.type_name,
        "schema_version": event.schema_version,
        "occurred_at": event.occurred_at.isoformat(),
        "correlation_id": event.correlation_id,
        "causation_id": event.causation_id,
        "actor": event.actor,
        "data": json.loads(event.data),
    }
