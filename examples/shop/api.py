"""The shop as an HTTP API: ``uvicorn examples.shop.api:app``.

The database comes from ``EVENTFOLD_DATABASE_URL`` (default ``sqlite:///shop.db``). Every
route sends one request through the mediator, whose transaction behaviour gives it its
own unit of work; failed results are RFC 9457 problem details, documented per route.
The admin page is mounted at ``/admin`` (on localhost only).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Header, Query, Response

from eventfold.admin import create_admin_router
from eventfold.integrations.fastapi import MediatorDep, problem_responses, setup, to_response

from .application import (
    AuditEntry,
    CancelOrder,
    ChangePrice,
    CreateProduct,
    CustomerView,
    DeactivateProduct,
    Email,
    GetCustomer,
    GetOrder,
    GetOrderHistory,
    GetProduct,
    Name,
    OrderSummaryPage,
    OrderView,
    PlaceOrder,
    Price,
    ProductView,
    RegisterCustomer,
    SearchOrders,
    UpdateProfile,
)
from .bootstrap import DEFAULT_DATABASE_URL, Shop, bootstrap

Actor = Annotated[str | None, Header(alias="X-Actor", description="Who is asking")]
Correlation = Annotated[
    str | None, Header(alias="X-Correlation-Id", description="Ties related requests together")
]


@dataclass(frozen=True)
class NewPrice:
    new_price: Price


@dataclass(frozen=True)
class Profile:
    name: Name
    email: Email


@dataclass(frozen=True)
class Cancellation:
    reason: str


router = APIRouter()


@router.post(
    "/products", status_code=201, response_model=ProductView, responses=problem_responses(400, 409)
)
async def create_product(
    body: CreateProduct, mediator: MediatorDep, actor: Actor = None
) -> Response:
    """Add a product to the catalogue."""
    result = await mediator.send(body, actor=actor)
    return to_response(result, location=lambda product: f"/products/{quote(product.id, safe='')}")


@router.get("/products/{product_id}", response_model=ProductView, responses=problem_responses(404))
async def get_product(product_id: str, mediator: MediatorDep) -> Response:
    """A product's current state."""
    return to_response(await mediator.send(GetProduct(product_id)))


@router.put(
    "/products/{product_id}/price",
    response_model=ProductView,
    responses=problem_responses(400, 404, 409),
)
async def change_price(
    product_id: str, body: NewPrice, mediator: MediatorDep, actor: Actor = None
) -> Response:
    """Change a product's price (an unchanged price records nothing)."""
    return to_response(await mediator.send(ChangePrice(product_id, body.new_price), actor=actor))


@router.post(
    "/products/{product_id}/deactivate",
    response_model=ProductView,
    responses=problem_responses(404),
)
async def deactivate_product(
    product_id: str, mediator: MediatorDep, actor: Actor = None
) -> Response:
    """Take a product off sale."""
    return to_response(await mediator.send(DeactivateProduct(product_id), actor=actor))


@router.post(
    "/customers",
    status_code=201,
    response_model=CustomerView,
    responses=problem_responses(400, 409),
)
async def register_customer(
    body: RegisterCustomer, mediator: MediatorDep, actor: Actor = None
) -> Response:
    """Register a customer."""
    result = await mediator.send(body, actor=actor)
    return to_response(
        result, location=lambda customer: f"/customers/{quote(customer.id, safe='')}"
    )


@router.get(
    "/customers/{customer_id}", response_model=CustomerView, responses=problem_responses(404)
)
async def get_customer(customer_id: str, mediator: MediatorDep) -> Response:
    """A customer's profile and loyalty tier."""
    return to_response(await mediator.send(GetCustomer(customer_id)))


@router.put(
    "/customers/{customer_id}", response_model=CustomerView, responses=problem_responses(400, 404)
)
async def update_profile(
    customer_id: str, body: Profile, mediator: MediatorDep, actor: Actor = None
) -> Response:
    """Change a customer's name and email."""
    command = UpdateProfile(customer_id, body.name, body.email)
    return to_response(await mediator.send(command, actor=actor))


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderView,
    responses=problem_responses(400, 404, 409),
)
async def place_order(
    body: PlaceOrder, mediator: MediatorDep, actor: Actor = None, correlation: Correlation = None
) -> Response:
    """Place an order; a large one lifts the customer's loyalty tier in the same transaction."""
    result = await mediator.send(body, actor=actor, correlation_id=correlation)
    return to_response(result, location=lambda order: f"/orders/{quote(order.id, safe='')}")


@router.get("/orders", response_model=OrderSummaryPage, responses=problem_responses(400))
async def search_orders(
    mediator: MediatorDep,
    *,
    customer_id: str | None = None,
    status: str | None = None,
    min_total: Annotated[Decimal | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(gt=0, le=100)] = 20,
    after: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> Response:
    """Order summaries from the read model, newest first, one page at a time."""
    query = SearchOrders(customer_id, status, min_total, limit, after)
    return to_response(await mediator.send(query))


@router.get("/orders/{order_id}", response_model=OrderView, responses=problem_responses(404))
async def get_order(
    order_id: str,
    mediator: MediatorDep,
    as_of: Annotated[datetime | None, Query(description="The order as it was then")] = None,
) -> Response:
    """An order now, or as it was at ``as_of``."""
    return to_response(await mediator.send(GetOrder(order_id, as_of)))


@router.get(
    "/orders/{order_id}/history",
    response_model=list[AuditEntry],
    responses=problem_responses(404),
)
async def order_history(order_id: str, mediator: MediatorDep) -> Response:
    """Every event of an order, with who recorded it and when."""
    return to_response(await mediator.send(GetOrderHistory(order_id)))


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderView,
    responses=problem_responses(400, 404, 409),
)
async def cancel_order(
    order_id: str, body: Cancellation, mediator: MediatorDep, actor: Actor = None
) -> Response:
    """Cancel a placed order, giving a reason."""
    return to_response(await mediator.send(CancelOrder(order_id, body.reason), actor=actor))


def create_app(database_url: str | None = None, *, schema: str | None = None) -> FastAPI:
    """The shop's HTTP API on ``database_url``; tables are created when the app starts."""
    url = database_url or os.environ.get("EVENTFOLD_DATABASE_URL", DEFAULT_DATABASE_URL)
    shop = bootstrap(url, schema=schema, follow_projections=True)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await shop.start()
        yield
        await shop.close()

    app = FastAPI(title="eventfold shop", version="1.0", lifespan=lifespan)
    app.state.shop = shop
    setup(app, shop.mediator)
    app.include_router(router)
    # The operators' page, on localhost only (give it a token to open it further).
    admin = create_admin_router(shop.storage, events=shop.events, projections=shop.projections)
    app.include_router(admin, prefix="/admin")
    return app


def shop_of(app: FastAPI) -> Shop:
    """The wired shop behind an app made by :func:`create_app`."""
    shop: Shop = app.state.shop
    return shop


app = create_app()
