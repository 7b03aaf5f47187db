"""PostgreSQL storage on an asyncpg pool, created lazily on first use."""

from __future__ import annotations

import asyncio
from types import TracebackType
from urllib.parse import urlsplit

import asyncpg
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from eventfold.adapters.postgres.errors import DRIVER_ERRORS, translate
from eventfold.adapters.postgres.listener import CommitNotifier, EventListener
from eventfold.adapters.postgres.session import PostgresSession
from eventfold.adapters.postgres.sql import NOTIFY, NOTIFY_CHANNEL
from eventfold.adapters.sql.schema import metadata

__all__ = ["PostgresStorage", "create_postgres_storage"]

# Any constant works: it only has to be the same in every process running create_schema.
_SCHEMA_LOCK = 0x6576656E74666F6C  # "eventfol"

# How often, at most, live readers are told that events committed (see CommitNotifier):
# short next to a reader's batch, long next to a commit, so a burst costs few NOTIFYs.
_NOTIFY_INTERVAL = 0.02


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _describe_dsn(dsn: str) -> str:
    """``postgres:host:port/database`` for messages: never the password."""
    try:
        parts = urlsplit(dsn)
        port = parts.port or 5432
    except ValueError:
        return "postgres:(invalid DSN)"
    host = parts.hostname or "localhost"
    database = parts.path.lstrip("/") or parts.username or "postgres"
    return f"postgres:{host}:{port}/{database}"


def schema_ddl(schema: str) -> list[str]:
    """The statements that create ``schema`` and eventfold's tables in it, if missing."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    statements = [f"CREATE SCHEMA IF NOT EXISTS {_quote(schema)}"]
    for table in metadata.sorted_tables:
        statements.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        statements.extend(
            str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
            for index in sorted(table.indexes, key=lambda index: str(index.name))
        )
    return statements


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release a connection as it is: sessions leave no session state behind.

    asyncpg's default reset (unlisten, unlock advisory locks, RESET ALL, ...) is a round
    trip per transaction. eventfold's sessions always end their transaction, take only
    transaction-scoped locks and never LISTEN on pooled connections, so there is nothing
    to reset; a user statement that changes session settings (``SET ...``) must use
    ``SET LOCAL``.
    """


_CLOSE_TIMEOUT = 10.0
"""Seconds ``close()`` waits for connections still in use before terminating them."""


class PostgresStorage:
    """A :class:`~eventfold.ports.Storage` on PostgreSQL, with one schema for its tables."""

    def __init__(
        self, dsn: str, *, schema: str, min_size: int, max_size: int, name: str | None
    ) -> None:
        self._dsn = dsn
        self._schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._name = name or _describe_dsn(dsn)
        self._pool: asyncpg.Pool | None = None
        # The pool close() is closing: transactions still running give their connections
        # back to it, so that close() need not wait for them until its timeout.
        self._closing: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        # Connections taken from the pool and kept between transactions (see _release).
        self._idle: list[asyncpg.Connection] = []
        self._listener = EventListener(self._connect, schema, self._name)
        self._notifier = CommitNotifier(self._notify, self._name, _NOTIFY_INTERVAL)

    @property
    def name(self) -> str:
        """What this source is called in messages: ``postgres:host:port/database``."""
        return self._name

    @property
    def schema(self) -> str:
        """The schema holding eventfold's tables."""
        return self._schema

    def transaction(self) -> PostgresTransaction:
        """Open one transaction: committed when the block exits cleanly, else rolled back."""
        return PostgresTransaction(self)

    async def create_schema(self) -> None:
        """Create the schema and eventfold's tables if missing; safe to run concurrently."""
        connection = await self._acquire()
        try:
            async with connection.transaction():
                # CREATE ... IF NOT EXISTS still fails when two sessions create the same
                # object at once; the lock makes concurrent runs take turns.
                await connection.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                for statement in schema_ddl(self._schema):
                    await connection.execute(statement)
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._name) from exc
        finally:
            await self._release(connection, reusable=False)

    def pool_usage(self) -> tuple[int, int, int]:
        """Connections in use, idle, and the most the pool opens (0, 0, max before the first)."""
        pool = self._pool
        if pool is None:
            return 0, 0, self._max_size
        size, idle = pool.get_size(), pool.get_idle_size()
        return size - idle, idle, pool.get_max_size()

    async def wait_for_events(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until new events commit (True) or ``timeout`` seconds pass (False).

        The first call returns True at once: events may have committed before this
        storage started listening, so a reader should read the log again. A wake-up is
        a hint, not a promise: read the log to see what is new, and keep a timeout,
        because events can become readable when an unrelated transaction ends.
        """
        return await self._listener.wait(timeout)

    async def close(self) -> None:
        """Close the listening connection and the pool."""
        await self._notifier.close()
        await self._listener.close()
        pool, self._pool = self._pool, None
        idle, self._idle = self._idle, []
        if pool is None:
            return
        self._closing = pool
        try:
            for connection in idle:
                await self._give_back(pool, connection)
            try:
                await asyncio.wait_for(pool.close(), _CLOSE_TIMEOUT)
            except TimeoutError:
                # A transaction that was never ended still holds a connection: rather than
                # wait for it forever, terminate every connection (the server rolls back).
                pool.terminate()
        finally:
            if self._closing is pool:
                self._closing = None

    async def _acquire(self) -> asyncpg.Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.is_closed():
                return connection
            await self._release(connection, reusable=False)  # the pool replaces it
        pool = self._pool or await self._create_pool()
        try:
            return await pool.acquire()
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._name) from exc

    async def _release(self, connection: asyncpg.Connection, *, reusable: bool) -> None:
        """Keep a connection for the next transaction, or give it back to the pool.

        The pool's release costs about as much as a short statement (a task to shield it,
        a timer, a reset), so a connection whose transaction ended cleanly goes on a stack
        of idle ones instead, and the next transaction takes it without awaiting. It stays
        checked out of the pool, so the pool's size still bounds the connections. One that
        is broken, still in a transaction, or was interrupted mid-statement goes back to the
        pool, which resets it or replaces it.
        """
        pool = self._pool
        if pool is None:
            # Closing: the pool waits for this connection. Once closed, there is none left.
            pool, reusable = self._closing, False
            if pool is None:
                return
        if reusable and not connection.is_closed() and not connection.is_in_transaction():
            self._idle.append(connection)
            return
        await self._give_back(pool, connection)

    @staticmethod
    async def _give_back(pool: asyncpg.Pool, connection: asyncpg.Connection) -> None:
        try:
            await pool.release(connection)
        except DRIVER_ERRORS:
            # The pool has already terminated the broken connection and will open a new
            # one; whatever the transaction did is settled, so there is nothing to report.
            return

    def _events_committed(self) -> None:
        # A transaction that outlived close() wakes no one: notifying would open a new pool.
        if self._pool is not None:
            self._notifier.events_committed()

    async def _notify(self) -> None:
        connection = await self._acquire()
        reusable = False
        try:
            await connection.execute(NOTIFY, NOTIFY_CHANNEL, self._schema)
            reusable = True
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._name) from exc
        finally:
            await self._release(connection, reusable=reusable)

    async def _create_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                try:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=self._min_size,
                        max_size=self._max_size,
                        server_settings=self._server_settings(),
                        reset=_keep_session,
                    )
                except DRIVER_ERRORS as exc:
                    raise translate(exc, self._name) from exc
            return self._pool

    async def _connect(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self._dsn, server_settings=self._server_settings())
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._name) from exc

    def _server_settings(self) -> dict[str, str]:
        return {"search_path": _quote(self._schema)}


class PostgresTransaction:
    """``async with storage.transaction() as session``: one connection, one transaction."""

    __slots__ = ("_connection", "_session", "_storage", "_transaction")

    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage
        self._connection: asyncpg.Connection | None = None
        self._transaction: asyncpg.transaction.Transaction | None = None
        self._session: PostgresSession | None = None

    async def __aenter__(self) -> PostgresSession:
        storage = self._storage
        connection = await storage._acquire()
        transaction = connection.transaction()
        try:
            await transaction.start()
        except BaseException as exc:
            await storage._release(connection, reusable=False)
            if isinstance(exc, DRIVER_ERRORS):
                raise translate(exc, storage.name) from exc
            raise
        self._connection, self._transaction = connection, transaction
        self._session = PostgresSession(connection, storage.name)
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection, transaction, session = self._connection, self._transaction, self._session
        assert connection is not None
        assert transaction is not None
        assert session is not None
        # A cancelled statement may still be cancelling on the server: let the pool see to it.
        ended_cleanly = False
        try:
            session.end()
            if exc_type is None:
                await transaction.commit()
                if session.appended:
                    self._storage._events_committed()
            else:
                await transaction.rollback()
            ended_cleanly = exc_type is None or not issubclass(exc_type, asyncio.CancelledError)
        except DRIVER_ERRORS as error:
            if exc_type is None:
                raise translate(error, self._storage.name) from error
            # Rolling back after a failure that broke the connection fails too; the
            # original error is the one to see.
        finally:
            await self._storage._release(connection, reusable=ended_cleanly)


def create_postgres_storage(
    dsn: str,
    *,
    schema: str = "public",
    min_size: int = 1,
    max_size: int = 10,
    name: str | None = None,
) -> PostgresStorage:
    """A PostgreSQL storage; nothing connects until the first transaction."""
    return PostgresStorage(dsn, schema=schema, min_size=min_size, max_size=max_size, name=name)
