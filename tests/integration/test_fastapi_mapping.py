"""The FastAPI mapping, end to end over ASGI: statuses, JSON bodies, problems, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Response
from pydantic import BaseModel, Field

from eventfold import (
    CommandHandler,
    ConfigurationError,
    InvalidStateError,
    InvalidValueError,
    Mediator,
    OperationResult,
    QueryHandler,
    RequestContext,
    StoreUnavailableError,
    default_behaviors,
)
from eventfold.integrations.fastapi import MediatorDep, problem_responses, setup, to_response


@dataclass(frozen=True)
class Order:
    order_id: str
    total: Decimal
    placed_at: datetime


@dataclass(frozen=True)
class PlaceOrder:
    order_id: str
    quantity: Annotated[int, Field(gt=0)]


@dataclass(frozen=True)
class ShipOrder:
    order_id: str


@dataclass(frozen=True)
class GetOrder:
    order_id: str


ORDERS = {"o-1": Order("o-1", Decimal("19.90"), datetime(2024, 5, 1, 9, 30, tzinfo=UTC))}


class PlaceOrderHandler(CommandHandler[PlaceOrder, Order]):
    def __init__(self, context: RequestContext) -> None:
        self.context = context

    async def handle(self, command: PlaceOrder, /) -> OperationResult[Order]:
        if command.order_id == "boom":
            raise RuntimeError("connection to db-7.internal refused for user admin")
        if command.order_id == "down":
            raise StoreUnavailableError("PostgreSQL at db-7.internal", "connection refused")
        if command.order_id == "bad-cursor":
            raise InvalidValueError("after", "junk", "the cursor does not fit this field")
        return self.created(
            Order(command.order_id, Decimal("1.10") * command.quantity, ORDERS["o-1"].placed_at)
        )


class ShipOrderHandler(CommandHandler[ShipOrder, None]):
    def __init__(self, context: RequestContext) -> None:
        self.context = context

    async def handle(self, command: ShipOrder, /) -> OperationResult[None]:
        if command.order_id == "o-shipped":
            raise InvalidStateError("the order has already shipped")
        return self.no_content()


class GetOrderHandler(QueryHandler[GetOrder, Order]):
    def __init__(self, context: RequestContext) -> None:
        self.context = context

    async def handle(self, query: GetOrder, /) -> OperationResult[Order]:
        if query.order_id == "malformed":  # data that breaks the response model
            return self.ok(Order("malformed", "lots", ORDERS["o-1"].placed_at))  # type: ignore[arg-type]
        order = ORDERS.get(query.order_id)
        return self.ok(order) if order else self.not_found(f"order {query.order_id} was not found")


@dataclass(frozen=True)
class OrderSummary:
    order_id: str


class PlaceOrderBody(BaseModel):
    order_id: str = Field(min_length=1)
    quantity: int


def build_app() -> FastAPI:
    mediator = Mediator(default_behaviors())
    mediator.register(PlaceOrder, PlaceOrderHandler)
    mediator.register(ShipOrder, ShipOrderHandler)
    mediator.register(GetOrder, GetOrderHandler)
    app = FastAPI()
    setup(app, mediator)

    @app.post("/orders", status_code=201, responses=problem_responses(400, 500))
    async def place_order(body: PlaceOrderBody, mediator: MediatorDep) -> Response:
        result = await mediator.send(PlaceOrder(body.order_id, body.quantity))
        return to_response(result, location=lambda order: f"/orders/{order.order_id}")

    @app.post("/orders/{order_id}/ship", status_code=204, responses=problem_responses(409))
    async def ship_order(order_id: str, mediator: MediatorDep) -> Response:
        return to_response(await mediator.send(ShipOrder(order_id)))

    @app.get("/orders/{order_id}", response_model=Order, responses=problem_responses(404))
    async def get_order(order_id: str, mediator: MediatorDep) -> Response:
        return to_response(await mediator.send(GetOrder(order_id)))

    @app.get("/orders/{order_id}/summary", response_model=OrderSummary)
    async def order_summary(order_id: str, mediator: MediatorDep) -> Response:
        return to_response(await mediator.send(GetOrder(order_id)))

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("disk /srv/secret full")

    @app.get("/database-down")
    async def database_down() -> None:
        raise StoreUnavailableError("SQLite at /srv/secret.db", "database is locked")

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(418, "short and stout")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=build_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        yield client


async def test_a_query_answers_200_with_its_data_as_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/orders/o-1")
    assert response.status_code == 200
    assert response.json() == {
        "order_id": "o-1",
        "total": "19.90",
        "placed_at": "2024-05-01T09:30:00Z",
    }


async def test_a_decimal_is_sent_as_a_string_with_its_exact_digits(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/orders", json={"order_id": "o-2", "quantity": 3})
    assert response.json()["total"] == "3.30"


async def test_a_created_result_answers_201(client: httpx.AsyncClient) -> None:
    response = await client.post("/orders", json={"order_id": "o-2", "quantity": 1})
    assert (response.status_code, response.headers["content-type"]) == (201, "application/json")


async def test_a_no_content_result_answers_204_with_an_empty_body(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/orders/o-1/ship")
    assert (response.status_code, response.content) == (204, b"")


async def test_an_invalid_command_answers_400_problem_with_field_errors(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/orders", json={"order_id": "o-2", "quantity": 0})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["type"], body["title"], body["status"]) == ("about:blank", "Bad Request", 400)
    assert [error["field"] for error in body["errors"]] == ["quantity"]


async def test_an_invalid_body_answers_the_same_400_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/orders", json={"order_id": "", "quantity": "many"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert {error["field"] for error in response.json()["errors"]} == {"order_id", "quantity"}


async def test_a_missing_entity_answers_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/orders/o-404")
    assert response.status_code == 404
    assert response.json()["detail"] == "order o-404 was not found"


async def test_an_invalid_state_answers_409_problem(client: httpx.AsyncClient) -> None:
    response = await client.post("/orders/o-shipped/ship")
    assert (response.status_code, response.json()["title"]) == (409, "Conflict")


async def test_an_unexpected_error_answers_500_without_leaking(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.post("/orders", json={"order_id": "boom", "quantity": 1})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "db-7" not in response.text
    assert "admin" not in response.text
    assert any("db-7" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_a_created_result_carries_the_location_of_what_was_created(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/orders", json={"order_id": "o-2", "quantity": 1})
    assert (response.status_code, response.headers["location"]) == (201, "/orders/o-2")


async def test_an_unreachable_store_answers_503_problem_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/orders", json={"order_id": "down", "quantity": 1})
    assert (response.status_code, response.headers["content-type"]) == (
        503,
        "application/problem+json",
    )
    assert int(response.headers["retry-after"]) > 0
    assert "db-7" not in response.text


async def test_an_unreachable_store_raised_in_a_route_answers_503_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/database-down")
    assert (response.status_code, "retry-after" in response.headers) == (503, True)
    assert "secret" not in response.text


async def test_an_error_raised_in_a_route_answers_a_500_problem_without_leaking(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/crash")
    assert (response.status_code, response.headers["content-type"]) == (
        500,
        "application/problem+json",
    )
    assert response.json()["title"] == "Internal Server Error"
    assert "secret" not in response.text


async def test_an_invalid_query_value_answers_400_naming_the_field(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/orders", json={"order_id": "bad-cursor", "quantity": 1})
    assert response.status_code == 400
    assert [error["field"] for error in response.json()["errors"]] == ["after"]


async def test_data_is_written_as_the_routes_response_model(client: httpx.AsyncClient) -> None:
    response = await client.get("/orders/o-1/summary")
    assert response.json() == {"order_id": "o-1"}


async def test_data_that_breaks_the_response_model_answers_a_500_problem(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/orders/malformed")
    assert (response.status_code, response.headers["content-type"]) == (
        500,
        "application/problem+json",
    )


async def test_an_http_exception_answers_a_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/teapot")
    assert response.status_code == 418
    assert response.json() == {
        "type": "about:blank",
        "title": "I'm a Teapot",
        "status": 418,
        "detail": "short and stout",
    }


async def test_a_route_without_a_mediator_set_up_says_how_to_fix_it() -> None:
    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str, mediator: MediatorDep) -> Response:
        return to_response(await mediator.send(GetOrder(order_id)))

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        with pytest.raises(ConfigurationError, match="use_mediator"):
            await client.get("/orders/o-1")


def _responses(app: FastAPI, path: str, method: str) -> dict[str, Any]:
    return app.openapi()["paths"][path][method]["responses"]


def test_the_openapi_schema_lists_the_declared_problem_responses() -> None:
    responses = _responses(build_app(), "/orders/{order_id}", "get")
    schema = responses["404"]["content"]["application/problem+json"]["schema"]
    assert schema["required"] == ["type", "title", "status"]
    assert "errors" in schema["properties"]


def test_the_openapi_schema_documents_invalid_input_as_400_not_422() -> None:
    responses = _responses(build_app(), "/orders/{order_id}/ship", "post")
    assert "422" not in responses
    assert "application/problem+json" in responses["400"]["content"]


def test_the_openapi_schema_keeps_the_success_status() -> None:
    assert "201" in _responses(build_app(), "/orders", "post")
