"""Given / when / then helpers: aggregates, deciders, commands through the pipeline, projections."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from eventfold.application.cqrs.mediator import Mediator
from eventfold.application.cqrs.results import OperationResult
from eventfold.application.persistence.model import EventSourcedModel
from eventfold.application.persistence.unit_of_work import DataSource
from eventfold.application.readside.projections import Projection, ProjectionContext
from eventfold.application.readside.queries import QueryOptions
from eventfold.application.readside.read_models import DocumentReadModel
from eventfold.domain.aggregate import AggregateRoot
from eventfold.domain.decider import Decider
from eventfold.domain.dispatch import find_handler
from eventfold.domain.entity import Entity
from eventfold.errors import ConfigurationError
from eventfold.ports.records import EventRecord, OutboxEntry, StoredEvent, StreamState
from eventfold.ports.storage import Storage, StorageSession
from eventfold.serialization import EventRegistry

__all__ = [
    "AggregateScenario",
    "CommandOutcome",
    "CommandScenario",
    "DeciderScenario",
    "ProjectionScenario",
]

A = TypeVar("A", bound=AggregateRoot[Any, Any])
C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")
T = TypeVar("T")


class AggregateScenario(Generic[A]):
    """``AggregateScenario(Order, "o-1").given(*history).when(action).then(*events)``."""

    def __init__(self, aggregate_type: type[A], aggregate_id: object) -> None:
        self._type = aggregate_type
        self._id = aggregate_id
        self._history: list[object] = []
        self._action: Callable[[A], object] | None = None

    def given(self, *events: object) -> AggregateScenario[A]:
        """The events already in the aggregate's history."""
        self._history.extend(events)
        return self

    def when(self, action: Callable[[A], object]) -> AggregateScenario[A]:
        """The operation under test, called with the rebuilt aggregate.

        An action that returns an aggregate of this type (a factory such as
        ``lambda _: Order.place(...)``) puts that aggregate under test instead.
        """
        self._action = action
        return self

    def _run(self) -> A:
        aggregate: A = self._type.rehydrate(self._id, self._history)  # type: ignore[assignment]
        if self._action is not None:
            created = self._action(aggregate)
            if isinstance(created, self._type):
                return created
        return aggregate

    def then(self, *expected: object) -> A:
        """Assert the operation recorded exactly ``expected``; return the aggregate."""
        aggregate = self._run()
        recorded = list(aggregate.pending_events)
        assert recorded == list(expected), _diff(list(expected), recorded)
        return aggregate

    def then_nothing(self) -> A:
        """Assert the operation recorded no event."""
        return self.then()

    def then_raises(self, error: type[BaseException], match: str | None = None) -> BaseException:
        """Assert the operation raised ``error`` (its message matching ``match``)."""
        try:
            self._run()
        except error as exc:
            if match is not None:
                assert re.search(match, str(exc)), f"{str(exc)!r} does not match {match!r}"
            return exc
        msg = f"expected {error.__name__}, nothing was raised"
        raise AssertionError(msg)


class DeciderScenario(Generic[C, S, E]):
    """``DeciderScenario(decider).given(*history).when(command).then(*events)``."""

    def __init__(self, decider: Decider[C, S, E]) -> None:
        self._decider = decider
        self._history: list[E] = []
        self._command: C | None = None

    def given(self, *events: E) -> DeciderScenario[C, S, E]:
        """The events already in the stream."""
        self._history.extend(events)
        return self

    def when(self, command: C) -> DeciderScenario[C, S, E]:
        """The command under test."""
        self._command = command
        return self

    def _decide(self) -> Sequence[E]:
        if self._command is None:
            msg = "call when(command) before then"
            raise AssertionError(msg)
        return self._decider.decide(self._command, self._decider.fold(self._history))

    def then(self, *expected: E) -> S:
        """Assert the decision is exactly ``expected``; return the state after it."""
        decided = list(self._decide())
        assert decided == list(expected), _diff(list(expected), decided)
        return self._decider.fold(decided, self._decider.fold(self._history))

    def then_raises(self, error: type[BaseException], match: str | None = None) -> BaseException:
        """Assert ``decide`` raised ``error``."""
        try:
            self._decide()
        except error as exc:
            if match is not None:
                assert re.search(match, str(exc)), f"{str(exc)!r} does not match {match!r}"
            return exc
        msg = f"expected {error.__name__}, nothing was raised"
        raise AssertionError(msg)


_UNSET: Any = object()
# More rows than any scenario writes: the outbox is read whole before and after the command.
_ALL_ROWS = 100_000


def _records(events: EventRegistry, history: Sequence[object]) -> list[EventRecord]:
    now = datetime.now(UTC)
    records = []
    for event in history:
        encoded = events.encode(event)
        records.append(
            EventRecord(uuid.uuid4(), encoded.type_name, encoded.schema_version, encoded.data, now)
        )
    return records


@dataclass(frozen=True)
class CommandOutcome:
    """What a command did: its result, the events it appended, its outbox rows."""

    result: OperationResult[Any]
    events: list[object]
    """Events appended to streams (event-sourced types), in the order they were written."""
    outbox: list[object]
    """The events of the outbox rows it wrote (every type's events), in order."""
    outbox_rows: list[OutboxEntry]
    """The outbox rows themselves, with their aggregate type and id and their metadata."""


class CommandScenario:
    """A command through the real pipeline and unit of work, then what it stored.

    ``await CommandScenario(mediator, source).given(Order, "o-1", *history)
    .when(PlaceOrder("o-1")).then(status=200, events=[OrderPlaced(...)])``

    ``mediator`` must run its requests in units of work of ``source`` (a
    ``TransactionBehavior(source.unit_of_work)``, as the pytest plugin's ``mediator`` and
    ``data_source`` fixtures are wired). Run no outbox relay meanwhile: the scenario finds
    the command's outbox rows among the unpublished ones.
    """

    def __init__(self, mediator: Mediator, source: DataSource) -> None:
        self._mediator = mediator
        self._source = source
        self._setup: list[Callable[[], Awaitable[None]]] = []
        self._command: object = None
        self._actor: str | None = None

    def given(
        self, aggregate_type: type[AggregateRoot[Any, Any]], aggregate_id: object, *events: object
    ) -> CommandScenario:
        """Events already in an event-sourced aggregate's stream (no outbox rows for them)."""
        model = self._source.model.model_for(aggregate_type)
        if not isinstance(model, EventSourcedModel):
            msg = f"given() takes an event-sourced type; store a {aggregate_type.__name__} "
            msg += "with given_stored()"
            raise ConfigurationError(msg)
        stream_id = model.stream_id(aggregate_id)

        async def append() -> None:
            async with self._source.storage.transaction() as session:
                records = _records(self._source.events, events)
                await session.append(stream_id, records, expected_version=StreamState.ANY)

        self._setup.append(append)
        return self

    def given_stored(self, *entities: Entity[Any]) -> CommandScenario:
        """Entities already stored as they are now (the events they recorded are dropped)."""

        async def store() -> None:
            async with self._source.unit_of_work() as uow:
                for entity in entities:
                    entity.pull_events()
                    uow.repository(type(entity)).add(entity)

        self._setup.append(store)
        return self

    def when(self, command: object, *, actor: str | None = None) -> CommandScenario:
        """The command under test, sent as ``actor``."""
        self._command = command
        self._actor = actor
        return self

    async def run(self) -> CommandOutcome:
        """Store the givens, send the command; what it did."""
        if self._command is None:
            msg = "call when(command) before then"
            raise AssertionError(msg)
        for step in self._setup:
            await step()
        storage = self._source.storage
        before = {row.id for row in await _outbox(storage)}
        result = await self._mediator.send(self._command, actor=self._actor)
        rows = [row for row in await _outbox(storage) if row.id not in before]
        decode = self._source.events.decode
        outbox = [
            decode(r.message.type_name, r.message.schema_version, r.message.data) for r in rows
        ]
        return CommandOutcome(result, await self._appended(rows), outbox, rows)

    async def _appended(self, rows: list[OutboxEntry]) -> list[object]:
        # Streams are read, not the global log: on PostgreSQL the log holds back events
        # while older transactions are open, a stream never does. Every event gets an
        # outbox row naming its stream; a state-stored entity's events have no stream.
        ids = {row.message.event_id for row in rows}
        streams = dict.fromkeys(
            f"{r.message.aggregate_type}-{r.message.aggregate_id}" for r in rows
        )
        found = {}
        async with self._source.storage.transaction() as session:
            for stream_id in streams:
                for stored in await session.read_stream(stream_id):
                    if stored.event_id in ids:
                        found[stored.event_id] = stored
        return [
            self._source.events.decode(s.type_name, s.schema_version, s.data)
            for s in (found[row.message.event_id] for row in rows if row.message.event_id in found)
        ]

    async def then(
        self,
        *,
        status: int | None = None,
        data: object = _UNSET,
        events: Sequence[object] | None = None,
        outbox: Sequence[object] | None = None,
    ) -> CommandOutcome:
        """Send the command and assert what is given; return the outcome for more checks."""
        outcome = await self.run()
        result = outcome.result
        if status is not None:
            assert result.status == status, f"expected status {status}, got {result!r}"
        if data is not _UNSET:
            assert result.data == data, f"expected data {data!r}, got {result.data!r}"
        if events is not None:
            assert outcome.events == list(events), _diff(list(events), outcome.events)
        if outbox is not None:
            assert outcome.outbox == list(outbox), "outbox: " + _diff(list(outbox), outcome.outbox)
        return outcome


async def _outbox(storage: Storage) -> list[OutboxEntry]:
    async with storage.transaction() as session:
        return await session.read_outbox(limit=_ALL_ROWS)


class ProjectionScenario:
    """A projection over given events, then its read model.

    ``await ProjectionScenario(CartViews(), storage, events).given("Cart-c-1", *history)
    .then_documents(cart_views, CartView("c-1", 3))``

    The given events are appended to their streams, read back with their metadata and
    applied to the projection's handlers as a runner applies a batch: in one transaction,
    with the read models' writes flushed at its end. They are read from their streams,
    not from the global log, so a scenario never waits while other transactions on a
    PostgreSQL server hold the log back; the runner's own reading is tested by eventfold.
    """

    def __init__(self, projection: Projection, storage: Storage, events: EventRegistry) -> None:
        self._projection = projection
        self._storage = storage
        self._events = events
        self._given: list[tuple[str, Sequence[object]]] = []

    def given(self, stream_id: str, *events: object) -> ProjectionScenario:
        """Events in a stream, applied in the order of the calls."""
        self._given.append((stream_id, events))
        return self

    async def run(self) -> None:
        """Append the givens and apply them to the projection."""
        appended: list[uuid.UUID] = []
        for stream_id, events in self._given:
            async with self._storage.transaction() as session:
                records = _records(self._events, events)
                await session.append(stream_id, records, expected_version=StreamState.ANY)
            appended += [record.event_id for record in records]
        async with self._storage.transaction() as session:
            stored = {}
            for stream_id in dict.fromkeys(stream_id for stream_id, _ in self._given):
                stored.update({e.event_id: e for e in await session.read_stream(stream_id)})
            context = ProjectionContext(session)
            for event_id in appended:
                await self._apply(stored[event_id], context)
            await context.flush()

    async def _apply(self, record: StoredEvent, context: ProjectionContext) -> None:
        handler = find_handler(type(self._projection), self._events.class_of(record.type_name))
        if handler is None:
            return  # the projection does not handle this type: a runner skips it too
        context.metadata = None  # forget the previous event's; built from the record when asked
        context.record = record
        await handler(
            self._projection,
            self._events.decode(record.type_name, record.schema_version, record.data),
            context,
        )

    async def then(
        self, query: Callable[[StorageSession], Awaitable[T]], expected: object = _UNSET
    ) -> T:
        """Run the projection, then ``query`` in a transaction; assert it gives ``expected``."""
        await self.run()
        async with self._storage.transaction() as session:
            found = await query(session)
        if expected is not _UNSET:
            assert found == expected, f"expected {expected!r}\n     got {found!r}"
        return found

    async def then_documents(self, read_model: DocumentReadModel[T], *expected: T) -> list[T]:
        """Run the projection; assert the read model holds exactly ``expected``, in any order."""
        await self.run()
        async with self._storage.transaction() as session:
            found = await read_model.search(session, QueryOptions()).items()
        missing = list(found)
        for item in expected:
            assert item in missing, f"{item!r} is not in the read model: {found!r}"
            missing.remove(item)
        assert not missing, f"the read model also holds {missing!r}"
        return found


def _diff(expected: Sequence[object], actual: Sequence[object]) -> str:
    return f"expected events {expected!r}\n     got events {actual!r}"
