"""The behaviour every :class:`~eventfold.ports.MessageBroker` must show.

Subclass :class:`BrokerContract` in a test module named ``test_*`` and provide two
fixtures: ``broker``, an isolated broker torn down afterwards, and
``unreachable_broker``, one pointed at an address where nothing listens::

    class TestMyBroker(BrokerContract):
        @pytest.fixture
        async def broker(self) -> AsyncIterator[MessageBroker]:
            broker = create_my_broker(...)
            yield broker
            await broker.close()
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime

import pytest

from eventfold.errors import BrokerUnavailableError, StoreUnavailableError
from eventfold.ports.broker import (
    BrokerMessage,
    DeadLetter,
    Delivery,
    MessageBroker,
    Subscription,
)

__all__ = ["BrokerContract", "Inbox", "make_message"]

WAIT = 15.0
"""Seconds any single expectation may take before the test fails."""


def make_message(type_name: str = "OrderPlaced", *, aggregate_id: str = "order-1") -> BrokerMessage:
    """A message with every metadata field set, so a lost field shows up as a difference."""
    return BrokerMessage(
        event_id=uuid.uuid4(),
        type_name=type_name,
        schema_version=2,
        data='{"total": "12.50", "note": "caf\u00e9 \u2615", "lines": [1, 2]}',
        aggregate_type="Order",
        aggregate_id=aggregate_id,
        occurred_at=datetime(2024, 5, 17, 10, 30, 15, 123456, tzinfo=UTC),
        correlation_id=str(uuid.uuid4()),
        causation_id=str(uuid.uuid4()),
        actor="user-42",
    )


class Inbox:
    """A handler that records deliveries and lets a test wait for them."""

    def __init__(self, fail: Callable[[Delivery], bool] = lambda _: False) -> None:
        self.deliveries: list[Delivery] = []
        self._fail = fail
        self._changed = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> None:
        """Record ``delivery``; raise when the test asked this one to fail."""
        self.deliveries.append(delivery)
        self._changed.set()
        if self._fail(delivery):
            msg = f"handler refused attempt {delivery.attempt}"
            raise RuntimeError(msg)

    @property
    def messages(self) -> list[BrokerMessage]:
        """The messages delivered, in delivery order."""
        return [delivery.message for delivery in self.deliveries]

    async def wait_for(self, count: int) -> list[BrokerMessage]:
        """The first ``count`` messages once they arrived; fails after ``WAIT`` seconds."""
        async with asyncio.timeout(WAIT):
            while len(self.deliveries) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.messages[:count]


def _group() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


async def _dead_letters(broker: MessageBroker, group: str, count: int) -> list[DeadLetter]:
    # Dead-lettering happens inside the broker after the handler returned: there is no
    # event to wait on, only the broker to ask again.
    async with asyncio.timeout(WAIT):
        while len(letters := await broker.read_dead_letters(group)) < count:
            await asyncio.sleep(0.05)
    return letters


class BrokerContract:
    """Async tests every broker adapter passes; subclasses provide the fixtures."""

    @pytest.fixture
    def broker(self) -> MessageBroker:
        """An isolated broker; subclasses override this and tear it down."""
        raise NotImplementedError

    @pytest.fixture
    def unreachable_broker(self) -> MessageBroker:
        """A broker pointed where nothing listens; subclasses override this."""
        raise NotImplementedError

    async def _subscribe(
        self,
        broker: MessageBroker,
        inbox: Inbox,
        *,
        group: str | None = None,
        event_types: Collection[str] | None = None,
        max_deliveries: int = 5,
        keep_stream_order: bool = False,
    ) -> Subscription:
        return await broker.subscribe(
            group or _group(),
            inbox,
            event_types=event_types,
            max_deliveries=max_deliveries,
            keep_stream_order=keep_stream_order,
        )

    async def _publish(self, broker: MessageBroker, messages: Sequence[BrokerMessage]) -> None:
        async with asyncio.timeout(WAIT):
            await broker.publish(messages)

    async def test_a_published_message_arrives_with_all_its_metadata(
        self, broker: MessageBroker
    ) -> None:
        inbox = Inbox()
        subscription = await self._subscribe(broker, inbox)
        message = make_message()
        await self._publish(broker, [message])
        assert await inbox.wait_for(1) == [message]
        assert (inbox.deliveries[0].attempt, inbox.deliveries[0].group) == (
            1,
            subscription.group,
        )
        await subscription.stop()

    async def test_messages_of_one_publish_call_arrive_in_order(
        self, broker: MessageBroker
    ) -> None:
        inbox = Inbox()
        subscription = await self._subscribe(broker, inbox)
        messages = [make_message(("OrderPlaced", "OrderPaid")[i % 2]) for i in range(60)]
        await self._publish(broker, messages)
        assert await inbox.wait_for(60) == messages
        await subscription.stop()

    async def test_every_group_receives_every_message(self, broker: MessageBroker) -> None:
        first, second = Inbox(), Inbox()
        subscriptions = [
            await self._subscribe(broker, first),
            await self._subscribe(broker, second),
        ]
        messages = [make_message() for _ in range(10)]
        await self._publish(broker, messages)
        assert await first.wait_for(10) == messages
        assert await second.wait_for(10) == messages
        for subscription in subscriptions:
            await subscription.stop()

    async def test_subscriptions_of_one_group_share_its_messages_without_duplicates(
        self, broker: MessageBroker
    ) -> None:
        group, shared = _group(), Inbox()
        subscriptions = [await self._subscribe(broker, shared, group=group) for _ in range(2)]
        messages = [make_message(aggregate_id=f"order-{i}") for i in range(40)]
        await self._publish(broker, messages)
        await shared.wait_for(40)
        for subscription in subscriptions:
            await subscription.stop()
        received = [message.event_id for message in shared.messages]
        assert sorted(received) == sorted(message.event_id for message in messages)

    async def test_a_subscription_receives_only_the_types_it_asked_for(
        self, broker: MessageBroker
    ) -> None:
        inbox = Inbox()
        subscription = await self._subscribe(broker, inbox, event_types={"OrderPaid"})
        paid, placed, paid_again = (
            make_message("OrderPaid"),
            make_message("OrderPlaced"),
            make_message("OrderPaid"),
        )
        await self._publish(broker, [paid, placed, paid_again])
        # Order is kept, so once the last message arrived the skipped one would have too.
        assert await inbox.wait_for(2) == [paid, paid_again]
        await subscription.stop()
        assert inbox.messages == [paid, paid_again]

    async def test_a_message_whose_handler_failed_is_delivered_again(
        self, broker: MessageBroker
    ) -> None:
        inbox = Inbox(fail=lambda delivery: delivery.attempt == 1)
        subscription = await self._subscribe(broker, inbox)
        message = make_message()
        await self._publish(broker, [message])
        assert await inbox.wait_for(2) == [message, message]
        assert [delivery.attempt for delivery in inbox.deliveries] == [1, 2]
        await subscription.stop()
        assert await broker.read_dead_letters(subscription.group) == []

    async def test_a_message_that_keeps_failing_lands_in_dead_letters_after_max_deliveries(
        self, broker: MessageBroker
    ) -> None:
        inbox = Inbox(fail=lambda _: True)
        subscription = await self._subscribe(broker, inbox, max_deliveries=3)
        message = make_message()
        await self._publish(broker, [message])
        [letter] = await _dead_letters(broker, subscription.group, 1)
        await subscription.stop()
        assert [delivery.attempt for delivery in inbox.deliveries] == [1, 2, 3]
        assert (letter.message, letter.group, letter.attempts) == (message, subscription.group, 3)
        assert "handler refused attempt 3" in letter.reason

    async def test_acknowledged_messages_are_not_delivered_again_after_a_restart(
        self, broker: MessageBroker
    ) -> None:
        group, before, after = _group(), Inbox(), Inbox()
        subscription = await self._subscribe(broker, before, group=group)
        await self._publish(broker, [make_message() for _ in range(3)])
        await before.wait_for(3)
        await subscription.stop()
        subscription = await self._subscribe(broker, after, group=group)
        latest = make_message()
        await self._publish(broker, [latest])
        assert await after.wait_for(1) == [latest]
        await subscription.stop()
        assert after.messages == [latest]

    async def test_stop_waits_for_the_delivery_in_hand_and_acknowledges_it(
        self, broker: MessageBroker
    ) -> None:
        group, release, after = _group(), asyncio.Event(), Inbox()
        started = Inbox()

        async def slow(delivery: Delivery) -> None:
            await started(delivery)
            await release.wait()

        subscription = await broker.subscribe(group, slow)
        await self._publish(broker, [make_message()])
        await started.wait_for(1)
        stopping = asyncio.create_task(subscription.stop())
        await asyncio.sleep(0.1)  # give stop() the chance to (wrongly) finish early
        assert not stopping.done()
        release.set()
        async with asyncio.timeout(WAIT):
            await stopping
        subscription = await self._subscribe(broker, after, group=group)
        latest = make_message()
        await self._publish(broker, [latest])
        assert await after.wait_for(1) == [latest]
        await subscription.stop()

    async def test_publishing_to_an_unreachable_broker_raises_broker_unavailable(
        self, unreachable_broker: MessageBroker
    ) -> None:
        with pytest.raises(BrokerUnavailableError):
            await self._publish(unreachable_broker, [make_message()])

    async def test_an_outage_the_handler_meets_is_waited_out_without_spending_a_try(
        self, broker: MessageBroker
    ) -> None:
        calls: list[int] = []

        async def handler(delivery: Delivery) -> None:
            calls.append(delivery.attempt)
            if len(calls) <= 3:
                raise StoreUnavailableError("postgresql", "connection refused")
            await inbox(delivery)

        inbox = Inbox()
        group = _group()
        subscription = await broker.subscribe(group, handler, max_deliveries=1)
        message = make_message()
        await self._publish(broker, [message])
        assert await inbox.wait_for(1) == [message]
        await subscription.stop()
        assert calls == [1, 1, 1, 1]
        assert await broker.read_dead_letters(group) == []

    async def test_a_requeued_dead_letter_is_delivered_again_and_no_longer_listed_as_dead(
        self, broker: MessageBroker
    ) -> None:
        failing = True
        inbox = Inbox(fail=lambda _: failing)
        subscription = await self._subscribe(broker, inbox, max_deliveries=2)
        message = make_message()
        await self._publish(broker, [message])
        await _dead_letters(broker, subscription.group, 1)
        failing = False
        assert await broker.requeue_dead_letters(subscription.group) == 1
        assert await inbox.wait_for(3) == [message] * 3
        assert inbox.deliveries[2].attempt == 1  # the tries start afresh
        assert await broker.read_dead_letters(subscription.group) == []
        await subscription.stop()

    async def test_requeue_gives_back_only_the_dead_letters_asked_for(
        self, broker: MessageBroker
    ) -> None:
        first, second = make_message(), make_message()
        inbox = Inbox(fail=lambda _: len(inbox.deliveries) <= 2)
        subscription = await self._subscribe(broker, inbox, max_deliveries=1)
        await self._publish(broker, [first, second])
        await _dead_letters(broker, subscription.group, 2)
        count = await broker.requeue_dead_letters(subscription.group, event_ids=[second.event_id])
        assert count == 1
        assert (await inbox.wait_for(3))[2] == second
        [letter] = await broker.read_dead_letters(subscription.group)
        assert letter.message == first
        await subscription.stop()

    async def test_a_requeued_dead_letter_goes_to_its_own_group_only(
        self, broker: MessageBroker
    ) -> None:
        failing, other = True, Inbox()
        inbox = Inbox(fail=lambda _: failing)
        subscriptions = [
            await self._subscribe(broker, inbox, max_deliveries=1),
            await self._subscribe(broker, other),
        ]
        message, marker = make_message(), make_message()
        await self._publish(broker, [message])
        await _dead_letters(broker, subscriptions[0].group, 1)
        failing = False
        await broker.requeue_dead_letters(subscriptions[0].group)
        assert await inbox.wait_for(2) == [message, message]
        await self._publish(broker, [marker])
        # Order is kept, so a copy sent to the other group would arrive before the marker.
        assert await other.wait_for(2) == [message, marker]
        for subscription in subscriptions:
            await subscription.stop()

    async def test_purged_dead_letters_are_gone(self, broker: MessageBroker) -> None:
        inbox = Inbox(fail=lambda _: True)
        subscription = await self._subscribe(broker, inbox, max_deliveries=1)
        kept, purged = make_message(), make_message()
        await self._publish(broker, [kept, purged])
        await _dead_letters(broker, subscription.group, 2)
        await subscription.stop()
        assert await broker.purge_dead_letters(subscription.group, event_ids=[purged.event_id]) == 1
        assert [d.message for d in await broker.read_dead_letters(subscription.group)] == [kept]
        assert await broker.purge_dead_letters(subscription.group) == 1
        assert await broker.read_dead_letters(subscription.group) == []

    async def test_with_stream_order_a_failing_message_holds_back_its_own_stream_only(
        self, broker: MessageBroker
    ) -> None:
        late = make_message(aggregate_id="order-2")
        first, poison, after = (make_message(aggregate_id="order-1") for _ in range(3))
        handled: list[BrokerMessage] = []

        def fail(delivery: Delivery) -> bool:
            # The poison message fails until the other stream's message got through.
            failed = delivery.message == poison and late not in handled
            if not failed:
                handled.append(delivery.message)
            return failed

        inbox = Inbox(fail=fail)
        subscription = await self._subscribe(
            broker, inbox, max_deliveries=50, keep_stream_order=True
        )
        await self._publish(broker, [first, poison, after])
        await inbox.wait_for(2)  # the poison message failed once
        await self._publish(broker, [late])
        async with asyncio.timeout(WAIT):
            while len(handled) < 4:
                await inbox.wait_for(len(inbox.deliveries) + 1)
        await subscription.stop()
        assert [m for m in handled if m.aggregate_id == "order-1"] == [first, poison, after]
        assert handled.index(late) < handled.index(poison)

    async def test_with_stream_order_a_stream_goes_on_once_its_failing_message_is_dead(
        self, broker: MessageBroker
    ) -> None:
        poison, after = make_message(), make_message()
        inbox = Inbox(fail=lambda delivery: delivery.message == poison)
        subscription = await self._subscribe(
            broker, inbox, max_deliveries=2, keep_stream_order=True
        )
        await self._publish(broker, [poison, after])
        assert await inbox.wait_for(3) == [poison, poison, after]
        [letter] = await _dead_letters(broker, subscription.group, 1)
        await subscription.stop()
        assert (letter.message, letter.attempts) == (poison, 2)
