"""The unit of work: one transaction per command, events published only after it committed.

On commit, in ONE transaction: state rows of state-stored aggregates, events appended to
the streams of event-sourced ones (at the version they were loaded at), snapshots as their
policy asks, and one outbox row per recorded event of both kinds. Only then are the events
handed to in-process handlers; a failed commit publishes nothing and leaves nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID, uuid4

from eventfold.application.cqrs.mediator import Next, RequestContext, publishing
from eventfold.application.cqrs.results import OperationResult
from eventfold.application.persistence.model import EventSourcedModel, PersistenceModel
from eventfold.application.persistence.repositories import (
    DeciderRepository,
    EventSourcedRepository,
    Repository,
    StateStoredRepository,
)
from eventfold.application.persistence.tracking import CommitBatch, EventOrigin, WorkTracker
from eventfold.application.readside.projections import Projection, ProjectionContext
from eventfold.domain.aggregate import AggregateRoot
from eventfold.domain.decider import Decider
from eventfold.domain.dispatch import find_handler
from eventfold.domain.entity import Entity
from eventfold.domain.events import EventMetadata
from eventfold.errors import ConfigurationError
from eventfold.ports import LogPosition, Storage, StorageSession, StoredEvent
from eventfold.ports.telemetry import active_telemetry
from eventfold.serialization import EventRegistry

__all__ = [
    "CommitBatch",
    "DataSource",
    "DataSources",
    "TransactionBehavior",
    "UnitOfWork",
    "create_tables",
    "utc_now",
]

logger = logging.getLogger("eventfold.unit_of_work")

A = TypeVar("A", bound=AggregateRoot[Any, Any])
T = TypeVar("T", bound=Entity[Any])
C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")

Publish = Callable[[object], Awaitable[object]]
Clock = Callable[[], datetime]
IdFactory = Callable[[], UUID]


def utc_now() -> datetime:
    """The current time in UTC (the default clock)."""
    return datetime.now(UTC)


class _Rollback(Exception):  # noqa: N818 - a signal handed to the transaction, not an error
    """Thrown into the storage transaction to make it roll back."""


class UnitOfWork:
    """Tracks what its repositories loaded or added; commits it all in one transaction."""

    def __init__(
        self,
        storage: Storage,
        model: PersistenceModel,
        events: EventRegistry,
        *,
        publish: Publish | None = None,
        clock: Clock = utc_now,
        new_id: IdFactory = uuid4,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        actor: str | None = None,
        inline_projections: Sequence[Projection] = (),
    ) -> None:
        self.storage = storage
        self.inline_projections = tuple(inline_projections)
        self._after_commit: list[Callable[[], Awaitable[object]]] = []
        self.model = model
        self.events = events
        self.clock = clock
        self.new_id = new_id
        self.correlation_id = correlation_id
        self.causation_id = causation_id
        self.actor = actor
        self._publish = publish
        self._tracker = WorkTracker(storage, events)
        self._repositories: dict[type, object] = {}
        self.readable_at: LogPosition | None = None
        """Once committed: the log position that makes this commit's events readable (None
        when nothing needs waiting for). Read-your-writes waits for it (CatchUpBehavior)."""

    @staticmethod
    def of(context: RequestContext) -> UnitOfWork:
        """The unit of work :class:`TransactionBehavior` opened for this request."""
        uow = context.unit_of_work
        if not isinstance(uow, UnitOfWork):
            msg = "no unit of work for this request: add a TransactionBehavior to the mediator"
            raise ConfigurationError(msg)
        return uow

    # -- repositories ------------------------------------------------------------------

    def repository(self, entity_type: type[T]) -> Repository[T]:
        """The repository of ``entity_type``, as its persistence model says it is kept."""
        repository = self._repositories.get(entity_type)
        if repository is None:
            model = self.model.model_for(entity_type)
            if isinstance(model, EventSourcedModel):
                repository = EventSourcedRepository[Any](self._tracker, model)
            else:
                repository = StateStoredRepository[Any](self._tracker, model)
            self._repositories[entity_type] = repository
        return repository  # type: ignore[return-value]

    def event_sourced(self, aggregate_type: type[A]) -> EventSourcedRepository[A]:
        """The repository of an event-sourced type (with temporal reads)."""
        repository = self.repository(aggregate_type)
        if not isinstance(repository, EventSourcedRepository):
            msg = f"{aggregate_type.__qualname__} is not event-sourced"
            raise ConfigurationError(msg)
        return repository

    def state_stored(self, entity_type: type[T]) -> StateStoredRepository[T]:
        """The repository of a state-stored type (with ``remove``)."""
        repository = self.repository(entity_type)
        if not isinstance(repository, StateStoredRepository):
            msg = f"{entity_type.__qualname__} is not state-stored"
            raise ConfigurationError(msg)
        return repository

    def decider(self, decider: Decider[C, S, E], name: str) -> DeciderRepository[C, S, E]:
        """Run ``decider`` on the streams ``<name>-<id>`` in this unit of work."""
        return DeciderRepository(self._tracker, decider, name)

    # -- what repositories call --------------------------------------------------------

    async def session(self) -> StorageSession:
        """The open transaction, begun on first use."""
        return await self._tracker.session()

    def decode(self, stored: Sequence[StoredEvent]) -> list[object]:
        """Domain events from stored ones, old payloads upcast first."""
        return self._tracker.decode(stored)

    def tracked(self, entity_type: type, entity_id: object) -> Entity[Any] | None:
        """The instance this unit of work already holds for that id, if any."""
        return self._tracker.tracked(entity_type, entity_id)

    # -- commit and rollback -----------------------------------------------------------

    async def commit(self) -> list[object]:
        """Write everything in one transaction, commit, then publish; return the events."""
        telemetry = active_telemetry()
        if telemetry is None:
            return await self._commit()
        attributes = {"db.system.name": _db_system(self._tracker.storage.name)}
        with telemetry.span("commit", kind="client", attributes=attributes) as span:
            published = await self._commit()
            # One event appended and one outbox row written per event published.
            span.set_attribute("eventfold.commit.events", len(published))
            return published

    async def _commit(self) -> list[object]:
        tracker = self._tracker
        if not tracker.changes and not tracker.staged:
            await self._end(None)
            return []
        origin = EventOrigin(
            self.events, self.new_id, self.correlation_id, self.causation_id, self.actor
        )
        with_metadata = bool(self.inline_projections) or self.publishes
        batch = CommitBatch(
            origin, await tracker.session(), self.clock(), with_metadata=with_metadata
        )
        try:
            for _, change in tracker.changes.values():
                await change.flush(batch)
            for change in tracker.staged:
                await change.flush(batch)
            if batch.metadata is not None and self.inline_projections:
                await self._project_inline(batch, batch.metadata)
            # One batch with the outbox rows last: a backend can write it all and commit
            # in one round trip (SQLite: one hop to its writer thread per command).
            batch.writes += batch.outbox
            await batch.send()
            readable_at = batch.session.readable_at
        except BaseException as exc:
            await self._end(exc)
            raise
        await self._end(None)
        self.readable_at = readable_at
        for _, change in tracker.changes.values():
            change.settle()
        await self._run_after_commit()
        await self._dispatch(batch.published, batch.metadata)
        return batch.published

    def after_commit(self, callback: Callable[[], Awaitable[object]]) -> None:
        """Run ``callback`` once this unit of work has committed (never after a rollback).

        Callbacks run before in-process handlers; one that fails is logged and the rest
        still run, because the transaction has already committed.
        """
        self._after_commit.append(callback)

    async def _run_after_commit(self) -> None:
        callbacks, self._after_commit = self._after_commit, []
        for callback in callbacks:
            try:
                await callback()
            except Exception:  # the commit stands; a failing callback must not hide it
                logger.exception("an after-commit callback failed")

    async def _project_inline(self, batch: CommitBatch, metadata: list[EventMetadata]) -> None:
        # Inline projections write their read models in the command's own transaction,
        # so a reader sees them as soon as the command committed (read-your-writes).
        context = ProjectionContext(await batch.direct())
        for event, event_metadata in zip(batch.published, metadata, strict=True):
            context.metadata = event_metadata
            for projection in self.inline_projections:
                handler = find_handler(type(projection), type(event))
                if handler is not None:
                    await handler(projection, event, context)
        await context.flush()

    async def rollback(self) -> None:
        """Discard every write; nothing is published."""
        await self._end(_Rollback())

    async def _end(self, error: BaseException | None) -> None:
        transaction = self._tracker.detach()
        if transaction is None:
            return
        if error is None:
            await transaction.__aexit__(None, None, None)
            return
        with suppress(_Rollback):
            await transaction.__aexit__(type(error), error, error.__traceback__)

    @property
    def publishes(self) -> bool:
        """Whether committed events are handed to in-process handlers."""
        return self._publish is not None

    async def _dispatch(self, events: list[object], metadata: list[EventMetadata] | None) -> None:
        # In the order they were written: aggregate by aggregate, as the unit of work first
        # loaded or added them, each one's events in the order it recorded them (the order
        # of their outbox rows and of their positions in the log).
        if self._publish is None or metadata is None:
            return
        for event, event_metadata in zip(events, metadata, strict=True):
            with publishing(event_metadata):
                await self._publish(event)

    async def __aenter__(self) -> UnitOfWork:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Commit on a clean exit, roll back when the block raised.

        Leaving ``async with uow:`` normally commits (and then publishes) what was not
        committed yet; an exception, or a cancellation, rolls it back and is re-raised.
        Call ``rollback()`` inside the block to leave without writing.
        """
        if self._tracker.finished:
            return
        if exc is None:
            await self.commit()
        else:
            await self.rollback()


@dataclass(slots=True)
class DataSource:
    """A named storage with what its units of work need: the model, events and wiring."""

    name: str
    storage: Storage
    model: PersistenceModel
    events: EventRegistry
    publish: Publish | None = None
    clock: Clock = utc_now
    new_id: IdFactory = uuid4
    inline_projections: Sequence[Projection] = ()

    def unit_of_work(self, context: RequestContext | None = None) -> UnitOfWork:
        """A new unit of work, carrying the request's correlation, causation and actor."""
        return UnitOfWork(
            self.storage,
            self.model,
            self.events,
            publish=self.publish,
            clock=self.clock,
            new_id=self.new_id,
            correlation_id=None if context is None else context.correlation_id,
            causation_id=None if context is None else context.causation_id,
            actor=None if context is None else context.actor,
            inline_projections=self.inline_projections,
        )


class DataSources:
    """Several named data sources (``orders_db``, ``invoicing_db``), one the default.

    A request class picks its source with a ``data_source`` class attribute.
    """

    def __init__(self, *sources: DataSource, default: str | None = None) -> None:
        self._sources: dict[str, DataSource] = {}
        for source in sources:
            self.add(source)
        self._default = default or (sources[0].name if sources else None)

    def add(self, source: DataSource) -> None:
        """Add a source; its name must be new."""
        if source.name in self._sources:
            msg = f"a data source named {source.name!r} is already registered"
            raise ConfigurationError(msg)
        self._sources[source.name] = source

    def __getitem__(self, name: str) -> DataSource:
        try:
            return self._sources[name]
        except KeyError:
            msg = f"no data source named {name!r}; known: {sorted(self._sources)}"
            raise ConfigurationError(msg) from None

    def __iter__(self) -> Any:
        return iter(self._sources.values())

    def unit_of_work(self, context: RequestContext) -> UnitOfWork:
        """A unit of work on the source the request names (or the default one)."""
        name = getattr(type(context.request), "data_source", None) or self._default
        if name is None:
            msg = "no data source is registered"
            raise ConfigurationError(msg)
        return self[name].unit_of_work(context)


class TransactionBehavior:
    """Opens a unit of work per request; commits on success, else rolls back; then publishes.

    Handlers find it on ``context.unit_of_work`` (or ``UnitOfWork.of(context)``) and never
    commit themselves.
    """

    def __init__(self, unit_of_work: Callable[[RequestContext], UnitOfWork]) -> None:
        self._unit_of_work = unit_of_work

    async def __call__(
        self,
        request: object,
        context: RequestContext,
        next: Next,  # noqa: A002 - the pipeline's word
    ) -> OperationResult[Any]:
        """Run the rest of the pipeline inside a unit of work."""
        if context.unit_of_work is not None:
            # Joined an open unit of work (``Mediator.send(..., unit_of_work=)``): its
            # owner commits or rolls back.
            return await next(request, context)
        uow = self._unit_of_work(context)
        context.unit_of_work = uow
        try:
            result = await next(request, context)
        except BaseException:
            await uow.rollback()
            raise
        if result.is_success:
            await uow.commit()
        else:
            await uow.rollback()
        return result


async def create_tables(*sources: Storage | DataSource | DataSources) -> None:
    """Create eventfold's tables in every given storage if missing (idempotent)."""
    for source in sources:
        if isinstance(source, DataSources):
            await create_tables(*source)
        elif isinstance(source, DataSource):
            await source.storage.create_schema()
        else:
            await source.create_schema()


def _db_system(storage_name: str) -> str:
    """OpenTelemetry's ``db.system.name`` for a storage named ``postgres:...``/``sqlite:...``."""
    prefix = storage_name.split(":", 1)[0]
    return {"postgres": "postgresql", "sqlite": "sqlite"}.get(prefix, "other_sql")
