"""Sagas: a sequence of steps that either all happen or are undone, and survive a crash.

A :class:`Saga` names its steps in order; each :class:`Step` has an async action and,
optionally, an async compensation that undoes it (reserve stock / release stock). The
:class:`SagaOrchestrator` runs an instance's steps one after another and keeps its
progress as a JSON document in ``eventfold_documents`` (collection ``eventfold.sagas``),
so every backend supports sagas with no table of their own.

- **Progress after every step.** The instance's status, the steps done, its data, the
  attempts and errors of the current step and a history are saved in a transaction of
  their own after each step (and after each failed attempt).
- **One worker at a time.** A worker claims an instance (an owner token and a lease,
  written with the document's optimistic version) before it runs anything; a second
  worker's claim fails with a ``ConcurrencyError`` and it backs off. Each later save
  expects the version the worker wrote last, so a worker that lost its lease stops.
- **Refusals and faults.** A step that refuses (raises :class:`StepRefusedError`, any
  other :class:`~eventfold.errors.DomainError`, or an error type listed in its
  ``refusals``: "out of stock", "card declined") compensates at once: a business answer
  does not change by asking again. Any other error is a fault, retried with tenacity's
  exponential backoff (:class:`~eventfold.application.messaging.outbox.RetryPolicy`, per
  saga or per step); when it keeps failing, the steps already done are compensated in
  reverse order. A compensation that
  keeps failing puts the instance in ``needs_intervention`` with its error: it is listed
  by :meth:`SagaOrchestrator.pending_interventions` until an operator retries or resolves
  it.
- **Waiting, with a time limit.** A step with ``wait_for`` starts something whose answer
  arrives later (a payment): once its action ran, the instance is ``waiting`` until
  :meth:`SagaOrchestrator.signal` delivers that answer, and a step with ``timeout``
  schedules a durable timeout message in the same transaction (see
  :mod:`~eventfold.application.messaging.scheduler`). If the timeout fires first
  (:meth:`SagaOrchestrator.handle_scheduled`), the saga compensates, the waiting step
  included; an answer cancels the timeout in the transaction that records it.
  ``StepContext.schedule`` schedules messages of a step's own the same way.
- **Crash safety.** A worker that dies mid-step leaves its claim behind; once the lease
  has passed, :meth:`SagaOrchestrator.resume_incomplete` runs the instance on from its
  last saved step. That step may then run a second time, so **actions and compensations
  must be idempotent**: each call gets a stable ``idempotency_key`` per (saga id, step)
  to hand to the service it calls.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from uuid import uuid4

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from eventfold.application.messaging.outbox import RetryPolicy
from eventfold.application.messaging.scheduler import scheduled_message
from eventfold.application.persistence.unit_of_work import Clock, utc_now
from eventfold.application.readside.queries import QueryOptions
from eventfold.application.readside.read_models import DocumentSearch
from eventfold.domain.errors import (
    ConfigurationError,
    DomainError,
    EntityNotFoundError,
    InvalidStateError,
)
from eventfold.domain.specification import FieldSet, SpecificationBuilder
from eventfold.errors import ConcurrencyError
from eventfold.ports.scheduling import ClaimedMessage, ScheduledMessage, ScheduleWriter
from eventfold.ports.storage import Storage
from eventfold.ports.telemetry import active_telemetry
from eventfold.serialization import JsonCodec

__all__ = [
    "SAGA_COLLECTION",
    "SAGA_TIMEOUT",
    "Compensation",
    "InterventionAlert",
    "Saga",
    "SagaEntry",
    "SagaOrchestrator",
    "SagaStarter",
    "SagaState",
    "SagaStatus",
    "Step",
    "StepAction",
    "StepContext",
    "StepRefusedError",
]

_log = logging.getLogger("eventfold.sagas")

D = TypeVar("D")
E = TypeVar("E")
T = TypeVar("T")

SAGA_COLLECTION = "eventfold.sagas"
"""The document collection saga instances are kept in."""

SAGA_TIMEOUT = "eventfold.saga.timeout"
"""The name of the scheduled message that ends a step's wait."""

_ERROR_LENGTH = 2000
_FIELDS = FieldSet("SagaState", {"saga_id": str, "saga": str, "status": str})
_DEFAULT_RETRY = RetryPolicy(max_attempts=3, initial=0.2, maximum=10.0, jitter=0.2)


class SagaStatus(enum.StrEnum):
    """Where a saga instance stands."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    NEEDS_INTERVENTION = "needs_intervention"
    RESOLVED = "resolved"
    WAITING = "waiting"
    """A step's action ran and the saga waits for its answer (or its timeout)."""

    @property
    def active(self) -> bool:
        """True while a worker has steps or compensations left to run."""
        return self in (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


@dataclass(frozen=True, slots=True)
class StepContext:
    """What an action or a compensation gets besides the saga's data."""

    saga_id: str
    saga: str
    step: str
    attempt: int
    idempotency_key: str
    """The same for every run of this step of this instance (compensations have their own)."""
    scheduled: list[ScheduledMessage] = field(default_factory=list, compare=False)
    """Messages the step scheduled: written with its outcome, only if it completes."""

    def schedule(self, name: str, payload: Any, *, due_at: datetime, label: str = "") -> None:
        """Schedule ``name`` for ``due_at``, written when the step's outcome is saved.

        Its schedule id is ``<saga id>/<step>/<label or name>``: a step run again after a
        crash schedules it once. The key is the saga id.
        """
        schedule_id = f"{self.saga_id}/{self.step}/{label or name}"
        self.scheduled.append(
            scheduled_message(schedule_id, name, payload, due_at=due_at, key=self.saga_id)
        )


InterventionAlert = Callable[["SagaState"], Awaitable[None]]
"""Called with an instance that has just come to need a person."""

StepAction = Callable[[D, StepContext], Awaitable[D | None]]
"""Does a step; returns the saga's new data, or None to keep (the possibly mutated) data."""

Compensation = Callable[[D, StepContext], Awaitable[None]]
"""Undoes a step that completed."""


class StepRefusedError(DomainError):
    """A step's business refusal ("out of stock"): compensated at once, never retried."""


@dataclass(frozen=True, slots=True)
class Step(Generic[D]):
    """One named step: an action, an optional compensation, an optional retry policy.

    ``refusals`` are error types that mean a business "no" for this step, besides
    :class:`StepRefusedError` and every :class:`~eventfold.errors.DomainError`: the saga
    compensates at once instead of retrying. The retry policy applies to faults only.
    """

    name: str
    action: StepAction[D]
    compensate: Compensation[D] | None = None
    retry: RetryPolicy | None = None
    refusals: tuple[type[Exception], ...] = ()
    wait_for: str | None = None
    """The answer the saga waits for once the action ran (see :meth:`SagaOrchestrator.signal`)."""
    timeout: timedelta | None = None
    """How long to wait for ``wait_for`` before compensating, this step included."""

    def refuses(self, error: BaseException) -> bool:
        """Whether ``error`` is a business refusal of this step rather than a fault."""
        return isinstance(error, (DomainError, *self.refusals))


class Saga(Generic[D]):
    """A named sequence of steps over a typed data object (a dataclass or pydantic model)."""

    def __init__(
        self,
        name: str,
        data: type[D],
        steps: Sequence[Step[D]],
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        names = [step.name for step in steps]
        if not steps or len(set(names)) != len(names):
            msg = f"saga {name!r} needs at least one step and unique step names, got {names}"
            raise ConfigurationError(msg)
        self.name = name
        self.data_type = data
        self.steps = tuple(steps)
        self.retry = retry or _DEFAULT_RETRY
        self._codec = JsonCodec(data, f"{name} saga data")
        self._by_name = {step.name: step for step in steps}

    def step(self, name: str) -> Step[D]:
        """The step called ``name``."""
        return self._by_name[name]

    def retry_for(self, step: Step[D]) -> RetryPolicy:
        """The step's own retry policy, else the saga's."""
        return step.retry or self.retry

    def encode(self, data: D) -> Any:
        """``data`` as plain JSON data."""
        return self._codec.to_jsonable(data)

    def decode(self, data: Any) -> D:
        """The data object plain JSON data describes."""
        return self._codec.decode_python(data)  # type: ignore[no-any-return]

    def data_of(self, state: SagaState) -> D:
        """An instance's data as the typed object."""
        return self.decode(state.data)


@dataclass(frozen=True, slots=True)
class SagaEntry:
    """One line of an instance's history."""

    at: datetime
    step: str
    outcome: str
    """``completed``, ``failed``, ``refused``, ``compensated``, ``retried``, ``resolved``, ..."""
    attempt: int = 0
    error: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class SagaState:
    """A saga instance as stored: status, steps done, data, attempts, errors, history."""

    saga_id: str
    saga: str
    status: SagaStatus
    data: Any
    started_at: datetime
    updated_at: datetime
    completed: tuple[str, ...] = ()
    """Steps done, in order; compensation undoes them from the end."""
    attempts: int = 0
    """Failed attempts of the current step (or compensation)."""
    failed_step: str | None = None
    last_error: str | None = None
    history: tuple[SagaEntry, ...] = ()
    owner: str | None = None
    lease_until: datetime | None = None
    waiting_for: str | None = None
    """The answer a ``waiting`` instance waits for."""
    version: int = field(default=0, compare=False)
    """The document's version (not stored in the document)."""

    def held_at(self, now: datetime) -> bool:
        """True while a worker's claim on the instance lasts."""
        return self.owner is not None and self.lease_until is not None and self.lease_until > now

    def _log(self, entry: SagaEntry, **changes: Any) -> SagaState:
        return replace(self, history=(*self.history, entry), updated_at=entry.at, **changes)


_STATE_CODEC = JsonCodec(SagaState, "saga state")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_ERROR_LENGTH]


class _LostClaimError(Exception):
    """Another worker took the instance over (our lease ran out): stop running it."""


class _StepFailedError(Exception):
    """Every attempt of an action or compensation failed; carries the saved state."""

    def __init__(self, state: SagaState) -> None:
        super().__init__(state.last_error)
        self.state = state


class SagaOrchestrator:
    """Starts, runs, resumes and repairs saga instances kept in one storage."""

    def __init__(
        self,
        storage: Storage,
        sagas: Iterable[Saga[Any]],
        *,
        lease: timedelta = timedelta(minutes=5),
        clock: Clock = utc_now,
        schedules: ScheduleWriter | None = None,
        on_intervention: InterventionAlert | None = None,
    ) -> None:
        """``lease`` must outlast a step with all its retries: a claim older than it is
        taken as abandoned by a dead worker. ``schedules`` keeps the timeouts and the
        messages steps schedule (``eventfold.adapters.scheduling.schedule_store_for``).
        ``on_intervention`` is called with an instance that has just come to need a
        person (page someone, open a ticket); its errors are logged, never raised."""
        self._storage = storage
        self._sagas = {saga.name: saga for saga in sagas}
        self._lease = lease
        self._clock = clock
        self._schedules = schedules
        self._on_intervention = on_intervention

    @property
    def storage(self) -> Storage:
        """The storage the instances are kept in."""
        return self._storage

    # -- starting and running --------------------------------------------------------

    async def start(self, saga: Saga[D], data: D, *, saga_id: str | None = None) -> SagaState:
        """Create an instance (once per ``saga_id``) and run it as far as it goes."""
        state = await self.create(saga, data, saga_id=saga_id)
        return await self.run(state.saga_id)

    async def create(self, saga: Saga[D], data: D, *, saga_id: str | None = None) -> SagaState:
        """Save a new instance for a worker to run; an existing ``saga_id`` is returned as is."""
        self._known(saga.name)
        saga_id = saga_id or str(uuid4())
        existing = await self.get(saga_id)
        if existing is not None:
            return existing
        now = self._clock()
        state = SagaState(saga_id, saga.name, SagaStatus.RUNNING, saga.encode(data), now, now)
        try:
            return await self._save(state)
        except ConcurrencyError:  # created by someone else meanwhile
            return await self._require(saga_id)

    async def run(self, saga_id: str) -> SagaState:
        """Run an instance until it ends, needs intervention, or another worker holds it."""
        owner = str(uuid4())
        state = await self._claim(saga_id, owner)
        if state is None:
            return await self._require(saga_id)
        saga = self._known(state.saga)
        try:
            while state.status.active:
                state = await self._advance(saga, state, owner)
        except (ConcurrencyError, _LostClaimError):
            _log.warning("saga %s was taken over by another worker", saga_id)
            return await self._require(saga_id)
        return state

    async def resume_incomplete(self) -> list[SagaState]:
        """Run every instance of this orchestrator's sagas left running or compensating and
        not held by a live worker; return them as they ended."""
        now = self._clock()
        found = await self._search(*_ACTIVE)
        waiting = [s for s in found if s.saga in self._sagas and not s.held_at(now)]
        return [await self.run(state.saga_id) for state in waiting]

    # -- looking and repairing -------------------------------------------------------

    async def get(self, saga_id: str) -> SagaState | None:
        """The instance, or None."""
        async with self._storage.transaction() as session:
            record = await session.load_document(SAGA_COLLECTION, saga_id)
        return None if record is None else _decode(record.data, record.version)

    async def pending_interventions(self) -> list[SagaState]:
        """The instances waiting for an operator, oldest first."""
        return await self._search(SagaStatus.NEEDS_INTERVENTION)

    async def instances(self, *statuses: SagaStatus) -> list[SagaState]:
        """The instances in any of ``statuses`` (every status when none is given), oldest first."""
        return await self._search(*(statuses or tuple(SagaStatus)))

    async def retry(self, saga_id: str) -> SagaState:
        """Try an instance's compensations again (after the cause was fixed) and run it."""
        state = await self._intervention(saga_id)
        entry = SagaEntry(self._clock(), state.failed_step or "", "retried")
        await self._save(state._log(entry, status=SagaStatus.COMPENSATING, attempts=0))
        return await self.run(saga_id)

    async def resolve(self, saga_id: str, *, note: str) -> SagaState:
        """Close an instance an operator put right by hand; ``note`` says what was done."""
        state = await self._intervention(saga_id)
        entry = SagaEntry(self._clock(), state.failed_step or "", "resolved", note=note)
        return await self._save(state._log(entry, status=SagaStatus.RESOLVED))

    async def signal(
        self, saga_id: str, answer: str, *, update: Callable[[Any], Any] | None = None
    ) -> SagaState:
        """Deliver the answer a waiting instance waits for, and run it on.

        ``update`` gets the saga's data and returns the new data (or None to keep the
        possibly mutated data). An answer the instance does not wait for (a duplicate, a
        late one after its timeout) changes nothing. The step's timeout is cancelled in
        the transaction that records the answer.
        """
        state = await self._require(saga_id)
        if state.status is not SagaStatus.WAITING or state.waiting_for != answer:
            _log.info("saga %s is %s: answer %s ignored", saga_id, state.status, answer)
            return state
        saga = self._known(state.saga)
        step = state.completed[-1]
        data = saga.data_of(state)
        if update is not None:
            changed = update(data)
            data = data if changed is None else changed
        done = len(state.completed) == len(saga.steps)
        entry = SagaEntry(self._clock(), step, f"received {answer}")
        status = SagaStatus.COMPLETED if done else SagaStatus.RUNNING
        answered = state._log(entry, status=status, waiting_for=None, data=saga.encode(data))
        try:
            cancelled = [_timeout_id(saga_id, step)] if self._schedules is not None else []
            await self._save(answered, cancelled=cancelled)
        except ConcurrencyError:  # timed out (or answered) meanwhile: that one stands
            return await self._require(saga_id)
        return await self.run(saga_id)

    async def time_out(self, saga_id: str, step: str) -> SagaState:
        """Give up waiting on ``step``: the saga compensates, that step included.

        Does nothing unless the instance still waits on that step (the answer won).
        """
        state = await self._require(saga_id)
        waiting = state.status is SagaStatus.WAITING and state.completed[-1:] == (step,)
        if not waiting:
            return state
        error = f"timed out waiting for {state.waiting_for}"
        entry = SagaEntry(self._clock(), step, "timed out", error=error)
        changes = {"status": SagaStatus.COMPENSATING, "failed_step": step, "last_error": error}
        try:
            await self._save(state._log(entry, waiting_for=None, attempts=0, **changes))
        except ConcurrencyError:  # answered meanwhile: the answer stands
            return await self._require(saga_id)
        return await self.run(saga_id)

    async def handle_scheduled(self, claimed: ClaimedMessage) -> None:
        """A :class:`~eventfold.application.messaging.scheduler.Scheduler` handler for
        saga timeouts; other messages are left alone (logged)."""
        message = claimed.message
        if message.name != SAGA_TIMEOUT:
            _log.warning("saga orchestrator got scheduled message %s: not a timeout", message.name)
            return
        payload = json.loads(message.payload)
        await self.time_out(payload["saga_id"], payload["step"])

    # -- steps -----------------------------------------------------------------------

    async def _advance(self, saga: Saga[Any], state: SagaState, owner: str) -> SagaState:
        telemetry = active_telemetry()
        if telemetry is None:
            return await self._move(saga, state, owner)
        if state.status is SagaStatus.RUNNING:
            name = f"saga {saga.name} step {saga.steps[len(state.completed)].name}"
        elif state.completed:
            name = f"saga {saga.name} compensate {state.completed[-1]}"
        else:  # every step compensated: the saga ends
            name = f"saga {saga.name} compensated"
        attributes = {"eventfold.saga": saga.name, "eventfold.saga.id": state.saga_id}
        with telemetry.span(name, attributes=attributes) as span:
            moved = await self._move(saga, state, owner)
            span.set_attribute("eventfold.saga.status", str(moved.status))
            if moved.status is not state.status and moved.status in _TROUBLE:
                span.set_error(moved.last_error or str(moved.status))
        counted = {"eventfold.saga": saga.name, "eventfold.saga.status": str(moved.status)}
        telemetry.add("eventfold.saga.transitions", 1, counted)
        return moved

    async def _move(self, saga: Saga[Any], state: SagaState, owner: str) -> SagaState:
        if state.status is SagaStatus.RUNNING:
            return await self._forward(saga, state, owner)
        return await self._compensate(saga, state, owner)

    async def _forward(self, saga: Saga[Any], state: SagaState, owner: str) -> SagaState:
        step = saga.steps[len(state.completed)]
        try:
            state, result, scheduled = await self._attempts(
                saga, state, owner, step.name, step.action
            )
        except _StepFailedError as failed:
            entry = SagaEntry(
                self._clock(), step.name, "compensating", error=failed.state.last_error
            )
            changes = {"status": SagaStatus.COMPENSATING, "attempts": 0, "failed_step": step.name}
            return await self._save(failed.state._log(entry, **changes))
        completed = (*state.completed, step.name)
        if step.wait_for is not None:
            entry = SagaEntry(self._clock(), step.name, f"waiting for {step.wait_for}")
            if step.timeout is not None:
                scheduled.append(self._timeout(state.saga_id, step.name, step.timeout))
            waiting = state._log(
                entry,
                data=saga.encode(result),
                completed=completed,
                attempts=0,
                status=SagaStatus.WAITING,
                waiting_for=step.wait_for,
                **self._lease_changes(owner, release=True),
            )
            return await self._save(waiting, scheduled=scheduled)
        done = len(completed) == len(saga.steps)
        entry = SagaEntry(self._clock(), step.name, "completed", state.attempts + 1)
        return await self._save(
            state._log(
                entry,
                data=saga.encode(result),
                completed=completed,
                attempts=0,
                status=SagaStatus.COMPLETED if done else SagaStatus.RUNNING,
                **self._lease_changes(owner, release=done),
            ),
            scheduled=scheduled,
        )

    async def _compensate(self, saga: Saga[Any], state: SagaState, owner: str) -> SagaState:
        if not state.completed:
            entry = SagaEntry(self._clock(), state.failed_step or "", "compensated all")
            changes = self._lease_changes(owner, release=True)
            return await self._save(state._log(entry, status=SagaStatus.COMPENSATED, **changes))
        step = saga.step(state.completed[-1])
        outcome = "nothing to compensate"
        if step.compensate is not None:
            try:
                state, _, _ = await self._attempts(
                    saga, state, owner, f"{step.name}/compensate", _keeping(step.compensate)
                )
            except _StepFailedError as failed:
                entry = SagaEntry(
                    self._clock(), step.name, "needs intervention", error=failed.state.last_error
                )
                changes = self._lease_changes(owner, release=True)
                status = SagaStatus.NEEDS_INTERVENTION
                stuck = await self._save(failed.state._log(entry, status=status, **changes))
                await self._alert(stuck)
                return stuck
            outcome = "compensated"
        entry = SagaEntry(self._clock(), step.name, outcome, state.attempts + 1)
        changes = self._lease_changes(owner, release=False)
        return await self._save(
            state._log(entry, completed=state.completed[:-1], attempts=0, **changes)
        )

    async def _attempts(
        self,
        saga: Saga[Any],
        state: SagaState,
        owner: str,
        key: str,
        call: StepAction[Any],
    ) -> tuple[SagaState, Any, list[ScheduledMessage]]:
        """Call until it succeeds or the attempts run out, saving every failure.

        Returns the saved state, the action's result and the messages it scheduled.
        """
        step_name = key.split("/", 1)[0]
        step = saga.step(step_name)
        policy = saga.retry_for(step)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, policy.max_attempts - state.attempts)),
            wait=policy.wait(),
            # A refusal is an answer, not a fault: asking again would get the same answer.
            retry=retry_if_exception(lambda exc: _retryable(exc) and not step.refuses(exc)),
            reraise=True,
        )
        scheduled: list[ScheduledMessage] = []
        try:
            async for attempt in retrying:
                with attempt:
                    data = saga.decode(state.data)
                    context = StepContext(
                        state.saga_id, saga.name, step_name, state.attempts + 1,
                        f"{state.saga_id}/{key}",
                    )  # fmt: skip
                    scheduled = context.scheduled  # a failed attempt's messages are dropped
                    try:
                        result = await call(data, context)
                    except Exception as exc:
                        refused = step.refuses(exc)
                        state = await self._record_failure(
                            state, owner, step_name, exc, refused=refused
                        )
                        raise
        except _LostClaimError:
            raise
        except Exception as exc:
            raise _StepFailedError(state) from exc
        return state, data if result is None else result, scheduled

    async def _record_failure(
        self, state: SagaState, owner: str, step: str, exc: Exception, *, refused: bool
    ) -> SagaState:
        attempt = state.attempts + 1
        error = _describe(exc)
        outcome = "refused" if refused else "failed"
        _log.warning(
            "saga %s step %s attempt %d %s: %s", state.saga_id, step, attempt, outcome, error
        )
        entry = SagaEntry(self._clock(), step, outcome, attempt, error)
        changes = self._lease_changes(owner, release=False)
        try:
            return await self._save(
                state._log(entry, attempts=attempt, last_error=error, **changes)
            )
        except ConcurrencyError as lost:
            raise _LostClaimError from lost

    async def _alert(self, state: SagaState) -> None:
        _log.error(
            "saga %s (%s) needs intervention at step %s: %s",
            state.saga_id,
            state.saga,
            state.failed_step,
            state.last_error,
        )
        if self._on_intervention is None:
            return
        try:
            await self._on_intervention(state)
        except Exception:  # noqa: BLE001 - an alert that fails must not undo the saved state
            _log.exception("the intervention alert for saga %s failed", state.saga_id)

    # -- storage ---------------------------------------------------------------------

    def _lease_changes(self, owner: str, *, release: bool) -> dict[str, Any]:
        if release:
            return {"owner": None, "lease_until": None}
        return {"owner": owner, "lease_until": self._clock() + self._lease}

    async def _claim(self, saga_id: str, owner: str) -> SagaState | None:
        state = await self._require(saga_id)
        if not state.status.active or state.held_at(self._clock()):
            return None
        try:
            return await self._save(replace(state, **self._lease_changes(owner, release=False)))
        except ConcurrencyError:
            return None  # another worker claimed it first and runs it

    async def _save(
        self,
        state: SagaState,
        *,
        scheduled: Sequence[ScheduledMessage] = (),
        cancelled: Sequence[str] = (),
    ) -> SagaState:
        """Save the instance, with the messages it schedules or cancels, in one transaction."""
        if (scheduled or cancelled) and self._schedules is None:
            msg = "this saga schedules messages: pass schedules= to the SagaOrchestrator"
            raise ConfigurationError(msg)
        async with self._storage.transaction() as session:
            version = await session.save_document(
                SAGA_COLLECTION, state.saga_id, _encode(state), expected_version=state.version
            )
            if self._schedules is not None and scheduled:
                await self._schedules.schedule(session, scheduled, now=self._clock())
            if self._schedules is not None and cancelled:
                await self._schedules.cancel(session, schedule_ids=cancelled)
        return replace(state, version=version)

    def _timeout(self, saga_id: str, step: str, after: timedelta) -> ScheduledMessage:
        payload = {"saga_id": saga_id, "step": step}
        due_at = self._clock() + after
        return scheduled_message(
            _timeout_id(saga_id, step), SAGA_TIMEOUT, payload, due_at=due_at, key=saga_id
        )

    async def _require(self, saga_id: str) -> SagaState:
        state = await self.get(saga_id)
        if state is None:
            raise EntityNotFoundError("saga", saga_id)
        return state

    async def _intervention(self, saga_id: str) -> SagaState:
        state = await self._require(saga_id)
        if state.status is not SagaStatus.NEEDS_INTERVENTION:
            msg = f"saga {saga_id!r} is {state.status}, not waiting for intervention"
            raise InvalidStateError(msg)
        return state

    async def _search(self, *statuses: SagaStatus) -> list[SagaState]:
        where = SpecificationBuilder().where("status", "in", [str(s) for s in statuses]).build()
        async with self._storage.transaction() as session:
            search: DocumentSearch = session  # type: ignore[assignment]
            found = search.search_documents(SAGA_COLLECTION, QueryOptions(where), _FIELDS)
            records = [record async for record in found.stream()]
        states = [_decode(record.data, record.version) for record in records]
        return sorted(states, key=lambda state: (state.started_at, state.saga_id))

    def _known(self, name: str) -> Saga[Any]:
        try:
            return self._sagas[name]
        except KeyError:
            msg = f"saga {name!r} is not registered with this orchestrator"
            raise ConfigurationError(msg) from None


_ACTIVE = (SagaStatus.RUNNING, SagaStatus.COMPENSATING)


_TROUBLE = frozenset({SagaStatus.COMPENSATING, SagaStatus.NEEDS_INTERVENTION})
"""States a step's failure leads to: a span that ends in one of them failed."""


def _timeout_id(saga_id: str, step: str) -> str:
    return f"{saga_id}/{step}/timeout"


def _retryable(exc: BaseException) -> bool:
    # A BaseException (cancellation, a dying process) stops the worker at once, and a
    # lost claim hands the instance to the worker that took it; anything else is retried.
    return isinstance(exc, Exception) and not isinstance(exc, _LostClaimError)


def _keeping(compensation: Compensation[Any]) -> StepAction[Any]:
    async def call(data: Any, context: StepContext) -> None:
        await compensation(data, context)

    return call


def _encode(state: SagaState) -> str:
    document = _STATE_CODEC.to_jsonable(state)
    del document["version"]
    return json.dumps(document)


def _decode(data: str, version: int) -> SagaState:
    state: SagaState = _STATE_CODEC.decode(data)
    return replace(state, version=version)


class SagaStarter(Generic[E, D]):
    """An event handler that starts one saga instance per event, at most once.

    The instance id is ``<saga name>-<key(event)>``: a redelivered event finds the
    instance already there and starts nothing. With ``run=False`` the instance is only
    created, and a worker's :meth:`SagaOrchestrator.resume_incomplete` runs it.
    """

    def __init__(
        self,
        orchestrator: SagaOrchestrator,
        saga: Saga[D],
        *,
        data: Callable[[E], D],
        key: Callable[[E], object],
        run: bool = True,
    ) -> None:
        self._orchestrator = orchestrator
        self._saga = saga
        self._data = data
        self._key = key
        self._run = run

    def saga_id(self, event: E) -> str:
        """The id of the instance ``event`` starts."""
        return f"{self._saga.name}-{self._key(event)}"

    async def handle(self, event: E, /) -> None:
        """Create (and unless ``run=False``, run) the event's saga instance."""
        state = await self._orchestrator.create(
            self._saga, self._data(event), saga_id=self.saga_id(event)
        )
        if self._run:
            await self._orchestrator.run(state.saga_id)
