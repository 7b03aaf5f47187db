"""The outbox relay on PostgreSQL when the database or the broker misbehaves."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from eventfold.adapters.postgres import PostgresStorage, create_postgres_storage
from eventfold.adapters.postgres.outbox import create_postgres_outbox_store
from eventfold.adapters.rabbitmq import create_rabbitmq_broker
from eventfold.application.messaging.outbox import OutboxRelay
from eventfold.errors import BrokerUnavailableError, StoreUnavailableError
from eventfold.ports import BrokerMessage
from eventfold.testing.contracts.broker import Inbox
from eventfold.testing.contracts.outbox import add_outbox_rows
from tests.conftest import POSTGRES_DSN, RABBITMQ_URL, require_service, unique_name
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
WAIT = 60.0
"""Seconds any wait may take on a loaded machine: a bound against hanging, not a measure."""

RUN = [sys.executable, "-c", "from eventfold.cli import main; main()", "outbox", "run"]


class HangingPublisher:
    """A broker that accepts the connection and then never answers."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def publish(self, messages: Sequence[BrokerMessage]) -> None:
        self.called.set()
        await asyncio.Event().wait()


async def drop(schema: str) -> None:
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


async def test_a_hanging_broker_ends_the_claims_transaction_after_the_publish_timeout(
    postgres_storage: PostgresStorage,
) -> None:
    await add_outbox_rows(postgres_storage, "a-1", "a-2")
    publisher = HangingPublisher()
    relay = OutboxRelay(
        create_postgres_outbox_store(postgres_storage), publisher, publish_timeout=0.5
    )
    relaying = asyncio.create_task(relay.relay_once())
    await asyncio.wait_for(publisher.called.wait(), WAIT)
    # The claim locks its rows until its transaction ends: locking them from elsewhere
    # succeeds only once it has (the broker never answers, so only the timeout ends it).
    other = create_postgres_storage(POSTGRES_DSN, schema=postgres_storage.schema)
    try:
        async with asyncio.timeout(WAIT), other.transaction() as session:
            locked = await session.execute_sql(
                sa.text("SELECT id FROM eventfold_outbox ORDER BY id FOR UPDATE")
            )
    finally:
        await other.close()
    assert [row["id"] for row in locked] == [1, 2]
    with pytest.raises(BrokerUnavailableError, match="publish_timeout"):
        await relaying


async def test_a_hanging_broker_is_an_outage_recorded_on_every_row_of_the_batch(
    postgres_storage: PostgresStorage,
) -> None:
    await add_outbox_rows(postgres_storage, "a-1", "a-2")
    store = create_postgres_outbox_store(postgres_storage)
    relay = OutboxRelay(store, HangingPublisher(), publish_timeout=0.2)
    with pytest.raises(BrokerUnavailableError):
        await asyncio.wait_for(relay.relay_once(), WAIT)
    entries = [await store.load_entry(entry_id) for entry_id in (1, 2)]
    assert [(e.attempts, e.refusals, e.dead) for e in entries if e] == [(1, 0, False)] * 2
    assert all("publish_timeout" in (e.last_error or "") for e in entries if e)


async def test_the_claim_is_planned_for_what_the_outbox_holds_each_time(
    postgres_storage: PostgresStorage,
) -> None:
    # A generic plan made while the outbox was empty can cost orders of magnitude more
    # once other relays hold rows: the claim never switches to one.
    storage = create_postgres_storage(POSTGRES_DSN, schema=postgres_storage.schema, max_size=1)
    store = create_postgres_outbox_store(storage)
    try:
        for _ in range(8):
            async with store.claim(limit=500, now=_now()) as claim:
                assert list(claim.entries) == []
        async with storage.transaction() as session:
            plans = await session.execute_sql(
                sa.text(
                    "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                    " WHERE statement LIKE '%WITH claimed AS%'"
                    " AND statement NOT LIKE '%pg_prepared_statements%'"
                )
            )
    finally:
        await storage.close()
    assert [(row["generic_plans"], row["custom_plans"]) for row in plans] == [(0, 8)]


def _now() -> datetime:
    return datetime.now(UTC)


async def test_claiming_through_a_cut_connection_raises_store_unavailable(
    postgres_storage: PostgresStorage,
) -> None:
    await add_outbox_rows(postgres_storage, "a-1")
    async with TcpProxy("127.0.0.1", 5432) as proxy:
        storage = create_postgres_storage(
            f"postgresql://postgres@127.0.0.1:{proxy.port}/test", schema=postgres_storage.schema
        )
        store = create_postgres_outbox_store(storage)
        try:
            async with store.claim(limit=10, now=_now()) as claim:
                assert len(claim.entries) == 1
            await proxy.cut()
            with pytest.raises(StoreUnavailableError):
                await store.outbox_stats()
        finally:
            await proxy.restore()
            await storage.close()


# -- `eventfold outbox run` in a process of its own, cut off from its database -----------


@pytest.fixture
async def exchange() -> AsyncIterator[str]:
    require_service("rabbitmq")
    name = unique_name("relay_db_outage")
    yield name
    cleanup = create_rabbitmq_broker(RABBITMQ_URL, exchange=name)
    cleanup._groups.add("readers")
    await cleanup.destroy()
    await cleanup.close()


class Output:
    """Lines a process writes, collected as they come, with a way to wait for one."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        assert process.stdout is not None
        self._task = asyncio.create_task(self._read(process.stdout))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode(errors="replace").rstrip())
            self._changed.set()

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    async def wait_for(self, text: str, times: int = 1) -> None:
        """Until ``text`` appeared in ``times`` lines; fails after ``WAIT`` seconds."""
        try:
            async with asyncio.timeout(WAIT):
                while self.count(text) < times:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            shown = "\n".join(self.lines[-20:])
            pytest.fail(f"the relay did not log {text!r} {times} time(s); it said:\n{shown}")

    async def finished(self) -> str:
        await self._task
        return "\n".join(self.lines)


async def until_delivered(inbox: Inbox, wanted: set[Any]) -> None:
    """Until every id in ``wanted`` was delivered (duplicates may come on the way)."""
    async with asyncio.timeout(WAIT):
        while not {m.event_id for m in inbox.messages} >= wanted:
            await inbox.wait_for(len(inbox.deliveries) + 1)


async def test_outbox_run_waits_out_a_cut_database_connection_and_loses_nothing(
    exchange: str,
) -> None:
    require_service("postgres")
    schema = unique_name("relay_db_outage")
    storage = create_postgres_storage(POSTGRES_DSN, schema=schema)
    broker = create_rabbitmq_broker(RABBITMQ_URL, exchange=exchange)
    inbox = Inbox()
    await storage.create_schema()
    await broker.subscribe("readers", inbox)
    before = await add_outbox_rows(storage, *[f"a-{n % 20}" for n in range(200)])
    try:
        async with TcpProxy("127.0.0.1", 5432) as proxy:
            url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test?schema={schema}"
            process = await asyncio.create_subprocess_exec(
                *RUN,
                *("--name", exchange, "--batch-size", "20", "--poll-interval", "0.05"),
                cwd=ROOT,
                env={
                    **os.environ,
                    "EVENTFOLD_DATABASE_URL": url,
                    "EVENTFOLD_BROKER_URL": RABBITMQ_URL,
                },
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output = Output(process)
            try:
                await inbox.wait_for(20)
                await proxy.cut()
                during = await add_outbox_rows(storage, *[f"a-{n % 20}" for n in range(100)])
                # Cut for several seconds: long enough for the relay to fail and back off
                # three times (0.5 s, 1 s, 2 s and their jitter), and not to give up.
                await output.wait_for("retrying in", times=3)
                assert process.returncode is None, await output.finished()
                await proxy.restore()
                wanted = {m.event_id for m in before + during}
                await until_delivered(inbox, wanted)
                assert process.returncode is None, await output.finished()
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                code = await asyncio.wait_for(process.wait(), WAIT)
                log = await output.finished()
        assert code == 0, log
        delivered = Counter(d.message.event_id for d in inbox.deliveries)
        assert set(delivered) == wanted
        # At least once: a batch published just before the cut may be published again,
        # since its rows could not be marked; every event arrives, none is lost.
        duplicates = sum(delivered.values()) - len(delivered)
        assert duplicates <= 20, f"{duplicates} duplicates: more than one batch went out twice"
        backlog = (await create_postgres_outbox_store(storage).outbox_stats()).backlog
        assert backlog == 0
    finally:
        await broker.close()
        await storage.close()
        await drop(schema)
