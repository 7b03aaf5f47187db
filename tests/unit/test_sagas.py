"""Saga definitions and the orchestrator's bookkeeping, on the in-memory storage."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from eventfold import (
    ConfigurationError,
    EntityNotFoundError,
    InvalidStateError,
    RetryPolicy,
    Saga,
    SagaOrchestrator,
    SagaStatus,
    Step,
)
from eventfold.adapters.memory import create_memory_storage
from eventfold.testing import SagaScenario, StepRecorder
from eventfold.testing.sagas import ALWAYS

INSTANT = RetryPolicy(max_attempts=2, initial=0, maximum=0, jitter=0)


@dataclass
class Trip:
    city: str


def _saga(name: str, recorder: StepRecorder, *steps: Step[Trip]) -> Saga[Trip]:
    chosen = steps or (recorder.step("flight"), recorder.step("hotel"))
    return Saga(name, Trip, list(chosen), retry=INSTANT)


def test_a_saga_refuses_duplicate_step_names() -> None:
    recorder = StepRecorder()
    with pytest.raises(ConfigurationError, match="unique step names"):
        Saga("trip", Trip, [recorder.step("flight"), recorder.step("flight")])


def test_a_saga_needs_a_step() -> None:
    with pytest.raises(ConfigurationError):
        Saga("trip", Trip, [])


async def test_an_orchestrator_refuses_a_saga_it_does_not_know() -> None:
    recorder = StepRecorder()
    orchestrator = SagaOrchestrator(create_memory_storage(), [_saga("trip", recorder)])
    with pytest.raises(ConfigurationError, match="not registered"):
        await orchestrator.start(_saga("other", recorder), Trip("Oslo"))


async def test_starting_the_same_saga_id_twice_runs_it_once() -> None:
    recorder = StepRecorder()
    saga = _saga("trip", recorder)
    orchestrator = SagaOrchestrator(create_memory_storage(), [saga])
    await orchestrator.start(saga, Trip("Oslo"), saga_id="t-1")
    again = await orchestrator.start(saga, Trip("Rome"), saga_id="t-1")
    assert saga.data_of(again) == Trip("Oslo")
    assert recorder.done == ["flight", "hotel"]


async def test_compensations_get_their_own_idempotency_keys() -> None:
    recorder = StepRecorder()
    saga = _saga("trip", recorder, recorder.step("flight"), recorder.step("hotel", fail=ALWAYS))
    await SagaOrchestrator(create_memory_storage(), [saga]).start(saga, Trip("Oslo"), saga_id="t")
    assert recorder.keys == ["t/flight", "t/hotel", "t/hotel", "t/flight/compensate"]


async def test_a_step_without_compensation_is_skipped_when_compensating() -> None:
    recorder = StepRecorder()
    steps = (Step("quote", recorder.action("quote")), recorder.step("book", fail=ALWAYS))
    saga = _saga("trip", recorder, *steps)
    state = await SagaOrchestrator(create_memory_storage(), [saga]).start(saga, Trip("Oslo"))
    assert state.status is SagaStatus.COMPENSATED
    assert ("quote", "nothing to compensate") in [(e.step, e.outcome) for e in state.history]


async def test_resume_leaves_the_instances_of_other_sagas_alone() -> None:
    storage = create_memory_storage()
    recorder = StepRecorder()
    trip, other = _saga("trip", recorder), _saga("other", recorder)
    await SagaOrchestrator(storage, [other]).create(other, Trip("Oslo"), saga_id="o-1")
    assert await SagaOrchestrator(storage, [trip]).resume_incomplete() == []
    assert recorder.done == []


async def test_only_an_instance_waiting_for_an_operator_can_be_retried_or_resolved() -> None:
    recorder = StepRecorder()
    saga = _saga("trip", recorder)
    orchestrator = SagaOrchestrator(create_memory_storage(), [saga])
    await orchestrator.start(saga, Trip("Oslo"), saga_id="t-1")
    with pytest.raises(InvalidStateError):
        await orchestrator.retry("t-1")
    with pytest.raises(EntityNotFoundError):
        await orchestrator.resolve("missing", note="-")


async def test_a_scenario_reports_a_compensation_left_for_an_operator() -> None:
    recorder = StepRecorder()
    saga = _saga("trip", recorder)
    scenario = SagaScenario(saga, create_memory_storage()).given(Trip("Oslo"))
    await scenario.when_failing("hotel", "undo flight").then(
        SagaStatus.NEEDS_INTERVENTION, done=["flight"], undone=[]
    )
