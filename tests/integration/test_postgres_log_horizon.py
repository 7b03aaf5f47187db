"""Only this store's own writers in flight hold readers of its log back, on any role."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from urllib.parse import urlsplit

import asyncpg
import pytest
from sqlalchemy import text

from eventfold import EventRegistry, ProjectionRunner
from eventfold.adapters.postgres import PostgresStorage, create_postgres_storage
from eventfold.ports import LOG_START, LogPosition, StoredEvent, StreamState
from eventfold.testing.contracts.projections import Balances, Deposited
from eventfold.testing.contracts.storage import event_record
from tests.conftest import POSTGRES_DSN, drop_schema, require_service, unique_name
from tests.integration.test_postgres_global_log import (
    TOTAL,
    read_log_eventually,
    read_while,
    write_concurrently,
)
from tests.support.postgres import dsn_of, open_transaction, other_database

pytestmark = pytest.mark.postgres

READABLE_WITHIN = 10.0
"""Seconds to wait for an event that nothing holds back: a bound, not a measure."""


@asynccontextmanager
async def postgres_storage_in(
    schema: str, dsn: str = POSTGRES_DSN
) -> AsyncIterator[PostgresStorage]:
    storage = create_postgres_storage(dsn, schema=schema, max_size=12)
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture
async def storage() -> AsyncIterator[PostgresStorage]:
    require_service("postgres")
    schema = unique_name("ef")
    async with postgres_storage_in(schema) as storage:
        await storage.create_schema()
        yield storage
    await drop_schema(schema)


async def append_one(storage: PostgresStorage) -> StoredEvent:
    """Append one event to a fresh stream; return it as stored."""
    stream = f"s-{uuid.uuid4().hex[:8]}"
    async with storage.transaction() as session:
        await session.append(stream, [event_record()], expected_version=0)
    async with storage.transaction() as session:
        (stored,) = await session.read_stream(stream)
    return stored


async def readable_soon(storage: PostgresStorage, event: StoredEvent) -> bool:
    """Whether ``event`` becomes readable within READABLE_WITHIN seconds (it may wait for
    readers to look for open writers again, a few milliseconds)."""
    deadline = time.perf_counter() + READABLE_WITHIN
    while time.perf_counter() < deadline:
        if await readable_now(storage, event):
            return True
        await asyncio.sleep(0.001)
    return False


async def readable_now(storage: PostgresStorage, event: StoredEvent) -> bool:
    """Whether one read of the log, right now, returns ``event``."""
    async with storage.transaction() as session:
        page = await session.read_log(after=LOG_START, limit=10_000)
    return event.event_id in {e.event_id for e in page}


async def test_a_transaction_open_in_another_database_does_not_delay_readers(
    storage: PostgresStorage,
) -> None:
    async with open_transaction(dsn_of(other_database())):
        event = await append_one(storage)
        assert await readable_soon(storage, event)


async def test_a_transaction_in_this_database_that_writes_no_events_does_not_delay_readers(
    storage: PostgresStorage,
) -> None:
    async with open_transaction(POSTGRES_DSN, "CREATE TEMPORARY TABLE scratch (n int)"):
        event = await append_one(storage)
        assert await readable_soon(storage, event)


async def test_a_writer_of_another_store_in_this_database_does_not_delay_readers(
    storage: PostgresStorage,
) -> None:
    other_schema = unique_name("ef")
    try:
        async with postgres_storage_in(other_schema) as other:
            await other.create_schema()
            async with other.transaction() as foreign:
                await foreign.append("elsewhere", [event_record()], expected_version=0)
                event = await append_one(storage)
                assert await readable_soon(storage, event)
    finally:
        await drop_schema(other_schema)


async def test_a_writer_that_took_its_id_before_appending_holds_later_events_back_until_it_ends(
    storage: PostgresStorage,
) -> None:
    # The case a horizon narrower than the whole server must get right: the writer's id
    # is older than the event committed meanwhile, so its event comes first in the log.
    has_id, may_append = asyncio.Event(), asyncio.Event()
    early = event_record(n=1)

    async def document_first() -> None:
        async with storage.transaction() as session:
            await session.save_document("notes", "n-1", "{}", expected_version=0)
            has_id.set()
            await may_append.wait()
            await session.append("early", [early], expected_version=0)

    writer = asyncio.create_task(document_first())
    await has_id.wait()
    late = await append_one(storage)
    readable_while_open = await readable_now(storage, late)
    may_append.set()
    await writer
    log = await read_log_eventually(storage, 2)

    assert not readable_while_open
    assert [e.event_id for e in log] == [early.event_id, late.event_id]


async def test_a_writer_that_appends_inside_a_savepoint_holds_later_events_back_until_it_ends(
    storage: PostgresStorage,
) -> None:
    has_id, may_commit = asyncio.Event(), asyncio.Event()

    async def in_savepoint() -> None:
        async with storage.transaction() as session:
            await session.execute_sql(text("SAVEPOINT inner_work"))
            await session.append("inner", [event_record(n=1)], expected_version=0)
            await session.execute_sql(text("RELEASE SAVEPOINT inner_work"))
            has_id.set()
            await may_commit.wait()

    writer = asyncio.create_task(in_savepoint())
    await has_id.wait()
    late = await append_one(storage)
    readable_while_open = await readable_now(storage, late)
    may_commit.set()
    await writer

    assert not readable_while_open
    assert [e.stream_id for e in await read_log_eventually(storage, 2)] == [
        "inner",
        late.stream_id,
    ]


async def test_the_horizon_names_the_writer_that_holds_committed_events_back(
    storage: PostgresStorage,
) -> None:
    has_id, may_end = asyncio.Event(), asyncio.Event()
    blocker_pid: list[int] = []

    async def open_writer() -> None:
        async with storage.transaction() as session:
            rows = await session.execute_sql(text("SELECT pg_backend_pid() AS pid"))
            blocker_pid.append(rows[0]["pid"])
            await session.save_document("notes", "n-1", "{}", expected_version=0)
            has_id.set()
            await may_end.wait()

    writer = asyncio.create_task(open_writer())
    await has_id.wait()
    late = await append_one(storage)
    async with storage.transaction() as session:
        horizon = await session.log_horizon()
    may_end.set()
    await writer

    assert (horizon.readable_head, horizon.committed_head) == (LOG_START, late.log_position)
    assert horizon.unreadable == 1
    assert horizon.blocker is not None
    assert horizon.blocker.pid == blocker_pid[0]
    assert horizon.blocker.database == urlsplit(POSTGRES_DSN).path.lstrip("/")
    assert horizon.blocker.age_seconds is not None
    assert horizon.blocker.age_seconds >= 0


async def test_with_no_writer_in_flight_the_readable_head_is_the_committed_head(
    storage: PostgresStorage,
) -> None:
    async with open_transaction(dsn_of(other_database())):
        event = await append_one(storage)
        async with storage.transaction() as session:
            horizon = await session.log_horizon()
    assert horizon.readable_head == horizon.committed_head == event.log_position
    assert (horizon.unreadable, horizon.blocker) == (0, None)


async def test_readers_page_the_log_without_gaps_while_writers_write_a_document_before_appending(
    storage: PostgresStorage,
) -> None:
    seen: list[StoredEvent] = []
    position = LOG_START

    async def read_page() -> int:
        nonlocal position
        async with storage.transaction() as session:
            page = await session.read_log(after=position, limit=50)
        if page:
            seen.extend(page)
            position = page[-1].log_position
        return len(page)

    async with open_transaction(dsn_of(other_database())):
        writing = asyncio.create_task(write_concurrently(storage, document_first=True))
        await read_while(writing, read_page, lambda: len(seen) >= TOTAL)
    ids = [event.event_id for event in seen]
    assert len(ids) == len(set(ids)) == TOTAL
    assert set(ids) == set(writing.result())


# -- an unprivileged role ------------------------------------------------------------------


@pytest.fixture
async def unprivileged_storage(storage: PostgresStorage) -> AsyncIterator[PostgresStorage]:
    """The same store, opened by a role that is no superuser and owns nothing but rights."""
    role = unique_name("ef_role")
    admin = await asyncpg.connect(POSTGRES_DSN)
    schema = f'"{storage.schema}"'
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB')
        await admin.execute(f'GRANT USAGE ON SCHEMA {schema} TO "{role}"')
        await admin.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO "{role}"')
        await admin.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO "{role}"')
        async with postgres_storage_in(
            storage.schema, dsn_of(urlsplit(POSTGRES_DSN).path.lstrip("/"), user=role)
        ) as restricted:
            async with restricted.transaction() as session:
                rows = await session.execute_sql(
                    text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                )
            assert rows == [{"rolsuper": False}]
            yield restricted
    finally:
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_an_unprivileged_role_reads_past_a_transaction_open_in_another_database(
    unprivileged_storage: PostgresStorage,
) -> None:
    async with open_transaction(dsn_of(other_database())):
        event = await append_one(unprivileged_storage)
        assert await readable_soon(unprivileged_storage, event)


async def test_an_unprivileged_role_is_held_back_by_a_writer_of_its_store_and_skips_nothing(
    unprivileged_storage: PostgresStorage,
) -> None:
    storage = unprivileged_storage
    has_id, may_append = asyncio.Event(), asyncio.Event()
    early = event_record(n=1)

    async def document_first() -> None:
        async with storage.transaction() as session:
            await session.save_document("notes", "n-1", "{}", expected_version=0)
            has_id.set()
            await may_append.wait()
            await session.append("early", [early], expected_version=0)

    writer = asyncio.create_task(document_first())
    await has_id.wait()
    late = await append_one(storage)
    readable_while_open = await readable_now(storage, late)
    async with storage.transaction() as session:
        horizon = await session.log_horizon()
    may_append.set()
    await writer
    log = await read_log_eventually(storage, 2)

    assert not readable_while_open
    assert horizon.blocker is not None
    assert horizon.blocker.pid is not None
    assert [e.event_id for e in log] == [early.event_id, late.event_id]


async def test_an_unprivileged_role_pages_the_log_without_gaps_under_concurrent_writers(
    unprivileged_storage: PostgresStorage,
) -> None:
    seen: list[StoredEvent] = []
    position = LOG_START

    async def read_page() -> int:
        nonlocal position
        async with unprivileged_storage.transaction() as session:
            page = await session.read_log(after=position, limit=50)
        if page:
            seen.extend(page)
            position = page[-1].log_position
        return len(page)

    writing = asyncio.create_task(write_concurrently(unprivileged_storage, document_first=True))
    await read_while(writing, read_page, lambda: len(seen) >= TOTAL)
    ids = [event.event_id for event in seen]
    assert len(ids) == len(set(ids)) == TOTAL


# -- liveness ------------------------------------------------------------------------------


async def test_a_fresh_event_is_readable_within_100_ms_while_unrelated_transactions_stay_open(
    storage: PostgresStorage,
) -> None:
    # p99 of 200 commits, with a transaction open in another database and one in this
    # database that appends nothing, for the whole run.
    delays: list[float] = []
    position = LOG_START
    async with (
        open_transaction(dsn_of(other_database())),
        open_transaction(POSTGRES_DSN, "CREATE TEMPORARY TABLE scratch (n int)"),
    ):
        for n in range(200):
            record = event_record(n=n)
            async with storage.transaction() as session:
                await session.append("timed", [record], expected_version=n)
            committed = time.perf_counter()
            position = await wait_readable(storage, position, record.event_id)
            delays.append(time.perf_counter() - committed)
    delays.sort()
    p99 = delays[int(len(delays) * 0.99) - 1]
    assert p99 < 0.1, f"p99 {p99 * 1000:.1f} ms, slowest {delays[-1] * 1000:.1f} ms"


async def wait_readable(
    storage: PostgresStorage, after: LogPosition, event_id: uuid.UUID
) -> LogPosition:
    """Read the log from ``after`` until ``event_id`` arrives; the position of that event."""
    deadline = time.perf_counter() + READABLE_WITHIN
    while time.perf_counter() < deadline:
        async with storage.transaction() as session:
            page = await session.read_log(after=after, limit=10)
        for event in page:
            if event.event_id == event_id:
                return event.log_position
        if page:
            after = page[-1].log_position
        await asyncio.sleep(0)
    msg = f"event {event_id} was not readable within {READABLE_WITHIN} s of its commit"
    raise AssertionError(msg)


# -- lag -----------------------------------------------------------------------------------


async def test_lag_counts_events_held_back_by_an_open_writer_and_names_it(
    storage: PostgresStorage,
) -> None:
    registry = EventRegistry([Deposited])
    runner = ProjectionRunner(storage, registry, [Balances()])
    has_id, may_end = asyncio.Event(), asyncio.Event()
    blocker_pid: list[int] = []

    async def open_writer() -> None:
        async with storage.transaction() as session:
            rows = await session.execute_sql(text("SELECT pg_backend_pid() AS pid"))
            blocker_pid.append(rows[0]["pid"])
            await session.save_document("notes", "n-1", "{}", expected_version=0)
            has_id.set()
            await may_end.wait()

    writer = asyncio.create_task(open_writer())
    await has_id.wait()
    await append_deposits(storage, registry, 5)
    held = await runner.lag("balances")
    may_end.set()
    await writer
    await runner.catch_up("balances")
    released = await runner.lag("balances")

    assert (held.events_behind, held.unreadable, held.committed_behind) == (0, 5, 5)
    assert held.state == "behind"
    assert held.readable_head == LOG_START < held.committed_head
    assert held.blocker is not None
    assert held.blocker.pid == blocker_pid[0]
    assert held.blocker.application_name is not None
    assert (released.state, released.unreadable, released.blocker) == ("caught up", 0, None)
    assert released.checkpoint == released.committed_head == held.committed_head


async def append_deposits(storage: PostgresStorage, registry: EventRegistry, count: int) -> None:
    """Commit ``count`` deposits, without waiting for them to be readable."""
    records = []
    for n in range(1, count + 1):
        encoded = registry.encode(Deposited("a", n))
        records.append(event_record(n=n))
        records[-1] = replace(records[-1], type_name=encoded.type_name, data=encoded.data)
    async with storage.transaction() as session:
        await session.append("account-a", records, expected_version=StreamState.ANY)


@pytest.mark.parametrize(
    ("count", "expected"),
    [(1, 0), (3, 0), (2, StreamState.ANY)],
    ids=["one event", "a batch", "any version"],
)
async def test_a_transaction_tells_the_log_position_that_makes_its_events_readable(
    storage: PostgresStorage, count: int, expected: int | StreamState
) -> None:
    async with storage.transaction() as session:
        assert session.readable_at is None
        await session.append(
            "told", [event_record() for _ in range(count)], expected_version=expected
        )
        told = session.readable_at
    last = (await read_log_eventually(storage, count))[-1]
    assert told == last.log_position
