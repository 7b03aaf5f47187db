"""One SQLite transaction: every storage operation as hand-written SQL on sqlite3.

Each operation is one function run on a connection's thread in a single hop. A write
transaction begins with the first write, as ``BEGIN IMMEDIATE``: it takes SQLite's
write lock up front, so it never has to upgrade a read lock (the upgrade is where two
deferred writers would deadlock, or fail on a stale snapshot).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from uuid import UUID, SafeUUID

from sqlalchemy.dialects import sqlite as sqlite_dialect

from eventfold.adapters.sql.documents import (
    clear_document_collection,
    move_document_collection,
    search_document_records,
)
from eventfold.adapters.sql.statements import compile_many, compile_statement
from eventfold.application.readside.queries import QueryOptions, SearchResult
from eventfold.domain.specification import FieldSet
from eventfold.errors import (
    CheckpointConflictError,
    ConcurrencyError,
    DuplicateEventError,
    PersistenceError,
    SchemaMissingError,
    StoreUnavailableError,
)
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
    AppendEvents,
    DeleteDocument,
    DocumentRecord,
    EventRecord,
    ExpectedVersion,
    LogHorizon,
    LogPosition,
    OutboxEntry,
    OutboxMessage,
    SaveDocument,
    SnapshotRecord,
    StoredEvent,
    StreamState,
    Write,
)

if TYPE_CHECKING:
    from sqlalchemy.sql.base import Executable

    from eventfold.adapters.sqlite._thread import Connection

__all__ = ["SqliteSession", "WriterSource", "commit_jobs", "translate_error"]

T = TypeVar("T")
Db = sqlite3.Connection

_DIALECT = sqlite_dialect.dialect()

# SQLite binds at most 32766 variables per statement; lists of keys go in chunks.
_CHUNK = 500

_EVENT_COLUMNS = (
    "stream_id, version, position, event_id, type_name, schema_version, data, occurred_at, "
    "correlation_id, causation_id, actor"
)
_SELECT_EVENTS = f"SELECT {_EVENT_COLUMNS} FROM eventfold_events"
_STREAM_VERSION = "SELECT COALESCE(MAX(version), 0) FROM eventfold_events WHERE stream_id = ?"
_INSERT_EVENT = (
    "INSERT INTO eventfold_events (stream_id, version, event_id, type_name, schema_version, "
    "data, occurred_at, correlation_id, causation_id, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_OUTBOX_COLUMNS = (
    "id, event_id, type_name, schema_version, aggregate_type, aggregate_id, data, "
    "occurred_at, correlation_id, causation_id, actor, created_at, attempts, "
    "next_attempt_at, published_at, last_error, dead, refusals, traceparent"
)
_INSERT_OUTBOX = (
    "INSERT INTO eventfold_outbox (event_id, type_name, schema_version, aggregate_type, "
    "aggregate_id, data, occurred_at, correlation_id, causation_id, actor, created_at, "
    "traceparent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SAVE_SNAPSHOT = (
    "INSERT INTO eventfold_snapshots (stream_id, version, state_type, schema_version, data, "
    "taken_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (stream_id) DO UPDATE SET "
    "version = excluded.version, state_type = excluded.state_type, "
    "schema_version = excluded.schema_version, data = excluded.data, "
    "taken_at = excluded.taken_at WHERE excluded.version >= eventfold_snapshots.version"
)
_SAVE_CHECKPOINT = (
    "INSERT INTO eventfold_checkpoints (name, commit_id, position, updated_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET commit_id = excluded.commit_id, "
    "position = excluded.position, updated_at = excluded.updated_at"
)
_DOCUMENT_COLUMNS = "collection, key, version, data, updated_at"


class WriterSource(Protocol):
    """What a session needs from its storage: the reader and the one writer."""

    async def reader(self) -> Connection | None:
        """The reader connection; None when the writer is the only connection."""
        ...

    async def acquire_writer(self) -> Connection:
        """Wait for the writer connection and keep it until :meth:`release_writer`."""
        ...

    def release_writer(self) -> None:
        """Let the next transaction write."""
        ...

    async def commit_writes(self, job: Callable[[Db], None]) -> None:
        """Run ``job`` (a transaction's writes) and commit it, maybe grouped with others."""
        ...


class _EndedTransaction:
    """Stands in for the storage of a session whose transaction has ended.

    A session kept past its block must fail loudly: taking the writer again would hold
    SQLite's write lock with no one left to release it.
    """

    async def reader(self) -> Connection | None:
        raise PersistenceError(_ENDED_MESSAGE)

    async def acquire_writer(self) -> Connection:
        raise PersistenceError(_ENDED_MESSAGE)

    def release_writer(self) -> None:
        """Nothing to release: the session holds nothing any more."""

    async def commit_writes(self, job: Callable[[Db], None]) -> None:
        raise PersistenceError(_ENDED_MESSAGE)


_ENDED_MESSAGE = "this storage session's transaction has ended: open a new transaction"
_ENDED = _EndedTransaction()


def to_text(moment: datetime) -> str:
    """A timestamp as stored: UTC, ISO 8601, fixed width, so text order is time order."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive timestamps are taken as UTC
    return moment.astimezone(UTC).isoformat(" ", "microseconds")


_from_text = datetime.fromisoformat


def _now() -> str:
    return datetime.now(UTC).isoformat(" ", "microseconds")


_new_object = object.__new__
_set_attribute = object.__setattr__
_SAFETY_UNKNOWN = SafeUUID.unknown


def _uuid(text: str) -> UUID:
    """``UUID(text)`` for the canonical text this adapter stores, in three fifths of the time.

    ``UUID.__init__`` parses every accepted spelling and checks its arguments; that took
    more time per loaded event than the row fetch. A stored id is always ``str(uuid)``,
    so the 128-bit number is set directly, as ``UUID.__init__`` itself does.
    """
    value = _new_object(UUID)
    _set_attribute(value, "int", int(text.replace("-", ""), 16))
    _set_attribute(value, "is_safe", _SAFETY_UNKNOWN)
    return value


def _stored_event(row: tuple[Any, ...]) -> StoredEvent:
    # commit is always 0 on SQLite: one writer at a time holds the database's write lock,
    # so positions are handed out in commit order and a reader never sees a gap fill in.
    return StoredEvent(
        row[0],
        row[1],
        row[2],
        0,
        _uuid(row[3]),
        row[4],
        row[5],
        row[6],
        _from_text(row[7]),
        row[8],
        row[9],
        row[10],
    )


def _outbox_entry(row: tuple[Any, ...]) -> OutboxEntry:
    message = OutboxMessage(
        UUID(row[1]),
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        _from_text(row[7]),
        row[8],
        row[9],
        row[10],
        row[18],
    )
    return OutboxEntry(
        id=row[0],
        message=message,
        created_at=_from_text(row[11]),
        attempts=row[12],
        next_attempt_at=None if row[13] is None else _from_text(row[13]),
        published_at=None if row[14] is None else _from_text(row[14]),
        last_error=row[15],
        dead=bool(row[16]),
        refusals=row[17],
    )


def _document(row: tuple[Any, ...]) -> DocumentRecord:
    return DocumentRecord(row[0], row[1], row[2], row[3], _from_text(row[4]))


def _describe(expected: ExpectedVersion) -> object:
    return expected.value if isinstance(expected, StreamState) else expected


def _check_expected(stream_id: str, expected: ExpectedVersion, actual: int) -> None:
    if expected is StreamState.ANY:
        return
    wanted = 0 if expected is StreamState.NO_STREAM else expected
    if actual != wanted:
        raise ConcurrencyError(stream_id, _describe(expected), actual)


def translate_error(exc: sqlite3.Error, store: str) -> PersistenceError:
    """The eventfold error for a sqlite3 one (the caller raises it ``from exc``)."""
    message = str(exc)
    if message.startswith("no such table: eventfold_"):
        return SchemaMissingError(store, message.removeprefix("no such table: "))
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and (
        "unable to open" in message
        or "not a database" in message
        or "locked" in message
        or "disk I/O" in message
        or "readonly" in message
    ):
        return StoreUnavailableError(store, message)
    return PersistenceError(f"{store}: {message}")


def _first_stored_event_id(db: Db, events: Sequence[EventRecord]) -> UUID:
    """The first id of ``events`` that is already stored or repeated within the batch."""
    seen: set[UUID] = set()
    for record in events:
        if record.event_id in seen:
            return record.event_id
        seen.add(record.event_id)
    for record in events:
        found = db.execute(
            "SELECT 1 FROM eventfold_events WHERE event_id = ?", (str(record.event_id),)
        ).fetchone()
        if found is not None:
            return record.event_id
    return events[0].event_id


class SqliteSession:
    """One SQLite transaction; satisfies every storage port and runs a user's SQL.

    Until its first write a session reads committed data through the storage's reader
    connection, statement by statement, and holds no lock. Its first write takes the
    storage's writer connection and SQLite's write lock (``BEGIN IMMEDIATE``) until the
    session ends; from then on it reads its own writes. Every optimistic check (stream
    version, document version) runs under that lock, so a stale read is always caught.
    """

    __slots__ = ("_pending", "_storage", "_store", "_writer", "_wrote")

    def __init__(self, storage: WriterSource, store: str) -> None:
        self._storage = storage
        self._store = store
        self._writer: Connection | None = None
        self._wrote = False
        self._pending: list[Write] = []

    async def _run(self, work: Callable[[Db], T]) -> T:
        """Run a read: in the write transaction if one is open, else on the reader."""
        if self._writer is not None or self._pending:
            return await self._write(work)  # held-back writes first: the read must see them
        reader = await self._storage.reader()
        if reader is None:  # one connection only (":memory:"): reads need the lock too
            return await self._begin(work)
        return await self._call(reader, work)

    async def _write(self, work: Callable[[Db], T]) -> T:
        self._wrote = True
        if self._pending:
            pending, self._pending = self._pending, []
            work = _after_writes(pending, work)
        if self._writer is not None:
            return await self._call(self._writer, work)
        return await self._begin(work)

    async def _begin(self, work: Callable[[Db], T]) -> T:
        self._writer = await self._storage.acquire_writer()
        return await self._call(self._writer, lambda db: _begin_then(db, work))

    async def _call(self, connection: Connection, work: Callable[[Db], T]) -> T:
        try:
            return await connection.run(work)
        except sqlite3.Error as exc:
            raise translate_error(exc, self._store) from exc

    async def finish(self, *, commit: bool) -> None:
        """Commit or roll back, if anything was begun, and let the next writer in.

        Writes held back by :meth:`write_batch` run here, with the ``COMMIT``, in the
        same hop to the writer thread (with ``BEGIN IMMEDIATE`` too, when nothing was
        written before them): one hop per command.
        """
        writer, self._writer = self._writer, None
        storage, self._storage = self._storage, _ENDED
        pending, self._pending = self._pending, []
        end: Callable[[Db], None] = _finish
        if commit and pending:
            if writer is None:
                # Nothing written yet: the storage runs BEGIN, the writes and COMMIT in
                # one job, in one transaction with other commits queued meanwhile.
                try:
                    await storage.commit_writes(lambda db: _apply_writes(db, pending))
                except sqlite3.Error as exc:
                    raise translate_error(exc, self._store) from exc
                return
            end = _commit_writes(pending)
        if writer is None:
            return
        try:
            if commit and self._wrote:
                await self._call(writer, end)
            else:
                # Ending a transaction that changed nothing, or discarding one, has
                # nothing to make durable and nothing to report: queue it and go on.
                # The writer's thread runs it before the next transaction's first step.
                writer.submit(_end_quietly)
        finally:
            storage.release_writer()

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
        sql = f"{_SELECT_EVENTS} WHERE stream_id = ? AND version >= ?"
        params: list[object] = [stream_id, from_version]
        if to_version is not None:
            sql += " AND version <= ?"
            params.append(to_version)
        if as_of is not None:
            sql += " AND occurred_at <= ?"
            params.append(to_text(as_of))
        sql += " ORDER BY version"
        return await self._run(lambda db: list(map(_stored_event, db.execute(sql, params))))

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version: 0 when it does not exist."""
        check_stream(stream_id)
        return await self._run(lambda db: _stream_version(db, stream_id))

    async def append(
        self, stream_id: str, events: Sequence[EventRecord], *, expected_version: ExpectedVersion
    ) -> int:
        """Append ``events`` and return the new version; on conflict store nothing, raise."""
        check_events(stream_id, events)
        return await self._write(lambda db: _append(db, stream_id, events, expected_version))

    async def write_batch(self, writes: Sequence[Write]) -> None:
        """Hold ``writes`` back to run in the same hop as the next statement or the commit."""
        check_writes(writes)
        if writes:
            self._wrote = True
            self._pending.extend(writes)

    # -- global log --------------------------------------------------------------------

    async def read_log(
        self, *, after: LogPosition, limit: int, types: Collection[str] | None = None
    ) -> list[StoredEvent]:
        """Up to ``limit`` events after ``after`` in log order, optionally of some types only."""
        if after.commit > 0:
            return []  # every SQLite event has commit 0, so none lies after such a position
        sql = f"{_SELECT_EVENTS} WHERE position > ?"
        params: list[object] = [after.position if after.commit == 0 else -1]
        if types is not None:
            wanted = list(types)
            sql += f" AND type_name IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        sql += " ORDER BY position LIMIT ?"
        params.append(limit)
        return await self._run(lambda db: list(map(_stored_event, db.execute(sql, params))))

    async def log_head(self) -> LogPosition:
        """The position of the last readable event (``LOG_START`` for an empty log)."""
        last = await self._run(
            lambda db: db.execute("SELECT MAX(position) FROM eventfold_events").fetchone()[0]
        )
        return LOG_START if last is None else LogPosition(0, last)

    async def count_after(self, after: LogPosition) -> int:
        """How many readable events follow ``after``."""
        if after.commit > 0:
            return 0
        start = after.position if after.commit == 0 else -1
        sql = "SELECT COUNT(*) FROM eventfold_events WHERE position > ?"
        count: int = await self._run(lambda db: db.execute(sql, (start,)).fetchone()[0])
        return count

    @property
    def readable_at(self) -> LogPosition | None:
        """None: commits are serial here, so every committed event is readable at once."""
        return None

    async def log_horizon(self) -> LogHorizon:
        """Everything committed is readable: commits are serial here, so nothing waits."""
        head = await self.log_head()
        return LogHorizon(readable_head=head, committed_head=head)

    # -- snapshots ---------------------------------------------------------------------

    async def load_snapshot(self, stream_id: str) -> SnapshotRecord | None:
        """The latest snapshot of a stream, if any."""
        check_stream(stream_id)
        sql = (
            "SELECT stream_id, version, state_type, schema_version, data, taken_at "
            "FROM eventfold_snapshots WHERE stream_id = ?"
        )
        row = await self._run(lambda db: db.execute(sql, (stream_id,)).fetchone())
        if row is None:
            return None
        return SnapshotRecord(row[0], row[1], row[2], row[3], row[4], _from_text(row[5]))

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Keep ``snapshot`` as the stream's latest; an older one never replaces a newer."""
        check_snapshot(snapshot)
        params = _snapshot_params(snapshot)
        await self._write(lambda db: db.execute(_SAVE_SNAPSHOT, params))

    # -- documents ---------------------------------------------------------------------

    async def load_document(self, collection: str, key: str) -> DocumentRecord | None:
        """The document, or None."""
        check_document(collection, key)
        sql = (
            f"SELECT {_DOCUMENT_COLUMNS} FROM eventfold_documents WHERE collection = ? AND key = ?"
        )
        row = await self._run(lambda db: db.execute(sql, (collection, key)).fetchone())
        return None if row is None else _document(row)

    async def load_documents(self, collection: str, keys: Sequence[str]) -> list[DocumentRecord]:
        """The documents that exist among ``keys``, in no particular order."""
        check_keys(collection, keys)
        unique = list(dict.fromkeys(keys))
        return await self._run(lambda db: _load_documents(db, collection, unique))

    async def save_document(
        self, collection: str, key: str, data: str, *, expected_version: int
    ) -> int:
        """Insert (``expected_version=0``) or update a document; return its new version."""
        check_document(collection, key, data)
        return await self._write(
            lambda db: _save_document(db, collection, key, data, expected_version)
        )

    async def delete_document(self, collection: str, key: str, *, expected_version: int) -> None:
        """Delete a document at the expected version."""
        check_document(collection, key)
        await self._write(lambda db: _delete_document(db, collection, key, expected_version))

    # -- outbox ------------------------------------------------------------------------

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

    async def add_to_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Write one outbox row per message."""
        check_outbox(messages)
        await self._write(lambda db: _add_to_outbox(db, messages))

    async def read_outbox(self, *, limit: int = 100) -> list[OutboxEntry]:
        """Rows not yet published and not dead, oldest first."""
        sql = (
            f"SELECT {_OUTBOX_COLUMNS} FROM eventfold_outbox "
            "WHERE published_at IS NULL AND NOT dead ORDER BY id LIMIT ?"
        )
        return await self._run(lambda db: list(map(_outbox_entry, db.execute(sql, (limit,)))))

    # -- checkpoints -------------------------------------------------------------------

    async def load_checkpoint(self, name: str) -> LogPosition | None:
        """The saved position, or None when the reader has never run."""
        sql = "SELECT commit_id, position FROM eventfold_checkpoints WHERE name = ?"
        row = await self._run(lambda db: db.execute(sql, (name,)).fetchone())
        return None if row is None else LogPosition(*row)

    async def save_checkpoint(
        self,
        name: str,
        position: LogPosition,
        *,
        expected: LogPosition | Literal[StreamState.ANY] | None = StreamState.ANY,
    ) -> None:
        """Save the position (in the caller's transaction), if the saved one is ``expected``."""
        if expected is StreamState.ANY:
            params = (name, position.commit, position.position, _now())
            await self._write(lambda db: db.execute(_SAVE_CHECKPOINT, params))
            return
        await self._write(lambda db: _save_checkpoint_if(db, name, position, expected))

    # -- inbox -------------------------------------------------------------------------

    async def mark_processed(self, event_id: UUID, handler_name: str) -> bool:
        """Record the pair; False when it was already recorded (a duplicate delivery)."""
        sql = (
            "INSERT INTO eventfold_inbox (event_id, handler_name, processed_at) "
            "VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
        )
        params = (str(event_id), handler_name, _now())
        inserted: int = await self._write(lambda db: db.execute(sql, params).rowcount)
        return inserted == 1

    async def purge_processed(self, older_than: datetime) -> int:
        """Forget pairs processed before ``older_than``; return how many."""
        sql = "DELETE FROM eventfold_inbox WHERE processed_at < ?"
        cutoff = to_text(older_than)
        purged: int = await self._write(lambda db: db.execute(sql, (cutoff,)).rowcount)
        return purged

    async def run_ddl(self, statements: Sequence[str]) -> None:
        """Run schema statements in this transaction (SQLite's DDL is transactional)."""
        await self._write(lambda db: [db.execute(statement) for statement in statements])

    # -- the user's own SQL ------------------------------------------------------------

    async def execute_sql(self, statement: Executable) -> list[dict[str, Any]]:
        """Execute; rows (for statements that return rows) as dictionaries keyed by column."""
        compiled = compile_statement(statement, _DIALECT)

        def work(db: Db) -> list[dict[str, Any]]:
            cursor = db.execute(compiled.sql, compiled.params)
            if cursor.description is None:
                return []
            keys = [column[0] for column in cursor.description]
            return compiled.process_rows(cursor.fetchall(), keys=keys)

        if getattr(statement, "is_select", False):
            # A SELECT reads committed data without taking the write lock, so a reader
            # never waits behind a long writing transaction such as a rebuild.
            return await self._run(work)
        # Any other statement may write: treat it as one, so its commit is awaited.
        return await self._write(work)

    async def execute_sql_many(
        self, statement: Executable, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Run a statement that returns no rows once per row (same keys), in one hop."""
        query, params = compile_many(statement, _DIALECT, rows)
        if params:
            await self._write(lambda db: db.executemany(query, params))


def _begin_then(db: Db, work: Callable[[Db], T]) -> T:
    if db.in_transaction:
        _end_quietly(db)  # a queued end that failed must not leak into this transaction
    db.execute("BEGIN IMMEDIATE")
    return work(db)


def commit_jobs(db: Db, jobs: Sequence[Callable[[Db], None]]) -> list[Exception | None]:
    """Run each job (one transaction's writes) and COMMIT them all at once: one fsync.

    Each job of several runs in a savepoint of its own: a job that fails (a conflict)
    is rolled back alone and its error returned in its place; the others commit. A
    COMMIT that fails raises, and then none of them is stored.
    """
    if db.in_transaction:
        _end_quietly(db)  # a queued end that failed must not leak into this transaction
    db.execute("BEGIN IMMEDIATE")
    try:
        if len(jobs) == 1:
            jobs[0](db)
            outcomes: list[Exception | None] = [None]
        else:
            outcomes = [_in_savepoint(db, job) for job in jobs]
    except BaseException:
        _end_quietly(db)
        raise
    _finish(db)
    return outcomes


def _in_savepoint(db: Db, job: Callable[[Db], None]) -> Exception | None:
    db.execute("SAVEPOINT eventfold_commit")
    try:
        job(db)
    except Exception as exc:  # noqa: BLE001 - handed to the transaction it belongs to
        db.execute("ROLLBACK TO eventfold_commit")
        db.execute("RELEASE eventfold_commit")
        return exc
    db.execute("RELEASE eventfold_commit")
    return None


def _after_writes(writes: list[Write], work: Callable[[Db], T]) -> Callable[[Db], T]:
    def run(db: Db) -> T:
        _apply_writes(db, writes)
        return work(db)

    return run


def _commit_writes(writes: list[Write]) -> Callable[[Db], None]:
    def run(db: Db) -> None:
        try:
            _apply_writes(db, writes)
        except BaseException:
            # A conflict found here ends the transaction at once, in this same hop.
            _end_quietly(db)
            raise
        _finish(db)

    return run


def _apply_writes(db: Db, writes: list[Write]) -> None:
    """Each write as its own method would do it, consecutive outbox rows in one batch."""
    outbox: list[OutboxMessage] = []
    for write in writes:
        if isinstance(write, OutboxMessage):
            outbox.append(write)
            continue
        if outbox:
            _add_to_outbox(db, outbox)
            outbox = []
        if isinstance(write, AppendEvents):
            _append(db, write.stream_id, write.events, write.expected_version)
        elif isinstance(write, SaveDocument):
            _save_document(db, write.collection, write.key, write.data, write.expected_version)
        elif isinstance(write, DeleteDocument):
            _delete_document(db, write.collection, write.key, write.expected_version)
        else:
            db.execute(_SAVE_SNAPSHOT, _snapshot_params(write))
    if outbox:
        _add_to_outbox(db, outbox)


def _snapshot_params(snapshot: SnapshotRecord) -> tuple[object, ...]:
    return (
        snapshot.stream_id,
        snapshot.version,
        snapshot.state_type,
        snapshot.schema_version,
        snapshot.data,
        to_text(snapshot.taken_at),
    )


def _finish(db: Db) -> None:
    # BEGIN may itself have failed (the lock was busy), leaving nothing to end.
    if db.in_transaction:
        try:
            db.execute("COMMIT")
        except sqlite3.Error:
            # A COMMIT that failed (busy, disk full) leaves the transaction open and the
            # file locked: end it now rather than at this connection's next write.
            _end_quietly(db)
            raise


def _end_quietly(db: Db) -> None:
    """Roll back whatever is open; a connection that cannot even do that fails later."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _stream_version(db: Db, stream_id: str) -> int:
    version: int = db.execute(_STREAM_VERSION, (stream_id,)).fetchone()[0]
    return version


def _append(
    db: Db, stream_id: str, events: Sequence[EventRecord], expected: ExpectedVersion
) -> int:
    actual = _stream_version(db, stream_id)
    _check_expected(stream_id, expected, actual)
    rows = [
        (
            stream_id,
            actual + offset,
            str(record.event_id),
            record.type_name,
            record.schema_version,
            record.data,
            to_text(record.occurred_at),
            record.correlation_id,
            record.causation_id,
            record.actor,
        )
        for offset, record in enumerate(events, start=1)
    ]
    try:
        _insert_all(db, _INSERT_EVENT, rows)
    except sqlite3.IntegrityError as exc:
        if "event_id" in str(exc):
            raise DuplicateEventError(_first_stored_event_id(db, events)) from exc
        # The write lock is held from BEGIN IMMEDIATE on, so this only happens when
        # another connection bypassed it; report it as the conflict it is.
        raise ConcurrencyError(stream_id, _describe(expected), actual) from exc
    return actual + len(rows)


def _insert_all(db: Db, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert every row or none: a batch is atomic even inside a longer transaction."""
    if not rows:
        return
    if len(rows) == 1:
        db.execute(sql, rows[0])  # one statement is atomic by itself
        return
    db.execute("SAVEPOINT eventfold_batch")
    try:
        db.executemany(sql, rows)
    except BaseException:
        db.execute("ROLLBACK TO eventfold_batch")
        raise
    finally:
        db.execute("RELEASE eventfold_batch")


def _load_documents(db: Db, collection: str, keys: list[str]) -> list[DocumentRecord]:
    found: list[DocumentRecord] = []
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        sql = (
            f"SELECT {_DOCUMENT_COLUMNS} FROM eventfold_documents WHERE collection = ? "
            f"AND key IN ({', '.join('?' * len(chunk))})"
        )
        found.extend(map(_document, db.execute(sql, [collection, *chunk])))
    return found


def _document_version(db: Db, collection: str, key: str) -> int:
    sql = "SELECT version FROM eventfold_documents WHERE collection = ? AND key = ?"
    row = db.execute(sql, (collection, key)).fetchone()
    return 0 if row is None else int(row[0])


def _save_document(db: Db, collection: str, key: str, data: str, expected: int) -> int:
    if expected == 0:
        sql = (
            "INSERT INTO eventfold_documents (collection, key, version, data, updated_at) "
            "VALUES (?, ?, 1, ?, ?) ON CONFLICT DO NOTHING"
        )
        changed = db.execute(sql, (collection, key, data, _now())).rowcount
    else:
        sql = (
            "UPDATE eventfold_documents SET version = version + 1, data = ?, updated_at = ? "
            "WHERE collection = ? AND key = ? AND version = ?"
        )
        changed = db.execute(sql, (data, _now(), collection, key, expected)).rowcount
    if changed != 1:
        actual = _document_version(db, collection, key)
        raise ConcurrencyError(f"{collection}/{key}", expected, actual)
    return expected + 1


def _save_checkpoint_if(
    db: Db, name: str, position: LogPosition, expected: LogPosition | None
) -> None:
    if expected is None:
        sql = (
            "INSERT INTO eventfold_checkpoints (name, commit_id, position, updated_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
        )
        changed = db.execute(sql, (name, position.commit, position.position, _now())).rowcount
    else:
        sql = (
            "UPDATE eventfold_checkpoints SET commit_id = ?, position = ?, updated_at = ? "
            "WHERE name = ? AND commit_id = ? AND position = ?"
        )
        params = (position.commit, position.position, _now(), name, *expected)
        changed = db.execute(sql, params).rowcount
    if changed != 1:
        sql = "SELECT commit_id, position FROM eventfold_checkpoints WHERE name = ?"
        row = db.execute(sql, (name,)).fetchone()
        raise CheckpointConflictError(name, expected, None if row is None else LogPosition(*row))


def _delete_document(db: Db, collection: str, key: str, expected: int) -> None:
    sql = "DELETE FROM eventfold_documents WHERE collection = ? AND key = ? AND version = ?"
    if db.execute(sql, (collection, key, expected)).rowcount != 1:
        actual = _document_version(db, collection, key)
        raise ConcurrencyError(f"{collection}/{key}", expected, actual)


def _add_to_outbox(db: Db, messages: Sequence[OutboxMessage]) -> None:
    created_at = _now()
    rows = [
        (
            str(message.event_id),
            message.type_name,
            message.schema_version,
            message.aggregate_type,
            message.aggregate_id,
            message.data,
            to_text(message.occurred_at),
            message.correlation_id,
            message.causation_id,
            message.actor,
            created_at,
            message.traceparent,
        )
        for message in messages
    ]
    if not rows:
        return
    try:
        _insert_all(db, _INSERT_OUTBOX, rows)
    except sqlite3.IntegrityError as exc:
        raise DuplicateEventError(_first_outbox_duplicate(db, messages)) from exc


def _first_outbox_duplicate(db: Db, messages: Sequence[OutboxMessage]) -> UUID:
    seen: set[UUID] = set()
    for message in messages:
        sql = "SELECT 1 FROM eventfold_outbox WHERE event_id = ?"
        if message.event_id in seen or db.execute(sql, (str(message.event_id),)).fetchone():
            return message.event_id
        seen.add(message.event_id)
    return messages[0].event_id
