"""A scripted day at the shop, shown step by step: commands, events, read model, history."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from sqlalchemy import func, select

from eventfold import OperationResult, event_name
from eventfold.adapters.sql import metadata as eventfold_tables

from .application import (
    AddItem,
    CancelOrder,
    ChangePrice,
    CreateProduct,
    DeactivateProduct,
    GetOrder,
    GetOrderHistory,
    OrderItem,
    PlaceOrder,
    RegisterCustomer,
    SearchOrders,
    StartOrder,
    SubmitOrder,
    UpdateProfile,
    UpgradeLoyalty,
)
from .bootstrap import Shop, bootstrap
from .checkout import PAYMENT_WINDOW, checkout
from .projection import order_summaries

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class ScriptedClock:
    """The demo's clock: a minute passes between steps, so times read the same every run."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def tick(self, minutes: int = 1) -> datetime:
        self.now += timedelta(minutes=minutes)
        return self.now


@dataclass
class EventLog:
    """Collects the events published after each commit (an in-process handler of everything)."""

    seen: list[object] = field(default_factory=list)

    async def handle(self, event: object, /) -> None:
        self.seen.append(event)

    def take(self) -> list[object]:
        taken, self.seen = self.seen, []
        return taken


class Demo:
    """Sends the script's requests and prints what each one did."""

    def __init__(self, shop: Shop, console: Console, clock: ScriptedClock) -> None:
        self.shop = shop
        self.console = console
        self.clock = clock
        self.events = EventLog()
        shop.mediator.subscribe(object, lambda: self.events)
        self.table: Table | None = None

    def section(self, title: str) -> None:
        self.flush()
        self.console.rule(f"[bold]{title}")
        self.table = Table("command", "result", "events recorded", expand=True)

    def flush(self) -> None:
        if self.table is not None and self.table.row_count:
            self.console.print(self.table)
        self.table = None

    async def send(self, request: object, *, actor: str = "back-office", **kw: Any) -> Any:
        self.clock.tick()
        result = await self.shop.mediator.send(request, actor=actor, **kw)
        events = "\n".join(_describe_event(e) for e in self.events.take()) or "-"
        assert self.table is not None
        self.table.add_row(_describe_request(request), _describe_result(result), events)
        return result


def _describe_request(request: object) -> str:
    fields = ", ".join(f"{k}={_short(v)}" for k, v in vars(request).items() if v is not None)
    return f"{type(request).__name__}({fields})"


def _short(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, OrderItem):
        return f"{value.quantity}x{value.product_id}"
    return repr(value) if isinstance(value, str) else str(value)


def _describe_result(result: OperationResult[Any]) -> str:
    text = f"{result.status} {HTTPStatus(result.status).phrase}"
    if result.is_success:
        return f"[green]{text}"
    lines = [f"[red]{text}[/red]: {result.detail}"]
    lines.extend(f"  {e.field}: {e.message}" for e in result.errors)
    return "\n".join(lines)


def _describe_event(event: object) -> str:
    return f"{event_name(type(event))}"


async def run_demo(
    database_url: str, *, schema: str | None = None, console: Console | None = None
) -> Shop:
    """Play the script on a fresh database and print it; returns the (closed) shop."""
    console = console or Console()
    clock = ScriptedClock()
    shop = bootstrap(database_url, schema=schema, clock=clock)
    try:
        await shop.reset()
        await shop.start()
        demo = Demo(shop, console, clock)
        await _catalogue(demo)
        await _customers(demo)
        cancelled_at = await _orders(demo)
        await _rejections(demo)
        demo.flush()
        await _read_model(demo)
        await _temporal(demo, cancelled_at)
        await _audit(demo)
        await _summary(demo)
        await _checkout(demo)
    finally:
        await shop.close()
    return shop


async def _catalogue(demo: Demo) -> None:
    demo.section("Catalogue: products are state rows")
    await demo.send(CreateProduct("Sencha tea", Decimal("4.50"), "tea"))
    await demo.send(CreateProduct("Cast-iron teapot", Decimal("120.00"), "pot"))
    await demo.send(CreateProduct("Stoneware mug", Decimal("8.00"), "mug"))
    await demo.send(ChangePrice("mug", Decimal("9.50")))
    await demo.send(ChangePrice("mug", Decimal("9.50")))  # unchanged: records nothing
    await demo.send(DeactivateProduct("mug"))


async def _customers(demo: Demo) -> None:
    demo.section("Customers: state rows whose events go to the outbox")
    await demo.send(RegisterCustomer("Ada Lovelace", "ada@example.com", "ada"))
    await demo.send(RegisterCustomer("Grace Hopper", "grace@navy.example", "grace"))
    await demo.send(UpdateProfile("grace", "Grace Hopper", "grace@example.com"), actor="grace")
    await demo.send(UpgradeLoyalty("grace", "gold", 50))


async def _orders(demo: Demo) -> datetime:
    demo.section("Orders: event-sourced; placing one may lift the customer's tier")
    items = [OrderItem("tea", 2), OrderItem("pot", 1)]
    await demo.send(PlaceOrder("ada", items, "o-1001"), actor="ada", correlation_id="checkout-1")
    await demo.send(StartOrder("grace", "o-1002"), actor="grace")
    await demo.send(AddItem("o-1002", "tea", 3), actor="grace")
    await demo.send(SubmitOrder("o-1002"), actor="grace", correlation_id="checkout-2")
    await demo.send(PlaceOrder("ada", [OrderItem("tea", 1)], "o-1003"), actor="ada")
    before_cancel = demo.clock.tick(30)
    await demo.send(CancelOrder("o-1001", "found a cheaper teapot"), actor="ada")
    return before_cancel


async def _rejections(demo: Demo) -> None:
    demo.section("Rejected requests: nothing is stored, nothing is published")
    await demo.send(CreateProduct("", Decimal("-3"), "bad"))
    await demo.send(RegisterCustomer("Bob", "bob-at-example.com"))
    await demo.send(PlaceOrder("ada", [OrderItem("mug", 1)], "o-1004"), actor="ada")
    await demo.send(CancelOrder("o-1001", "changed my mind again"), actor="ada")
    await demo.send(AddItem("o-1003", "pot", 1), actor="ada")
    await demo.send(GetOrder("o-9999"))


async def _read_model(demo: Demo) -> None:
    console, shop = demo.console, demo.shop
    console.rule("[bold]Read model: order summaries, projected from the global log")
    lag = await shop.runner.lag("order-summaries")
    console.print(f"before catching up: {lag.events_behind} events behind")
    applied = await _catch_up_fully(shop)
    console.print(f"caught up: {applied} events applied, checkpoint saved in the same commit")
    everything = (await shop.mediator.send(SearchOrders())).unwrap()
    console.print(_summary_table("all orders, newest first", everything))
    big = SearchOrders(customer_id="ada", min_total=Decimal(100))
    console.print(_summary_table("ada's orders with total >= 100", (await _query(demo, big))))
    first = await _query(demo, SearchOrders(limit=2))
    console.print(_summary_table("page 1 (limit 2)", first))
    second = await _query(demo, SearchOrders(limit=2, after=first.next_cursor))
    console.print(_summary_table("page 2 (after the cursor of page 1)", second))


_CATCH_UP_WITHIN = 60.0
"""Seconds the demo waits for its read model to apply every committed event: a bound
against hanging, not a measure."""


async def _catch_up_fully(shop: Shop) -> int:
    """Catch up until every committed event is applied; return how many were applied.

    On PostgreSQL the log is read only up to the oldest writer of the store still in
    flight (so no late commit is ever skipped); on a busy machine an event may become
    readable a moment after its commit, so wait for it rather than show a partial table.
    """
    applied = 0
    try:
        async with asyncio.timeout(_CATCH_UP_WITHIN):
            while True:
                applied += await shop.catch_up()
                lags = [await shop.runner.lag(name) for name in shop.runner.projections]
                if all(lag.checkpoint >= lag.committed_head for lag in lags):
                    return applied
                await asyncio.sleep(0.05)
    except TimeoutError:
        msg = f"the read model did not reach the last committed event in {_CATCH_UP_WITHIN} s"
        raise RuntimeError(msg) from None


async def _query(demo: Demo, query: SearchOrders) -> Any:
    return (await demo.shop.mediator.send(query)).unwrap()


def _summary_table(title: str, page: Any) -> Table:
    table = Table("order", "customer", "status", "total", "items", "updated", title=title)
    for row in page.items:
        updated = row.updated_at.strftime("%H:%M")
        table.add_row(
            row.order_id, row.customer_id, row.status, str(row.total), str(row.item_count), updated
        )
    table.caption = f"{page.total} matching"
    return table


async def _temporal(demo: Demo, before_cancel: datetime) -> None:
    console, mediator = demo.console, demo.shop.mediator
    console.rule("[bold]Temporal query: order o-1001 then and now")
    then = (await mediator.send(GetOrder("o-1001", as_of=before_cancel))).unwrap()
    now = (await mediator.send(GetOrder("o-1001"))).unwrap()
    table = Table("as of", "status", "total", "version", "cancellation reason")
    table.add_row(before_cancel.isoformat(), then.status, str(then.total), str(then.version), "-")
    table.add_row("now", now.status, str(now.total), str(now.version), now.cancellation_reason)
    console.print(table)


async def _audit(demo: Demo) -> None:
    console = demo.console
    console.rule("[bold]Audit trail: every event of order o-1001")
    history = (await demo.shop.mediator.send(GetOrderHistory("o-1001"))).unwrap()
    table = Table("v", "event", "occurred at", "actor", "correlation id", "data")
    for entry in history:
        data = {k: v for k, v in entry.data.items() if k != "order_id"}
        table.add_row(
            str(entry.version),
            entry.event.removeprefix("shop."),
            entry.occurred_at.strftime("%H:%M:%S"),
            entry.actor,
            entry.correlation_id,
            json.dumps(data, separators=(",", ":")),
        )
    console.print(table)


async def _summary(demo: Demo) -> None:
    shop, console = demo.shop, demo.console
    console.rule("[bold]What was stored where")
    tables = eventfold_tables.tables
    events, documents = tables["eventfold_events"], tables["eventfold_documents"]
    outbox, snapshots = tables["eventfold_outbox"], tables["eventfold_snapshots"]
    checkpoints = tables["eventfold_checkpoints"]
    async with shop.storage.transaction() as session:
        streams = await session.execute_sql(
            select(events.c.stream_id, func.count().label("n"))
            .group_by(events.c.stream_id)
            .order_by(events.c.stream_id)
        )
        rows = await session.execute_sql(
            select(documents.c.collection, func.count().label("n"))
            .group_by(documents.c.collection)
            .order_by(documents.c.collection)
        )
        waiting = await session.execute_sql(
            select(outbox.c.aggregate_type, func.count().label("n"))
            .where(outbox.c.published_at.is_(None))
            .group_by(outbox.c.aggregate_type)
            .order_by(outbox.c.aggregate_type)
        )
        snapshot_rows = await session.execute_sql(
            select(snapshots.c.stream_id, snapshots.c.version)
        )
        marks = await session.execute_sql(select(checkpoints.c.name, checkpoints.c.position))
        summary_rows = await session.execute_sql(select(func.count()).select_from(order_summaries))
    table = Table("where", "what", "count", title="storage")
    for row in streams:
        table.add_row("event store", f"stream {row['stream_id']}", str(row["n"]))
    for row in snapshot_rows:
        table.add_row("snapshots", f"stream {row['stream_id']}", f"at v{row['version']}")
    for row in rows:
        table.add_row("state rows", row["collection"], str(row["n"]))
    for row in waiting:
        table.add_row("outbox (waiting for relay)", row["aggregate_type"], str(row["n"]))
    for row in marks:
        table.add_row("checkpoints", row["name"], f"position {row['position']}")
    count = next(iter(summary_rows[0].values()))
    table.add_row("read model", order_summaries.name, str(count))
    table.add_row("in-process handlers", "notifications sent", str(len(shop.notifications)))
    console.print(table)
    console.print(Panel("\n".join(shop.notifications), title="notifications (after commit only)"))


async def _checkout(demo: Demo) -> None:
    """The order saga: paid and in stock; paid but out of stock; never paid."""
    demo.section("Checkout saga: order -> payment -> inventory -> confirmation")
    desk = checkout(demo.shop, demo.clock, stock={"tea": 10, "pot": 1})
    await demo.send(PlaceOrder("ada", [OrderItem("tea", 2)], "o-2001"), actor="ada")
    await demo.send(PlaceOrder("grace", [OrderItem("pot", 3)], "o-2002"), actor="grace")
    await demo.send(PlaceOrder("ada", [OrderItem("tea", 1)], "o-2003"), actor="ada")
    demo.flush()
    for order_id, items in (("o-2001", {"tea": 2}), ("o-2002", {"pot": 3}), ("o-2003", {"tea": 1})):
        await desk.start(order_id, items)
    await desk.payment_received("o-2001")  # in stock: confirmed
    await desk.payment_received("o-2002")  # 3 pots, 1 in stock: the warehouse refuses
    # Nobody pays for o-2003: once its 15 minutes are over, the scheduler fires the timeout.
    demo.clock.tick(int(PAYMENT_WINDOW.total_seconds() // 60) + 1)
    await desk.fire_due_timeouts()
    table = Table("saga", "status", "order", "steps", "why", title="checkout sagas")
    for order_id in ("o-2001", "o-2002", "o-2003"):
        state = await desk.orchestrator.get(f"checkout-{order_id}")
        order = await demo.shop.mediator.send(GetOrder(order_id))
        assert state is not None
        assert order.data is not None
        steps = ", ".join(f"{e.step} {e.outcome}" for e in state.history)
        why = state.last_error or ""
        table.add_row(state.saga_id, str(state.status), order.data.status, steps, why)
    demo.console.print(table)
    done = [*desk.payments.log, *desk.warehouse.log, *desk.confirmations]
    demo.console.print(Panel("\n".join(done), title="what the other contexts were asked"))
    await _catch_up_fully(demo.shop)  # the read model follows the checkouts' orders too
