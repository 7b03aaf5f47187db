"""A fresh storage on each backend for one test: made empty, removed afterwards."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

__all__ = ["BACKENDS", "fresh_storage"]

BACKENDS = ("memory", "sqlite", "postgres")


@asynccontextmanager
async def fresh_storage(
    backend: str, *, directory: Path | None = None, postgres_dsn: str | None = None
) -> AsyncIterator[Any]:
    """An empty storage of ``backend`` with eventfold's tables, closed and removed afterwards.

    SQLite needs a ``directory`` for its file; PostgreSQL a ``postgres_dsn``, and gets a
    schema no one else uses, dropped on the way out.
    """
    schema: str | None = None
    if backend == "memory":
        from eventfold.adapters.memory import create_memory_storage  # noqa: PLC0415

        storage: Any = create_memory_storage()
    elif backend == "sqlite":
        from eventfold.adapters.sqlite import create_sqlite_storage  # noqa: PLC0415

        if directory is None:
            msg = "a SQLite storage for a test needs a directory for its file"
            raise ValueError(msg)
        storage = create_sqlite_storage(directory / "eventfold.db")
    elif backend == "postgres":
        from eventfold.adapters.postgres import create_postgres_storage  # noqa: PLC0415

        if postgres_dsn is None:
            msg = "a PostgreSQL storage for a test needs a DSN"
            raise ValueError(msg)
        schema = f"eventfold_test_{uuid.uuid4().hex[:12]}"
        storage = create_postgres_storage(postgres_dsn, schema=schema)
    else:
        msg = f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}"
        raise ValueError(msg)
    await storage.create_schema()
    try:
        yield storage
    finally:
        await storage.close()
        if schema is not None and postgres_dsn is not None:
            await _drop_schema(postgres_dsn, schema)


async def _drop_schema(dsn: str, schema: str) -> None:
    import asyncpg  # noqa: PLC0415 - the postgres extra may not be installed

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()
