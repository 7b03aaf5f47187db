"""The records stores keep: plain data, JSON as text, no domain objects.

Backends store and return these; serialisation and upcasting live above them.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

from eventfold.domain.events import EventMetadata


class StreamState(enum.Enum):
    """Expectations about a stream that are not an exact version."""

    ANY = "any"
    """Append whatever the stream's version is."""
    NO_STREAM = "no_stream"
    """The stream must not exist yet."""


ExpectedVersion = int | StreamState
"""An exact version (0 means the stream is empty or absent) or a :class:`StreamState`."""


class LogPosition(NamedTuple):
    """Where a reader of the global log stands: (commit, position), compared as a tuple.

    ``position`` is the event's global sequence number. ``commit`` orders transactions:
    on PostgreSQL it is the writing transaction's id, so that a reader never passes an
    event whose transaction commits late; backends whose commits are serial use 0.
    """

    commit: int
    position: int


LOG_START = LogPosition(0, 0)
"""The position before the first event."""


@dataclass(frozen=True, slots=True)
class HorizonBlocker:
    """The open transaction that keeps committed events from being readable (PostgreSQL).

    A registered writer of the store that has not ended: events committed after it took
    its transaction id wait for it. ``age_seconds`` is how long it has been open, None
    when the server does not tell this role (another role's session, without
    ``pg_read_all_stats``).
    """

    pid: int | None
    database: str | None
    application_name: str | None
    age_seconds: float | None


@dataclass(frozen=True, slots=True)
class LogHorizon:
    """How much of the committed log a reader can read now.

    ``readable_head`` is the last event a reader can read, ``committed_head`` the last
    committed one; ``unreadable`` counts the committed events not readable yet, which wait
    for ``blocker`` to end. Backends that commit one transaction at a time read everything
    committed: both heads are equal and nothing waits.
    """

    readable_head: LogPosition
    committed_head: LogPosition
    unreadable: int = 0
    blocker: HorizonBlocker | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An event to append: encoded payload plus metadata."""

    event_id: UUID
    type_name: str
    schema_version: int
    data: str
    occurred_at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made
# building one cost more than decoding its JSON; loads and log reads build one per row.
# Treat it as read-only all the same. unsafe_hash keeps it hashable, like a frozen one.
@dataclass(slots=True, unsafe_hash=True)
class StoredEvent:
    """An event as read back from a store (read-only by convention)."""

    stream_id: str
    version: int
    position: int
    commit: int
    event_id: UUID
    type_name: str
    schema_version: int
    data: str
    occurred_at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None

    @property
    def log_position(self) -> LogPosition:
        """This event's place in the global log."""
        return LogPosition(self.commit, self.position)

    def metadata(self) -> EventMetadata:
        """What the store knows about this event, as handlers and envelopes carry it."""
        return EventMetadata(
            event_id=self.event_id,
            type_name=self.type_name,
            schema_version=self.schema_version,
            stream_id=self.stream_id,
            version=self.version,
            occurred_at=self.occurred_at,
            position=self.position,
            correlation_id=self.correlation_id,
            causation_id=self.causation_id,
            actor=self.actor,
        )


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """A stream's state at a version, with the schema version of the state's shape."""

    stream_id: str
    version: int
    state_type: str
    schema_version: int
    data: str
    taken_at: datetime


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """A JSON document (a state-stored aggregate or a read model) with its row version."""

    collection: str
    key: str
    version: int
    data: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An event captured for relay to a broker, written in the command's transaction."""

    event_id: UUID
    type_name: str
    schema_version: int
    aggregate_type: str
    aggregate_id: str
    data: str
    occurred_at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None
    traceparent: str | None = None
    """The W3C trace context of the request that recorded the event (telemetry on)."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An outbox row with its delivery state, as the relay sees it."""

    id: int
    message: OutboxMessage
    created_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    published_at: datetime | None
    last_error: str | None
    dead: bool
    refusals: int = 0
    """Attempts the broker refused (``attempts`` also counts those made during outages)."""


@dataclass(frozen=True, slots=True)
class AppendEvents:
    """A write in a batch: append ``events`` to a stream at ``expected_version``."""

    stream_id: str
    events: Sequence[EventRecord]
    expected_version: ExpectedVersion


@dataclass(frozen=True, slots=True)
class SaveDocument:
    """A write in a batch: insert (``expected_version=0``) or update a document."""

    collection: str
    key: str
    data: str
    expected_version: int


@dataclass(frozen=True, slots=True)
class DeleteDocument:
    """A write in a batch: delete a document at the expected version."""

    collection: str
    key: str
    expected_version: int


Write = AppendEvents | SaveDocument | DeleteDocument | SnapshotRecord | OutboxMessage
"""One write of a batch (see ``StorageSession.write_batch``): what its own method would do."""
