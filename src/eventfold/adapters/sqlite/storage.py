"""SQLite storage: one database file, one writer connection and one reader connection.

SQLite lets one writer at a time hold a database. A transaction here reads committed
data through a reader connection, holding no lock, until its first write; then it
takes the writer connection and the write lock (``BEGIN IMMEDIATE``) until it ends.
Writing transactions so run one after another, in the order they first write; other
processes writing the same file wait for the lock up to ``busy_timeout`` seconds. A
``":memory:"`` database has one connection only, so there every transaction takes the
lock at its first statement.

Durability: the database runs in WAL mode with ``synchronous=FULL`` by default, so the
WAL is synced at every commit and a committed transaction survives a power loss.
``synchronous="NORMAL"`` is faster but may lose the last transactions on power loss
(never on a crash of the process alone); choose it only where that is acceptable.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from eventfold.adapters.sql.schema import metadata
from eventfold.adapters.sqlite._thread import Connection, open_connection
from eventfold.adapters.sqlite.session import Db, SqliteSession, commit_jobs
from eventfold.errors import PersistenceError, StoreUnavailableError

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
        self._single = path == ":memory:" or "mode=memory" in path
        self._write_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self._writer_task: asyncio.Task[object] | None = None
        self._writer: Connection | None = None
        self._reader: Connection | None = None
        # Commits waiting to run together (see commit_writes), and the task running them.
        self._queued: list[tuple[Callable[[Db], None], asyncio.Future[None]]] = []
        self._committing: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        """What this source is called in messages."""
        return self._name

    def transaction(self) -> _Transaction:
        """Open one transaction; it connects and locks only when it first needs to."""
        return _Transaction(SqliteSession(self, self._name))

    async def create_schema(self) -> None:
        """Create eventfold's tables and indexes if missing (idempotent)."""
        statements = _schema_ddl()
        async with self.transaction() as session:
            await session.run_ddl(statements)

    async def close(self) -> None:
        """Close the connections; a later transaction opens them again."""
        async with self._write_lock:
            connections = [c for c in (self._reader, self._writer) if c is not None]
            self._reader = self._writer = None
            for connection in connections:
                await connection.close()

    async def reader(self) -> Connection | None:
        """The reader connection, opened on first use; None for a one-connection database."""
        if self._single:
            return None
        if self._reader is None:
            async with self._open_lock:
                if self._reader is None:
                    self._reader = await self._open(read_only=True)
        return self._reader

    async def acquire_writer(self) -> Connection:
        """Wait for the writer connection and keep it until :meth:`release_writer`."""
        task = self._not_holding_the_lock()
        await self._write_lock.acquire()
        self._writer_task = task
        try:
            if self._writer is None:
                self._writer = await self._open(read_only=False)
        except BaseException:
            self.release_writer()
            raise
        return self._writer

    def _not_holding_the_lock(self) -> asyncio.Task[Any] | None:
        """The current task, which must not hold the write lock already."""
        task = asyncio.current_task()
        if self._write_lock.locked() and task is not None and self._writer_task is task:
            # Waiting would wait for ourselves: fail loudly instead of hanging.
            msg = (
                f"{self._name}: this task already has a writing transaction open and "
                "SQLite has one writer at a time; end that transaction first"
            )
            raise PersistenceError(msg)
        return task

    def release_writer(self) -> None:
        """Let the next transaction write."""
        self._writer_task = None
        self._write_lock.release()

    async def commit_writes(self, job: Callable[[Db], None]) -> None:
        """Run ``job`` (one transaction's writes) and commit it; raise what it raised.

        Group commit: the jobs of transactions that commit while another one holds the
        write lock wait together and then run in one SQLite transaction, one savepoint
        each, with one COMMIT - one fsync for all of them instead of one each. Each is
        reported committed only once that COMMIT succeeded; one that conflicts is rolled
        back alone and gets its own error.
        """
        if self._committing is None and not self._write_lock.locked():
            # Nobody to wait for: commit at once, without a task to gather a group.
            writer = await self.acquire_writer()
            try:
                await writer.run(lambda db: commit_jobs(db, [job]))
            finally:
                self.release_writer()
            return
        self._not_holding_the_lock()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.append((job, future))
        if self._committing is None:
            self._committing = asyncio.create_task(self._commit_queued())
        await future

    async def _commit_queued(self) -> None:
        try:
            writer = await self.acquire_writer()
        except BaseException as exc:
            jobs = self._take_queued()
            _settle([future for _, future in jobs], exc)
            if not isinstance(exc, Exception):
                raise  # cancelled: the waiting commits were told
            return
        jobs = self._take_queued()  # later commits form the next group
        try:
            outcomes = await writer.run(lambda db: commit_jobs(db, [job for job, _ in jobs]))
        except BaseException as exc:  # noqa: BLE001 - the COMMIT failed: none is stored
            _settle([future for _, future in jobs], exc)
        else:
            for (_, future), outcome in zip(jobs, outcomes, strict=True):
                _settle([future], outcome)
        finally:
            self.release_writer()

    def _take_queued(self) -> list[tuple[Callable[[Db], None], asyncio.Future[None]]]:
        jobs, self._queued = self._queued, []
        self._committing = None
        return jobs

    async def _open(self, *, read_only: bool) -> Connection:
        try:
            return await open_connection(
                self._path,
                busy_timeout=self._busy_timeout,
                synchronous=self._synchronous,
                read_only=read_only,
            )
        except sqlite3.Error as exc:
            raise StoreUnavailableError(self._name, str(exc)) from exc


def _settle(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # its awaiting task was cancelled meanwhile
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class _Transaction:
    """``async with storage.transaction() as session``: commit on success, else roll back."""

    __slots__ = ("_session",)

    def __init__(self, session: SqliteSession) -> None:
        self._session = session

    async def __aenter__(self) -> SqliteSession:
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self._session.finish(commit=exc_type is None)


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
