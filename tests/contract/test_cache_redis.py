"""The cache contract on a real Redis, each test under a key prefix of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from eventfold.adapters.redis import RedisCache, create_redis_cache
from eventfold.testing.contracts.cache import CacheContract
from tests.conftest import REDIS_URL, require_service, unique_name

pytestmark = pytest.mark.redis


async def delete_prefixed(prefix: str) -> None:
    """Remove every key a test wrote (SCAN + DEL on its own prefix only)."""
    client = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


class TestRedisCache(CacheContract):
    @pytest.fixture
    async def cache(self) -> AsyncIterator[RedisCache]:
        require_service("redis")
        prefix = unique_name("efcache") + ":"
        cache = create_redis_cache(REDIS_URL, prefix=prefix)
        yield cache
        await cache.close()
        await delete_prefixed(prefix)
