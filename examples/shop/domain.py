"""The shop's domain model: products (state-stored), orders (event-sourced), customers (hybrid)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import singledispatchmethod

from eventfold import (
    AggregateRoot,
    Entity,
    InvalidStateError,
    RuleViolationError,
    event_type,
)

# --- events -----------------------------------------------------------------------------


@event_type("shop.ProductCreated")
@dataclass(frozen=True)
class ProductCreated:
    product_id: str
    name: str
    price: Decimal


@event_type("shop.ProductPriceChanged")
@dataclass(frozen=True)
class ProductPriceChanged:
    product_id: str
    old_price: Decimal
    new_price: Decimal


@event_type("shop.ProductDeactivated")
@dataclass(frozen=True)
class ProductDeactivated:
    product_id: str


@dataclass(frozen=True)
class OrderLine:
    product_id: str
    quantity: int
    unit_price: Decimal

    @property
    def total(self) -> Decimal:
        return self.unit_price * self.quantity


@event_type("shop.OrderDrafted")
@dataclass(frozen=True)
class OrderDrafted:
    order_id: str
    customer_id: str
    drafted_at: datetime


@event_type("shop.OrderPlaced")
@dataclass(frozen=True)
class OrderPlaced:
    order_id: str
    total: Decimal
    placed_at: datetime


@event_type("shop.OrderItemAdded")
@dataclass(frozen=True)
class OrderItemAdded:
    order_id: str
    line: OrderLine


@event_type("shop.OrderCancelled")
@dataclass(frozen=True)
class OrderCancelled:
    order_id: str
    reason: str
    cancelled_at: datetime


@event_type("shop.CustomerRegistered")
@dataclass(frozen=True)
class CustomerRegistered:
    customer_id: str
    name: str
    email: str


@event_type("shop.CustomerProfileUpdated")
@dataclass(frozen=True)
class CustomerProfileUpdated:
    customer_id: str
    name: str
    email: str


@event_type("shop.CustomerLoyaltyUpgraded")
@dataclass(frozen=True)
class CustomerLoyaltyUpgraded:
    customer_id: str
    old_tier: str
    new_tier: str
    points: int


SHOP_EVENTS: tuple[type, ...] = (
    ProductCreated,
    ProductPriceChanged,
    ProductDeactivated,
    OrderDrafted,
    OrderPlaced,
    OrderItemAdded,
    OrderCancelled,
    CustomerRegistered,
    CustomerProfileUpdated,
    CustomerLoyaltyUpgraded,
)

# --- product: state-stored --------------------------------------------------------------


class Product(Entity[str]):
    """A catalogue product, stored as its current state; its events go out for integration.

    Stored as the attributes its ``__init__`` parameters name and type (Customer, below,
    annotates them on the class instead: either way works).
    """

    def __init__(self, product_id: str, name: str, price: Decimal, *, active: bool = True) -> None:
        super().__init__(product_id)
        self.name = name
        self.price = price
        self.active = active

    @classmethod
    def create(cls, product_id: str, name: str, price: Decimal) -> Product:
        """A new product; the price must be positive."""
        _require_positive_price(price)
        if not name.strip():
            raise RuleViolationError("a product needs a name", field="name")
        product = cls(product_id, name.strip(), price)
        product.record(ProductCreated(product_id, product.name, price))
        return product

    def change_price(self, new_price: Decimal) -> None:
        """Change the price; an unchanged price records nothing."""
        _require_positive_price(new_price)
        if not self.active:
            raise InvalidStateError(f"product {self.id} is deactivated")
        if new_price == self.price:
            return
        old, self.price = self.price, new_price
        self.record(ProductPriceChanged(self.id, old, new_price))

    def deactivate(self) -> None:
        """Take the product off sale (idempotent)."""
        if self.active:
            self.active = False
            self.record(ProductDeactivated(self.id))


def _require_positive_price(price: Decimal) -> None:
    if price <= 0:
        raise RuleViolationError("the price must be positive", field="price")


# --- order: event-sourced ---------------------------------------------------------------


class OrderStatus(enum.Enum):
    DRAFT = "draft"
    PLACED = "placed"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


@dataclass
class OrderState:
    """What an order's events add up to."""

    status: OrderStatus = OrderStatus.DRAFT
    customer_id: str | None = None
    lines: list[OrderLine] = field(default_factory=list)
    placed_at: datetime | None = None
    cancellation_reason: str | None = None

    @property
    def total(self) -> Decimal:
        return sum((line.total for line in self.lines), Decimal(0))

    @singledispatchmethod
    def on(self, event: object) -> None:
        """Apply one event (one overload per event type)."""
        raise NotImplementedError

    @on.register
    def _drafted(self, event: OrderDrafted) -> None:
        self.customer_id = event.customer_id

    @on.register
    def _placed(self, event: OrderPlaced) -> None:
        self.status = OrderStatus.PLACED
        self.placed_at = event.placed_at

    @on.register
    def _item_added(self, event: OrderItemAdded) -> None:
        self.lines.append(event.line)

    @on.register
    def _cancelled(self, event: OrderCancelled) -> None:
        self.status = OrderStatus.CANCELLED
        self.cancellation_reason = event.reason


class Order(AggregateRoot[OrderState, str]):
    """An order, kept as the events that made it."""

    @classmethod
    def draft(cls, order_id: str, customer_id: str, *, at: datetime) -> Order:
        """Open a draft order for a customer."""
        if not customer_id.strip():
            raise RuleViolationError("a customer is required", field="customer_id")
        order = cls(order_id)
        order.record(OrderDrafted(order_id, customer_id, at))
        return order

    def add_item(self, line: OrderLine) -> None:
        """Add a line while the order is a draft; a product appears once."""
        if self.state.status is not OrderStatus.DRAFT:
            raise InvalidStateError(f"order {self.id} is {self.state.status.value}, not draft")
        _check_line(line)
        if any(existing.product_id == line.product_id for existing in self.state.lines):
            raise RuleViolationError(
                f"product {line.product_id} is already in the order", field="product_id"
            )
        self.record(OrderItemAdded(self.id, line))

    def place(self, *, at: datetime) -> None:
        """Place a draft order that has at least one line."""
        if self.state.status is not OrderStatus.DRAFT:
            raise InvalidStateError(f"order {self.id} is {self.state.status.value}, not draft")
        if not self.state.lines:
            raise RuleViolationError("an order needs at least one line", field="lines")
        self.record(OrderPlaced(self.id, self.state.total, at))

    def cancel(self, reason: str, *, at: datetime) -> None:
        """Cancel a draft or placed order, giving a reason."""
        if self.state.status not in (OrderStatus.DRAFT, OrderStatus.PLACED):
            raise InvalidStateError(f"order {self.id} is {self.state.status.value}")
        if not reason.strip():
            raise RuleViolationError("a cancellation reason is required", field="reason")
        self.record(OrderCancelled(self.id, reason.strip(), at))


def _check_line(line: OrderLine) -> None:
    if line.quantity <= 0:
        raise RuleViolationError("quantities must be positive", field="quantity")
    if line.unit_price <= 0:
        raise RuleViolationError("prices must be positive", field="unit_price")


# --- customer: hybrid --------------------------------------------------------------------

LOYALTY_TIERS = ("standard", "silver", "gold", "platinum")


class Customer(Entity[str]):
    """A customer stored as state; loyalty upgrades are recorded as events."""

    name: str
    email: str
    tier: str
    points: int

    def __init__(
        self, customer_id: str, name: str, email: str, *, tier: str = "standard", points: int = 0
    ) -> None:
        super().__init__(customer_id)
        self.name = name
        self.email = email
        self.tier = tier
        self.points = points

    @classmethod
    def register(cls, customer_id: str, name: str, email: str) -> Customer:
        """A new customer with a name and an email address."""
        _check_profile(name, email)
        customer = cls(customer_id, name, email)
        customer.record(CustomerRegistered(customer_id, name, email))
        return customer

    def update_profile(self, name: str, email: str) -> None:
        """Change name and email."""
        _check_profile(name, email)
        if (name, email) != (self.name, self.email):
            self.name, self.email = name, email
            self.record(CustomerProfileUpdated(self.id, name, email))

    def upgrade_loyalty(self, new_tier: str, points: int) -> None:
        """Move up to a higher tier, earning points."""
        if new_tier not in LOYALTY_TIERS:
            raise RuleViolationError(f"unknown tier {new_tier!r}", field="new_tier")
        if LOYALTY_TIERS.index(new_tier) <= LOYALTY_TIERS.index(self.tier):
            raise InvalidStateError(f"customer is already {self.tier}")
        old, self.tier = self.tier, new_tier
        self.points += points
        self.record(CustomerLoyaltyUpgraded(self.id, old, new_tier, points))


def _check_profile(name: str, email: str) -> None:
    if not name.strip():
        raise RuleViolationError("a name is required", field="name")
    if "@" not in email:
        raise RuleViolationError("an email address needs an @", field="email")
