"""Decider: decide and evolve as pure functions, folded over history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from eventfold import Decider, InvalidStateError


@dataclass(frozen=True)
class Deposit:
    amount: int


@dataclass(frozen=True)
class Withdraw:
    amount: int


@dataclass(frozen=True)
class Deposited:
    amount: int


@dataclass(frozen=True)
class Withdrawn:
    amount: int


Command = Deposit | Withdraw
Event = Deposited | Withdrawn


def decide(command: Command, balance: int) -> Sequence[Event]:
    if isinstance(command, Deposit):
        return [Deposited(command.amount)]
    if command.amount > balance:
        raise InvalidStateError(f"balance {balance} is below {command.amount}")
    return [Withdrawn(command.amount)]


def evolve(balance: int, event: Event) -> int:
    return balance + event.amount if isinstance(event, Deposited) else balance - event.amount


account: Decider[Command, int, Event] = Decider(decide, evolve, lambda: 0)


def test_folding_no_events_gives_the_initial_state() -> None:
    assert account.fold([]) == 0


def test_folding_applies_events_in_order() -> None:
    assert account.fold([Deposited(10), Withdrawn(3), Deposited(1)]) == 8


def test_folding_continues_from_a_given_state() -> None:
    assert account.fold([Withdrawn(3)], 10) == 7


def test_decide_turns_a_command_into_events() -> None:
    assert account.decide(Withdraw(4), account.fold([Deposited(5)])) == [Withdrawn(4)]


def test_decide_refuses_a_command_the_state_does_not_allow() -> None:
    with pytest.raises(InvalidStateError, match="balance 0 is below 4"):
        account.decide(Withdraw(4), account.fold([]))
