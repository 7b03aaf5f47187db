"""4. Loading an aggregate from 1,000 and 10,000 events, without and with snapshots.

eventfold: ``uow.event_sourced(Account).get_required(id)`` in a fresh unit of work (one
read transaction), which reads the snapshot if the type has a policy, fetches the events
after it, decodes them with the ``EventRegistry`` and applies them to the state. raw:
one SELECT of the stream's rows in version order and each payload decoded with the same
pydantic ``TypeAdapter.validate_json`` into the event dataclass (no state is folded);
with snapshots, the snapshot row and the rows after it in one transaction, the state
decoded with a pydantic adapter of the state class. eventsourcing: ``app.repository.get``
of the same account (no snapshots: the library's default), which folds its state.

With snapshots (every 100 events) the target compares eventfold with itself: loading
the 10,000-event aggregate may take at most twice as long as the 100-event one.
"""

from __future__ import annotations

import gc
import statistics
import time
from typing import Any

from pydantic import TypeAdapter

from benchmarks.backends import Backend
from benchmarks.harness import Context, Row, median
from benchmarks.model import Account, AccountState
from benchmarks.peer import Bank, eventsourcing_app
from benchmarks.workloads.appends import seeded_peer
from benchmarks.workloads.common import PEER_POSTGRES, REGISTRY, history, raw_decode, seed_raw
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


async def _time_alternating(loads: dict[str, Any], times: int) -> dict[str, float]:
    """Median milliseconds per load of each loader, called in turn so load bursts hit all.

    The collector is paused while they run: one loader's garbage must not be collected on
    another's clock (each load allocates a bounded amount).
    """
    for load in loads.values():
        await load()  # warm: the first read of a fresh table pays for hint bits and plans
    samples: dict[str, list[float]] = {name: [] for name in loads}
    names = list(loads)
    gc.collect()
    gc.disable()
    try:
        for turn in range(times):
            for name in names if turn % 2 == 0 else reversed(names):
                started = time.perf_counter()
                await loads[name]()
                samples[name].append((time.perf_counter() - started) * 1000)
    finally:
        gc.enable()
    return {name: statistics.median(values) for name, values in samples.items()}


async def _seed_raw_side(store: Any, sizes: list[int]) -> None:
    for size in sizes:
        events = history(f"a{size}", size)
        await seed_raw(store, [(f"plain-a{size}", events), (f"snap-a{size}", events)])
        state = AccountState()
        for event in events:
            getattr(state, f"apply_{type(event).__name__}")(event)
        data = STATE.dump_json(state).decode()
        await store.save_snapshot(f"snap-a{size}", size, "AccountState", data)


def _loaders(
    plain: DataSource, snap: DataSource, store: Any, app: Bank, peer_ids: dict[int, Any], size: int
) -> dict[str, Any]:
    async def ef_load(source: DataSource) -> None:
        async with source.unit_of_work() as uow:
            account = await uow.event_sourced(Account).get_required(f"a{size}")
        assert account.version == size

    async def plain_load() -> None:
        await ef_load(plain)

    async def snap_load() -> None:
        await ef_load(snap)

    async def raw_load() -> None:
        rows = await store.read_stream(f"plain-a{size}")
        events = [raw_decode(r) for r in rows]
        assert len(events) == size

    async def raw_snap_load() -> None:
        snapshot, rows = await store.read_snapshot(f"snap-a{size}")
        state = STATE.validate_json(snapshot[1])
        events = [raw_decode(r) for r in rows]
        assert state.deposits + len(events) == size - 1

    async def es_load() -> None:
        account = app.repository.get(peer_ids[size])
        assert account.version == size

    return {
        "plain": plain_load,
        "snap": snap_load,
        "raw": raw_load,
        "raw-snap": raw_snap_load,
        "es": es_load,
    }


async def run(context: Context, backend: Backend) -> list[Row]:
    """Workload 4."""
    sizes = [100, context.n(1000, 100), context.n(10_000, 1000)]
    loads = {sizes[0]: 25, sizes[1]: 11, sizes[2]: 5}
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(context.repeat):
        # Both sides on fresh tables, loads interleaved call by call.
        async with (
            backend.eventfold() as storage,
            backend.raw() as store,
            eventsourcing_app(backend) as app,
        ):
            plain, snap = _sources(storage)
            for size in sizes:
                await _seed(plain, f"a{size}", size)
                await _seed(snap, f"a{size}", size)
            await _seed_raw_side(store, sizes)
            peer_ids = {size: seeded_peer(app, f"a{size}", size).id for size in sizes}
            # Full loads alternate with full loads, snapshot loads with snapshot loads: a
            # 10,000-row scan right before a snapshot load would evict the pages it needs.
            for pair in (("plain", "raw", "es"), ("snap", "raw-snap")):
                for size in sizes:
                    loaders = _loaders(plain, snap, store, app, peer_ids, size)
                    measured = await _time_alternating(
                        {name: loaders[name] for name in pair}, loads[size]
                    )
                    for name, ms in measured.items():
                        results.setdefault((name, size), []).append(ms)
    rows: list[Row] = []
    for size in sizes[1:]:
        line = _row(backend, f"{size} events, no snapshot", results, "plain", "raw", size)
        line.peer = median(results[("es", size)])
        line.samples["eventsourcing"] = results[("es", size)]
        line.peer_target = PEER_POSTGRES if backend.name == "postgres" else None
        if size == sizes[-1]:
            line.target, line.target_ratio = "≥0.8x raw fetch+decode", 0.8
        if line.peer_target:
            line.target = ", ".join(filter(None, [line.target, f"≥{line.peer_target:g}x es"]))
        rows.append(line)
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
        samples={"eventfold": ef, "raw": raw},
    )
