"""Projections into a user's SQLAlchemy table, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, Text, select, text
from sqlalchemy.schema import CreateTable

from eventfold.adapters.sql.read_model import TableReadModel
from eventfold.application.readside.projections import (
    Projection,
    ProjectionContext,
    ProjectionRunner,
)
from eventfold.ports.records import EventRecord, StreamState
from eventfold.serialization import EventRegistry
from eventfold.testing.contracts.storage import until_readable

metadata = MetaData()
totals_table = Table(
    "account_totals",
    metadata,
    Column("account", Text, primary_key=True),
    Column("total", Integer, nullable=False),
    Column("deposits", Integer, nullable=False),
)
totals = TableReadModel(totals_table)


@dataclass(frozen=True)
class Paid:
    account: str
    amount: int


class Totals(Projection):
    name: ClassVar[str] = "totals"
    read_models: ClassVar[tuple[TableReadModel, ...]] = (totals,)
    pause: asyncio.Event | None = None
    paused: asyncio.Event | None = None

    async def apply_Paid(self, event: Paid, context: ProjectionContext) -> None:
        if self.pause is not None and self.paused is not None and event.amount == 1000:
            self.paused.set()
            await self.pause.wait()
        rows = totals.rows(context)
        row = await rows.get(event.account) or {"account": event.account, "total": 0, "deposits": 0}
        rows.put({**row, "total": row["total"] + event.amount, "deposits": row["deposits"] + 1})


@pytest.fixture
async def storage(sql_storage: Any) -> Any:
    storage = sql_storage
    async with storage.transaction() as session:
        await session.execute_sql(CreateTable(totals_table, if_not_exists=True))
    return storage


async def append_payments(storage: Any, registry: EventRegistry, payments: list[Paid]) -> None:
    async with storage.transaction() as session:
        for payment in payments:
            encoded = registry.encode(payment)
            record = EventRecord(
                uuid.uuid4(), encoded.type_name, 1, encoded.data, datetime.now(UTC)
            )
            await session.append(
                f"account-{payment.account}", [record], expected_version=StreamState.ANY
            )
    for account in {payment.account for payment in payments}:
        await until_readable(storage, f"account-{account}")


async def read_totals(storage: Any) -> dict[str, tuple[int, int]]:
    async with storage.transaction() as session:
        rows = await session.execute_sql(select(totals_table))
    return {row["account"]: (row["total"], row["deposits"]) for row in rows}


async def test_a_projection_writes_its_table_in_batches_across_many_events(storage: Any) -> None:
    registry = EventRegistry([Paid])
    payments = [Paid(f"acc-{i % 7}", i) for i in range(250)]
    await append_payments(storage, registry, payments)
    runner = ProjectionRunner(storage, registry, [Totals()], batch_size=40)

    await runner.catch_up("totals")

    expected: dict[str, tuple[int, int]] = {}
    for payment in payments:
        total, count = expected.get(payment.account, (0, 0))
        expected[payment.account] = (total + payment.amount, count + 1)
    assert await read_totals(storage) == expected


async def test_a_rebuild_produces_the_same_table_as_the_live_run(storage: Any) -> None:
    registry = EventRegistry([Paid])
    await append_payments(storage, registry, [Paid(f"acc-{i % 3}", i) for i in range(60)])
    runner = ProjectionRunner(storage, registry, [Totals()], batch_size=25)
    await runner.catch_up("totals")
    live = await read_totals(storage)

    await runner.rebuild("totals")

    assert await read_totals(storage) == live


async def test_readers_see_the_previous_complete_table_while_a_rebuild_runs(storage: Any) -> None:
    registry = EventRegistry([Paid])
    await append_payments(storage, registry, [Paid("a", 1), Paid("b", 2), Paid("a", 1000)])
    projection = Totals()
    runner = ProjectionRunner(storage, registry, [projection])
    await runner.catch_up("totals")
    before = await read_totals(storage)
    projection.pause, projection.paused = asyncio.Event(), asyncio.Event()

    rebuild = asyncio.create_task(runner.rebuild("totals"))
    await asyncio.wait_for(projection.paused.wait(), 60)
    during = await read_totals(storage)
    projection.pause.set()
    await asyncio.wait_for(rebuild, 60)

    assert during == before
    assert await read_totals(storage) == before


async def test_a_batch_larger_than_one_statement_can_bind_is_written_in_several(
    storage: Any,
) -> None:
    registry = EventRegistry([Paid])
    payments = [Paid(f"acc-{i}", 1) for i in range(12_000)]  # 36,000 values to insert
    await append_payments(storage, registry, payments)
    runner = ProjectionRunner(storage, registry, [Totals()], batch_size=12_000)

    await runner.rebuild("totals")

    totals = await read_totals(storage)
    assert len(totals) == 12_000
    assert totals["acc-11999"] == (1, 1)


async def test_a_rebuild_beside_includes_events_appended_while_it_ran(storage: Any) -> None:
    registry = EventRegistry([Paid])
    await append_payments(storage, registry, [Paid("a", 1), Paid("a", 1000), Paid("b", 2)])
    projection = Totals()
    runner = ProjectionRunner(storage, registry, [projection], batch_size=1)
    await runner.catch_up("totals")
    projection.pause, projection.paused = asyncio.Event(), asyncio.Event()

    rebuild = asyncio.create_task(runner.rebuild("totals"))
    await asyncio.wait_for(projection.paused.wait(), 60)
    # Live traffic while the rebuild goes on (between its batches: on SQLite a batch
    # holds the only write lock), followed by the live runner after the swap.
    projection.pause.set()
    await append_payments(storage, registry, [Paid("c", 7)])
    await asyncio.wait_for(rebuild, 60)
    await runner.catch_up("totals")

    assert await read_totals(storage) == {"a": (1001, 2), "b": (2, 1), "c": (7, 1)}


async def test_the_swapped_table_keeps_its_indexes(storage: Any) -> None:
    registry = EventRegistry([Paid])
    await append_payments(storage, registry, [Paid("a", 1)])
    indexed = Table(
        "indexed_totals",
        MetaData(),
        Column("account", Text, primary_key=True),
        Column("total", Integer, nullable=False, index=True),
        Column("deposits", Integer, nullable=False),
    )
    model = TableReadModel(indexed)
    async with storage.transaction() as session:
        await model.create(session)

    class IndexedTotals(Totals):
        name: ClassVar[str] = "indexed"
        read_models: ClassVar[tuple[TableReadModel, ...]] = (model,)

        async def apply_Paid(self, event: Paid, context: ProjectionContext) -> None:
            model.rows(context).put({"account": event.account, "total": 1, "deposits": 1})

    await ProjectionRunner(storage, registry, [IndexedTotals()]).rebuild("indexed")

    catalog = (
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'indexed_totals'"
        if storage.name.startswith("sqlite")
        else "SELECT indexname AS name FROM pg_indexes "
        "WHERE tablename = 'indexed_totals' AND schemaname = current_schema()"
    )
    async with storage.transaction() as session:
        names = {row["name"] for row in await session.execute_sql(text(catalog))}
        rows = await session.execute_sql(select(indexed))
    assert "ix_indexed_totals_total" in names
    assert [dict(row) for row in rows] == [{"account": "a", "total": 1, "deposits": 1}]
