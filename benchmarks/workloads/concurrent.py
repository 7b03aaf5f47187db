"""6. Eight concurrent writers on distinct streams, and a reader paging the log meanwhile.

Each writer appends one event per transaction to its own stream (expected version
checked). The reader pages the global log while they write and goes on after they
finish until it has everything or stops making progress; events it never returned are
*skipped*. eventfold's reader uses ``read_log`` (log positions that never pass a
transaction still in flight); the raw reader orders by ``position > last``, which
passes over a position whose transaction commits after a higher one was read.

On SQLite both sides run every transaction one at a time on one connection (SQLite
has one writer at a time), so nothing can be skipped there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from benchmarks.backends import Backend
from benchmarks.harness import Context, Row, alternate, median
from benchmarks.model import deposit
from benchmarks.workloads.common import REGISTRY, ef_record, now, raw_row
from eventfold import LOG_START, StreamState

WRITERS = 8
PAGE = 500
IDLE = 0.002
"""How long the reader pauses after an empty page."""
PATIENCE = 10.0
"""After the writers finish, how long the reader may go without progress before giving up."""


async def _race(
    writer: Callable[[int], Awaitable[None]],
    read_page: Callable[[], Awaitable[int]],
    total: int,
    *,
    head_is_final: bool,
) -> tuple[float, int]:
    """Run the writers and the reader; (events/s of the writers, events the reader skipped)."""
    done = asyncio.Event()
    seen = 0

    async def reader() -> None:
        nonlocal seen
        last_progress = time.perf_counter()
        while True:
            got = await read_page()
            seen += got
            if got:
                last_progress = time.perf_counter()
                continue
            # With the writers done, an empty page means the naive reader is at the head;
            # eventfold's may still wait for the snapshot horizon to pass the last writers.
            if done.is_set() and (
                head_is_final or seen >= total or time.perf_counter() - last_progress > PATIENCE
            ):
                return
            await asyncio.sleep(IDLE)

    reading = asyncio.create_task(reader())
    started = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(WRITERS)))
    elapsed = time.perf_counter() - started
    done.set()
    await reading
    return total / elapsed, total - seen


async def run(context: Context, backend: Backend) -> list[Row]:
    """Workload 6."""
    per_writer = context.n(250, 25)
    total = per_writer * WRITERS
    skipped: dict[str, list[int]] = {"eventfold": [], "raw": []}

    async def eventfold() -> float:
        async with backend.eventfold() as storage:
            position = LOG_START

            async def writer(index: int) -> None:
                stream = f"writer-{index}"
                version: int | StreamState = StreamState.NO_STREAM
                for i in range(per_writer):
                    record = ef_record(REGISTRY, deposit(stream, i), now())
                    async with storage.transaction() as session:
                        version = await session.append(stream, [record], expected_version=version)

            async def ef_page() -> int:
                nonlocal position
                async with storage.transaction() as session:
                    records = await session.read_log(after=position, limit=PAGE)
                if records:
                    position = records[-1].log_position
                return len(records)

            rate, missed = await _race(writer, ef_page, total, head_is_final=False)
            skipped["eventfold"].append(missed)
            return rate

    async def raw() -> float:
        async with backend.raw() as store:
            connections = [await store.connect() for _ in range(WRITERS + 1)]
            reader_connection = connections.pop()
            last = 0

            async def writer(index: int) -> None:
                stream = f"writer-{index}"
                version = 0
                for i in range(per_writer):
                    event = raw_row(stream, version + 1, deposit(stream, i), now())
                    version = await store.append(stream, [event], version, connections[index])

            async def raw_page() -> int:
                nonlocal last
                rows = await store.read_log(last, PAGE, reader_connection)
                if rows:
                    last = rows[-1][0]
                return len(rows)

            rate, missed = await _race(writer, raw_page, total, head_is_final=True)
            skipped["raw"].append(missed)
            return rate

    ef_values, raw_values = await alternate(eventfold, raw, context.repeat)
    ef_skipped = max(skipped["eventfold"])
    on_postgres = backend.name == "postgres"
    result = Row(
        workload="6. 8 concurrent writers + reader",
        backend=backend.name,
        metric=f"{WRITERS}x{per_writer} appends",
        unit="events/s",
        higher_is_better=True,
        eventfold=median(ef_values),
        raw=median(raw_values),
        target="≥0.7x raw, 0 skipped" if on_postgres else "0 skipped",
        target_ratio=0.7 if on_postgres else None,
        samples={"eventfold": ef_values, "raw": raw_values},
        extra={"skipped": skipped},
        note=(
            f"reader skipped: eventfold {ef_skipped} (max of {skipped['eventfold']}), "
            f"raw naive reader {skipped['raw']}"
        ),
    )
    result.met = ef_skipped == 0
    return [result]
