"""Fresh eventfold storages and fresh raw stores, one per repetition, removed afterwards."""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateTable

from benchmarks.raw import RawPostgres, RawSqlite, remove_database_files

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"

# Used only until the eventfold SQLite adapter can be asked; replaced by what it reports.
_FALLBACK_SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "2"}


@dataclass
class Backend:
    """One database kind: how to make fresh eventfold storages and raw stores for it."""

    name: str
    dsn: str = DEFAULT_DSN
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="eventfold-bench-")))
    sqlite_pragmas: dict[str, str] = field(default_factory=dict)

    @asynccontextmanager
    async def eventfold(self, user_tables: Sequence[Table] = ()) -> AsyncIterator[Any]:
        """A new eventfold storage with its tables (and ``user_tables``); dropped afterwards.

        A user's own tables are created the way an application's migrations would, with
        the driver, since ``execute_sql`` runs DML only.
        """
        if self.name == "sqlite":
            from eventfold.adapters.sqlite import create_sqlite_storage  # noqa: PLC0415 - optional backend

            path = self.workdir / f"ef-{uuid.uuid4().hex[:8]}.db"
            storage = create_sqlite_storage(path)
            try:
                await storage.create_schema()
                _create_sqlite_tables(path, user_tables)
                yield storage
            finally:
                await storage.close()
                remove_database_files(path)
            return
        from eventfold.adapters.postgres import create_postgres_storage  # noqa: PLC0415

        schema = f"bench_ef_{uuid.uuid4().hex[:10]}"
        storage = create_postgres_storage(self.dsn, schema=schema)
        try:
            await storage.create_schema()
            await _create_postgres_tables(self.dsn, schema, user_tables)
            yield storage
        finally:
            await storage.close()
            await _drop_schema(self.dsn, schema)

    @asynccontextmanager
    async def raw(self) -> AsyncIterator[Any]:
        """A new raw store (asyncpg or aiosqlite) with the same tables; dropped afterwards."""
        store: RawPostgres | RawSqlite
        if self.name == "sqlite":
            pragmas = self.sqlite_pragmas or _FALLBACK_SQLITE_PRAGMAS
            store = RawSqlite(self.workdir / f"raw-{uuid.uuid4().hex[:8]}.db", pragmas)
        else:
            store = RawPostgres(self.dsn)
        await store.open()
        try:
            yield store
        finally:
            await store.close()

    async def discover_sqlite_pragmas(self) -> dict[str, str]:
        """Ask an eventfold SQLite storage which journal mode and sync level it runs with.

        Measured rather than copied, so the raw side follows the adapter if it changes.
        """
        async with self.eventfold() as storage, storage.transaction() as session:
            pragmas = {}
            for name in ("journal_mode", "synchronous"):
                rows = await session.execute_sql(text(f"PRAGMA {name}"))
                pragmas[name] = str(next(iter(rows[0].values())))
        self.sqlite_pragmas = pragmas
        return pragmas


def _create_sqlite_tables(path: Path, tables: Sequence[Table]) -> None:
    if not tables:
        return
    db = sqlite3.connect(path)
    try:
        for table in tables:
            db.execute(str(CreateTable(table).compile(dialect=sqlite.dialect())))
        db.commit()
    finally:
        db.close()


async def _create_postgres_tables(dsn: str, schema: str, tables: Sequence[Table]) -> None:
    if not tables:
        return
    connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        for table in tables:
            await connection.execute(str(CreateTable(table).compile(dialect=postgresql.dialect())))
    finally:
        await connection.close()


async def _drop_schema(dsn: str, schema: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()
