"""An in-process broker with the semantics of the real ones: groups, redelivery, dead letters.

Every group keeps its own queue of the messages published after it was created. A
handler that raises puts its message back at the head of the group's queue, so the
next delivery is the same message with its attempt count raised; after
``max_deliveries`` attempts the message moves to the group's dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Collection, Sequence

from eventfold.errors import BrokerUnavailableError
from eventfold.ports.broker import (
    BrokerMessage,
    DeadLetter,
    Delivery,
    MessageHandler,
    check_group_name,
)

__all__ = ["MemoryBroker", "MemorySubscription", "create_memory_broker"]


class _Group:
    """One group's queue of (message, deliveries so far) and its dead letters."""

    def __init__(self, name: str, max_deliveries: int) -> None:
        self.name = name
        self.max_deliveries = max_deliveries
        self.event_types: set[str] | None = set()
        self.queue: deque[tuple[BrokerMessage, int]] = deque()
        self.dead: list[DeadLetter] = []
        self.changed = asyncio.Condition()

    def wants(self, message: BrokerMessage) -> bool:
        """Whether the group subscribed to the message's type."""
        return self.event_types is None or message.type_name in self.event_types

    def subscribe_to(self, event_types: Collection[str] | None) -> None:
        """Add types to the group, as bindings add up on a queue."""
        if event_types is None or self.event_types is None:
            self.event_types = None
        else:
            self.event_types.update(event_types)

    async def put(self, message: BrokerMessage) -> None:
        """Queue a published message."""
        async with self.changed:
            self.queue.append((message, 0))
            self.changed.notify()

    async def take(self) -> Delivery:
        """The next message, waiting for one."""
        async with self.changed:
            await self.changed.wait_for(lambda: bool(self.queue))
            message, delivered = self.queue.popleft()
        return Delivery(message=message, attempt=delivered + 1, group=self.name)

    async def fail(self, delivery: Delivery, error: BaseException) -> None:
        """Put a failed delivery back at the head, or bury it when attempts ran out."""
        if delivery.attempt >= self.max_deliveries:
            self.dead.append(DeadLetter(delivery.message, self.name, delivery.attempt, repr(error)))
            return
        async with self.changed:
            self.queue.appendleft((delivery.message, delivery.attempt))
            self.changed.notify()


class MemorySubscription:
    """A consumer task of one group; it stops between deliveries."""

    def __init__(self, group: _Group, handler: MessageHandler) -> None:
        self._group = group
        self._handler = handler
        self._waiting = False
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"eventfold-memory-{group.name}")

    @property
    def group(self) -> str:
        """The group this subscription consumes for."""
        return self._group.name

    async def stop(self) -> None:
        """Finish the delivery in hand, then stop."""
        self._stopping = True
        if self._waiting:
            # Only an idle consumer is cancelled: a delivery in hand always completes.
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while not self._stopping:
            self._waiting = True
            delivery = await self._group.take()
            self._waiting = False
            await self._handle(delivery)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            await self._handler(delivery)
        except Exception as exc:  # noqa: BLE001 - any handler failure means "deliver again"
            await self._group.fail(delivery, exc)


class MemoryBroker:
    """A broker inside this process; nothing survives the process."""

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}
        self._subscriptions: list[MemorySubscription] = []
        self._closed = False

    @property
    def name(self) -> str:
        """``"memory"``."""
        return "memory"

    async def publish(self, messages: Sequence[BrokerMessage]) -> None:
        """Queue every message for every group that subscribed to its type, in order."""
        if self._closed:
            raise BrokerUnavailableError(self.name, "the broker is closed")
        for message in messages:
            for group in self._groups.values():
                if group.wants(message):
                    await group.put(message)

    async def subscribe(
        self,
        group: str,
        handler: MessageHandler,
        *,
        event_types: Collection[str] | None = None,
        max_deliveries: int = 5,
    ) -> MemorySubscription:
        """Consume ``event_types`` (every type when ``None``) for ``group`` until stopped."""
        state = self._group(group, max_deliveries)
        state.subscribe_to(event_types)
        subscription = MemorySubscription(state, handler)
        self._subscriptions.append(subscription)
        return subscription

    async def read_dead_letters(self, group: str, *, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``group``, oldest first."""
        state = self._groups.get(group)
        return [] if state is None else state.dead[:limit]

    async def close(self) -> None:
        """Stop every subscription; later publishes raise ``BrokerUnavailableError``."""
        self._closed = True
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions.clear()

    def _group(self, name: str, max_deliveries: int) -> _Group:
        if name not in self._groups:
            self._groups[check_group_name(name)] = _Group(name, max_deliveries)
        return self._groups[name]


def create_memory_broker() -> MemoryBroker:
    """A new, empty in-process broker."""
    return MemoryBroker()
