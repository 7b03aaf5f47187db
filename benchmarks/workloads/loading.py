"""4. Loading an aggregate from 1,000 and 10,000 events, without and with snapshots.

eventfold: ``uow.event_sourced(Account).get_required(id)`` in a fresh unit of work (one
read transaction), which reads the snapshot if the type has a policy, fetches the events
after it, decodes them with the ``EventRegistry`` and applies them to the state. raw:
one SELECT of the stream's rows in version order and each payload decoded with the same
pydantic ``TypeAdapter.validate_json`` into the event dataclass (no state is folded);
with snapshots, the snapshot row and the rows after it in one transaction, the state
decoded with a pydantic adapter of the state class.

With snapshots (every 100 events) the target compares eventfold with itself: loading
the 10,000-event aggregate may take at most twice as long as the 100-event one.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import TypeAdapter

from benchmarks.backends import Backend
from benchmarks.harness import Context, Row, alternate, median
from benchmarks.model import Account, AccountState
from benchmarks.workloads.common import REGISTRY, history, raw_decode, seed_raw
from eventfold import DataSource, PersistenceModel

SNAPSHOT_EVERY = 100
STATE: TypeAdapter[AccountState] = TypeAdapter(AccountState)
SEED_BATCH = 1000


def _sources(storage: Any) -> tuple[DataSource, DataSource]:
    plain, snapshotted = PersistenceModel(), PersistenceModel()
    plain.event_sourced(Account, name="plain")
    snapshotted.event_sourced(Account, name="snap", snapshot_every=SNAPSHOT_EVERY)
    return (
        DataSource("plain", storage, plain, REGISTRY),
        DataSource("snap", storage, snapshotted, REGISTRY),
    )


async def _seed(source: DataSource, account_id: str, count: int) -> None:
    """Build the aggregate through the repository, committing every 1,000 events."""
    done = 0
    while done < count:
        async with source.unit_of_work() as uow:
            accounts = uow.event_sourced(Account)
            if done == 0:
                account = Account.open(account_id, "Ada")
                accounts.add(account)
                done = 1
            else:
                account = await accounts.get_required(account_id)
            for i in range(done, min(count, done + SEED_BATCH - (done == 1))):
                account.deposit(100 + i % 900, f"ref-{i:08d}")
                done += 1
            await uow.commit()


async def _time_loads(load: Any, times: int) -> float:
    await load()  # warm: the first read of a fresh table pays for hint bits and plans
    started = time.perf_counter()
    for _ in range(times):
        await load()
    return (time.perf_counter() - started) / times * 1000


async def run(context: Context, backend: Backend) -> list[Row]:
    """Workload 4."""
    sizes = [100, context.n(1000, 100), context.n(10_000, 1000)]
    loads = {sizes[0]: 40, sizes[1]: 15, sizes[2]: 4}
    results: dict[tuple[str, int], list[float]] = {}

    async def eventfold() -> float:
        async with backend.eventfold() as storage:
            plain, snap = _sources(storage)
            for size in sizes:
                await _seed(plain, f"a{size}", size)
                await _seed(snap, f"a{size}", size)
            for label, source in (("plain", plain), ("snap", snap)):
                for size in sizes:

                    async def load(source: DataSource = source, size: int = size) -> None:
                        async with source.unit_of_work() as uow:
                            account = await uow.event_sourced(Account).get_required(f"a{size}")
                        assert account.version == size

                    ms = await _time_loads(load, loads[size])
                    results.setdefault((label, size), []).append(ms)
        return 0.0

    async def raw() -> float:
        async with backend.raw() as store:
            for size in sizes:
                events = history(f"a{size}", size)
                await seed_raw(store, [(f"plain-a{size}", events), (f"snap-a{size}", events)])
                state = AccountState()
                for event in events:
                    getattr(state, f"apply_{type(event).__name__}")(event)
                data = STATE.dump_json(state).decode()
                await store.save_snapshot(f"snap-a{size}", size, "AccountState", data)
            for size in sizes:

                async def load(size: int = size) -> None:
                    rows = await store.read_stream(f"plain-a{size}")
                    events = [raw_decode(r) for r in rows]
                    assert len(events) == size

                async def load_snapshot(size: int = size) -> None:
                    snapshot, rows = await store.read_snapshot(f"snap-a{size}")
                    state = STATE.validate_json(snapshot[1])
                    events = [raw_decode(r) for r in rows]
                    assert state.deposits + len(events) == size - 1

                ms = await _time_loads(load, loads[size])
                results.setdefault(("raw", size), []).append(ms)
                ms = await _time_loads(load_snapshot, loads[size])
                results.setdefault(("raw-snap", size), []).append(ms)
        return 0.0

    await alternate(eventfold, raw, context.repeat)
    rows: list[Row] = []
    for size in sizes[1:]:
        rows.append(_row(backend, f"{size} events, no snapshot", results, "plain", "raw", size))
    base = median(results[("snap", sizes[0])])
    for size in sizes:
        metric = f"{size} events, snapshot/{SNAPSHOT_EVERY}"
        line = _row(backend, metric, results, "snap", "raw-snap", size)
        line.target, line.target_ratio = "", None
        if size == sizes[-1] and base and line.eventfold is not None:
            growth = line.eventfold / base
            line.target = f"≤2x ef load of {sizes[0]} events"
            line.met = growth <= 2.0
            line.note = (
                f"{size}-event load with snapshots is {growth:.2f}x the {sizes[0]}-event load "
                f"({line.eventfold:.2f} ms vs {base:.2f} ms); raw: snapshot row and events "
                f"after it, state decoded with the same pydantic adapter"
            )
        rows.append(line)
    return rows


def _row(
    backend: Backend,
    metric: str,
    results: dict[tuple[str, int], list[float]],
    side: str,
    raw_side: str,
    size: int,
) -> Row:
    ef, raw = results[(side, size)], results[(raw_side, size)]
    return Row(
        workload="4. load aggregate",
        backend=backend.name,
        metric=metric,
        unit="ms/load",
        higher_is_better=False,
        eventfold=median(ef),
        raw=median(raw),
        target="≤2x raw fetch+decode",
        target_ratio=2.0,
        samples={"eventfold": ef, "raw": raw},
    )
