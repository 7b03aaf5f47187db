"""Live readers wake up through LISTEN/NOTIFY when events commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from eventfold.adapters.postgres import PostgresStorage, create_postgres_storage
from eventfold.testing.contracts.storage import event_record
from tests.conftest import POSTGRES_DSN, require_service, unique_name

pytestmark = pytest.mark.postgres

WAKE_WITHIN = 30.0
"""Seconds a woken reader may take: a bound against hanging, not a measure."""

QUIET = 0.3
"""Seconds to wait when nothing should wake the reader."""


async def make_storage(schemas: list[str]) -> PostgresStorage:
    schema = unique_name("ef")
    schemas.append(schema)
    storage = create_postgres_storage(POSTGRES_DSN, schema=schema)
    await storage.create_schema()
    return storage


@pytest.fixture
async def storages() -> AsyncIterator[tuple[PostgresStorage, PostgresStorage]]:
    """Two storages on two schemas of one database."""
    require_service("postgres")
    schemas: list[str] = []
    first, second = await make_storage(schemas), await make_storage(schemas)
    yield first, second
    await first.close()
    await second.close()
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        for schema in schemas:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def listening(storage: PostgresStorage) -> None:
    """Start listening and take the wake-up every new listener gets."""
    assert await storage.wait_for_events(WAKE_WITHIN) is True


async def test_a_waiting_reader_wakes_when_events_commit(
    storages: tuple[PostgresStorage, PostgresStorage],
) -> None:
    storage, _ = storages
    await listening(storage)
    waiter = asyncio.create_task(storage.wait_for_events(WAKE_WITHIN))
    async with storage.transaction() as session:
        await session.append("thing-1", [event_record()], expected_version=0)
    assert await waiter is True


async def test_waiting_without_new_events_times_out_with_false(
    storages: tuple[PostgresStorage, PostgresStorage],
) -> None:
    storage, _ = storages
    await listening(storage)
    assert await storage.wait_for_events(QUIET) is False


async def test_a_rolled_back_append_wakes_nobody(
    storages: tuple[PostgresStorage, PostgresStorage],
) -> None:
    storage, _ = storages
    await listening(storage)

    async def rolled_back() -> None:
        async with storage.transaction() as session:
            await session.append("thing-1", [event_record()], expected_version=0)
            raise RuntimeError

    with pytest.raises(RuntimeError):
        await rolled_back()
    assert await storage.wait_for_events(QUIET) is False


async def test_appends_to_another_schema_do_not_wake_the_reader(
    storages: tuple[PostgresStorage, PostgresStorage],
) -> None:
    storage, other = storages
    await listening(storage)
    async with other.transaction() as session:
        await session.append("thing-1", [event_record()], expected_version=0)
    assert await storage.wait_for_events(QUIET) is False


async def test_events_committed_while_the_reader_was_busy_wake_its_next_wait(
    storages: tuple[PostgresStorage, PostgresStorage],
) -> None:
    storage, _ = storages
    await listening(storage)
    async with storage.transaction() as session:
        await session.append("thing-1", [event_record()], expected_version=0)
    assert await storage.wait_for_events(WAKE_WITHIN) is True


async def test_commits_in_quick_succession_each_wake_a_reader_that_waits_again(
    storages: tuple[PostgresStorage, PostgresStorage],
) -> None:
    # Notifications are coalesced: the second commit falls in the quiet interval after
    # the first one's notification, and must still be announced when it ends.
    storage, _ = storages
    await listening(storage)
    for n in (1, 2):
        async with storage.transaction() as session:
            await session.append("thing-1", [event_record(n=n)], expected_version=n - 1)
        assert await storage.wait_for_events(WAKE_WITHIN) is True


async def test_a_listener_closed_while_listen_starts_leaves_no_connection_open() -> None:
    require_service("postgres")
    from eventfold.adapters.postgres.listener import EventListener  # noqa: PLC0415

    listening = asyncio.Event()

    class SlowListen(asyncpg.Connection):  # type: ignore[misc]
        async def add_listener(self, *_: object) -> None:
            listening.set()
            await asyncio.Event().wait()  # LISTEN never answers: the reader gives up first

    opened: list[asyncpg.Connection] = []

    async def connect() -> asyncpg.Connection:
        opened.append(await asyncpg.connect(POSTGRES_DSN, connection_class=SlowListen))
        return opened[-1]

    listener = EventListener(connect, "public", "postgres")
    waiting = asyncio.create_task(listener.wait(WAKE_WITHIN))
    await asyncio.wait_for(listening.wait(), WAKE_WITHIN)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await listener.close()
    assert [connection.is_closed() for connection in opened] == [True]
