"""Projection workers in separate processes share partitions and survive a SIGKILL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from eventfold.adapters.url import storage_from_url
from eventfold.ports import Storage
from eventfold.serialization import EventRegistry
from eventfold.testing.contracts.projections import Deposited, Withdrawn, _append
from tests.conftest import POSTGRES_DSN, require_service, unique_name
from tests.examples.conftest import drop_postgres_schema

STREAMS = 24
LEASE = 1.5


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'workers.db'}"
        return
    require_service("postgres")
    schema = unique_name("workers")
    yield f"{POSTGRES_DSN}?schema={schema}"
    await drop_postgres_schema(schema)


@pytest.fixture
def workers(database_url: str) -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


async def start_worker(url: str, started: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    process = subprocess.Popen(  # noqa: ASYNC220 - a worker process, as production runs it
        [sys.executable, "-m", "tests.support.projection_worker", url, str(LEASE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    started.append(process)
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
    assert line == "ready\n", f"the worker process did not start: {line!r}"
    return process


async def ledgers(storage: Storage) -> dict[str, list[int]]:
    async with storage.transaction() as session:
        records = await session.load_documents("ledger", [f"account-s{n}" for n in range(STREAMS)])
    return {record.key: json.loads(record.data) for record in records}


async def wait_for_applied(storage: Storage, count: int, seconds: float = 90) -> None:
    try:
        async with asyncio.timeout(seconds):
            while sum(map(len, (await ledgers(storage)).values())) < count:  # noqa: ASYNC110 - other processes write it
                await asyncio.sleep(0.05)
    except TimeoutError:
        applied = sum(map(len, (await ledgers(storage)).values()))
        msg = f"the workers applied {applied} of {count} events in {seconds} s"
        raise AssertionError(msg) from None


async def test_three_workers_with_one_killed_apply_every_event_once_in_stream_order(
    database_url: str, workers: list[subprocess.Popen[str]]
) -> None:
    storage = storage_from_url(database_url)
    registry = EventRegistry([Deposited, Withdrawn])
    try:
        await storage.create_schema()
        await _append(storage, registry, *[Deposited(f"s{n % STREAMS}", 1) for n in range(240)])
        for _ in range(3):
            await start_worker(database_url, workers)
        await wait_for_applied(storage, 60)

        os.kill(workers[0].pid, signal.SIGKILL)  # mid-run: its leases are simply not renewed
        await _append(storage, registry, *[Deposited(f"s{n % STREAMS}", 1) for n in range(240)])
        await wait_for_applied(storage, 480)

        found = await ledgers(storage)
        assert found == {f"account-s{n}": list(range(1, 21)) for n in range(STREAMS)}
    finally:
        await storage.close()
