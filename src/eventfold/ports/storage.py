"""Storage ports: small protocols, each named for what a consumer does with it.

A backend offers one :class:`Storage`; ``storage.transaction()`` opens one database
transaction as a :class:`StorageSession`, which satisfies every narrower protocol
here. A consumer depends on the narrowest one it needs: a projection on
:class:`GlobalLogReader`, a repository on :class:`StreamReader` and
:class:`StreamAppender`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol
from uuid import UUID

from eventfold.ports.records import (
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


class StreamReader(Protocol):
    """Reads one stream."""

    async def read_stream(
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        as_of: datetime | None = None,
    ) -> list[StoredEvent]:
        """A stream's events in version order, within the bounds, occurring by ``as_of``.

        A naive ``as_of`` is UTC; ids and moments no backend can store raise
        :class:`~eventfold.errors.InvalidValueError` (see :mod:`eventfold.ports.checks`).
        """
        ...

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version: 0 when it does not exist."""
        ...


class StreamAppender(Protocol):
    """Appends to a stream with an optimistic concurrency check."""

    async def append(
        self, stream_id: str, events: Sequence[EventRecord], *, expected_version: ExpectedVersion
    ) -> int:
        """Append ``events`` and return the new version; on conflict store nothing, raise."""
        ...

    @property
    def readable_at(self) -> LogPosition | None:
        """The log position a reader must be able to read to see this transaction's events.

        None when nothing needs waiting for: no events appended yet, or a backend whose
        commits are readable as soon as they are made (one writer at a time).
        """
        ...


class GlobalLogReader(Protocol):
    """Reads every stream's events in commit order, never passing one that commits late."""

    async def read_log(
        self, *, after: LogPosition, limit: int, types: Collection[str] | None = None
    ) -> list[StoredEvent]:
        """Up to ``limit`` events after ``after`` in log order, optionally of some types only."""
        ...

    async def log_head(self) -> LogPosition:
        """The position of the last readable event (``LOG_START`` for an empty log)."""
        ...

    async def count_after(self, after: LogPosition) -> int:
        """How many readable events follow ``after``."""
        ...

    async def log_horizon(self) -> LogHorizon:
        """The readable and the committed head, and what keeps the rest from being readable."""
        ...


class SnapshotStore(Protocol):
    """Keeps the latest snapshot of a stream."""

    async def load_snapshot(self, stream_id: str) -> SnapshotRecord | None:
        """The latest snapshot of a stream, if any."""
        ...

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Keep ``snapshot`` as the stream's latest (replacing an older one)."""
        ...


class DocumentStore(Protocol):
    """JSON documents keyed by (collection, key) with a version for optimistic concurrency."""

    async def load_document(self, collection: str, key: str) -> DocumentRecord | None:
        """The document, or None."""
        ...

    async def load_documents(self, collection: str, keys: Sequence[str]) -> list[DocumentRecord]:
        """The documents that exist among ``keys``, in no particular order."""
        ...

    async def save_document(
        self, collection: str, key: str, data: str, *, expected_version: int
    ) -> int:
        """Insert (``expected_version=0``) or update a document; return its new version."""
        ...

    async def delete_document(self, collection: str, key: str, *, expected_version: int) -> None:
        """Delete a document at the expected version."""
        ...


class OutboxWriter(Protocol):
    """Captures events for relay, in the caller's transaction."""

    async def add_to_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Write one outbox row per message."""
        ...


class OutboxReader(Protocol):
    """Reads the outbox rows still waiting for the relay."""

    async def read_outbox(self, *, limit: int = 100) -> list[OutboxEntry]:
        """Rows not yet published and not dead, oldest first."""
        ...


class CheckpointStore(Protocol):
    """Remembers how far each named reader of the global log has come."""

    async def load_checkpoint(self, name: str) -> LogPosition | None:
        """The saved position, or None when the reader has never run."""
        ...

    async def save_checkpoint(
        self,
        name: str,
        position: LogPosition,
        *,
        expected: LogPosition | Literal[StreamState.ANY] | None = StreamState.ANY,
    ) -> None:
        """Save the position (in the caller's transaction), if the saved one is ``expected``.

        ``expected`` is the position this reader loaded (``None``: no checkpoint saved
        yet); when another transaction moved the checkpoint first, nothing is saved and
        :class:`~eventfold.errors.CheckpointConflictError` is raised, so two readers of one
        name never both apply a batch. ``StreamState.ANY`` saves unconditionally.
        """
        ...


class InboxStore(Protocol):
    """Remembers which (event id, handler) pairs were processed."""

    async def mark_processed(self, event_id: UUID, handler_name: str) -> bool:
        """Record the pair; False when it was already recorded (a duplicate delivery)."""
        ...

    async def purge_processed(self, older_than: datetime) -> int:
        """Forget pairs processed before ``older_than``; return how many."""
        ...


class SqlExecutor(Protocol):
    """Runs a user's SQLAlchemy Core statement in the session's transaction."""

    async def execute_sql(self, statement: Executable) -> list[dict[str, Any]]:
        """Execute; rows (for statements that return rows) as dictionaries keyed by column."""
        ...


class BatchWriter(Protocol):
    """Takes a command's writes at once, so a backend can send them in one round trip."""

    async def write_batch(self, writes: Sequence[Write]) -> None:
        """Apply ``writes`` in order in this transaction, each as its own method would.

        A backend may hold them back and run them together with the commit (SQLite does:
        one hop to its writer thread per command). An error a write raises
        (``ConcurrencyError``, ``DuplicateEventError``) then surfaces when the transaction
        ends, which rolls it back; anything the session is asked before that runs after
        the writes and sees them.
        """
        ...


class StorageSession(
    StreamReader,
    StreamAppender,
    GlobalLogReader,
    SnapshotStore,
    DocumentStore,
    OutboxWriter,
    OutboxReader,
    CheckpointStore,
    InboxStore,
    BatchWriter,
    Protocol,
):
    """One database transaction; commits when its context exits cleanly, else rolls back."""


async def apply_writes(session: StorageSession, writes: Sequence[Write]) -> None:
    """``write_batch`` for a backend with no faster way: each write through its own method."""
    outbox: list[OutboxMessage] = []
    for write in writes:
        if isinstance(write, OutboxMessage):
            outbox.append(write)  # consecutive outbox rows go in one call
            continue
        if outbox:
            await session.add_to_outbox(outbox)
            outbox = []
        if isinstance(write, AppendEvents):
            await session.append(
                write.stream_id, write.events, expected_version=write.expected_version
            )
        elif isinstance(write, SaveDocument):
            await session.save_document(
                write.collection, write.key, write.data, expected_version=write.expected_version
            )
        elif isinstance(write, DeleteDocument):
            await session.delete_document(
                write.collection, write.key, expected_version=write.expected_version
            )
        else:
            await session.save_snapshot(write)
    if outbox:
        await session.add_to_outbox(outbox)


class Storage(Protocol):
    """A data source: opens transactions and owns the connections behind them."""

    @property
    def name(self) -> str:
        """What this source is called in messages (``"sqlite:shop.db"``, ``"postgres"``)."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[StorageSession]:
        """Open one transaction."""
        ...

    async def create_schema(self) -> None:
        """Create eventfold's tables if missing (idempotent)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
