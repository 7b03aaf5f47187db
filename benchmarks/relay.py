"""Outbox relay throughput: PostgreSQL outbox -> RabbitMQ with publisher confirms.

Usage: python -m benchmarks.relay [events] [batch_size] [relays]
Starts from an empty outbox whose statistics say so (analyzed while empty, autovacuum
off for it), lets every relay claim from it a few times, writes ``events`` outbox rows
(one per aggregate in 1,000 aggregates), then times ``relays`` competing relays (each
with a storage of its own, as separate processes would have) draining them; prints
events per second. ``relays`` may be a list such as ``1,3``: each count is measured on a
fresh outbox, one after the other. Needs PostgreSQL and RabbitMQ (the
EVENTFOLD_TEST_POSTGRES / EVENTFOLD_TEST_RABBITMQ URLs, or the local defaults).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import asyncpg

from eventfold.adapters.postgres import (
    PostgresStorage,
    create_postgres_outbox_store,
    create_postgres_storage,
)
from eventfold.adapters.rabbitmq import create_rabbitmq_broker
from eventfold.application.messaging.outbox import OutboxRelay
from eventfold.testing.contracts.outbox import relay_message

DSN = os.environ.get("EVENTFOLD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
AMQP = os.environ.get("EVENTFOLD_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
WARM_UP_CLAIMS = 10


async def fill(storage: PostgresStorage, events: int) -> None:
    for start in range(0, events, 1000):
        messages = [
            relay_message(f"a-{n % 1000}", n) for n in range(start, min(events, start + 1000))
        ]
        async with storage.transaction() as session:
            await session.add_to_outbox(messages)


async def _stale_statistics(schema: str) -> None:
    connection = await asyncpg.connect(DSN)
    try:
        table = f'"{schema}".eventfold_outbox'
        await connection.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        await connection.execute(f"ANALYZE {table}")
    finally:
        await connection.close()


async def drain(relay: OutboxRelay, backlog: PostgresStorage) -> int:
    """Relay batches until the outbox is empty; how many this relay published."""
    published = 0
    store = create_postgres_outbox_store(backlog)
    while True:
        count = await relay.relay_once()
        published += count
        # An empty claim may only mean the other relays hold every due row.
        if count == 0 and (await store.outbox_stats()).backlog == 0:
            return published


async def measure(events: int, batch_size: int, relays: int) -> float:
    name = f"bench_relay_{uuid.uuid4().hex[:8]}"
    storages = [create_postgres_storage(DSN, schema=name, max_size=2) for _ in range(relays)]
    broker = create_rabbitmq_broker(AMQP, exchange=name)
    try:
        await storages[0].create_schema()
        await broker.publish([])  # connect outside the timing
        # The outbox was analyzed while empty and a burst arrives before autovacuum
        # analyzes it again: what a relay sees after a quiet spell. Keeping autovacuum
        # off for the table makes that last through the measurement.
        await _stale_statistics(name)
        # Every relay's statements are prepared, and past PostgreSQL's first five custom
        # plans, while the outbox is empty: as for a relay polling before events arrive.
        for storage in storages:
            idle = OutboxRelay(create_postgres_outbox_store(storage), broker)
            for _ in range(WARM_UP_CLAIMS):
                await idle.relay_once()
        await fill(storages[0], events)
        runners = [
            OutboxRelay(create_postgres_outbox_store(storage), broker, batch_size=batch_size)
            for storage in storages
        ]
        started = time.perf_counter()
        counts = await asyncio.gather(
            *(drain(relay, storage) for relay, storage in zip(runners, storages, strict=True))
        )
        elapsed = time.perf_counter() - started
        rate = sum(counts) / elapsed
        print(
            f"relay postgres->rabbitmq (confirms), batch {batch_size}, {relays} relay(s): "
            f"{sum(counts)} events in {elapsed:.2f}s = {rate:,.0f} events/s "
            f"(per relay: {', '.join(map(str, counts))})",
            flush=True,
        )
        return rate
    finally:
        await broker.destroy()
        await broker.close()
        for storage in storages:
            await storage.close()
        connection = await asyncpg.connect(DSN)
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await connection.close()


async def main(events: int, batch_size: int, relays: list[int]) -> None:
    rates = {count: await measure(events, batch_size, count) for count in relays}
    if 1 in rates and len(rates) > 1:
        for count, rate in rates.items():
            if count != 1:
                print(f"{count} relays / 1 relay: {rate / rates[1]:.2f}x")


if __name__ == "__main__":
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    counts = [int(n) for n in sys.argv[3].split(",")] if len(sys.argv) > 3 else [1, 3]
    asyncio.run(main(events, batch, counts))
