"""The outbox relay's store on SQLite: one relay per database.

A claim reads its rows without holding SQLite's write lock, the relay publishes, and
what it recorded is written in one short transaction when the claim ends: holding the
lock while a broker answers would stall every command of the application. Two relays
on one file could therefore publish the same rows twice (never lose one); run one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from eventfold.adapters.sqlite.session import _OUTBOX_COLUMNS, Db, _outbox_entry, to_text
from eventfold.adapters.sqlite.storage import SqliteStorage
from eventfold.ports.outbox import OutboxStats
from eventfold.ports.records import OutboxEntry

__all__ = ["SqliteOutboxClaim", "SqliteOutboxStore", "create_sqlite_outbox_store"]

T = TypeVar("T")

# ? limit, ? now. The same shape as PostgreSQL's claim, without the row locks: a row is
# handed out only when every earlier pending row of its aggregate is handed out too.
_CLAIM = f"""
WITH claimed AS (
    SELECT {_OUTBOX_COLUMNS} FROM eventfold_outbox
    WHERE published_at IS NULL AND NOT dead
      AND (next_attempt_at IS NULL OR next_attempt_at <= :now)
    ORDER BY id
    LIMIT :limit
), blocked AS (
    SELECT o.aggregate_id, min(o.id) AS first_id
    FROM eventfold_outbox o
    WHERE o.published_at IS NULL AND NOT o.dead
      AND o.aggregate_id IN (SELECT aggregate_id FROM claimed)
      AND o.id < (SELECT max(id) FROM claimed)
      AND o.id NOT IN (SELECT id FROM claimed)
    GROUP BY o.aggregate_id
)
SELECT c.* FROM claimed c
LEFT JOIN blocked b ON b.aggregate_id = c.aggregate_id
WHERE b.first_id IS NULL OR c.id < b.first_id
ORDER BY c.id
"""
_MARK_PUBLISHED = "UPDATE eventfold_outbox SET published_at = ? WHERE id = ?"
_RECORD_FAILURE = (
    "UPDATE eventfold_outbox SET attempts = attempts + 1, refusals = refusals + ?, last_error = ?, "
    "next_attempt_at = ?, dead = ? WHERE id = ?"
)
_STATS = (
    "SELECT count(*) FILTER (WHERE NOT dead), min(created_at) FILTER (WHERE NOT dead), "
    "count(*) FILTER (WHERE dead) FROM eventfold_outbox WHERE published_at IS NULL"
)
_READ_DEAD = (
    f"SELECT {_OUTBOX_COLUMNS} FROM eventfold_outbox "
    "WHERE published_at IS NULL AND dead AND id > ? ORDER BY id LIMIT ?"
)
_LOAD_ENTRY = f"SELECT {_OUTBOX_COLUMNS} FROM eventfold_outbox WHERE id = ?"
_REQUEUE = (
    "UPDATE eventfold_outbox SET dead = 0, attempts = 0, refusals = 0, next_attempt_at = NULL "
    "WHERE dead"
)
_PURGE_PUBLISHED = "DELETE FROM eventfold_outbox WHERE published_at < ?"


class SqliteOutboxClaim:
    """A claimed batch; what is recorded is written when the claim ends cleanly."""

    def __init__(self, entries: list[OutboxEntry]) -> None:
        self._entries = entries
        self.published: list[tuple[str, int]] = []
        self.failures: list[tuple[int, str, str, bool, int]] = []

    @property
    def entries(self) -> Sequence[OutboxEntry]:
        """The claimed rows, in id order."""
        return self._entries

    async def mark_published(self, entry_ids: Sequence[int], *, at: datetime) -> None:
        """Record these rows as published at ``at``."""
        stamp = to_text(at)
        self.published.extend((stamp, entry_id) for entry_id in entry_ids)

    async def record_failure(
        self, entry_id: int, *, error: str, next_attempt_at: datetime, dead: bool, refused: bool
    ) -> None:
        """Count one more attempt, with its error; ``dead`` takes the row out of the relay."""
        self.failures.append((int(refused), error, to_text(next_attempt_at), dead, entry_id))

    def write(self, db: Db) -> None:
        """Apply what was recorded (run inside a write transaction)."""
        db.executemany(_MARK_PUBLISHED, self.published)
        db.executemany(_RECORD_FAILURE, self.failures)


class SqliteOutboxStore:
    """:class:`~eventfold.ports.OutboxRelayStore` on SQLite; run one relay per database."""

    def __init__(self, storage: SqliteStorage) -> None:
        self._storage = storage

    @asynccontextmanager
    async def claim(self, *, limit: int, now: datetime) -> AsyncIterator[SqliteOutboxClaim]:
        """Read up to ``limit`` due rows; what is recorded is written when the block ends."""
        params = {"limit": limit, "now": to_text(now)}
        entries = await self._read(lambda db: _entries(db.execute(_CLAIM, params)))
        claim = SqliteOutboxClaim(entries)
        yield claim
        if claim.published or claim.failures:
            async with self._storage.transaction() as session:
                await session._write(claim.write)

    async def outbox_stats(self) -> OutboxStats:
        """Backlog size, the oldest unpublished row's creation time, dead row count."""
        row = await self._read(lambda db: db.execute(_STATS).fetchone())
        backlog, oldest, dead = row
        return OutboxStats(
            backlog, None if oldest is None else datetime.fromisoformat(oldest), dead
        )

    async def read_dead(self, *, limit: int = 100, after_id: int = 0) -> list[OutboxEntry]:
        """Dead rows with an id above ``after_id``, in id order."""
        return await self._read(lambda db: _entries(db.execute(_READ_DEAD, (after_id, limit))))

    async def load_entry(self, entry_id: int) -> OutboxEntry | None:
        """One row, whatever its state, or None."""
        entries = await self._read(lambda db: _entries(db.execute(_LOAD_ENTRY, (entry_id,))))
        return entries[0] if entries else None

    async def requeue(self, entry_ids: Sequence[int] | None) -> int:
        """Make dead rows (these, or all when None) due again with no attempts; how many."""
        if entry_ids is None:
            return await self._change(lambda db: db.execute(_REQUEUE).rowcount)
        ids = [(entry_id,) for entry_id in entry_ids]
        sql = _REQUEUE + " AND id = ?"
        return await self._change(lambda db: _total(db, sql, ids))

    async def purge_published(self, older_than: datetime) -> int:
        """Delete rows published before ``older_than``; return how many."""
        cutoff = (to_text(older_than),)
        return await self._change(lambda db: db.execute(_PURGE_PUBLISHED, cutoff).rowcount)

    async def _read(self, work: Callable[[Db], T]) -> T:
        async with self._storage.transaction() as session:
            return await session._run(work)

    async def _change(self, work: Callable[[Db], int]) -> int:
        async with self._storage.transaction() as session:
            count: int = await session._write(work)
        return count


def _entries(rows: Any) -> list[OutboxEntry]:
    return [_outbox_entry(tuple(row)) for row in rows]


def _total(db: Db, sql: str, params: list[tuple[int]]) -> int:
    return sum(db.execute(sql, row).rowcount for row in params)


def create_sqlite_outbox_store(storage: SqliteStorage) -> SqliteOutboxStore:
    """The relay's store for ``storage``; run one relay per database."""
    return SqliteOutboxStore(storage)
