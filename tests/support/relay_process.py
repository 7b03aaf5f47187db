"""A relay in a process of its own, for crash tests: ``python -m tests.support.relay_process``.

Arguments: PostgreSQL DSN, schema, AMQP URL, exchange, seconds to pause between chunks
of 10 messages (0 for none). The pause makes a batch slow enough to kill mid-way.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from eventfold.adapters.postgres import create_postgres_storage
from eventfold.application.messaging.outbox import OutboxRelay
from eventfold.cli_outbox import broker_from_url, relay_store_for, serve_relay
from eventfold.ports import BrokerMessage, MessagePublisher


class SlowPublisher:
    """Publishes a batch in chunks of 10 with a pause before each."""

    def __init__(self, inner: MessagePublisher, pause: float) -> None:
        self._inner = inner
        self._pause = pause

    async def publish(self, messages: Sequence[BrokerMessage]) -> None:
        for start in range(0, len(messages), 10):
            await asyncio.sleep(self._pause)
            await self._inner.publish(messages[start : start + 10])


async def main(dsn: str, schema: str, amqp: str, exchange: str, pause: float) -> None:
    storage = create_postgres_storage(dsn, schema=schema)
    broker = broker_from_url(amqp, name=exchange)
    publisher = SlowPublisher(broker, pause) if pause else broker
    relay = OutboxRelay(relay_store_for(storage), publisher, batch_size=1000, poll_interval=0.05)
    print("ready", flush=True)
    try:
        await serve_relay(relay)
    finally:
        await broker.close()
        await storage.close()


if __name__ == "__main__":
    dsn, schema, amqp, exchange, pause = sys.argv[1:6]
    asyncio.run(main(dsn, schema, amqp, exchange, float(pause)))
