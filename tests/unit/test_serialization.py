"""EventRegistry: stable names, decode errors and the upcaster chain."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from eventfold import (
    ConfigurationError,
    EventDecodeError,
    EventRegistry,
    SerializationError,
    UnknownEventTypeError,
    UnregisteredEventError,
    event_type,
)


@event_type("PriceChanged", version=3)
@dataclass(frozen=True)
class PriceChanged:
    sku: str
    price: Decimal
    currency: str


@dataclass(frozen=True)
class ItemAdded:
    sku: str
    quantity: int


def test_a_registered_event_is_found_by_its_stable_name() -> None:
    registry = EventRegistry([PriceChanged])
    assert registry.class_of("PriceChanged") is PriceChanged


def test_encoding_writes_the_stable_name_and_current_version() -> None:
    encoded = EventRegistry([PriceChanged]).encode(PriceChanged("a", Decimal("1.50"), "EUR"))
    assert (encoded.type_name, encoded.schema_version) == ("PriceChanged", 3)


def test_encoding_an_unregistered_event_fails_naming_the_class_and_how_to_register_it() -> None:
    registry = EventRegistry()
    with pytest.raises(UnregisteredEventError, match=r"ItemAdded is not registered.*register"):
        registry.encode(ItemAdded("a", 1))
    assert not registry.is_registered(ItemAdded)


def test_two_classes_cannot_share_a_name() -> None:
    @event_type("ItemAdded")
    @dataclass(frozen=True)
    class OtherItemAdded:
        sku: str

    registry = EventRegistry([ItemAdded])
    with pytest.raises(ConfigurationError, match="'ItemAdded' is taken by ItemAdded"):
        registry.register(OtherItemAdded)


def test_registering_the_same_class_twice_is_harmless() -> None:
    registry = EventRegistry([ItemAdded])
    registry.register(ItemAdded)
    assert registry.name_of(ItemAdded) == "ItemAdded"


def test_one_class_cannot_be_registered_under_two_names() -> None:
    registry = EventRegistry([ItemAdded])
    with pytest.raises(ConfigurationError, match="already registered as 'ItemAdded'"):
        registry.register(ItemAdded, name="LineAdded")


def test_an_unknown_stored_type_raises_an_error_naming_it() -> None:
    with pytest.raises(UnknownEventTypeError, match="'OrderShipped'") as caught:
        EventRegistry().decode("OrderShipped", 1, "{}")
    assert caught.value.type_name == "OrderShipped"


def test_a_payload_that_does_not_fit_names_type_version_and_field() -> None:
    registry = EventRegistry([ItemAdded])
    with pytest.raises(EventDecodeError) as caught:
        registry.decode("ItemAdded", 1, '{"sku": "a", "quantity": "many"}')
    error = caught.value
    assert (error.type_name, error.schema_version, error.field) == ("ItemAdded", 1, "quantity")


def test_a_payload_missing_a_field_names_that_field() -> None:
    with pytest.raises(EventDecodeError, match="'quantity'"):
        EventRegistry([ItemAdded]).decode("ItemAdded", 1, '{"sku": "a"}')


def test_text_that_is_not_json_is_a_decode_error() -> None:
    with pytest.raises(EventDecodeError, match="ItemAdded v1"):
        EventRegistry([ItemAdded]).decode("ItemAdded", 1, "not json")


def _registry_with_upcasters() -> EventRegistry:
    registry = EventRegistry([PriceChanged])

    @registry.upcaster("PriceChanged", 1)
    def amount_became_price(data: dict[str, Any]) -> dict[str, Any]:
        return {"sku": data["sku"], "price": data["amount"]}

    @registry.upcaster("PriceChanged", 2)
    def currency_added(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "currency": "EUR"}

    return registry


def test_a_version_one_payload_passes_through_every_upcaster() -> None:
    event = _registry_with_upcasters().decode("PriceChanged", 1, '{"sku": "a", "amount": "2.5"}')
    assert event == PriceChanged("a", Decimal("2.5"), "EUR")


def test_a_version_two_payload_passes_through_the_remaining_upcaster() -> None:
    event = _registry_with_upcasters().decode("PriceChanged", 2, '{"sku": "a", "price": "3"}')
    assert event == PriceChanged("a", Decimal("3"), "EUR")


def test_a_current_payload_is_decoded_without_upcasting() -> None:
    registry = _registry_with_upcasters()
    data = '{"sku": "a", "price": "3", "currency": "USD"}'
    assert registry.decode("PriceChanged", 3, data) == PriceChanged("a", Decimal("3"), "USD")


def test_a_missing_upcaster_names_the_step() -> None:
    registry = EventRegistry([PriceChanged])
    registry.register_upcaster("PriceChanged", 2, lambda data: {**data, "currency": "EUR"})
    with pytest.raises(SerializationError, match="PriceChanged from version 1 to 2"):
        registry.decode("PriceChanged", 1, '{"sku": "a", "amount": "1"}')


def test_a_payload_newer_than_the_code_is_refused() -> None:
    with pytest.raises(SerializationError, match="version 4, newer than this code's version 3"):
        EventRegistry([PriceChanged]).decode("PriceChanged", 4, "{}")


def test_an_upcaster_that_fails_is_a_decode_error_naming_its_step() -> None:
    registry = EventRegistry([PriceChanged])
    registry.register_upcaster("PriceChanged", 1, lambda data: {**data, "price": data["amount"]})
    registry.register_upcaster("PriceChanged", 2, lambda data: {**data, "currency": "EUR"})
    with pytest.raises(EventDecodeError, match="upcaster to version 2 failed"):
        registry.decode("PriceChanged", 1, '{"sku": "a"}')


def test_an_upcasted_payload_that_does_not_fit_names_the_field() -> None:
    registry = EventRegistry([PriceChanged])
    registry.register_upcaster("PriceChanged", 2, lambda data: data)
    with pytest.raises(EventDecodeError, match="'currency'"):
        registry.decode("PriceChanged", 2, '{"sku": "a", "price": "1"}')


def test_two_upcasters_for_one_step_are_refused() -> None:
    registry = EventRegistry([PriceChanged])
    registry.register_upcaster("PriceChanged", 1, lambda data: data)
    with pytest.raises(ConfigurationError, match="already has an upcaster from version 1"):
        registry.register_upcaster("PriceChanged", 1, lambda data: data)
