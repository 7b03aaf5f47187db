"""A traced broker consumer in a process of its own: ``python -m tests.support.otel_consumer``.

Arguments: the shop's database URL, AMQP URL, exchange, group. Prints ``ready`` once
subscribed, handles one message through the inbox, then prints the spans it made, one
JSON object a line, and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys

from examples.shop.bootstrap import bootstrap
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from eventfold import DataSource, IdempotentConsumer, InboxContext
from eventfold.cli_outbox import broker_from_url
from eventfold.integrations.otel import instrument


async def main(database_url: str, amqp: str, exchange: str, group: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument(provider)
    shop = bootstrap(database_url)
    handled = asyncio.Event()

    async def handler(event: object, context: InboxContext) -> None:
        handled.set()

    source = DataSource("shop", shop.storage, shop.model, shop.events)
    broker = broker_from_url(amqp, name=exchange)
    subscription = await broker.subscribe(group, IdempotentConsumer(source, "mailer", handler))
    print("ready", flush=True)
    try:
        await asyncio.wait_for(handled.wait(), 60)
    finally:
        await subscription.stop()
        await broker.close()
        await shop.close()
    for span in exporter.get_finished_spans():
        context, parent = span.get_span_context(), span.parent
        line = {
            "name": span.name,
            "trace_id": context.trace_id if context else None,
            "span_id": context.span_id if context else None,
            "parent_id": parent.span_id if parent else None,
            "attributes": dict(span.attributes or {}),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
