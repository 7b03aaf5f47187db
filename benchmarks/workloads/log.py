"""5. Reading the global log from the start, decoded into event objects.

eventfold: ``session.read_log(after=..., limit=1000)`` page by page (one transaction per
page), each record decoded by ``EventRegistry.decode``. raw: ``WHERE position > $1 ORDER
BY position LIMIT 1000`` per page, each payload decoded by the same pydantic
``TypeAdapter.validate_json``. eventsourcing: its notification log
(``recorder.select_notifications``) page by page, each notification decoded by the
application's mapper into its domain event.
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.backends import Backend
from benchmarks.harness import Context, Row
from benchmarks.peer import Bank, read_page
from benchmarks.workloads.appends import seeded_peer
from benchmarks.workloads.common import (
    REGISTRY,
    interleaved_streams,
    raw_decode,
    row,
    seed_eventfold,
    seed_raw,
    targets,
    throughput_pair,
    timed,
)
from eventfold import LOG_START

PAGE = 1000


READABLE_WITHIN = 300.0
"""Seconds the seeded log may take to become readable (not timed)."""


async def _readable(storage: Any, total: int) -> None:
    """Wait, untimed, until the whole seeded log is readable.

    The gap-free log never passes a transaction still in progress on the server: on a
    PostgreSQL shared with other work, the seeded events become readable only once the
    transactions open meanwhile have ended.
    """
    try:
        async with asyncio.timeout(READABLE_WITHIN):
            while True:
                async with storage.transaction() as session:
                    if await session.count_after(LOG_START) >= total:
                        return
                await asyncio.sleep(0.05)
    except TimeoutError:
        msg = f"the seeded log was not readable within {READABLE_WITHIN:.0f} s"
        raise RuntimeError(msg) from None


async def run(context: Context, backend: Backend) -> list[Row]:
    """Workload 5."""
    total = context.n(20_000, 2000)
    streams = interleaved_streams("log", 100, total)
    total = sum(len(events) for _, events in streams)

    async def eventfold(storage: Any) -> float:
        await seed_eventfold(storage, streams)
        await _readable(storage, total)
        decode = REGISTRY.decode

        async def body() -> None:
            position, seen = LOG_START, 0
            while True:
                async with storage.transaction() as session:
                    records = await session.read_log(after=position, limit=PAGE)
                if not records:
                    break
                events = [decode(r.type_name, r.schema_version, r.data) for r in records]
                seen += len(events)
                position = records[-1].log_position
            assert seen == total, (seen, total)

        return total / await timed(body)

    async def raw(store: Any) -> float:
        await seed_raw(store, streams)

        async def body() -> None:
            last, seen = 0, 0
            while True:
                rows = await store.read_log(last, PAGE)
                if not rows:
                    break
                events = [raw_decode(r) for r in rows]
                seen += len(events)
                last = rows[-1][0]
            assert seen == total, (seen, total)

        return total / await timed(body)

    async def peer(app: Bank) -> float:
        for stream_id, events in streams:
            seeded_peer(app, stream_id, len(events))

        async def body() -> None:
            last, seen = 0, 0
            while True:
                last, events = read_page(app, last, PAGE)
                if not events:
                    break
                seen += len(events)
            assert seen == total, (seen, total)

        return total / await timed(body)

    values = await throughput_pair(context, backend, eventfold, raw, peer)
    return [
        row(
            "5. read global log, decoded",
            backend,
            f"{total} events, pages of {PAGE}",
            "events/s",
            values,
            **targets(backend, raw_sqlite=0.85, raw_postgres=0.85, peer_sqlite=None),
        )
    ]
