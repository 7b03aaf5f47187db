"""6. Eight concurrent writers on distinct streams, and a reader paging the log meanwhile.

Each writer saves one event per transaction on its own account (expected version
checked): eventfold through a unit of work that ``add``s the held account (event and
outbox row), eventsourcing with ``app.save`` from a thread per writer (its calls block;
its reader pages the notification log from one more thread), raw with one INSERT. The
reader pages the global log while they write and goes on after they finish until it
has everything or stops making progress; events it never returned are
*skipped*. eventfold's reader uses ``read_log`` (log positions that never pass a
transaction still in flight); the raw reader orders by ``position > last``, which
passes over a position whose transaction commits after a higher one was read.

On SQLite both sides run every transaction one at a time on one connection (SQLite
has one writer at a time), so nothing can be skipped there.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from benchmarks.backends import Backend
from benchmarks.harness import Context, Row, alternate, median
from benchmarks.model import Account, deposit
from benchmarks.peer import Bank, EsAccount, eventsourcing_app, read_page
from benchmarks.workloads.appends import data_source, save
from benchmarks.workloads.common import now, raw_row, targets
from eventfold import LOG_START

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
            source = data_source(storage)
            position = LOG_START

            async def writer(index: int) -> None:
                account = Account.open(f"writer-{index}", "Ada")
                await save(source, account)
                for i in range(1, per_writer):
                    account.deposit(100 + i % 900, f"ref-{i:08d}")
                    await save(source, account)

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

    es_values: list[float] = []

    async def raw_then_peer() -> float:
        value = await raw()
        async with eventsourcing_app(backend) as app:
            es_values.append(await asyncio.to_thread(_peer_race, app, per_writer))
        return value

    ef_values, raw_values = await alternate(eventfold, raw_then_peer, context.repeat)
    ef_skipped = max(skipped["eventfold"])
    result = Row(
        workload="6. 8 concurrent writers + reader",
        backend=backend.name,
        metric=f"{WRITERS}x{per_writer} appends",
        unit="events/s",
        higher_is_better=True,
        eventfold=median(ef_values),
        raw=median(raw_values),
        peer=median(es_values),
        samples={"eventfold": ef_values, "raw": raw_values, "eventsourcing": es_values},
        extra={"skipped": skipped},
        note=(
            f"reader skipped: eventfold {ef_skipped} (max of {skipped['eventfold']}), "
            f"raw naive reader {skipped['raw']}"
        ),
        **targets(backend, raw_sqlite=None, raw_postgres=0.6, peer_sqlite=1.2),
    )
    result.target = ", ".join(filter(None, [result.target, "0 skipped"]))
    result.met = ef_skipped == 0
    return [result]


def _peer_race(app: Bank, per_writer: int) -> float:
    """eventsourcing's writers on threads of their own, a reader paging meanwhile."""
    total = per_writer * WRITERS
    done = threading.Event()

    def writer(index: int) -> None:
        account = EsAccount(f"writer-{index}", "Ada", "EUR")
        app.save(account)
        for i in range(1, per_writer):
            account.deposit(100 + i % 900, f"ref-{i:08d}")
            app.save(account)

    def reader() -> None:
        last = 0
        while not done.is_set():
            last, events = read_page(app, last, PAGE)
            if not events:
                time.sleep(IDLE)

    with ThreadPoolExecutor(WRITERS + 1) as pool:
        reading = pool.submit(reader)
        started = time.perf_counter()
        for future in [pool.submit(writer, w) for w in range(WRITERS)]:
            future.result()
        elapsed = time.perf_counter() - started
        done.set()
        reading.result()
    return total / elapsed
