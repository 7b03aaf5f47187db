"""AggregateRoot: state changed only by applying events, through one dispatch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import singledispatchmethod

import pytest

from eventfold import (
    AggregateRoot,
    ConfigurationError,
    MissingEventHandlerError,
    RuleViolationError,
)


@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    customer: str


@dataclass(frozen=True)
class ItemAdded:
    sku: str
    quantity: int


@dataclass(frozen=True)
class GiftAdded(ItemAdded):
    message: str = ""


@dataclass(frozen=True)
class OrderPaid:
    amount: int


@dataclass(frozen=True)
class OrderShipped:
    carrier: str


@dataclass(frozen=True)
class OrderCancelled:
    reason: str


@dataclass
class OrderState:
    customer: str = ""
    items: dict[str, int] = field(default_factory=dict)
    paid: int = 0
    shipped_by: str = ""

    @singledispatchmethod
    def on(self, event: object) -> None:
        """No handler by default."""

    @on.register
    def _(self, event: OrderPlaced) -> None:
        self.customer = event.customer

    @on.register
    def _(self, event: ItemAdded) -> None:
        self.items[event.sku] = self.items.get(event.sku, 0) + event.quantity

    def apply_OrderPaid(self, event: OrderPaid) -> None:
        self.paid += event.amount


class Order(AggregateRoot[OrderState, str]):
    @classmethod
    def place(cls, order_id: str, customer: str) -> Order:
        order = cls(order_id)
        order.record(OrderPlaced(order_id, customer))
        return order

    def add(self, sku: str, quantity: int) -> None:
        if quantity <= 0:
            raise RuleViolationError("quantity must be positive", field="quantity")
        self.record(ItemAdded(sku, quantity))

    def apply_OrderShipped(self, event: OrderShipped) -> None:
        self.state.shipped_by = event.carrier


@dataclass(frozen=True)
class CounterState:
    count: int = 0

    def apply_ItemAdded(self, event: ItemAdded) -> CounterState:
        return replace(self, count=self.count + event.quantity)


class Counter(AggregateRoot[CounterState, int]):
    def apply_OrderPaid(self, event: OrderPaid) -> CounterState:
        return replace(self.state, count=self.state.count - event.amount)


def test_a_new_aggregate_starts_from_its_state_classes_default() -> None:
    assert Order("o-1").state == OrderState()


def test_the_state_class_comes_from_the_generic_parameter() -> None:
    assert Order.state_type() is OrderState


def test_an_aggregate_without_a_state_parameter_is_a_configuration_error() -> None:
    class Untyped(AggregateRoot):  # type: ignore[type-arg]
        pass

    with pytest.raises(ConfigurationError, match=r"AggregateRoot\[StateClass, KeyType\]"):
        Untyped("x")


def test_a_singledispatch_overload_on_the_state_applies_the_event() -> None:
    assert Order.place("o-1", "ada").state.customer == "ada"


def test_an_apply_method_on_the_state_applies_the_event() -> None:
    order = Order.place("o-1", "ada")
    order.record(OrderPaid(30))
    assert order.state.paid == 30


def test_an_apply_method_on_the_aggregate_applies_the_event() -> None:
    order = Order.place("o-1", "ada")
    order.record(OrderShipped("ups"))
    assert order.state.shipped_by == "ups"


def test_an_event_subclass_reaches_the_overload_for_its_base_class() -> None:
    order = Order.place("o-1", "ada")
    order.record(GiftAdded("card", 1, "happy birthday"))
    assert order.state.items == {"card": 1}


def test_an_apply_method_for_a_base_event_class_handles_its_subclass() -> None:
    counter = Counter(1)
    counter.record(GiftAdded("card", 2))
    assert counter.state.count == 2


def test_a_frozen_state_is_replaced_by_what_its_handler_returns() -> None:
    counter = Counter(1)
    counter.record(ItemAdded("a", 3))
    counter.record(ItemAdded("b", 4))
    assert counter.state == CounterState(7)


def test_an_aggregate_handler_may_return_the_new_frozen_state() -> None:
    counter = Counter.rehydrate(1, [ItemAdded("a", 5)])
    counter.record(OrderPaid(2))
    assert counter.state == CounterState(3)


def test_recording_events_counts_the_version_up() -> None:
    order = Order.place("o-1", "ada")
    order.add("a", 1)
    assert order.version == 2


def test_recorded_events_are_pending_until_pulled() -> None:
    order = Order.place("o-1", "ada")
    order.add("a", 1)
    assert order.pull_events() == [OrderPlaced("o-1", "ada"), ItemAdded("a", 1)]


def test_the_persisted_version_excludes_pending_events() -> None:
    order = Order.rehydrate("o-1", [OrderPlaced("o-1", "ada"), ItemAdded("a", 1)])
    order.add("b", 2)
    assert (order.persisted_version, order.version) == (2, 3)


def test_rehydrating_applies_history_without_recording_it() -> None:
    order = Order.rehydrate("o-1", [OrderPlaced("o-1", "ada"), ItemAdded("a", 2)])
    assert (order.state.items, order.pending_events) == ({"a": 2}, ())


def test_rehydrating_counts_the_version_from_a_snapshot() -> None:
    snapshot = OrderState(customer="ada", items={"a": 1})
    order = Order.rehydrate("o-1", [ItemAdded("a", 1)], state=snapshot, version=10)
    assert (order.version, order.state.items) == (11, {"a": 2})


def test_a_refused_operation_records_nothing() -> None:
    order = Order.place("o-1", "ada")
    order.pull_events()
    with pytest.raises(RuleViolationError):
        order.add("a", 0)
    assert order.pending_events == ()


def test_an_event_without_handler_raises_a_missing_handler_error() -> None:
    with pytest.raises(MissingEventHandlerError):
        Order("o-1").record(OrderCancelled("changed my mind"))


def test_the_missing_handler_message_names_both_classes_and_the_fix() -> None:
    with pytest.raises(MissingEventHandlerError) as caught:
        Order("o-1").record(OrderCancelled("changed my mind"))
    message = str(caught.value)
    assert "neither Order nor its state OrderState" in message
    assert "apply_OrderCancelled(self, event)" in message


def test_an_event_without_handler_is_not_recorded() -> None:
    order = Order("o-1")
    with pytest.raises(MissingEventHandlerError):
        order.record(OrderCancelled("changed my mind"))
    assert (order.version, order.pending_events) == (0, ())
