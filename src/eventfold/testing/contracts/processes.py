"""The process manager contract: what :class:`ProcessRunner` does on every storage.

Subclass :class:`ProcessManagerContract` and provide a ``storage`` fixture (a fresh
storage with its schema). The process under test is a small order fulfilment: an order
asks for payment and waits 15 minutes for it; a payment ships the order, a timeout
cancels it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventfold.adapters.scheduling import schedule_store_for
from eventfold.application.cqrs.behaviors import default_behaviors
from eventfold.application.cqrs.mediator import Mediator, RequestContext
from eventfold.application.cqrs.results import OperationResult
from eventfold.application.messaging.outbox import RetryPolicy
from eventfold.application.messaging.processes import (
    ProcessContext,
    ProcessInstance,
    ProcessManager,
    ProcessRunner,
    Reaction,
)
from eventfold.application.messaging.scheduler import Scheduler
from eventfold.application.persistence.model import PersistenceModel
from eventfold.application.persistence.unit_of_work import (
    DataSource,
    TransactionBehavior,
    UnitOfWork,
)
from eventfold.domain.errors import DomainError, InvalidStateError
from eventfold.domain.events import event_type
from eventfold.ports.records import EventRecord
from eventfold.ports.storage import Storage
from eventfold.serialization import EventRegistry

__all__ = [
    "CancelOrder",
    "Fulfilment",
    "OrderPlaced",
    "PaymentReceived",
    "PaymentTimedOut",
    "ProcessManagerContract",
    "RequestPayment",
    "ShipOrder",
    "StepTaken",
    "fulfilment_process",
]

PAYMENT_WINDOW = timedelta(minutes=15)
T0 = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)
COMMANDS = "commands"


@event_type("ProcessOrderPlaced")
@dataclass(frozen=True)
class OrderPlaced:
    """Starts a fulfilment."""

    order_id: str
    total: int


@event_type("ProcessPaymentReceived")
@dataclass(frozen=True)
class PaymentReceived:
    """The payment context's answer."""

    order_id: str


@event_type("ProcessPaymentTimedOut")
@dataclass(frozen=True)
class PaymentTimedOut:
    """What the process schedules for itself."""

    order_id: str


@event_type("ProcessStepTaken")
@dataclass(frozen=True)
class StepTaken:
    """A step of an order the intervention tests' process records, or fails on."""

    order_id: str
    step: str


class OutOfStockError(DomainError):
    """A refusal the intervention tests' process marks as needing a person."""


class _Steps:
    """A process that records steps, failing (a fault) on those in ``broken``."""

    def __init__(self) -> None:
        self.broken: set[str] = set()
        self.calls: list[str] = []
        self.blips = 0
        """How many next attempts fail with a passing fault."""

    async def placed(self, state: Fulfilment, event: OrderPlaced, _: ProcessContext) -> Fulfilment:
        return Fulfilment(event.order_id, "placed", ["placed"])

    async def step(self, state: Fulfilment, event: StepTaken, _: ProcessContext) -> Fulfilment:
        self.calls.append(event.step)
        if event.step == "out of stock":
            raise OutOfStockError("no stock left for " + event.order_id)
        if self.blips:
            self.blips -= 1
            raise ConnectionError("a blip")
        if event.step in self.broken:
            raise ConnectionError(f"the warehouse is down at {event.step}")
        return Fulfilment(state.order_id, state.status, [*state.events, event.step])

    def process(self) -> ProcessManager[Fulfilment]:
        return ProcessManager(
            "steps",
            Fulfilment,
            Fulfilment,
            [
                Reaction(OrderPlaced, lambda e: e.order_id, self.placed, starts=True),
                Reaction(StepTaken, lambda e: e.order_id, self.step, escalate=(OutOfStockError,)),
            ],
        )


@dataclass(frozen=True)
class RequestPayment:
    """A command the process sends."""

    order_id: str
    total: int


@dataclass(frozen=True)
class ShipOrder:
    """A command the process sends."""

    order_id: str


@dataclass(frozen=True)
class CancelOrder:
    """A command the process sends."""

    order_id: str


@dataclass
class Fulfilment:
    """The process's state."""

    order_id: str = ""
    status: str = "new"
    events: list[str] = field(default_factory=list)


async def _placed(state: Fulfilment, event: OrderPlaced, context: ProcessContext) -> Fulfilment:
    context.send(RequestPayment(event.order_id, event.total))
    context.schedule(PaymentTimedOut(event.order_id), due_at=T0 + PAYMENT_WINDOW)
    return Fulfilment(event.order_id, "awaiting payment", [*state.events, "placed"])


async def _paid(state: Fulfilment, event: PaymentReceived, context: ProcessContext) -> Fulfilment:
    if state.status != "awaiting payment":
        return state
    context.cancel("PaymentTimedOut")
    context.send(ShipOrder(event.order_id))
    context.complete()
    return Fulfilment(state.order_id, "shipped", [*state.events, "paid"])


async def _timed_out(
    state: Fulfilment, event: PaymentTimedOut, context: ProcessContext
) -> Fulfilment:
    context.send(CancelOrder(event.order_id))
    context.complete()
    return Fulfilment(state.order_id, "cancelled", [*state.events, "timed out"])


def fulfilment_process() -> ProcessManager[Fulfilment]:
    """Order placed -> payment requested (15 minutes) -> shipped, or cancelled on timeout."""
    return ProcessManager(
        "fulfilment",
        Fulfilment,
        Fulfilment,
        [
            Reaction(OrderPlaced, lambda e: e.order_id, _placed, starts=True),
            Reaction(PaymentReceived, lambda e: e.order_id, _paid),
            Reaction(PaymentTimedOut, lambda e: e.order_id, _timed_out),
        ],
    )


class _Recorded:
    """A command handler that writes the command into the document ``commands/<n>``."""

    def __init__(self, context: RequestContext, fail: bool) -> None:
        self._context = context
        self._fail = fail

    async def handle(self, command: Any, /) -> OperationResult[None]:
        session = await UnitOfWork.of(self._context).session()
        key = f"{type(command).__name__}-{command.order_id}"
        await session.save_document(COMMANDS, key, json.dumps({"ok": True}), expected_version=0)
        if self._fail:
            return OperationResult.conflict("the shop is closed")
        return OperationResult.ok()


def _recorder(*, fail: bool) -> Callable[[RequestContext], _Recorded]:
    def make(context: RequestContext) -> _Recorded:
        return _Recorded(context, fail)

    return make


class ProcessManagerContract:
    """Async tests every storage passes with process managers; subclasses give ``storage``."""

    @pytest.fixture
    def storage(self) -> Storage:
        """A fresh storage with its schema; subclasses override this."""
        raise NotImplementedError

    def runner(self, storage: Storage, *, failing: type | None = None) -> ProcessRunner:
        """A runner of the fulfilment process, whose command handlers record commands."""
        registry = EventRegistry([OrderPlaced, PaymentReceived, PaymentTimedOut])
        source = DataSource("app", storage, PersistenceModel(), registry, clock=lambda: T0)
        mediator = Mediator(default_behaviors())
        mediator.add_behavior(TransactionBehavior(source.unit_of_work))
        for command in (RequestPayment, ShipOrder, CancelOrder):
            mediator.register(command, _recorder(fail=command is failing))
        return ProcessRunner(
            source, mediator, [fulfilment_process()], schedules=schedule_store_for(storage)
        )

    def steps_runner(
        self, storage: Storage, steps: _Steps, alerts: list[ProcessInstance] | None = None
    ) -> ProcessRunner:
        """A runner of the steps process, retrying a fault once, alerts into ``alerts``."""
        registry = EventRegistry([OrderPlaced, StepTaken])
        source = DataSource("app", storage, PersistenceModel(), registry, clock=lambda: T0)

        async def alert(instance: ProcessInstance) -> None:
            if alerts is not None:
                alerts.append(instance)

        return ProcessRunner(
            source,
            Mediator(default_behaviors()),
            [steps.process()],
            retry=RetryPolicy(max_attempts=2, initial=0.0, maximum=0.0, jitter=0.0),
            on_intervention=alert,
        )

    async def failed_at(
        self, runner: ProcessRunner, steps: _Steps, step: str, order_id: str = "o-1"
    ) -> uuid.UUID:
        """Start ``order_id`` and make its ``step`` fail for good; the failed event's id."""
        await runner.handle(OrderPlaced(order_id, 30), event_id=uuid.uuid4())
        steps.broken.add(step)
        failed = uuid.uuid4()
        await runner.handle(StepTaken(order_id, step), event_id=failed)
        return failed

    async def test_a_reaction_failing_after_its_retries_needs_intervention_on_that_event(
        self, storage: Storage
    ) -> None:
        steps = _Steps()
        runner = self.steps_runner(storage, steps)
        failed = await self.failed_at(runner, steps, "pack")
        instance = await runner.get("steps", "o-1")
        assert instance is not None
        assert instance.intervention is not None
        assert instance.status == "needs_intervention"
        assert (instance.intervention.event_id, instance.intervention.event_type) == (
            str(failed),
            "ProcessStepTaken",
        )
        assert "the warehouse is down at pack" in instance.intervention.error
        assert instance.state["events"] == ["placed"]
        assert steps.calls == ["pack", "pack"]  # tried again before asking a person

    async def test_a_fault_that_passes_on_a_retry_needs_no_intervention(
        self, storage: Storage
    ) -> None:
        steps = _Steps()
        runner = self.steps_runner(storage, steps)
        await runner.handle(OrderPlaced("o-1", 30), event_id=uuid.uuid4())
        steps.blips = 1
        await runner.handle(StepTaken("o-1", "pack"), event_id=uuid.uuid4())
        instance = await runner.get("steps", "o-1")
        assert instance is not None
        assert (instance.status, instance.state["events"]) == ("active", ["placed", "pack"])

    async def test_the_intervention_alert_is_called_once_with_the_instance(
        self, storage: Storage
    ) -> None:
        steps, alerts = _Steps(), []  # type: ignore[var-annotated]
        runner = self.steps_runner(storage, steps, alerts)
        await self.failed_at(runner, steps, "pack")
        await runner.handle(StepTaken("o-1", "label"), event_id=uuid.uuid4())  # waits
        assert [(a.key, a.status) for a in alerts] == [("o-1", "needs_intervention")]

    async def test_a_refusal_marked_as_needing_a_person_is_held_without_retries(
        self, storage: Storage
    ) -> None:
        steps = _Steps()
        runner = self.steps_runner(storage, steps)
        await runner.handle(OrderPlaced("o-1", 30), event_id=uuid.uuid4())
        await runner.handle(StepTaken("o-1", "out of stock"), event_id=uuid.uuid4())
        instance = await runner.get("steps", "o-1")
        assert instance is not None
        assert instance.intervention is not None
        assert "no stock left for o-1" in instance.intervention.error
        assert steps.calls == ["out of stock"]

    async def test_later_events_of_an_instance_wait_behind_the_failed_one(
        self, storage: Storage
    ) -> None:
        steps = _Steps()
        runner = self.steps_runner(storage, steps)
        await self.failed_at(runner, steps, "pack")
        await runner.handle(StepTaken("o-1", "label"), event_id=uuid.uuid4())
        await runner.handle(StepTaken("o-1", "ship"), event_id=uuid.uuid4())
        instance = await runner.get("steps", "o-1")
        assert instance is not None
        assert instance.state["events"] == ["placed"]
        assert [json.loads(held["data"])["step"] for held in instance.held] == ["label", "ship"]

    async def test_a_redelivered_failed_event_is_not_applied_again(self, storage: Storage) -> None:
        steps = _Steps()
        runner = self.steps_runner(storage, steps)
        failed = await self.failed_at(runner, steps, "pack")
        await runner.handle(StepTaken("o-1", "pack"), event_id=failed)
        instance = await runner.get("steps", "o-1")
        assert instance is not None
        assert (steps.calls, instance.held) == (["pack", "pack"], ())

    async def test_retry_applies_the_failed_event_then_the_waiting_ones_in_order(
        self, storage: Storage
    ) -> None:
        steps = _Steps()
        runner = self.steps_runner(storage, steps)
        await self.failed_at(runner, steps, "pack")
        await runner.handle(StepTaken("o-1", "label"), event_id=uuid.uuid4())
        steps.broken.clear()  # the cause was fixed
        instance = await runner.retry("steps", "o-1")
        assert (instance.status, instance.state["events"]) == (
            "active",
            ["placed", "pack", "label"],
        )
        assert [entry.outcome for entry in instance.history] == ["needs_intervention", "retried"]

    async def test_a_retry_that_fails_again_keeps_the_instance_waiting(
        self, storage: Storage
    ) -> None:
        steps = _Steps()
        runner = self.steps_runner(storage, steps)
        await self.failed_at(runner, steps, "pack")
        instance = await runner.retry("steps", "o-1")
        assert instance.status == "needs_intervention"
        assert instance.state["events"] == ["placed"]

    async def test_resolve_records_the_note_and_goes_on_past_the_failed_event(
        self, storage: Storage
    ) -> None:
        steps = _Steps()
        runner = self.steps_runner(storage, steps)
        await self.failed_at(runner, steps, "pack")
        await runner.handle(StepTaken("o-1", "label"), event_id=uuid.uuid4())
        instance = await runner.resolve("steps", "o-1", note="packed by hand")
        assert (instance.status, instance.state["events"]) == ("active", ["placed", "label"])
        assert instance.history[-1].outcome == "resolved"
        assert instance.history[-1].note == "packed by hand"

    async def test_pending_interventions_lists_only_the_instances_needing_a_person(
        self, storage: Storage
    ) -> None:
        steps = _Steps()
        runner = self.steps_runner(storage, steps)
        await self.failed_at(runner, steps, "pack", order_id="o-1")
        await runner.handle(OrderPlaced("o-2", 30), event_id=uuid.uuid4())
        assert [i.key for i in await runner.pending_interventions()] == ["o-1"]

    async def test_retrying_an_instance_that_needs_no_intervention_is_refused(
        self, storage: Storage
    ) -> None:
        steps = _Steps()
        runner = self.steps_runner(storage, steps)
        await runner.handle(OrderPlaced("o-1", 30), event_id=uuid.uuid4())
        with pytest.raises(InvalidStateError, match="not waiting for intervention"):
            await runner.retry("steps", "o-1")

    async def commands(self, storage: Storage) -> list[str]:
        """The commands the handlers recorded (committed ones only)."""
        keys = ("RequestPayment-o-1", "ShipOrder-o-1", "CancelOrder-o-1")
        async with storage.transaction() as session:
            return [key for key in keys if await session.load_document(COMMANDS, key) is not None]

    async def test_an_event_starts_an_instance_whose_commands_commit_with_its_state(
        self, storage: Storage
    ) -> None:
        runner = self.runner(storage)
        await runner.handle(OrderPlaced("o-1", 30), event_id=uuid.uuid4())
        instance = await runner.get("fulfilment", "o-1")
        assert instance is not None
        assert (instance.state["status"], instance.handled) == ("awaiting payment", 1)
        assert await self.commands(storage) == ["RequestPayment-o-1"]
        [timeout] = await schedule_store_for(storage).pending()
        assert (timeout.name, timeout.due_at) == ("ProcessPaymentTimedOut", T0 + PAYMENT_WINDOW)

    async def test_an_event_delivered_twice_is_applied_once(self, storage: Storage) -> None:
        runner, placed = self.runner(storage), uuid.uuid4()
        await runner.handle(OrderPlaced("o-1", 30), event_id=placed)
        await runner.handle(OrderPlaced("o-1", 30), event_id=placed)
        instance = await runner.get("fulfilment", "o-1")
        assert instance is not None
        assert (instance.state["events"], instance.handled) == (["placed"], 1)

    async def test_a_failing_command_leaves_neither_the_state_nor_any_effect(
        self, storage: Storage
    ) -> None:
        runner = self.runner(storage, failing=RequestPayment)
        with pytest.raises(Exception, match="the shop is closed"):
            await runner.handle(OrderPlaced("o-1", 30), event_id=uuid.uuid4())
        assert await runner.get("fulfilment", "o-1") is None
        assert await self.commands(storage) == []
        assert await schedule_store_for(storage).pending() == []

    async def test_an_event_of_no_instance_starts_nothing(self, storage: Storage) -> None:
        runner = self.runner(storage)
        await runner.handle(PaymentReceived("o-1"), event_id=uuid.uuid4())
        assert await runner.get("fulfilment", "o-1") is None
        assert await self.commands(storage) == []

    async def test_a_payment_timeout_the_process_scheduled_cancels_the_order(
        self, storage: Storage
    ) -> None:
        runner, store = self.runner(storage), schedule_store_for(storage)
        await runner.handle(OrderPlaced("o-1", 30), event_id=uuid.uuid4())
        clock = [T0 + PAYMENT_WINDOW]
        scheduler = Scheduler(store, runner.handle_scheduled, clock=lambda: clock[0])
        assert await scheduler.fire_due() == 1
        instance = await runner.get("fulfilment", "o-1")
        assert instance is not None
        assert (instance.state["status"], instance.completed) == ("cancelled", True)
        assert await self.commands(storage) == ["RequestPayment-o-1", "CancelOrder-o-1"]
        # A payment arriving after the timeout finds the instance completed.
        await runner.handle(PaymentReceived("o-1"), event_id=uuid.uuid4())
        assert "ShipOrder-o-1" not in await self.commands(storage)

    async def test_a_payment_in_time_ships_and_cancels_the_timeout(self, storage: Storage) -> None:
        runner, store = self.runner(storage), schedule_store_for(storage)
        await runner.handle(OrderPlaced("o-1", 30), event_id=uuid.uuid4())
        await runner.handle(PaymentReceived("o-1"), event_id=uuid.uuid4())
        instance = await runner.get("fulfilment", "o-1")
        assert instance is not None
        assert instance.state["status"] == "shipped"
        assert await store.pending() == []
        assert await self.commands(storage) == ["RequestPayment-o-1", "ShipOrder-o-1"]

    async def test_two_workers_never_run_one_instances_reactions_at_once(
        self, storage: Storage
    ) -> None:
        active, most = [0], [0]

        async def watched(state: Fulfilment, event: Any, context: ProcessContext) -> Fulfilment:
            active[0] += 1
            most[0] = max(most[0], active[0])
            await asyncio.sleep(0.01)  # widen the window another worker could enter in
            active[0] -= 1
            return Fulfilment(state.order_id, state.status, [*state.events, event.order_id])

        process = ProcessManager(
            "fulfilment",
            Fulfilment,
            Fulfilment,
            [Reaction(OrderPlaced, lambda e: "same", watched, starts=True)],
        )
        first, second = self.runner(storage), self.runner(storage)
        first._processes = second._processes = {"fulfilment": process}
        events = [OrderPlaced(f"o-{n}", n) for n in range(20)]
        await asyncio.gather(
            *(
                (first if n % 2 else second).handle(event, event_id=uuid.uuid4())
                for n, event in enumerate(events)
            )
        )
        instance = await first.get("fulfilment", "same")
        assert instance is not None
        assert most[0] == 1
        assert sorted(instance.state["events"]) == sorted(e.order_id for e in events)
        assert instance.handled == len(events)

    async def test_a_process_fed_from_the_log_applies_each_event_once(
        self, storage: Storage
    ) -> None:
        runner = self.runner(storage)
        registry = EventRegistry([OrderPlaced, PaymentReceived, PaymentTimedOut])
        records = []
        for event in (OrderPlaced("o-1", 30), PaymentReceived("o-1")):
            encoded = registry.encode(event)
            records.append(
                EventRecord(
                    uuid.uuid4(), encoded.type_name, encoded.schema_version, encoded.data, T0
                )
            )
        async with storage.transaction() as session:
            await session.append("order-o-1", records, expected_version=0)
        assert await runner.follow_log() == 2
        assert await runner.follow_log() == 0  # past its checkpoint
        instance = await runner.get("fulfilment", "o-1")
        assert instance is not None
        assert (instance.state["status"], instance.handled) == ("shipped", 2)
        assert await self.commands(storage) == ["RequestPayment-o-1", "ShipOrder-o-1"]
