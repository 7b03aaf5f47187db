"""2. One event per transaction onto one long stream; 3. ten events per transaction.

Both sides check the expected version in the same transaction as the insert. eventfold:
``async with storage.transaction() as session: await session.append(...)`` with events
encoded by the ``EventRegistry``; raw: the same statements on the driver, events encoded
with the same pydantic adapter.
"""

from __future__ import annotations

from typing import Any

from benchmarks.backends import Backend
from benchmarks.harness import Context, Row
from benchmarks.model import deposit
from benchmarks.workloads.common import (
    REGISTRY,
    Op,
    ef_record,
    history,
    interleaved_pair,
    now,
    raw_row,
    row,
    seed_eventfold,
    seed_raw,
)
from eventfold import StreamState

STREAM = "account-long"


async def _one_per_transaction(context: Context, backend: Backend) -> Row:
    seeded = context.n(5000, 200)
    count = context.n(1500, 100)

    async def eventfold(storage: Any) -> Op:
        await seed_eventfold(storage, [(STREAM, history(STREAM, seeded))])
        version = seeded

        async def op(i: int) -> None:
            nonlocal version
            record = ef_record(REGISTRY, deposit(STREAM, i), now())
            async with storage.transaction() as session:
                version = await session.append(STREAM, [record], expected_version=version)

        return op

    async def raw(store: Any) -> Op:
        await seed_raw(store, [(STREAM, history(STREAM, seeded))])
        version = seeded

        async def op(i: int) -> None:
            nonlocal version
            event = raw_row(STREAM, version + 1, deposit(STREAM, i), now())
            version = await store.append(STREAM, [event], version)

        return op

    values = await interleaved_pair(context, backend, eventfold, raw, count)
    on_postgres = backend.name == "postgres"
    return row(
        "2. append 1 event/tx, long stream",
        backend,
        f"{count} appends after {seeded}",
        "appends/s",
        values,
        target="≥0.8x raw" if on_postgres else "",
        target_ratio=0.8 if on_postgres else None,
    )


async def _ten_per_transaction(context: Context, backend: Backend) -> Row:
    transactions = context.n(300, 30)
    size = 10

    def batch(i: int) -> list[object]:
        return [deposit(STREAM, i * size + j) for j in range(size)]

    async def eventfold(storage: Any) -> Op:
        version: int | StreamState = StreamState.NO_STREAM

        async def op(i: int) -> None:
            nonlocal version
            at = now()
            records = [ef_record(REGISTRY, event, at) for event in batch(i)]
            async with storage.transaction() as session:
                version = await session.append(STREAM, records, expected_version=version)

        return op

    async def raw(store: Any) -> Op:
        version = 0

        async def op(i: int) -> None:
            nonlocal version
            at = now()
            events = [raw_row(STREAM, version + j + 1, e, at) for j, e in enumerate(batch(i))]
            version = await store.append(STREAM, events, version)

        return op

    ef_values, raw_values = await interleaved_pair(
        context, backend, eventfold, raw, transactions, block=10
    )
    values = ([v * size for v in ef_values], [v * size for v in raw_values])
    return row(
        "3. append 10 events/tx",
        backend,
        f"{transactions} transactions",
        "events/s",
        values,
    )


async def run_one(context: Context, backend: Backend) -> list[Row]:
    """Workload 2."""
    return [await _one_per_transaction(context, backend)]


async def run_ten(context: Context, backend: Backend) -> list[Row]:
    """Workload 3."""
    return [await _ten_per_transaction(context, backend)]
