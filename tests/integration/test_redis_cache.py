"""The Redis cache and the caching dispatcher on a real Redis, including an outage and back.

The outage is a TCP proxy this test owns, cut and restored: the shared server is never
touched. Every key lives under a prefix of its own and is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from eventfold.adapters.redis import RedisCache, create_redis_cache
from eventfold.application.persistence.caching import CachingPersistenceDispatcher
from eventfold.application.persistence.dispatcher import PersistenceDispatcher, PersistenceRegistry
from eventfold.errors import StoreUnavailableError
from tests.conftest import REDIS_URL, require_service, unique_name
from tests.contract.test_cache_redis import delete_prefixed
from tests.support.network import closed_port
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.redis


@dataclass
class Account:
    id: str
    balance: int


class Accounts:
    """The source of truth: a dictionary, and a count of loads."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.loads = 0

    async def persist(self, account: Account, uow: Any) -> None:
        self.rows[account.id] = account.balance

    async def fetch(self, ids: list[str], uow: Any) -> list[Account]:
        self.loads += 1
        return [Account(i, self.rows[i]) for i in ids if i in self.rows]


class Unit:
    async def commit(self) -> None:
        """Nothing to make durable: the dictionary is the store."""

    async def __aenter__(self) -> Unit:
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Nothing to release."""


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require_service("redis")
    name = unique_name("efcache") + ":"
    yield name
    await delete_prefixed(name)


@pytest.fixture
async def caches(prefix: str) -> AsyncIterator[Callable[[str], RedisCache]]:
    """Makes Redis caches under the test's prefix and closes them all afterwards."""
    made: list[RedisCache] = []

    def make(url: str = REDIS_URL) -> RedisCache:
        made.append(create_redis_cache(url, prefix=prefix))
        return made[-1]

    yield make
    for cache in made:
        await cache.close()


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    target = urlsplit(REDIS_URL)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as running:
        yield running


def caching(
    accounts: Accounts, cache: RedisCache, **options: Any
) -> CachingPersistenceDispatcher[Any]:
    registry: PersistenceRegistry[Any] = PersistenceRegistry()
    registry.register_operation(Account, accounts)
    registry.register_query(Account, accounts)
    inner = PersistenceDispatcher(registry, {"default": Unit})
    return CachingPersistenceDispatcher(inner, cache, ttl=60, **options)


async def test_an_unreachable_redis_fails_fast_with_store_unavailable() -> None:
    cache = create_redis_cache(f"redis://127.0.0.1:{closed_port()}/0", prefix="never:")
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailableError):
            await cache.get("k")
    finally:
        await cache.close()
    assert time.monotonic() - started < 2


async def test_a_second_fetch_is_served_from_redis(caches: Callable[[str], RedisCache]) -> None:
    accounts = Accounts()
    cache = caches(REDIS_URL)
    dispatcher = caching(accounts, cache)
    await dispatcher.apply(Account("a-1", 10))
    await dispatcher.fetch(Account, ["a-1"])
    assert await dispatcher.fetch(Account, ["a-1"]) == [Account("a-1", 10)]
    assert accounts.loads == 1


async def test_a_write_in_one_process_is_seen_by_readers_in_another(
    caches: Callable[[str], RedisCache],
) -> None:
    accounts = Accounts()
    writer_cache = caches(REDIS_URL)
    reader_cache = caches(REDIS_URL)
    writer, reader = caching(accounts, writer_cache), caching(accounts, reader_cache)
    await writer.apply(Account("a-1", 10))
    await reader.fetch(Account, ["a-1"])
    await writer.apply(Account("a-1", 25))
    assert await reader.fetch(Account, ["a-1"]) == [Account("a-1", 25)]


async def test_reads_keep_working_while_redis_is_cut_off(
    caches: Callable[[str], RedisCache], proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    accounts = Accounts()
    cache = caches(f"redis://127.0.0.1:{proxy.port}/0")
    dispatcher = caching(accounts, cache)
    await dispatcher.apply(Account("a-1", 10))
    await dispatcher.fetch(Account, ["a-1"])
    await proxy.cut()
    with caplog.at_level(logging.WARNING, logger="eventfold.cache"):
        for _ in range(3):
            assert await dispatcher.fetch(Account, ["a-1"]) == [Account("a-1", 10)]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


async def test_a_write_during_an_outage_is_never_hidden_by_the_old_entry(
    caches: Callable[[str], RedisCache], proxy: TcpProxy
) -> None:
    accounts = Accounts()
    cache = caches(f"redis://127.0.0.1:{proxy.port}/0")
    dispatcher = caching(accounts, cache, retry_after=0.05)
    await dispatcher.apply(Account("a-1", 10))
    await dispatcher.fetch(Account, ["a-1"])  # Redis holds balance 10
    await proxy.cut()
    await dispatcher.apply(Account("a-1", 99))  # committed; the invalidation cannot reach Redis
    assert dispatcher.pending_invalidations == 1
    assert await dispatcher.fetch(Account, ["a-1"]) == [Account("a-1", 99)]
    await proxy.restore()
    await asyncio.sleep(0.1)  # past retry_after: the next read tries Redis again
    assert await dispatcher.fetch(Account, ["a-1"]) == [Account("a-1", 99)]
    assert dispatcher.pending_invalidations == 0


async def test_after_an_outage_the_cache_serves_again(
    caches: Callable[[str], RedisCache], proxy: TcpProxy
) -> None:
    accounts = Accounts()
    cache = caches(f"redis://127.0.0.1:{proxy.port}/0")
    dispatcher = caching(accounts, cache, retry_after=0.05)
    await dispatcher.apply(Account("a-1", 10))
    await proxy.cut()
    await dispatcher.fetch(Account, ["a-1"])
    await proxy.restore()
    await asyncio.sleep(0.1)
    await dispatcher.fetch(Account, ["a-1"])
    loads = accounts.loads
    await dispatcher.fetch(Account, ["a-1"])
    assert accounts.loads == loads


async def test_many_readers_and_writers_across_repeated_outages_never_read_a_stale_value(
    caches: Callable[[str], RedisCache], proxy: TcpProxy
) -> None:
    # Past the breaker's limits: 40 concurrent readers and a writer while Redis goes away
    # and comes back three times. Every read succeeds (from Redis or the database) and no
    # read ever returns a balance older than the last one committed before it started.
    accounts = Accounts()
    cache = caches(f"redis://127.0.0.1:{proxy.port}/0")
    dispatcher = caching(accounts, cache, retry_after=0.01)
    await dispatcher.apply(Account("a-1", 0))
    committed = 0
    stale: list[tuple[int, int]] = []

    async def read() -> None:
        floor = committed
        [account] = await dispatcher.fetch(Account, ["a-1"])
        if account.balance < floor:
            stale.append((floor, account.balance))

    async def write(balance: int) -> None:
        nonlocal committed
        await dispatcher.apply(Account("a-1", balance))
        committed = balance

    balance = 0
    for _ in range(3):
        await asyncio.gather(*(read() for _ in range(40)))
        await proxy.cut()
        balance += 1
        await asyncio.gather(write(balance), *(read() for _ in range(40)))
        await proxy.restore()
        balance += 1
        await asyncio.gather(write(balance), *(read() for _ in range(40)))
    assert stale == []
    [account] = await dispatcher.fetch(Account, ["a-1"])
    assert account.balance == balance
