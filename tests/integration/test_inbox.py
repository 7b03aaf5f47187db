"""The idempotent consumer: each handler applies each event once, in its own transaction."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from eventfold import DataSource, EventRegistry, PersistenceModel, event_type
from eventfold.adapters.memory import MemoryBroker
from eventfold.adapters.postgres import create_postgres_storage
from eventfold.application.messaging.inbox import IdempotentConsumer, InboxContext, purge_inbox
from eventfold.errors import StoreUnavailableError
from eventfold.ports import BrokerMessage, Delivery, Storage
from eventfold.testing.contracts.broker import Inbox
from tests.conftest import POSTGRES_DSN
from tests.support.tcp_proxy import TcpProxy


@event_type("ThingCounted", version=2)
@dataclass(frozen=True)
class ThingCounted:
    amount: int


def _registry() -> EventRegistry:
    registry = EventRegistry([ThingCounted])
    # Version 1 called the field "n".
    registry.register_upcaster("ThingCounted", 1, lambda data: {"amount": data["n"]})
    return registry


def _message(amount: int = 1, *, version: int = 2) -> BrokerMessage:
    data = {"amount": amount} if version == 2 else {"n": amount}
    return BrokerMessage(
        event_id=uuid.uuid4(),
        type_name="ThingCounted",
        schema_version=version,
        data=json.dumps(data),
        aggregate_type="Thing",
        aggregate_id="t-1",
        occurred_at=datetime.now(UTC),
    )


def _delivery(message: BrokerMessage, attempt: int = 1) -> Delivery:
    return Delivery(message=message, attempt=attempt, group="counters")


class Boom(Exception):
    pass


def counter(name: str, *, fail_first: int = 0) -> Any:
    """A handler adding each event's amount to the document ``totals/<name>``."""
    failures = {"left": fail_first}

    async def handle(event: ThingCounted, context: InboxContext) -> None:
        session = await context.session()
        current = await session.load_document("totals", name)
        total = 0 if current is None else json.loads(current.data)["total"]
        version = 0 if current is None else current.version
        await session.save_document(
            "totals", name, json.dumps({"total": total + event.amount}), expected_version=version
        )
        if failures["left"]:
            failures["left"] -= 1
            raise Boom

    return handle


async def total(storage: Storage, name: str) -> int:
    async with storage.transaction() as session:
        document = await session.load_document("totals", name)
    return 0 if document is None else int(json.loads(document.data)["total"])


def consumer(storage: Storage, name: str, **options: Any) -> IdempotentConsumer[ThingCounted]:
    source = DataSource("main", storage, PersistenceModel(), _registry())
    return IdempotentConsumer(source, name, counter(name, **options))


async def test_a_duplicate_delivery_has_one_effect(any_storage: Storage) -> None:
    handle = consumer(any_storage, "totals")
    message = _message(5)
    await handle(_delivery(message))
    await handle(_delivery(message, attempt=2))
    assert await total(any_storage, "totals") == 5


async def test_a_failing_handler_leaves_no_inbox_row_and_no_effect(any_storage: Storage) -> None:
    handle = consumer(any_storage, "totals", fail_first=1)
    message = _message(5)
    with pytest.raises(Boom):
        await handle(_delivery(message))
    assert await total(any_storage, "totals") == 0
    await handle(_delivery(message, attempt=2))
    assert await total(any_storage, "totals") == 5


async def test_a_failed_message_is_delivered_again_and_applied_once(
    any_storage: Storage, memory_broker: MemoryBroker
) -> None:
    broker = memory_broker
    seen = Inbox()
    handle = consumer(any_storage, "totals", fail_first=2)

    async def watched(delivery: Delivery) -> None:
        await seen(delivery)
        await handle(delivery)

    await broker.subscribe("counters", watched, max_deliveries=5)
    await broker.publish([_message(7)])
    await seen.wait_for(3)
    await broker.close()
    assert [d.attempt for d in seen.deliveries] == [1, 2, 3]
    assert await total(any_storage, "totals") == 7


async def test_two_handlers_of_one_event_each_apply_it(any_storage: Storage) -> None:
    message = _message(3)
    await consumer(any_storage, "first")(_delivery(message))
    await consumer(any_storage, "second")(_delivery(message))
    await consumer(any_storage, "second")(_delivery(message))
    assert (await total(any_storage, "first"), await total(any_storage, "second")) == (3, 3)


async def test_an_old_payload_is_upcast_before_the_handler_sees_it(any_storage: Storage) -> None:
    await consumer(any_storage, "totals")(_delivery(_message(4, version=1)))
    assert await total(any_storage, "totals") == 4


async def test_purge_forgets_entries_processed_before_the_cutoff(any_storage: Storage) -> None:
    handle = consumer(any_storage, "totals")
    message = _message(2)
    await handle(_delivery(message))
    assert await purge_inbox(any_storage, older_than=datetime.now(UTC) - timedelta(hours=1)) == 0
    assert await purge_inbox(any_storage, older_than=datetime.now(UTC) + timedelta(hours=1)) == 1
    # Forgotten means applied again: purge only past the broker's redelivery window.
    await handle(_delivery(message, attempt=2))
    assert await total(any_storage, "totals") == 4


# -- database outages on PostgreSQL: what a consumer sees, so it can wait them out -------


async def test_a_delivery_while_the_database_is_cut_off_raises_store_unavailable(
    postgres_storage: Storage,
) -> None:
    schema = postgres_storage.schema  # type: ignore[attr-defined]
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        storage = create_postgres_storage(
            f"postgresql://postgres@127.0.0.1:{proxy.port}/test", schema=schema
        )
        try:
            handle = consumer(storage, "totals")
            await handle(_delivery(_message(1)))
            await proxy.cut()
            message = _message(5)
            with pytest.raises(StoreUnavailableError):
                await handle(_delivery(message))
            await proxy.restore()
            await handle(_delivery(message, attempt=2))
        finally:
            await storage.close()
    assert await total(postgres_storage, "totals") == 6


async def test_a_database_connection_killed_mid_handler_raises_store_unavailable(
    postgres_storage: Storage,
) -> None:
    async def killed(event: ThingCounted, context: InboxContext) -> None:
        session = await context.session()
        await session.save_document("totals", "killed", "{}", expected_version=0)
        rows = await session.execute_sql(sa.text("SELECT pg_backend_pid() AS pid"))  # type: ignore[attr-defined]
        connection = await asyncpg.connect(POSTGRES_DSN)
        try:
            await connection.execute("SELECT pg_terminate_backend($1)", rows[0]["pid"])
        finally:
            await connection.close()
        await session.load_document("totals", "killed")

    source = DataSource("main", postgres_storage, PersistenceModel(), _registry())
    handle = IdempotentConsumer(source, "killed", killed)
    with pytest.raises(StoreUnavailableError):
        await handle(_delivery(_message(1)))
    async with postgres_storage.transaction() as session:
        assert await session.load_document("totals", "killed") is None
