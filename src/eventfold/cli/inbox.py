"""``eventfold inbox``: what each handler has processed, and forgetting old entries."""

from __future__ import annotations

from datetime import UTC, datetime
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
    using,
)

if TYPE_CHECKING:
    from eventfold.ports import Storage

__all__ = ["app"]

app = typer.Typer(help="The inbox: which events each handler has processed.", no_args_is_help=True)


@app.command("status")
def inbox_status(database_url: DatabaseUrl = None, as_json: JsonOption = False) -> None:
    """Per handler: how many events it processed, the oldest and the latest."""
    with reported():
        storage = open_storage(database_url)
    rows = run(lambda: using(storage, _handler_rows))
    print_rows(
        rows,
        ["handler_name", "processed", "oldest", "latest"],
        as_json=as_json,
        title=storage.name,
        empty="the inbox is empty",
    )


async def _handler_rows(storage: Storage) -> list[dict[str, Any]]:
    from sqlalchemy import func, select

    from eventfold.adapters.sql.schema import inbox

    query = (
        select(
            inbox.c.handler_name,
            func.count().label("processed"),
            func.min(inbox.c.processed_at).label("oldest"),
            func.max(inbox.c.processed_at).label("latest"),
        )
        .group_by(inbox.c.handler_name)
        .order_by(inbox.c.handler_name)
    )
    async with storage.transaction() as session:
        return await sql(session, query)


@app.command("purge")
def inbox_purge(
    older_than: Annotated[
        str,
        typer.Option("--older-than", help="Age of entries to forget: 30m, 12h, 7d, 1d12h."),
    ],
    database_url: DatabaseUrl = None,
) -> None:
    """Forget entries processed longer ago than --older-than.

    A redelivery older than that is no longer recognised as a duplicate: keep entries
    for longer than the broker may redeliver a message.
    """
    from eventfold.cli_outbox import parse_duration

    age = parse_duration(older_than)
    if age is None:
        raise fail(f"--older-than {older_than!r} is not a duration such as 30m, 12h, 7d", code=2)
    cutoff = datetime.now(UTC) - age
    with reported():
        storage = open_storage(database_url)
    count = run(lambda: using(storage, lambda s: _purge(s, cutoff)))
    before = cutoff.isoformat(timespec="seconds")
    out.print(f"purged {count} inbox entr{'y' if count == 1 else 'ies'} processed before {before}")


async def _purge(storage: Storage, cutoff: datetime) -> int:
    async with storage.transaction() as session:
        return await session.purge_processed(cutoff)
