"""The caching dispatcher on the in-memory cache: read-through, invalidation, outages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from eventfold.adapters.memory.cache import MemoryCache
from eventfold.application.persistence.caching import CachingPersistenceDispatcher
from eventfold.application.persistence.dispatcher import PersistenceDispatcher, PersistenceRegistry
from eventfold.application.readside.queries import Page, QueryOptions, SearchResult, query_in_memory
from eventfold.domain.aggregate import AggregateRoot
from eventfold.errors import StoreUnavailableError


@dataclass
class CartState:
    items: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ItemAdded:
    item: str


class Cart(AggregateRoot[CartState, str]):
    def add(self, item: str) -> None:
        self.record(ItemAdded(item))

    def apply_ItemAdded(self, event: ItemAdded) -> None:
        self.state.items.append(event.item)


@dataclass
class CartView:
    id: str
    count: int


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Unit:
    """A unit of work with no after-commit callbacks."""

    committed: bool = False

    async def commit(self) -> None:
        self.committed = True


@dataclass
class UnitWithCallbacks:
    """A unit of work that runs callbacks once it has committed."""

    callbacks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def after_commit(self, callback: Callable[[], Awaitable[None]]) -> None:
        self.callbacks.append(callback)

    async def commit(self) -> None:
        for callback in self.callbacks:
            await callback()


class Database:
    """Stored carts as (items, version); a unit's writes land when it commits."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[list[str], int]] = {}
        self.loads: list[list[str]] = []
        self.pause: asyncio.Event | None = None
        self.loaded: asyncio.Event = asyncio.Event()

    async def persist(self, cart: Cart, uow: Any) -> None:
        self.rows[cart.id] = (list(cart.state.items), cart.version)
        cart.pull_events()

    async def retrieve(self, ids: Sequence[str], uow: Any) -> list[Cart]:
        self.loads.append(list(ids))
        found = [self._cart(i) for i in ids if i in self.rows]
        if self.pause is not None:
            self.loaded.set()
            await self.pause.wait()
        return found

    async def fetch(self, ids: Sequence[str], uow: Any) -> list[CartView]:
        self.loads.append(list(ids))
        return [CartView(i, len(self.rows[i][0])) for i in ids if i in self.rows]

    async def search(self, options: QueryOptions, uow: Any) -> SearchResult[CartView]:
        self.loads.append(["<search>"])
        views = [CartView(i, len(items)) for i, (items, _) in self.rows.items()]

        async def page(opts: QueryOptions) -> Page[CartView]:
            return query_in_memory(views, opts, key=lambda v: v.id)

        return SearchResult(page, options)

    def _cart(self, cart_id: str) -> Cart:
        items, version = self.rows[cart_id]
        cart = Cart.rehydrate(cart_id, (), state=CartState(list(items)), version=version)
        assert isinstance(cart, Cart)
        return cart


class SwitchableCache(MemoryCache):
    """An in-memory cache that can be made unreachable, as a server outage looks."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailableError("cache", "connection refused")

    async def get_many(self, keys: Sequence[str]) -> list[str | None]:
        self._check()
        return await super().get_many(keys)

    async def set(self, key: str, value: str, *, ttl: float) -> None:
        self._check()
        await super().set(key, value, ttl=ttl)

    async def delete_many(self, keys: Sequence[str]) -> None:
        self._check()
        await super().delete_many(keys)

    async def incr(self, key: str, *, ttl: float) -> int:
        self._check()
        return await super().incr(key, ttl=ttl)


@dataclass
class Setup:
    db: Database
    cache: SwitchableCache
    clock: Clock
    dispatcher: CachingPersistenceDispatcher[Any]

    async def put(self, cart_id: str, *items: str) -> Cart:
        """Store a cart through the caching dispatcher."""
        found = await self.dispatcher.fetch_domain(Cart, [cart_id])
        cart = found[0] if found else Cart(cart_id)
        for item in items:
            cart.add(item)
        await self.dispatcher.apply(cart)
        return cart


def make_setup(cache_type: type[SwitchableCache] | None = None, **options: Any) -> Setup:
    db = Database()
    registry: PersistenceRegistry[Any] = PersistenceRegistry()
    registry.register_operation(Cart, db)
    registry.register_retrieval(Cart, db)
    registry.register_query(CartView, db)
    registry.register_query_spec(CartView, db)

    @asynccontextmanager
    async def open_unit() -> AsyncIterator[Unit]:
        yield Unit()

    inner = PersistenceDispatcher(registry, {"default": open_unit})
    clock = Clock()
    cache = (cache_type or SwitchableCache)(clock)
    dispatcher = CachingPersistenceDispatcher(inner, cache, ttl=60, clock=clock, **options)
    return Setup(db, cache, clock, dispatcher)


@pytest.fixture
def setup() -> Setup:
    return make_setup()


async def test_a_second_load_is_served_from_the_cache(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    setup.db.loads.clear()
    first = await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    second = await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert setup.db.loads == [["c-1"]]
    assert first[0].state == second[0].state == CartState(["apple"])


async def test_a_cached_aggregate_comes_back_at_its_version_with_no_pending_events(
    setup: Setup,
) -> None:
    await setup.put("c-1", "apple", "pear")
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    [cart] = await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert isinstance(cart, Cart)
    assert (cart.id, cart.version, cart.pending_events) == ("c-1", 2, ())


async def test_each_read_of_a_cached_aggregate_is_a_fresh_object(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    [mutated] = await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    mutated.state.items.append("not saved")
    [again] = await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert again.state.items == ["apple"]


async def test_only_the_ids_missing_from_the_cache_are_loaded(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    await setup.put("c-2", "pear")
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    setup.db.loads.clear()
    await setup.dispatcher.fetch_domain(Cart, ["c-1", "c-2", "absent"])
    assert setup.db.loads == [["c-2", "absent"]]


async def test_results_come_in_the_order_of_the_ids_asked_for(setup: Setup) -> None:
    for cart_id in ("c-1", "c-2", "c-3"):
        await setup.put(cart_id, "x")
    await setup.dispatcher.fetch_domain(Cart, ["c-2"])
    carts = await setup.dispatcher.fetch_domain(Cart, ["c-3", "c-2", "c-1", "c-2"])
    assert [c.id for c in carts] == ["c-3", "c-2", "c-1"]


async def test_a_write_through_the_dispatcher_is_seen_by_the_next_read(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    await setup.put("c-1", "pear")
    [cart] = await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert cart.state.items == ["apple", "pear"]


async def test_a_reader_that_loaded_before_a_write_cannot_cache_the_old_value(
    setup: Setup,
) -> None:
    await setup.put("c-1", "apple")
    gate = setup.db.pause = asyncio.Event()
    slow_read = asyncio.create_task(setup.dispatcher.fetch_domain(Cart, ["c-1"]))
    await asyncio.wait_for(setup.db.loaded.wait(), 5)  # the slow reader holds the old value
    setup.db.pause = None
    cart = setup.db._cart("c-1")
    cart.add("pear")
    await setup.dispatcher.apply(cart)  # commits and invalidates while the read is in flight
    gate.set()
    old = await asyncio.wait_for(slow_read, 5)  # stores the old value, with the old generation
    [fresh] = await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert old[0].state.items == ["apple"]
    assert fresh.state.items == ["apple", "pear"]


async def test_an_entry_expires_after_the_ttl(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    setup.clock.now += 61
    setup.db.loads.clear()
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert setup.db.loads == [["c-1"]]


async def test_read_models_fetched_by_id_are_cached_by_their_id(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    setup.db.loads.clear()
    await setup.dispatcher.fetch(CartView, ["c-1"])
    views = await setup.dispatcher.fetch(CartView, ["c-1"])
    assert views == [CartView("c-1", 1)]
    assert setup.db.loads == [["c-1"]]


async def test_searches_are_never_cached(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    setup.db.loads.clear()
    for _ in range(2):
        result = await setup.dispatcher.fetch(CartView, QueryOptions())
        assert await result == [CartView("c-1", 1)]
    assert setup.db.loads == [["<search>"], ["<search>"]]


async def test_invalidate_drops_cached_read_models(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    await setup.dispatcher.fetch(CartView, ["c-1"])
    await setup.put("c-1", "pear")  # a projection would update the view, then invalidate
    await setup.dispatcher.invalidate(CartView, ["c-1"])
    assert await setup.dispatcher.fetch(CartView, ["c-1"]) == [CartView("c-1", 2)]


async def test_a_type_whose_codec_is_none_is_never_cached() -> None:
    setup = make_setup(codecs={Cart: None})
    await setup.put("c-1", "apple")
    setup.db.loads.clear()
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert setup.db.loads == [["c-1"], ["c-1"]]


async def test_an_undecodable_entry_is_a_miss_and_is_rewritten(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    [key] = [k for k in setup.cache._entries if k.endswith(":d")]
    generation = (await setup.cache.get(key) or "").partition("|")[0]
    await setup.cache.set(key, f"{generation}|{{not json", ttl=60)
    [cart] = await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert cart.state.items == ["apple"]
    assert (await setup.cache.get(key) or "").endswith("}")


async def test_reads_in_a_caller_s_unit_of_work_bypass_the_cache(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    setup.db.loads.clear()
    await setup.dispatcher.fetch_domain(Cart, ["c-1"], Unit())
    await setup.dispatcher.fetch_domain(Cart, ["c-1"], Unit())
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert setup.db.loads == [["c-1"], ["c-1"], ["c-1"]]


async def test_with_a_caller_s_unit_of_work_entries_are_invalidated_after_its_commit(
    setup: Setup,
) -> None:
    await setup.put("c-1", "apple")
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    cart = setup.db._cart("c-1")
    cart.add("pear")
    unit = UnitWithCallbacks()
    await setup.dispatcher.apply(cart, unit)
    assert setup.dispatcher.pending_invalidations == 0
    assert len(unit.callbacks) == 1
    await unit.commit()
    [fresh] = await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert fresh.state.items == ["apple", "pear"]


async def test_without_after_commit_the_written_id_is_leased_out_of_the_cache(
    setup: Setup,
) -> None:
    await setup.put("c-1", "apple")
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    cart = setup.db._cart("c-1")
    cart.add("pear")
    await setup.dispatcher.apply(cart, Unit())
    setup.db.loads.clear()
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert setup.db.loads == [["c-1"], ["c-1"]]  # neither served nor filled while leased


async def test_after_the_lease_the_id_is_cached_again(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    cart = setup.db._cart("c-1")
    cart.add("pear")
    await setup.dispatcher.apply(cart, Unit())
    setup.clock.now += 31
    setup.db.loads.clear()
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert setup.db.loads == [["c-1"]]


async def test_reads_fall_back_to_the_database_while_the_cache_is_down(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    setup.cache.down = True
    [cart] = await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert cart.state.items == ["apple"]


async def test_an_outage_is_warned_about_once_per_interval(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    await setup.put("c-1", "apple")
    setup.cache.down = True
    with caplog.at_level(logging.WARNING, logger="eventfold.cache"):
        for _ in range(5):
            await setup.dispatcher.fetch_domain(Cart, ["c-1"])
            setup.clock.now += 2  # past retry_after: every read tries the cache again
    assert len(caplog.records) == 1


async def test_a_write_during_an_outage_is_not_hidden_by_the_old_entry_afterwards(
    setup: Setup,
) -> None:
    await setup.put("c-1", "apple")
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])  # cached: ["apple"]
    setup.cache.down = True
    await setup.put("c-1", "pear")  # committed; the invalidation fails
    assert setup.dispatcher.pending_invalidations == 1
    setup.cache.down = False
    setup.clock.now += 2
    [cart] = await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert cart.state.items == ["apple", "pear"]
    assert setup.dispatcher.pending_invalidations == 0


async def test_while_an_invalidation_is_pending_reads_skip_the_cache(setup: Setup) -> None:
    await setup.put("c-1", "apple")
    await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    setup.cache.down = True
    await setup.put("c-1", "pear")
    setup.clock.now += 2
    [cart] = await setup.dispatcher.fetch_domain(Cart, ["c-1"])
    assert cart.state.items == ["apple", "pear"]
    assert setup.dispatcher.pending_invalidations == 1


class GatedCache(SwitchableCache):
    """Holds the first delete after ``gate`` is set up, as a slow cache server would."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.gate: asyncio.Event | None = None
        self.held = asyncio.Event()

    async def delete_many(self, keys: Sequence[str]) -> None:
        self._check()
        gate, self.gate = self.gate, None
        if gate is not None:
            self.held.set()
            await gate.wait()
        await super().delete_many(keys)


async def test_a_write_whose_invalidation_fails_during_a_replay_stays_pending() -> None:
    setup = make_setup(GatedCache)
    cache, dispatcher = setup.cache, setup.dispatcher
    assert isinstance(cache, GatedCache)
    await setup.put("c-1", "apple")
    cache.down = True
    await setup.put("c-1", "pear")  # committed; the invalidation is remembered
    cache.down, setup.clock.now = False, setup.clock.now + 2
    gate = cache.gate = asyncio.Event()
    replaying = asyncio.create_task(dispatcher.fetch_domain(Cart, ["c-1"]))
    await asyncio.wait_for(cache.held.wait(), 10)  # the replay bumped the generation
    cache.down = True
    await setup.put("c-1", "plum")  # committed while the replay runs; its invalidation fails
    cache.down = False
    gate.set()
    await asyncio.wait_for(replaying, 10)
    assert dispatcher.pending_invalidations == 1
