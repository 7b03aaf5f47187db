"""The outbox relay against PostgreSQL and RabbitMQ: crashes, outages, competing relays."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eventfold import DataSource, EventRegistry, PersistenceModel, event_type
from eventfold.adapters.postgres import create_postgres_storage
from eventfold.adapters.postgres.outbox import create_postgres_outbox_store
from eventfold.adapters.rabbitmq import create_rabbitmq_broker
from eventfold.application.messaging.inbox import IdempotentConsumer, InboxContext
from eventfold.application.messaging.outbox import OutboxRelay, RetryPolicy
from eventfold.ports import Delivery
from eventfold.testing.contracts.broker import Inbox
from eventfold.testing.contracts.outbox import add_outbox_rows
from tests.conftest import POSTGRES_DSN, RABBITMQ_URL, require_service, unique_name
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(max_attempts=50, initial=0.05, maximum=0.3, jitter=0.05)
WAIT = 60.0
_RELAY = [sys.executable, "-m", "tests.support.relay_process"]


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until ``check()`` holds, polling what a backend shows; fail after ``WAIT``."""
    async with asyncio.timeout(WAIT):
        for _ in iter(int, 1):
            if await check():
                return
            await asyncio.sleep(0.05)


@event_type("ThingHappened")
@dataclass(frozen=True)
class ThingHappened:
    n: int


@pytest.fixture
async def exchange() -> AsyncIterator[str]:
    require_service("rabbitmq")
    name = unique_name("relay")
    yield name
    cleanup = create_rabbitmq_broker(RABBITMQ_URL, exchange=name)
    cleanup._groups.add("readers")
    await cleanup.destroy()
    await cleanup.close()


@pytest.fixture
async def broker(exchange: str) -> AsyncIterator[Any]:
    broker = create_rabbitmq_broker(RABBITMQ_URL, exchange=exchange)
    yield broker
    await broker.close()


async def _delivered(inbox: Inbox, wanted: set[Any]) -> bool:
    return {m.event_id for m in inbox.messages} >= wanted


def _schema_of(storage: Any) -> str:
    return str(storage.schema)


def _assert_in_aggregate_order(received: list[Any], sent: list[Any]) -> None:
    position = {m.event_id: n for n, m in enumerate(sent)}
    last: dict[str, int] = {}
    for message in received:
        n = position[message.event_id]
        assert n > last.get(message.aggregate_id, -1)
        last[message.aggregate_id] = n


async def test_two_relays_on_one_database_publish_every_event_once_in_aggregate_order(
    postgres_storage: Any, broker: Any
) -> None:
    inbox = Inbox()
    await broker.subscribe("readers", inbox)
    sent = await add_outbox_rows(postgres_storage, *[f"a-{n % 25}" for n in range(500)])
    other = create_postgres_storage(POSTGRES_DSN, schema=_schema_of(postgres_storage))
    relays = [
        OutboxRelay(
            create_postgres_outbox_store(storage), broker, batch_size=40, poll_interval=0.02
        )
        for storage in (postgres_storage, other)
    ]
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        received = await inbox.wait_for(500)
        await asyncio.sleep(0.3)  # room for a duplicate to show up, were there one
    finally:
        for relay in relays:
            await relay.stop()
        totals = [(await relay.metrics()).published_total for relay in relays]
        await other.close()
    assert all(task.done() for task in tasks)
    assert len(inbox.deliveries) == 500
    assert Counter(m.event_id for m in received) == Counter(m.event_id for m in sent)
    _assert_in_aggregate_order(received, sent)
    assert sum(totals) == 500


async def test_a_relay_cut_off_from_the_broker_records_backoff_and_drains_once_restored(
    postgres_storage: Any, exchange: str, broker: Any
) -> None:
    inbox = Inbox()
    await broker.subscribe("readers", inbox)
    async with TcpProxy("127.0.0.1", 5672) as proxy:
        proxied = create_rabbitmq_broker(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/", exchange=exchange, publish_timeout=2
        )
        store = create_postgres_outbox_store(postgres_storage)
        relay = OutboxRelay(store, proxied, retry=FAST, poll_interval=0.02)
        task = asyncio.create_task(relay.run())
        try:
            first = await add_outbox_rows(postgres_storage, "a-1", "a-2")
            await inbox.wait_for(2)
            await proxy.cut()
            cut = await add_outbox_rows(postgres_storage, *[f"a-{n}" for n in range(50)])

            async def attempts_recorded() -> bool:
                entry = await store.load_entry(3)
                return entry is not None and entry.attempts >= 2

            await eventually(attempts_recorded)
            entry = await store.load_entry(3)
            assert entry is not None
            assert (entry.published_at, entry.dead, entry.next_attempt_at is not None) == (
                None,
                False,
                True,
            )
            assert "unreachable" in (entry.last_error or "")
            await proxy.restore()
            # At least once: a publish cut off before its confirm may arrive twice, so
            # wait for every id rather than for a number of deliveries.
            wanted = {m.event_id for m in first + cut}
            await eventually(lambda: _delivered(inbox, wanted))
        finally:
            await relay.stop()
            await proxied.close()
    assert task.done()
    assert {m.event_id for m in inbox.messages} == wanted
    assert (await store.outbox_stats()).backlog == 0


async def test_a_refused_message_goes_dead_and_is_published_once_requeued(
    postgres_storage: Any, broker: Any
) -> None:
    inbox = Inbox()
    await broker.subscribe("readers", inbox)
    poison, fine = await add_outbox_rows(postgres_storage, "a-1", "a-2")
    refused = {poison.event_id}

    class Refusing:
        async def publish(self, messages: Any) -> None:
            if any(m.event_id in refused for m in messages):
                msg = "the broker refused it"
                raise ValueError(msg)
            await broker.publish(messages)

    store = create_postgres_outbox_store(postgres_storage)
    retry = RetryPolicy(max_attempts=3, initial=0.01, maximum=0.02, jitter=0.01)
    relay = OutboxRelay(store, Refusing(), retry=retry, poll_interval=0.02)
    task = asyncio.create_task(relay.run())
    try:

        async def is_dead() -> bool:
            return (await store.outbox_stats()).dead == 1

        await eventually(is_dead)
        (dead,) = await store.read_dead()
        assert (dead.message.event_id, dead.attempts) == (poison.event_id, 3)
        assert "refused" in (dead.last_error or "")
        refused.clear()
        assert await store.requeue([dead.id]) == 1
        received = await inbox.wait_for(2)
    finally:
        await relay.stop()
    assert task.done()
    assert [m.event_id for m in received] == [fine.event_id, poison.event_id]


def _start_relay(schema: str, exchange: str, pause: float) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*_RELAY, POSTGRES_DSN, schema, RABBITMQ_URL, exchange, str(pause)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


async def _wait_exit(process: subprocess.Popen[str]) -> int:
    code = await asyncio.wait_for(asyncio.to_thread(process.wait), 30)
    assert process.stdout is not None
    process.stdout.close()
    return code


async def test_a_relay_killed_mid_batch_loses_nothing_and_the_inbox_applies_each_event_once(
    postgres_storage: Any, exchange: str, broker: Any
) -> None:
    seen = Inbox()
    registry = EventRegistry([ThingHappened])
    source = DataSource("main", postgres_storage, PersistenceModel(), registry)

    async def count(event: Any, context: InboxContext) -> None:
        session = await context.session()
        await session.save_document(
            "effects", str(context.delivery.message.event_id), "{}", expected_version=0
        )

    effects = IdempotentConsumer(source, "effects", count)

    async def handle(delivery: Delivery) -> None:
        await seen(delivery)
        await effects(delivery)

    await broker.subscribe("readers", handle)
    sent = await add_outbox_rows(postgres_storage, *[f"a-{n % 30}" for n in range(300)])
    schema = _schema_of(postgres_storage)
    slow = _start_relay(schema, exchange, pause=0.05)
    try:
        await seen.wait_for(50)
    finally:
        slow.send_signal(signal.SIGKILL)
        await _wait_exit(slow)
    store = create_postgres_outbox_store(postgres_storage)
    assert (await store.outbox_stats()).backlog == 300  # the claim died with the process
    again = _start_relay(schema, exchange, pause=0)
    try:

        async def drained() -> bool:
            return (await store.outbox_stats()).backlog == 0

        await eventually(drained)
    finally:
        again.send_signal(signal.SIGTERM)
        assert await _wait_exit(again) == 0
    wanted = {m.event_id for m in sent}

    async def all_delivered() -> bool:
        return {d.message.event_id for d in seen.deliveries} >= wanted

    await eventually(all_delivered)
    # At least once: what went out before the kill went out again after it...
    assert len(seen.deliveries) >= 300 + 50
    # ...and exactly once in effect: a second effect would fail its insert and be
    # redelivered until it landed in the dead letters.
    assert await broker.read_dead_letters("readers") == []
    async with postgres_storage.transaction() as session:
        stored = await session.load_documents("effects", [str(m.event_id) for m in sent])
    assert len(stored) == 300
    assert json.loads(stored[0].data) == {}
