"""What a unit of work shares with its repositories: the transaction, the identity map, the batch.

Repositories hold a :class:`WorkTracker`, never the unit of work itself, so the two
import nothing from each other and a unit of work is freed as soon as it is dropped
(no reference cycle for the cyclic garbage collector).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventfold.domain.entity import Entity
from eventfold.domain.events import EventMetadata
from eventfold.errors import ConfigurationError
from eventfold.ports import (
    AppendEvents,
    DeleteDocument,
    EventRecord,
    ExpectedVersion,
    OutboxMessage,
    SaveDocument,
    SnapshotRecord,
    Storage,
    StorageSession,
    StoredEvent,
    Write,
)
from eventfold.ports.telemetry import active_telemetry
from eventfold.serialization import EventRegistry

__all__ = ["Change", "CommitBatch", "EventOrigin", "WorkTracker"]


class Change(Protocol):
    """Something a unit of work writes on commit."""

    async def flush(self, batch: CommitBatch) -> None:
        """Write this change into the batch's transaction."""
        ...

    def settle(self) -> None:
        """Called once the transaction committed."""
        ...


@dataclass(slots=True)
class EventOrigin:
    """Who records a batch's events: their registry, id factory, correlation and actor."""

    events: EventRegistry
    new_id: Callable[[], UUID]
    correlation_id: str | None
    causation_id: str | None
    actor: str | None


class WorkTracker:
    """The open transaction and the changes tracked by id, shared by repositories."""

    __slots__ = ("_session", "changes", "events", "finished", "staged", "storage", "transaction")

    def __init__(self, storage: Storage, events: EventRegistry) -> None:
        self.storage = storage
        self.events = events
        self.transaction: AbstractAsyncContextManager[StorageSession] | None = None
        self._session: StorageSession | None = None
        self.changes: dict[tuple[type, object], tuple[Entity[Any], Change]] = {}
        self.staged: list[Change] = []
        self.finished = False

    async def session(self) -> StorageSession:
        """The open transaction, begun on first use."""
        if self._session is None:
            if self.finished:
                msg = "this unit of work has finished: open a new one per command"
                raise ConfigurationError(msg)
            transaction = self.storage.transaction()
            # Kept only once begun: a transaction that failed to begin must not be ended.
            self._session = await transaction.__aenter__()
            self.transaction = transaction
        return self._session

    def detach(self) -> AbstractAsyncContextManager[StorageSession] | None:
        """Forget the transaction (and mark the work finished); return it for ending."""
        transaction, self.transaction, self._session = self.transaction, None, None
        self.finished = True
        return transaction

    def tracked(self, entity_type: type, entity_id: object) -> Entity[Any] | None:
        """The instance already held for that id, if any."""
        found = self.changes.get((entity_type, entity_id))
        return None if found is None else found[0]

    def track(self, entity: Entity[Any], change: Change) -> None:
        """Save ``entity`` (as ``change`` says) on commit."""
        self.changes[type(entity), entity.id] = (entity, change)

    def change_of(self, entity: Entity[Any]) -> Change | None:
        """The change tracked for ``entity``."""
        found = self.changes.get((type(entity), entity.id))
        return None if found is None else found[1]

    def stage(self, change: Change) -> None:
        """Write ``change`` on commit (for changes with no entity, such as a decision)."""
        self.staged.append(change)

    def decode(self, stored: Sequence[StoredEvent]) -> list[object]:
        """Domain events from stored ones, old payloads upcast first."""
        decode = self.events.decode
        return [decode(e.type_name, e.schema_version, e.data) for e in stored]


class CommitBatch:
    """What one commit writes: encodes each event once, for its stream and its outbox row.

    Changes queue their writes here; the unit of work hands them to the session in one
    ``write_batch``, so a backend can send a whole command in one round trip. Every
    queued write carries the version it expects, so its result is known in advance.
    """

    __slots__ = (
        "_origin",
        "_traceparent",
        "metadata",
        "now",
        "outbox",
        "published",
        "session",
        "writes",
    )

    def __init__(
        self, origin: EventOrigin, session: StorageSession, now: datetime, *, with_metadata: bool
    ) -> None:
        self._origin = origin
        self.session = session
        self.now = now
        self.writes: list[Write] = []
        self.outbox: list[OutboxMessage] = []
        self.published: list[object] = []
        # Metadata is only built when inline projections or in-process handlers can see
        # it: a unit of work that does neither skips it.
        self.metadata: list[EventMetadata] | None = [] if with_metadata else None
        # The request's trace context rides in each outbox row to the broker's consumers.
        telemetry = active_telemetry()
        self._traceparent = None if telemetry is None else telemetry.traceparent()

    def append(
        self, stream_id: str, records: Sequence[EventRecord], *, expected_version: ExpectedVersion
    ) -> int:
        """Queue an append at ``expected_version``; return the version it leads to.

        With ``StreamState.ANY`` the storage places the events after whatever the stream
        holds, and the number returned is only how many were queued.
        """
        self.writes.append(AppendEvents(stream_id, records, expected_version))
        start = expected_version if isinstance(expected_version, int) else 0
        return start + len(records)

    def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Queue a snapshot."""
        self.writes.append(snapshot)

    def save_document(self, collection: str, key: str, data: str, *, expected_version: int) -> int:
        """Queue a document insert or update; return the version it leads to."""
        self.writes.append(SaveDocument(collection, key, data, expected_version))
        return expected_version + 1

    def delete_document(self, collection: str, key: str, *, expected_version: int) -> None:
        """Queue a document delete at ``expected_version``."""
        self.writes.append(DeleteDocument(collection, key, expected_version))

    async def direct(self) -> StorageSession:
        """The session, once the writes queued so far are handed to it (for direct SQL)."""
        await self.send()
        return self.session

    async def send(self) -> None:
        """Hand the queued writes to the session (the outbox rows stay for the end)."""
        writes, self.writes = self.writes, []
        if writes:
            await self.session.write_batch(writes)

    def records(
        self,
        events: Sequence[object],
        aggregate_type: str,
        aggregate_id: str,
        *,
        stream_id: str | None = None,
        first_version: int = 0,
    ) -> list[EventRecord]:
        """Event records for ``events``; their outbox messages are added to the batch.

        ``stream_id`` and ``first_version`` describe where an event-sourced aggregate's
        events land, for the metadata inline projections see.
        """
        origin = self._origin
        encode = origin.events.encode
        new_id = origin.new_id
        now = self.now
        correlation_id, causation_id, actor = (
            origin.correlation_id,
            origin.causation_id,
            origin.actor,
        )
        traceparent = self._traceparent
        records: list[EventRecord] = []
        for event in events:
            encoded = encode(event)
            event_id = new_id()
            records.append(
                EventRecord(
                    event_id,
                    encoded.type_name,
                    encoded.schema_version,
                    encoded.data,
                    now,
                    correlation_id,
                    causation_id,
                    actor,
                )
            )
            self.outbox.append(
                OutboxMessage(
                    event_id,
                    encoded.type_name,
                    encoded.schema_version,
                    aggregate_type,
                    aggregate_id,
                    encoded.data,
                    now,
                    correlation_id,
                    causation_id,
                    actor,
                    traceparent,
                )
            )
        self.published.extend(events)
        if self.metadata is not None:
            self.metadata.extend(
                _metadata(record, stream_id or f"{aggregate_type}-{aggregate_id}", version)
                for record, version in zip(
                    records, range(first_version, first_version + len(records)), strict=True
                )
            )
        return records


def _metadata(record: EventRecord, stream_id: str, version: int) -> EventMetadata:
    return EventMetadata(
        event_id=record.event_id,
        type_name=record.type_name,
        schema_version=record.schema_version,
        stream_id=stream_id,
        version=version,
        occurred_at=record.occurred_at,
        correlation_id=record.correlation_id,
        causation_id=record.causation_id,
        actor=record.actor,
    )
