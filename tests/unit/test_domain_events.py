"""Stable event type names and schema versions."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from eventfold import event_name, event_type, event_version


@event_type("OrderPlaced", version=2)
@dataclass(frozen=True)
class OrderPlacedV2:
    order_id: str


@dataclass(frozen=True)
class CartEmptied:
    cart_id: str


def test_a_declared_name_and_version_are_what_the_class_reports() -> None:
    assert (event_name(OrderPlacedV2), event_version(OrderPlacedV2)) == ("OrderPlaced", 2)


def test_an_undeclared_event_is_named_after_its_class_at_version_one() -> None:
    assert (event_name(CartEmptied), event_version(CartEmptied)) == ("CartEmptied", 1)


def test_renaming_the_class_keeps_the_declared_name() -> None:
    OrderPlacedV2.__name__ = OrderPlacedV2.__qualname__ = "PlacedOrder"
    try:
        assert event_name(OrderPlacedV2) == "OrderPlaced"
    finally:
        OrderPlacedV2.__name__ = OrderPlacedV2.__qualname__ = "OrderPlacedV2"


def test_moving_the_class_to_another_module_keeps_the_declared_name() -> None:
    OrderPlacedV2.__module__ = "shop.orders.events"
    try:
        assert event_name(OrderPlacedV2) == "OrderPlaced"
    finally:
        OrderPlacedV2.__module__ = __name__


def test_a_subclass_does_not_inherit_its_parents_name() -> None:
    @dataclass(frozen=True)
    class OrderPlacedByPhone(OrderPlacedV2):
        phone: str

    assert event_name(OrderPlacedByPhone) == "OrderPlacedByPhone"


def test_a_subclass_does_not_inherit_its_parents_version() -> None:
    class OrderPlacedOnline(OrderPlacedV2):
        pass

    assert event_version(OrderPlacedOnline) == 1


def test_the_decorator_works_on_a_slotted_dataclass_applied_first() -> None:
    @dataclass(frozen=True, slots=True)
    @event_type("ItemAdded", version=3)
    class ItemAdded:
        sku: str

    assert (event_name(ItemAdded), event_version(ItemAdded)) == ("ItemAdded", 3)


def test_a_schema_version_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="schema version"):
        event_type("X", version=0)
