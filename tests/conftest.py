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

from eventfold.testing import fresh_storage
from tests.support.held_transaction import HeldTransaction
from tests.support.postgres import POSTGRES_DSN, dsn_of, other_database

# The storage fixtures (memory_storage, sqlite_storage, postgres_storage, sql_storage,
# any_storage), the mediator and the broker come from eventfold's own pytest plugin, as
# they do in a user's project; listed here too so the suite runs from a source tree.
pytest_plugins = ["eventfold.testing.plugin"]

IN_CI = os.environ.get("CI", "").lower() == "true"
RUN_ID = uuid.uuid4().hex[:8]

REDIS_URL = os.environ.get("EVENTFOLD_TEST_REDIS", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("EVENTFOLD_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
NATS_URL = os.environ.get("EVENTFOLD_TEST_NATS", "nats://127.0.0.1:4222")

_SERVICES = {
    "postgres": ("127.0.0.1", 5432),
    "redis": ("127.0.0.1", 6379),
    "rabbitmq": ("127.0.0.1", 5672),
    "nats": ("127.0.0.1", 4222),
}


# -- a transaction held open for the whole run -------------------------------------------

HOLD_TRANSACTION = os.environ.get("EVENTFOLD_TEST_HOLD_TRANSACTION", "") == "1"
_held: list[HeldTransaction] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Open a transaction in another database, when asked to and PostgreSQL answers."""
    if HOLD_TRANSACTION and _reachable(*_SERVICES["postgres"]):
        held = HeldTransaction(dsn_of(other_database()))
        _held.append(held)
        try:
            held.start()
        except Exception:
            if IN_CI:
                raise
            # Outside CI a server that does not let us hold one only loses the proof.


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """End the held transaction: never left behind after the run."""
    for held in _held:
        held.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say whether the run held a transaction open, and whether it stayed open throughout."""
    for held in _held:
        if held.error is not None:
            terminalreporter.write_line(f"no transaction could be held open: {held.error}")
            continue
        state = "throughout" if held.still_open_at_stop else "but it ENDED EARLY"
        terminalreporter.write_line(
            f"a transaction (id {held.xid}) was open in database {other_database()!r} "
            f"for the whole run, {state}"
        )


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
    if backend == "postgres":
        require_service("postgres")
    async with fresh_storage(backend, directory=directory, postgres_dsn=POSTGRES_DSN) as storage:
        yield storage


async def drop_schema(schema: str) -> None:
    """Drop a PostgreSQL schema a test created."""
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def eventfold_postgres_dsn() -> str:
    """The plugin's PostgreSQL: this machine's server, which CI requires (never skipped)."""
    require_service("postgres")
    return POSTGRES_DSN
