"""Given / when / then helpers: they pass on the right expectation and fail on a wrong one."""

from __future__ import annotations

import pytest

from eventfold import InvalidStateError, RuleViolationError
from eventfold.testing import AggregateScenario, DeciderScenario
from tests.unit.test_domain_aggregate import ItemAdded, Order, OrderPlaced
from tests.unit.test_domain_decider import Deposit, Deposited, Withdraw, Withdrawn, account


def test_an_aggregate_scenario_returns_the_aggregate_when_the_events_match() -> None:
    order = (
        AggregateScenario(Order, "o-1")
        .given(OrderPlaced("o-1", "ada"))
        .when(lambda o: o.add("a", 2))
        .then(ItemAdded("a", 2))
    )
    assert order.state.items == {"a": 2}


def test_an_aggregate_scenario_fails_when_the_events_differ() -> None:
    scenario = AggregateScenario(Order, "o-1").given(OrderPlaced("o-1", "ada"))
    with pytest.raises(AssertionError, match="expected events"):
        scenario.when(lambda o: o.add("a", 2)).then(ItemAdded("a", 3))


def test_an_aggregate_scenario_fails_when_an_extra_event_was_recorded() -> None:
    scenario = AggregateScenario(Order, "o-1").when(lambda o: o.add("a", 1))
    with pytest.raises(AssertionError):
        scenario.then_nothing()


def test_a_factory_action_puts_the_new_aggregate_under_test() -> None:
    scenario = AggregateScenario(Order, "o-1").when(lambda _: Order.place("o-1", "ada"))
    assert scenario.then(OrderPlaced("o-1", "ada")).state.customer == "ada"


def test_an_aggregate_scenario_passes_on_the_expected_error() -> None:
    scenario = AggregateScenario(Order, "o-1").when(lambda o: o.add("a", 0))
    error = scenario.then_raises(RuleViolationError, match="must be positive")
    assert isinstance(error, RuleViolationError)
    assert error.field == "quantity"


def test_an_aggregate_scenario_fails_when_no_error_is_raised() -> None:
    scenario = AggregateScenario(Order, "o-1").when(lambda o: o.add("a", 1))
    with pytest.raises(AssertionError, match="nothing was raised"):
        scenario.then_raises(InvalidStateError)


def test_an_aggregate_scenario_fails_when_the_error_message_differs() -> None:
    scenario = AggregateScenario(Order, "o-1").when(lambda o: o.add("a", 0))
    with pytest.raises(AssertionError, match="does not match"):
        scenario.then_raises(RuleViolationError, match="out of stock")


def test_a_decider_scenario_returns_the_state_after_the_decision() -> None:
    state = DeciderScenario(account).given(Deposited(5)).when(Withdraw(2)).then(Withdrawn(2))
    assert state == 3


def test_a_decider_scenario_fails_when_the_decision_differs() -> None:
    scenario = DeciderScenario(account).given(Deposited(5)).when(Deposit(1))
    with pytest.raises(AssertionError, match="expected events"):
        scenario.then(Deposited(2))


def test_a_decider_scenario_passes_on_the_expected_error() -> None:
    error = DeciderScenario(account).when(Withdraw(1)).then_raises(InvalidStateError, match="below")
    assert isinstance(error, InvalidStateError)


def test_a_decider_scenario_fails_when_no_error_is_raised() -> None:
    scenario = DeciderScenario(account).given(Deposited(5)).when(Withdraw(1))
    with pytest.raises(AssertionError, match="expected InvalidStateError"):
        scenario.then_raises(InvalidStateError)


def test_a_decider_scenario_without_a_command_fails() -> None:
    with pytest.raises(AssertionError, match="when"):
        DeciderScenario(account).given(Deposited(5)).then()
