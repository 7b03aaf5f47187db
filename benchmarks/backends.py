"""Fresh eventfold storages and fresh raw stores, one per repetition, removed afterwards."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text

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
    async def eventfold(self) -> AsyncIterator[Any]:
        """A new eventfold storage with its tables created; dropped afterwards."""
        if self.name == "sqlite":
            from eventfold.adapters.sqlite import create_sqlite_storage  # noqa: PLC0415 - optional backend

            path = self.workdir / f"ef-{uuid.uuid4().hex[:8]}.db"
            storage = create_sqlite_storage(path)
            try:
                await storage.create_schema()
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


async def _drop_schema(dsn: str, schema: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()
