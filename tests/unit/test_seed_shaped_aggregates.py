"""Aggregates written the way other frameworks write them either work or fail at once."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

import pytest

from eventfold import (
    AggregateDefinitionError,
    AggregateRoot,
    ConfigurationError,
    DataSource,
    EventRegistry,
    PersistenceModel,
)
from eventfold.adapters.memory import create_memory_storage
from eventfold.ports import Storage


@dataclass(frozen=True)
class ItemAdded:
    order_id: str
    sku: str
    price: Decimal


@dataclass(frozen=True)
class OrderCancelled:
    order_id: str
    reason: str


class PlainOrderState:
    """A state written as a plain class with one ``on`` method and an isinstance chain."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.total = Decimal(0)
        self.cancelled = False

    def on(self, event: object) -> None:
        if isinstance(event, ItemAdded):
            self.items.append(event.sku)
            self.total += event.price
        elif isinstance(event, OrderCancelled):
            self.cancelled = True


class PlainOrder(AggregateRoot[PlainOrderState, str]):
    def add(self, sku: str, price: Decimal) -> None:
        self.record(ItemAdded(self.id, sku, price))

    def cancel(self, reason: str) -> None:
        self.record(OrderCancelled(self.id, reason))


@dataclass
class CartState:
    items: list[str] = field(default_factory=list)


# -- the state passed before the id -------------------------------------------------------


def test_passing_the_state_before_the_id_fails_at_once_saying_the_id_comes_first() -> None:
    class Cart(AggregateRoot[CartState, str]):
        def __init__(self, cart_id: str) -> None:
            super().__init__(CartState(), cart_id)  # type: ignore[arg-type]

    with pytest.raises(AggregateDefinitionError, match=r"id first.*super\(\).__init__\(cart_id\)"):
        Cart("c-1")


def test_a_state_of_another_class_is_refused_as_the_state() -> None:
    class Cart(AggregateRoot[CartState, str]):
        pass

    with pytest.raises(AggregateDefinitionError, match="not a CartState"):
        Cart("c-1", {"items": []})  # type: ignore[arg-type]


# -- applying before recording ------------------------------------------------------------


def test_applying_to_the_state_before_recording_fails_when_the_class_is_defined() -> None:
    with pytest.raises(AggregateDefinitionError, match=r"applied twice.*drop the self.state.on"):

        class Order(AggregateRoot[PlainOrderState, str]):
            def add(self, sku: str, price: Decimal) -> None:
                event = ItemAdded(self.id, sku, price)
                self.state.on(event)
                self.record(event)


def test_calling_register_event_fails_when_the_class_is_defined_naming_record() -> None:
    with pytest.raises(AggregateDefinitionError, match=r"write self.record\(event\)"):

        class Order(AggregateRoot[PlainOrderState, str]):
            def add(self, sku: str, price: Decimal) -> None:
                event = ItemAdded(self.id, sku, price)
                self.state.on(event)
                self.register_event(event)


def test_register_event_called_from_code_without_source_fails_naming_record() -> None:
    order = PlainOrder("o-1")
    with pytest.raises(AggregateDefinitionError, match=r"self.record\(event\)"):
        order.register_event(ItemAdded("o-1", "tea", Decimal(1)))


# -- what a handler returns ---------------------------------------------------------------


def test_a_handler_that_returns_something_other_than_a_state_fails_at_once() -> None:
    @dataclass
    class ListState:
        items: list[str] = field(default_factory=list)

        def apply_ItemAdded(self, event: ItemAdded) -> list[str]:
            self.items.append(event.sku)
            return self.items

    class Order(AggregateRoot[ListState, str]):
        pass

    order = Order("o-1")
    with pytest.raises(AggregateDefinitionError, match="returned a list, not a ListState"):
        order.record(ItemAdded("o-1", "tea", Decimal(1)))


def test_a_handler_of_a_frozen_state_returns_the_new_state() -> None:
    @dataclass(frozen=True)
    class FrozenState:
        count: int = 0

        def apply_ItemAdded(self, event: ItemAdded) -> FrozenState:
            return replace(self, count=self.count + 1)

    class Order(AggregateRoot[FrozenState, str]):
        pass

    order = Order("o-1")
    order.record(ItemAdded("o-1", "tea", Decimal(1)))
    order.record(ItemAdded("o-1", "pot", Decimal(2)))
    assert order.state.count == 2


# -- a plain `on` method ------------------------------------------------------------------


def test_a_plain_on_method_with_an_isinstance_chain_applies_recorded_events() -> None:
    order = PlainOrder("o-1")
    order.add("tea", Decimal("2.50"))
    order.add("pot", Decimal("10.00"))
    assert (order.state.items, order.state.total, order.version) == (
        ["tea", "pot"],
        Decimal("12.50"),
        2,
    )


def test_a_plain_on_method_applies_events_when_the_aggregate_is_rebuilt() -> None:
    events = [ItemAdded("o-1", "tea", Decimal(1)), OrderCancelled("o-1", "late")]
    order = PlainOrder.rehydrate("o-1", events, version=0)
    assert (order.state.items, order.state.cancelled, order.version) == (["tea"], True, 2)


# -- a plain state class ------------------------------------------------------------------


async def test_a_plain_state_class_is_event_sourced_without_snapshots() -> None:
    storage = create_memory_storage()
    model = PersistenceModel()
    model.event_sourced(PlainOrder)
    source = DataSource("shop", storage, model, EventRegistry([ItemAdded, OrderCancelled]))
    async with source.unit_of_work() as uow:
        order = PlainOrder("o-1")
        order.add("tea", Decimal("2.50"))
        uow.event_sourced(PlainOrder).add(order)
    async with source.unit_of_work() as uow:
        loaded = await uow.event_sourced(PlainOrder).get_required("o-1")
    assert (loaded.state.items, loaded.state.total) == (["tea"], Decimal("2.50"))


def test_a_plain_state_class_with_snapshots_fails_at_registration_saying_make_it_a_dataclass() -> (
    None
):
    with pytest.raises(ConfigurationError, match=r"snapshots.*make PlainOrderState a @dataclass"):
        PersistenceModel().event_sourced(PlainOrder, snapshot_every=10)


def test_a_plain_state_class_kept_as_state_fails_at_registration_saying_make_it_a_dataclass() -> (
    None
):
    with pytest.raises(ConfigurationError, match=r"state-stored rows.*@dataclass"):
        PersistenceModel().state_stored(PlainOrder)


# -- fields on the aggregate --------------------------------------------------------------


def test_fields_declared_on_the_aggregate_fail_when_the_class_is_defined() -> None:
    with pytest.raises(AggregateDefinitionError, match=r"customer_id, status on the aggregate"):

        class Order(AggregateRoot[CartState, str]):
            id: str
            customer_id: str
            status: str = "pending"


def test_setting_a_field_on_the_aggregate_fails_at_once_naming_the_state() -> None:
    class Order(AggregateRoot[CartState, str]):
        def place(self, customer_id: str) -> None:
            self.customer_id = customer_id

    with pytest.raises(AggregateDefinitionError, match=r"state class CartState.*self.state"):
        Order("o-1").place("c-1")


def test_an_aggregate_may_set_a_property_that_writes_to_its_state() -> None:
    @dataclass
    class NamedState:
        name: str = ""

    class Named(AggregateRoot[NamedState, str]):
        @property
        def name(self) -> str:
            return self.state.name

        @name.setter
        def name(self, value: str) -> None:
            self.state.name = value

    named = Named("n-1")
    named.name = "Ada"
    assert named.state.name == "Ada"


# -- a snapshot of another shape ----------------------------------------------------------


def _order_types(state_cls: type) -> type[AggregateRoot[object, str]]:
    class Order(AggregateRoot[state_cls, str]):  # type: ignore[valid-type]
        def add(self, sku: str, price: Decimal) -> None:
            self.record(ItemAdded(self.id, sku, price))

    return Order  # type: ignore[return-value]


async def _load_total(storage: Storage, state_cls: type) -> object:
    order_type = _order_types(state_cls)
    model = PersistenceModel()
    model.event_sourced(order_type, snapshot_every=2)
    source = DataSource("shop", storage, model, EventRegistry([ItemAdded]))
    async with source.unit_of_work() as uow:
        order = await uow.event_sourced(order_type).get_required("o-1")
    return order.state.total  # type: ignore[attr-defined]


async def test_a_snapshot_of_a_reshaped_state_is_not_read_when_its_version_was_not_bumped() -> None:
    # The first release kept the total in cents; the next keeps it in euros, under the
    # same state name and the same state_version.
    @dataclass
    class OrderState:
        total: int = 0

        def apply_ItemAdded(self, event: ItemAdded) -> None:
            self.total += int(event.price * 100)

    storage = create_memory_storage()
    order_type = _order_types(OrderState)
    model = PersistenceModel()
    model.event_sourced(order_type, snapshot_every=2)
    source = DataSource("shop", storage, model, EventRegistry([ItemAdded]))
    async with source.unit_of_work() as uow:
        order = order_type("o-1")
        order.add("tea", Decimal("3.95"))  # type: ignore[attr-defined]
        order.add("pot", Decimal("10.00"))  # type: ignore[attr-defined]
        uow.event_sourced(order_type).add(order)
    assert await _load_total(storage, OrderState) == 1395

    @dataclass
    class OrderState:  # type: ignore[no-redef]
        total: Decimal = Decimal(0)

        def apply_ItemAdded(self, event: ItemAdded) -> None:
            self.total += event.price

    assert await _load_total(storage, OrderState) == Decimal("13.95")
