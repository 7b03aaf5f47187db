"""SQLite storage: one database file, one connection, one transaction at a time.

SQLite lets one writer at a time hold a database, so this storage runs its
transactions one after another, in the order tasks open them, on a single connection
served by its own thread. Every transaction begins as ``BEGIN IMMEDIATE``; other
processes writing the same file wait for the lock up to ``busy_timeout`` seconds.

Durability: the database runs in WAL mode with ``synchronous=FULL`` by default, so the
WAL is synced at every commit and a committed transaction survives a power loss.
``synchronous="NORMAL"`` is faster but may lose the last transactions on power loss
(never on a crash of the process alone); choose it only where that is acceptable.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from types import TracebackType
from typing import Literal

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from eventfold.adapters.sql.schema import metadata
from eventfold.adapters.sqlite._thread import ConnectionThread, open_connection
from eventfold.adapters.sqlite.session import SqliteSession
from eventfold.errors import StoreUnavailableError

__all__ = ["SqliteStorage", "create_sqlite_storage"]

Synchronous = Literal["FULL", "NORMAL"]


def _schema_ddl() -> list[str]:
    """``CREATE ... IF NOT EXISTS`` for every eventfold table and index, for SQLite."""
    dialect = sqlite_dialect.dialect()
    statements: list[str] = []
    for table in metadata.sorted_tables:
        statements.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        statements.extend(
            str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
            for index in sorted(table.indexes, key=lambda index: str(index.name))
        )
    return statements


class SqliteStorage:
    """eventfold's storage in one SQLite database file (or ``":memory:"``)."""

    def __init__(
        self,
        path: str,
        *,
        name: str | None = None,
        busy_timeout: float = 5.0,
        synchronous: Synchronous = "FULL",
    ) -> None:
        self._path = path
        self._name = name or f"sqlite:{path}"
        self._busy_timeout = busy_timeout
        self._synchronous = synchronous
        self._lock = asyncio.Lock()
        self._thread: ConnectionThread | None = None
        self._db: sqlite3.Connection | None = None

    @property
    def name(self) -> str:
        """What this source is called in messages."""
        return self._name

    def transaction(self) -> _Transaction:
        """Open one transaction; it waits for the one before it to end."""
        return _Transaction(self)

    async def create_schema(self) -> None:
        """Create eventfold's tables and indexes if missing (idempotent)."""
        statements = _schema_ddl()
        async with self.transaction() as session:
            await session.run_ddl(statements)

    async def close(self) -> None:
        """Close the connection; a later transaction opens it again."""
        async with self._lock:
            thread, db = self._thread, self._db
            self._thread = self._db = None
            if thread is not None and db is not None:
                await thread.stop(db.close)

    async def _session(self) -> SqliteSession:
        if self._thread is None or self._db is None:
            await self._open()
        assert self._thread is not None
        assert self._db is not None
        return SqliteSession(self._thread, self._db, self._name)

    async def _open(self) -> None:
        thread = ConnectionThread(f"eventfold-{self._name}")
        path = os.fspath(self._path)
        try:
            self._db = await thread.run(
                lambda: open_connection(
                    path,
                    busy_timeout=self._busy_timeout,
                    synchronous=self._synchronous,
                    uri=path.startswith("file:"),
                )
            )
        except sqlite3.Error as exc:
            await thread.stop(lambda: None)
            raise StoreUnavailableError(self._name, str(exc)) from exc
        self._thread = thread


class _Transaction:
    """``async with storage.transaction() as session``: commit on success, else roll back."""

    __slots__ = ("_session", "_storage")

    def __init__(self, storage: SqliteStorage) -> None:
        self._storage = storage
        self._session: SqliteSession | None = None

    async def __aenter__(self) -> SqliteSession:
        lock = self._storage._lock
        await lock.acquire()
        try:
            self._session = await self._storage._session()
        except BaseException:
            lock.release()
            raise
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        try:
            if session is not None:
                await session.finish(commit=exc_type is None)
        finally:
            self._storage._lock.release()


def create_sqlite_storage(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    busy_timeout: float = 5.0,
    synchronous: Synchronous = "FULL",
) -> SqliteStorage:
    """A storage on the SQLite database at ``path``; nothing is opened until first use.

    ``path`` may be ``":memory:"`` for a database that lives as long as the storage is
    open, or a ``file:`` URI. ``busy_timeout`` is how long to wait, in seconds, for
    another process's write lock. See the module docstring on ``synchronous``.
    """
    return SqliteStorage(
        os.fspath(path), name=name, busy_timeout=busy_timeout, synchronous=synchronous
    )
