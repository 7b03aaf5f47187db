"""Given / when / then helpers for aggregates and deciders."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from eventfold.domain.aggregate import AggregateRoot
from eventfold.domain.decider import Decider

__all__ = ["AggregateScenario", "DeciderScenario"]

A = TypeVar("A", bound=AggregateRoot[Any, Any])
C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")


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


def _diff(expected: Sequence[object], actual: Sequence[object]) -> str:
    return f"expected events {expected!r}\n     got events {actual!r}"
