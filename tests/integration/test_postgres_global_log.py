"""The gap-free global log on PostgreSQL: readers never pass an event that commits late."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from eventfold.adapters.postgres import PostgresStorage, create_postgres_storage
from eventfold.errors import ConcurrencyError
from eventfold.ports import LOG_START, LogPosition, StoredEvent, StreamState
from eventfold.testing.contracts.storage import event_record
from tests.conftest import POSTGRES_DSN, require_service, unique_name

pytestmark = pytest.mark.postgres

WRITERS = 8
COMMANDS_PER_WRITER = 40
EVENTS_PER_COMMAND = 2
TOTAL = WRITERS * COMMANDS_PER_WRITER * EVENTS_PER_COMMAND
DRAIN_WITHIN = 60.0
"""Seconds to wait for committed events to become readable: a bound, not a measure."""


@pytest.fixture
async def storage() -> AsyncIterator[PostgresStorage]:
    """A storage with a connection for each writer and the reader, in a fresh schema."""
    require_service("postgres")
    schema = unique_name("ef")
    storage = create_postgres_storage(POSTGRES_DSN, schema=schema, max_size=WRITERS + 4)
    await storage.create_schema()
    yield storage
    await storage.close()
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def write_concurrently(
    storage: PostgresStorage, *, document_first: bool = False
) -> list[uuid.UUID]:
    """8 writers, each committing many small transactions after a random pause.

    The pause between the append (which takes the position) and the commit is what lets
    transactions commit out of position order. With ``document_first``, each transaction
    writes a document, pauses, then appends: it holds its transaction id before it
    appends, so a younger transaction's events may commit before its own are written.
    """

    async def writer(number: int) -> list[uuid.UUID]:
        written: list[uuid.UUID] = []
        for command in range(COMMANDS_PER_WRITER):
            records = [event_record(n=command) for _ in range(EVENTS_PER_COMMAND)]
            async with storage.transaction() as session:
                if document_first:
                    key = f"{number}-{command}"
                    await session.save_document("notes", key, "{}", expected_version=0)
                    await asyncio.sleep(random.uniform(0, 0.004))
                stream_id = f"writer-{number}-{command % 5}"
                await session.append(stream_id, records, expected_version=StreamState.ANY)
                await asyncio.sleep(random.uniform(0, 0.004))
            written.extend(record.event_id for record in records)
        return written

    batches = await asyncio.gather(*(writer(number) for number in range(WRITERS)))
    return [event_id for batch in batches for event_id in batch]


async def read_while(
    writing: asyncio.Task[list[uuid.UUID]],
    read_page: Callable[[], Awaitable[int]],
    done: Callable[[], bool],
) -> None:
    """Page the log while the writers run, then until ``done()`` or nothing more comes."""
    while not writing.done():
        if await read_page() == 0:
            await asyncio.sleep(0.001)
    await asyncio.wait_for(drain(read_page, done), DRAIN_WITHIN)


async def drain(read_page: Callable[[], Awaitable[int]], done: Callable[[], bool]) -> None:
    # Committed events become readable once every older transaction in the cluster has
    # ended, including ones that write no events (another test's, autovacuum's): keep
    # reading until all arrived rather than stopping at the first empty page.
    while not done():
        if await read_page() == 0:
            await asyncio.sleep(0.01)


async def read_log_eventually(storage: PostgresStorage, count: int) -> list[StoredEvent]:
    """The whole log once it holds ``count`` readable events (see ``drain``)."""

    async def read() -> list[StoredEvent]:
        while True:
            async with storage.transaction() as session:
                events = await session.read_log(after=LOG_START, limit=count + 1)
            if len(events) >= count:
                return events
            await asyncio.sleep(0.01)

    return await asyncio.wait_for(read(), DRAIN_WITHIN)


async def test_a_reader_paging_the_log_during_concurrent_writes_sees_every_event_once(
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

    writing = asyncio.create_task(write_concurrently(storage))
    await read_while(writing, read_page, lambda: len(seen) >= TOTAL)
    written = writing.result()

    ids = [event.event_id for event in seen]
    assert len(ids) == TOTAL
    assert len(set(ids)) == TOTAL
    assert set(ids) == set(written)
    replay = await read_log_eventually(storage, TOTAL)
    assert [event.event_id for event in replay] == ids


async def skipped_by_a_naive_reader(
    storage: PostgresStorage, connection: asyncpg.Connection
) -> int:
    """How many events a reader paging by ``position > last`` never sees under load."""
    seen: set[uuid.UUID] = set()
    last = 0

    async def read_page() -> int:
        nonlocal last
        rows = await connection.fetch(
            "SELECT position, event_id FROM eventfold_events"
            " WHERE position > $1 ORDER BY position LIMIT 50",
            last,
        )
        if rows:
            seen.update(row["event_id"] for row in rows)
            last = rows[-1]["position"]
        return len(rows)

    writing = asyncio.create_task(write_concurrently(storage))
    # This reader sees every committed row at once, so one empty page after the writers
    # finished means it has read all it ever will.
    await read_while(writing, read_page, lambda: True)
    return len(set(writing.result()) - seen)


async def test_a_reader_ordering_by_position_alone_skips_events_that_commit_late(
    storage: PostgresStorage,
) -> None:
    # The contrast to the test above: the query a hand-rolled projection would use.
    connection = await asyncpg.connect(
        POSTGRES_DSN, server_settings={"search_path": f'"{storage.schema}"'}
    )
    try:
        skipped = 0
        for _attempt in range(3):
            skipped += await skipped_by_a_naive_reader(storage, connection)
            if skipped:
                break
    finally:
        await connection.close()
    assert skipped > 0


async def test_an_event_committed_after_a_later_positioned_one_is_still_read(
    storage: PostgresStorage,
) -> None:
    early = event_record(n=1)
    late = event_record(n=2)
    committed_late = asyncio.Event()
    appended_early = asyncio.Event()

    async def slow_writer() -> None:
        async with storage.transaction() as session:
            await session.append("slow", [early], expected_version=0)
            appended_early.set()
            await committed_late.wait()

    slow = asyncio.create_task(slow_writer())
    await appended_early.wait()
    async with storage.transaction() as session:
        await session.append("fast", [late], expected_version=0)
    async with storage.transaction() as session:
        while_open = await session.read_log(after=LOG_START, limit=10)
    committed_late.set()
    await slow
    after_commit = await read_log_eventually(storage, 2)

    assert while_open == []
    assert [event.event_id for event in after_commit] == [early.event_id, late.event_id]
    assert after_commit[0].position < after_commit[1].position


async def test_log_head_and_count_after_do_not_count_events_that_may_yet_be_preceded(
    storage: PostgresStorage,
) -> None:
    release = asyncio.Event()
    appended = asyncio.Event()

    async def open_writer() -> None:
        async with storage.transaction() as session:
            await session.append("open", [event_record()], expected_version=0)
            appended.set()
            await release.wait()

    task = asyncio.create_task(open_writer())
    await appended.wait()
    async with storage.transaction() as session:
        await session.append("done", [event_record()], expected_version=0)
    async with storage.transaction() as session:
        head, count = await session.log_head(), await session.count_after(LOG_START)
    release.set()
    await task

    assert (head, count) == (LOG_START, 0)
    log = await read_log_eventually(storage, 2)
    async with storage.transaction() as session:
        assert await session.count_after(LOG_START) >= 2
        assert await session.log_head() >= log[-1].log_position


async def test_a_session_that_already_wrote_reads_the_log_only_below_its_own_transaction(
    storage: PostgresStorage,
) -> None:
    # The reader's transaction id holds back its own snapshot's xmin: it can stall on
    # events committed by younger transactions but never skip them.
    async with storage.transaction() as reader:
        await reader.save_checkpoint("view", LogPosition(0, 0))  # takes a transaction id
        async with storage.transaction() as writer:
            await writer.append("younger", [event_record()], expected_version=0)
        assert await reader.read_log(after=LOG_START, limit=10) == []
    assert len(await read_log_eventually(storage, 1)) == 1


async def test_an_append_from_a_transaction_older_than_the_streams_last_writer_conflicts(
    storage: PostgresStorage,
) -> None:
    # Were it stored, version 2 would come before version 1 in the log, which orders
    # by transaction id: the older transaction retries instead, as after any conflict.
    async def older_transaction() -> None:
        async with storage.transaction() as older:
            await older.save_document("notes", "n-1", "{}", expected_version=0)
            async with storage.transaction() as younger:
                await younger.append("thing-1", [event_record(n=1)], expected_version=0)
            await older.append("thing-1", [event_record(n=2)], expected_version=1)

    with pytest.raises(ConcurrencyError) as raised:
        await older_transaction()
    assert (raised.value.expected, raised.value.actual) == (1, 1)

    async with storage.transaction() as retry:
        await retry.append("thing-1", [event_record(n=2)], expected_version=1)
    log = await read_log_eventually(storage, 2)
    assert [event.version for event in log] == [1, 2]
