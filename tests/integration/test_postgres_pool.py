"""PostgreSQL's connection pool: more tasks than connections, timeouts, lost connections."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
import sqlalchemy as sa

from eventfold.adapters.postgres import PostgresStorage, create_postgres_storage
from eventfold.errors import ConfigurationError, StoreUnavailableError
from eventfold.testing.contracts.storage import event_record
from tests.conftest import POSTGRES_DSN, require_service, unique_name
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

WAIT = 60.0
"""Seconds any scenario may take on a loaded machine: a bound against hanging."""

TRANSACTIONS_PER_TASK = 5

StorageFactory = Callable[..., PostgresStorage]


@pytest.fixture
async def make_storage() -> AsyncIterator[StorageFactory]:
    """Storages with their schema created on first use, all closed and dropped afterwards."""
    require_service("postgres")
    made: list[PostgresStorage] = []

    def make(dsn: str = POSTGRES_DSN, **options: object) -> PostgresStorage:
        schema = made[0].schema if made else unique_name("ef")
        storage = create_postgres_storage(dsn, schema=schema, **options)
        made.append(storage)
        return storage

    yield make
    for storage in made:
        await storage.close()
    if made:
        connection = await asyncpg.connect(POSTGRES_DSN)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{made[0].schema}" CASCADE')
        finally:
            await connection.close()


async def append_several(storage: PostgresStorage, task: int, done: list[int]) -> None:
    """Append ``TRANSACTIONS_PER_TASK`` events to this task's stream, one per transaction."""
    for version in range(TRANSACTIONS_PER_TASK):
        async with storage.transaction() as session:
            records = [event_record(n=version)]
            await session.append(f"task-{task}", records, expected_version=version)
            # Hold the connection across a turn of the loop, as a request handler does.
            await asyncio.sleep(0)
        done[task] += 1


async def run_tasks_on_a_pool(make_storage: StorageFactory, pool: int, tasks: int) -> list[int]:
    storage = make_storage(max_size=pool, min_size=1)
    await storage.create_schema()
    done = [0] * tasks
    async with asyncio.timeout(WAIT):
        await asyncio.gather(*(append_several(storage, task, done) for task in range(tasks)))
    return done


async def test_three_tasks_on_a_pool_of_two_each_complete_all_their_transactions(
    make_storage: StorageFactory,
) -> None:
    assert await run_tasks_on_a_pool(make_storage, pool=2, tasks=3) == [TRANSACTIONS_PER_TASK] * 3


async def test_ten_tasks_on_a_pool_of_two_each_complete_all_their_transactions(
    make_storage: StorageFactory,
) -> None:
    done = await run_tasks_on_a_pool(make_storage, pool=2, tasks=10)
    assert done == [TRANSACTIONS_PER_TASK] * 10


async def test_waiting_tasks_get_connections_in_the_order_they_asked(
    make_storage: StorageFactory,
) -> None:
    storage = make_storage(max_size=1, min_size=1)
    await storage.create_schema()
    order: list[int] = []
    holder_in, release_holder = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with storage.transaction():
            holder_in.set()
            await release_holder.wait()

    async def queue_up(n: int) -> None:
        async with storage.transaction():
            order.append(n)

    holder = asyncio.create_task(hold())
    await holder_in.wait()
    waiters = []
    for n in range(5):
        waiters.append(asyncio.create_task(queue_up(n)))
        await asyncio.sleep(0)  # each one asks for a connection before the next
    release_holder.set()
    async with asyncio.timeout(WAIT):
        await asyncio.gather(holder, *waiters)
    assert order == [0, 1, 2, 3, 4]


async def test_a_transaction_that_waits_too_long_for_a_connection_raises_naming_the_pool(
    make_storage: StorageFactory,
) -> None:
    storage = make_storage(max_size=1, min_size=1, acquire_timeout=0.2)
    await storage.create_schema()
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with storage.transaction():
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    try:
        with pytest.raises(StoreUnavailableError) as raised:
            async with storage.transaction():
                pass
    finally:
        release.set()
        await holder
    assert "pool of 1" in str(raised.value)
    assert "0.2s" in str(raised.value)
    assert "max_size" in str(raised.value)


async def test_tasks_cancelled_while_waiting_for_a_connection_leave_the_pool_whole(
    make_storage: StorageFactory,
) -> None:
    storage = make_storage(max_size=1, min_size=1)
    await storage.create_schema()
    holding, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with storage.transaction():
            holding.set()
            await release.wait()

    async def wait_in_line() -> None:
        async with storage.transaction():
            pass

    holder = asyncio.create_task(hold())
    await holding.wait()
    waiting = [asyncio.create_task(wait_in_line()) for _ in range(5)]
    await asyncio.sleep(0.05)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    release.set()
    await holder
    async with asyncio.timeout(WAIT):
        assert await run_tasks_on_storage(storage, tasks=3) == [TRANSACTIONS_PER_TASK] * 3


async def run_tasks_on_storage(storage: PostgresStorage, tasks: int) -> list[int]:
    done = [0] * tasks
    await asyncio.gather(*(append_several(storage, task, done) for task in range(tasks)))
    return done


async def test_appenders_and_a_live_reader_on_a_pool_of_one_all_get_through(
    make_storage: StorageFactory,
) -> None:
    # Every commit that appended makes the storage send a NOTIFY on a pooled connection,
    # while the reader listens on a connection of its own: neither may block the writers.
    storage = make_storage(max_size=1, min_size=1)
    await storage.create_schema()
    assert await storage.wait_for_events(WAIT) is True  # the first wait always wakes
    woken = asyncio.create_task(storage.wait_for_events(WAIT))
    async with asyncio.timeout(WAIT):
        assert await run_tasks_on_storage(storage, tasks=4) == [TRANSACTIONS_PER_TASK] * 4
        assert await woken is True


async def backend_pid(session: object) -> int:
    rows = await session.execute_sql(sa.text("SELECT pg_backend_pid() AS pid"))  # type: ignore[attr-defined]
    return int(rows[0]["pid"])


async def terminate(pid: int) -> None:
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        assert await connection.fetchval("SELECT pg_terminate_backend($1)", pid)
        # The server reports a terminated backend gone only once it exited.
        async with asyncio.timeout(WAIT):
            while await connection.fetchval(  # noqa: ASYNC110 - another backend's state
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
            ):
                await asyncio.sleep(0.01)
    finally:
        await connection.close()


async def test_a_connection_killed_between_statements_raises_store_unavailable(
    make_storage: StorageFactory,
) -> None:
    storage = make_storage()
    await storage.create_schema()

    async def killed_then_append() -> None:
        async with storage.transaction() as session:
            await terminate(await backend_pid(session))
            await session.append("thing-1", [event_record()], expected_version=0)

    with pytest.raises(StoreUnavailableError) as raised:
        await killed_then_append()
    assert "released back to the pool" not in str(raised.value)


async def test_a_connection_killed_before_commit_raises_store_unavailable_and_keeps_nothing(
    make_storage: StorageFactory,
) -> None:
    storage = make_storage()
    await storage.create_schema()

    async def append_then_killed() -> None:
        async with storage.transaction() as session:
            await session.append("thing-1", [event_record()], expected_version=0)
            await terminate(await backend_pid(session))

    with pytest.raises(StoreUnavailableError):
        await append_then_killed()
    async with storage.transaction() as session:
        assert await session.stream_version("thing-1") == 0


async def test_a_connection_killed_mid_statement_raises_store_unavailable(
    make_storage: StorageFactory,
) -> None:
    storage = make_storage()
    await storage.create_schema()
    pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def sleeper() -> None:
        async with storage.transaction() as session:
            pid.set_result(await backend_pid(session))
            await session.execute_sql(sa.text("SELECT pg_sleep(60)"))

    task = asyncio.create_task(sleeper())
    await terminate(await pid)
    with pytest.raises(StoreUnavailableError):
        await asyncio.wait_for(task, WAIT)


async def test_the_pool_replaces_a_killed_connection_for_the_next_transaction(
    make_storage: StorageFactory,
) -> None:
    storage = make_storage(max_size=1, min_size=1)
    await storage.create_schema()

    async def killed() -> None:
        async with storage.transaction() as session:
            await terminate(await backend_pid(session))
            await session.stream_version("thing-1")

    with pytest.raises(StoreUnavailableError):
        await killed()
    async with storage.transaction() as session:
        assert await session.append("thing-1", [event_record()], expected_version=0) == 1


async def test_a_cut_network_mid_transaction_raises_store_unavailable_and_recovers(
    make_storage: StorageFactory,
) -> None:
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        storage = make_storage(f"postgresql://postgres@127.0.0.1:{proxy.port}/test", max_size=2)
        await storage.create_schema()

        async def cut_midway() -> None:
            async with storage.transaction() as session:
                await session.append("thing-1", [event_record()], expected_version=0)
                await proxy.cut()
                await session.stream_version("thing-1")

        with pytest.raises(StoreUnavailableError):
            await cut_midway()
        with pytest.raises(StoreUnavailableError):
            async with storage.transaction():
                pass
        await proxy.restore()
        async with storage.transaction() as session:
            assert await session.append("thing-1", [event_record()], expected_version=0) == 1
        await storage.close()  # while the proxy still forwards its goodbye


async def test_concurrent_first_waits_for_events_leave_no_connection_unclosed(
    make_storage: StorageFactory,
) -> None:
    # Readers that start waiting at once, and give up while the listening connection is
    # still opening, must not leave a connection behind.
    storage = make_storage()
    await storage.create_schema()
    gc.collect()  # what earlier tests left is theirs to answer for, not this test's
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        waits = [asyncio.create_task(storage.wait_for_events(0.5)) for _ in range(5)]
        await asyncio.sleep(0)
        waits[0].cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        await storage.close()
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize(
    ("options", "wrong"),
    [
        ({"max_size": 0}, "max_size"),
        ({"min_size": 3, "max_size": 2}, "min_size"),
        ({"acquire_timeout": 0}, "acquire_timeout"),
    ],
)
def test_impossible_pool_settings_are_refused_naming_the_setting(
    options: dict[str, float], wrong: str
) -> None:
    with pytest.raises(ConfigurationError, match=wrong):
        create_postgres_storage(POSTGRES_DSN, **options)  # type: ignore[arg-type]
