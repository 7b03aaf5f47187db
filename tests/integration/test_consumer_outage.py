"""A consumer waits out its database's outage: good messages are never dead-lettered.

The outage is a TCP proxy between the consumer's storage and the shared PostgreSQL
server, cut and restored by the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import pytest

from eventfold.adapters.memory import create_memory_broker
from eventfold.adapters.postgres import PostgresStorage, create_postgres_storage
from eventfold.adapters.redis import create_redis_streams_broker
from eventfold.errors import StoreUnavailableError
from eventfold.ports import Delivery, MessageBroker
from tests.conftest import POSTGRES_DSN, REDIS_URL, drop_schema, require_service, unique_name
from tests.integration.test_inbox import _message, consumer, total
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

EVENTS = 300
WAIT = 60.0


@pytest.fixture
async def proxied_storage() -> AsyncIterator[tuple[PostgresStorage, TcpProxy]]:
    require_service("postgres")
    schema = unique_name("ef")
    direct = create_postgres_storage(POSTGRES_DSN, schema=schema)
    await direct.create_schema()
    await direct.close()
    async with TcpProxy("127.0.0.1", urlsplit(POSTGRES_DSN).port or 5432) as proxy:
        url = POSTGRES_DSN.replace(f":{urlsplit(POSTGRES_DSN).port or 5432}/", f":{proxy.port}/")
        storage = create_postgres_storage(url, schema=schema)
        yield storage, proxy
        await storage.close()
    await drop_schema(schema)


def _memory() -> MessageBroker:
    return create_memory_broker()


def _redis() -> MessageBroker:
    require_service("redis")
    return create_redis_streams_broker(REDIS_URL, prefix=unique_name("ef"))


async def _until(changed: asyncio.Condition, condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT), changed:
            await changed.wait_for(condition)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


@pytest.mark.parametrize("make_broker", [_memory, _redis], ids=["memory", "redis"])
async def test_a_database_outage_is_waited_out_and_no_good_message_is_dead_lettered(
    proxied_storage: tuple[PostgresStorage, TcpProxy], make_broker: Callable[[], MessageBroker]
) -> None:
    storage, proxy = proxied_storage
    broker = make_broker()
    handle = consumer(storage, "totals")
    handled, outages = [0], [0]
    changed = asyncio.Condition()

    async def watched(delivery: Delivery) -> None:
        try:
            await handle(delivery)
        except StoreUnavailableError:
            outages[0] += 1
            raise
        else:
            handled[0] += 1
        finally:
            async with changed:
                changed.notify_all()

    try:
        await broker.subscribe("counters", watched, max_deliveries=5)
        await broker.publish([_message(1) for _ in range(EVENTS)])
        await _until(changed, lambda: handled[0] >= 50, "the first 50 events to be handled")
        await proxy.cut()
        # More failed calls than max_deliveries: each would have spent a try before.
        await _until(changed, lambda: outages[0] >= 8, "the consumer to meet the outage 8 times")
        await proxy.restore()
        await _until(changed, lambda: handled[0] >= EVENTS, f"all {EVENTS} events to be handled")
        assert await broker.read_dead_letters("counters") == []
        assert await total(storage, "totals") == EVENTS
    finally:
        await broker.close()
        destroy = getattr(broker, "destroy", None)
        if destroy is not None:
            await destroy()
            await broker.close()  # destroy() connected again
