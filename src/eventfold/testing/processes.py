"""Given / when / then for process managers, with no storage, broker or mediator.

``ProcessScenario(process).given(OrderPlaced(...)).when(PaymentReceived(...))`` applies
the events to the process's reactions in memory; ``then(...)`` asserts what the ``when``
events did: the state of the instance, the commands sent, the events scheduled and
cancelled, whether the instance completed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

from eventfold.application.messaging.processes import ProcessContext, ProcessManager

__all__ = ["ProcessOutcome", "ProcessScenario"]

S = TypeVar("S")


@dataclass
class ProcessOutcome(Generic[S]):
    """What the ``when`` events did to one instance."""

    state: S | None = None
    sent: list[object] = field(default_factory=list)
    scheduled: list[tuple[object, datetime]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    completed: bool = False


class ProcessScenario(Generic[S]):
    """Applies events to a process manager's reactions in memory and checks the outcome."""

    def __init__(self, process: ProcessManager[S]) -> None:
        self._process = process
        self._states: dict[str, S] = {}
        self._completed: set[str] = set()
        self._given: list[object] = []
        self._when: list[object] = []

    def given(self, *events: object) -> ProcessScenario[S]:
        """Events that already happened (their commands are not checked)."""
        self._given.extend(events)
        return self

    def when(self, *events: object) -> ProcessScenario[S]:
        """The events whose effects ``then`` checks."""
        self._when.extend(events)
        return self

    async def run(self) -> ProcessOutcome[S]:
        """Apply the given events, then the ``when`` events; the latter's outcome."""
        for event in self._given:
            await self._apply(event, ProcessOutcome())
        outcome: ProcessOutcome[S] = ProcessOutcome()
        for event in self._when:
            await self._apply(event, outcome)
        return outcome

    async def then(
        self,
        *,
        state: S | None = None,
        sent: list[object] | None = None,
        scheduled: list[object] | None = None,
        cancelled: list[str] | None = None,
        completed: bool | None = None,
    ) -> ProcessOutcome[S]:
        """Run, then assert each of the outcome's parts that was given."""
        outcome = await self.run()
        if state is not None:
            assert outcome.state == state, f"state {outcome.state!r}, expected {state!r}"
        if sent is not None:
            assert outcome.sent == sent, f"sent {outcome.sent!r}, expected {sent!r}"
        if scheduled is not None:
            events = [event for event, _ in outcome.scheduled]
            assert events == scheduled, f"scheduled {events!r}, expected {scheduled!r}"
        if cancelled is not None:
            assert outcome.cancelled == cancelled, (
                f"cancelled {outcome.cancelled!r}, expected {cancelled!r}"
            )
        if completed is not None:
            assert outcome.completed is completed, f"completed is {outcome.completed}"
        return outcome

    async def _apply(self, event: object, outcome: ProcessOutcome[S]) -> None:
        reaction = self._process.reaction_to(event)
        if reaction is None:
            return
        key = str(reaction.key(event))
        if key in self._completed or (key not in self._states and not reaction.starts):
            return
        state = self._states.get(key)
        if state is None:
            state = self._process.initial()
        context = ProcessContext(self._process.name, key, uuid.uuid4(), None)
        changed = await reaction.react(state, event, context)
        new_state: S = state if changed is None else changed
        # Through the state's codec, as the runner stores it: a state that does not
        # survive the round trip fails here, not in production.
        self._states[key] = self._process.decode(self._process.encode(new_state))
        outcome.state = self._states[key]
        outcome.sent.extend(context.commands)
        outcome.scheduled.extend((event, due) for _, event, due in context.scheduled)
        outcome.cancelled.extend(context.cancelled)
        if context.completed:
            self._completed.add(key)
            outcome.completed = True
