"""The outbox relay's behaviour, on the in-memory storage and broker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from eventfold.adapters.memory import MemoryBroker
from eventfold.adapters.memory.outbox import create_memory_outbox_store
from eventfold.application.messaging.outbox import OutboxMetrics, OutboxRelay, RetryPolicy
from eventfold.errors import BrokerUnavailableError, PublishError
from eventfold.ports import BrokerMessage
from eventfold.testing.contracts.broker import Inbox
from eventfold.testing.contracts.outbox import add_outbox_rows

FAST = RetryPolicy(max_attempts=3, initial=0.01, maximum=0.05, jitter=0.01)


class FlakyPublisher:
    """Publishes to an inner broker; refuses some event ids, or everything while down."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.refused: set[UUID] = set()
        self.down = False
        self.calls = 0
        self.failed_thrice = asyncio.Event()

    async def publish(self, messages: Sequence[BrokerMessage]) -> None:
        self.calls += 1
        if self.down:
            if self.calls >= 3:
                self.failed_thrice.set()
            raise BrokerUnavailableError("test", "cut off")
        if any(message.event_id in self.refused for message in messages):
            raise PublishError("refused")
        await self.inner.publish(messages)


@pytest.fixture
def broker(memory_broker: MemoryBroker) -> MemoryBroker:
    return memory_broker  # eventfold's pytest plugin closes it afterwards


async def _drain(relay: OutboxRelay) -> None:
    while await relay.relay_once():
        pass


async def test_the_relay_publishes_committed_rows_in_order_and_marks_them_published(
    memory_storage: Any, broker: Any
) -> None:
    inbox = Inbox()
    await broker.subscribe("readers", inbox)
    messages = await add_outbox_rows(memory_storage, "a-1", "a-2", "a-1")
    store = create_memory_outbox_store(memory_storage)
    assert await OutboxRelay(store, broker).relay_once() == 3
    received = await inbox.wait_for(3)
    assert [m.event_id for m in received] == [m.event_id for m in messages]
    assert (await store.outbox_stats()).backlog == 0


async def test_a_refused_message_is_dead_after_the_retry_limit_and_others_go_through(
    memory_storage: Any, broker: Any
) -> None:
    poison, _fine = await add_outbox_rows(memory_storage, "a-1", "a-2")
    publisher = FlakyPublisher(broker)
    publisher.refused.add(poison.event_id)
    store = create_memory_outbox_store(memory_storage)
    relay = OutboxRelay(store, publisher, retry=FAST, clock=lambda: datetime.now(UTC))
    for _ in range(FAST.max_attempts):
        await relay.relay_once()
        await asyncio.sleep(FAST.maximum + FAST.jitter)  # wait out the row's backoff
    (dead,) = await store.read_dead()
    assert (dead.message, dead.attempts) == (poison, FAST.max_attempts)
    assert "refused" in (dead.last_error or "")
    assert (await store.outbox_stats()).backlog == 0


async def test_a_requeued_dead_row_is_published(memory_storage: Any, broker: Any) -> None:
    (poison,) = await add_outbox_rows(memory_storage, "a-1")
    publisher = FlakyPublisher(broker)
    publisher.refused.add(poison.event_id)
    store = create_memory_outbox_store(memory_storage)
    relay = OutboxRelay(store, publisher, retry=RetryPolicy(max_attempts=1))
    await relay.relay_once()
    publisher.refused.clear()
    assert await store.requeue(None) == 1
    assert await relay.relay_once() == 1


async def test_rows_after_a_refused_row_of_the_same_aggregate_wait_for_it(
    memory_storage: Any, broker: Any
) -> None:
    poison, _later = await add_outbox_rows(memory_storage, "a-1", "a-1")
    publisher = FlakyPublisher(broker)
    publisher.refused.add(poison.event_id)
    store = create_memory_outbox_store(memory_storage)
    relay = OutboxRelay(store, publisher, retry=RetryPolicy(max_attempts=5, initial=60))
    assert await relay.relay_once() == 0
    stats = await store.outbox_stats()
    assert (stats.backlog, stats.dead) == (2, 0)


async def test_an_unreachable_broker_records_attempts_and_backoff_but_never_kills_a_row(
    memory_storage: Any, broker: Any
) -> None:
    await add_outbox_rows(memory_storage, "a-1", "a-2")
    publisher = FlakyPublisher(broker)
    publisher.down = True
    store = create_memory_outbox_store(memory_storage)
    relay = OutboxRelay(store, publisher, retry=FAST)
    for _ in range(FAST.max_attempts + 2):
        with pytest.raises(BrokerUnavailableError):
            await relay.relay_once()
        await asyncio.sleep(FAST.maximum + FAST.jitter)
    entry = await store.load_entry(1)
    assert entry is not None
    assert (entry.attempts, entry.dead) == (FAST.max_attempts + 2, False)
    assert entry.next_attempt_at is not None
    assert "cut off" in (entry.last_error or "")
    publisher.down = False
    await asyncio.sleep(FAST.maximum + FAST.jitter)
    assert await relay.relay_once() == 2


async def test_a_refusal_after_a_long_outage_does_not_kill_the_row_at_once(
    memory_storage: Any, broker: Any
) -> None:
    (row,) = await add_outbox_rows(memory_storage, "a-1")
    publisher = FlakyPublisher(broker)
    publisher.down = True
    store = create_memory_outbox_store(memory_storage)
    relay = OutboxRelay(store, publisher, retry=FAST)
    for _ in range(FAST.max_attempts + 1):
        with pytest.raises(BrokerUnavailableError):
            await relay.relay_once()
        await asyncio.sleep(FAST.maximum + FAST.jitter)
    publisher.down = False
    publisher.refused.add(row.event_id)

    await relay.relay_once()

    entry = await store.load_entry(1)
    assert entry is not None
    assert (entry.refusals, entry.dead) == (1, False)
    assert entry.attempts == FAST.max_attempts + 2


async def test_a_running_relay_waits_out_an_outage_and_then_drains_the_backlog(
    memory_storage: Any, broker: Any
) -> None:
    inbox = Inbox()
    await broker.subscribe("readers", inbox)
    publisher = FlakyPublisher(broker)
    publisher.down = True
    store = create_memory_outbox_store(memory_storage)
    relay = OutboxRelay(store, publisher, retry=FAST, poll_interval=0.01)
    task = asyncio.create_task(relay.run())
    await add_outbox_rows(memory_storage, *[f"a-{n}" for n in range(20)])
    await asyncio.wait_for(publisher.failed_thrice.wait(), 10)
    publisher.down = False
    await asyncio.wait_for(inbox.wait_for(20), 10)
    await relay.stop()
    assert task.done()
    assert (await store.outbox_stats()).backlog == 0


async def test_stop_returns_after_the_batch_in_hand_is_recorded(
    memory_storage: Any, broker: Any
) -> None:
    await add_outbox_rows(memory_storage, "a-1")
    gate = asyncio.Event()
    entered = asyncio.Event()

    class SlowPublisher:
        async def publish(self, messages: Sequence[BrokerMessage]) -> None:
            entered.set()
            await asyncio.wait_for(gate.wait(), 10)
            await broker.publish(messages)

    store = create_memory_outbox_store(memory_storage)
    relay = OutboxRelay(store, SlowPublisher(), poll_interval=0.01)
    task = asyncio.create_task(relay.run())
    await asyncio.wait_for(entered.wait(), 10)
    stopping = asyncio.create_task(relay.stop())
    gate.set()
    await asyncio.wait_for(stopping, 10)
    assert task.done()
    assert (await store.outbox_stats()).backlog == 0


async def test_metrics_report_backlog_age_dead_letters_and_rate(
    memory_storage: Any, broker: Any
) -> None:
    await add_outbox_rows(memory_storage, "a-1", "a-2")
    store = create_memory_outbox_store(memory_storage)
    later = datetime.now(UTC) + timedelta(minutes=5)
    before = await OutboxRelay(store, broker, clock=lambda: later).metrics()
    assert before.backlog == 2
    assert before.oldest_unpublished_age is not None
    assert before.oldest_unpublished_age >= timedelta(minutes=4)
    relay = OutboxRelay(store, broker)
    await relay.relay_once()
    after = await relay.metrics()
    assert (after.backlog, after.oldest_unpublished_age, after.dead_letters) == (0, None, 0)
    assert after.published_total == 2
    assert after.published_per_second > 0


async def test_the_alert_hook_fires_when_the_oldest_row_is_older_than_the_threshold(
    memory_storage: Any,
) -> None:
    await add_outbox_rows(memory_storage, "a-1")
    publisher = FlakyPublisher(None)
    publisher.down = True
    alerts: list[OutboxMetrics] = []
    fired = asyncio.Event()

    def alert(metrics: OutboxMetrics) -> None:
        alerts.append(metrics)
        fired.set()

    store = create_memory_outbox_store(memory_storage)
    relay = OutboxRelay(
        store,
        publisher,
        retry=FAST,
        poll_interval=0.01,
        alert_after=timedelta(minutes=1),
        on_alert=alert,
        check_interval=0.0,
        clock=lambda: datetime.now(UTC) + timedelta(minutes=2),
    )
    publisher.down = False  # the row is published, but only after the first check
    task = asyncio.create_task(relay.run())
    await asyncio.wait_for(fired.wait(), 10)
    await relay.stop()
    assert task.done()
    assert alerts[0].backlog == 1
