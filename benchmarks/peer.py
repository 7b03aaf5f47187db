"""The peer: ``eventsourcing`` (pinned in the ``bench`` extra) doing the same work.

Its ``Application`` and ``Aggregate`` with the library's defaults (JSON transcoder,
UUID aggregate ids, no snapshots, no cache), on its own persistence modules:
``eventsourcing.sqlite`` (WAL, SQLite's default ``synchronous=FULL``) on a database file
of its own, and ``eventsourcing.postgres`` (psycopg 3, its own connection pool) on a
schema of its own in the same database. Its calls block, so they are made directly on
the event loop - the fastest way to drive it from a sequential benchmark - and from
threads where writers must run concurrently (workload 6).

It writes no outbox row: its events table is also its notification log. eventfold
writes an outbox row per event as well (relay to a broker), which the ratios include.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlparse

import asyncpg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from benchmarks.backends import Backend
from benchmarks.raw import remove_database_files


class EsAccount(Aggregate):
    """The workloads' bank account as an eventsourcing aggregate."""

    @event("Opened")
    def __init__(self, account_id: str, owner: str, currency: str) -> None:
        self.account_id = account_id
        self.owner = owner
        self.currency = currency
        self.balance = 0
        self.deposits = 0

    @event("Deposited")
    def deposit(self, amount: int, reference: str) -> None:
        """Money paid in."""
        self.balance += amount
        self.deposits += 1


class Bank(Application[uuid.UUID]):
    """The application a user of eventsourcing writes: one method per command."""

    def open_account(self, account_id: str, owner: str) -> uuid.UUID:
        """Create an account and save it (one event)."""
        account = EsAccount(account_id, owner, "EUR")
        self.save(account)
        return account.id


def _postgres_env(dsn: str, schema: str) -> dict[str, str]:
    url = urlparse(dsn)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
        "POSTGRES_HOST": url.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password or "",
        "POSTGRES_SCHEMA": schema,
    }


@asynccontextmanager
async def eventsourcing_app(backend: Backend) -> AsyncIterator[Bank]:
    """A new :class:`Bank` on a fresh database file or schema, removed afterwards."""
    if backend.name == "sqlite":
        path = backend.workdir / f"es-{uuid.uuid4().hex[:8]}.db"
        app = Bank(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})
        try:
            yield app
        finally:
            app.close()
            remove_database_files(path)
        return
    schema = f"bench_es_{uuid.uuid4().hex[:10]}"
    connection = await asyncpg.connect(backend.dsn)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
        app = Bank(env=_postgres_env(backend.dsn, schema))
        try:
            yield app
        finally:
            app.close()
    finally:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()


def read_page(app: Bank, after: int, limit: int) -> tuple[int, list[Any]]:
    """One page of the notification log after ``after``, decoded; (last id, events)."""
    notifications = app.recorder.select_notifications(after + 1, limit)
    to_domain_event = app.mapper.to_domain_event
    events = [to_domain_event(notification) for notification in notifications]
    return (notifications[-1].id if notifications else after), events
