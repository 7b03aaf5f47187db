"""An in-process cache with expiry, driven by an injectable clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

__all__ = ["MemoryCache", "create_memory_cache"]

Clock = Callable[[], float]
"""Seconds on a monotonic scale."""


class MemoryCache:
    """A dictionary of values with deadlines; an expired value reads as absent."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[str, float]] = {}

    async def get(self, key: str) -> str | None:
        """The value under ``key``, or None when it is absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, deadline = entry
        if deadline <= self._clock():
            del self._entries[key]
            return None
        return value

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The values under ``keys``, position by position."""
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: str, *, ttl: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds."""
        self._entries[key] = (value, self._clock() + ttl)

    async def delete(self, key: str) -> None:
        """Forget ``key``."""
        self._entries.pop(key, None)

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Forget every key in ``keys``."""
        for key in keys:
            self._entries.pop(key, None)

    async def incr(self, key: str, *, ttl: float) -> int:
        """Add one to the integer under ``key`` and keep it ``ttl`` seconds."""
        current = await self.get(key)
        value = (0 if current is None else int(current)) + 1
        await self.set(key, str(value), ttl=ttl)
        return value

    async def close(self) -> None:
        """Nothing to release."""


def create_memory_cache(*, clock: Clock = time.monotonic) -> MemoryCache:
    """A fresh in-memory cache."""
    return MemoryCache(clock=clock)
