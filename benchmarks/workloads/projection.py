"""7. Rebuilding a projection that writes a SQL read model (account balances).

eventfold: a ``Projection`` with a ``TableReadModel`` over a user's SQLAlchemy table,
rebuilt by ``ProjectionRunner.rebuild`` (one transaction: clear the table, read the log
in batches of 500, decode, apply, write each batch's rows, save the checkpoint).
raw: the same in one transaction by hand - DELETE; for each page of 500 read by position
and decoded with the same pydantic adapter, fold into a dict and upsert the touched rows
in one statement; save the checkpoint.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, Text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateTable

from benchmarks.backends import Backend
from benchmarks.harness import Context, Row
from benchmarks.model import AccountOpened, Deposited
from benchmarks.raw import RawPostgres, RawSqlite
from benchmarks.workloads.common import (
    REGISTRY,
    interleaved_streams,
    raw_decode,
    row,
    seed_eventfold,
    seed_raw,
    throughput_pair,
    timed,
)
from eventfold.application.readside.projections import (
    Projection,
    ProjectionContext,
    ProjectionRunner,
)

try:
    from eventfold.adapters.sql.read_model import TableReadModel
except ImportError:  # pragma: no cover - the read model is part of the SQL extra
    TableReadModel = None  # type: ignore[assignment,misc]

BATCH = 500
read_models = MetaData()
balances = Table(
    "bench_balances",
    read_models,
    Column("account_id", Text, primary_key=True),
    Column("balance", BigInteger, nullable=False),
    Column("deposits", Integer, nullable=False),
)


class Balances(Projection):
    """Each account's balance and number of deposits."""

    name = "balances"
    table = TableReadModel(balances)
    read_models = (table,)

    async def apply_AccountOpened(  # noqa: N802
        self, event: AccountOpened, context: ProjectionContext
    ) -> None:
        self.table.rows(context).put({"account_id": event.account_id, "balance": 0, "deposits": 0})

    async def apply_Deposited(self, event: Deposited, context: ProjectionContext) -> None:  # noqa: N802
        rows = self.table.rows(context)
        current = await rows.get(event.account_id)
        assert current is not None
        current["balance"] += event.amount
        current["deposits"] += 1
        rows.put(current)


def _fold(state: dict[str, list[int]], event: object) -> str:
    if isinstance(event, AccountOpened):
        state[event.account_id] = [0, 0]
        return event.account_id
    assert isinstance(event, Deposited)
    entry = state[event.account_id]
    entry[0] += event.amount
    entry[1] += 1
    return event.account_id


async def _raw_rebuild_postgres(store: RawPostgres) -> int:
    connection = store.connection
    state: dict[str, list[int]] = {}
    done, last = 0, 0
    async with connection.transaction():
        await connection.execute("DELETE FROM bench_balances")
        while rows := await connection.fetch(store.READ_LOG, last, BATCH):
            touched = {_fold(state, raw_decode(r)) for r in rows}
            await connection.execute(
                "INSERT INTO bench_balances (account_id, balance, deposits) "
                "SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[]) "
                "ON CONFLICT (account_id) DO UPDATE SET balance = excluded.balance, "
                "deposits = excluded.deposits",
                list(touched),
                [state[k][0] for k in touched],
                [state[k][1] for k in touched],
            )
            done += len(rows)
            last = rows[-1][0]
        await connection.execute(
            "INSERT INTO eventfold_checkpoints (name, commit_id, position, updated_at) "
            "VALUES ('balances', 0, $1, now()) ON CONFLICT (name) DO UPDATE SET "
            "position = excluded.position, updated_at = excluded.updated_at",
            last,
        )
    return done


async def _raw_rebuild_sqlite(store: RawSqlite) -> int:
    def work(db: Any) -> int:
        state: dict[str, list[int]] = {}
        done, last = 0, 0
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM bench_balances")
        while rows := db.execute(store.READ_LOG, (last, BATCH)).fetchall():
            touched = {_fold(state, raw_decode(r)) for r in rows}
            db.executemany(
                "INSERT OR REPLACE INTO bench_balances (account_id, balance, deposits) "
                "VALUES (?, ?, ?)",
                [(k, *state[k]) for k in touched],
            )
            done += len(rows)
            last = rows[-1][0]
        db.execute(
            "INSERT OR REPLACE INTO eventfold_checkpoints (name, commit_id, position, "
            "updated_at) VALUES ('balances', 0, ?, datetime('now'))",
            (last,),
        )
        db.execute("COMMIT")
        return done

    # One hop for the whole rebuild: the fastest sqlite3 can do it from asyncio.
    return await store._run(work)


async def run(context: Context, backend: Backend) -> list[Row]:
    """Workload 7."""
    total = context.n(20_000, 2000)
    streams = interleaved_streams("proj", 200, total)
    total = sum(len(events) for _, events in streams)
    dialect = postgresql.dialect() if backend.name == "postgres" else sqlite.dialect()
    create = str(CreateTable(balances).compile(dialect=dialect))

    async def eventfold(storage: Any) -> float:
        await seed_eventfold(storage, streams)
        runner = ProjectionRunner(storage, REGISTRY, [Balances()], batch_size=BATCH)

        async def body() -> None:
            assert await runner.rebuild("balances") == total

        return total / await timed(body)

    async def raw(store: Any) -> float:
        if isinstance(store, RawPostgres):
            await store.connection.execute(create)
        else:
            await store._run(lambda db: db.execute(create))
        await seed_raw(store, streams)

        async def body() -> None:
            if isinstance(store, RawPostgres):
                assert await _raw_rebuild_postgres(store) == total
            else:
                assert await _raw_rebuild_sqlite(store) == total

        return total / await timed(body)

    values = await throughput_pair(context, backend, eventfold, raw, user_tables=[balances])
    on_postgres = backend.name == "postgres"
    result = row(
        "7. projection rebuild, SQL read model",
        backend,
        f"{total} events, 200 accounts",
        "events/s",
        values,
        target="≥10,000 events/s" if on_postgres else "",
    )
    if on_postgres and result.eventfold is not None:
        result.met = result.eventfold >= 10_000
    return [result]
