"""The SQLite writer thread past its limits: far more writers than one lock admits,
cancellations at every point of a transaction, and another process holding the file."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from eventfold.adapters.sqlite import SqliteStorage, create_sqlite_storage
from eventfold.testing.contracts.storage import event_record

WRITERS = 300


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[SqliteStorage]:
    storage = create_sqlite_storage(tmp_path / "stress.db", busy_timeout=30)
    await storage.create_schema()
    yield storage
    await storage.close()


async def stream_lengths(storage: SqliteStorage, count: int) -> dict[int, int]:
    async with storage.transaction() as session:
        return {n: len(await session.read_stream(f"s-{n}")) for n in range(count)}


async def test_hundreds_of_writers_with_random_cancellations_leave_only_whole_transactions(
    storage: SqliteStorage,
) -> None:
    chooser = random.Random(20261128)  # a fixed seed: the same schedule on every run

    async def write(n: int) -> None:
        async with storage.transaction() as session:
            await session.append(f"s-{n}", [event_record(n=n)], expected_version=0)
            await asyncio.sleep(0)
            await session.append(f"s-{n}", [event_record(n=n)], expected_version=1)

    tasks = [asyncio.create_task(write(n)) for n in range(WRITERS)]
    for _ in range(chooser.randrange(1, 20)):
        await asyncio.sleep(0)
    cancelled = {n for n in range(WRITERS) if chooser.random() < 0.25 and tasks[n].cancel()}
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)

    failures = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(r, asyncio.CancelledError) for r in failures), failures
    lengths = await stream_lengths(storage, WRITERS)
    assert set(lengths.values()) <= {0, 2}, "a transaction was half written"
    assert all(lengths[n] == 2 for n in range(WRITERS) if n not in cancelled)
    # The thread and its lock survived it all: a new writer still gets through.
    async with storage.transaction() as session:
        await session.append("after", [event_record()], expected_version=0)


async def test_writers_wait_out_another_process_holding_the_write_lock(
    storage: SqliteStorage, tmp_path: Path
) -> None:
    with subprocess.Popen(  # noqa: ASYNC220 - a second process, as another program would be
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
            "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); sys.stdin.readline();"
            "c.execute('ROLLBACK')",
            str(tmp_path / "stress.db"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        assert await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 30) == "locked\n"

        async def write(n: int) -> None:
            async with storage.transaction() as session:
                await session.append(f"s-{n}", [event_record(n=n)], expected_version=0)

        writers = asyncio.gather(*(write(n) for n in range(50)))
        for _ in range(20):  # let every writer start and queue behind the file lock
            await asyncio.sleep(0)
        assert not writers.done(), "a writer got through while another process held the lock"
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        await asyncio.wait_for(writers, 60)
    assert set((await stream_lengths(storage, 50)).values()) == {1}
