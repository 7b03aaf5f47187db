"""2. One event per transaction onto one long stream; 3. ten events per transaction.

The aggregate path, with the aggregate held between commands. eventfold: the account
records its deposits, then a unit of work ``add``s it and commits: one transaction with
the events appended at the version the aggregate was stored at and one outbox row per
event. eventsourcing: the account records its deposits, then ``app.save(account)``. raw:
BEGIN; check the stream's version; INSERT the event rows; COMMIT - events encoded with
the same pydantic adapter, no outbox row. All three check the expected version in the
transaction that writes.
"""

from __future__ import annotations

from typing import Any

from benchmarks.backends import Backend
from benchmarks.harness import Context, Row
from benchmarks.model import Account, deposit
from benchmarks.peer import Bank, EsAccount
from benchmarks.workloads.common import (
    REGISTRY,
    Op,
    history,
    interleaved_pair,
    now,
    raw_row,
    row,
    seed_raw,
    targets,
)
from eventfold import DataSource, PersistenceModel

STREAM = "account-long"
SEED_BATCH = 1000


def data_source(storage: Any) -> DataSource:
    """The application's data source: accounts are event-sourced."""
    model = PersistenceModel()
    model.event_sourced(Account)
    return DataSource("main", storage, model, REGISTRY)


async def save(source: DataSource, account: Account) -> None:
    """One command's unit of work: the held account's new events, committed."""
    async with source.unit_of_work() as uow:
        uow.event_sourced(Account).add(account)
        await uow.commit()


async def seeded_account(source: DataSource, account_id: str, count: int) -> Account:
    """An account with ``count`` events, stored ``SEED_BATCH`` events per transaction."""
    account = Account.open(account_id, "Ada")
    for i in range(1, count):
        account.deposit(100 + i % 900, f"ref-{i:08d}")
        if i % SEED_BATCH == 0:
            await save(source, account)
    await save(source, account)
    return account


def seeded_peer(app: Bank, account_id: str, count: int) -> EsAccount:
    """The same account in eventsourcing, saved ``SEED_BATCH`` events at a time."""
    account = EsAccount(account_id, "Ada", "EUR")
    for i in range(1, count):
        account.deposit(100 + i % 900, f"ref-{i:08d}")
        if i % SEED_BATCH == 0:
            app.save(account)
    app.save(account)
    return account


async def _appends(context: Context, backend: Backend, *, size: int) -> Row:
    seeded = context.n(5000, 200) if size == 1 else 1
    count = context.n(1500, 100) if size == 1 else context.n(300, 30)

    async def eventfold(storage: Any) -> Op:
        source = data_source(storage)
        account = await seeded_account(source, STREAM, seeded)

        async def op(i: int) -> None:
            for j in range(size):
                account.deposit(100 + j, f"ref-{i:08d}-{j}")
            await save(source, account)

        return op

    async def raw(store: Any) -> Op:
        await seed_raw(store, [(STREAM, history(STREAM, seeded))])
        version = seeded

        async def op(i: int) -> None:
            nonlocal version
            at = now()
            events = [
                raw_row(STREAM, version + j + 1, deposit(STREAM, i * size + j), at)
                for j in range(size)
            ]
            version = await store.append(STREAM, events, version)

        return op

    async def peer(app: Bank) -> Op:
        account = seeded_peer(app, STREAM, seeded)

        async def op(i: int) -> None:
            for j in range(size):
                account.deposit(100 + j, f"ref-{i:08d}-{j}")
            app.save(account)

        return op

    ef, raw_values, es = await interleaved_pair(
        context, backend, eventfold, raw, count, es_setup=peer, block=50 if size == 1 else 10
    )
    if size == 1:
        return row(
            "2. append 1 event/tx, long stream",
            backend,
            f"{count} appends after {seeded}",
            "appends/s",
            (ef, raw_values, es),
            **targets(backend, raw_sqlite=None, raw_postgres=0.75, peer_sqlite=1.2),
        )
    values = ([v * size for v in ef], [v * size for v in raw_values], [v * size for v in es])
    return row(
        "3. append 10 events/tx",
        backend,
        f"{count} transactions",
        "events/s",
        values,
        **targets(backend, raw_sqlite=None, raw_postgres=None, peer_sqlite=1.2),
    )


async def run_one(context: Context, backend: Backend) -> list[Row]:
    """Workload 2."""
    return [await _appends(context, backend, size=1)]


async def run_ten(context: Context, backend: Backend) -> list[Row]:
    """Workload 3."""
    return [await _appends(context, backend, size=10)]
