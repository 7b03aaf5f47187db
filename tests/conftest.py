"""Shared fixtures: real services, one isolated namespace per test run."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from eventfold.adapters.memory import create_memory_storage
from eventfold.adapters.postgres import create_postgres_storage
from eventfold.adapters.sqlite import create_sqlite_storage

IN_CI = os.environ.get("CI", "").lower() == "true"
RUN_ID = uuid.uuid4().hex[:8]

POSTGRES_DSN = os.environ.get(
    "EVENTFOLD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("EVENTFOLD_TEST_REDIS", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("EVENTFOLD_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
NATS_URL = os.environ.get("EVENTFOLD_TEST_NATS", "nats://127.0.0.1:4222")

_SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "nats": ("127.0.0.1", 4222),
}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str) -> None:
    """Skip locally, fail in CI, when a service a test needs does not answer."""
    host, port = _SERVICES[name]
    if _reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(message + " (CI=true: service tests must run)")
    pytest.skip(message)


def unique_name(prefix: str) -> str:
    """A name no other test run uses: ``<prefix>_<run>_<random>``."""
    return f"{prefix}_{RUN_ID}_{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def open_storage(backend: str, directory: Path) -> AsyncIterator[Any]:
    """A fresh, empty storage of ``backend`` with its schema, removed afterwards."""
    if backend == "memory":
        storage = create_memory_storage()
    elif backend == "sqlite":
        storage = create_sqlite_storage(directory / "eventfold.db")
    else:
        require_service("postgres")
        schema = unique_name("ef")
        storage = create_postgres_storage(POSTGRES_DSN, schema=schema)
    await storage.create_schema()
    try:
        yield storage
    finally:
        await storage.close()
        if backend == "postgres":
            await drop_schema(schema)


async def drop_schema(schema: str) -> None:
    """Drop a PostgreSQL schema a test created."""
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture
async def memory_storage(tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh in-memory storage."""
    async with open_storage("memory", tmp_path) as storage:
        yield storage


@pytest.fixture
async def sqlite_storage(tmp_path: Path) -> AsyncIterator[Any]:
    """A fresh SQLite database file in the test's own directory."""
    async with open_storage("sqlite", tmp_path) as storage:
        yield storage


@pytest.fixture
async def postgres_storage(tmp_path: Path) -> AsyncIterator[Any]:
    """A PostgreSQL storage in a schema of its own, dropped afterwards."""
    async with open_storage("postgres", tmp_path) as storage:
        yield storage


@pytest.fixture(params=["sqlite", "postgres"])
async def sql_storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Each SQL backend in turn."""
    async with open_storage(request.param, tmp_path) as storage:
        yield storage


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def any_storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Every backend in turn."""
    async with open_storage(request.param, tmp_path) as storage:
        yield storage
