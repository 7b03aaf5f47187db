"""The cache port: text values under string keys, with a time to live.

A cache holds copies only; losing any key at any time must be harmless. An adapter that
cannot reach its server raises :class:`~eventfold.errors.StoreUnavailableError`, never a
driver exception, so a caller can fall back to the source of truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Cache(Protocol):
    """Key/value copies that expire: what a read-through cache needs and no more."""

    async def get(self, key: str) -> str | None:
        """The value under ``key``, or None when it is absent or expired."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        """The values under ``keys``, position by position, in one round trip."""
        ...

    async def set(self, key: str, value: str, *, ttl: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds (replacing any older value)."""
        ...

    async def delete(self, key: str) -> None:
        """Forget ``key`` (absent keys are fine)."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Forget every key in ``keys``, in one round trip."""
        ...

    async def incr(self, key: str, *, ttl: float) -> int:
        """Add one to the integer under ``key`` (absent counts as 0), keep it ``ttl`` seconds."""
        ...

    async def close(self) -> None:
        """Release connections (the cache may be used again afterwards: it reconnects)."""
        ...
