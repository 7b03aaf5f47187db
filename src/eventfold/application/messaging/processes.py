"""Process managers: long-running processes that react to events and send commands.

A :class:`ProcessManager` declares, per event type it reacts to, the key that
correlates an event to an instance ("the order id") and an async reaction that gets
the instance's state, the event and a :class:`ProcessContext`. The reaction returns the
new state and, through the context, sends commands through the mediator, schedules
messages for later (a timeout is an event delivered back to the process when due) and
cancels them. A :class:`ProcessRunner` applies an event to every process that reacts
to it (as a broker subscription's handler, from the global log with
:meth:`ProcessRunner.follow_log`, or from the scheduler), each in ONE transaction:

- the inbox row ``(event id, "process:<name>")``: an event delivered twice is applied
  once;
- the instance's state, a JSON document (collection ``eventfold.processes``) saved with
  its optimistic version;
- the commands' changes and their outbox rows (the mediator joins the runner's unit of
  work), and the scheduled or cancelled messages.

A crash at any point loses no decision and doubles none: either all of it committed or
none, and the broker (or the scheduler) delivers the event again.

**One instance at a time, across processes.** Before it reacts, the runner rewrites
the instance's document at the version it read: on PostgreSQL that row is locked until
the transaction ends, so a second worker handling an event of the same instance waits
and then finds the version moved (:class:`~eventfold.errors.ConcurrencyError`: the event
is retried from the start, with the new state); on SQLite the write lock does the same
for the whole database; in memory a lock per instance. Reactions must not call other
services directly: what they decide goes out as commands and outbox rows, after commit.

**Interventions.** A reaction that fails with a fault (any error but a refusal: a
:class:`~eventfold.errors.DomainError` or :class:`ProcessCommandError`) is tried again
with tenacity's backoff (``retry=``, a :class:`RetryPolicy`). When it keeps failing, or
when it refuses with an error type its :class:`Reaction` lists in ``escalate``, the
instance is saved as needing intervention with the error and the event it failed on,
the delivery is acknowledged, and ``on_intervention`` is called once. The instance's
later events are kept, in order, in its document and applied only after an operator
:meth:`ProcessRunner.retry` (the failed event again) or :meth:`ProcessRunner.resolve`
(a note, and on past that event): one instance's events never apply out of order.
Other refusals are raised, as before, to the caller (the broker's retries and dead
letters).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from eventfold.application.cqrs.mediator import Mediator
from eventfold.application.messaging.outbox import RetryPolicy
from eventfold.application.messaging.scheduler import scheduled_message
from eventfold.application.persistence.unit_of_work import DataSource, UnitOfWork
from eventfold.application.readside.queries import QueryOptions
from eventfold.application.readside.read_models import DocumentSearch
from eventfold.domain.errors import (
    ConfigurationError,
    DomainError,
    EntityNotFoundError,
    InvalidStateError,
)
from eventfold.domain.specification import FieldSet, SpecificationBuilder
from eventfold.errors import ConcurrencyError, EventfoldError
from eventfold.ports.broker import Delivery
from eventfold.ports.records import LOG_START
from eventfold.ports.scheduling import ClaimedMessage, ScheduledMessage, ScheduleWriter
from eventfold.ports.storage import Storage
from eventfold.serialization import JsonCodec

__all__ = [
    "PROCESS_COLLECTION",
    "ProcessCommandError",
    "ProcessContext",
    "ProcessEntry",
    "ProcessInstance",
    "ProcessIntervention",
    "ProcessInterventionAlert",
    "ProcessManager",
    "ProcessRunner",
    "Reaction",
    "load_process_instance",
    "process_interventions",
]

_log = logging.getLogger("eventfold.processes")

S = TypeVar("S")
E = TypeVar("E")

PROCESS_COLLECTION = "eventfold.processes"
"""The document collection process instances are kept in."""

_CONFLICT_RETRIES = 10
_ERROR_LENGTH = 2000
_DEFAULT_RETRY = RetryPolicy(max_attempts=3, initial=0.2, maximum=10.0, jitter=0.2)
_FIELDS = FieldSet("ProcessInstance", {"process": str, "key": str, "status": str})
NEEDS_INTERVENTION = "needs_intervention"
# Per storage, per instance: a lock and how many reactions hold or wait for it.
_LOCKS: weakref.WeakKeyDictionary[Storage, dict[str, tuple[asyncio.Lock, int]]] = (
    weakref.WeakKeyDictionary()
)


class ProcessCommandError(EventfoldError):
    """A command a process sent failed: nothing of the reaction was committed."""

    def __init__(self, process: str, command: object, problem: object) -> None:
        super().__init__(
            f"process {process}: command {type(command).__qualname__} failed: {problem}"
        )
        self.command = command
        self.problem = problem


@dataclass(slots=True)
class ProcessContext:
    """What a reaction gets besides its state and the event: where its decisions go."""

    process: str
    key: str
    event_id: UUID
    unit_of_work: UnitOfWork | None
    """The reaction's transaction (None in :class:`~eventfold.testing.ProcessScenario`)."""
    commands: list[object] = field(default_factory=list)
    scheduled: list[tuple[str, object, datetime]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    completed: bool = False

    def send(self, command: object) -> None:
        """Send ``command`` through the mediator, in this reaction's transaction."""
        self.commands.append(command)

    def schedule(self, event: object, *, due_at: datetime, label: str = "") -> None:
        """Deliver ``event`` (a registered event) back to this process at ``due_at``.

        Named ``<process>/<key>/<label or event type>``: scheduling it again is a no-op,
        and :meth:`cancel` with the same label takes it back.
        """
        self.scheduled.append((label or type(event).__name__, event, due_at))

    def cancel(self, label: str) -> None:
        """Cancel the message scheduled under ``label`` (or an event type's name)."""
        self.cancelled.append(label)

    def complete(self) -> None:
        """Mark the instance completed: it reacts to nothing more."""
        self.completed = True


React = Callable[[S, Any, ProcessContext], Awaitable[S | None]]


@dataclass(frozen=True, slots=True)
class Reaction(Generic[S]):
    """How a process reacts to one event type: its correlation key, and what it does.

    ``starts``: the event may create an instance; events of other reactions that find
    no instance are ignored (acknowledged, nothing done).
    """

    event_type: type
    key: Callable[[Any], object]
    react: React[S]
    starts: bool = False
    escalate: tuple[type[Exception], ...] = ()
    """Refusal types that need a person: the instance waits for an operator, untried."""


@dataclass(frozen=True, slots=True)
class ProcessIntervention:
    """Why an instance waits for a person: the event it failed on and the error."""

    event_id: str
    event_type: str
    error: str
    at: str
    """When it failed (ISO 8601)."""


@dataclass(frozen=True, slots=True)
class ProcessEntry:
    """A line of an instance's intervention history."""

    at: str
    event_id: str
    outcome: str
    """``needs_intervention``, ``retried``, ``retry failed`` or ``resolved``."""
    error: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class ProcessInstance:
    """A process instance as stored."""

    process: str
    key: str
    state: Any
    completed: bool
    handled: int
    """How many events this instance applied."""
    version: int
    intervention: ProcessIntervention | None = None
    history: tuple[ProcessEntry, ...] = ()
    failed_event: dict[str, Any] | None = None
    held: tuple[dict[str, Any], ...] = ()
    """The later events waiting, in order, for the intervention to end."""

    @property
    def status(self) -> str:
        """``needs_intervention``, ``completed`` or ``active``."""
        if self.intervention is not None:
            return NEEDS_INTERVENTION
        return "completed" if self.completed else "active"


ProcessInterventionAlert = Callable[[ProcessInstance], Awaitable[None]]
"""Called with an instance that has just come to need a person."""


class ProcessManager(Generic[S]):
    """A named process: a state type, its initial state, its reactions by event type."""

    def __init__(
        self,
        name: str,
        state: type[S],
        initial: Callable[[], S],
        reactions: Sequence[Reaction[S]],
    ) -> None:
        types = [reaction.event_type for reaction in reactions]
        if not reactions or len(set(types)) != len(types):
            msg = f"process {name!r} needs reactions, one per event type, got {types}"
            raise ConfigurationError(msg)
        self.name = name
        self.state_type = state
        self.initial = initial
        self._reactions = {reaction.event_type: reaction for reaction in reactions}
        self._codec = JsonCodec(state, f"{name} process state")

    def reaction_to(self, event: object) -> Reaction[S] | None:
        """The reaction to ``event``'s type, if the process has one."""
        return self._reactions.get(type(event))

    @property
    def event_types(self) -> tuple[type, ...]:
        """The event types the process reacts to."""
        return tuple(self._reactions)

    def instance_id(self, key: object) -> str:
        """The document key of the instance ``key`` correlates to."""
        return f"{self.name}/{key}"

    def encode(self, state: S) -> Any:
        """``state`` as plain JSON data."""
        return self._codec.to_jsonable(state)

    def decode(self, data: Any) -> S:
        """The state object plain JSON data describes."""
        return self._codec.decode_python(data)  # type: ignore[no-any-return]

    def state_of(self, instance: ProcessInstance) -> S:
        """An instance's state as the typed object."""
        return self.decode(instance.state)


class ProcessRunner:
    """Applies events to process managers: once each, one transaction per reaction."""

    def __init__(
        self,
        source: DataSource,
        mediator: Mediator,
        processes: Iterable[ProcessManager[Any]],
        *,
        schedules: ScheduleWriter | None = None,
        retry: RetryPolicy | None = None,
        on_intervention: ProcessInterventionAlert | None = None,
    ) -> None:
        """``schedules`` keeps the messages processes schedule (``schedule_store_for``).

        ``retry`` paces a reaction's attempts after a fault; ``on_intervention`` is
        called with an instance that has just come to need a person (its errors are
        logged, never raised)."""
        self._retry = retry or _DEFAULT_RETRY
        self._on_intervention = on_intervention
        self._source = source
        self._mediator = mediator
        self._processes = {process.name: process for process in processes}
        self._schedules = schedules
        # Shared by every runner of this storage in this process.
        self._locks = _LOCKS.setdefault(source.storage, {})

    @property
    def storage(self) -> Storage:
        """The storage the instances are kept in."""
        return self._source.storage

    @property
    def event_types(self) -> set[type]:
        """Every event type some process reacts to."""
        return {t for process in self._processes.values() for t in process.event_types}

    async def handle(
        self,
        event: object,
        *,
        event_id: UUID,
        correlation_id: str | None = None,
        actor: str | None = None,
    ) -> None:
        """Apply ``event`` to every process reacting to it (once per event id and process)."""
        for process in self._processes.values():
            reaction = process.reaction_to(event)
            if reaction is not None:
                incoming = _Incoming(event, event_id, correlation_id, actor)
                await self._apply(process, reaction, incoming)

    async def __call__(self, delivery: Delivery) -> None:
        """A broker handler: decode the delivery's event and :meth:`handle` it."""
        message = delivery.message
        event = self._source.events.decode(message.type_name, message.schema_version, message.data)
        await self.handle(
            event,
            event_id=message.event_id,
            correlation_id=message.correlation_id or str(message.event_id),
            actor=message.actor,
        )

    async def handle_scheduled(self, claimed: ClaimedMessage) -> None:
        """A scheduler handler: the event a process scheduled for itself, now due."""
        message = claimed.message
        payload = json.loads(message.payload)
        event = self._source.events.decode(message.name, payload["version"], payload["data"])
        await self.handle(event, event_id=message.message_id)

    async def follow_log(self, *, name: str = "processes", batch_size: int = 100) -> int:
        """Apply the events of the global log past this runner's checkpoint; how many.

        For processes fed from the event log rather than a broker: the reactions'
        inbox rows make a re-read harmless, so the checkpoint (``name``) is saved after
        each batch was applied. Call it in a loop (or after commits) to keep up.
        """
        types = {self._source.events.name_of(t) for t in self.event_types}
        applied = 0
        while True:
            async with self._source.storage.transaction() as session:
                after = await session.load_checkpoint(name) or LOG_START
                stored = await session.read_log(after=after, limit=batch_size, types=types)
            for record in stored:
                event = self._source.events.decode(
                    record.type_name, record.schema_version, record.data
                )
                await self.handle(
                    event,
                    event_id=record.event_id,
                    correlation_id=record.correlation_id or str(record.event_id),
                    actor=record.actor,
                )
            if not stored:
                return applied
            async with self._source.storage.transaction() as session:
                await session.save_checkpoint(name, stored[-1].log_position)
            applied += len(stored)

    async def get(self, process: str, key: object) -> ProcessInstance | None:
        """The instance of ``process`` that ``key`` correlates to, or None."""
        manager = self._known(process)
        async with self._source.storage.transaction() as session:
            record = await session.load_document(PROCESS_COLLECTION, manager.instance_id(key))
        return None if record is None else _instance(record.data, record.version)

    async def pending_interventions(self) -> list[ProcessInstance]:
        """The instances (of every process) waiting for an operator, oldest failure first."""
        return await process_interventions(self._source.storage)

    async def retry(self, process: str, key: object) -> ProcessInstance:
        """Apply the event an instance failed on again, then the events waiting after it."""
        manager = self._known(process)
        async with self._instance_lock(manager.instance_id(str(key))):
            instance = await self._needing(manager, str(key))
            assert instance.failed_event is not None
            incoming = self._incoming(instance.failed_event)
            reaction = manager.reaction_to(incoming.event)
            if reaction is not None:
                await self._settle(manager, reaction, incoming, str(key), replay="failed")
            await self._drain(manager, str(key))
        return await self._require(manager, str(key))

    async def resolve(self, process: str, key: object, *, note: str) -> ProcessInstance:
        """Go on past the failed event (put right by hand, ``note`` says how), then the rest."""
        manager = self._known(process)
        if not note.strip():
            raise InvalidStateError("resolving an intervention needs a note saying what was done")
        instance_id = manager.instance_id(str(key))
        async with self._instance_lock(instance_id):
            instance = await self._needing(manager, str(key))
            assert instance.intervention is not None
            entry = ProcessEntry(self._now(), instance.intervention.event_id, "resolved", note=note)
            resolved = replace(
                instance,
                intervention=None,
                failed_event=None,
                history=(*instance.history, entry),
            )
            async with self._source.storage.transaction() as session:
                await session.save_document(
                    PROCESS_COLLECTION,
                    instance_id,
                    _encode(resolved),
                    expected_version=instance.version,
                )
            await self._drain(manager, str(key))
        return await self._require(manager, str(key))

    async def _apply(
        self, process: ProcessManager[Any], reaction: Reaction[Any], incoming: _Incoming
    ) -> None:
        key = str(reaction.key(incoming.event))
        async with self._instance_lock(process.instance_id(key)):
            if await self._settle(process, reaction, incoming, key, replay=None):
                # Events kept behind an intervention an operator ended, whose drain was cut
                # short (a crash): they go on now, before this one.
                await self._drain(process, key)

    @contextlib.asynccontextmanager
    async def _instance_lock(self, instance_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(instance_id, (asyncio.Lock(), 0))
        self._locks[instance_id] = (lock, users + 1)
        try:
            async with lock:  # one instance at a time within this process, too
                yield
        finally:
            lock, users = self._locks[instance_id]
            if users == 1:  # the last one out forgets the lock: the map stays small
                del self._locks[instance_id]
            else:
                self._locks[instance_id] = (lock, users - 1)

    async def _settle(
        self,
        process: ProcessManager[Any],
        reaction: Reaction[Any],
        incoming: _Incoming,
        key: str,
        *,
        replay: str | None,
    ) -> bool:
        """React, retrying faults; a reaction that keeps failing holds the instance.

        True when the event was kept behind earlier ones no intervention holds any more.
        """

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, Exception) and not _refusal(exc)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, self._retry.max_attempts)),
            wait=self._retry.wait(),
            retry=retry_if_exception(retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._react_until_settled(process, reaction, incoming, key, replay)
        except ConcurrencyError:
            raise  # the instance kept moving: the delivery is retried from the start
        except Exception as exc:
            if _refusal(exc) and not isinstance(exc, reaction.escalate):
                raise
            await self._hold(process, reaction, incoming, key, exc, replay=replay)
        return False

    async def _hold(
        self,
        process: ProcessManager[Any],
        reaction: Reaction[Any],
        incoming: _Incoming,
        key: str,
        exc: Exception,
        *,
        replay: str | None,
    ) -> None:
        """Save the instance as needing intervention on ``incoming``, then alert once."""
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_LENGTH]
        _log.error("process %s (%s) needs intervention: %s", process.name, key, error)
        instance_id = process.instance_id(key)
        async with self._source.storage.transaction() as session:
            if replay is None and not await session.mark_processed(
                incoming.event_id, f"process:{process.name}"
            ):
                return  # applied meanwhile by another worker
            record = await session.load_document(PROCESS_COLLECTION, instance_id)
            if record is None and not reaction.starts:
                raise exc  # it failed before any reaction ran: no instance to hold
            instance = (
                ProcessInstance(process.name, key, process.encode(process.initial()), False, 0, 0)
                if record is None
                else _instance(record.data, record.version)
            )
            now = self._now()
            event = self._stored(incoming)
            held = instance.held[1:] if replay == "held" else instance.held
            intervention = ProcessIntervention(str(incoming.event_id), event["type"], error, now)
            entry = ProcessEntry(now, str(incoming.event_id), NEEDS_INTERVENTION, error=error)
            if replay == "failed":
                entry = ProcessEntry(now, str(incoming.event_id), "retry failed", error=error)
            held_instance = replace(
                instance,
                intervention=intervention,
                failed_event=event,
                held=held,
                history=(*instance.history, entry),
            )
            version = await session.save_document(
                PROCESS_COLLECTION,
                instance_id,
                _encode(held_instance),
                expected_version=instance.version,
            )
        await self._alert(replace(held_instance, version=version))

    async def _alert(self, instance: ProcessInstance) -> None:
        if self._on_intervention is None:
            return
        try:
            await self._on_intervention(instance)
        except Exception:  # noqa: BLE001 - an alert that fails must not undo the saved state
            _log.exception("the intervention alert for process %s failed", instance.key)

    async def _drain(self, process: ProcessManager[Any], key: str) -> None:
        """Apply the events kept behind an ended intervention, oldest first."""
        while True:
            instance = await self._require(process, key)
            if instance.intervention is not None or not instance.held:
                return
            incoming = self._incoming(instance.held[0])
            reaction = process.reaction_to(incoming.event)
            if reaction is None:  # the process no longer reacts to it: drop it, keep order
                await self._save(replace(instance, held=instance.held[1:]))
                continue
            await self._settle(process, reaction, incoming, key, replay="held")

    async def _save(self, instance: ProcessInstance) -> None:
        manager = self._known(instance.process)
        async with self._source.storage.transaction() as session:
            await session.save_document(
                PROCESS_COLLECTION,
                manager.instance_id(instance.key),
                _encode(instance),
                expected_version=instance.version,
            )

    async def _require(self, process: ProcessManager[Any], key: str) -> ProcessInstance:
        instance = await self.get(process.name, key)
        if instance is None:
            raise EntityNotFoundError(f"process {process.name}", key)
        return instance

    async def _needing(self, process: ProcessManager[Any], key: str) -> ProcessInstance:
        instance = await self._require(process, key)
        if instance.intervention is None or instance.failed_event is None:
            msg = (
                f"process {process.name} {key!r} is {instance.status}, not waiting for intervention"
            )
            raise InvalidStateError(msg)
        return instance

    def _now(self) -> str:
        return self._source.clock().isoformat()

    def _stored(self, incoming: _Incoming) -> dict[str, Any]:
        encoded = self._source.events.encode(incoming.event)
        return {
            "event_id": str(incoming.event_id),
            "type": encoded.type_name,
            "version": encoded.schema_version,
            "data": encoded.data,
            "correlation_id": incoming.correlation_id,
            "actor": incoming.actor,
        }

    def _incoming(self, stored: dict[str, Any]) -> _Incoming:
        event = self._source.events.decode(stored["type"], stored["version"], stored["data"])
        return _Incoming(event, UUID(stored["event_id"]), stored["correlation_id"], stored["actor"])

    async def _react_until_settled(
        self,
        process: ProcessManager[Any],
        reaction: Reaction[Any],
        incoming: _Incoming,
        key: str,
        replay: str | None,
    ) -> bool:
        for attempt in range(1, _CONFLICT_RETRIES + 1):
            try:
                return await self._react(process, reaction, incoming, key, replay)
            except ConcurrencyError:
                if attempt == _CONFLICT_RETRIES:
                    raise
                # Another worker applied an event of this instance meanwhile: start again
                # from the state it committed.
                _log.info("process %s: %s moved meanwhile, reacting again", process.name, key)
                continue
        return False  # not reached: the last conflict is raised

    async def _react(
        self,
        process: ProcessManager[Any],
        reaction: Reaction[Any],
        incoming: _Incoming,
        key: str,
        replay: str | None,
    ) -> bool:
        """Apply one event; ``replay`` ("failed" or "held") applies one the instance kept."""
        source, event, event_id = self._source, incoming.event, incoming.event_id
        uow = UnitOfWork(
            source.storage,
            source.model,
            source.events,
            publish=source.publish,
            clock=source.clock,
            new_id=source.new_id,
            correlation_id=incoming.correlation_id or str(event_id),
            causation_id=str(event_id),
            actor=incoming.actor,
        )
        async with uow:
            session = await uow.session()
            if replay is None and not await session.mark_processed(
                event_id, f"process:{process.name}"
            ):
                await uow.rollback()
                return False  # applied before: a redelivery
            instance_id = process.instance_id(key)
            record = await session.load_document(PROCESS_COLLECTION, instance_id)
            if record is None and not reaction.starts:
                await uow.commit()  # nothing to correlate to: recorded as handled
                return False
            instance = (
                ProcessInstance(process.name, key, process.encode(process.initial()), False, 0, 0)
                if record is None
                else _instance(record.data, record.version)
            )
            if replay is None and (instance.intervention is not None or instance.held):
                # Waits behind the failed event, in order, until an operator steps in.
                waiting = replace(instance, held=(*instance.held, self._stored(incoming)))
                await session.save_document(
                    PROCESS_COLLECTION,
                    instance_id,
                    _encode(waiting),
                    expected_version=instance.version,
                )
                await uow.commit()
                return instance.intervention is None
            settled = _settled(instance, replay, self._now())
            if instance.completed:
                if replay is not None:
                    await session.save_document(
                        PROCESS_COLLECTION,
                        instance_id,
                        _encode(settled),
                        expected_version=instance.version,
                    )
                await uow.commit()
                return False
            # Rewriting the document first locks the instance until this transaction ends.
            version = await session.save_document(
                PROCESS_COLLECTION,
                instance_id,
                _encode(instance),
                expected_version=instance.version,
            )
            context = ProcessContext(process.name, key, event_id, uow)
            state = process.decode(instance.state)
            changed = await reaction.react(state, event, context)
            new_state = state if changed is None else changed
            await self._send(process, context)
            await self._write_schedules(process, key, context, session)
            after = replace(
                settled,
                state=process.encode(new_state),
                completed=context.completed,
                handled=instance.handled + 1,
                version=version,
            )
            await session.save_document(
                PROCESS_COLLECTION, instance_id, _encode(after), expected_version=version
            )
            await uow.commit()
        return False

    async def _send(self, process: ProcessManager[Any], context: ProcessContext) -> None:
        uow = context.unit_of_work
        assert uow is not None  # the runner always gives one
        for command in context.commands:
            result = await self._mediator.send(
                command,
                correlation_id=uow.correlation_id,
                causation_id=uow.causation_id,
                actor=uow.actor,
                unit_of_work=uow,
            )
            if not result.is_success:
                raise ProcessCommandError(process.name, command, result.problem)

    async def _write_schedules(
        self, process: ProcessManager[Any], key: str, context: ProcessContext, session: Any
    ) -> None:
        if not (context.scheduled or context.cancelled):
            return
        if self._schedules is None:
            msg = f"process {process.name} schedules messages: pass schedules= to the ProcessRunner"
            raise ConfigurationError(msg)
        prefix = f"{process.name}/{key}/"
        messages: list[ScheduledMessage] = []
        for label, event, due_at in context.scheduled:
            encoded = self._source.events.encode(event)
            payload = {"version": encoded.schema_version, "data": encoded.data}
            messages.append(
                scheduled_message(
                    prefix + label,
                    encoded.type_name,
                    payload,
                    due_at=due_at,
                    key=process.instance_id(key),
                )
            )
        if messages:
            await self._schedules.schedule(session, messages, now=self._source.clock())
        if context.cancelled:
            ids = [prefix + label for label in context.cancelled]
            await self._schedules.cancel(session, schedule_ids=ids)

    def _known(self, name: str) -> ProcessManager[Any]:
        try:
            return self._processes[name]
        except KeyError:
            msg = f"process {name!r} is not registered with this runner"
            raise ConfigurationError(msg) from None


@dataclass(frozen=True, slots=True)
class _Incoming:
    """An event to apply, with what its unit of work carries on."""

    event: object
    event_id: UUID
    correlation_id: str | None
    actor: str | None


def _refusal(exc: BaseException) -> bool:
    # A business answer does not change by asking again.
    return isinstance(exc, (DomainError, ProcessCommandError))


def _settled(instance: ProcessInstance, replay: str | None, now: str) -> ProcessInstance:
    """The instance once the event being replayed was applied."""
    if replay == "held":
        return replace(instance, held=instance.held[1:])
    if replay == "failed" and instance.intervention is not None:
        entry = ProcessEntry(now, instance.intervention.event_id, "retried")
        return replace(
            instance,
            intervention=None,
            failed_event=None,
            history=(*instance.history, entry),
        )
    return instance


async def process_interventions(storage: Storage) -> list[ProcessInstance]:
    """The process instances in ``storage`` waiting for an operator, oldest failure first."""
    where = SpecificationBuilder().where("status", "in", [NEEDS_INTERVENTION]).build()
    async with storage.transaction() as session:
        search: DocumentSearch = session  # type: ignore[assignment]
        found = search.search_documents(PROCESS_COLLECTION, QueryOptions(where), _FIELDS)
        records = [record async for record in found.stream()]
    instances = [_instance(record.data, record.version) for record in records]
    return sorted(instances, key=lambda i: (i.intervention.at if i.intervention else "", i.key))


async def load_process_instance(storage: Storage, process: str, key: str) -> ProcessInstance | None:
    """One process instance as stored in ``storage``, or None."""
    async with storage.transaction() as session:
        record = await session.load_document(PROCESS_COLLECTION, f"{process}/{key}")
    return None if record is None else _instance(record.data, record.version)


def _encode(instance: ProcessInstance) -> str:
    intervention = instance.intervention
    return json.dumps(
        {
            "process": instance.process,
            "key": instance.key,
            "status": instance.status,
            "state": instance.state,
            "completed": instance.completed,
            "handled": instance.handled,
            "intervention": None if intervention is None else asdict(intervention),
            "failed_event": instance.failed_event,
            "held": list(instance.held),
            "history": [asdict(entry) for entry in instance.history],
        }
    )


def _instance(data: str, version: int) -> ProcessInstance:
    document = json.loads(data)
    intervention = document.get("intervention")
    return ProcessInstance(
        document["process"],
        document["key"],
        document["state"],
        document["completed"],
        document["handled"],
        version,
        None if intervention is None else ProcessIntervention(**intervention),
        tuple(ProcessEntry(**entry) for entry in document.get("history", [])),
        document.get("failed_event"),
        tuple(document.get("held", [])),
    )
