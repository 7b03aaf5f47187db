"""One fixture per storage backend; contract modules pick the backend they run on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import POSTGRES_DSN, require_service, unique_name


@pytest.fixture
async def memory_storage() -> AsyncIterator[Any]:
    """A fresh in-memory storage."""
    from eventfold.adapters.memory import create_memory_storage

    storage = create_memory_storage()
    await storage.create_schema()
    yield storage
    await storage.close()


@pytest.fixture
async def sqlite_storage(tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh SQLite database file in the test's own directory."""
    from eventfold.adapters.sqlite import create_sqlite_storage

    storage = create_sqlite_storage(tmp_path / "eventfold.db")
    await storage.create_schema()
    yield storage
    await storage.close()


@pytest.fixture
async def postgres_storage() -> AsyncIterator[Any]:
    """A PostgreSQL storage in a schema of its own, dropped afterwards."""
    require_service("postgres")
    import asyncpg

    from eventfold.adapters.postgres import create_postgres_storage

    schema = unique_name("ef")
    storage = create_postgres_storage(POSTGRES_DSN, schema=schema)
    await storage.create_schema()
    yield storage
    await storage.close()
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()
