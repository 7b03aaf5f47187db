"""One PostgreSQL transaction on one pooled asyncpg connection."""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NoReturn
from uuid import UUID

from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from eventfold.adapters.postgres import sql
from eventfold.adapters.postgres.errors import DRIVER_ERRORS, translate
from eventfold.adapters.sql.documents import (
    clear_document_collection,
    move_document_collection,
    search_document_records,
)
from eventfold.adapters.sql.statements import compile_many, compile_statement
from eventfold.application.readside.queries import QueryOptions, SearchResult
from eventfold.domain.specification import FieldSet
from eventfold.errors import CheckpointConflictError, ConcurrencyError, PersistenceError
from eventfold.ports.checks import (
    check_document,
    check_events,
    check_keys,
    check_outbox,
    check_snapshot,
    check_stream,
    check_writes,
)
from eventfold.ports.records import (
    LOG_START,
    DocumentRecord,
    EventRecord,
    ExpectedVersion,
    HorizonBlocker,
    LogHorizon,
    LogPosition,
    OutboxEntry,
    OutboxMessage,
    SnapshotRecord,
    StoredEvent,
    StreamState,
    Write,
)
from eventfold.ports.storage import apply_writes

if TYPE_CHECKING:
    import asyncpg
    from sqlalchemy.sql.base import Executable

__all__ = ["KnownHorizon", "PostgresSession"]

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]
_JSON_TYPES = frozenset({"json", "jsonb"})

_ANY = -1
"""How "any version" travels to the append statement."""


def _expected_number(expected: ExpectedVersion) -> int:
    if expected is StreamState.ANY:
        return _ANY
    if expected is StreamState.NO_STREAM:
        return 0
    return expected


def _describe(expected: ExpectedVersion) -> object:
    return expected.value if isinstance(expected, StreamState) else expected


def _event_arrays(events: Sequence[EventRecord]) -> tuple[list[Any], ...]:
    """The batch as one array per column: the append statement unnests them."""
    return (
        [e.event_id for e in events],
        [e.type_name for e in events],
        [e.schema_version for e in events],
        [e.data for e in events],
        [e.occurred_at for e in events],
        [e.correlation_id for e in events],
        [e.causation_id for e in events],
        [e.actor for e in events],
    )


def _outbox_arrays(messages: Sequence[OutboxMessage]) -> tuple[list[Any], ...]:
    return (
        [m.event_id for m in messages],
        [m.type_name for m in messages],
        [m.schema_version for m in messages],
        [m.aggregate_type for m in messages],
        [m.aggregate_id for m in messages],
        [m.data for m in messages],
        [m.occurred_at for m in messages],
        [m.correlation_id for m in messages],
        [m.causation_id for m in messages],
        [m.actor for m in messages],
        [m.traceparent for m in messages],
    )


def _decode_json(
    rows: list[dict[str, Any]], attributes: Sequence[asyncpg.Attribute]
) -> list[dict[str, Any]]:
    """Decode JSON columns, as SQLAlchemy's asyncpg dialect does with its type codec."""
    names = [a.name for a in attributes if a.type.name in _JSON_TYPES]
    for row in rows:
        for name in names:
            value = row.get(name)
            if isinstance(value, str):
                row[name] = json.loads(value)
    return rows


class _EndedConnection:
    """Stands in for the connection of a session whose transaction has ended.

    The connection goes on to serve other transactions: a session kept past its block
    must fail loudly rather than run statements inside someone else's transaction.
    """

    def __getattr__(self, name: str) -> NoReturn:
        msg = "this storage session's transaction has ended: open a new transaction"
        raise PersistenceError(msg)


_ENDED: Any = _EndedConnection()


def _outbox_entry(row: asyncpg.Record) -> OutboxEntry:
    message = OutboxMessage(
        row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9], row[10], row[18]
    )
    return OutboxEntry(row[0], message, *row[11:18])


_HORIZON_MAX_AGE = 0.01
"""Seconds a reader held back by an open transaction goes without looking for writers
again: reading pg_locks at every page cost a tailing reader's writers a sixth of their
throughput; this bounds the extra latency of an event held back to about 10 ms."""


class KnownHorizon:
    """The latest horizon a storage's readers computed, shared by them.

    A horizon stays valid for good (no event can ever appear below it), so a reader may
    read below the greatest one known without looking again; it looks again only when
    committed events lie above it and the known one is older than ``_HORIZON_MAX_AGE``.
    """

    __slots__ = ("at", "value")

    def __init__(self) -> None:
        self.value = 0
        self.at = float("-inf")

    def stale(self) -> bool:
        """Whether it is time to look for writers again."""
        return time.monotonic() - self.at > _HORIZON_MAX_AGE

    def learn(self, value: int) -> None:
        """Keep ``value`` if it is greater (a horizon computed later never goes back)."""
        self.value = max(self.value, value)
        self.at = time.monotonic()


class PostgresSession:
    """A :class:`~eventfold.ports.StorageSession` inside one open PostgreSQL transaction."""

    __slots__ = (
        "_begin",
        "_connection",
        "_known",
        "_store",
        "_writer_key",
        "appended",
        "readable_at",
    )

    def __init__(
        self, connection: asyncpg.Connection, store: str, schema: str, known: KnownHorizon
    ) -> None:
        self._connection = connection
        self._known = known
        self._store = store
        self._writer_key = sql.writer_key(schema)
        self._begin = sql.begin_writer(schema)
        self.appended = False
        """Whether events were appended: the storage wakes live readers after the commit."""
        self.readable_at: LogPosition | None = None
        """The log position of the last event appended (None before any): once the log's
        readable head reaches it, a reader sees every event of this transaction."""

    async def begin(self) -> None:
        """Start the transaction, visible to log readers as a possible writer of the store.

        Registered first, before any statement can give it a transaction id: readers hold
        the log back only for registered writers (see sql.py). Driver errors are the
        caller's to translate, as for :meth:`commit` and :meth:`rollback`.
        """
        await self._connection.execute(self._begin)

    async def commit(self) -> None:
        """Commit; the session cannot be used afterwards."""
        connection, self._connection = self._connection, _ENDED
        await connection.execute(sql.COMMIT)

    async def rollback(self) -> None:
        """Roll back; the session cannot be used afterwards."""
        connection, self._connection = self._connection, _ENDED
        await connection.execute(sql.ROLLBACK)

    # -- streams -----------------------------------------------------------------------

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        as_of: datetime | None = None,
    ) -> list[StoredEvent]:
        """A stream's events in version order, within the bounds, occurring by ``as_of``."""
        as_of = check_stream(stream_id, as_of)
        rows = await self._fetch(sql.READ_STREAM, stream_id, from_version, to_version, as_of)
        return [StoredEvent(*row) for row in rows]

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version: 0 when it does not exist."""
        check_stream(stream_id)
        version: int = await self._fetchval(sql.STREAM_VERSION, stream_id)
        return version

    async def append(
        self, stream_id: str, events: Sequence[EventRecord], *, expected_version: ExpectedVersion
    ) -> int:
        """Append ``events`` in one statement; on conflict store nothing, raise."""
        check_events(stream_id, events)
        expected = _expected_number(expected_version)
        if not events:
            return await self._check_unchanged(stream_id, expected_version, expected)
        if expected == _ANY:
            version = await self._append_any(stream_id, events)
        else:
            version = await self._append_at(stream_id, events, expected, expected_version)
        self.appended = True
        return version

    async def _append_at(
        self,
        stream_id: str,
        events: Sequence[EventRecord],
        expected: int,
        expected_version: ExpectedVersion,
    ) -> int:
        if len(events) == 1:
            stored = await self._append_one(stream_id, expected, events[0])
        else:
            stored = await self._append_batch(stream_id, expected, events)
        if stored:
            return expected + len(events)
        # The stream was not at `expected`, a concurrent writer got there first, or the
        # stream was last written by a transaction younger than this one (see sql.py).
        actual = await self.stream_version(stream_id)
        raise ConcurrencyError(stream_id, _describe(expected_version), actual)

    async def _append_one(self, stream_id: str, expected: int, e: EventRecord) -> bool:
        row = await self._fetchrow(
            sql.APPEND_ONE,
            stream_id,
            expected,
            e.event_id,
            e.type_name,
            e.schema_version,
            e.data,
            e.occurred_at,
            e.correlation_id,
            e.causation_id,
            e.actor,
        )
        if row is None:
            return False
        self._appended_up_to(row[0], row[1])
        return True

    async def _append_batch(
        self, stream_id: str, expected: int, events: Sequence[EventRecord]
    ) -> bool:
        rows = await self._fetch(sql.APPEND_MANY, stream_id, expected, *_event_arrays(events))
        if len(rows) == len(events):
            self._appended_up_to(rows[-1][0], max(row[1] for row in rows))
            return True
        await self._undo([row[1] for row in rows])
        return False

    def _appended_up_to(self, commit_id: int, position: int) -> None:
        # One transaction, one commit_id: the position alone grows.
        if self.readable_at is None or position > self.readable_at.position:
            self.readable_at = LogPosition(commit_id, position)

    async def _append_any(self, stream_id: str, events: Sequence[EventRecord]) -> int:
        # Appenders that expect nothing would race each other for the next version and,
        # once one holds a transaction id, could lose to a younger transaction for good
        # (see sql.py); taking turns per stream avoids both. The lock is a statement of
        # its own so the append's snapshot is taken after it.
        await self._execute(sql.LOCK_STREAM, stream_id)
        arrays = _event_arrays(events)
        previous_head = None
        while True:
            head, positions, commit_id = await self._fetchrow(sql.APPEND_ANY, stream_id, *arrays)
            if positions is not None and len(positions) == len(events):
                self._appended_up_to(commit_id, max(positions))
                return int(head) + len(events)
            await self._undo(positions)
            if head == previous_head:
                break
            # Lost a race to an exact-version writer that has committed since: try on
            # top of it. A head that did not move means retrying cannot help.
            previous_head = head
        actual = await self.stream_version(stream_id)
        raise ConcurrencyError(stream_id, StreamState.ANY.value, actual)

    async def _undo(self, positions: list[int] | None) -> None:
        """Take back the part of a batch that was inserted before a conflict.

        So nothing of the batch stays; the rows were never visible to anyone else.
        """
        if positions:
            await self._execute(sql.UNDO_APPEND, positions)

    async def _check_unchanged(
        self, stream_id: str, expected_version: ExpectedVersion, expected: int
    ) -> int:
        current = await self.stream_version(stream_id)
        if expected not in (_ANY, current):
            raise ConcurrencyError(stream_id, _describe(expected_version), current)
        return current

    # -- global log --------------------------------------------------------------------

    async def read_log(
        self, *, after: LogPosition, limit: int, types: Collection[str] | None = None
    ) -> list[StoredEvent]:
        """Up to ``limit`` events after ``after`` in log order, optionally of some types only."""
        horizon = self._known.value
        page, held = await self._read_page(after, limit, types, horizon)
        if held and len(page) < limit and self._known.stale():
            # Committed events lie above the horizon: look for the writers that hold them.
            fresh = await self._horizon()
            if fresh > horizon:
                after = page[-1].log_position if page else after
                more, _ = await self._read_page(after, limit - len(page), types, fresh)
                page.extend(more)
        return page

    async def _read_page(
        self, after: LogPosition, limit: int, types: Collection[str] | None, horizon: int
    ) -> tuple[list[StoredEvent], bool]:
        """The page below ``horizon`` (or the snapshot's xmin), and whether events lie above."""
        commit, position = after
        if types is None:
            rows = await self._fetch(sql.READ_LOG, commit, position, limit, horizon)
        else:
            rows = await self._fetch(
                sql.READ_LOG_OF_TYPES, commit, position, limit, horizon, list(types)
            )
        page = [StoredEvent(*row[1:]) for row in rows if row[1] is not None]
        return page, bool(rows[0][0])

    async def log_head(self) -> LogPosition:
        """The position of the last readable event (``LOG_START`` for an empty log)."""
        row = await self._fetchrow(sql.LOG_HEAD, await self._horizon())
        return LOG_START if row is None else LogPosition(row[0], row[1])

    async def count_after(self, after: LogPosition) -> int:
        """How many readable events follow ``after``."""
        horizon = await self._horizon()
        count: int = await self._fetchval(sql.COUNT_AFTER, after[0], after[1], horizon)
        return count

    async def log_horizon(self) -> LogHorizon:
        """The readable and the committed head, and what keeps the rest from being readable."""
        horizon = await self._horizon()
        readable = await self._fetchrow(sql.LOG_HEAD, horizon)
        committed = await self._fetchrow(sql.COMMITTED_HEAD)
        unreadable: int = await self._fetchval(sql.COUNT_UNREADABLE, horizon)
        blocker = None
        if unreadable:
            row = await self._fetchrow(sql.HORIZON_BLOCKER, self._writer_key)
            blocker = None if row is None else HorizonBlocker(*row)
        return LogHorizon(
            readable_head=LOG_START if readable is None else LogPosition(*readable),
            committed_head=LOG_START if committed is None else LogPosition(*committed),
            unreadable=unreadable,
            blocker=blocker,
        )

    async def _horizon(self) -> int:
        """The ``commit_id`` below which every event is committed for good.

        A statement of its own: the statement that reads below it takes a newer snapshot,
        which sees every writer that had ended when the horizon was read (see sql.py).
        """
        horizon: int = await self._fetchval(sql.READ_HORIZON, self._writer_key)
        self._known.learn(horizon)
        return horizon

    # -- snapshots ---------------------------------------------------------------------

    async def load_snapshot(self, stream_id: str) -> SnapshotRecord | None:
        """The latest snapshot of a stream, if any."""
        check_stream(stream_id)
        row = await self._fetchrow(sql.LOAD_SNAPSHOT, stream_id)
        return None if row is None else SnapshotRecord(*row)

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Keep ``snapshot`` as the stream's latest (replacing an older one)."""
        check_snapshot(snapshot)
        await self._execute(
            sql.SAVE_SNAPSHOT,
            snapshot.stream_id,
            snapshot.version,
            snapshot.state_type,
            snapshot.schema_version,
            snapshot.data,
            snapshot.taken_at,
        )

    # -- documents ---------------------------------------------------------------------

    async def load_document(self, collection: str, key: str) -> DocumentRecord | None:
        """The document, or None."""
        check_document(collection, key)
        row = await self._fetchrow(sql.LOAD_DOCUMENT, collection, key)
        return None if row is None else DocumentRecord(*row)

    async def load_documents(self, collection: str, keys: Sequence[str]) -> list[DocumentRecord]:
        """The documents that exist among ``keys``, in no particular order."""
        check_keys(collection, keys)
        rows = await self._fetch(sql.LOAD_DOCUMENTS, collection, list(keys))
        return [DocumentRecord(*row) for row in rows]

    async def save_document(
        self, collection: str, key: str, data: str, *, expected_version: int
    ) -> int:
        """Insert (``expected_version=0``) or update a document; return its new version."""
        check_document(collection, key, data)
        if expected_version == 0:
            version = await self._fetchval(sql.INSERT_DOCUMENT, collection, key, data)
        else:
            version = await self._fetchval(
                sql.UPDATE_DOCUMENT, collection, key, data, expected_version
            )
        if version is None:
            await self._document_conflict(collection, key, expected_version)
        return int(version)

    async def delete_document(self, collection: str, key: str, *, expected_version: int) -> None:
        """Delete a document at the expected version."""
        check_document(collection, key)
        deleted = None
        if expected_version != 0:
            deleted = await self._fetchval(sql.DELETE_DOCUMENT, collection, key, expected_version)
        if deleted is None:
            await self._document_conflict(collection, key, expected_version)

    def search_documents(
        self, collection: str, options: QueryOptions, fields: FieldSet
    ) -> SearchResult[DocumentRecord]:
        """The documents of ``collection`` that ``options`` select, page by page."""
        return search_document_records(self, collection, options, fields)

    async def clear_documents(self, collection: str) -> int:
        """Delete every document of ``collection``; return how many."""
        return await clear_document_collection(self, collection)

    async def move_documents(self, source: str, target: str) -> int:
        """Replace every document of ``target`` with those of ``source``; return how many."""
        return await move_document_collection(self, source, target)

    async def _document_conflict(self, collection: str, key: str, expected_version: int) -> None:
        actual: int = await self._fetchval(sql.DOCUMENT_VERSION, collection, key)
        raise ConcurrencyError(f"{collection}/{key}", expected_version, actual)

    # -- outbox ------------------------------------------------------------------------

    async def write_batch(self, writes: Sequence[Write]) -> None:
        """Apply ``writes`` in order, each through its own method; check them all first."""
        check_writes(writes)
        await apply_writes(self, writes)

    async def add_to_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Write one outbox row per message, all in one statement."""
        check_outbox(messages)
        if len(messages) == 1:
            m = messages[0]
            await self._execute(
                sql.ADD_ONE_TO_OUTBOX,
                m.event_id,
                m.type_name,
                m.schema_version,
                m.aggregate_type,
                m.aggregate_id,
                m.data,
                m.occurred_at,
                m.correlation_id,
                m.causation_id,
                m.actor,
                m.traceparent,
            )
        elif messages:
            await self._execute(sql.ADD_TO_OUTBOX, *_outbox_arrays(messages))

    async def read_outbox(self, *, limit: int = 100) -> list[OutboxEntry]:
        """Rows not yet published and not dead, oldest first."""
        rows = await self._fetch(sql.READ_OUTBOX, limit)
        return [_outbox_entry(row) for row in rows]

    # -- checkpoints -------------------------------------------------------------------

    async def load_checkpoint(self, name: str) -> LogPosition | None:
        """The saved position, or None when the reader has never run."""
        row = await self._fetchrow(sql.LOAD_CHECKPOINT, name)
        return None if row is None else LogPosition(row[0], row[1])

    async def save_checkpoint(
        self,
        name: str,
        position: LogPosition,
        *,
        expected: LogPosition | Literal[StreamState.ANY] | None = StreamState.ANY,
    ) -> None:
        """Save the position (in this transaction), if the saved one is ``expected``.

        The conditional update locks the checkpoint row: a competing reader's update
        waits for this transaction, then finds the position moved and matches no row.
        """
        if expected is StreamState.ANY:
            await self._execute(sql.SAVE_CHECKPOINT, name, position[0], position[1])
            return
        if expected is None:
            status = await self._execute(sql.INSERT_CHECKPOINT, name, position[0], position[1])
        else:
            status = await self._execute(
                sql.UPDATE_CHECKPOINT, name, expected[0], expected[1], position[0], position[1]
            )
        if not status.endswith(" 1"):
            raise CheckpointConflictError(name, expected, await self.load_checkpoint(name))

    # -- inbox -------------------------------------------------------------------------

    async def mark_processed(self, event_id: UUID, handler_name: str) -> bool:
        """Record the pair; False when it was already recorded (a duplicate delivery)."""
        return await self._fetchval(sql.MARK_PROCESSED, event_id, handler_name) is not None

    async def purge_processed(self, older_than: datetime) -> int:
        """Forget pairs processed before ``older_than``; return how many."""
        status = await self._execute(sql.PURGE_PROCESSED, older_than)
        return int(status.rsplit(" ", 1)[-1])

    # -- SQL ---------------------------------------------------------------------------

    async def execute_sql(self, statement: Executable) -> list[dict[str, Any]]:
        """Run a SQLAlchemy Core statement in this transaction; rows as dictionaries."""
        compiled = compile_statement(statement, _DIALECT)
        try:
            # Preparing tells the column types, which pick SQLAlchemy's result processors
            # (numeric OIDs) and the JSON columns to decode; it costs one round trip more
            # than the hot paths, which know their columns.
            prepared = await self._connection.prepare(compiled.sql)
            rows = await prepared.fetch(*compiled.params)
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._store) from exc
        attributes = prepared.get_attributes()
        if not attributes:
            return []
        keys = [attribute.name for attribute in attributes]
        decoded = compiled.process_rows(
            rows, keys=keys, column_types=[attribute.type.oid for attribute in attributes]
        )
        return _decode_json(decoded, attributes)

    async def execute_sql_many(
        self, statement: Executable, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Run a statement that returns no rows once per row (same keys), pipelined."""
        query, params = compile_many(statement, _DIALECT, rows)
        if not params:
            return
        try:
            await self._connection.executemany(query, params)
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._store) from exc

    # -- driver calls, errors translated -------------------------------------------------

    async def _fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        try:
            rows: list[asyncpg.Record] = await self._connection.fetch(query, *args)
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._store) from exc
        return rows

    async def _fetchrow(self, query: str, *args: object) -> Any:
        try:
            return await self._connection.fetchrow(query, *args)
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._store) from exc

    async def _fetchval(self, query: str, *args: object) -> Any:
        try:
            return await self._connection.fetchval(query, *args)
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._store) from exc

    async def _execute(self, query: str, *args: object) -> str:
        try:
            status: str = await self._connection.execute(query, *args)
        except DRIVER_ERRORS as exc:
            raise translate(exc, self._store) from exc
        return status
