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
from eventfold.application.messaging.processes import (
    ProcessContext,
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
