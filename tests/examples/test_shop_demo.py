"""The shop's scripted day runs on each SQL backend and shows what it stored."""

from __future__ import annotations

import re

import pytest
from examples.shop.demo import run_demo
from rich.console import Console


@pytest.fixture
async def output(database_url: str) -> str:
    console = Console(record=True, width=200, force_terminal=False)
    await run_demo(database_url, console=console)
    return console.export_text()


def rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of every table row whose first cell is ``first_cell``."""
    found = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0] == first_cell:
            found.append(cells)
    return found


async def test_each_command_shows_its_status_and_the_events_it_recorded(output: str) -> None:
    assert rows(output, "CreateProduct(name='Sencha tea', price=4.50, product_id='tea')")[0][
        1:
    ] == [
        "201 Created",
        "shop.ProductCreated",
    ]
    unchanged = rows(output, "ChangePrice(product_id='mug', new_price=9.50)")
    assert [row[1:] for row in unchanged] == [
        ["200 OK", "shop.ProductPriceChanged"],
        ["200 OK", "-"],
    ]
    placed = output.split("PlaceOrder(customer_id='ada', items=[2xtea, 1xpot]")[1]
    for event in ("CustomerLoyaltyUpgraded", "OrderDrafted", "OrderItemAdded", "OrderPlaced"):
        assert f"shop.{event}" in placed.split("StartOrder")[0]


async def test_an_invalid_command_is_rejected_with_each_field_error(output: str) -> None:
    rejected = output.split("CreateProduct(name='', price=-3")[1].split(
        "RegisterCustomer", maxsplit=1
    )[0]
    assert "400 Bad Request" in rejected
    assert "name: String should have at least 1 character" in rejected
    assert "price: Input should be greater than 0" in rejected


async def test_domain_rules_reject_with_conflict_and_not_found(output: str) -> None:
    assert "409 Conflict: product mug is no longer sold" in output
    assert "409 Conflict: order o-1001 is cancelled" in output
    assert "404 Not Found: order 'o-9999' was not found" in output


async def test_the_projection_shows_every_order_newest_first(output: str) -> None:
    table = output.split("all orders, newest first")[1].split("matching", maxsplit=1)[0]
    assert rows(table, "o-1001") == [["o-1001", "ada", "cancelled", "129.00", "3", "09:46"]]
    assert rows(table, "o-1002") == [["o-1002", "grace", "placed", "13.50", "3", "09:14"]]
    assert table.index("o-1001") < table.index("o-1003") < table.index("o-1002")
    filtered = output.split("ada's orders with total >= 100")[1].split("matching", maxsplit=1)[0]
    assert rows(filtered, "o-1001")
    assert not rows(filtered, "o-1003")


async def test_the_temporal_query_shows_the_order_before_and_after_cancelling(
    output: str,
) -> None:
    section = output.split("Temporal query")[1].split("Audit trail", maxsplit=1)[0]
    assert rows(section, "2026-03-02T09:45:00+00:00")[0][1:4] == ["placed", "129.00", "4"]
    assert rows(section, "now")[0][1:5] == ["cancelled", "129.00", "5", "found a cheaper teapot"]


async def test_the_audit_trail_lists_each_event_with_actor_and_correlation(output: str) -> None:
    section = output.split("Audit trail")[1].split("What was stored where", maxsplit=1)[0]
    assert rows(section, "1")[0][1:5] == ["OrderDrafted", "09:11:00", "ada", "checkout-1"]
    assert rows(section, "5")[0][1:4] == ["OrderCancelled", "09:46:00", "ada"]


async def test_the_summary_counts_what_was_stored_where(output: str) -> None:
    section = output.split("What was stored where")[1]
    assert ["event store", "stream Order-o-1001", "5"] in rows(section, "event store")
    assert ["state rows", "Product", "3"] in rows(section, "state rows")
    outbox = rows(section, "outbox (waiting for relay)")
    assert ["outbox (waiting for relay)", "Order", "11"] in outbox
    assert ["checkpoints", "order-summaries", "position 11"] in rows(section, "checkpoints")


async def test_the_demo_runs_twice_in_a_row_from_a_fresh_state(database_url: str) -> None:
    for _ in range(2):
        console = Console(record=True, width=200)
        await run_demo(database_url, console=console)
    stored = rows(console.export_text(), "event store")
    assert ["event store", "stream Order-o-1001", "5"] in stored


async def test_the_checkout_saga_confirms_a_paid_order_in_stock(output: str) -> None:
    [row] = rows(output, "checkout-o-2001")
    assert row[1:3] == ["completed", "placed"]
    assert "email: order o-2001 confirmed" in output


async def test_an_out_of_stock_order_is_refunded_and_cancelled_in_reverse_order(
    output: str,
) -> None:
    [row] = rows(output, "checkout-o-2002")
    assert row[1:3] == ["compensated", "cancelled"]
    assert "out of stock: pot" in row[4]
    assert "payment pay-o-2002 voided or refunded" in output


async def test_an_unpaid_order_is_cancelled_when_its_payment_times_out(output: str) -> None:
    [row] = rows(output, "checkout-o-2003")
    assert row[1:3] == ["compensated", "cancelled"]
    assert "timed out" in row[4]
    assert "reserved {'tea': 1}" not in output
