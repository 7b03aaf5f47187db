"""A Redis cache (redis-py asyncio): prefixed keys, lazy connection, short timeouts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventfold.errors import PersistenceError, StoreUnavailableError

__all__ = ["RedisCache", "create_redis_cache"]


class RedisCache:
    """Keeps values in Redis under ``prefix + key``; connects on first use."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "eventfold:",
        socket_timeout: float = 0.5,
        connect_timeout: float = 0.5,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._socket_timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._redis: Redis | None = None

    @property
    def prefix(self) -> str:
        """What every key this cache writes starts with."""
        return self._prefix

    def _client(self) -> Redis:
        if self._redis is None:
            # One immediate retry replaces a pooled connection the server dropped; more
            # retries (redis-py's default backs off for seconds) would stall callers that
            # only want to know whether to fall back to the database.
            self._redis = Redis.from_url(
                self._url,
                decode_responses=True,
                socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._connect_timeout,
                retry=Retry(NoBackoff(), 1),
            )
        return self._redis

    async def get(self, key: str) -> str | None:
        """The value under ``key``, or None."""
        try:
            value = await self._client().get(self._prefix + key)
        except (RedisError, OSError) as exc:
            raise _translate(exc) from exc
        return cast("str | None", value)  # decode_responses=True: text, never bytes

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The values under ``keys`` with one MGET."""
        if not keys:
            return []
        try:
            values = await self._client().mget([self._prefix + key for key in keys])
        except (RedisError, OSError) as exc:
            raise _translate(exc) from exc
        return cast("list[str | None]", values)  # decode_responses=True: text, never bytes

    async def set(self, key: str, value: str, *, ttl: float) -> None:
        """SET with a millisecond expiry."""
        try:
            await self._client().set(self._prefix + key, value, px=_millis(ttl))
        except (RedisError, OSError) as exc:
            raise _translate(exc) from exc

    async def delete(self, key: str) -> None:
        """DEL one key."""
        await self.delete_many([key])

    async def delete_many(self, keys: Sequence[str]) -> None:
        """DEL several keys at once."""
        if not keys:
            return
        try:
            await self._client().delete(*[self._prefix + key for key in keys])
        except (RedisError, OSError) as exc:
            raise _translate(exc) from exc

    async def incr(self, key: str, *, ttl: float) -> int:
        """INCR and PEXPIRE in one MULTI/EXEC, so a counter never outlives its expiry."""
        name = self._prefix + key
        try:
            async with self._client().pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.pexpire(name, _millis(ttl))
                value, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _translate(exc) from exc
        return int(value)

    async def close(self) -> None:
        """Close the connection pool; a later call connects again."""
        client, self._redis = self._redis, None
        if client is not None:
            try:
                await client.aclose()
            except (RedisError, OSError) as exc:
                raise _translate(exc) from exc


def _millis(ttl: float) -> int:
    return max(1, round(ttl * 1000))


def _translate(exc: Exception) -> Exception:
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return StoreUnavailableError("redis", str(exc) or type(exc).__name__)
    return PersistenceError(f"redis refused a cache command: {exc}")


def create_redis_cache(
    url: str,
    *,
    prefix: str = "eventfold:",
    socket_timeout: float = 0.5,
    connect_timeout: float = 0.5,
) -> RedisCache:
    """A Redis cache for ``url`` (``redis://host:port/db``); nothing connects until first use."""
    return RedisCache(
        url, prefix=prefix, socket_timeout=socket_timeout, connect_timeout=connect_timeout
    )
