"""A projection's health, kept beside its checkpoint: parked on a failure, events skipped.

A handler that raises parks its projection: the failing event, its position and the
error are stored in the projection's health document (in ``eventfold_documents``, so
every backend keeps it, in the same database as the checkpoint). Every runner of that
projection, in any process, sees the park and stops applying until an operator either
retries (the same event is applied again) or skips it with a reason that stays on record.
Nothing stops silently and nothing is skipped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from eventfold.domain.errors import EventfoldError, InvalidStateError
from eventfold.ports.records import LogPosition, StoredEvent
from eventfold.ports.storage import DocumentStore, Storage
from eventfold.serialization import JsonCodec

__all__ = [
    "HEALTH_COLLECTION",
    "ParkedFailure",
    "ProjectionHealth",
    "ProjectionParkedError",
    "SkippedEvent",
    "load_health",
    "park_projection",
    "projection_health",
    "retry_projection",
    "save_health",
    "skip_parked_event",
]

HEALTH_COLLECTION = "eventfold:projections"
"""The document collection that holds every projection's health (keyed by its name)."""


@dataclass(frozen=True, slots=True)
class ParkedFailure:
    """The event a projection failed on, and the error, as stored for an operator."""

    event_id: UUID
    position: LogPosition
    type_name: str
    stream_id: str
    version: int
    error: str
    failed_at: datetime

    @staticmethod
    def of(record: StoredEvent, error: BaseException, now: datetime) -> ParkedFailure:
        """The failure of ``record`` with ``error``, at ``now``."""
        return ParkedFailure(
            record.event_id,
            record.log_position,
            record.type_name,
            record.stream_id,
            record.version,
            f"{type(error).__name__}: {error}",
            now,
        )


@dataclass(frozen=True, slots=True)
class SkippedEvent:
    """An event an operator told a projection to pass over, and why."""

    event_id: UUID
    position: LogPosition
    type_name: str
    reason: str
    skipped_at: datetime


@dataclass(frozen=True, slots=True)
class ProjectionHealth:
    """Whether a projection is parked, and the events it was told to skip."""

    name: str
    parked: ParkedFailure | None = None
    skipped: tuple[SkippedEvent, ...] = field(default=())
    version: str | None = None
    """The projection version its read models were built by (None: not recorded yet)."""

    @property
    def skipped_ids(self) -> frozenset[UUID]:
        """The ids of the events to pass over."""
        return frozenset(skip.event_id for skip in self.skipped)


class ProjectionParkedError(EventfoldError):
    """The projection is parked on a failed event until an operator retries or skips it."""

    def __init__(self, name: str, failure: ParkedFailure) -> None:
        super().__init__(
            f"projection {name!r} is parked on event {failure.event_id} ({failure.type_name}, "
            f"stream {failure.stream_id!r} v{failure.version}, position "
            f"{failure.position.position}): {failure.error}; retry it or skip the event"
        )
        self.name = name
        self.failure = failure


_codec = JsonCodec(ProjectionHealth, "projection health")


async def load_health(session: DocumentStore, name: str) -> tuple[ProjectionHealth, int]:
    """The projection's health and its document version (0 when none is stored)."""
    record = await session.load_document(HEALTH_COLLECTION, name)
    if record is None:
        return ProjectionHealth(name), 0
    data: Any = record.data
    health: ProjectionHealth = (
        _codec.decode(data) if isinstance(data, str | bytes) else _codec.decode_python(data)
    )
    return health, record.version


async def save_health(session: DocumentStore, health: ProjectionHealth, version: int) -> None:
    """Store ``health`` over the document at ``version`` (0: none stored yet)."""
    await session.save_document(
        HEALTH_COLLECTION, health.name, _codec.encode(health), expected_version=version
    )


async def projection_health(storage: Storage, name: str) -> ProjectionHealth:
    """The stored health of projection ``name`` (healthy when nothing was ever stored)."""
    async with storage.transaction() as session:
        health, _ = await load_health(session, name)
    return health


async def park_projection(storage: Storage, name: str, failure: ParkedFailure) -> None:
    """Park ``name`` on ``failure`` (a runner does this when a handler raises)."""
    async with storage.transaction() as session:
        health, version = await load_health(session, name)
        if health.parked is None or health.parked.event_id != failure.event_id:
            await save_health(session, replace(health, parked=failure), version)


async def retry_projection(storage: Storage, name: str) -> ParkedFailure:
    """Unpark ``name``: its runners apply the failed event again; return what was parked."""
    async with storage.transaction() as session:
        health, version = await load_health(session, name)
        parked = _require_parked(health)
        await save_health(session, replace(health, parked=None), version)
    return parked


async def skip_parked_event(
    storage: Storage, name: str, *, reason: str, now: datetime, event_id: UUID | None = None
) -> SkippedEvent:
    """Unpark ``name`` past its failed event, recording ``reason``; return the record.

    ``event_id``, when given, must be the parked event's: an operator skips what they saw.
    """
    if not reason.strip():
        msg = "say why the event is skipped: the reason stays on record"
        raise InvalidStateError(msg)
    async with storage.transaction() as session:
        health, version = await load_health(session, name)
        parked = _require_parked(health)
        if event_id is not None and event_id != parked.event_id:
            msg = f"projection {name!r} is parked on event {parked.event_id}, not {event_id}"
            raise InvalidStateError(msg)
        skip = SkippedEvent(parked.event_id, parked.position, parked.type_name, reason, now)
        await save_health(
            session, replace(health, parked=None, skipped=(*health.skipped, skip)), version
        )
    return skip


def _require_parked(health: ProjectionHealth) -> ParkedFailure:
    if health.parked is None:
        msg = f"projection {health.name!r} is not parked: there is nothing to retry or skip"
        raise InvalidStateError(msg)
    return health.parked
