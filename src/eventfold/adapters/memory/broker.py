"""An in-process broker with the semantics of the real ones: groups, redelivery, dead letters.

Every group keeps its own queue of the messages published after it was created. A
handler that raises puts its message back at the head of the group's queue, so the
next delivery is the same message with its attempt count raised; after
``max_deliveries`` attempts the message moves to the group's dead letters. The
delivery rules are the shared consumer's (:mod:`eventfold.adapters.consumer`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection, Sequence
from uuid import UUID

from eventfold.adapters.consumer import BrokerConsumer, Received
from eventfold.errors import BrokerUnavailableError
from eventfold.ports.broker import (
    BrokerMessage,
    DeadLetter,
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
        self.published: dict[UUID, int] = {}
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
            self.published[message.event_id] = len(self.published)
            self.queue.append((message, 0))
            self.changed.notify()

    async def take(self) -> tuple[BrokerMessage, int]:
        """The next message and how often it was handed out before, waiting for one."""
        async with self.changed:
            await self.changed.wait_for(lambda: bool(self.queue))
            return self.queue.popleft()

    async def give_back(self, message: BrokerMessage, delivered: int) -> None:
        """Put a message handed out ``delivered`` times back at the head."""
        async with self.changed:
            self.queue.appendleft((message, delivered))
            self.changed.notify()

    def order(self, message: BrokerMessage) -> int:
        """Where a message stands in publish order (for giving back several in order)."""
        return self.published.get(message.event_id, 0)

    async def requeue(self, event_ids: Collection[UUID] | None) -> int:
        """Queue dead letters again, with no attempts made; how many."""
        chosen = self.take_dead(event_ids)
        async with self.changed:
            self.queue.extend((letter.message, 0) for letter in chosen)
            self.changed.notify_all()
        return len(chosen)

    def take_dead(self, event_ids: Collection[UUID] | None) -> list[DeadLetter]:
        """Remove and return dead letters (those of ``event_ids``, or all)."""
        chosen = [d for d in self.dead if event_ids is None or d.message.event_id in event_ids]
        self.dead = [d for d in self.dead if d not in chosen]
        return chosen


_Raw = tuple[BrokerMessage, int]
"""A message and how many times it was handed out before."""


class MemorySubscription(BrokerConsumer[_Raw]):
    """A consumer task of one group; it stops between deliveries."""

    broker_name = "memory"

    def __init__(self, group: _Group, handler: MessageHandler, *, keep_stream_order: bool) -> None:
        super().__init__(
            group.name,
            handler,
            event_types=None,  # the group filters at publish time
            max_deliveries=group.max_deliveries,
            keep_stream_order=keep_stream_order,
        )
        self._state = group

    async def _connect(self) -> None:
        pass

    async def _disconnect(self) -> None:
        # What a stopped consumer held goes back first, as a broker requeues it.
        held = sorted(self._held.values(), key=lambda r: self._state.order(r.raw[0]))
        self._held.clear()
        for received in reversed(held):
            await self._state.give_back(received.raw[0], received.attempt)

    async def _receive(self) -> list[Received[_Raw]]:
        message, delivered = await self._state.take()
        return [Received((message, delivered), delivered + 1, message)]

    async def _ack(self, raw: _Raw) -> None:
        pass

    async def _give_back(self, raw: _Raw, attempt: int) -> None:
        await self._state.give_back(raw[0], attempt)

    async def _bury(self, raw: _Raw, attempts: int, reason: str) -> None:
        self._state.dead.append(DeadLetter(raw[0], self._state.name, attempts, reason))


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
        keep_stream_order: bool = False,
    ) -> MemorySubscription:
        """Consume ``event_types`` (every type when ``None``) for ``group`` until stopped."""
        state = self._group(group, max_deliveries)
        state.subscribe_to(event_types)
        subscription = MemorySubscription(state, handler, keep_stream_order=keep_stream_order)
        await subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    async def read_dead_letters(self, group: str, *, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``group``, oldest first."""
        state = self._groups.get(group)
        return [] if state is None else state.dead[:limit]

    async def requeue_dead_letters(
        self, group: str, *, event_ids: Collection[UUID] | None = None
    ) -> int:
        """Give dead letters (those of ``event_ids``, or all) back to ``group``; how many."""
        state = self._groups.get(group)
        return 0 if state is None else await state.requeue(event_ids)

    async def purge_dead_letters(
        self, group: str, *, event_ids: Collection[UUID] | None = None
    ) -> int:
        """Delete dead letters (those of ``event_ids``, or all) of ``group``; how many."""
        state = self._groups.get(group)
        return 0 if state is None else len(state.take_dead(event_ids))

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
