"""The cache contract on the in-memory cache."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventfold.adapters.memory.cache import MemoryCache, create_memory_cache
from eventfold.testing.contracts.cache import CacheContract


class TestMemoryCache(CacheContract):
    @pytest.fixture
    async def cache(self) -> AsyncIterator[MemoryCache]:
        cache = create_memory_cache()
        yield cache
        await cache.close()
