"""The outbox relay's store on PostgreSQL: competing relays with ``FOR UPDATE SKIP LOCKED``.

A claim is one transaction: it locks the due rows it hands out, the relay publishes
them while the transaction stays open, and what the relay recorded commits with it.
Holding the transaction is the simplest design that stays correct when a relay dies:
the server ends a dead client's transaction and its locks with it, so the rows are due
again at once, with no lease to expire and no clock to trust. The cost is one open
transaction (and connection) per relay for the length of one publish, which the
relay's ``publish_timeout`` bounds.

Per-aggregate order across relays: a row is handed out only when every earlier
unpublished, live row of its aggregate is in the same claim. A row another relay
holds is still unpublished in everyone else's snapshot until that relay commits, so
no relay can overtake it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from eventfold.adapters.postgres.session import PostgresSession, _outbox_entry
from eventfold.adapters.postgres.storage import PostgresStorage
from eventfold.ports.outbox import OutboxStats
from eventfold.ports.records import OutboxEntry

__all__ = ["PostgresOutboxClaim", "PostgresOutboxStore", "create_postgres_outbox_store"]

_COLUMNS = (
    "id, event_id, type_name, schema_version, aggregate_type, aggregate_id, data::text, "
    "occurred_at, correlation_id, causation_id, actor, created_at, attempts, "
    "next_attempt_at, published_at, last_error, dead, refusals, traceparent"
)
"""In the order ``_outbox_entry`` unpacks."""

# $1 limit, $2 now. `claimed` locks due rows, skipping those another relay holds;
# `blocked` finds, per claimed aggregate, its first pending row this claim does not
# hold (held elsewhere, or not due yet); claimed rows from there on are left alone.
# Only rows below the highest claimed id can block one, which keeps the scan short.
CLAIM = f"""
WITH claimed AS (
    SELECT {_COLUMNS} FROM eventfold_outbox
    WHERE published_at IS NULL AND NOT dead
      AND (next_attempt_at IS NULL OR next_attempt_at <= $2)
    ORDER BY id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
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

# The claim's best plan depends on what the outbox holds and on what other relays have
# locked, both of which change all the time: a generic plan cached when the outbox was
# empty (PostgreSQL switches to one after five executions of a prepared statement) can
# cost orders of magnitude more once it is full. Planning a claim afresh costs well
# under a millisecond per batch; its transaction-local setting leaves every other
# statement's plan cache alone.
CUSTOM_PLANS = "SET LOCAL plan_cache_mode = force_custom_plan"

MARK_PUBLISHED = "UPDATE eventfold_outbox SET published_at = $2 WHERE id = ANY($1::bigint[])"

RECORD_FAILURE = """
UPDATE eventfold_outbox
SET attempts = attempts + 1, refusals = refusals + $5, last_error = $2,
    next_attempt_at = $3, dead = $4
WHERE id = $1
"""

# Dead rows are never published, so the partial index on pending rows serves all three.
STATS = """
SELECT count(*) FILTER (WHERE NOT dead), min(created_at) FILTER (WHERE NOT dead),
       count(*) FILTER (WHERE dead)
FROM eventfold_outbox WHERE published_at IS NULL
"""

READ_DEAD = f"""
SELECT {_COLUMNS} FROM eventfold_outbox
WHERE published_at IS NULL AND dead AND id > $2 ORDER BY id LIMIT $1
"""

LOAD_ENTRY = f"SELECT {_COLUMNS} FROM eventfold_outbox WHERE id = $1"

_REQUEUED = "dead = false, attempts = 0, refusals = 0, next_attempt_at = NULL"
REQUEUE = f"UPDATE eventfold_outbox SET {_REQUEUED} WHERE dead AND id = ANY($1::bigint[])"
REQUEUE_ALL = f"UPDATE eventfold_outbox SET {_REQUEUED} WHERE dead"

PURGE_PUBLISHED = "DELETE FROM eventfold_outbox WHERE published_at < $1"


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


class PostgresOutboxClaim:
    """Rows locked by one open transaction; what is recorded commits with it."""

    __slots__ = ("_entries", "_session")

    def __init__(self, session: PostgresSession, entries: list[OutboxEntry]) -> None:
        self._session = session
        self._entries = entries

    @property
    def entries(self) -> Sequence[OutboxEntry]:
        """The claimed rows, in id order."""
        return self._entries

    async def mark_published(self, entry_ids: Sequence[int], *, at: datetime) -> None:
        """Record these rows as published at ``at``."""
        await self._session._execute(MARK_PUBLISHED, list(entry_ids), at)

    async def record_failure(
        self, entry_id: int, *, error: str, next_attempt_at: datetime, dead: bool, refused: bool
    ) -> None:
        """Count one more attempt, with its error; ``dead`` takes the row out of the relay."""
        await self._session._execute(
            RECORD_FAILURE, entry_id, error, next_attempt_at, dead, int(refused)
        )


class PostgresOutboxStore:
    """:class:`~eventfold.ports.OutboxRelayStore` on PostgreSQL; relays may compete."""

    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage

    @asynccontextmanager
    async def claim(self, *, limit: int, now: datetime) -> AsyncIterator[PostgresOutboxClaim]:
        """Lock up to ``limit`` due rows in a transaction that commits when the block ends."""
        async with self._storage.transaction() as session:
            await session._execute(CUSTOM_PLANS)
            rows = await session._fetch(CLAIM, limit, now)
            yield PostgresOutboxClaim(session, [_outbox_entry(row) for row in rows])

    async def outbox_stats(self) -> OutboxStats:
        """Backlog size, the oldest unpublished row's creation time, dead row count."""
        async with self._storage.transaction() as session:
            backlog, oldest, dead = await session._fetchrow(STATS)
        return OutboxStats(backlog, oldest, dead)

    async def read_dead(self, *, limit: int = 100, after_id: int = 0) -> list[OutboxEntry]:
        """Dead rows with an id above ``after_id``, in id order."""
        async with self._storage.transaction() as session:
            rows = await session._fetch(READ_DEAD, limit, after_id)
        return [_outbox_entry(row) for row in rows]

    async def load_entry(self, entry_id: int) -> OutboxEntry | None:
        """One row, whatever its state, or None."""
        async with self._storage.transaction() as session:
            row = await session._fetchrow(LOAD_ENTRY, entry_id)
        return None if row is None else _outbox_entry(row)

    async def requeue(self, entry_ids: Sequence[int] | None) -> int:
        """Make dead rows (these, or all when None) due again with no attempts; how many."""
        async with self._storage.transaction() as session:
            if entry_ids is None:
                return _count(await session._execute(REQUEUE_ALL))
            return _count(await session._execute(REQUEUE, list(entry_ids)))

    async def purge_published(self, older_than: datetime) -> int:
        """Delete rows published before ``older_than``; return how many."""
        async with self._storage.transaction() as session:
            return _count(await session._execute(PURGE_PUBLISHED, older_than))


def create_postgres_outbox_store(storage: PostgresStorage) -> PostgresOutboxStore:
    """The relay's store for ``storage``; any number of relays may share the database."""
    return PostgresOutboxStore(storage)
