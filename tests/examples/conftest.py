"""Database URLs for the shop's tests: a SQLite file of the test's own, or a fresh schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import POSTGRES_DSN, require_service, unique_name


async def drop_postgres_schema(schema: str) -> None:
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A URL to an empty database: each SQL backend in turn, removed afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shop.db'}"
        return
    require_service("postgres")
    schema = unique_name("shop")
    yield f"{POSTGRES_DSN}?schema={schema}"
    await drop_postgres_schema(schema)
