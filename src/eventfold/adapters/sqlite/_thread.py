"""One sqlite3 connection served by a thread of its own.

sqlite3 blocks, so its calls run off the event loop. aiosqlite does the same, but hops
to its thread once per statement and once more per fetch; here one hop runs a whole
operation (check the version, insert the batch, decode the rows), which is what makes
eventfold's SQLite adapter faster than the same statements issued through aiosqlite.

Kept because ``python -m benchmarks`` (SQLite workloads W1-W3 and W6) measures it; it
leans on the standard library's sqlite3 only. Its stress test, past the limits of one
write lock, is ``tests/integration/test_sqlite_thread_stress.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

from eventfold.adapters.sql.sortable import register_functions

T = TypeVar("T")

_Work = tuple[Callable[[], Any], asyncio.Future[Any] | None, asyncio.AbstractEventLoop | None]


class ConnectionThread:
    """Runs callables on one thread, in the order they were submitted."""

    def __init__(self, name: str) -> None:
        self._queue: SimpleQueue[_Work | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the thread and return its result (or raise its exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((work, future, loop))
        return await future

    def submit(self, work: Callable[[], object]) -> None:
        """Queue ``work`` without waiting for it; it must not raise (nothing would see it)."""
        self._queue.put((work, None, None))

    async def stop(self, last: Callable[[], object]) -> None:
        """Run ``last`` (closing the connection), then end the thread."""
        try:
            await self.run(last)
        finally:
            self._queue.put(None)

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            work, future, loop = item
            if future is None or loop is None:
                # Nobody waits for this result; an escaping error must not end the thread.
                with contextlib.suppress(Exception):
                    work()
                continue
            try:
                result = work()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                loop.call_soon_threadsafe(_fail, future, exc)
            else:
                loop.call_soon_threadsafe(_succeed, future, result)


def _succeed(future: asyncio.Future[Any], result: object) -> None:
    if not future.done():  # the awaiting task may have been cancelled meanwhile
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class Connection:
    """A sqlite3 connection and the thread that serves it."""

    __slots__ = ("_thread", "db")

    def __init__(self, thread: ConnectionThread, db: sqlite3.Connection) -> None:
        self._thread = thread
        self.db = db

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(db)`` on the connection's thread."""
        db = self.db
        return await self._thread.run(lambda: work(db))

    def submit(self, work: Callable[[sqlite3.Connection], object]) -> None:
        """Queue ``work(db)`` without waiting; it must not raise."""
        db = self.db
        self._thread.submit(lambda: work(db))

    async def close(self) -> None:
        """Close the connection and end its thread."""
        await self._thread.stop(self.db.close)


async def open_connection(
    path: str, *, busy_timeout: float, synchronous: str, read_only: bool
) -> Connection:
    """Open ``path`` on a thread of its own, in autocommit mode (eventfold issues BEGIN)."""
    thread = ConnectionThread(f"eventfold-sqlite-{'reader' if read_only else 'writer'}")
    try:
        db = await thread.run(lambda: _connect(path, busy_timeout, synchronous, read_only))
    except BaseException:
        await thread.stop(lambda: None)
        raise
    return Connection(thread, db)


def _connect(
    path: str, busy_timeout: float, synchronous: str, read_only: bool
) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
        uri=path.startswith("file:"),
    )
    try:
        # WAL lets readers (this storage's reader connection, other processes) go on
        # while one writer writes.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        if read_only:
            connection.execute("PRAGMA query_only=ON")
        register_functions(connection)  # exact order of decimals and datetimes in queries
    except BaseException:
        connection.close()
        raise
    return connection
