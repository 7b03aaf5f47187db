"""Outbox relay throughput: PostgreSQL outbox -> RabbitMQ with publisher confirms.

Usage: python benchmarks/relay.py [events] [batch_size]
Writes ``events`` outbox rows (one per aggregate in 1,000 aggregates), then times one
relay draining them; prints events per second. Needs PostgreSQL and RabbitMQ (the
EVENTFOLD_TEST_POSTGRES / EVENTFOLD_TEST_RABBITMQ URLs, or the local defaults).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import asyncpg

from benchmarks.model import relay_message
from eventfold.adapters.postgres import create_postgres_outbox_store, create_postgres_storage
from eventfold.adapters.rabbitmq import create_rabbitmq_broker
from eventfold.application.messaging.outbox import OutboxRelay

DSN = os.environ.get("EVENTFOLD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("EVENTFOLD_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")


async def fill(storage, events: int) -> None:
    for start in range(0, events, 1000):
        messages = [
            relay_message(f"a-{n % 1000}", n) for n in range(start, min(events, start + 1000))
        ]
        async with storage.transaction() as session:
            await session.add_to_outbox(messages)


async def main(events: int, batch_size: int) -> None:
    name = f"bench_relay_{uuid.uuid4().hex[:8]}"
    storage = create_postgres_storage(DSN, schema=name)
    broker = create_rabbitmq_broker(AMQP, exchange=name)
    try:
        await storage.create_schema()
        await fill(storage, events)
        relay = OutboxRelay(create_postgres_outbox_store(storage), broker, batch_size=batch_size)
        await broker.publish([])  # connect outside the timing
        await relay.relay_once()  # warm up: one batch, also outside the timing
        remaining = events - (await relay.metrics()).published_total
        started = time.perf_counter()
        published = 0
        while published < remaining:
            published += await relay.relay_once()
        elapsed = time.perf_counter() - started
        print(
            f"relay postgres->rabbitmq (confirms), batch {batch_size}: "
            f"{published} events in {elapsed:.2f}s = {published / elapsed:,.0f} events/s"
        )
    finally:
        await broker.destroy()
        await broker.close()
        await storage.close()
        connection = await asyncpg.connect(DSN)
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await connection.close()


if __name__ == "__main__":
    arguments = [int(a) for a in sys.argv[1:3]]
    asyncio.run(main(*(arguments + [20_000, 1000][len(arguments) :])))
