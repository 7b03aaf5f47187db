"""The shop's HTTP API on each SQL backend: statuses, problem details and the OpenAPI schema."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from examples.shop.api import create_app
from fastapi import FastAPI

_WAIT = 60.0
"""Seconds to wait for the read model: a bound against hanging, not a measure."""


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[FastAPI]:
    app = create_app(database_url)
    async with app.router.lifespan_context(app):
        await app.state.shop.reset()  # a fresh database per test, whatever ran before
        await app.state.shop.start()
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        yield client


async def stock(client: httpx.AsyncClient) -> None:
    await client.post("/products", json={"name": "Tea", "price": "4.50", "product_id": "tea"})
    await client.post("/products", json={"name": "Pot", "price": "120", "product_id": "pot"})
    await client.post(
        "/customers", json={"name": "Ada", "email": "ada@example.com", "customer_id": "ada"}
    )


async def summaries_of(client: httpx.AsyncClient, app: FastAPI, count: int) -> None:
    """Wait until the order summaries show ``count`` orders.

    The catch-up after a request gives up after a few seconds when its events are not
    readable yet (a loaded machine, a busy server), leaving them to the next catch-up;
    the shop runs no projection worker, so the wait catches the summaries up itself.
    """
    try:
        async with asyncio.timeout(_WAIT):
            while (await client.get("/orders")).json()["total"] != count:
                await app.state.shop.catch_up()
                await asyncio.sleep(0.05)
    except TimeoutError:
        msg = f"the order summaries did not show {count} orders in {_WAIT} s"
        raise AssertionError(msg) from None


async def place(client: httpx.AsyncClient, order_id: str, items: list[tuple[str, int]]) -> None:
    lines = [{"product_id": product, "quantity": quantity} for product, quantity in items]
    response = await client.post(
        "/orders", json={"customer_id": "ada", "items": lines, "order_id": order_id}
    )
    assert response.status_code == 201, response.text


async def test_creating_a_product_answers_201_with_the_product(client: httpx.AsyncClient) -> None:
    response = await client.post("/products", json={"name": "Tea", "price": "4.50"})
    assert response.status_code == 201
    assert response.json()["name"] == "Tea"
    assert response.json()["price"] == "4.50"


async def test_a_bad_price_answers_400_with_each_field_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/products", json={"name": "", "price": "-1"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    errors = {error["field"] for error in response.json()["errors"]}
    assert errors == {"name", "price"}


async def test_an_unknown_order_answers_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/orders/o-404")
    assert response.status_code == 404
    assert response.json()["title"] == "Not Found"


async def test_cancelling_a_cancelled_order_answers_409(client: httpx.AsyncClient) -> None:
    await stock(client)
    await place(client, "o-1", [("tea", 1)])
    first = await client.post("/orders/o-1/cancel", json={"reason": "changed my mind"})
    second = await client.post("/orders/o-1/cancel", json={"reason": "changed my mind"})
    assert first.status_code == 200
    assert second.status_code == 409
    assert second.json()["detail"] == "order o-1 is cancelled"


async def test_a_large_order_lifts_the_customers_tier_in_the_same_request(
    client: httpx.AsyncClient,
) -> None:
    await stock(client)
    await place(client, "o-1", [("pot", 1)])
    customer = (await client.get("/customers/ada")).json()
    assert (customer["tier"], customer["points"]) == ("silver", 120)


async def test_orders_are_listed_by_specification_newest_first(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    await stock(client)
    await place(client, "o-1", [("tea", 2)])
    await place(client, "o-2", [("pot", 1)])
    await place(client, "o-3", [("pot", 2)])
    await summaries_of(client, app, 3)
    response = await client.get("/orders", params={"customer_id": "ada", "min_total": "100"})
    page = response.json()
    assert [item["order_id"] for item in page["items"]] == ["o-3", "o-2"]
    assert page["total"] == 2


async def test_order_pages_follow_the_cursor(client: httpx.AsyncClient, app: FastAPI) -> None:
    await stock(client)
    for number in range(3):
        await place(client, f"o-{number}", [("tea", 1)])
    await summaries_of(client, app, 3)
    first = (await client.get("/orders", params={"limit": 2})).json()
    after = {"limit": 2, "after": first["next_cursor"]}
    second = (await client.get("/orders", params=after)).json()
    seen = [item["order_id"] for item in first["items"] + second["items"]]
    assert sorted(seen) == ["o-0", "o-1", "o-2"]


async def test_the_openapi_schema_lists_the_routes_and_their_problems(
    client: httpx.AsyncClient,
) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert {"/products", "/orders", "/orders/{order_id}/cancel"} <= set(schema["paths"])
    cancel = schema["paths"]["/orders/{order_id}/cancel"]["post"]["responses"]
    assert {"200", "400", "404", "409"} <= set(cancel)
    assert "application/problem+json" in cancel["409"]["content"]
    assert "422" not in schema["paths"]["/products"]["post"]["responses"]


async def test_an_orders_history_lists_its_events_with_actor_and_data(
    client: httpx.AsyncClient,
) -> None:
    await stock(client)
    await client.post(
        "/orders",
        json={
            "customer_id": "ada",
            "items": [{"product_id": "tea", "quantity": 2}],
            "order_id": "o-1",
        },
        headers={"X-Actor": "ada"},
    )
    history = (await client.get("/orders/o-1/history")).json()
    assert [entry["event"] for entry in history] == [
        "shop.OrderDrafted",
        "shop.OrderItemAdded",
        "shop.OrderPlaced",
    ]
    assert {entry["actor"] for entry in history} == {"ada"}
    assert history[1]["data"]["line"] == {"product_id": "tea", "quantity": 2, "unit_price": "4.50"}


async def test_placing_an_order_that_exists_answers_409_saying_so(
    client: httpx.AsyncClient,
) -> None:
    await stock(client)
    await place(client, "o-1", [("tea", 1)])
    lines = [{"product_id": "tea", "quantity": 1}]
    again = await client.post(
        "/orders", json={"customer_id": "ada", "items": lines, "order_id": "o-1"}
    )
    assert (again.status_code, again.json()["detail"]) == (409, "order o-1 already exists")


async def test_a_created_order_answers_with_its_location(client: httpx.AsyncClient) -> None:
    await stock(client)
    lines = [{"product_id": "tea", "quantity": 1}]
    created = await client.post(
        "/orders", json={"customer_id": "ada", "items": lines, "order_id": "o-7"}
    )
    assert created.headers["location"] == "/orders/o-7"
    assert (await client.get(created.headers["location"])).status_code == 200


async def test_a_cursor_that_is_not_one_answers_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/orders", params={"after": "junk"})
    assert (response.status_code, response.headers["content-type"]) == (
        400,
        "application/problem+json",
    )


async def test_a_minimum_total_no_store_can_hold_answers_400_naming_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/orders", params={"min_total": "1e999999"})
    body = response.json()
    assert (response.status_code, [e["field"] for e in body["errors"]]) == (400, ["total"])
    assert "finite" not in body["detail"]


@pytest.mark.parametrize("customer_id", ["c\\u0000", "c\\ud800"])
async def test_an_id_no_store_can_hold_answers_400_naming_it_on_every_backend(
    client: httpx.AsyncClient, customer_id: str
) -> None:
    body = f'{{"name": "Ada", "email": "ada@example.com", "customer_id": "{customer_id}"}}'
    response = await client.post(
        "/customers", content=body, headers={"content-type": "application/json"}
    )
    errors = [error["field"] for error in response.json()["errors"]]
    assert (response.status_code, errors) == (400, ["customer_id"])


async def test_a_search_value_with_a_nul_character_answers_400(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/orders", params={"customer_id": "ada\x00"})
    assert response.status_code == 400


async def test_an_id_with_a_nul_character_in_the_path_answers_400(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/products/tea%00")
    assert response.status_code == 400


async def test_an_as_of_before_the_calendar_in_utc_answers_400_naming_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/orders/o-1", params={"as_of": "0001-01-01T00:00:00+01:00"})
    body = response.json()
    assert (response.status_code, [e["field"] for e in body["errors"]]) == (400, ["as_of"])


async def test_a_name_with_a_nul_character_answers_400_naming_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/products", json={"name": "Te\u0000a", "price": "4.50"})
    errors = [error["field"] for error in response.json()["errors"]]
    assert (response.status_code, errors) == (400, ["name"])
