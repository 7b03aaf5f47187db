"""The persistence registry and dispatcher: chains, priorities, units of work, hooks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from eventfold.application.persistence.dispatcher import (
    DECLINED,
    Declined,
    HandlerKind,
    LoggingPersistenceHook,
    Outcome,
    PersistenceCall,
    PersistenceDispatcher,
    PersistenceRegistry,
    PersistenceResult,
)
from eventfold.application.readside.queries import Page, QueryOptions, SearchResult, query_in_memory
from eventfold.errors import ConfigurationError, RegistrationError


@dataclass
class Order:
    id: str
    total: int = 0


@dataclass
class RushOrder(Order):
    pass


@dataclass
class OrderSummary:
    id: str
    total: int


@dataclass
class Unit:
    """A unit of work that records what happened to it."""

    source: str
    committed: bool = False
    closed: bool = False
    staged: list[object] = field(default_factory=list)

    async def commit(self) -> None:
        self.committed = True


class Units:
    """Unit-of-work factories per source, remembering every unit they opened."""

    def __init__(self) -> None:
        self.opened: list[Unit] = []

    def factory(self, source: str) -> Callable[[], AbstractAsyncContextManager[Unit]]:
        @asynccontextmanager
        async def open_unit() -> AsyncIterator[Unit]:
            unit = Unit(source)
            self.opened.append(unit)
            try:
                yield unit
            finally:
                unit.closed = True

        return open_unit


class Store:
    """A handler of every kind over a dictionary; declines when told to."""

    def __init__(self, name: str = "store", *, declines: bool = False) -> None:
        self.name = name
        self.declines = declines
        self.rows: dict[str, Any] = {}
        self.calls: list[tuple[str, Unit]] = []

    async def persist(self, entity: Order, uow: Unit) -> Declined | None:
        self.calls.append(("persist", uow))
        if self.declines:
            return DECLINED
        uow.staged.append(entity)
        self.rows[entity.id] = entity
        return None

    async def retrieve(self, ids: Sequence[Any], uow: Unit) -> Declined | list[Order]:
        self.calls.append(("retrieve", uow))
        if self.declines:
            return DECLINED
        return [self.rows[i] for i in ids if i in self.rows]

    async def fetch(self, ids: Sequence[Any], uow: Unit) -> Declined | list[OrderSummary]:
        self.calls.append(("fetch", uow))
        if self.declines:
            return DECLINED
        return [OrderSummary(i, self.rows[i].total) for i in ids if i in self.rows]

    async def search(
        self, options: QueryOptions, uow: Unit
    ) -> Declined | SearchResult[OrderSummary]:
        self.calls.append(("search", uow))
        if self.declines:
            return DECLINED
        summaries = [OrderSummary(o.id, o.total) for o in self.rows.values()]

        async def page(opts: QueryOptions) -> Page[OrderSummary]:
            return query_in_memory(summaries, opts, key=lambda s: s.id)

        return SearchResult(page, options)


class Recorder:
    """A hook that remembers what it saw."""

    def __init__(self) -> None:
        self.started: list[PersistenceCall] = []
        self.finished: list[tuple[PersistenceCall, PersistenceResult]] = []

    def before(self, call: PersistenceCall) -> None:
        self.started.append(call)

    def after(self, call: PersistenceCall, result: PersistenceResult) -> None:
        self.finished.append((call, result))


class BrokenHook:
    def before(self, call: PersistenceCall) -> None:
        raise RuntimeError("hook before broke")

    def after(self, call: PersistenceCall, result: PersistenceResult) -> None:
        raise RuntimeError("hook after broke")


def register_everything(registry: PersistenceRegistry[Unit], store: Store, **options: Any) -> None:
    registry.register_operation(Order, store, **options)
    registry.register_retrieval(Order, store, **options)
    registry.register_query(OrderSummary, store, **options)
    registry.register_query_spec(OrderSummary, store, **options)


def make(
    *stores: tuple[Store, dict[str, Any]], hooks: Sequence[Any] = ()
) -> tuple[PersistenceDispatcher[Unit], Units]:
    registry: PersistenceRegistry[Unit] = PersistenceRegistry()
    for store, options in stores:
        register_everything(registry, store, **options)
    units = Units()
    factories = {name: units.factory(name) for name in ("default", "orders", "replica")}
    return PersistenceDispatcher(registry, factories, hooks=hooks), units


async def test_apply_then_fetch_domain_round_trips_through_the_registered_handler() -> None:
    store = Store()
    dispatcher, _ = make((store, {}))
    await dispatcher.apply(Order("o-1", 10))
    assert await dispatcher.fetch_domain(Order, ["o-1", "missing"]) == [Order("o-1", 10)]


async def test_fetch_with_ids_returns_read_models_from_the_query_handler() -> None:
    store = Store()
    dispatcher, _ = make((store, {}))
    await dispatcher.apply(Order("o-1", 10))
    assert await dispatcher.fetch(OrderSummary, ["o-1"]) == [OrderSummary("o-1", 10)]


async def test_fetch_with_query_options_returns_a_search_result_from_the_spec_handler() -> None:
    store = Store()
    dispatcher, _ = make((store, {}))
    for i in range(3):
        await dispatcher.apply(Order(f"o-{i}", i))
    result = await dispatcher.fetch(OrderSummary, QueryOptions(order_by=("-total",), limit=2))
    assert isinstance(result, SearchResult)
    assert [s.id for s in await result] == ["o-2", "o-1"]


async def test_the_handler_with_the_highest_priority_answers() -> None:
    low, high = Store("low"), Store("high")
    dispatcher, _ = make((low, {"priority": 1}), (high, {"priority": 5}))
    await dispatcher.apply(Order("o-1"))
    assert "o-1" in high.rows
    assert low.calls == []


async def test_handlers_of_equal_priority_are_asked_in_registration_order() -> None:
    first, second = Store("first"), Store("second")
    dispatcher, _ = make((first, {}), (second, {}))
    await dispatcher.apply(Order("o-1"))
    assert "o-1" in first.rows
    assert second.calls == []


async def test_a_declining_handler_passes_the_request_to_the_next_one() -> None:
    picky, fallback = Store("picky", declines=True), Store("fallback")
    dispatcher, _ = make((picky, {"priority": 9}), (fallback, {}))
    await dispatcher.apply(Order("o-1"))
    assert [name for name, _ in picky.calls] == ["persist"]
    assert "o-1" in fallback.rows


async def test_when_every_handler_declines_a_registration_error_says_so() -> None:
    dispatcher, _ = make((Store(declines=True), {}))
    with pytest.raises(RegistrationError, match="every retrieval handler") as caught:
        await dispatcher.fetch_domain(Order, ["o-1"])
    assert caught.value.declined


@pytest.mark.parametrize(
    ("call", "kind"),
    [
        (lambda d: d.apply(Order("o-1")), "operation"),
        (lambda d: d.fetch_domain(Order, ["o-1"]), "retrieval"),
        (lambda d: d.fetch(OrderSummary, ["o-1"]), "query"),
        (lambda d: d.fetch(OrderSummary, QueryOptions()), "query_spec"),
    ],
)
async def test_a_missing_registration_names_the_type_and_the_kind_of_handler(
    call: Any, kind: str
) -> None:
    dispatcher, _ = make()
    with pytest.raises(RegistrationError, match=f"no {kind} handler") as caught:
        await call(dispatcher)
    assert caught.value.kind == kind
    assert caught.value.entity_type in (Order, OrderSummary)
    assert isinstance(caught.value, ConfigurationError)


async def test_a_subclass_uses_the_handlers_registered_for_its_base_class() -> None:
    store = Store()
    dispatcher, _ = make((store, {}))
    await dispatcher.apply(RushOrder("r-1"))
    assert await dispatcher.fetch_domain(RushOrder, ["r-1"]) == [RushOrder("r-1")]


async def test_apply_without_a_unit_of_work_commits_one_of_the_handlers_source() -> None:
    dispatcher, units = make((Store(), {"source": "orders"}))
    await dispatcher.apply(Order("o-1"))
    [unit] = units.opened
    assert (unit.source, unit.committed, unit.closed) == ("orders", True, True)


async def test_a_read_without_a_unit_of_work_closes_its_own_without_committing() -> None:
    dispatcher, units = make((Store(), {}))
    await dispatcher.fetch_domain(Order, ["o-1"])
    [unit] = units.opened
    assert (unit.committed, unit.closed) == (False, True)


async def test_a_given_unit_of_work_is_used_and_left_for_the_caller_to_commit() -> None:
    store = Store()
    dispatcher, units = make((store, {}))
    mine = Unit("mine")
    await dispatcher.apply(Order("o-1"), mine)
    assert units.opened == []
    assert mine.staged == [Order("o-1")]
    assert not mine.committed


async def test_each_source_gets_units_of_work_from_its_own_factory() -> None:
    registry: PersistenceRegistry[Unit] = PersistenceRegistry()
    orders, summaries = Store("orders"), Store("replica")
    registry.register_operation(Order, orders, source="orders")
    registry.register_query(OrderSummary, summaries, source="replica")
    units = Units()
    dispatcher = PersistenceDispatcher(
        registry, {"orders": units.factory("orders"), "replica": units.factory("replica")}
    )
    await dispatcher.apply(Order("o-1"))
    await dispatcher.fetch(OrderSummary, ["o-1"])
    assert [u.source for u in units.opened] == ["orders", "replica"]


async def test_a_declining_handler_s_own_unit_of_work_is_not_committed() -> None:
    dispatcher, units = make((Store(declines=True), {"priority": 1}), (Store(), {}))
    await dispatcher.apply(Order("o-1"))
    assert [u.committed for u in units.opened] == [False, True]


async def test_a_failing_handler_s_own_unit_of_work_is_not_committed() -> None:
    registry: PersistenceRegistry[Unit] = PersistenceRegistry()

    class Failing:
        async def persist(self, entity: Order, uow: Unit) -> None:
            raise ValueError("disk full")

    registry.register_operation(Order, Failing())
    units = Units()
    dispatcher = PersistenceDispatcher(registry, {"default": units.factory("default")})
    with pytest.raises(ValueError, match="disk full"):
        await dispatcher.apply(Order("o-1"))
    assert [(u.committed, u.closed) for u in units.opened] == [(False, True)]


async def test_a_source_without_a_factory_is_a_configuration_error_naming_it() -> None:
    dispatcher, _ = make((Store(), {"source": "archive"}))
    with pytest.raises(ConfigurationError, match="'archive'"):
        await dispatcher.apply(Order("o-1"))


async def test_hooks_see_type_kind_source_outcome_and_duration_of_every_call() -> None:
    recorder = Recorder()
    dispatcher, _ = make((Store(), {"source": "orders"}), hooks=[recorder])
    await dispatcher.apply(Order("o-1"))
    expected = PersistenceCall(Order, HandlerKind.OPERATION, "orders")
    assert recorder.started == [expected]
    [(call, result)] = recorder.finished
    assert call == expected
    assert result.outcome is Outcome.OK
    assert result.error is None
    assert result.duration >= 0


async def test_hooks_see_each_declining_handler_before_the_one_that_answers() -> None:
    recorder = Recorder()
    dispatcher, _ = make(
        (Store(declines=True), {"priority": 1, "source": "replica"}),
        (Store(), {}),
        hooks=[recorder],
    )
    await dispatcher.fetch_domain(Order, ["o-1"])
    assert [(c.source, r.outcome) for c, r in recorder.finished] == [
        ("replica", Outcome.DECLINED),
        ("default", Outcome.OK),
    ]


async def test_hooks_see_the_exception_a_handler_raised_and_it_still_propagates() -> None:
    recorder = Recorder()
    registry: PersistenceRegistry[Unit] = PersistenceRegistry()

    class Failing:
        async def retrieve(self, ids: Sequence[Any], uow: Unit) -> list[Order]:
            raise LookupError("index corrupt")

    registry.register_retrieval(Order, Failing())
    units = Units()
    dispatcher = PersistenceDispatcher(
        registry, {"default": units.factory("default")}, hooks=[recorder]
    )
    with pytest.raises(LookupError):
        await dispatcher.fetch_domain(Order, ["o-1"])
    [(_, result)] = recorder.finished
    assert result.outcome is Outcome.FAILED
    assert isinstance(result.error, LookupError)


async def test_a_failing_hook_is_logged_and_does_not_break_the_operation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    store = Store()
    dispatcher, _ = make((store, {}), hooks=[BrokenHook(), recorder])
    with caplog.at_level(logging.ERROR, logger="eventfold.persistence"):
        await dispatcher.apply(Order("o-1"))
    assert "o-1" in store.rows
    assert len(recorder.finished) == 1
    assert sum("hook" in r.getMessage() for r in caplog.records) == 2


async def test_the_logging_hook_writes_one_line_per_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher, _ = make((Store(), {"source": "orders"}), hooks=[LoggingPersistenceHook()])
    with caplog.at_level(logging.DEBUG, logger="eventfold.persistence"):
        await dispatcher.apply(Order("o-1"))
    [record] = caplog.records
    assert record.getMessage().startswith("operation Order on orders: ok in ")
