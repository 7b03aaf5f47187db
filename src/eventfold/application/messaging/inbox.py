"""The inbox: a broker handler whose effects happen once per (event id, handler name).

:class:`IdempotentConsumer` decodes a delivery into its event class (upcasting old
payloads), opens a unit of work, records ``(event id, handler name)`` in the inbox and
runs the handler, and commits both in ONE transaction:

- a delivery whose pair is already recorded is a duplicate: acknowledged, skipped;
- a handler that raises leaves no inbox row and nothing else, and the broker delivers
  the message again (and after ``max_deliveries``, to the group's dead letters);
- each handler name keeps its own record, so several handlers of one event each
  apply it once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from eventfold.application.persistence.unit_of_work import DataSource, UnitOfWork
from eventfold.ports.broker import Delivery
from eventfold.ports.storage import Storage, StorageSession
from eventfold.ports.telemetry import AttributeValue, active_telemetry

__all__ = ["IdempotentConsumer", "InboxContext", "InboxHandler", "purge_inbox"]

E = TypeVar("E")


@dataclass(frozen=True, slots=True)
class InboxContext:
    """What a handler gets besides the event: the delivery and the unit of work to write in."""

    delivery: Delivery
    unit_of_work: UnitOfWork

    async def session(self) -> StorageSession:
        """The transaction the inbox row commits in, for the handler's own writes."""
        return await self.unit_of_work.session()


InboxHandler = Callable[[E, InboxContext], Awaitable[None]]
"""Applies one event; its writes go through ``context`` so they commit with the inbox row."""


class IdempotentConsumer(Generic[E]):
    """A :data:`~eventfold.ports.MessageHandler` that applies each event once per name."""

    def __init__(self, source: DataSource, name: str, handler: InboxHandler[E]) -> None:
        self._source = source
        self.name = name
        self._handler = handler

    async def __call__(self, delivery: Delivery) -> None:
        """Handle a delivery; return (acknowledge) on success or duplicate, raise otherwise."""
        telemetry = active_telemetry()
        if telemetry is None:
            await self._handle(delivery)
            return
        message = delivery.message
        attributes: dict[str, AttributeValue] = {
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": delivery.group,
            "messaging.message.id": str(message.event_id),
            "messaging.message.conversation_id": message.correlation_id or "",
            "messaging.message.delivery_count": delivery.attempt,
            "eventfold.handler": self.name,
        }
        with telemetry.span(
            f"process {message.type_name}",
            kind="consumer",
            attributes=attributes,
            parent=message.traceparent,
        ) as span:
            duplicate = not await self._handle(delivery)
            span.set_attribute("eventfold.inbox.duplicate", duplicate)
        if duplicate:
            telemetry.add("eventfold.inbox.duplicates", 1, {"eventfold.handler": self.name})

    async def _handle(self, delivery: Delivery) -> bool:
        """Apply the delivery once; False when the inbox already had it (a duplicate)."""
        message = delivery.message
        event = self._source.events.decode(message.type_name, message.schema_version, message.data)
        async with self._unit_of_work(delivery) as uow:
            session = await uow.session()
            if not await session.mark_processed(message.event_id, self.name):
                await uow.rollback()  # a duplicate: nothing to write
                return False
            await self._handler(event, InboxContext(delivery, uow))  # type: ignore[arg-type]
            await uow.commit()
        return True

    def _unit_of_work(self, delivery: Delivery) -> UnitOfWork:
        source, message = self._source, delivery.message
        # Events the handler causes carry the conversation on.
        return UnitOfWork(
            source.storage,
            source.model,
            source.events,
            publish=source.publish,
            clock=source.clock,
            new_id=source.new_id,
            correlation_id=message.correlation_id or str(message.event_id),
            causation_id=str(message.event_id),
            actor=message.actor,
        )


async def purge_inbox(storage: Storage, *, older_than: datetime) -> int:
    """Forget inbox entries processed before ``older_than``; return how many.

    Purge only past the broker's longest redelivery window: a message redelivered after
    its entry is gone would be applied again.
    """
    async with storage.transaction() as session:
        return await session.purge_processed(older_than)
