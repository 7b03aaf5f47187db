"""OpenTelemetry: spans and metrics at eventfold's hook points, one trace across processes."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from examples.shop.application import ChangePrice, CreateProduct
from examples.shop.bootstrap import Shop, bootstrap
from examples.shop.demo import run_demo
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from rich.console import Console

from eventfold import DataSource, IdempotentConsumer, OutboxRelay, ProjectionRunner
from eventfold.adapters.postgres import create_postgres_storage
from eventfold.adapters.rabbitmq import create_rabbitmq_broker
from eventfold.adapters.url import storage_from_url
from eventfold.application.messaging.outbox import RetryPolicy
from eventfold.application.messaging.sagas import Saga, SagaOrchestrator, SagaStatus
from eventfold.cli_outbox import relay_store_for
from eventfold.integrations.otel import instrument, observe_pools, uninstrument
from eventfold.ports import LOG_START, BrokerMessage, Delivery
from eventfold.ports.telemetry import active_telemetry
from eventfold.testing.sagas import StepRecorder
from tests.conftest import (
    POSTGRES_DSN,
    RABBITMQ_URL,
    drop_schema,
    require_service,
    unique_name,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class SagaData:
    order_id: str


class Telemetry:
    """What the in-memory exporters caught."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.finished(name)
        return span

    def points(self, metric: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == metric
            for point in m.data.data_points
        ]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    caught = Telemetry()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(caught.spans))
    instrument(tracer_provider, caught.meter_provider)
    yield caught
    uninstrument()
    caught.meter_provider.shutdown()


@pytest.fixture
async def shop(tmp_path: Path) -> Any:
    shop = bootstrap(f"sqlite:///{tmp_path / 'shop.db'}")
    await shop.start()
    yield shop
    await shop.close()


async def create_product(shop: Shop) -> str:
    result = await shop.mediator.send(CreateProduct("Teapot", Decimal("25.00")))
    assert result.is_success, result
    return str(result.unwrap().id)


def test_telemetry_is_off_unless_instrumented() -> None:
    assert active_telemetry() is None


async def test_a_command_makes_a_span_with_its_result_status(
    telemetry: Telemetry, shop: Shop
) -> None:
    await create_product(shop)
    span = telemetry.one("send CreateProduct")
    assert span.attributes is not None
    assert span.attributes["eventfold.result.status"] == 201
    assert span.status.status_code is StatusCode.UNSET


async def test_a_command_that_fails_makes_a_failed_span(telemetry: Telemetry, shop: Shop) -> None:
    result = await shop.mediator.send(ChangePrice("p-missing", Decimal("3.00")))
    assert result.status == 404
    span = telemetry.one("send ChangePrice")
    assert span.status.status_code is StatusCode.ERROR


async def test_the_commit_span_is_a_child_of_the_command_span(
    telemetry: Telemetry, shop: Shop
) -> None:
    await create_product(shop)
    command, commit = telemetry.one("send CreateProduct"), telemetry.one("commit")
    assert commit.parent is not None
    assert commit.parent.span_id == command.context.span_id
    assert commit.attributes is not None
    assert commit.attributes["db.system.name"] == "sqlite"
    assert commit.attributes["eventfold.commit.events"] == 1


async def test_the_outbox_row_carries_the_commands_trace_context(
    telemetry: Telemetry, shop: Shop
) -> None:
    await create_product(shop)
    async with shop.storage.transaction() as session:
        (entry,) = await session.read_outbox()
    command = telemetry.one("send CreateProduct")
    trace_id = f"{command.context.trace_id:032x}"
    assert entry.message.traceparent is not None
    assert entry.message.traceparent.split("-")[1] == trace_id


async def test_command_duration_is_measured_by_type_and_outcome(
    telemetry: Telemetry, shop: Shop
) -> None:
    await create_product(shop)
    await shop.mediator.send(ChangePrice("p-missing", Decimal("3.00")))
    outcomes = {
        (p.attributes["eventfold.request.type"], p.attributes["eventfold.outcome"]): p.count
        for p in telemetry.points("eventfold.request.duration")
    }
    assert outcomes == {("CreateProduct", "success"): 1, ("ChangePrice", "failure"): 1}


async def test_a_projection_batch_makes_a_span_and_measures_the_lag(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    await run_demo(url, console=Console(file=io.StringIO()))
    storage = storage_from_url(url)
    try:
        async with storage.transaction() as session:
            logged = await session.count_after(LOG_START)
    finally:
        await storage.close()
    batches = telemetry.finished("project order-summaries")
    assert sum(span.attributes["eventfold.projection.events"] for span in batches) == logged
    (lag,) = telemetry.points("eventfold.projection.lag")
    assert lag.attributes == {"eventfold.projection": "order-summaries"}


async def test_a_runner_measures_how_far_a_projection_is_behind(
    telemetry: Telemetry, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    await run_demo(url, console=Console(file=io.StringIO()))
    shop = bootstrap(url)

    class Fresh(type(shop.projections[0])):  # type: ignore[misc]
        name = "fresh-summaries"  # a projection that has applied nothing yet

    runner = ProjectionRunner(shop.storage, shop.events, [Fresh()], batch_size=1)
    try:
        await runner.process_batch("fresh-summaries")
        lag = await runner.lag("fresh-summaries")
    finally:
        await shop.close()

    def gauge(metric: str) -> float:
        points = telemetry.points(metric)
        (value,) = [p.value for p in points if p.attributes["eventfold.projection"] == Fresh.name]
        return float(value)

    assert lag.events_behind > 0
    assert gauge("eventfold.projection.behind") == lag.events_behind
    assert gauge("eventfold.projection.held_back") == 0


async def test_without_instrumentation_no_outbox_row_carries_a_trace(shop: Shop) -> None:
    await create_product(shop)
    async with shop.storage.transaction() as session:
        (entry,) = await session.read_outbox()
    assert entry.message.traceparent is None


async def test_a_command_the_relay_and_a_consumer_in_another_process_make_one_trace(
    telemetry: Telemetry, shop: Shop, tmp_path: Path
) -> None:
    require_service("rabbitmq")
    exchange, group = unique_name("otel"), unique_name("otel_group")
    consumer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.otel_consumer",
        f"sqlite:///{tmp_path / 'shop.db'}",
        RABBITMQ_URL,
        exchange,
        group,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    broker = create_rabbitmq_broker(RABBITMQ_URL, exchange=exchange)
    try:
        assert consumer.stdout is not None
        ready = await asyncio.wait_for(consumer.stdout.readline(), 60)  # the consumer subscribed
        assert ready == b"ready\n"
        await create_product(shop)
        relay = OutboxRelay(relay_store_for(shop.storage), broker)
        assert await relay.relay_once() == 1
        output, _ = await asyncio.wait_for(consumer.communicate(), 60)  # it handled the event
    finally:
        if consumer.returncode is None:
            consumer.kill()
            await consumer.wait()
        await broker.destroy()
        await broker.close()
    consumed = [json.loads(line) for line in output.decode().splitlines()]
    command, sent = telemetry.one("send CreateProduct"), telemetry.one("send shop.ProductCreated")
    (process,) = [s for s in consumed if s["name"] == "process shop.ProductCreated"]
    trace_ids = {command.context.trace_id, sent.context.trace_id, process["trace_id"]}
    assert trace_ids == {command.context.trace_id}
    assert process["parent_id"] == sent.context.span_id
    assert process["attributes"]["messaging.consumer.group.name"] == group


async def test_a_duplicate_delivery_is_counted_and_its_span_says_so(
    telemetry: Telemetry, shop: Shop
) -> None:
    await create_product(shop)
    async with shop.storage.transaction() as session:
        (entry,) = await session.read_outbox()
    source = DataSource("shop", shop.storage, shop.model, shop.events)
    consumer = IdempotentConsumer(source, "mailer", lambda event, context: asyncio.sleep(0))
    delivery = Delivery(BrokerMessage.from_outbox(entry.message), 1, "mail")
    await consumer(delivery)
    await consumer(delivery)
    spans = telemetry.finished("process shop.ProductCreated")
    assert [s.attributes["eventfold.inbox.duplicate"] for s in spans] == [False, True]
    (duplicates,) = telemetry.points("eventfold.inbox.duplicates")
    assert duplicates.value == 1


async def test_saga_steps_and_compensations_make_spans_with_the_state_they_led_to(
    telemetry: Telemetry, shop: Shop
) -> None:
    recorder = StepRecorder()
    steps = [recorder.step("reserve"), recorder.step("charge", fail=9)]
    saga = Saga("checkout", SagaData, steps, retry=RetryPolicy(1, initial=0, maximum=0, jitter=0))
    state = await SagaOrchestrator(shop.storage, [saga]).start(saga, SagaData("o-1"))
    assert state.status is SagaStatus.COMPENSATED
    names = [s.name for s in telemetry.spans.get_finished_spans() if s.name.startswith("saga")]
    assert names == [
        "saga checkout step reserve",
        "saga checkout step charge",
        "saga checkout compensate reserve",
        "saga checkout compensated",
    ]
    failed = telemetry.one("saga checkout step charge")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["eventfold.saga.status"] == "compensating"


async def test_pool_usage_is_reported_for_the_storages_observed(telemetry: Telemetry) -> None:
    require_service("postgres")
    schema = unique_name("otel_pool")
    storage = create_postgres_storage(POSTGRES_DSN, schema=schema, max_size=4)
    try:
        await storage.create_schema()
        observe_pools([storage], meter_provider=telemetry.meter_provider)
        async with storage.transaction():
            points = {
                p.attributes["state"]: p.value
                for p in telemetry.points("eventfold.pool.connections")
            }
        assert points["used"] == 1
        assert points["max"] == 4
    finally:
        await storage.close()
        await drop_schema(schema)
