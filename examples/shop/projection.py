"""The order-summary read model: one row per order, kept by a projection of the order events."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import Column, DateTime, Integer, MetaData, Numeric, Table, Text

from eventfold import Projection, ProjectionContext
from eventfold.adapters.sql import TableReadModel

from .domain import OrderCancelled, OrderDrafted, OrderItemAdded, OrderPlaced

metadata = MetaData()

order_summaries = Table(
    "shop_order_summaries",
    metadata,
    Column("order_id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("total", Numeric(12, 2), nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

summaries = TableReadModel(order_summaries)


class OrderSummaryProjection(Projection):
    """Keeps ``shop_order_summaries`` in step with the order streams."""

    name: ClassVar[str] = "order-summaries"
    read_models: ClassVar[tuple[TableReadModel, ...]] = (summaries,)

    async def apply_OrderDrafted(self, event: OrderDrafted, context: ProjectionContext) -> None:  # noqa: N802
        summaries.rows(context).put(
            {
                "order_id": event.order_id,
                "customer_id": event.customer_id,
                "status": "draft",
                "total": 0,
                "item_count": 0,
                "updated_at": event.drafted_at,
            }
        )

    async def apply_OrderItemAdded(self, event: OrderItemAdded, context: ProjectionContext) -> None:  # noqa: N802
        rows = summaries.rows(context)
        row = await rows.get(event.order_id)
        if row is None:  # an item for an order this read model never saw drafted
            return
        row["total"] += event.line.total
        row["item_count"] += event.line.quantity
        if context.metadata is not None:
            row["updated_at"] = context.metadata.occurred_at
        rows.put(row)

    async def apply_OrderPlaced(self, event: OrderPlaced, context: ProjectionContext) -> None:  # noqa: N802
        await _update(
            context, event.order_id, status="placed", total=event.total, at=event.placed_at
        )

    async def apply_OrderCancelled(self, event: OrderCancelled, context: ProjectionContext) -> None:  # noqa: N802
        await _update(context, event.order_id, status="cancelled", at=event.cancelled_at)


async def _update(
    context: ProjectionContext, order_id: str, *, status: str, at: object, **changes: object
) -> None:
    rows = summaries.rows(context)
    row = await rows.get(order_id)
    if row is not None:
        rows.put({**row, **changes, "status": status, "updated_at": at})
