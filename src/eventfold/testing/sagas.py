"""Test helpers for sagas: recording fake steps and a given / when / then scenario."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from eventfold.application.messaging.outbox import RetryPolicy
from eventfold.application.messaging.sagas import (
    Compensation,
    Saga,
    SagaOrchestrator,
    SagaState,
    SagaStatus,
    Step,
    StepAction,
    StepContext,
    StepRefusedError,
)
from eventfold.ports.storage import Storage

__all__ = [
    "ALWAYS",
    "SagaScenario",
    "ScriptedStepError",
    "SimulatedCrash",
    "StepRecorder",
    "instant_retries",
]

D = TypeVar("D")

ALWAYS = sys.maxsize
"""Fail on every call."""


class ScriptedStepError(Exception):
    """What a fake step raises when told to fail."""


class SimulatedCrash(BaseException):
    """Raised through the orchestrator as a killed worker would stop: nothing catches it."""


def instant_retries(policy: RetryPolicy) -> RetryPolicy:
    """``policy``'s number of attempts with no wait between them."""
    return RetryPolicy(max_attempts=policy.max_attempts, initial=0, maximum=0, jitter=0)


class StepRecorder:
    """Fake actions and compensations that record what completed and fail on demand."""

    def __init__(self) -> None:
        self.done: list[str] = []
        """Actions that completed, in order."""
        self.undone: list[str] = []
        """Compensations that completed, in order."""
        self.calls: Counter[str] = Counter()
        """Calls per action name and per ``undo <name>`` (failed ones included)."""
        self.keys: list[str] = []
        """The idempotency key of every call."""

    def action(
        self, name: str, *, fail: int = 0, crash: int = 0, delay: float = 0.0, refuse: int = 0
    ) -> StepAction[Any]:
        """An action that crashes ``crash`` times, fails ``fail`` times, refuses ``refuse``
        times (:class:`StepRefusedError`), then works."""

        async def act(data: Any, context: StepContext) -> None:
            await self.record_call(
                name, context, fail=fail, crash=crash, delay=delay, refuse=refuse
            )
            self.done.append(name)

        return act

    def compensation(self, name: str, *, fail: int = 0, delay: float = 0.0) -> Compensation[Any]:
        """A compensation that fails ``fail`` times, then works."""

        async def undo(data: Any, context: StepContext) -> None:
            await self.record_call(f"undo {name}", context, fail=fail, crash=0, delay=delay)
            self.undone.append(name)

        return undo

    def step(
        self,
        name: str,
        *,
        fail: int = 0,
        crash: int = 0,
        undo_fail: int = 0,
        refuse: int = 0,
        retry: RetryPolicy | None = None,
    ) -> Step[Any]:
        """A step of a recorded action and a recorded compensation."""
        return Step(
            name,
            self.action(name, fail=fail, crash=crash, refuse=refuse),
            compensate=self.compensation(name, fail=undo_fail),
            retry=retry,
        )

    async def record_call(
        self,
        name: str,
        context: StepContext,
        *,
        fail: int,
        crash: int,
        delay: float,
        refuse: int = 0,
    ) -> None:
        """Count a call of ``name``; crash ``crash`` times, fail ``fail`` times, then refuse
        ``refuse`` times."""
        self.calls[name] += 1
        self.keys.append(context.idempotency_key)
        if delay:
            await asyncio.sleep(delay)
        count = self.calls[name]
        if count <= crash:
            raise SimulatedCrash(name)
        if count <= crash + fail:
            raise ScriptedStepError(f"{name} failed (call {count})")
        if count <= crash + fail + refuse:
            raise StepRefusedError(f"{name} refused (call {count})")


class SagaScenario(Generic[D]):
    """``await SagaScenario(saga, storage).given(data).when_failing("charge").then(...)``.

    Runs the saga's own actions, except that the steps named in ``when_failing`` raise
    :class:`ScriptedStepError` (a fault) and those in ``when_refusing`` raise
    :class:`StepRefusedError` (a business refusal) instead, with no wait between retries;
    ``then`` asserts the final status and which actions and compensations completed, in
    order.
    """

    def __init__(self, saga: Saga[D], storage: Storage) -> None:
        self._saga = saga
        self._storage = storage
        self._data: D | None = None
        self._failing: dict[str, int] = {}
        self._refusing: dict[str, int] = {}
        self.recorder = StepRecorder()

    def given(self, data: D) -> SagaScenario[D]:
        """The data the instance starts with."""
        self._data = data
        return self

    def when_failing(self, *steps: str, times: int = ALWAYS) -> SagaScenario[D]:
        """Make these actions (or ``undo <step>`` compensations) fail ``times`` times."""
        self._failing.update(dict.fromkeys(steps, times))
        return self

    def when_refusing(self, *steps: str, times: int = ALWAYS) -> SagaScenario[D]:
        """Make these actions refuse (:class:`StepRefusedError`) ``times`` times."""
        self._refusing.update(dict.fromkeys(steps, times))
        return self

    async def run(self) -> SagaState:
        """Run the instance to its end; return its final state."""
        assert self._data is not None, "call given(data) first"
        saga = Saga(
            self._saga.name,
            self._saga.data_type,
            [self._wrap(step) for step in self._saga.steps],
            retry=instant_retries(self._saga.retry),
        )
        return await SagaOrchestrator(self._storage, [saga]).start(saga, self._data)

    async def then(
        self,
        status: SagaStatus,
        *,
        done: list[str] | None = None,
        undone: list[str] | None = None,
    ) -> SagaState:
        """Run, then assert the status and the completed actions and compensations."""
        state = await self.run()
        assert state.status is status, f"status {state.status}, expected {status}"
        if done is not None:
            assert self.recorder.done == done, f"done {self.recorder.done}, expected {done}"
        if undone is not None:
            assert self.recorder.undone == undone, (
                f"undone {self.recorder.undone}, expected {undone}"
            )
        return state

    def _wrap(self, step: Step[D]) -> Step[D]:
        own = self._saga.retry_for(step)
        compensate = step.compensate
        return Step(
            step.name,
            self._around(step.name, step.action, self.recorder.done),
            compensate=None
            if compensate is None
            else self._around(f"undo {step.name}", _returning(compensate), self.recorder.undone),
            retry=instant_retries(own),
            refusals=step.refusals,
        )

    def _around(
        self, name: str, call: StepAction[D], completed: list[str]
    ) -> Callable[[D, StepContext], Awaitable[Any]]:
        async def run(data: D, context: StepContext) -> Any:
            await self.recorder.record_call(
                name,
                context,
                fail=self._failing.get(name, 0),
                crash=0,
                delay=0.0,
                refuse=self._refusing.get(name, 0),
            )
            result = await call(data, context)
            completed.append(context.step)
            return result

        return run


def _returning(compensation: Compensation[D]) -> StepAction[D]:
    async def call(data: D, context: StepContext) -> None:
        await compensation(data, context)

    return call
