"""The saga contract: what the saga orchestrator does on every storage.

Subclass :class:`SagaContract` and provide a ``storage`` fixture (a fresh storage with
its schema).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from eventfold.adapters.scheduling import schedule_store_for
from eventfold.application.messaging.outbox import RetryPolicy
from eventfold.application.messaging.sagas import (
    Saga,
    SagaOrchestrator,
    SagaStarter,
    SagaState,
    SagaStatus,
    Step,
    StepContext,
)
from eventfold.application.messaging.scheduler import Scheduler
from eventfold.domain.errors import InvalidStateError
from eventfold.ports.storage import Storage
from eventfold.testing.sagas import ALWAYS, SagaScenario, SimulatedCrash, StepRecorder

__all__ = ["SagaContract"]

RETRY = RetryPolicy(max_attempts=3, initial=0, maximum=0, jitter=0)


@dataclass
class Order:
    """The data the test sagas carry from step to step."""

    order_id: str
    charge_id: str | None = None


@dataclass(frozen=True)
class OrderPlaced:
    """An event that starts a saga."""

    event_id: str
    order_id: str


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class _LoadsTogether(SagaOrchestrator):
    """A worker whose first load waits at ``barrier``: racing workers load the same version."""

    def __init__(self, storage: Storage, saga: Saga[Order]) -> None:
        super().__init__(storage, [saga])
        self._barrier: asyncio.Barrier | None = None

    def arm(self, barrier: asyncio.Barrier) -> None:
        """Make the next load wait at ``barrier``."""
        self._barrier = barrier

    async def get(self, saga_id: str) -> SagaState | None:
        state = await super().get(saga_id)
        barrier, self._barrier = self._barrier, None
        if barrier is not None:
            await barrier.wait()
        return state


PAYMENT_WINDOW = timedelta(minutes=15)


def _order_saga(recorder: StepRecorder) -> Saga[Order]:
    """Order, payment (waiting for it, 15 minutes at most), inventory, confirmation."""
    payment = recorder.step("payment")
    steps = [
        recorder.step("place"),
        Step(
            "payment",
            payment.action,
            payment.compensate,
            wait_for="PaymentReceived",
            timeout=PAYMENT_WINDOW,
        ),
        recorder.step("reserve"),
        recorder.step("confirm"),
    ]
    return Saga("order", Order, steps, retry=RETRY)


def _saga(recorder: StepRecorder, *steps: Step[Order]) -> Saga[Order]:
    chosen = steps or tuple(recorder.step(name) for name in ("reserve", "charge", "ship"))
    return Saga("place-order", Order, list(chosen), retry=RETRY)


class SagaContract:
    """Tests the saga orchestrator must pass on every backend."""

    async def test_a_saga_runs_its_steps_in_order_and_completes(self, storage: Storage) -> None:
        recorder = StepRecorder()
        saga = _saga(recorder)
        state = await SagaOrchestrator(storage, [saga]).start(saga, Order("o-1"))
        assert state.status is SagaStatus.COMPLETED
        assert recorder.done == ["reserve", "charge", "ship"]
        assert recorder.undone == []
        assert [entry.outcome for entry in state.history] == ["completed"] * 3

    async def test_the_data_an_action_returns_is_saved_for_the_next_steps(
        self, storage: Storage
    ) -> None:
        seen: list[str | None] = []

        async def charge(order: Order, context: StepContext) -> Order:
            return Order(order.order_id, charge_id=f"ch-{context.idempotency_key}")

        async def ship(order: Order, context: StepContext) -> None:
            seen.append(order.charge_id)

        saga = Saga("place-order", Order, [Step("charge", charge), Step("ship", ship)])
        orchestrator = SagaOrchestrator(storage, [saga])
        state = await orchestrator.start(saga, Order("o-1"), saga_id="s-1")
        assert seen == ["ch-s-1/charge"]
        stored = await orchestrator.get("s-1")
        assert stored is not None
        assert saga.data_of(stored) == Order("o-1", "ch-s-1/charge") == saga.data_of(state)

    async def test_a_step_that_keeps_failing_compensates_the_done_steps_last_first(
        self, storage: Storage
    ) -> None:
        recorder = StepRecorder()
        steps = [
            recorder.step("reserve"),
            recorder.step("charge"),
            recorder.step("ship", fail=ALWAYS),
        ]
        saga = _saga(recorder, *steps)
        state = await SagaOrchestrator(storage, [saga]).start(saga, Order("o-1"))
        assert state.status is SagaStatus.COMPENSATED
        assert recorder.done == ["reserve", "charge"]
        assert recorder.undone == ["charge", "reserve"]
        assert recorder.calls["ship"] == RETRY.max_attempts
        assert state.failed_step == "ship"
        assert state.last_error is not None
        assert "ship failed" in state.last_error
        assert state.completed == ()

    async def test_a_failing_step_is_retried_and_the_saga_completes(self, storage: Storage) -> None:
        recorder = StepRecorder()
        saga = _saga(recorder, recorder.step("reserve"), recorder.step("charge", fail=2))
        state = await SagaOrchestrator(storage, [saga]).start(saga, Order("o-1"), saga_id="s-1")
        assert state.status is SagaStatus.COMPLETED
        assert recorder.calls["charge"] == 3
        assert recorder.undone == []
        outcomes = [(entry.step, entry.outcome, entry.attempt) for entry in state.history]
        assert outcomes == [
            ("reserve", "completed", 1),
            ("charge", "failed", 1),
            ("charge", "failed", 2),
            ("charge", "completed", 3),
        ]
        assert recorder.keys[1:] == ["s-1/charge"] * 3

    async def test_a_refusal_compensates_at_once_without_retries(self, storage: Storage) -> None:
        recorder = StepRecorder()
        steps = [recorder.step("reserve"), recorder.step("charge", refuse=ALWAYS)]
        saga = _saga(recorder, *steps)
        state = await SagaOrchestrator(storage, [saga]).start(saga, Order("o-1"))
        assert state.status is SagaStatus.COMPENSATED
        assert recorder.calls["charge"] == 1
        assert recorder.undone == ["reserve"]
        assert [(e.step, e.outcome) for e in state.history][1] == ("charge", "refused")
        assert state.last_error is not None
        assert "charge refused" in state.last_error

    async def test_an_error_type_a_step_lists_as_a_refusal_is_not_retried(
        self, storage: Storage
    ) -> None:
        recorder = StepRecorder()

        async def reserve(data: Order, context: StepContext) -> None:
            recorder.calls["reserve"] += 1
            raise LookupError("out of stock")

        step = Step("reserve", reserve, refusals=(LookupError,))
        saga = _saga(recorder, recorder.step("charge"), step)
        state = await SagaOrchestrator(storage, [saga]).start(saga, Order("o-1"))
        assert (state.status, recorder.calls["reserve"]) == (SagaStatus.COMPENSATED, 1)
        assert recorder.undone == ["charge"]

    async def test_a_fault_is_retried_as_often_as_its_steps_own_policy_says(
        self, storage: Storage
    ) -> None:
        recorder = StepRecorder()
        patient = RetryPolicy(max_attempts=5, initial=0, maximum=0, jitter=0)
        steps = [recorder.step("reserve", fail=4, retry=patient), recorder.step("charge", fail=4)]
        saga = _saga(recorder, *steps)
        state = await SagaOrchestrator(storage, [saga]).start(saga, Order("o-1"))
        # reserve's own policy allows 5 attempts; charge has the saga's 3.
        assert (recorder.calls["reserve"], recorder.calls["charge"]) == (5, RETRY.max_attempts)
        assert state.status is SagaStatus.COMPENSATED
        assert recorder.undone == ["reserve"]

    async def test_a_compensation_that_keeps_failing_waits_for_an_operator_to_resolve_it(
        self, storage: Storage
    ) -> None:
        recorder = StepRecorder()
        steps = [
            recorder.step("reserve"),
            recorder.step("charge", undo_fail=ALWAYS),
            recorder.step("ship", fail=ALWAYS),
        ]
        saga = _saga(recorder, *steps)
        orchestrator = SagaOrchestrator(storage, [saga])
        state = await orchestrator.start(saga, Order("o-1"), saga_id="s-1")
        assert state.status is SagaStatus.NEEDS_INTERVENTION
        assert recorder.undone == []  # reserve waits until charge is undone
        assert state.completed == ("reserve", "charge")
        assert state.last_error is not None
        assert "undo charge failed" in state.last_error
        pending = await orchestrator.pending_interventions()
        assert [(p.saga_id, p.status) for p in pending] == [("s-1", SagaStatus.NEEDS_INTERVENTION)]

        resolved = await orchestrator.resolve("s-1", note="refunded by hand")
        assert resolved.status is SagaStatus.RESOLVED
        assert resolved.history[-1].note == "refunded by hand"
        assert await orchestrator.pending_interventions() == []
        with pytest.raises(InvalidStateError):
            await orchestrator.resolve("s-1", note="again")

    async def test_an_operator_retry_runs_the_remaining_compensations(
        self, storage: Storage
    ) -> None:
        recorder = StepRecorder()
        steps = [
            recorder.step("reserve"),
            recorder.step("charge", undo_fail=RETRY.max_attempts),
            recorder.step("ship", fail=ALWAYS),
        ]
        saga = _saga(recorder, *steps)
        orchestrator = SagaOrchestrator(storage, [saga])
        await orchestrator.start(saga, Order("o-1"), saga_id="s-1")
        state = await orchestrator.retry("s-1")
        assert state.status is SagaStatus.COMPENSATED
        assert recorder.undone == ["charge", "reserve"]
        assert await orchestrator.pending_interventions() == []

    async def test_a_saga_abandoned_mid_step_is_resumed_and_each_step_completes_once(
        self, storage: Storage
    ) -> None:
        recorder = StepRecorder()
        steps = [recorder.step("reserve"), recorder.step("charge", crash=1), recorder.step("ship")]
        saga = _saga(recorder, *steps)
        clock = _Clock()
        lease = timedelta(minutes=5)
        crashed = SagaOrchestrator(storage, [saga], lease=lease, clock=clock)
        with pytest.raises(SimulatedCrash):
            await crashed.start(saga, Order("o-1"), saga_id="s-1")

        worker = SagaOrchestrator(storage, [saga], lease=lease, clock=clock)
        assert await worker.resume_incomplete() == []  # the dead worker's lease still holds
        clock.now += lease + timedelta(seconds=1)
        [state] = await worker.resume_incomplete()
        assert state.status is SagaStatus.COMPLETED
        assert recorder.done == ["reserve", "charge", "ship"]
        assert recorder.calls == {"reserve": 1, "charge": 2, "ship": 1}
        assert await worker.resume_incomplete() == []

    async def test_two_workers_racing_on_one_instance_run_each_step_once(
        self, storage: Storage
    ) -> None:
        recorder = StepRecorder()
        steps = [
            Step(name, recorder.action(name, delay=0.02), compensate=recorder.compensation(name))
            for name in ("reserve", "charge", "ship")
        ]
        saga = _saga(recorder, *steps)
        first, second = SagaOrchestrator(storage, [saga]), SagaOrchestrator(storage, [saga])
        created = await first.create(saga, Order("o-1"), saga_id="s-1")
        assert created.status is SagaStatus.RUNNING
        await asyncio.gather(first.run("s-1"), second.run("s-1"))
        state = await first.get("s-1")
        assert state is not None
        assert state.status is SagaStatus.COMPLETED
        assert recorder.done == ["reserve", "charge", "ship"]
        assert recorder.calls == {"reserve": 1, "charge": 1, "ship": 1}

    async def test_of_two_workers_claiming_the_same_version_one_backs_off(
        self, storage: Storage
    ) -> None:
        recorder = StepRecorder()
        saga = _saga(recorder)
        first, second = _LoadsTogether(storage, saga), _LoadsTogether(storage, saga)
        await first.create(saga, Order("o-1"), saga_id="s-1")
        barrier = asyncio.Barrier(2)
        first.arm(barrier)
        second.arm(barrier)
        results = await asyncio.gather(first.run("s-1"), second.run("s-1"))
        # Both loaded version 1 and tried to claim it: the loser backed off at once and
        # returned the instance as it then stood, running or already completed.
        assert {state.status for state in results} <= {SagaStatus.RUNNING, SagaStatus.COMPLETED}
        final = await first.get("s-1")
        assert final is not None
        assert final.status is SagaStatus.COMPLETED
        assert [entry.outcome for entry in final.history] == ["completed"] * 3
        assert recorder.calls == {"reserve": 1, "charge": 1, "ship": 1}

    async def test_an_event_starts_its_saga_once_however_often_it_is_delivered(
        self, storage: Storage
    ) -> None:
        recorder = StepRecorder()
        saga = _saga(recorder)
        orchestrator = SagaOrchestrator(storage, [saga])
        starter: SagaStarter[OrderPlaced, Order] = SagaStarter(
            orchestrator, saga, data=lambda e: Order(e.order_id), key=lambda e: e.event_id
        )
        event = OrderPlaced("e-1", "o-1")
        await starter.handle(event)
        await starter.handle(event)
        state = await orchestrator.get(starter.saga_id(event))
        assert state is not None
        assert state.status is SagaStatus.COMPLETED
        assert recorder.done == ["reserve", "charge", "ship"]

    async def test_a_scenario_asserts_the_compensations_of_a_failing_step(
        self, storage: Storage
    ) -> None:
        recorder = StepRecorder()
        saga = _saga(recorder)
        scenario = SagaScenario(saga, storage).given(Order("o-1")).when_failing("charge")
        state = await scenario.then(SagaStatus.COMPENSATED, done=["reserve"], undone=["reserve"])
        assert state.failed_step == "charge"

    async def test_a_scenario_asserts_that_a_refusal_compensates_without_retries(
        self, storage: Storage
    ) -> None:
        recorder = StepRecorder()
        saga = _saga(recorder)
        scenario = SagaScenario(saga, storage).given(Order("o-1")).when_refusing("ship")
        await scenario.then(
            SagaStatus.COMPENSATED, done=["reserve", "charge"], undone=["charge", "reserve"]
        )
        assert scenario.recorder.calls["ship"] == 1

    async def test_a_payment_timeout_compensates_the_order(self, storage: Storage) -> None:
        recorder, clock = StepRecorder(), _Clock()
        store = schedule_store_for(storage)
        saga = _order_saga(recorder)
        orchestrator = SagaOrchestrator(storage, [saga], clock=clock, schedules=store)
        state = await orchestrator.start(saga, Order("o-1"), saga_id="order-o-1")
        assert (state.status, state.waiting_for) == (SagaStatus.WAITING, "PaymentReceived")
        scheduler = Scheduler(store, orchestrator.handle_scheduled, clock=clock)
        clock.now += PAYMENT_WINDOW - timedelta(seconds=1)
        assert await scheduler.fire_due() == 0
        clock.now += timedelta(seconds=1)
        assert await scheduler.fire_due() == 1
        ended = await orchestrator.get("order-o-1")
        assert ended is not None
        assert ended.status is SagaStatus.COMPENSATED
        assert recorder.done == ["place", "payment"]
        assert recorder.undone == ["payment", "place"]
        assert ended.last_error == "timed out waiting for PaymentReceived"

    async def test_a_payment_in_time_runs_the_order_on_and_cancels_its_timeout(
        self, storage: Storage
    ) -> None:
        recorder, clock = StepRecorder(), _Clock()
        store = schedule_store_for(storage)
        saga = _order_saga(recorder)
        orchestrator = SagaOrchestrator(storage, [saga], clock=clock, schedules=store)
        await orchestrator.start(saga, Order("o-1"), saga_id="order-o-1")

        def paid(order: Order) -> Order:
            order.charge_id = "ch-1"
            return order

        state = await orchestrator.signal("order-o-1", "PaymentReceived", update=paid)
        assert state.status is SagaStatus.COMPLETED
        assert recorder.done == ["place", "payment", "reserve", "confirm"]
        assert saga.data_of(state).charge_id == "ch-1"
        assert await store.pending() == []
        clock.now += PAYMENT_WINDOW * 2
        late = await orchestrator.time_out("order-o-1", "payment")
        assert (late.status, recorder.undone) == (SagaStatus.COMPLETED, [])

    async def test_an_answer_after_the_timeout_changes_nothing(self, storage: Storage) -> None:
        recorder, clock = StepRecorder(), _Clock()
        store = schedule_store_for(storage)
        saga = _order_saga(recorder)
        orchestrator = SagaOrchestrator(storage, [saga], clock=clock, schedules=store)
        await orchestrator.start(saga, Order("o-1"), saga_id="order-o-1")
        await orchestrator.time_out("order-o-1", "payment")
        state = await orchestrator.signal("order-o-1", "PaymentReceived")
        assert state.status is SagaStatus.COMPENSATED
        assert recorder.done == ["place", "payment"]

    async def test_a_step_schedules_its_messages_with_its_outcome_once(
        self, storage: Storage
    ) -> None:
        recorder, clock = StepRecorder(), _Clock()
        store = schedule_store_for(storage)

        async def remind(data: Order, context: StepContext) -> None:
            context.schedule("RemindCustomer", {"order": data.order_id}, due_at=clock.now)
            await recorder.record_call("remind", context, fail=1, crash=0, delay=0)

        saga = _saga(recorder, Step("remind", remind))
        orchestrator = SagaOrchestrator(storage, [saga], clock=clock, schedules=store)
        await orchestrator.start(saga, Order("o-1"), saga_id="s-1")
        [message] = await store.pending(key="s-1")
        assert (message.name, message.schedule_id) == (
            "RemindCustomer",
            "s-1/remind/RemindCustomer",
        )

    async def test_an_instance_that_comes_to_need_a_person_raises_the_alert_once(
        self, storage: Storage
    ) -> None:
        recorder, alerts = StepRecorder(), []

        async def page(state: SagaState) -> None:
            alerts.append((state.saga_id, state.status))
            raise RuntimeError("the pager is down too")  # must not undo anything

        steps = [recorder.step("reserve", undo_fail=ALWAYS), recorder.step("charge", fail=ALWAYS)]
        saga = _saga(recorder, *steps)
        orchestrator = SagaOrchestrator(storage, [saga], on_intervention=page)
        state = await orchestrator.start(saga, Order("o-1"), saga_id="s-1")
        assert state.status is SagaStatus.NEEDS_INTERVENTION
        assert alerts == [("s-1", SagaStatus.NEEDS_INTERVENTION)]
        assert [s.saga_id for s in await orchestrator.pending_interventions()] == ["s-1"]
