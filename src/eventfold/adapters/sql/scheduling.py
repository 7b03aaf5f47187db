"""Scheduled messages on SQLite and PostgreSQL: the ``eventfold_schedules`` table.

The statements are SQLAlchemy Core, run through the session's ``execute_sql``, so both
backends share them. Competing workers claim safely on each: on PostgreSQL the claim's
``SELECT ... FOR UPDATE SKIP LOCKED`` lets workers pass over each other's rows; on
SQLite the claim's ``UPDATE`` takes the database's single write lock, so claims run one
after another. A claim is a lease (``claimed_until``): a worker that dies leaves its
messages to be claimed again once the lease has passed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from eventfold.adapters.sql.schema import schedules
from eventfold.errors import ConfigurationError
from eventfold.ports.scheduling import ClaimedMessage, ScheduledMessage
from eventfold.ports.storage import Storage, StorageSession

__all__ = ["SqlScheduleStore", "create_sql_schedule_store"]

_t = schedules.c


def _message(row: dict[str, Any]) -> ScheduledMessage:
    return ScheduledMessage(
        schedule_id=row["schedule_id"],
        message_id=UUID(row["message_id"]),
        name=row["name"],
        payload=row["payload"],
        due_at=row["due_at"],
        key=row["key"],
    )


class SqlScheduleStore:
    """:class:`~eventfold.ports.ScheduleStore` over a SQLite or PostgreSQL storage."""

    def __init__(self, storage: Storage, dialect: Literal["postgresql", "sqlite"]) -> None:
        self._storage = storage
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    async def schedule(
        self, session: StorageSession, messages: Sequence[ScheduledMessage], *, now: datetime
    ) -> None:
        """Add ``messages`` in ``session``'s transaction; ids already there are kept."""
        if not messages:
            return
        rows = [
            {
                "schedule_id": m.schedule_id,
                "message_id": str(m.message_id),
                "name": m.name,
                "payload": m.payload,
                "key": m.key,
                "due_at": m.due_at,
                "created_at": now,
            }
            for m in messages
        ]
        statement = self._insert(schedules).values(rows).on_conflict_do_nothing()
        await _sql(session, statement)

    async def cancel(
        self,
        session: StorageSession,
        *,
        schedule_ids: Collection[str] | None = None,
        key: str | None = None,
    ) -> int:
        """Cancel messages not yet fired (by id, or all of ``key``); how many."""
        statement = delete(schedules).where(_t.fired_at.is_(None))
        if schedule_ids is not None:
            statement = statement.where(_t.schedule_id.in_(list(schedule_ids)))
        if key is not None:
            statement = statement.where(_t.key == key)
        rows = await _sql(session, statement.returning(_t.schedule_id))
        return len(rows)

    async def claim_due(
        self, *, now: datetime, until: datetime, owner: str, limit: int
    ) -> list[ClaimedMessage]:
        """Claim up to ``limit`` due messages nobody holds, until ``until``."""
        due = (
            select(_t.schedule_id)
            .where(
                _t.fired_at.is_(None),
                _t.due_at <= now,
                or_(_t.claimed_until.is_(None), _t.claimed_until < now),
            )
            .order_by(_t.due_at, _t.schedule_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claim = (
            update(schedules)
            .where(_t.schedule_id.in_(due.scalar_subquery()))
            .values(claimed_by=owner, claimed_until=until, attempts=_t.attempts + 1)
            .returning(*schedules.c)
        )
        async with self._storage.transaction() as session:
            rows = await _sql(session, claim)
        claimed = [ClaimedMessage(_message(r), r["attempts"], until) for r in rows]
        return sorted(claimed, key=lambda c: (c.message.due_at, c.message.schedule_id))

    async def mark_fired(self, schedule_id: str, *, owner: str, at: datetime) -> bool:
        """Record a claimed message delivered; False if ``owner`` lost its claim."""
        statement = (
            update(schedules)
            .where(_t.schedule_id == schedule_id, _t.claimed_by == owner, _t.fired_at.is_(None))
            .values(fired_at=at, claimed_by=None, claimed_until=None, last_error=None)
            .returning(_t.schedule_id)
        )
        async with self._storage.transaction() as session:
            return bool(await _sql(session, statement))

    async def record_failure(
        self, schedule_id: str, *, owner: str, error: str, retry_at: datetime
    ) -> None:
        """Record a failed delivery; the message is due again at ``retry_at``."""
        # The claim stays, lasting until the retry: no worker takes the message before.
        statement = (
            update(schedules)
            .where(_t.schedule_id == schedule_id, _t.claimed_by == owner)
            .values(claimed_until=retry_at, last_error=error[:2000])
            .returning(_t.schedule_id)
        )
        async with self._storage.transaction() as session:
            await _sql(session, statement)

    async def pending(self, *, key: str | None = None, limit: int = 100) -> list[ScheduledMessage]:
        """Messages not yet fired (of ``key``, or all), soonest due first."""
        query = select(schedules).where(_t.fired_at.is_(None))
        if key is not None:
            query = query.where(_t.key == key)
        query = query.order_by(_t.due_at, _t.schedule_id).limit(limit)
        async with self._storage.transaction() as session:
            return [_message(row) for row in await _sql(session, query)]


async def _sql(session: StorageSession, statement: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await session.execute_sql(statement)  # type: ignore[attr-defined]
    return rows


def create_sql_schedule_store(storage: Storage) -> SqlScheduleStore:
    """The schedule store of a SQLite or PostgreSQL storage."""
    from eventfold.adapters.sqlite.storage import SqliteStorage  # noqa: PLC0415 - no driver

    if isinstance(storage, SqliteStorage):
        return SqlScheduleStore(storage, "sqlite")
    from eventfold.adapters.postgres.storage import PostgresStorage  # noqa: PLC0415 - asyncpg

    if isinstance(storage, PostgresStorage):
        return SqlScheduleStore(storage, "postgresql")
    msg = f"no SQL schedule store for {type(storage).__qualname__}"
    raise ConfigurationError(msg)
