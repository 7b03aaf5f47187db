"""Wake-ups for live readers of the global log, through LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from eventfold.adapters.postgres.errors import DRIVER_ERRORS, translate
from eventfold.adapters.postgres.sql import NOTIFY_CHANNEL

__all__ = ["EventListener"]


class EventListener:
    """One dedicated connection LISTENing for appends to one schema, opened on first wait."""

    def __init__(
        self, connect: Callable[[], Awaitable[asyncpg.Connection]], schema: str, store: str
    ) -> None:
        self._connect = connect
        self._schema = schema
        self._store = store
        self._connection: asyncpg.Connection | None = None
        self._woken = asyncio.Event()

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109
        """True once a notification arrived since the last wake-up, False after ``timeout``."""
        if self._connection is None or self._connection.is_closed():
            await self._listen()
        try:
            await asyncio.wait_for(self._woken.wait(), timeout)
        except TimeoutError:
            return False
        self._woken.clear()
        return True

    async def close(self) -> None:
        """Stop listening and close the connection."""
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            await connection.close()

    async def _listen(self) -> None:
        connection = await self._connect()
        try:
            await connection.add_listener(NOTIFY_CHANNEL, self._on_notification)
        except DRIVER_ERRORS as exc:
            connection.terminate()
            raise translate(exc, self._store) from exc
        connection.add_termination_listener(self._on_termination)
        self._connection = connection
        # Events may have committed before LISTEN took effect: wake the reader once.
        self._woken.set()

    def _on_notification(
        self, _connection: object, _pid: int, _channel: str, payload: object
    ) -> None:
        if payload == self._schema:
            self._woken.set()

    def _on_termination(self, _connection: object) -> None:
        # The next wait reconnects, and wakes the reader at once for what it missed.
        self._connection = None
        self._woken.set()
