"""Process managers on SQLite and PostgreSQL: crashes, redeliveries, competing workers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from eventfold.adapters.memory import create_memory_storage
from eventfold.adapters.url import storage_from_url
from eventfold.application.messaging.processes import (
    ProcessContext,
    ProcessManager,
    ProcessRunner,
    Reaction,
)
from eventfold.ports import Storage
from tests.conftest import POSTGRES_DSN, drop_schema, require_service, unique_name
from tests.support import process_worker
from tests.support.process_worker import EVENTS, Counted, Tally

ROOT = Path(__file__).resolve().parents[2]
WAIT = 120.0
KEYS = ("k0", "k1", "k2")


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An initialised database of each SQL backend in turn, removed afterwards."""
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'processes.db'}"
    else:
        require_service("postgres")
        schema = unique_name("proc")
        url = f"{POSTGRES_DSN}?schema={schema}"
    storage = storage_from_url(url)
    await storage.create_schema()
    await storage.close()
    yield url
    if schema is not None:
        await drop_schema(schema)


async def _states(storage: Storage) -> dict[str, Any]:
    tally = process_worker.runner(storage)
    return {key: await tally.get("tally", key) for key in KEYS}


async def _reference() -> dict[str, Any]:
    """The states one worker reaches with each event delivered once."""
    storage = create_memory_storage()
    tally = process_worker.runner(storage)
    for event_id, event in EVENTS:
        await tally.handle(event, event_id=event_id)
    return process_worker.states(await _states(storage))


def _worker(url: str, pause: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.process_worker", url, str(pause)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


async def _until_line(process: subprocess.Popen[str], wanted: str) -> None:
    assert process.stdout is not None
    async with asyncio.timeout(WAIT):
        while (line := await asyncio.to_thread(process.stdout.readline)) and line.strip() != wanted:
            pass
    assert line.strip() == wanted, f"the worker ended before printing {wanted!r}"


async def test_a_process_fed_every_event_twice_and_killed_mid_run_ends_as_one_fed_once(
    database_url: str,
) -> None:
    first = _worker(database_url, 0.05)
    try:
        await _until_line(first, "handled 10")
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=WAIT)
        assert first.stdout is not None
        first.stdout.close()
    second = _worker(database_url, 0)  # restarted: everything is delivered again, twice
    try:
        await _until_line(second, "done")
    finally:
        second.wait(timeout=WAIT)
        assert second.stdout is not None
        second.stdout.close()
    storage = storage_from_url(database_url)
    try:
        assert process_worker.states(await _states(storage)) == await _reference()
        async with storage.transaction() as session:
            records = await session.load_documents("records", [f"{e.key}-{e.n}" for _, e in EVENTS])
        assert len(records) == len(EVENTS)  # each command's effect exactly once
    finally:
        await storage.close()


async def test_two_workers_never_run_one_instances_reactions_at_once(database_url: str) -> None:
    active, most = [0], [0]

    async def watched(state: Tally, event: Counted, context: ProcessContext) -> Tally:
        active[0] += 1
        most[0] = max(most[0], active[0])
        await asyncio.sleep(0.02)  # widen the window the other worker could enter in
        active[0] -= 1
        return Tally(state.total + event.n, [*state.seen, event.n])

    process = ProcessManager(
        "tally", Tally, Tally, [Reaction(Counted, lambda e: "one", watched, starts=True)]
    )
    # Two storages: two connection pools, as two worker processes would have.
    storages = [storage_from_url(database_url) for _ in range(2)]
    runners: list[ProcessRunner] = []
    for storage in storages:
        runner = process_worker.runner(storage)
        runner._processes = {"tally": process}
        runners.append(runner)
    try:
        events = [Counted("x", n) for n in range(16)]
        await asyncio.gather(
            *(runners[n % 2].handle(e, event_id=uuid.uuid4()) for n, e in enumerate(events))
        )
        instance = await runners[0].get("tally", "one")
        assert most[0] == 1
        assert instance is not None
        assert sorted(instance.state["seen"]) == list(range(16))
    finally:
        for storage in storages:
            await storage.close()
