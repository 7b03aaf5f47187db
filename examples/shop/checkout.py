"""Checkout: the order saga across contexts, with a payment time limit.

order placed -> payment (the payment context answers ``PaymentReceived``, within 15
minutes) -> inventory reservation (the warehouse may refuse: out of stock) ->
confirmation. When payment times out or the warehouse refuses, what was done is undone
in reverse order: the reservation released, the payment refunded or its request
voided, the order cancelled.

The payment context and the warehouse are stand-ins here (:class:`PaymentDesk`,
:class:`Warehouse`); in a real shop they are other services, reached through commands
and answering with events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from eventfold import (
    RetryPolicy,
    Saga,
    SagaOrchestrator,
    SagaState,
    Scheduler,
    Step,
    StepContext,
    StepRefusedError,
)
from eventfold.adapters.scheduling import schedule_store_for

from .application import CancelOrder, GetOrder
from .bootstrap import Shop

PAYMENT_WINDOW = timedelta(minutes=15)


@dataclass
class CheckoutData:
    """What the saga carries from step to step."""

    order_id: str
    items: dict[str, int]
    total: str = "0"
    payment_id: str | None = None
    reservation_id: str | None = None


@dataclass
class PaymentDesk:
    """The payment context: takes requests; its answers arrive later, as events."""

    requested: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def request(self, order_id: str, total: str) -> str:
        payment_id = f"pay-{order_id}"
        self.requested[payment_id] = total
        self.log.append(f"payment {payment_id} requested ({total})")
        return payment_id

    def void(self, payment_id: str) -> None:
        self.log.append(f"payment {payment_id} voided or refunded")


@dataclass
class Warehouse:
    """The inventory context: stock levels and reservations."""

    stock: dict[str, int]
    log: list[str] = field(default_factory=list)

    def reserve(self, order_id: str, items: dict[str, int]) -> str:
        missing = [p for p, n in items.items() if self.stock.get(p, 0) < n]
        if missing:
            # A business answer, not a fault: asking again would not make stock appear.
            raise StepRefusedError(f"out of stock: {', '.join(missing)}")
        for product_id, quantity in items.items():
            self.stock[product_id] -= quantity
        self.log.append(f"reserved {items} for {order_id}")
        return f"res-{order_id}"

    def release(self, order_id: str, items: dict[str, int]) -> None:
        for product_id, quantity in items.items():
            self.stock[product_id] = self.stock.get(product_id, 0) + quantity
        self.log.append(f"released {items} of {order_id}")


@dataclass
class Checkout:
    """The checkout saga wired to the shop: its orchestrator and its scheduler."""

    shop: Shop
    payments: PaymentDesk
    warehouse: Warehouse
    orchestrator: SagaOrchestrator
    scheduler: Scheduler
    saga: Saga[CheckoutData]
    confirmations: list[str]

    async def start(self, order_id: str, items: dict[str, int]) -> SagaState:
        """Start the checkout of a placed order; it stops waiting for the payment."""
        return await self.orchestrator.start(
            self.saga, CheckoutData(order_id, items), saga_id=f"checkout-{order_id}"
        )

    async def payment_received(self, order_id: str) -> SagaState:
        """The payment context's answer: the checkout goes on."""
        return await self.orchestrator.signal(f"checkout-{order_id}", "PaymentReceived")

    async def fire_due_timeouts(self) -> int:
        """Let the scheduler fire what is due (a worker does this in a loop)."""
        return await self.scheduler.fire_due()


def checkout(shop: Shop, clock: Callable[[], datetime], *, stock: dict[str, int]) -> Checkout:
    """Wire the checkout saga on the shop's storage, with the warehouse's ``stock``."""
    payments, warehouse, confirmations = PaymentDesk(), Warehouse(dict(stock)), []

    async def place(data: CheckoutData, context: StepContext) -> CheckoutData:
        result = await shop.mediator.send(GetOrder(data.order_id))
        if not result.is_success or result.data is None:
            raise StepRefusedError(f"order {data.order_id} is not there")
        data.total = str(result.data.total)
        return data

    async def cancel(data: CheckoutData, context: StepContext) -> None:
        reason = "checkout could not be completed"
        result = await shop.mediator.send(CancelOrder(data.order_id, reason))
        if not result.is_success and result.status != 409:  # 409: cancelled already
            raise RuntimeError(f"cancelling {data.order_id} failed: {result.detail}")

    async def pay(data: CheckoutData, context: StepContext) -> CheckoutData:
        data.payment_id = payments.request(data.order_id, data.total)
        return data

    async def refund(data: CheckoutData, context: StepContext) -> None:
        if data.payment_id is not None:
            payments.void(data.payment_id)

    async def reserve(data: CheckoutData, context: StepContext) -> CheckoutData:
        data.reservation_id = warehouse.reserve(data.order_id, data.items)
        return data

    async def release(data: CheckoutData, context: StepContext) -> None:
        warehouse.release(data.order_id, data.items)

    async def confirm(data: CheckoutData, context: StepContext) -> None:
        confirmations.append(f"email: order {data.order_id} confirmed")

    saga = Saga(
        "checkout",
        CheckoutData,
        [
            Step("order", place, cancel),
            Step("payment", pay, refund, wait_for="PaymentReceived", timeout=PAYMENT_WINDOW),
            Step("inventory", reserve, release),
            Step("confirmation", confirm),
        ],
        retry=RetryPolicy(max_attempts=3, initial=0.01, maximum=0.05, jitter=0),
    )
    schedules = schedule_store_for(shop.storage)
    orchestrator = SagaOrchestrator(shop.storage, [saga], clock=clock, schedules=schedules)
    scheduler = Scheduler(schedules, orchestrator.handle_scheduled, clock=clock)
    return Checkout(shop, payments, warehouse, orchestrator, scheduler, saga, confirmations)
