"""The raw drivers doing the same database work as eventfold: asyncpg and aiosqlite.

Tables come from eventfold's own SQLAlchemy ``MetaData`` (compiled to DDL for each
dialect), so both sides write the same row shapes into the same indexes. Each method
issues the statements a careful hand-written application would: one transaction per
call, parameters bound, prepared statements cached by the driver.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable

from eventfold.adapters.sql.schema import metadata

EventRow = tuple[str, int, uuid.UUID, str, int, str, datetime]
"""(stream_id, version, event_id, type_name, schema_version, data, occurred_at)."""

OutboxRow = tuple[uuid.UUID, str, int, str, str, str, datetime, datetime]
"""(event_id, type_name, schema_version, aggregate_type, aggregate_id, data, occurred_at,
created_at)."""

_COLUMNS = (
    "position, commit_id, stream_id, version, event_id, type_name, schema_version, data, "
    "occurred_at, correlation_id, causation_id, actor"
)


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
    INSERT_EVENT = (
        "INSERT INTO eventfold_events (commit_id, stream_id, version, event_id, type_name, "
        "schema_version, data, occurred_at) "
        "VALUES (pg_current_xact_id()::text::bigint, $1, $2, $3, $4, $5, $6, $7)"
    )
    INSERT_OUTBOX = (
        "INSERT INTO eventfold_outbox (event_id, type_name, schema_version, aggregate_type, "
        "aggregate_id, data, occurred_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    )
    STREAM_VERSION = "SELECT coalesce(max(version), 0) FROM eventfold_events WHERE stream_id = $1"
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
        """BEGIN; SELECT the stream's version; check; INSERT the events; COMMIT."""
        connection = connection or self.connection
        async with connection.transaction():
            current = await connection.fetchval(self.STREAM_VERSION, stream_id)
            if current != expected:
                raise ConflictError(stream_id)
            if len(events) == 1:
                await connection.execute(self.INSERT_EVENT, *events[0])
            else:
                await connection.executemany(self.INSERT_EVENT, events)
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


class RawSqlite:
    """aiosqlite on a fresh database file, with the pragmas eventfold's adapter uses."""

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
        self.connection: Any = None
        self._extra: list[Any] = []

    async def open(self) -> RawSqlite:
        """Create the file and its tables; open the main connection."""
        self.connection = await self.connect()
        for statement in ddl(sqlite.dialect()):
            await self.connection.execute(statement)
        return self

    async def connect(self) -> Any:
        """One more connection to the file, with the same pragmas."""
        connection = await aiosqlite.connect(self.path, isolation_level=None)
        for name, value in self.pragmas.items():
            await connection.execute(f"PRAGMA {name}={value}")
        self._extra.append(connection)
        return connection

    async def close(self) -> None:
        """Close every connection and delete the files."""
        for connection in self._extra:
            await connection.close()
        remove_database_files(self.path)

    @staticmethod
    def _event(row: EventRow) -> tuple[Any, ...]:
        stream_id, version, event_id, type_name, schema_version, data, occurred_at = row
        return (
            stream_id,
            version,
            str(event_id),
            type_name,
            schema_version,
            data,
            str(occurred_at),
        )

    @staticmethod
    def _outbox(row: OutboxRow) -> tuple[Any, ...]:
        event_id, type_name, version, aggregate_type, aggregate_id, data, occurred, created = row
        return (
            str(event_id),
            type_name,
            version,
            aggregate_type,
            aggregate_id,
            data,
            str(occurred),
            str(created),
        )

    async def create(self, event: EventRow, outbox: OutboxRow) -> None:
        """One command: BEGIN; INSERT event; INSERT outbox row; COMMIT."""
        connection = self.connection
        await connection.execute("BEGIN IMMEDIATE")
        try:
            await connection.execute(self.INSERT_EVENT, self._event(event))
            await connection.execute(self.INSERT_OUTBOX, self._outbox(outbox))
        except BaseException:
            await connection.execute("ROLLBACK")
            raise
        await connection.execute("COMMIT")

    async def append(
        self, stream_id: str, events: Sequence[EventRow], expected: int, connection: Any = None
    ) -> int:
        """BEGIN; SELECT the stream's version; check; INSERT the events; COMMIT."""
        connection = connection or self.connection
        await connection.execute("BEGIN IMMEDIATE")
        try:
            async with connection.execute(self.STREAM_VERSION, (stream_id,)) as cursor:
                (current,) = await cursor.fetchone()
            if current != expected:
                raise ConflictError(stream_id)
            if len(events) == 1:
                await connection.execute(self.INSERT_EVENT, self._event(events[0]))
            else:
                await connection.executemany(self.INSERT_EVENT, [self._event(e) for e in events])
        except BaseException:
            await connection.execute("ROLLBACK")
            raise
        await connection.execute("COMMIT")
        return expected + len(events)

    async def read_stream(self, stream_id: str, from_version: int = 1) -> list[Any]:
        """A stream's rows in version order, in one transaction."""
        connection = self.connection
        await connection.execute("BEGIN")
        try:
            return list(
                await connection.execute_fetchall(self.READ_STREAM, (stream_id, from_version))
            )
        finally:
            await connection.execute("COMMIT")

    async def read_log(self, after: int, limit: int, connection: Any = None) -> list[Any]:
        """One page of the log after ``after`` by position."""
        connection = connection or self.connection
        await connection.execute("BEGIN")
        try:
            return list(await connection.execute_fetchall(self.READ_LOG, (after, limit)))
        finally:
            await connection.execute("COMMIT")


def remove_database_files(path: Path) -> None:
    """Delete an SQLite database and its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
