"""PostgreSQL storage behaviour beyond the shared contract: errors, schema, races, SQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from eventfold.adapters.postgres import PostgresStorage, create_postgres_storage
from eventfold.adapters.sql.schema import metadata as eventfold_tables
from eventfold.errors import (
    ConcurrencyError,
    PersistenceError,
    SchemaMissingError,
    StoreUnavailableError,
)
from eventfold.ports import StreamState
from eventfold.testing.contracts.storage import event_record
from tests.conftest import POSTGRES_DSN, require_service, unique_name
from tests.support.network import closed_port

pytestmark = pytest.mark.postgres

StorageFactory = Callable[..., PostgresStorage]


@pytest.fixture
async def make_storage() -> AsyncIterator[StorageFactory]:
    """Storages on fresh schemas (not created), all closed and dropped afterwards."""
    require_service("postgres")
    made: list[PostgresStorage] = []

    def make(schema: str | None = None, **options: object) -> PostgresStorage:
        storage = create_postgres_storage(
            POSTGRES_DSN, schema=schema or unique_name("ef"), **options
        )
        made.append(storage)
        return storage

    yield make
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        for storage in made:
            await storage.close()
            await connection.execute(f'DROP SCHEMA IF EXISTS "{storage.schema}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture
async def storage(make_storage: StorageFactory) -> PostgresStorage:
    storage = make_storage()
    await storage.create_schema()
    return storage


async def test_an_unreachable_server_raises_store_unavailable_naming_the_host() -> None:
    port = closed_port()
    storage = create_postgres_storage(f"postgresql://postgres@127.0.0.1:{port}/test")
    with pytest.raises(StoreUnavailableError) as raised:
        async with storage.transaction():
            pass
    assert f"127.0.0.1:{port}" in str(raised.value)
    assert raised.value.reason
    await storage.close()


async def test_creating_a_storage_does_not_connect() -> None:
    storage = create_postgres_storage(f"postgresql://postgres@127.0.0.1:{closed_port()}/test")
    assert storage.name.startswith("postgres:127.0.0.1:")
    await storage.close()


async def test_missing_tables_raise_schema_missing_saying_how_to_create_them(
    make_storage: StorageFactory,
) -> None:
    storage = make_storage()
    with pytest.raises(SchemaMissingError) as raised:
        async with storage.transaction() as session:
            await session.append("thing-1", [event_record()], expected_version=0)
    assert raised.value.missing == "eventfold_events"
    assert "create_schema()" in str(raised.value)
    assert "eventfold db init" in str(raised.value)


async def test_create_schema_puts_the_tables_in_the_storages_schema(
    storage: PostgresStorage,
) -> None:
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        tables = await connection.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
            storage.schema,
        )
    finally:
        await connection.close()
    assert {row["table_name"] for row in tables} == {t.name for t in eventfold_tables.sorted_tables}


async def test_processes_creating_the_schema_at_once_all_succeed(
    make_storage: StorageFactory,
) -> None:
    schema = unique_name("ef")
    storages = [make_storage(schema) for _ in range(4)]
    await asyncio.gather(*(storage.create_schema() for storage in storages))
    async with storages[0].transaction() as session:
        assert await session.append("thing-1", [event_record()], expected_version=0) == 1


async def test_a_batch_that_loses_a_race_partway_stores_none_of_its_events(
    storage: PostgresStorage,
) -> None:
    # The winner holds version 1 uncommitted; the loser's batch (versions 1-3) waits on
    # it, then finds version 1 taken and versions 2-3 free: none of them may stay.
    winner_appended, release_winner = asyncio.Event(), asyncio.Event()

    async def winner() -> None:
        async with storage.transaction() as session:
            await session.append("thing-1", [event_record(n=1)], expected_version=0)
            winner_appended.set()
            await release_winner.wait()

    async def loser() -> None:
        async with storage.transaction() as session:
            await session.append(
                "thing-1", [event_record(n=n) for n in (2, 3, 4)], expected_version=0
            )

    winning = asyncio.create_task(winner())
    await winner_appended.wait()
    losing = asyncio.create_task(loser())
    await wait_until_blocked(storage)
    release_winner.set()
    await winning
    with pytest.raises(ConcurrencyError) as raised:
        await losing
    assert (raised.value.expected, raised.value.actual) == (0, 1)
    async with storage.transaction() as session:
        assert [e.version for e in await session.read_stream("thing-1")] == [1]


async def wait_until_blocked(storage: PostgresStorage) -> None:
    """Until a backend waits on a lock held by another append in this schema's table."""
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        table = f'"{storage.schema}".eventfold_events'
        # Polling the server: there is no event to await for another backend's lock wait.
        while not await connection.fetchval(  # noqa: ASYNC110
            "SELECT count(*) > 0 FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE '%eventfold_events%'"
            " AND pid IN (SELECT pid FROM pg_locks WHERE relation = $1::regclass)",
            table,
        ):
            await asyncio.sleep(0.005)
    finally:
        await connection.close()


async def test_concurrent_any_appenders_on_one_stream_all_get_consecutive_versions(
    storage: PostgresStorage,
) -> None:
    async def append_any(n: int) -> None:
        async with storage.transaction() as session:
            await session.append("thing-1", [event_record(n=n)], expected_version=StreamState.ANY)

    await asyncio.gather(*(append_any(n) for n in range(8)))
    async with storage.transaction() as session:
        assert [e.version for e in await session.read_stream("thing-1")] == list(range(1, 9))


metadata = sa.MetaData()
prices = sa.Table(
    "prices",
    metadata,
    sa.Column("sku", sa.Text, primary_key=True),
    sa.Column("amount", sa.Numeric(10, 2), nullable=False),
    sa.Column("tags", JSONB, nullable=False),
)


CREATE_PRICES = (
    "CREATE TABLE prices"
    " (sku text PRIMARY KEY, amount numeric(10, 2) NOT NULL, tags jsonb NOT NULL)"
)


async def test_a_users_core_statements_run_in_the_sessions_transaction(
    storage: PostgresStorage,
) -> None:
    async with storage.transaction() as session:
        await session.execute_sql(sa.text(CREATE_PRICES))
        await session.execute_sql(
            prices.insert().values(sku="a-1", amount=Decimal("9.90"), tags=["red", "new"])
        )
        rows = await session.execute_sql(sa.select(prices).where(prices.c.sku == "a-1"))
    assert rows == [{"sku": "a-1", "amount": Decimal("9.90"), "tags": ["red", "new"]}]


async def test_a_users_statements_roll_back_with_the_transaction(
    storage: PostgresStorage,
) -> None:
    async with storage.transaction() as session:
        await session.execute_sql(sa.text(CREATE_PRICES))

    async def failing() -> None:
        async with storage.transaction() as session:
            await session.execute_sql(prices.insert().values(sku="a-1", amount=1, tags=[]))
            await session.append("thing-1", [event_record()], expected_version=5)

    with pytest.raises(ConcurrencyError):
        await failing()
    async with storage.transaction() as session:
        assert await session.execute_sql(sa.select(prices)) == []


async def test_a_session_used_after_its_transaction_ended_fails_loudly(
    storage: PostgresStorage,
) -> None:
    # Its connection now serves other transactions: a late statement must not run there.
    async with storage.transaction() as session:
        await session.stream_version("thing-1")
    async with storage.transaction():
        with pytest.raises(PersistenceError, match="transaction has ended"):
            await session.append("thing-1", [event_record()], expected_version=0)


async def test_a_transaction_cancelled_mid_statement_leaves_the_next_one_a_clean_connection(
    make_storage: StorageFactory,
) -> None:
    storage = make_storage(max_size=1)
    await storage.create_schema()
    started = asyncio.Event()

    async def slow() -> None:
        async with storage.transaction() as session:
            await session.append("thing-1", [event_record()], expected_version=0)
            started.set()
            await session.execute_sql(sa.text("SELECT pg_sleep(30)"))

    task = asyncio.create_task(slow())
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with storage.transaction() as session:
        assert await session.stream_version("thing-1") == 0
        assert await session.append("thing-1", [event_record()], expected_version=0) == 1


async def test_close_returns_as_soon_as_the_transactions_in_flight_end(
    storage: PostgresStorage,
) -> None:
    started = asyncio.Event()

    async def in_flight() -> None:
        async with storage.transaction() as session:
            await session.append("thing-1", [event_record()], expected_version=0)
            started.set()
            await asyncio.sleep(0.2)

    task = asyncio.create_task(in_flight())
    await started.wait()
    async with asyncio.timeout(3):  # close() gives up on a transaction only after 10 s
        await storage.close()
    await task
    reopened = create_postgres_storage(POSTGRES_DSN, schema=storage.schema)
    try:
        async with reopened.transaction() as session:
            assert await session.stream_version("thing-1") == 1
    finally:
        await reopened.close()


async def test_appends_at_an_expected_version_reuse_one_plan(
    make_storage: StorageFactory,
) -> None:
    # Planning an append would cost more than running it: a prepared append must keep
    # to the generic plan after PostgreSQL's first five custom ones. Plans are cached per
    # connection: a pool of one makes every append run on the connection inspected.
    storage = make_storage(max_size=1)
    await storage.create_schema()
    version = 0
    for n in range(12):
        async with storage.transaction() as session:
            records = [event_record(n=n) for _ in range(1 + n % 2)]
            version = await session.append("thing-1", records, expected_version=version)
    async with storage.transaction() as session:
        rows = await session.execute_sql(
            sa.text(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE '%INSERT INTO eventfold_events%'"
            )
        )
    assert rows
    assert all(row["custom_plans"] <= 5 and row["generic_plans"] > 0 for row in rows)
