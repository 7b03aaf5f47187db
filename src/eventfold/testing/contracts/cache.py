"""The behaviour every :class:`~eventfold.ports.cache.Cache` must show.

Subclass :class:`CacheContract` in a test module named ``test_*`` and provide a ``cache``
fixture: an isolated, empty cache (its own key prefix) cleaned up afterwards::

    class TestMyCache(CacheContract):
        @pytest.fixture
        async def cache(self) -> AsyncIterator[Cache]:
            cache = create_my_cache(prefix=unique_prefix())
            yield cache
            await cache.close()
"""

from __future__ import annotations

import asyncio

from eventfold.ports.cache import Cache

__all__ = ["CacheContract"]

LONG = 60.0
"""A time to live no test outlasts."""

SHORT = 0.05
"""A time to live a test waits out."""


class CacheContract:
    """Tests every cache adapter passes; subclasses provide the ``cache`` fixture."""

    async def test_an_absent_key_reads_as_none(self, cache: Cache) -> None:
        assert await cache.get("absent") is None

    async def test_a_value_set_is_read_back(self, cache: Cache) -> None:
        await cache.set("k", '{"caf\u00e9": "\u2615"}', ttl=LONG)
        assert await cache.get("k") == '{"caf\u00e9": "\u2615"}'

    async def test_setting_a_key_again_replaces_its_value(self, cache: Cache) -> None:
        await cache.set("k", "old", ttl=LONG)
        await cache.set("k", "new", ttl=LONG)
        assert await cache.get("k") == "new"

    async def test_get_many_answers_position_by_position_with_none_for_absent_keys(
        self, cache: Cache
    ) -> None:
        await cache.set("a", "1", ttl=LONG)
        await cache.set("c", "3", ttl=LONG)
        assert await cache.get_many(["c", "b", "a"]) == ["3", None, "1"]

    async def test_get_many_of_no_keys_is_an_empty_list(self, cache: Cache) -> None:
        assert await cache.get_many([]) == []

    async def test_a_deleted_key_reads_as_none(self, cache: Cache) -> None:
        await cache.set("k", "v", ttl=LONG)
        await cache.delete("k")
        assert await cache.get("k") is None

    async def test_deleting_an_absent_key_is_harmless(self, cache: Cache) -> None:
        await cache.delete("absent")
        await cache.delete_many([])
        assert await cache.get("absent") is None

    async def test_delete_many_forgets_only_the_keys_named(self, cache: Cache) -> None:
        for key in ("a", "b", "c"):
            await cache.set(key, key, ttl=LONG)
        await cache.delete_many(["a", "c"])
        assert await cache.get_many(["a", "b", "c"]) == [None, "b", None]

    async def test_incr_counts_an_absent_key_from_one(self, cache: Cache) -> None:
        assert await cache.incr("n", ttl=LONG) == 1

    async def test_incr_adds_one_each_time_and_reads_back_as_text(self, cache: Cache) -> None:
        await cache.incr("n", ttl=LONG)
        assert await cache.incr("n", ttl=LONG) == 2
        assert await cache.get("n") == "2"

    async def test_a_value_expires_after_its_ttl(self, cache: Cache) -> None:
        await cache.set("k", "v", ttl=SHORT)
        await asyncio.sleep(SHORT * 4)
        assert await cache.get("k") is None

    async def test_a_counter_expires_after_its_ttl_and_restarts_from_one(
        self, cache: Cache
    ) -> None:
        await cache.incr("n", ttl=SHORT)
        await asyncio.sleep(SHORT * 4)
        assert await cache.incr("n", ttl=LONG) == 1

    async def test_a_closed_cache_reconnects_on_next_use(self, cache: Cache) -> None:
        await cache.set("k", "v", ttl=LONG)
        await cache.close()
        assert await cache.get("k") == "v"
