"""The decider: a functional aggregate of three pure functions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Generic, TypeVar

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class Decider(Generic[C, S, E]):
    """``decide(command, state) -> events``, ``evolve(state, event) -> state``, ``initial_state``.

    ``decide`` raises a :class:`~eventfold.DomainError` to refuse a command.
    """

    decide: Callable[[C, S], Sequence[E]]
    evolve: Callable[[S, E], S]
    initial_state: Callable[[], S]

    def fold(self, events: Iterable[E], state: S | None = None) -> S:
        """The state after applying ``events`` to ``state`` (or to the initial state)."""
        start = self.initial_state() if state is None else state
        return reduce(self.evolve, events, start)
