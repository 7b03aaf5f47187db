"""Repositories: load aggregates into a unit of work, which saves them when it commits.

Each kind mirrors the others: ``get`` / ``get_required`` / ``add``, and a change object
that the unit of work flushes in its one transaction (``flush``) and settles once that
transaction committed (``settle``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from eventfold.application.persistence.model import (
    EventSourcedModel,
    StateStoredModel,
    TableMapping,
)
from eventfold.application.persistence.tracking import Change, CommitBatch, WorkTracker
from eventfold.domain.aggregate import AggregateRoot
from eventfold.domain.decider import Decider
from eventfold.domain.entity import Entity
from eventfold.domain.events import EventEnvelope
from eventfold.errors import AggregateNotFoundError, ConfigurationError
from eventfold.ports import SnapshotRecord, StorageSession, StreamState

__all__ = [
    "DeciderRepository",
    "EventSourcedRepository",
    "Repository",
    "StateStoredRepository",
]

A = TypeVar("A", bound=AggregateRoot[Any, Any])
T = TypeVar("T", bound=Entity[Any])
C = TypeVar("C")
S = TypeVar("S")
Ev = TypeVar("Ev")


class Repository(Protocol[T]):
    """What every repository offers a command handler."""

    async def get(self, aggregate_id: Any) -> T | None:
        """The aggregate, or None when nothing is stored under ``aggregate_id``."""
        ...

    async def get_required(self, aggregate_id: Any) -> T:
        """The aggregate, or :class:`AggregateNotFoundError`."""
        ...

    def add(self, aggregate: T) -> None:
        """Track a new aggregate: stored on commit."""
        ...


# -- event-sourced -------------------------------------------------------------------------


@dataclass(slots=True)
class _EventSourcedChange:
    aggregate: AggregateRoot[Any, Any]
    model: EventSourcedModel
    loaded_version: int
    new_version: int = 0

    async def flush(self, batch: CommitBatch) -> None:
        events = self.aggregate.pending_events
        if not events:
            return
        aggregate_id = self.aggregate.id
        stream_id = self.model.stream_id(aggregate_id)
        records = batch.records(
            events,
            self.model.name,
            str(aggregate_id),
            stream_id=stream_id,
            first_version=self.loaded_version + 1,
        )
        self.new_version = batch.append(stream_id, records, expected_version=self.loaded_version)
        policy = self.model.snapshots
        if policy is not None and policy.is_due(self.loaded_version, self.new_version):
            batch.save_snapshot(self._snapshot(stream_id, batch.now))

    def _snapshot(self, stream_id: str, now: datetime) -> SnapshotRecord:
        model = self.model
        assert model.state_codec is not None
        data = model.state_codec.encode(self.aggregate.state)
        return SnapshotRecord(
            stream_id, self.new_version, model.snapshot_type, model.state_version, data, now
        )

    def settle(self) -> None:
        if self.aggregate.pending_events:
            self.aggregate.pull_events()
            self.loaded_version = self.new_version


class EventSourcedRepository(Generic[A]):
    """Loads an event-sourced aggregate from its latest snapshot and the events after it."""

    def __init__(self, tracker: WorkTracker, model: EventSourcedModel) -> None:
        self._uow = tracker
        self._model = model

    async def get(
        self, aggregate_id: Any, *, as_of: datetime | None = None, version: int | None = None
    ) -> A | None:
        """The aggregate (now, as it was at ``as_of``, or at ``version``), or None."""
        temporal = as_of is not None or version is not None
        if not temporal:
            tracked = self._uow.tracked(self._model.aggregate_type, aggregate_id)
            if tracked is not None:
                return tracked  # type: ignore[return-value]
        aggregate = await self._load(aggregate_id, as_of, version)
        if aggregate is not None and not temporal:
            # A past state is for reading only: it is never saved, so it is not tracked.
            self._track(aggregate, aggregate.version)
        return aggregate

    async def get_required(
        self, aggregate_id: Any, *, as_of: datetime | None = None, version: int | None = None
    ) -> A:
        """The aggregate, or :class:`AggregateNotFoundError`."""
        aggregate = await self.get(aggregate_id, as_of=as_of, version=version)
        if aggregate is None:
            raise AggregateNotFoundError(self._model.name, aggregate_id)
        return aggregate

    def add(self, aggregate: A) -> None:
        """Track a new aggregate: its events are appended to a new stream on commit."""
        self._track(aggregate, aggregate.persisted_version)

    async def history(
        self, aggregate_id: Any, *, as_of: datetime | None = None
    ) -> list[EventEnvelope[object]]:
        """The aggregate's events, oldest first, each with its metadata (an audit trail).

        Only events that occurred by ``as_of`` when it is given; an empty list when the
        aggregate was never stored. Old payloads are upcast, as when the aggregate loads.
        """
        return await read_history(self._uow, self._model.stream_id(aggregate_id), as_of)

    def _track(self, aggregate: AggregateRoot[Any, Any], version: int) -> None:
        self._uow.track(aggregate, _EventSourcedChange(aggregate, self._model, version))

    async def _load(
        self, aggregate_id: Any, as_of: datetime | None, version: int | None
    ) -> A | None:
        session = await self._uow.session()
        model = self._model
        stream_id = model.stream_id(aggregate_id)
        state, start = await self._snapshot_state(session, stream_id, as_of, version)
        stored = await session.read_stream(
            stream_id, from_version=start + 1, to_version=version, as_of=as_of
        )
        if not stored and state is None:
            return None
        events = self._uow.decode(stored)
        return model.aggregate_type.rehydrate(  # type: ignore[return-value]
            aggregate_id, events, state=state, version=start
        )

    async def _snapshot_state(
        self, session: StorageSession, stream_id: str, as_of: datetime | None, version: int | None
    ) -> tuple[Any, int]:
        model = self._model
        # A type without a snapshot policy has no snapshots: skip the round trip. A snapshot
        # says nothing about when its events occurred, so `as_of` reads fold from the start.
        if model.snapshots is None or model.state_codec is None or as_of is not None:
            return None, 0
        snapshot = await session.load_snapshot(stream_id)
        if snapshot is None or (version is not None and snapshot.version > version):
            return None, 0
        # A state whose shape changed since the snapshot (its fields, or its declared
        # version) is rebuilt from the events, never read with the new shape.
        if (
            snapshot.state_type != model.snapshot_type
            or snapshot.schema_version != model.state_version
        ):
            return None, 0
        return model.state_codec.decode(snapshot.data), snapshot.version


# -- deciders ------------------------------------------------------------------------------


@dataclass(slots=True)
class _DeciderChange:
    stream_name: str
    aggregate_id: Any
    events: Sequence[object]
    expected_version: int

    async def flush(self, batch: CommitBatch) -> None:
        if not self.events:
            return
        records = batch.records(self.events, self.stream_name, str(self.aggregate_id))
        stream_id = f"{self.stream_name}-{self.aggregate_id}"
        batch.append(stream_id, records, expected_version=self.expected_version)

    def settle(self) -> None:
        """Nothing in memory to update: a decider's state is folded anew on each load."""


class DeciderRepository(Generic[C, S, Ev]):
    """Runs a :class:`Decider` on a stream: fold the history, decide, append on commit."""

    def __init__(self, tracker: WorkTracker, decider: Decider[C, S, Ev], name: str) -> None:
        self._uow = tracker
        self._decider = decider
        self._name = name

    async def load(self, aggregate_id: Any) -> tuple[S, int]:
        """The state folded from the stream, and the stream's version."""
        session = await self._uow.session()
        stored = await session.read_stream(f"{self._name}-{aggregate_id}")
        events: list[Ev] = self._uow.decode(stored)  # type: ignore[assignment]
        return self._decider.fold(events), len(stored)

    async def history(
        self, aggregate_id: Any, *, as_of: datetime | None = None
    ) -> list[EventEnvelope[object]]:
        """The stream's events, oldest first, each with its metadata (an audit trail)."""
        return await read_history(self._uow, f"{self._name}-{aggregate_id}", as_of)

    async def decide(self, aggregate_id: Any, command: C) -> list[Ev]:
        """Decide on ``command``; the events are appended at the loaded version on commit."""
        state, version = await self.load(aggregate_id)
        events = list(self._decider.decide(command, state))
        self._uow.stage(_DeciderChange(self._name, aggregate_id, events, version))
        return events


async def read_history(
    uow: WorkTracker, stream_id: str, as_of: datetime | None
) -> list[EventEnvelope[object]]:
    """A stream's events with their metadata, upcast as on load, occurring by ``as_of``."""
    session = await uow.session()
    stored = await session.read_stream(stream_id, as_of=as_of)
    events = uow.decode(stored)
    return [
        EventEnvelope(event, record.metadata())
        for event, record in zip(events, stored, strict=True)
    ]


# -- state-stored --------------------------------------------------------------------------


@dataclass(slots=True)
class _DocumentChange:
    entity: Entity[Any]
    model: StateStoredModel
    loaded_version: int
    loaded_data: str | None = None
    removed: bool = False
    new_version: int = 0
    _events: tuple[object, ...] = field(default=())

    async def flush(self, batch: CommitBatch) -> None:
        self._events = events = self.entity.pending_events
        key = str(self.entity.id)
        if self.removed:
            batch.delete_document(self.model.name, key, expected_version=self.loaded_version)
        else:
            data = self.model.dump(self.entity)
            if not self.loaded_version or _changed(data, self.loaded_data):
                self.new_version = batch.save_document(
                    self.model.name, key, data, expected_version=self.loaded_version
                )
                self.loaded_data = data
        if events:
            _record_state_stored(batch, self.model, key, events)

    def settle(self) -> None:
        settle_entity(self.entity, self._events, self.new_version)
        if self.new_version:
            self.loaded_version = self.new_version


def _changed(data: str, loaded: str | None) -> bool:
    """Whether a document differs from the one loaded (a database may respace JSON text)."""
    if data == loaded:
        return False
    return loaded is None or json.loads(data) != json.loads(loaded)


@dataclass(slots=True)
class _RowChange:
    entity: Entity[Any]
    model: StateStoredModel
    mapping: TableMapping
    loaded_version: int
    loaded_row: dict[str, Any] | None = None
    removed: bool = False
    new_version: int = 0
    _events: tuple[object, ...] = field(default=())

    async def flush(self, batch: CommitBatch) -> None:
        from eventfold.application.persistence import sql_rows  # noqa: PLC0415 - SQLAlchemy is an optional extra

        self._events = events = self.entity.pending_events
        key = self.entity.id
        executor = sql_executor(await batch.direct(), self.model.name)
        if self.removed:
            await sql_rows.delete_row(executor, self.mapping, key, self.loaded_version)
        else:
            # A row loaded and left as it was is not written again (nor its version bumped).
            row = dict(self.mapping.to_row(self.entity))
            if row != self.loaded_row or not self.loaded_version:
                self.new_version = await sql_rows.save_row(
                    executor, self.mapping, self.entity, self.loaded_version
                )
                self.loaded_row = row
        if events:
            _record_state_stored(batch, self.model, str(key), events)

    def settle(self) -> None:
        settle_entity(self.entity, self._events, self.new_version)
        if self.new_version:
            self.loaded_version = self.new_version


def _record_state_stored(
    batch: CommitBatch, model: StateStoredModel, key: str, events: Sequence[object]
) -> None:
    """Outbox rows for a state-stored entity's events, and log rows when it logs them."""
    if not model.log_events:
        batch.records(events, model.name, key)
        return
    # Appended at whatever version the stream has: the state row's own version check
    # already serialises writers of this entity, and a type that starts logging late
    # has a stream that is shorter than its row's history.
    stream_id = model.stream_id(key)
    records = batch.records(events, model.name, key, stream_id=stream_id)
    batch.append(stream_id, records, expected_version=StreamState.ANY)


def settle_entity(entity: Entity[Any], flushed: tuple[object, ...], new_version: int) -> None:
    """Forget the events that were committed and set the stored version."""
    if flushed:
        entity.pull_events()
    if new_version:
        entity._mark_persisted(new_version)


def sql_executor(session: StorageSession, name: str) -> Any:
    """The session as a SQL executor, or :class:`ConfigurationError` for a non-SQL backend."""
    if not hasattr(session, "execute_sql"):
        msg = f"{name} is kept in a SQL table, but this storage cannot run SQL"
        raise ConfigurationError(msg)
    return session


class StateStoredRepository(Generic[T]):
    """Loads and saves a state-stored type with a version check on every update."""

    def __init__(self, tracker: WorkTracker, model: StateStoredModel) -> None:
        self._uow = tracker
        self._model = model

    async def get(self, aggregate_id: Any) -> T | None:
        """The entity, or None."""
        tracked = self._uow.tracked(self._model.entity_type, aggregate_id)
        if tracked is not None:
            return tracked  # type: ignore[return-value]
        if self._model.table is not None:
            return await self._get_row(aggregate_id, self._model.table)
        session = await self._uow.session()
        document = await session.load_document(self._model.name, str(aggregate_id))
        if document is None:
            return None
        entity: T = self._model.load(aggregate_id, document.data)
        entity._mark_persisted(document.version)
        change = _DocumentChange(entity, self._model, document.version, document.data)
        self._uow.track(entity, change)
        return entity

    async def get_required(self, aggregate_id: Any) -> T:
        """The entity, or :class:`AggregateNotFoundError`."""
        entity = await self.get(aggregate_id)
        if entity is None:
            raise AggregateNotFoundError(self._model.name, aggregate_id)
        return entity

    def add(self, entity: T) -> None:
        """Track a new entity: inserted on commit (a stored one with that id conflicts)."""
        self._uow.track(entity, self._change(entity, 0))

    def remove(self, entity: T) -> None:
        """Delete the entity on commit, at the version it was loaded at."""
        change = self._uow.change_of(entity)
        if not isinstance(change, _DocumentChange | _RowChange):
            msg = f"{self._model.name} {entity.id!r} was not loaded by this unit of work"
            raise ConfigurationError(msg)
        change.removed = True

    def attach(self, entity: T, version: int) -> None:
        """Track a copy loaded elsewhere (another unit of work, a cache), saved at ``version``.

        The update expects ``version`` in the store, so a concurrent change is detected
        rather than overwritten.
        """
        self._uow.track(entity, self._change(entity, version))

    def _change(self, entity: Entity[Any], version: int) -> Change:
        if self._model.table is not None:
            return _RowChange(entity, self._model, self._model.table, version)
        return _DocumentChange(entity, self._model, version)

    async def _get_row(self, aggregate_id: Any, mapping: TableMapping) -> T | None:
        from eventfold.application.persistence import sql_rows  # noqa: PLC0415 - SQLAlchemy is an optional extra

        session = await self._uow.session()
        row = await sql_rows.load_row(
            sql_executor(session, self._model.name), mapping, aggregate_id
        )
        if row is None:
            return None
        entity: T = mapping.from_row(row)
        version = int(row[mapping.version_column])
        entity._mark_persisted(version)
        loaded = dict(mapping.to_row(entity))
        self._uow.track(entity, _RowChange(entity, self._model, mapping, version, loaded))
        return entity
