"""The shop's composition root: storage, events, persistence model, mediator and projections."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy.schema import DropTable

from eventfold import (
    CatchUpBehavior,
    DataSource,
    ErrorMappingBehavior,
    EventRegistry,
    LoggingBehavior,
    Mediator,
    PersistenceModel,
    Projection,
    ProjectionRunner,
    TransactionBehavior,
    ValidationBehavior,
    create_tables,
)
from eventfold.adapters.sql import create_read_models
from eventfold.adapters.sql import metadata as eventfold_tables
from eventfold.adapters.url import storage_from_url

from .application import HANDLERS, ShopSettings
from .domain import SHOP_EVENTS, Customer, CustomerLoyaltyUpgraded, Order, OrderPlaced, Product
from .projection import OrderSummaryProjection, order_summaries

DEFAULT_DATABASE_URL = "sqlite:///shop.db"


def utc_now() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


@dataclass
class Shop:
    """The wired application: what the demo, the HTTP API and the ``eventfold`` command use."""

    storage: Any
    events: EventRegistry
    model: PersistenceModel
    mediator: Mediator
    projections: list[Projection]
    runner: ProjectionRunner
    notifications: list[str] = field(default_factory=list)

    async def start(self) -> None:
        """Create eventfold's tables and the read model's table if missing."""
        await create_tables(self.storage)
        await create_read_models(self.storage, self.projections)

    async def reset(self) -> None:
        """Drop every table the shop uses, so the next start is from nothing."""
        tables = [order_summaries, *reversed(eventfold_tables.sorted_tables)]
        async with self.storage.transaction() as session:
            for table in tables:
                await session.execute_sql(DropTable(table, if_exists=True))

    async def catch_up(self) -> int:
        """Bring every projection up to the head of the log; return the events applied."""
        return sum([await self.runner.catch_up(name) for name in self.runner.projections])

    async def close(self) -> None:
        """Release the storage's connections."""
        await self.storage.close()


def persistence_model() -> PersistenceModel:
    """Products and customers as state rows, orders as events with a snapshot every 3."""
    model = PersistenceModel()
    model.state_stored(Product)
    model.event_sourced(Order, snapshot_every=3)
    # A customer is a row; its loyalty events go to the outbox in the same transaction.
    model.state_stored(Customer)
    return model


def bootstrap(
    database_url: str = DEFAULT_DATABASE_URL,
    *,
    schema: str | None = None,
    clock: Callable[[], datetime] = utc_now,
    follow_projections: bool = False,
) -> Shop:
    """Wire the shop on the database ``database_url`` names; nothing connects yet.

    ``follow_projections`` catches the projections up after every successful request, so
    a client reads its own writes (the HTTP API); otherwise call :meth:`Shop.catch_up`
    or run ``shop.runner`` in the background.
    """
    storage = storage_from_url(database_url, schema=schema)
    events = EventRegistry(SHOP_EVENTS)
    model = persistence_model()
    mediator = Mediator()
    source = DataSource("shop", storage, model, events, publish=mediator.publish, clock=clock)
    projections: list[Projection] = [OrderSummaryProjection()]
    runner = ProjectionRunner(storage, events, projections)
    shop = Shop(storage, events, model, mediator, projections, runner)
    if follow_projections:
        # Outside the transaction: catch the projections up once the request committed.
        mediator.add_behavior(CatchUpBehavior(runner))
    for behavior in (LoggingBehavior(), ErrorMappingBehavior(), ValidationBehavior()):
        mediator.add_behavior(behavior)
    mediator.add_behavior(TransactionBehavior(source.unit_of_work))
    settings = ShopSettings(clock)
    for request_type, handler in HANDLERS.items():
        mediator.register(request_type, partial(handler, settings=settings))
    _subscribe_notifications(mediator, shop.notifications)
    return shop


@dataclass
class _Notifier:
    """An in-process event handler: runs after the commit, never for a rolled-back command."""

    outbox: list[str]
    describe: Callable[[Any], str]

    async def handle(self, event: object, /) -> None:
        self.outbox.append(self.describe(event))


def _subscribe_notifications(mediator: Mediator, sent: list[str]) -> None:
    placed = _Notifier(sent, lambda e: f"email: order {e.order_id} placed, total {e.total}")
    upgraded = _Notifier(
        sent, lambda e: f"email: customer {e.customer_id} is now {e.new_tier} (+{e.points} points)"
    )
    mediator.subscribe(OrderPlaced, lambda: placed)
    mediator.subscribe(CustomerLoyaltyUpgraded, lambda: upgraded)
