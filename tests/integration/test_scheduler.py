"""The scheduler on SQLite and PostgreSQL: due messages fire once, and again after a crash."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eventfold.adapters.scheduling import schedule_store_for
from eventfold.adapters.url import storage_from_url
from eventfold.application.messaging.scheduler import (
    ScheduledInbox,
    Scheduler,
    scheduled_message,
)
from eventfold.ports import ClaimedMessage, Storage
from tests.conftest import POSTGRES_DSN, drop_schema, require_service, unique_name
from tests.support.scheduler_process import EFFECTS, count_effect

ROOT = Path(__file__).resolve().parents[2]
WAIT = 60.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An initialised database of each SQL backend in turn, removed afterwards."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'scheduler.db'}"
        schema = None
    else:
        require_service("postgres")
        schema = unique_name("sched")
        url = f"{POSTGRES_DSN}?schema={schema}"
    storage = storage_from_url(url)
    await storage.create_schema()
    await storage.close()
    yield url
    if schema is not None:
        await drop_schema(schema)


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[Storage]:
    storage = storage_from_url(database_url)
    yield storage
    await storage.close()


async def effects(storage: Storage, schedule_id: str) -> int:
    async with storage.transaction() as session:
        document = await session.load_document(EFFECTS, schedule_id)
    return 0 if document is None else int(json.loads(document.data)["count"])


async def schedule(storage: Storage, schedule_id: str, due_at: datetime) -> None:
    message = scheduled_message(schedule_id, "Remind", {"n": 1}, due_at=due_at, key="k")
    async with storage.transaction() as session:
        await schedule_store_for(storage).schedule(session, [message], now=due_at)


async def test_a_scheduled_message_fires_once_after_its_due_time(storage: Storage) -> None:
    clock, delivered = Clock(), []
    due = clock.now + timedelta(minutes=15)
    await schedule(storage, "order-1/payment-timeout", due)

    async def handler(claimed: ClaimedMessage) -> None:
        delivered.append(claimed.message.name)

    scheduler = Scheduler(schedule_store_for(storage), handler, clock=clock)
    clock.now = due - timedelta(seconds=1)
    assert await scheduler.fire_due() == 0
    clock.now = due
    assert await scheduler.fire_due() == 1
    clock.now = due + timedelta(hours=1)
    assert await scheduler.fire_due() == 0
    assert delivered == ["Remind"]
    assert await schedule_store_for(storage).pending() == []


async def test_a_failed_delivery_is_retried_later_and_then_fires(storage: Storage) -> None:
    clock, calls = Clock(), []
    await schedule(storage, "s-1", clock.now)

    async def flaky(claimed: ClaimedMessage) -> None:
        calls.append(claimed.attempt)
        if claimed.attempt == 1:
            raise RuntimeError("the payment service did not answer")

    scheduler = Scheduler(schedule_store_for(storage), flaky, clock=clock)
    assert await scheduler.fire_due() == 1
    assert await scheduler.fire_due() == 0  # not due again before its backoff
    clock.now += timedelta(minutes=10)
    assert await scheduler.fire_due() == 1
    assert calls == [1, 2]
    assert await schedule_store_for(storage).pending() == []


@pytest.fixture
def worker(database_url: str) -> Iterator[Any]:
    """A scheduler process that hangs after applying a message, before recording it."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.scheduler_process", database_url, "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=WAIT)
    assert process.stdout is not None
    process.stdout.close()


async def _line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(WAIT):
        return (await asyncio.to_thread(process.stdout.readline)).strip()


async def test_a_message_fires_again_after_the_scheduler_was_killed_and_has_one_effect(
    storage: Storage, worker: subprocess.Popen[str]
) -> None:
    assert await _line(worker) == "ready"
    await schedule(storage, "order-1/payment-timeout", datetime.now(UTC))
    assert await _line(worker) == "applied order-1/payment-timeout"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=WAIT)

    store, deliveries = schedule_store_for(storage), []
    inbox = ScheduledInbox(storage, "effects", count_effect)

    async def counted(claimed: ClaimedMessage) -> None:
        deliveries.append(claimed.attempt)
        await inbox(claimed)

    scheduler = Scheduler(store, counted, lease=timedelta(seconds=1))
    async with asyncio.timeout(WAIT):
        # The killed worker's claim has to expire first: ask until it did.
        while not await scheduler.fire_due():  # noqa: ASYNC110 - the lease is in the database
            await asyncio.sleep(0.1)
    assert deliveries == [2]  # delivered again: at least once
    assert await effects(storage, "order-1/payment-timeout") == 1  # applied once
    assert await store.pending() == []


async def test_a_running_scheduler_fires_what_becomes_due_and_stops_when_asked(
    storage: Storage,
) -> None:
    fired = asyncio.Event()

    async def handler(claimed: ClaimedMessage) -> None:
        fired.set()

    scheduler = Scheduler(schedule_store_for(storage), handler, poll_interval=0.05)
    running = asyncio.create_task(scheduler.run())
    await schedule(storage, "s-1", datetime.now(UTC))
    async with asyncio.timeout(WAIT):
        await fired.wait()
        await scheduler.stop()
        await running
    assert await schedule_store_for(storage).pending() == []
