"""The shop's commands, queries and their handlers: what a user of the shop can ask for."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter

from eventfold import (
    CommandHandler,
    EventEnvelope,
    InvalidStateError,
    OperationResult,
    QueryHandler,
    QueryOptions,
    Request,
    RequestContext,
    RequestHandler,
    SpecificationBuilder,
    UnitOfWork,
)
from eventfold.adapters.sql import search_table

from .domain import LOYALTY_TIERS, Customer, Order, OrderLine, Product
from .projection import order_summaries

Clock = Callable[[], datetime]
Price = Annotated[Decimal, Field(gt=0, max_digits=10, decimal_places=2)]
Name = Annotated[str, Field(min_length=1, max_length=100)]
Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]

# Placing an order whose total reaches a threshold lifts the customer to that tier.
LOYALTY_THRESHOLDS: tuple[tuple[Decimal, str], ...] = (
    (Decimal(500), "gold"),
    (Decimal(100), "silver"),
)


@dataclass(frozen=True)
class ShopSettings:
    """What handlers need beside the request: the clock (time comes in as data)."""

    clock: Clock


def new_id(prefix: str) -> str:
    """A fresh id such as ``order-1f2e3d4c``."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- views: what handlers return ---------------------------------------------------------


@dataclass(frozen=True)
class ProductView:
    id: str
    name: str
    price: Decimal
    active: bool
    version: int = 0


@dataclass(frozen=True)
class CustomerView:
    id: str
    name: str
    email: str
    tier: str
    points: int


@dataclass(frozen=True)
class LineView:
    product_id: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class OrderView:
    id: str
    customer_id: str | None
    status: str
    total: Decimal
    lines: list[LineView]
    version: int
    cancellation_reason: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    version: int
    event: str
    occurred_at: datetime
    actor: str | None
    correlation_id: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class OrderSummary:
    order_id: str
    customer_id: str
    status: str
    total: Decimal
    item_count: int
    updated_at: datetime


@dataclass(frozen=True)
class OrderSummaryPage:
    items: list[OrderSummary]
    total: int | None
    next_cursor: str | None


def product_view(product: Product) -> ProductView:
    return ProductView(product.id, product.name, product.price, product.active, product.version)


def customer_view(customer: Customer) -> CustomerView:
    return CustomerView(customer.id, customer.name, customer.email, customer.tier, customer.points)


def order_view(order: Order) -> OrderView:
    state = order.state
    lines = [LineView(line.product_id, line.quantity, line.unit_price) for line in state.lines]
    return OrderView(
        order.id,
        state.customer_id,
        state.status.value,
        state.total,
        lines,
        order.version,
        state.cancellation_reason,
    )


# --- commands ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateProduct(Request[ProductView]):
    name: Name
    price: Price
    product_id: str | None = None


@dataclass(frozen=True)
class ChangePrice(Request[ProductView]):
    product_id: str
    new_price: Price


@dataclass(frozen=True)
class DeactivateProduct(Request[ProductView]):
    product_id: str


@dataclass(frozen=True)
class RegisterCustomer(Request[CustomerView]):
    name: Name
    email: Email
    customer_id: str | None = None


@dataclass(frozen=True)
class UpdateProfile(Request[CustomerView]):
    customer_id: str
    name: Name
    email: Email


@dataclass(frozen=True)
class UpgradeLoyalty(Request[CustomerView]):
    customer_id: str
    new_tier: Literal["silver", "gold", "platinum"]
    points: Annotated[int, Field(ge=0)] = 0


@dataclass(frozen=True)
class OrderItem:
    product_id: str
    quantity: Annotated[int, Field(gt=0, le=100)]


@dataclass(frozen=True)
class PlaceOrder(Request[OrderView]):
    """Draft, fill and place an order in one go; may lift the customer's loyalty tier."""

    customer_id: str
    items: Annotated[list[OrderItem], Field(min_length=1)]
    order_id: str | None = None


@dataclass(frozen=True)
class StartOrder(Request[OrderView]):
    """Open a draft order (a cart) for a customer."""

    customer_id: str
    order_id: str | None = None


@dataclass(frozen=True)
class SubmitOrder(Request[OrderView]):
    """Place a draft order; may lift the customer's loyalty tier."""

    order_id: str


@dataclass(frozen=True)
class AddItem(Request[OrderView]):
    order_id: str
    product_id: str
    quantity: Annotated[int, Field(gt=0, le=100)]


@dataclass(frozen=True)
class CancelOrder(Request[OrderView]):
    order_id: str
    reason: Annotated[str, Field(min_length=3, max_length=200)]


# --- queries -----------------------------------------------------------------------------


@dataclass(frozen=True)
class GetProduct(Request[ProductView]):
    product_id: str


@dataclass(frozen=True)
class GetCustomer(Request[CustomerView]):
    customer_id: str


@dataclass(frozen=True)
class GetOrder(Request[OrderView]):
    """An order now, or as it was at ``as_of`` (a temporal read of its events)."""

    order_id: str
    as_of: datetime | None = None


@dataclass(frozen=True)
class GetOrderHistory(Request[list[AuditEntry]]):
    """Every event of an order with who recorded it, when, and in which request."""

    order_id: str


@dataclass(frozen=True)
class SearchOrders(Request[OrderSummaryPage]):
    """Order summaries from the read model: filter, newest first, one page."""

    customer_id: str | None = None
    status: str | None = None
    min_total: Annotated[Decimal, Field(ge=0)] | None = None
    limit: Annotated[int, Field(gt=0, le=100)] = 20
    after: str | None = field(default=None)


# --- handlers ----------------------------------------------------------------------------


class _Handler:
    """What every shop handler shares: the request's unit of work and the clock."""

    def __init__(self, context: RequestContext, settings: ShopSettings) -> None:
        self.uow = UnitOfWork.of(context)
        self.clock = settings.clock


class CreateProductHandler(_Handler, CommandHandler[CreateProduct, ProductView]):
    async def handle(self, command: CreateProduct, /) -> OperationResult[ProductView]:
        product_id = command.product_id or new_id("product")
        products = self.uow.state_stored(Product)
        if await products.get(product_id) is not None:
            return self.conflict(f"product {product_id} already exists")
        product = Product.create(product_id, command.name, command.price)
        products.add(product)
        return self.created(product_view(product))


class ChangePriceHandler(_Handler, CommandHandler[ChangePrice, ProductView]):
    async def handle(self, command: ChangePrice, /) -> OperationResult[ProductView]:
        product = await self.uow.state_stored(Product).get_required(command.product_id)
        product.change_price(command.new_price)
        return self.ok(product_view(product))


class DeactivateProductHandler(_Handler, CommandHandler[DeactivateProduct, ProductView]):
    async def handle(self, command: DeactivateProduct, /) -> OperationResult[ProductView]:
        product = await self.uow.state_stored(Product).get_required(command.product_id)
        product.deactivate()
        return self.ok(product_view(product))


class RegisterCustomerHandler(_Handler, CommandHandler[RegisterCustomer, CustomerView]):
    async def handle(self, command: RegisterCustomer, /) -> OperationResult[CustomerView]:
        customer_id = command.customer_id or new_id("customer")
        customers = self.uow.state_stored(Customer)
        if await customers.get(customer_id) is not None:
            return self.conflict(f"customer {customer_id} already exists")
        customer = Customer.register(customer_id, command.name, command.email)
        customers.add(customer)
        return self.created(customer_view(customer))


class UpdateProfileHandler(_Handler, CommandHandler[UpdateProfile, CustomerView]):
    async def handle(self, command: UpdateProfile, /) -> OperationResult[CustomerView]:
        customer = await self.uow.state_stored(Customer).get_required(command.customer_id)
        customer.update_profile(command.name, command.email)
        return self.ok(customer_view(customer))


class UpgradeLoyaltyHandler(_Handler, CommandHandler[UpgradeLoyalty, CustomerView]):
    async def handle(self, command: UpgradeLoyalty, /) -> OperationResult[CustomerView]:
        customer = await self.uow.state_stored(Customer).get_required(command.customer_id)
        customer.upgrade_loyalty(command.new_tier, command.points)
        return self.ok(customer_view(customer))


class PlaceOrderHandler(_Handler, CommandHandler[PlaceOrder, OrderView]):
    """The hybrid command: an event-sourced order and a state-stored customer, one commit."""

    async def handle(self, command: PlaceOrder, /) -> OperationResult[OrderView]:
        customer = await self.uow.state_stored(Customer).get_required(command.customer_id)
        order_id = command.order_id or new_id("order")
        if await self.uow.event_sourced(Order).get(order_id) is not None:
            return self.conflict(f"order {order_id} already exists")
        now = self.clock()
        order = Order.draft(order_id, customer.id, at=now)
        for item in command.items:
            order.add_item(await self._line(item.product_id, item.quantity))
        order.place(at=now)
        self.uow.event_sourced(Order).add(order)
        _reward_loyalty(customer, order.state.total)
        return self.created(order_view(order))

    async def _line(self, product_id: str, quantity: int) -> OrderLine:
        return await order_line(self.uow, product_id, quantity)


class StartOrderHandler(_Handler, CommandHandler[StartOrder, OrderView]):
    async def handle(self, command: StartOrder, /) -> OperationResult[OrderView]:
        customer = await self.uow.state_stored(Customer).get_required(command.customer_id)
        order_id = command.order_id or new_id("order")
        if await self.uow.event_sourced(Order).get(order_id) is not None:
            return self.conflict(f"order {order_id} already exists")
        order = Order.draft(order_id, customer.id, at=self.clock())
        self.uow.event_sourced(Order).add(order)
        return self.created(order_view(order))


class SubmitOrderHandler(_Handler, CommandHandler[SubmitOrder, OrderView]):
    async def handle(self, command: SubmitOrder, /) -> OperationResult[OrderView]:
        order = await self.uow.event_sourced(Order).get_required(command.order_id)
        order.place(at=self.clock())
        customer = await self.uow.state_stored(Customer).get_required(order.state.customer_id)
        _reward_loyalty(customer, order.state.total)
        return self.ok(order_view(order))


class AddItemHandler(_Handler, CommandHandler[AddItem, OrderView]):
    async def handle(self, command: AddItem, /) -> OperationResult[OrderView]:
        order = await self.uow.event_sourced(Order).get_required(command.order_id)
        order.add_item(await order_line(self.uow, command.product_id, command.quantity))
        return self.ok(order_view(order))


class CancelOrderHandler(_Handler, CommandHandler[CancelOrder, OrderView]):
    async def handle(self, command: CancelOrder, /) -> OperationResult[OrderView]:
        order = await self.uow.event_sourced(Order).get_required(command.order_id)
        order.cancel(command.reason, at=self.clock())
        return self.ok(order_view(order))


async def order_line(uow: UnitOfWork, product_id: str, quantity: int) -> OrderLine:
    """A line at the product's current price; a deactivated product cannot be ordered."""
    product = await uow.state_stored(Product).get_required(product_id)
    if not product.active:
        raise InvalidStateError(f"product {product_id} is no longer sold")
    return OrderLine(product_id, quantity, product.price)


def _reward_loyalty(customer: Customer, total: Decimal) -> None:
    """Lift the customer to the highest tier the order's total reaches, earning points."""
    for threshold, tier in LOYALTY_THRESHOLDS:
        if total >= threshold:
            if LOYALTY_TIERS.index(tier) > LOYALTY_TIERS.index(customer.tier):
                customer.upgrade_loyalty(tier, int(total))
            return


class GetProductHandler(_Handler, QueryHandler[GetProduct, ProductView]):
    async def handle(self, query: GetProduct, /) -> OperationResult[ProductView]:
        product = await self.uow.state_stored(Product).get(query.product_id)
        if product is None:
            return self.not_found(f"product {query.product_id!r} was not found")
        return self.ok(product_view(product))


class GetCustomerHandler(_Handler, QueryHandler[GetCustomer, CustomerView]):
    async def handle(self, query: GetCustomer, /) -> OperationResult[CustomerView]:
        customer = await self.uow.state_stored(Customer).get(query.customer_id)
        if customer is None:
            return self.not_found(f"customer {query.customer_id!r} was not found")
        return self.ok(customer_view(customer))


class GetOrderHandler(_Handler, QueryHandler[GetOrder, OrderView]):
    async def handle(self, query: GetOrder, /) -> OperationResult[OrderView]:
        order = await self.uow.event_sourced(Order).get(query.order_id, as_of=query.as_of)
        if order is None:
            when = "" if query.as_of is None else f" at {query.as_of.isoformat()}"
            return self.not_found(f"order {query.order_id!r} was not found{when}")
        return self.ok(order_view(order))


class GetOrderHistoryHandler(_Handler, QueryHandler[GetOrderHistory, list[AuditEntry]]):
    async def handle(self, query: GetOrderHistory, /) -> OperationResult[list[AuditEntry]]:
        history = await self.uow.event_sourced(Order).history(query.order_id)
        if not history:
            return self.not_found(f"order {query.order_id!r} was not found")
        return self.ok([_audit_entry(envelope) for envelope in history])


def _audit_entry(envelope: EventEnvelope[object]) -> AuditEntry:
    metadata = envelope.metadata
    return AuditEntry(
        metadata.version,
        metadata.type_name,
        metadata.occurred_at,
        metadata.actor,
        metadata.correlation_id,
        _EVENT_DATA.dump_python(envelope.event, mode="json"),
    )


# Any event as the JSON it is stored as (dataclasses, Decimal, datetime), for the audit view.
_EVENT_DATA: TypeAdapter[Any] = TypeAdapter(Any)


class SearchOrdersHandler(_Handler, QueryHandler[SearchOrders, OrderSummaryPage]):
    async def handle(self, query: SearchOrders, /) -> OperationResult[OrderSummaryPage]:
        options = (
            QueryOptions(specification=order_specification(query))
            .with_ordering("-updated_at")
            .with_pagination(limit=query.limit)
            .with_cursor(query.after)
            .with_total()
        )
        result = search_table(await self.uow.session(), order_summaries, options)
        page = await result.page()
        items = [OrderSummary(**row) for row in page.items]
        return self.ok(OrderSummaryPage(items, page.total, page.next_cursor))


def order_specification(query: SearchOrders) -> Any:
    """The filter a search asks for, as a specification the SQL layer translates safely."""
    builder = SpecificationBuilder()
    if query.customer_id is not None:
        builder = builder.where("customer_id", "=", query.customer_id)
    if query.status is not None:
        builder = builder.where("status", "=", query.status)
    if query.min_total is not None:
        builder = builder.where("total", ">=", query.min_total)
    return builder.build()


HANDLERS: dict[type, Callable[..., RequestHandler[Any, Any]]] = {
    CreateProduct: CreateProductHandler,
    ChangePrice: ChangePriceHandler,
    DeactivateProduct: DeactivateProductHandler,
    RegisterCustomer: RegisterCustomerHandler,
    UpdateProfile: UpdateProfileHandler,
    UpgradeLoyalty: UpgradeLoyaltyHandler,
    PlaceOrder: PlaceOrderHandler,
    StartOrder: StartOrderHandler,
    SubmitOrder: SubmitOrderHandler,
    AddItem: AddItemHandler,
    CancelOrder: CancelOrderHandler,
    GetProduct: GetProductHandler,
    GetCustomer: GetCustomerHandler,
    GetOrder: GetOrderHandler,
    GetOrderHistory: GetOrderHistoryHandler,
    SearchOrders: SearchOrdersHandler,
}
