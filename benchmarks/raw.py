"""The raw drivers doing the same database work as eventfold: asyncpg and sqlite3.

Tables come from eventfold's own SQLAlchemy ``MetaData`` (compiled to DDL for each
dialect), so both sides write the same row shapes into the same indexes. Each method is
what a careful hand-written application would issue: one transaction per call, values
bound, statements prepared once by the driver.

PostgreSQL (asyncpg): an append is one statement that checks the expected version and
inserts the batch (``INSERT ... SELECT ... FROM unnest(...) WHERE head = expected``),
like eventfold's; it omits what eventfold adds for its guarantees (NOTIFY, the per-stream
commit-order guard, the retry of a lost race) - that cost is what the ratio shows.

SQLite (sqlite3): one connection on one thread of its own, and a whole transaction
(BEGIN IMMEDIATE ... COMMIT) runs in a single hop to that thread. That is the fastest
way to drive sqlite3 from asyncio, faster than aiosqlite's hop per statement.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from eventfold.adapters.sql.schema import metadata

T = TypeVar("T")

EventRow = tuple[str, int, uuid.UUID, str, int, str, datetime]
"""(stream_id, version, event_id, type_name, schema_version, data, occurred_at)."""

OutboxRow = tuple[uuid.UUID, str, int, str, str, str, datetime]
"""(event_id, type_name, schema_version, aggregate_type, aggregate_id, data, occurred_at)."""

_COLUMNS = (
    "position, commit_id, stream_id, version, event_id, type_name, schema_version, data, "
    "occurred_at, correlation_id, causation_id, actor"
)
TYPE_NAME, DATA = 5, 7
"""Where a fetched row keeps the type name and the payload."""


class ConflictError(Exception):
    """The raw side's expected-version check failed."""


def ddl(dialect: Any) -> list[str]:
    """CREATE TABLE and CREATE INDEX statements for eventfold's tables in ``dialect``."""
    statements = []
    for table in metadata.sorted_tables:
        statements.append(str(CreateTable(table).compile(dialect=dialect)))
        statements += [str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes]
    return statements


class RawPostgres:
    """asyncpg on its own schema, created from eventfold's MetaData, dropped on close."""

    # commit_id is the writing transaction's id, as eventfold's schema defines it.
    APPEND = """
        INSERT INTO eventfold_events (
            commit_id, stream_id, version, event_id, type_name, schema_version, data,
            occurred_at)
        SELECT pg_current_xact_id()::text::bigint, $1, head.v + e.n, e.event_id, e.type_name,
               e.schema_version, e.data::jsonb, e.occurred_at
        FROM (SELECT coalesce(max(version), 0) AS v FROM eventfold_events
              WHERE stream_id = $1) AS head,
             unnest($3::uuid[], $4::text[], $5::int[], $6::text[], $7::timestamptz[])
                 WITH ORDINALITY AS e(event_id, type_name, schema_version, data, occurred_at, n)
        WHERE head.v = $2
    """
    INSERT_EVENT = (
        "INSERT INTO eventfold_events (commit_id, stream_id, version, event_id, type_name, "
        "schema_version, data, occurred_at) "
        "VALUES (pg_current_xact_id()::text::bigint, $1, $2, $3, $4, $5, $6, $7)"
    )
    INSERT_OUTBOX = (
        "INSERT INTO eventfold_outbox (event_id, type_name, schema_version, aggregate_type, "
        "aggregate_id, data, occurred_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now())"
    )
    READ_STREAM = (
        f"SELECT {_COLUMNS} FROM eventfold_events WHERE stream_id = $1 "
        "AND version >= $2 ORDER BY version"
    )
    # The naive reader: order by the sequence alone. Under concurrent writers a position
    # can commit after a higher one was read, and this reader never goes back for it.
    READ_LOG = (
        f"SELECT {_COLUMNS} FROM eventfold_events WHERE position > $1 ORDER BY position LIMIT $2"
    )

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.schema = f"bench_raw_{uuid.uuid4().hex[:10]}"
        self.connection: Any = None
        self._extra: list[Any] = []

    async def open(self) -> RawPostgres:
        """Create the schema and its tables; open the main connection."""
        self.connection = await asyncpg.connect(
            self.dsn, server_settings={"search_path": self.schema}
        )
        await self.connection.execute(f'CREATE SCHEMA "{self.schema}"')
        for statement in ddl(postgresql.dialect()):
            await self.connection.execute(statement)
        return self

    async def connect(self) -> Any:
        """One more connection on the same schema (for concurrent writers and readers)."""
        connection = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema})
        self._extra.append(connection)
        return connection

    async def close(self) -> None:
        """Drop the schema and close every connection."""
        for connection in self._extra:
            await connection.close()
        await self.connection.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
        await self.connection.close()

    async def create(self, event: EventRow, outbox: OutboxRow) -> None:
        """One command: BEGIN; INSERT event; INSERT outbox row; COMMIT."""
        connection = self.connection
        async with connection.transaction():
            await connection.execute(self.INSERT_EVENT, *event)
            await connection.execute(self.INSERT_OUTBOX, *outbox)

    async def append(
        self, stream_id: str, events: Sequence[EventRow], expected: int, connection: Any = None
    ) -> int:
        """BEGIN; one INSERT that checks the stream's head and inserts the batch; COMMIT."""
        connection = connection or self.connection
        _, _, ids, types, versions, data, times = zip(*events, strict=True)
        async with connection.transaction():
            status = await connection.execute(
                self.APPEND, stream_id, expected, ids, types, versions, data, times
            )
            if int(status.rsplit(" ", 1)[-1]) != len(events):
                raise ConflictError(stream_id)
        return expected + len(events)

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[Any]:
        """A stream's rows in version order, in one transaction."""
        connection = self.connection
        async with connection.transaction():
            return list(await connection.fetch(self.READ_STREAM, stream_id, from_version))

    async def read_log(self, after: int, limit: int, connection: Any = None) -> list[Any]:
        """One page of the log after ``after`` by position alone."""
        connection = connection or self.connection
        async with connection.transaction():
            return list(await connection.fetch(self.READ_LOG, after, limit))

    async def save_snapshot(self, stream_id: str, version: int, state_type: str, data: str) -> None:
        """Keep a stream's snapshot (one row per stream)."""
        await self.connection.execute(
            "INSERT INTO eventfold_snapshots (stream_id, version, state_type, schema_version, "
            "data, taken_at) VALUES ($1, $2, $3, 1, $4, now())",
            stream_id,
            version,
            state_type,
            data,
        )

    async def read_snapshot(self, stream_id: str) -> tuple[Any, list[Any]]:
        """The stream's snapshot row and the events after it, in one transaction."""
        connection = self.connection
        async with connection.transaction():
            snapshot = await connection.fetchrow(
                "SELECT version, data FROM eventfold_snapshots WHERE stream_id = $1", stream_id
            )
            start = snapshot[0] + 1 if snapshot else 1
            return snapshot, list(await connection.fetch(self.READ_STREAM, stream_id, start))


def _text(moment: datetime) -> str:
    # The same text form eventfold's SQLite adapter stores: UTC, fixed width.
    return moment.astimezone(UTC).isoformat(" ", "microseconds")


class RawSqlite:
    """sqlite3 on a fresh file, one connection on one thread, one hop per transaction."""

    INSERT_EVENT = (
        "INSERT INTO eventfold_events (stream_id, version, event_id, type_name, schema_version, "
        "data, occurred_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    INSERT_OUTBOX = (
        "INSERT INTO eventfold_outbox (event_id, type_name, schema_version, aggregate_type, "
        "aggregate_id, data, occurred_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM eventfold_events WHERE stream_id = ?"
    READ_STREAM = (
        f"SELECT {_COLUMNS} FROM eventfold_events WHERE stream_id = ? AND version >= ? "
        "ORDER BY version"
    )
    READ_LOG = (
        f"SELECT {_COLUMNS} FROM eventfold_events WHERE position > ? ORDER BY position LIMIT ?"
    )

    def __init__(self, path: Path, pragmas: dict[str, str]) -> None:
        self.path = path
        self.pragmas = pragmas
        self.db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="raw-sqlite")

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        db = self.db
        assert db is not None
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, db)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for name, value in self.pragmas.items():
            db.execute(f"PRAGMA {name}={value}")
        for statement in ddl(sqlite.dialect()):
            db.execute(statement)
        return db

    async def open(self) -> RawSqlite:
        """Create the file and its tables; open the connection."""
        loop = asyncio.get_running_loop()
        self.db = await loop.run_in_executor(self._thread, self._connect)
        return self

    async def connect(self) -> Any:
        """The same connection: SQLite has one writer at a time, so transactions take turns."""
        return None

    async def close(self) -> None:
        """Close the connection and delete the files."""
        await self._run(lambda db: db.close())
        self._thread.shutdown()
        remove_database_files(self.path)

    async def create(self, event: EventRow, outbox: OutboxRow) -> None:
        """One command: BEGIN; INSERT event; INSERT outbox row; COMMIT."""
        stream_id, version, event_id, type_name, schema_version, data, occurred_at = event
        event_params = (
            stream_id,
            version,
            str(event_id),
            type_name,
            schema_version,
            data,
            _text(occurred_at),
        )
        outbox_params = (str(outbox[0]), *outbox[1:6], _text(outbox[6]), _text(datetime.now(UTC)))

        def work(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(self.INSERT_EVENT, event_params)
                db.execute(self.INSERT_OUTBOX, outbox_params)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        await self._run(work)

    async def append(
        self, stream_id: str, events: Sequence[EventRow], expected: int, connection: Any = None
    ) -> int:
        """BEGIN IMMEDIATE; SELECT the head; check; INSERT the batch; COMMIT."""
        del connection  # one connection: see connect()
        rows = [
            (stream_id, version, str(event_id), type_name, schema_version, data, _text(at))
            for _, version, event_id, type_name, schema_version, data, at in events
        ]

        def work(db: sqlite3.Connection) -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                (current,) = db.execute(self.STREAM_VERSION, (stream_id,)).fetchone()
                if current != expected:
                    raise ConflictError(stream_id)
                if len(rows) == 1:
                    db.execute(self.INSERT_EVENT, rows[0])
                else:
                    db.executemany(self.INSERT_EVENT, rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

        await self._run(work)
        return expected + len(events)

    async def _fetch(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        def work(db: sqlite3.Connection) -> list[Any]:
            db.execute("BEGIN")
            try:
                return db.execute(sql, params).fetchall()
            finally:
                db.execute("COMMIT")

        return await self._run(work)

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[Any]:
        """A stream's rows in version order, in one transaction."""
        return await self._fetch(self.READ_STREAM, (stream_id, from_version))

    async def read_log(self, after: int, limit: int, connection: Any = None) -> list[Any]:
        """One page of the log after ``after`` by position."""
        del connection
        return await self._fetch(self.READ_LOG, (after, limit))

    async def save_snapshot(self, stream_id: str, version: int, state_type: str, data: str) -> None:
        """Keep a stream's snapshot (one row per stream)."""
        params = (stream_id, version, state_type, data, _text(datetime.now(UTC)))
        await self._run(
            lambda db: db.execute(
                "INSERT INTO eventfold_snapshots (stream_id, version, state_type, schema_version, "
                "data, taken_at) VALUES (?, ?, ?, 1, ?, ?)",
                params,
            )
        )

    async def read_snapshot(self, stream_id: str) -> tuple[Any, list[Any]]:
        """The stream's snapshot row and the events after it, in one transaction (one hop)."""

        def work(db: sqlite3.Connection) -> tuple[Any, list[Any]]:
            db.execute("BEGIN")
            try:
                snapshot = db.execute(
                    "SELECT version, data FROM eventfold_snapshots WHERE stream_id = ?",
                    (stream_id,),
                ).fetchone()
                start = snapshot[0] + 1 if snapshot else 1
                return snapshot, db.execute(self.READ_STREAM, (stream_id, start)).fetchall()
            finally:
                db.execute("COMMIT")

        return await self._run(work)


def remove_database_files(path: Path) -> None:
    """Delete an SQLite database and its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
