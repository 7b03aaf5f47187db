"""Wake-ups for live readers of the global log, through LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from eventfold.adapters.postgres.errors import DRIVER_ERRORS, translate
from eventfold.adapters.postgres.sql import NOTIFY_CHANNEL
from eventfold.errors import PersistenceError

__all__ = ["CommitNotifier", "EventListener"]

logger = logging.getLogger("eventfold.postgres")

_CLOSE_TIMEOUT = 5.0
"""Seconds to close the listening connection politely before terminating it."""


class EventListener:
    """One dedicated connection LISTENing for appends to one schema, opened on first wait.

    The connection is its own, outside the pool: listening never takes a connection a
    transaction needs. Waiters that arrive while it connects share that one attempt, and
    a waiter that gives up (times out, is cancelled) does not abandon it half-open.
    """

    def __init__(
        self, connect: Callable[[], Awaitable[asyncpg.Connection]], schema: str, store: str
    ) -> None:
        self._connect = connect
        self._schema = schema
        self._store = store
        self._connection: asyncpg.Connection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109
        """True once a notification arrived since the last wake-up, False after ``timeout``."""
        if self._connection is None or self._connection.is_closed():
            await self._listening()
        try:
            await asyncio.wait_for(self._woken.wait(), timeout)
        except TimeoutError:
            return False
        self._woken.clear()
        return True

    async def close(self) -> None:
        """Stop listening and close the connection."""
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, PersistenceError):
                await connecting
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=_CLOSE_TIMEOUT)
            except DRIVER_ERRORS:
                connection.terminate()  # the server ends a session whose socket is gone
            except asyncio.CancelledError:
                connection.terminate()
                raise

    async def _listening(self) -> None:
        """Open the listening connection, or wait for the attempt already under way."""
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._listen())
        # Shielded: a waiter that gives up leaves the attempt to finish for the others.
        await asyncio.shield(self._connecting)

    async def _listen(self) -> None:
        try:
            connection = await self._connect()
            try:
                await connection.add_listener(NOTIFY_CHANNEL, self._on_notification)
            except BaseException as exc:
                connection.terminate()
                if isinstance(exc, DRIVER_ERRORS):
                    raise translate(exc, self._store) from exc
                raise
            connection.add_termination_listener(self._on_termination)
            self._connection = connection
            # Events may have committed before LISTEN took effect: wake the reader once.
            self._woken.set()
        finally:
            if self._connecting is asyncio.current_task():
                self._connecting = None

    def _on_notification(
        self, _connection: object, _pid: int, _channel: str, payload: object
    ) -> None:
        if payload == self._schema:
            self._woken.set()

    def _on_termination(self, _connection: object) -> None:
        # The next wait reconnects, and wakes the reader at once for what it missed.
        self._connection = None
        self._woken.set()


class CommitNotifier:
    """Tells listeners that events committed, from outside the transactions that wrote them.

    A NOTIFY sent inside a transaction takes a cluster-wide lock at commit and holds it
    until the commit is flushed to disk, so appenders that notify commit one at a time.
    This sends ``NOTIFY`` after the commit instead, as a statement of its own, at most one
    at a time and at most one per ``interval``: the first commit after a quiet spell is
    announced at once, a burst of commits costs one notification per interval.
    """

    def __init__(
        self, notify: Callable[[], Awaitable[object]], store: str, interval: float
    ) -> None:
        self._notify = notify
        self._store = store
        self._interval = interval
        self._pending = False
        self._task: asyncio.Task[None] | None = None

    def events_committed(self) -> None:
        """Note that a transaction that appended events committed; listeners hear soon."""
        self._pending = True
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._send())

    async def close(self) -> None:
        """Stop sending (a notification still pending is dropped)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _send(self) -> None:
        try:
            while self._pending:
                self._pending = False
                await self._notify()
                await asyncio.sleep(self._interval)
        except PersistenceError as exc:
            # The events are committed; a lost wake-up only delays readers until their
            # next timeout, so this is not the committer's error to see.
            logger.warning("%s: could not notify live readers: %s", self._store, exc)
        finally:
            self._task = None
