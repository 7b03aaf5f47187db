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
from eventfold.adapters.postgres.session import KnownHorizon, PostgresSession
from eventfold.adapters.postgres.sql import NOTIFY, NOTIFY_CHANNEL
from eventfold.adapters.sql.schema import metadata
from eventfold.errors import ConfigurationError, StoreUnavailableError

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
    to reset (asyncpg still rolls back a transaction left open, for instance by a
    cancelled task); a user statement that changes session settings (``SET ...``) must
    use ``SET LOCAL``.
    """


_CLOSE_TIMEOUT = 10.0
"""Seconds ``close()`` waits for connections still in use before terminating them."""


class PostgresStorage:
    """A :class:`~eventfold.ports.Storage` on PostgreSQL, with one schema for its tables."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str,
        min_size: int,
        max_size: int,
        acquire_timeout: float,
        name: str | None,
    ) -> None:
        if min_size < 0 or max_size < 1 or min_size > max_size:
            msg = (
                "pool sizes must satisfy 0 <= min_size <= max_size and max_size >= 1, "
                f"got min_size={min_size}, max_size={max_size}"
            )
            raise ConfigurationError(msg)
        if acquire_timeout <= 0:
            msg = f"acquire_timeout must be a positive number of seconds, got {acquire_timeout}"
            raise ConfigurationError(msg)
        self._dsn = dsn
        self._schema = schema
        self._min_size = min_size
        self._max_size = max_size
        self._acquire_timeout = acquire_timeout
        self._name = name or _describe_dsn(dsn)
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._listener = EventListener(self._connect, schema, self._name)
        self._notifier = CommitNotifier(self._notify, self._name, _NOTIFY_INTERVAL)
        self._horizon = KnownHorizon()  # shared by this storage's readers (see session.py)

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
        pool, connection = await self._acquire()
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
            await _release(pool, connection)

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
        """Close the listening connection and the pool.

        Transactions still running keep their connections until they end (at most
        ``close()``'s grace period of 10 s, after which the server rolls them back).
        """
        await self._notifier.close()
        await self._listener.close()
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), _CLOSE_TIMEOUT)
        except TimeoutError:
            # A transaction that was never ended still holds a connection: rather than
            # wait for it forever, terminate every connection (the server rolls back).
            pool.terminate()

    async def _acquire(self) -> tuple[asyncpg.Pool, asyncpg.Connection]:
        """A connection from the pool, and the pool to give it back to.

        asyncpg's pool queues waiting tasks in order and wakes the first when a
        connection comes back, so N tasks on a pool of fewer connections all get
        their turn; waiting is bounded by ``acquire_timeout``.
        """
        pool = self._pool or await self._create_pool()
        try:
            return pool, await pool.acquire(timeout=self._acquire_timeout)
        except TimeoutError as exc:
            raise StoreUnavailableError(
                self._name,
                f"no connection free in its pool of {self._max_size} within "
                f"{self._acquire_timeout:g}s",
                hint="raise max_size or acquire_timeout, or end transactions sooner",
            ) from exc
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._name) from exc

    def _events_committed(self) -> None:
        # A transaction that outlived close() wakes no one: notifying would open a new pool.
        if self._pool is not None:
            self._notifier.events_committed()

    async def _notify(self) -> None:
        # One short statement outside any transaction: the notifier holds a connection
        # for one round trip, waits in the pool's queue like everyone else, and no
        # transaction ever waits for it, so it cannot deadlock one.
        pool, connection = await self._acquire()
        try:
            await connection.execute(NOTIFY, NOTIFY_CHANNEL, self._schema)
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._name) from exc
        finally:
            await _release(pool, connection)

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


async def _release(pool: asyncpg.Pool, connection: asyncpg.Connection) -> None:
    """Give ``connection`` back to ``pool``, which rolls back, waits out or replaces it.

    asyncpg shields the release from cancellation, waits for a cancelled statement to
    finish cancelling, rolls back a transaction left open and terminates a broken
    connection (opening a new one for the next task).
    """
    try:
        await pool.release(connection)
    except DRIVER_ERRORS:
        # The pool has already terminated the broken connection (or was closed, and took
        # the connection down with it); whatever the transaction did is settled.
        return


class PostgresTransaction:
    """``async with storage.transaction() as session``: one connection, one transaction."""

    __slots__ = ("_connection", "_pool", "_session", "_storage")

    def __init__(self, storage: PostgresStorage) -> None:
        self._storage = storage
        self._pool: asyncpg.Pool | None = None
        self._connection: asyncpg.Connection | None = None
        self._session: PostgresSession | None = None

    async def __aenter__(self) -> PostgresSession:
        storage = self._storage
        pool, connection = await storage._acquire()
        session = PostgresSession(connection, storage.name, storage.schema, storage._horizon)
        try:
            await session.begin()
        except BaseException as exc:
            await _release(pool, connection)
            if isinstance(exc, DRIVER_ERRORS):
                raise translate(exc, storage.name) from exc
            raise
        self._pool, self._connection, self._session = pool, connection, session
        return session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pool, connection, session = self._pool, self._connection, self._session
        assert pool is not None
        assert connection is not None
        assert session is not None
        try:
            if exc_type is None:
                await session.commit()
                if session.appended:
                    self._storage._events_committed()
            else:
                await session.rollback()
        except DRIVER_ERRORS as error:
            if exc_type is None:
                raise translate(error, self._storage.name) from error
            # Rolling back after a failure that broke the connection fails too; the
            # original error is the one to see.
        finally:
            # A statement cancelled mid-way may still be cancelling on the server, a
            # broken connection must be replaced: the pool sees to both.
            await _release(pool, connection)


def create_postgres_storage(
    dsn: str,
    *,
    schema: str = "public",
    min_size: int = 1,
    max_size: int = 10,
    acquire_timeout: float = 30.0,
    name: str | None = None,
) -> PostgresStorage:
    """A PostgreSQL storage; nothing connects until the first transaction.

    At most ``max_size`` transactions run at once; the others wait their turn in order,
    and one that waits longer than ``acquire_timeout`` seconds for a connection fails
    with :class:`~eventfold.errors.StoreUnavailableError`.
    """
    return PostgresStorage(
        dsn,
        schema=schema,
        min_size=min_size,
        max_size=max_size,
        acquire_timeout=acquire_timeout,
        name=name,
    )
