"""What the SQLite storage does beyond the shared contract: files, errors, locks, user SQL."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from eventfold.adapters.sqlite import SqliteStorage, create_sqlite_storage
from eventfold.errors import (
    ConcurrencyError,
    PersistenceError,
    SchemaMissingError,
    StoreUnavailableError,
)
from eventfold.ports import AppendEvents
from eventfold.testing.contracts.storage import event_record

user_tables = sa.MetaData()
shipments = sa.Table(
    "shipments",
    user_tables,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("parcels", sa.JSON, nullable=False),
)


class _Rollback(Exception):
    pass


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    storage = create_sqlite_storage(tmp_path / "shop.db")
    await storage.create_schema()
    yield storage
    await storage.close()


async def create_shipments(storage: SqliteStorage) -> None:
    ddl = str(sa.schema.CreateTable(shipments).compile(dialect=sa.dialects.sqlite.dialect()))
    async with storage.transaction() as session:
        await session.execute_sql(sa.text(ddl))


async def versions(storage: SqliteStorage, stream_id: str) -> list[int]:
    async with storage.transaction() as session:
        return [event.version for event in await session.read_stream(stream_id)]


async def test_creating_a_storage_touches_no_file(tmp_path: Path) -> None:
    create_sqlite_storage(tmp_path / "later.db")

    assert not (tmp_path / "later.db").exists()


async def test_the_database_file_is_created_on_first_use(tmp_path: Path) -> None:
    storage = create_sqlite_storage(tmp_path / "new.db")
    await storage.create_schema()
    await storage.close()

    assert (tmp_path / "new.db").is_file()


async def test_committed_events_survive_reopening_the_file(tmp_path: Path) -> None:
    first = create_sqlite_storage(tmp_path / "shop.db")
    await first.create_schema()
    async with first.transaction() as session:
        await session.append("order-1", [event_record(n=1)], expected_version=0)
    await first.close()

    again = create_sqlite_storage(tmp_path / "shop.db")
    try:
        assert await versions(again, "order-1") == [1]
    finally:
        await again.close()


async def test_an_in_memory_database_keeps_data_while_open() -> None:
    storage = create_sqlite_storage(":memory:")
    await storage.create_schema()
    try:
        async with storage.transaction() as session:
            await session.append("order-1", [event_record()], expected_version=0)
        assert await versions(storage, "order-1") == [1]
    finally:
        await storage.close()


async def test_the_database_runs_in_wal_mode_with_full_sync(storage: SqliteStorage) -> None:
    async with storage.transaction() as session:
        [mode] = await session.execute_sql(sa.text("PRAGMA journal_mode"))
        [sync] = await session.execute_sql(sa.text("PRAGMA synchronous"))

    assert (mode["journal_mode"], sync["synchronous"]) == ("wal", 2)


async def test_a_file_that_cannot_be_opened_is_a_store_unavailable_error(
    tmp_path: Path,
) -> None:
    storage = create_sqlite_storage(tmp_path / "no-such-dir" / "shop.db", name="orders-db")

    with pytest.raises(StoreUnavailableError, match="orders-db"):
        await storage.create_schema()


async def test_a_file_that_is_not_a_database_is_a_store_unavailable_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "notes.db").write_bytes(b"these are not the pages you are looking for" * 100)
    storage = create_sqlite_storage(tmp_path / "notes.db")

    with pytest.raises(StoreUnavailableError):
        await storage.create_schema()


async def test_missing_tables_are_a_schema_missing_error_naming_the_table(
    tmp_path: Path,
) -> None:
    storage = create_sqlite_storage(tmp_path / "empty.db")
    try:
        with pytest.raises(SchemaMissingError, match=r"eventfold_events.*eventfold db init"):
            async with storage.transaction() as session:
                await session.read_stream("order-1")
    finally:
        await storage.close()


async def test_user_rows_are_written_and_read_in_the_same_transaction(
    storage: SqliteStorage,
) -> None:
    await create_shipments(storage)
    async with storage.transaction() as session:
        await session.append("order-1", [event_record()], expected_version=0)
        await session.execute_sql(shipments.insert().values(id=1, parcels=[{"kg": 2}]))
        rows = await session.execute_sql(sa.select(shipments))

    assert rows == [{"id": 1, "parcels": [{"kg": 2}]}]


async def test_user_rows_roll_back_with_the_events_of_their_transaction(
    storage: SqliteStorage,
) -> None:
    await create_shipments(storage)

    async def ship_then_fail() -> None:
        async with storage.transaction() as session:
            await session.append("order-1", [event_record()], expected_version=0)
            await session.execute_sql(shipments.insert().values(id=1, parcels=[]))
            raise _Rollback

    with pytest.raises(_Rollback):
        await ship_then_fail()

    async with storage.transaction() as session:
        assert await session.execute_sql(sa.select(shipments)) == []
        assert await session.stream_version("order-1") == 0


async def test_user_updates_and_deletes_change_the_matching_rows(storage: SqliteStorage) -> None:
    await create_shipments(storage)
    async with storage.transaction() as session:
        await session.execute_sql(shipments.insert().values(id=1, parcels=[]))
        await session.execute_sql(shipments.insert().values(id=2, parcels=[]))
        await session.execute_sql(shipments.update().where(shipments.c.id == 1).values(parcels=[1]))
        await session.execute_sql(shipments.delete().where(shipments.c.id == 2))
        rows = await session.execute_sql(sa.select(shipments))

    assert rows == [{"id": 1, "parcels": [1]}]


async def test_a_failing_user_statement_raises_a_persistence_error(
    storage: SqliteStorage,
) -> None:
    await create_shipments(storage)
    async with storage.transaction() as session:
        await session.execute_sql(shipments.insert().values(id=1, parcels=[]))

    with pytest.raises(PersistenceError, match="UNIQUE"):
        async with storage.transaction() as session:
            await session.execute_sql(shipments.insert().values(id=1, parcels=[]))


async def test_many_concurrent_appenders_store_every_event_once(storage: SqliteStorage) -> None:
    async def append_until_stored(n: int) -> None:
        while True:
            try:
                async with storage.transaction() as session:
                    version = await session.stream_version("order-1")
                    await asyncio.sleep(0)
                    await session.append("order-1", [event_record(n=n)], expected_version=version)
            except ConcurrencyError:
                continue
            return

    await asyncio.gather(*(append_until_stored(n) for n in range(100)))

    assert await versions(storage, "order-1") == list(range(1, 101))


async def test_two_storages_on_one_file_never_write_the_same_version(tmp_path: Path) -> None:
    # Two storages are two connections, as two processes would have: SQLite's own lock
    # (BEGIN IMMEDIATE and the busy timeout) must serialise them.
    first, second = (create_sqlite_storage(tmp_path / "shared.db") for _ in range(2))
    await first.create_schema()

    async def append_until_stored(storage: SqliteStorage, n: int) -> None:
        while True:
            try:
                async with storage.transaction() as session:
                    version = await session.stream_version("order-1")
                    await session.append("order-1", [event_record(n=n)], expected_version=version)
            except ConcurrencyError:
                continue
            return

    try:
        await asyncio.gather(
            *(append_until_stored(first if n % 2 else second, n) for n in range(40))
        )
        assert await versions(first, "order-1") == list(range(1, 41))
    finally:
        await first.close()
        await second.close()


async def test_a_write_lock_held_past_the_busy_timeout_is_a_store_unavailable_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "busy.db"
    storage = create_sqlite_storage(path, busy_timeout=0.05)
    await storage.create_schema()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailableError, match="locked"):
            async with storage.transaction() as session:
                await session.append("order-1", [event_record()], expected_version=0)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        await storage.close()


async def test_reads_go_on_while_another_connection_holds_the_write_lock(
    storage: SqliteStorage, tmp_path: Path
) -> None:
    async with storage.transaction() as session:
        await session.append("order-1", [event_record()], expected_version=0)
    blocker = sqlite3.connect(tmp_path / "shop.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        assert await versions(storage, "order-1") == [1]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


async def test_overlapping_transactions_in_one_task_read_committed_data(
    storage: SqliteStorage,
) -> None:
    async with storage.transaction() as first, storage.transaction() as second:
        await first.append("order-1", [event_record()], expected_version=0)
        assert await second.stream_version("order-1") == 0


async def test_a_second_writing_transaction_in_one_task_fails_instead_of_hanging(
    storage: SqliteStorage,
) -> None:
    async with storage.transaction() as first, storage.transaction() as second:
        await first.append("order-1", [event_record()], expected_version=0)
        with pytest.raises(PersistenceError, match="one writer at a time"):
            await second.append("order-2", [event_record()], expected_version=0)


async def _queued_commits(storage: SqliteStorage, count: int) -> None:
    # The storage's queue of waiting commits is the condition: they must all be waiting
    # behind the open writer before it lets go, so that they commit as one group.
    async with asyncio.timeout(10):
        while len(storage._queued) < count:  # noqa: ASYNC110 - the queue has no event
            await asyncio.sleep(0.001)


async def test_commits_queued_behind_a_writer_are_stored_and_a_conflict_fails_alone(
    storage: SqliteStorage,
) -> None:
    async def commit(stream_id: str, expected: int) -> None:
        async with storage.transaction() as session:
            await session.write_batch([AppendEvents(stream_id, [event_record()], expected)])

    async with storage.transaction() as holder:
        await holder.append("order-1", [event_record()], expected_version=0)
        waiting = [
            asyncio.create_task(commit("order-2", 0)),
            asyncio.create_task(commit("order-1", 0)),  # stale once the holder commits
            asyncio.create_task(commit("order-3", 0)),
        ]
        await _queued_commits(storage, 3)
    results = await asyncio.gather(*waiting, return_exceptions=True)

    assert results[0] is None
    assert isinstance(results[1], ConcurrencyError)
    assert results[2] is None
    assert [await versions(storage, s) for s in ("order-1", "order-2", "order-3")] == [
        [1],
        [1],
        [1],
    ]


async def test_a_commit_queued_while_its_task_holds_the_writer_fails_instead_of_hanging(
    storage: SqliteStorage,
) -> None:
    async def commit_inside_a_writing_transaction() -> None:
        async with storage.transaction() as first:
            await first.append("order-1", [event_record()], expected_version=0)
            async with storage.transaction() as second:
                await second.write_batch([AppendEvents("order-2", [event_record()], 0)])

    with pytest.raises(PersistenceError, match="one writer at a time"):
        await commit_inside_a_writing_transaction()
    assert await versions(storage, "order-2") == []


async def test_a_cancelled_transaction_rolls_back_and_frees_the_storage(
    storage: SqliteStorage,
) -> None:
    entered = asyncio.Event()

    async def cancelled_writer() -> None:
        async with storage.transaction() as session:
            await session.append("order-1", [event_record()], expected_version=0)
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(cancelled_writer())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await versions(storage, "order-1") == []


async def test_a_session_used_after_its_transaction_ended_fails_and_keeps_no_lock(
    storage: SqliteStorage,
) -> None:
    async with storage.transaction() as session:
        await session.stream_version("order-1")
    with pytest.raises(PersistenceError, match="transaction has ended"):
        await session.append("order-1", [event_record()], expected_version=0)

    async def next_writer() -> None:
        async with storage.transaction() as other:
            await other.append("order-2", [event_record()], expected_version=0)

    async with asyncio.timeout(3):
        await asyncio.create_task(next_writer())
    assert await versions(storage, "order-1") == []
