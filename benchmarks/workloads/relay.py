"""9. Outbox relay → RabbitMQ with publisher confirms, against aio-pika publishing alone.

eventfold: an ``OutboxRelay`` drains committed outbox rows (one per aggregate in 1,000
aggregates) from the backend into a topic exchange in batches of 1,000: claim (rows
locked for the batch), publish with confirms, mark published, commit. Raw: aio-pika on
a confirming channel publishes the same messages (same body, ``eventfold-*`` headers
and properties) in the same batches, awaiting every confirm of a batch together, the
way aio-pika's documentation does it, and reads nothing from any database.

Two rows per backend: the exchange with no queue bound (what the client side costs),
and with a durable quorum queue bound (the broker also stores every message, as a
consumer group's queue does). The figure is events per second; the first batch of each
side is a warm-up outside the timing. The target is absolute: 5,000 events/s.
RabbitMQ: ``EVENTFOLD_BENCH_RABBITMQ`` (default ``amqp://guest:guest@127.0.0.1:5672/``).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

import aio_pika

from benchmarks.backends import Backend
from benchmarks.harness import NOT_AVAILABLE, Context, Row, alternate, median
from benchmarks.model import relay_message
from eventfold.adapters.rabbitmq import create_rabbitmq_broker
from eventfold.application.messaging.outbox import OutboxRelay
from eventfold.ports import BrokerMessage
from eventfold.ports.records import OutboxMessage

TITLE = "9. outbox relay → RabbitMQ with confirms"
AMQP = os.environ.get("EVENTFOLD_BENCH_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
BATCH = 1000
TARGET = 5000.0


def _messages(count: int) -> list[OutboxMessage]:
    return [relay_message(f"a-{n % 1000}", n) for n in range(count)]


def _relay_store(storage: Any) -> Any:
    if type(storage).__name__.startswith("Postgres"):
        from eventfold.adapters.postgres import create_postgres_outbox_store  # noqa: PLC0415

        return create_postgres_outbox_store(storage)
    from eventfold.adapters.sqlite.outbox import create_sqlite_outbox_store  # noqa: PLC0415

    return create_sqlite_outbox_store(storage)


async def _bind_queue(exchange: str, *, quorum: bool) -> str | None:
    """Declare the exchange and, for ``quorum``, a quorum queue taking every message."""
    connection = await aio_pika.connect(AMQP)
    try:
        channel = await connection.channel()
        await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        if not quorum:
            return None
        name = f"{exchange}.bench"
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key="#")
        return name
    finally:
        await connection.close()


async def _remove(exchange: str, queue: str | None) -> None:
    connection = await aio_pika.connect(AMQP)
    try:
        channel = await connection.channel()
        if queue is not None:
            await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)
        await channel.exchange_delete(f"{exchange}.dead")
    finally:
        await connection.close()


async def _eventfold(backend: Backend, count: int, *, quorum: bool) -> float:
    exchange = f"bench_relay_{uuid.uuid4().hex[:10]}"
    queue = await _bind_queue(exchange, quorum=quorum)
    broker = create_rabbitmq_broker(AMQP, exchange=exchange)
    try:
        async with backend.eventfold() as storage:
            for start in range(0, count, BATCH):
                async with storage.transaction() as session:
                    await session.add_to_outbox(_messages(count)[start : start + BATCH])
            relay = OutboxRelay(_relay_store(storage), broker, batch_size=BATCH)
            await broker.publish([])  # connect outside the timing
            warm = await relay.relay_once()
            started = time.perf_counter()
            published = 0
            while published < count - warm:
                published += await relay.relay_once()
            return published / (time.perf_counter() - started)
    finally:
        await broker.close()
        await _remove(exchange, queue)


def _amqp_message(message: BrokerMessage) -> aio_pika.Message:
    return aio_pika.Message(
        body=message.data.encode(),
        headers=dict(message.to_headers()),
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(message.event_id),
        correlation_id=message.correlation_id,
        timestamp=message.occurred_at,
        type=message.type_name,
        app_id="eventfold",
    )


async def _publish_batch(
    exchange: aio_pika.abc.AbstractExchange, batch: Sequence[BrokerMessage]
) -> None:
    await asyncio.gather(
        *(exchange.publish(_amqp_message(m), routing_key=m.type_name) for m in batch)
    )


async def _raw(count: int, *, quorum: bool) -> float:
    name = f"bench_raw_{uuid.uuid4().hex[:10]}"
    queue = await _bind_queue(name, quorum=quorum)
    messages = [BrokerMessage.from_outbox(m) for m in _messages(count)]
    connection = await aio_pika.connect(AMQP)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(name)
        await _publish_batch(exchange, messages[:BATCH])  # warm-up, as on eventfold's side
        started = time.perf_counter()
        for start in range(BATCH, count, BATCH):
            await _publish_batch(exchange, messages[start : start + BATCH])
        return (count - BATCH) / (time.perf_counter() - started)
    finally:
        await connection.close()
        await _remove(name, queue)


async def _row(context: Context, backend: Backend, *, quorum: bool) -> Row:
    count = context.n(10_000, 3 * BATCH)
    count -= count % BATCH
    ef_values, raw_values = await alternate(
        lambda: _eventfold(backend, count, quorum=quorum),
        lambda: _raw(count, quorum=quorum),
        context.repeat,
    )
    value = median(ef_values)
    return Row(
        workload=TITLE,
        backend=backend.name,
        metric="relayed, quorum queue bound" if quorum else "relayed, no queue bound",
        unit="events/s",
        higher_is_better=True,
        eventfold=value,
        raw=median(raw_values),
        # The target is the relay's own: with a queue bound the broker's storage sets the pace.
        target="" if quorum else "≥ 5,000/s",
        met=None if quorum else value is not None and value >= TARGET,
        samples={"eventfold": ef_values, "raw": raw_values},
        extra={"events": count, "batch": BATCH},
    )


async def run(context: Context, backend: Backend) -> list[Row]:
    """Both rows on ``backend``; one "not available" row when RabbitMQ cannot be reached."""
    try:
        await (await aio_pika.connect(AMQP, timeout=5)).close()
    except (OSError, aio_pika.exceptions.AMQPError) as exc:
        row = Row(TITLE, backend.name, "relayed", "events/s", True, None, None)
        row.note = NOT_AVAILABLE
        row.extra = {"reason": f"RabbitMQ at {AMQP}: {exc!r}"}
        return [row]
    return [await _row(context, backend, quorum=False), await _row(context, backend, quorum=True)]
