"""11. Rebuilding a SQL table read model whose pages touch many distinct rows.

The log holds ``events`` events over ``accounts`` accounts, appended round-robin so each
page of 1,000 events touches up to 1,000 different rows (and, after the first pass, rows
already written). eventfold: ``ProjectionRunner.rebuild`` of the workload-7 projection,
pages of 1,000 (beside the live table, swapped in at the end). raw: by hand in one
transaction - per page read by position and decoded with the same pydantic adapter, fold
and upsert the touched rows in one statement: on PostgreSQL ``INSERT ... SELECT * FROM
unnest($1::text[], ...) ON CONFLICT DO UPDATE``, on SQLite an ``executemany`` of an upsert.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateTable

from benchmarks.backends import Backend
from benchmarks.harness import Context, Row
from benchmarks.raw import RawPostgres, RawSqlite, _text
from benchmarks.workloads.common import (
    REGISTRY,
    ef_record,
    history,
    now,
    raw_decode,
    raw_row,
    row,
    throughput_pair,
    timed,
)
from benchmarks.workloads.projection import Balances, _fold, balances
from eventfold.application.readside.projections import ProjectionRunner
from eventfold.ports.records import StreamState

PAGE = 1000
UPSERT_PG = (
    "INSERT INTO bench_balances (account_id, balance, deposits) "
    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[]) "
    "ON CONFLICT (account_id) DO UPDATE SET balance = excluded.balance, "
    "deposits = excluded.deposits"
)
UPSERT_SQLITE = (
    "INSERT INTO bench_balances (account_id, balance, deposits) VALUES (?, ?, ?) "
    "ON CONFLICT (account_id) DO UPDATE SET balance = excluded.balance, "
    "deposits = excluded.deposits"
)


def _rounds(accounts: int, events: int) -> list[list[tuple[str, int, object]]]:
    """The log in transactions of ``PAGE``: (stream, version, event), accounts round-robin."""
    per = max(1, events // accounts)
    streams = [(f"wide-{i}", history(f"wide-{i}", per)) for i in range(accounts)]
    order = [
        (stream_id, version + 1, stream[version])
        for version in range(per)
        for stream_id, stream in streams
    ]
    return [order[start : start + PAGE] for start in range(0, len(order), PAGE)]


async def _seed_eventfold(storage: Any, rounds: list[list[tuple[str, int, object]]]) -> None:
    at = now()
    for chunk in rounds:
        async with storage.transaction() as session:
            for stream_id, version, event in chunk:
                expected = version - 1 if version > 1 else StreamState.NO_STREAM
                await session.append(
                    stream_id, [ef_record(REGISTRY, event, at)], expected_version=expected
                )


async def _seed_raw(store: Any, rounds: list[list[tuple[str, int, object]]]) -> None:
    at = now()
    for chunk in rounds:
        rows = [raw_row(stream_id, version, event, at) for stream_id, version, event in chunk]
        if isinstance(store, RawPostgres):
            args = [(s, v - 1, [i], [t], [sv], [d], [a]) for s, v, i, t, sv, d, a in rows]
            async with store.connection.transaction():
                await store.connection.executemany(store.APPEND, args)
        else:
            text_rows = [(s, v, str(i), t, sv, d, _text(a)) for s, v, i, t, sv, d, a in rows]

            def work(db: Any, text_rows: list[tuple[Any, ...]] = text_rows) -> None:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(store.INSERT_EVENT, text_rows)
                db.execute("COMMIT")

            await store._run(work)


async def _raw_rebuild_postgres(store: RawPostgres) -> int:
    connection = store.connection
    state: dict[str, list[int]] = {}
    done, last = 0, 0
    async with connection.transaction():
        await connection.execute("DELETE FROM bench_balances")
        while rows := await connection.fetch(store.READ_LOG, last, PAGE):
            touched = list({_fold(state, raw_decode(r)) for r in rows})
            await connection.execute(
                UPSERT_PG,
                touched,
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
        while rows := db.execute(store.READ_LOG, (last, PAGE)).fetchall():
            touched = {_fold(state, raw_decode(r)) for r in rows}
            db.executemany(UPSERT_SQLITE, [(k, *state[k]) for k in touched])
            done += len(rows)
            last = rows[-1][0]
        db.execute(
            "INSERT OR REPLACE INTO eventfold_checkpoints (name, commit_id, position, "
            "updated_at) VALUES ('balances', 0, ?, datetime('now'))",
            (last,),
        )
        db.execute("COMMIT")
        return done

    return await store._run(work)


async def _case(context: Context, backend: Backend, accounts: int, events: int) -> Row:
    rounds = _rounds(accounts, events)
    total = sum(len(chunk) for chunk in rounds)
    dialect = postgresql.dialect() if backend.name == "postgres" else sqlite.dialect()
    create = str(CreateTable(balances).compile(dialect=dialect))

    async def eventfold(storage: Any) -> float:
        await _seed_eventfold(storage, rounds)
        runner = ProjectionRunner(storage, REGISTRY, [Balances()], batch_size=PAGE)

        async def body() -> None:
            assert await runner.rebuild("balances") == total

        return total / await timed(body)

    async def raw(store: Any) -> float:
        if isinstance(store, RawPostgres):
            await store.connection.execute(create)
        else:
            await store._run(lambda db: db.execute(create))
        await _seed_raw(store, rounds)

        async def body() -> None:
            if isinstance(store, RawPostgres):
                assert await _raw_rebuild_postgres(store) == total
            else:
                assert await _raw_rebuild_sqlite(store) == total

        return total / await timed(body)

    values = await throughput_pair(context, backend, eventfold, raw, user_tables=[balances])
    return row(
        "11. rebuild into a table, many keys per page",
        backend,
        f"{total} events, {accounts} accounts",
        "events/s",
        values,
        target_ratio=0.7,
    )


async def run(context: Context, backend: Backend) -> list[Row]:
    """Workload 11."""
    events = context.n(50_000, 5000)
    return [
        await _case(context, backend, max(1, events // 10), events),
        await _case(context, backend, events, events),
    ]
