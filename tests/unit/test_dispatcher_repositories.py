"""Aggregates registered with ``register_aggregate`` persist and load through the dispatcher.

Runs on the in-memory storage and on SQLite (a file in the test's own directory), with
event-sourced and state-stored aggregates, through eventfold's unit of work.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from eventfold.adapters.memory import create_memory_storage
from eventfold.adapters.memory.cache import create_memory_cache
from eventfold.adapters.sqlite import create_sqlite_storage
from eventfold.application.persistence.caching import CachingPersistenceDispatcher
from eventfold.application.persistence.dispatcher import (
    PersistenceDispatcher,
    PersistenceRegistry,
    register_aggregate,
    unit_of_work_factories,
)
from eventfold.application.persistence.model import PersistenceModel
from eventfold.application.persistence.unit_of_work import DataSource, DataSources, UnitOfWork
from eventfold.domain.aggregate import AggregateRoot
from eventfold.errors import ConcurrencyError
from eventfold.serialization import EventRegistry


@dataclass
class OrderState:
    lines: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LineAdded:
    sku: str


class Order(AggregateRoot[OrderState, str]):
    """Event-sourced."""

    def add(self, sku: str) -> None:
        self.record(LineAdded(sku))

    def apply_LineAdded(self, event: LineAdded) -> None:
        self.state.lines.append(event.sku)


@dataclass
class CustomerState:
    name: str = ""


@dataclass(frozen=True)
class Renamed:
    name: str


class Customer(AggregateRoot[CustomerState, str]):
    """State-stored."""

    def rename(self, name: str) -> None:
        self.record(Renamed(name))

    def apply_Renamed(self, event: Renamed) -> None:
        self.state.name = event.name


@pytest.fixture(params=["memory", "sqlite"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "memory":
        storage: Any = create_memory_storage()
    else:
        storage = create_sqlite_storage(tmp_path / "eventfold.db")
    await storage.create_schema()
    yield storage
    await storage.close()


@pytest.fixture
def source(storage: Any) -> DataSource:
    model = PersistenceModel()
    model.event_sourced(Order)
    model.state_stored(Customer)
    return DataSource("default", storage, model, EventRegistry([LineAdded, Renamed]))


@pytest.fixture
def dispatcher(source: DataSource) -> PersistenceDispatcher[UnitOfWork]:
    registry: PersistenceRegistry[UnitOfWork] = PersistenceRegistry()
    register_aggregate(registry, Order)
    register_aggregate(registry, Customer)
    return PersistenceDispatcher(registry, unit_of_work_factories(DataSources(source)))


async def test_an_event_sourced_aggregate_round_trips(
    dispatcher: PersistenceDispatcher[UnitOfWork],
) -> None:
    order = Order("o-1")
    order.add("apple")
    order.add("pear")
    await dispatcher.apply(order)
    [loaded] = await dispatcher.fetch_domain(Order, ["o-1", "absent"])
    assert (loaded.state.lines, loaded.version) == (["apple", "pear"], 2)


async def test_a_state_stored_aggregate_round_trips_and_updates(
    dispatcher: PersistenceDispatcher[UnitOfWork],
) -> None:
    customer = Customer("c-1")
    customer.rename("Ada")
    await dispatcher.apply(customer)
    [loaded] = await dispatcher.fetch_domain(Customer, ["c-1"])
    loaded.rename("Ada Lovelace")
    await dispatcher.apply(loaded)
    [again] = await dispatcher.fetch_domain(Customer, ["c-1"])
    assert again.state.name == "Ada Lovelace"


async def test_apply_settles_the_aggregate_after_commit(
    dispatcher: PersistenceDispatcher[UnitOfWork],
) -> None:
    order = Order("o-1")
    order.add("apple")
    await dispatcher.apply(order)
    assert (order.pending_events, order.version) == ((), 1)


async def test_a_stale_copy_of_an_event_sourced_aggregate_is_refused(
    dispatcher: PersistenceDispatcher[UnitOfWork],
) -> None:
    order = Order("o-1")
    order.add("apple")
    await dispatcher.apply(order)
    [first] = await dispatcher.fetch_domain(Order, ["o-1"])
    [second] = await dispatcher.fetch_domain(Order, ["o-1"])
    first.add("pear")
    await dispatcher.apply(first)
    second.add("plum")
    with pytest.raises(ConcurrencyError):
        await dispatcher.apply(second)


async def test_a_stale_copy_of_a_state_stored_aggregate_is_refused(
    dispatcher: PersistenceDispatcher[UnitOfWork],
) -> None:
    customer = Customer("c-1")
    customer.rename("Ada")
    await dispatcher.apply(customer)
    [first] = await dispatcher.fetch_domain(Customer, ["c-1"])
    [second] = await dispatcher.fetch_domain(Customer, ["c-1"])
    first.rename("Grace")
    await dispatcher.apply(first)
    second.rename("Edsger")
    with pytest.raises(ConcurrencyError):
        await dispatcher.apply(second)


async def test_writes_in_a_caller_s_unit_of_work_land_when_it_commits(
    dispatcher: PersistenceDispatcher[UnitOfWork], source: DataSource
) -> None:
    async with source.unit_of_work() as uow:
        order = Order("o-1")
        order.add("apple")
        await dispatcher.apply(order, uow)
        assert await dispatcher.fetch_domain(Order, ["o-1"]) == []
        await uow.commit()
    [loaded] = await dispatcher.fetch_domain(Order, ["o-1"])
    assert loaded.state.lines == ["apple"]


async def test_a_caller_s_unit_of_work_commits_when_its_block_ends_cleanly(
    dispatcher: PersistenceDispatcher[UnitOfWork], source: DataSource
) -> None:
    async with source.unit_of_work() as uow:
        order = Order("o-1")
        order.add("apple")
        await dispatcher.apply(order, uow)
    [loaded] = await dispatcher.fetch_domain(Order, ["o-1"])
    assert loaded.state.lines == ["apple"]


async def test_a_caller_s_unit_of_work_whose_block_raises_writes_nothing(
    dispatcher: PersistenceDispatcher[UnitOfWork], source: DataSource
) -> None:

    async def fail_after_staging() -> None:
        async with source.unit_of_work() as uow:
            order = Order("o-1")
            order.add("apple")
            await dispatcher.apply(order, uow)
            raise LookupError("the handler failed after staging its write")

    with pytest.raises(LookupError):
        await fail_after_staging()
    assert await dispatcher.fetch_domain(Order, ["o-1"]) == []


async def test_a_caller_s_unit_of_work_rolled_back_in_its_block_writes_nothing(
    dispatcher: PersistenceDispatcher[UnitOfWork], source: DataSource
) -> None:
    async with source.unit_of_work() as uow:
        order = Order("o-1")
        order.add("apple")
        await dispatcher.apply(order, uow)
        await uow.rollback()
    assert await dispatcher.fetch_domain(Order, ["o-1"]) == []


async def test_through_the_caching_dispatcher_a_write_is_seen_by_the_next_read(
    dispatcher: PersistenceDispatcher[UnitOfWork],
) -> None:
    cached = CachingPersistenceDispatcher(dispatcher, create_memory_cache())
    customer = Customer("c-1")
    customer.rename("Ada")
    await cached.apply(customer)
    [loaded] = await cached.fetch_domain(Customer, ["c-1"])
    loaded.rename("Grace")
    await cached.apply(loaded)
    [again] = await cached.fetch_domain(Customer, ["c-1"])
    assert (again.state.name, again.version) == ("Grace", 2)


async def test_a_cached_aggregate_can_be_changed_and_saved(
    dispatcher: PersistenceDispatcher[UnitOfWork],
) -> None:
    cached = CachingPersistenceDispatcher(dispatcher, create_memory_cache())
    order = Order("o-1")
    order.add("apple")
    await cached.apply(order)
    await cached.fetch_domain(Order, ["o-1"])
    [from_cache] = await cached.fetch_domain(Order, ["o-1"])
    from_cache.add("pear")
    await cached.apply(from_cache)
    [loaded] = await dispatcher.fetch_domain(Order, ["o-1"])
    assert (loaded.state.lines, loaded.version) == (["apple", "pear"], 2)
