"""In-memory storage: transactions stage their writes and apply them atomically on commit.

A commit validates every optimistic expectation against what is committed and then
applies every staged write, with no ``await`` in between: under asyncio nothing can
interleave, so a commit is atomic and of two transactions that wrote the same stream
version only the first to commit wins. Memory commits are serial, so every event's
``commit`` is 0 and positions are 1, 2, 3, ... without gaps.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from uuid import UUID

from eventfold.application.readside.queries import Page, QueryOptions, SearchResult, query_in_memory
from eventfold.domain.specification import FieldSet
from eventfold.errors import CheckpointConflictError, ConcurrencyError, DuplicateEventError
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

__all__ = ["MemorySession", "MemoryStorage", "create_memory_storage"]

DocumentKey = tuple[str, str]
InboxKey = tuple[UUID, str]


def _now() -> datetime:
    return datetime.now(UTC)


def _check_expected(stream_id: str, expected: ExpectedVersion, actual: int) -> None:
    """Raise :class:`ConcurrencyError` unless ``actual`` meets ``expected``."""
    if expected is StreamState.ANY:
        return
    wanted = 0 if expected is StreamState.NO_STREAM else expected
    if actual != wanted:
        raise ConcurrencyError(stream_id, _describe(expected), actual)


def _describe(expected: ExpectedVersion) -> object:
    return expected.value if isinstance(expected, StreamState) else expected


def _stored(record: EventRecord, stream_id: str, version: int, position: int) -> StoredEvent:
    return StoredEvent(
        stream_id=stream_id,
        version=version,
        position=position,
        commit=0,
        event_id=record.event_id,
        type_name=record.type_name,
        schema_version=record.schema_version,
        data=record.data,
        occurred_at=record.occurred_at,
        correlation_id=record.correlation_id,
        causation_id=record.causation_id,
        actor=record.actor,
    )


@dataclass(slots=True)
class _Batch:
    """One staged ``append`` call: its expectation and its records."""

    expected: ExpectedVersion
    records: list[EventRecord]


@dataclass(slots=True)
class _Committed:
    """Everything a :class:`MemoryStorage` holds once committed."""

    streams: dict[str, list[StoredEvent]] = field(default_factory=dict)
    log: list[StoredEvent] = field(default_factory=list)
    event_ids: set[UUID] = field(default_factory=set)
    snapshots: dict[str, SnapshotRecord] = field(default_factory=dict)
    documents: dict[DocumentKey, DocumentRecord] = field(default_factory=dict)
    outbox: list[OutboxEntry] = field(default_factory=list)
    outbox_event_ids: set[UUID] = field(default_factory=set)
    outbox_last_id: int = 0
    checkpoints: dict[str, LogPosition] = field(default_factory=dict)
    inbox: dict[InboxKey, datetime] = field(default_factory=dict)


class MemorySession:
    """One in-memory transaction: reads see committed data plus this session's own writes."""

    def __init__(self, committed: _Committed) -> None:
        self._committed = committed
        self._batches: dict[str, list[_Batch]] = {}
        self._staged_events: list[StoredEvent] = []
        self._staged_event_ids: set[UUID] = set()
        self._snapshots: dict[str, SnapshotRecord] = {}
        self._documents: dict[DocumentKey, DocumentRecord | None] = {}
        self._document_bases: dict[DocumentKey, int] = {}
        self._outbox: list[OutboxMessage] = []
        self._outbox_event_ids: set[UUID] = set()
        self._checkpoints: dict[str, LogPosition] = {}
        self._checkpoint_bases: dict[str, LogPosition | None] = {}
        self._inbox: dict[InboxKey, datetime] = {}
        self._inbox_purged_before: datetime | None = None

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
        events = self._stream_events(stream_id)
        last = len(events) if to_version is None else min(to_version, len(events))
        selected = events[max(from_version, 1) - 1 : last]
        if as_of is not None:
            selected = [event for event in selected if event.occurred_at <= as_of]
        return selected

    async def stream_version(self, stream_id: str) -> int:
        """The stream's current version: 0 when it does not exist."""
        check_stream(stream_id)
        return self._version(stream_id)

    async def append(
        self, stream_id: str, events: Sequence[EventRecord], *, expected_version: ExpectedVersion
    ) -> int:
        """Stage ``events``; the expectation is checked now and again on commit."""
        check_events(stream_id, events)
        current = self._version(stream_id)
        _check_expected(stream_id, expected_version, current)
        self._check_new_event_ids(events)
        records = list(events)
        self._batches.setdefault(stream_id, []).append(_Batch(expected_version, records))
        base_position = len(self._committed.log) + len(self._staged_events)
        for offset, record in enumerate(records, start=1):
            self._staged_events.append(
                _stored(record, stream_id, current + offset, base_position + offset)
            )
            self._staged_event_ids.add(record.event_id)
        return current + len(records)

    def _stream_events(self, stream_id: str) -> list[StoredEvent]:
        committed = self._committed.streams.get(stream_id, [])
        if stream_id not in self._batches:
            return committed
        return committed + [e for e in self._staged_events if e.stream_id == stream_id]

    def _version(self, stream_id: str) -> int:
        staged = sum(len(batch.records) for batch in self._batches.get(stream_id, ()))
        return len(self._committed.streams.get(stream_id, ())) + staged

    def _check_new_event_ids(self, events: Sequence[EventRecord]) -> None:
        seen: set[UUID] = set()
        for record in events:
            event_id = record.event_id
            if (
                event_id in seen
                or event_id in self._staged_event_ids
                or event_id in self._committed.event_ids
            ):
                raise DuplicateEventError(event_id)
            seen.add(event_id)

    # -- global log --------------------------------------------------------------------

    async def read_log(
        self, *, after: LogPosition, limit: int, types: Collection[str] | None = None
    ) -> list[StoredEvent]:
        """Up to ``limit`` events after ``after`` in log order, optionally of some types only."""
        log = self._log()
        start = self._log_index_after(after, len(log))
        if types is None:
            return log[start : start + limit]
        wanted = set(types)
        found: list[StoredEvent] = []
        for event in log[start:]:
            if len(found) >= limit:
                break
            if event.type_name in wanted:
                found.append(event)
        return found

    async def log_head(self) -> LogPosition:
        """The position of the last readable event (``LOG_START`` for an empty log)."""
        log = self._log()
        return log[-1].log_position if log else LOG_START

    async def count_after(self, after: LogPosition) -> int:
        """How many readable events follow ``after``."""
        size = len(self._log())
        return size - self._log_index_after(after, size)

    @property
    def readable_at(self) -> LogPosition | None:
        """None: commits are serial here, so every committed event is readable at once."""
        return None

    async def log_horizon(self) -> LogHorizon:
        """Everything committed is readable: commits are serial here, so nothing waits."""
        head = await self.log_head()
        return LogHorizon(readable_head=head, committed_head=head)

    def _log(self) -> list[StoredEvent]:
        if not self._staged_events:
            return self._committed.log
        return self._committed.log + self._staged_events

    @staticmethod
    def _log_index_after(after: LogPosition, size: int) -> int:
        # Every memory event has commit 0 and position index + 1, so the index of the
        # first event after `after` follows from the tuple comparison directly.
        if after.commit > 0:
            return size
        if after.commit < 0:
            return 0
        return min(max(after.position, 0), size)

    # -- snapshots ---------------------------------------------------------------------

    async def load_snapshot(self, stream_id: str) -> SnapshotRecord | None:
        """The latest snapshot of a stream, if any."""
        check_stream(stream_id)
        staged = self._snapshots.get(stream_id)
        return staged if staged is not None else self._committed.snapshots.get(stream_id)

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Keep ``snapshot`` as the stream's latest (replacing an older one)."""
        check_snapshot(snapshot)
        self._snapshots[snapshot.stream_id] = snapshot

    # -- documents ---------------------------------------------------------------------

    async def load_document(self, collection: str, key: str) -> DocumentRecord | None:
        """The document, or None."""
        check_document(collection, key)
        return self._document((collection, key))

    async def load_documents(self, collection: str, keys: Sequence[str]) -> list[DocumentRecord]:
        """The documents that exist among ``keys``, in no particular order."""
        check_keys(collection, keys)
        found = (self._document((collection, key)) for key in dict.fromkeys(keys))
        return [document for document in found if document is not None]

    async def save_document(
        self, collection: str, key: str, data: str, *, expected_version: int
    ) -> int:
        """Insert (``expected_version=0``) or update a document; return its new version."""
        check_document(collection, key, data)
        current = self._touch_document((collection, key), expected_version)
        version = current + 1
        self._documents[collection, key] = DocumentRecord(collection, key, version, data, _now())
        return version

    async def delete_document(self, collection: str, key: str, *, expected_version: int) -> None:
        """Delete a document at the expected version."""
        check_document(collection, key)
        if expected_version == 0:
            raise ConcurrencyError(f"{collection}/{key}", expected_version, 0)
        self._touch_document((collection, key), expected_version)
        self._documents[collection, key] = None

    def search_documents(
        self, collection: str, options: QueryOptions, fields: FieldSet
    ) -> SearchResult[DocumentRecord]:
        """The documents of ``collection`` that ``options`` select, page by page."""

        async def fetch(page_options: QueryOptions) -> Page[DocumentRecord]:
            return query_in_memory(
                self._collection(collection),
                page_options,
                key=lambda record: record.key,
                fields=fields,
                view=lambda record: json.loads(record.data),
            )

        return SearchResult(fetch, options)

    async def clear_documents(self, collection: str) -> int:
        """Delete every document of ``collection``; return how many."""
        records = self._collection(collection)
        for record in records:
            self._touch_document((collection, record.key), record.version)
            self._documents[collection, record.key] = None
        return len(records)

    async def move_documents(self, source: str, target: str) -> int:
        """Replace every document of ``target`` with those of ``source``; return how many."""
        await self.clear_documents(target)
        moved = self._collection(source)
        for record in moved:
            self._touch_document((source, record.key), record.version)
            self._documents[source, record.key] = None
            self._touch_document((target, record.key), 0)
            self._documents[target, record.key] = dataclasses.replace(record, collection=target)
        return len(moved)

    def _collection(self, collection: str) -> list[DocumentRecord]:
        keys = {key for c, key in self._committed.documents if c == collection}
        keys.update(key for c, key in self._documents if c == collection)
        found = (self._document((collection, key)) for key in sorted(keys))
        return [record for record in found if record is not None]

    def _document(self, key: DocumentKey) -> DocumentRecord | None:
        if key in self._documents:
            return self._documents[key]
        return self._committed.documents.get(key)

    def _touch_document(self, key: DocumentKey, expected_version: int) -> int:
        """Check the expectation; remember the committed version this session builds on."""
        document = self._document(key)
        current = 0 if document is None else document.version
        if current != expected_version:
            raise ConcurrencyError(f"{key[0]}/{key[1]}", expected_version, current)
        if key not in self._document_bases:
            committed = self._committed.documents.get(key)
            self._document_bases[key] = 0 if committed is None else committed.version
        return current

    # -- outbox ------------------------------------------------------------------------

    async def write_batch(self, writes: Sequence[Write]) -> None:
        """Apply ``writes`` in order, each through its own method; check them all first."""
        check_writes(writes)
        await apply_writes(self, writes)

    async def add_to_outbox(self, messages: Sequence[OutboxMessage]) -> None:
        """Stage one outbox row per message."""
        check_outbox(messages)
        for message in messages:
            event_id = message.event_id
            if event_id in self._outbox_event_ids or event_id in self._committed.outbox_event_ids:
                raise DuplicateEventError(event_id)
            self._outbox_event_ids.add(event_id)
        self._outbox.extend(messages)

    async def read_outbox(self, *, limit: int = 100) -> list[OutboxEntry]:
        """Rows not yet published and not dead, oldest first (this session's rows last)."""
        committed = self._committed.outbox
        pending = [e for e in committed if e.published_at is None and not e.dead]
        staged = [
            OutboxEntry(
                self._committed.outbox_last_id + n, message, _now(), 0, None, None, None, dead=False
            )
            for n, message in enumerate(self._outbox, start=1)
        ]
        return (pending + staged)[:limit]

    # -- checkpoints -------------------------------------------------------------------

    async def load_checkpoint(self, name: str) -> LogPosition | None:
        """The saved position, or None when the reader has never run."""
        staged = self._checkpoints.get(name)
        return staged if staged is not None else self._committed.checkpoints.get(name)

    async def save_checkpoint(
        self,
        name: str,
        position: LogPosition,
        *,
        expected: LogPosition | Literal[StreamState.ANY] | None = StreamState.ANY,
    ) -> None:
        """Stage the position; the expectation is checked now and again on commit."""
        if expected is not StreamState.ANY:
            actual = await self.load_checkpoint(name)
            if actual != expected:
                raise CheckpointConflictError(name, expected, actual)
            # Like a document: remember the committed position this session builds on.
            self._checkpoint_bases.setdefault(name, self._committed.checkpoints.get(name))
        self._checkpoints[name] = LogPosition(*position)

    # -- inbox -------------------------------------------------------------------------

    async def mark_processed(self, event_id: UUID, handler_name: str) -> bool:
        """Record the pair; False when it was already recorded (a duplicate delivery)."""
        key = (event_id, handler_name)
        if key in self._inbox or self._committed_inbox_has(key):
            return False
        self._inbox[key] = _now()
        return True

    async def purge_processed(self, older_than: datetime) -> int:
        """Forget pairs processed before ``older_than``; return how many."""
        purged_before = self._inbox_purged_before
        committed = sum(
            1
            for processed_at in self._committed.inbox.values()
            if processed_at < older_than
            and (purged_before is None or processed_at >= purged_before)
        )
        staged = [key for key, at in self._inbox.items() if at < older_than]
        for key in staged:
            del self._inbox[key]
        if purged_before is None or older_than > purged_before:
            self._inbox_purged_before = older_than
        return committed + len(staged)

    def _committed_inbox_has(self, key: InboxKey) -> bool:
        processed_at = self._committed.inbox.get(key)
        if processed_at is None:
            return False
        return self._inbox_purged_before is None or processed_at >= self._inbox_purged_before

    # -- commit ------------------------------------------------------------------------

    def commit(self) -> None:
        """Validate every expectation against committed data, then apply every write."""
        self._validate()
        self._apply()

    def _validate(self) -> None:
        committed = self._committed
        for stream_id, batches in self._batches.items():
            version = len(committed.streams.get(stream_id, ()))
            for batch in batches:
                _check_expected(stream_id, batch.expected, version)
                version += len(batch.records)
        for event_id in self._staged_event_ids:
            if event_id in committed.event_ids:
                raise DuplicateEventError(event_id)
        # Checkpoints first: a reader that lost the race is told so, not that a read
        # model's document changed under it.
        for name, checkpoint in self._checkpoint_bases.items():
            moved = committed.checkpoints.get(name)
            if moved != checkpoint:
                raise CheckpointConflictError(name, checkpoint, moved)
        for key, base in self._document_bases.items():
            document = committed.documents.get(key)
            actual = 0 if document is None else document.version
            if actual != base:
                raise ConcurrencyError(f"{key[0]}/{key[1]}", base, actual)
        for event_id in self._outbox_event_ids:
            if event_id in committed.outbox_event_ids:
                raise DuplicateEventError(event_id)
        for event_id, handler_name in self._inbox:
            if (event_id, handler_name) in committed.inbox:
                raise ConcurrencyError(f"inbox/{handler_name}/{event_id}", 0, 1)

    def _apply(self) -> None:
        self._apply_events()
        committed = self._committed
        committed.snapshots.update(self._snapshots)
        for key, document in self._documents.items():
            if document is None:
                committed.documents.pop(key, None)
            else:
                committed.documents[key] = document
        self._apply_outbox()
        committed.checkpoints.update(self._checkpoints)
        if self._inbox_purged_before is not None:
            cutoff = self._inbox_purged_before
            committed.inbox = {k: at for k, at in committed.inbox.items() if at >= cutoff}
        committed.inbox.update(self._inbox)

    def _apply_events(self) -> None:
        committed = self._committed
        for stream_id, batches in self._batches.items():
            stream = committed.streams.setdefault(stream_id, [])
            for batch in batches:
                for record in batch.records:
                    event = _stored(record, stream_id, len(stream) + 1, len(committed.log) + 1)
                    stream.append(event)
                    committed.log.append(event)
        committed.event_ids.update(self._staged_event_ids)

    def _apply_outbox(self) -> None:
        committed = self._committed
        created_at = _now()
        for message in self._outbox:
            # Ids keep growing when published rows are purged from the list.
            committed.outbox_last_id += 1
            entry_id = committed.outbox_last_id
            committed.outbox.append(
                OutboxEntry(entry_id, message, created_at, 0, None, None, None, dead=False)
            )
        committed.outbox_event_ids.update(self._outbox_event_ids)


class MemoryStorage:
    """A :class:`~eventfold.ports.Storage` that keeps everything in this process's memory."""

    def __init__(self, *, name: str = "memory") -> None:
        self._name = name
        self._committed = _Committed()

    @property
    def name(self) -> str:
        """What this source is called in messages."""
        return self._name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[MemorySession]:
        """Open one transaction: committed when the block exits cleanly, else discarded."""
        session = MemorySession(self._committed)
        yield session
        session.commit()

    async def create_schema(self) -> None:
        """Nothing to create: memory has no tables (idempotent by construction)."""

    async def close(self) -> None:
        """Nothing to release."""


def create_memory_storage(*, name: str = "memory") -> MemoryStorage:
    """A fresh, empty in-memory storage."""
    return MemoryStorage(name=name)
