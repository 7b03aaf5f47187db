"""PostgreSQL helpers for tests: other databases and roles, transactions held open."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

POSTGRES_DSN = os.environ.get(
    "EVENTFOLD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
"""The database the tests write to."""


def dsn_of(database: str, *, user: str | None = None) -> str:
    """The test server's DSN for another database (and, optionally, another role)."""
    parts = urlsplit(POSTGRES_DSN)
    netloc = parts.netloc if user is None else f"{user}@{parts.netloc.rsplit('@', 1)[-1]}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}"))


@asynccontextmanager
async def open_transaction(dsn: str, *statements: str) -> AsyncIterator[asyncpg.Connection]:
    """A transaction that holds a transaction id (and runs ``statements``) until the block ends."""
    connection = await asyncpg.connect(dsn, server_settings={"application_name": "held-open"})
    try:
        await connection.execute("BEGIN")
        await connection.execute("SELECT pg_current_xact_id()")
        for statement in statements:
            await connection.execute(statement)
        yield connection
    finally:
        await connection.close()  # the server rolls the transaction back


def other_database() -> str:
    """A database of the test server other than the one the tests write to."""
    return "root" if urlsplit(POSTGRES_DSN).path.lstrip("/") == "postgres" else "postgres"
