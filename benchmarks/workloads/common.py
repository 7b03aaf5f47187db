"""What several workloads share: building records on both sides, seeding, timing a trial."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table

from benchmarks.backends import Backend
from benchmarks.harness import Context, Row, alternate, median
from benchmarks.model import ADAPTERS, AccountOpened, deposit, make_registry
from benchmarks.peer import Bank, eventsourcing_app
from benchmarks.raw import DATA, TYPE_NAME, EventRow
from eventfold import EventRegistry, StreamState
from eventfold.ports.records import EventRecord

REGISTRY = make_registry()


def now() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


def ef_record(registry: EventRegistry, event: object, at: datetime) -> EventRecord:
    """What an eventfold user hands to ``session.append``: the event encoded by the registry."""
    encoded = registry.encode(event)
    return EventRecord(uuid.uuid4(), encoded.type_name, encoded.schema_version, encoded.data, at)


def raw_row(stream_id: str, version: int, event: object, at: datetime) -> EventRow:
    """The same event as a raw row, encoded with the same pydantic adapter."""
    name = type(event).__name__
    data = ADAPTERS[name].dump_json(event).decode()
    return (stream_id, version, uuid.uuid4(), name, 1, data, at)


def raw_decode(row: Any) -> object:
    """Decode a fetched row's payload with the same pydantic adapter eventfold uses."""
    return ADAPTERS[row[TYPE_NAME]].validate_json(row[DATA])


def history(account_id: str, count: int) -> list[object]:
    """An account's events: opened, then ``count - 1`` deposits."""
    events: list[object] = [AccountOpened(account_id, "Ada", "EUR")]
    events += [deposit(account_id, i) for i in range(1, count)]
    return events


async def seed_eventfold(
    storage: Any, streams: Sequence[tuple[str, list[object]]], batch: int = 1000
) -> None:
    """Append each stream's events in transactions of ``batch`` (not timed)."""
    at = now()
    for stream_id, events in streams:
        version = 0
        for start in range(0, len(events), batch):
            chunk = [ef_record(REGISTRY, e, at) for e in events[start : start + batch]]
            async with storage.transaction() as session:
                expected = version if version else StreamState.NO_STREAM
                version = await session.append(stream_id, chunk, expected_version=expected)


async def seed_raw(
    store: Any, streams: Sequence[tuple[str, list[object]]], batch: int = 1000
) -> None:
    """The same streams through the raw driver (not timed)."""
    at = now()
    for stream_id, events in streams:
        for start in range(0, len(events), batch):
            chunk = [
                raw_row(stream_id, start + i + 1, e, at)
                for i, e in enumerate(events[start : start + batch])
            ]
            await store.append(stream_id, chunk, start)


def interleaved_streams(prefix: str, streams: int, total: int) -> list[tuple[str, list[object]]]:
    """``total`` events spread over ``streams`` accounts."""
    per = max(1, total // streams)
    return [(f"{prefix}-{i}", history(f"{prefix}-{i}", per)) for i in range(streams)]


async def timed(body: Callable[[], Awaitable[Any]]) -> float:
    """Seconds ``body`` takes."""
    started = time.perf_counter()
    await body()
    return time.perf_counter() - started


Values = tuple[list[float], list[float], list[float]]
"""Samples of eventfold, raw and eventsourcing (empty when it has no figure)."""


async def throughput_pair(
    context: Context,
    backend: Backend,
    ef_trial: Callable[[Any], Awaitable[float]],
    raw_trial: Callable[[Any], Awaitable[float]],
    es_trial: Callable[[Bank], Awaitable[float]] | None = None,
    *,
    user_tables: Sequence[Table] = (),
) -> Values:
    """Run the trials ``repeat`` times each, each on fresh tables, in turns."""

    async def eventfold() -> float:
        async with backend.eventfold(user_tables) as storage:
            return await ef_trial(storage)

    async def raw() -> float:
        async with backend.raw() as store:
            return await raw_trial(store)

    es_values: list[float] = []

    async def raw_then_peer() -> float:
        value = await raw()
        if es_trial is not None:
            async with eventsourcing_app(backend) as app:
                es_values.append(await es_trial(app))
        return value

    ef_values, raw_values = await alternate(eventfold, raw_then_peer, context.repeat)
    return ef_values, raw_values, es_values


Op = Callable[[int], Awaitable[None]]
"""One operation of a sequential workload, given its index."""


async def interleaved_pair(
    context: Context,
    backend: Backend,
    ef_setup: Callable[[Any], Awaitable[Op]],
    raw_setup: Callable[[Any], Awaitable[Op]],
    count: int,
    *,
    es_setup: Callable[[Bank], Awaitable[Op]] | None = None,
    block: int = 50,
) -> Values:
    """Operations per second of every side, run in alternating blocks on fresh tables.

    All stores are open at once and take turns every ``block`` operations, so a burst of
    load from elsewhere on the machine (or a checkpoint of the server) lands on all.
    """
    ef_values: list[float] = []
    raw_values: list[float] = []
    es_values: list[float] = []
    for rep in range(context.repeat):
        async with (
            backend.eventfold() as storage,
            backend.raw() as store,
            eventsourcing_app(backend) as app,
        ):
            ops = {"ef": await ef_setup(storage), "raw": await raw_setup(store)}
            if es_setup is not None:
                ops["es"] = await es_setup(app)
            spent = dict.fromkeys(ops, 0.0)
            sides = list(ops)
            for number, start in enumerate(range(0, count, block)):
                shift = (number + rep) % len(sides)
                for side in sides[shift:] + sides[:shift]:
                    op = ops[side]
                    started = time.perf_counter()
                    for index in range(start, min(count, start + block)):
                        await op(index)
                    spent[side] += time.perf_counter() - started
            ef_values.append(count / spent["ef"])
            raw_values.append(count / spent["raw"])
            if "es" in spent:
                es_values.append(count / spent["es"])
    return ef_values, raw_values, es_values


def row(
    workload: str,
    backend: Backend,
    metric: str,
    unit: str,
    values: Values,
    *,
    higher_is_better: bool = True,
    target: str = "",
    target_ratio: float | None = None,
    peer_target: float | None = None,
    note: str = "",
) -> Row:
    """A table row from every side's samples (medians)."""
    ef_values, raw_values, es_values = values
    return Row(
        workload=workload,
        backend=backend.name,
        metric=metric,
        unit=unit,
        higher_is_better=higher_is_better,
        eventfold=median(ef_values),
        raw=median(raw_values),
        peer=median(es_values),
        target=target,
        target_ratio=target_ratio,
        peer_target=peer_target,
        note=note,
        samples={"eventfold": ef_values, "raw": raw_values, "eventsourcing": es_values},
    )


def targets(
    backend: Backend,
    *,
    raw_sqlite: float | None,
    raw_postgres: float | None,
    peer_sqlite: float | None,
) -> dict[str, Any]:
    """The row's floors on this backend, and their text: vs raw, vs eventsourcing."""
    on_postgres = backend.name == "postgres"
    target_ratio = raw_postgres if on_postgres else raw_sqlite
    peer_target = PEER_POSTGRES if on_postgres else peer_sqlite
    words = []
    if target_ratio is not None:
        words.append(f"≥{target_ratio:g}x raw")
    if peer_target is not None:
        words.append(f"≥{peer_target:g}x es")
    return {"target": ", ".join(words), "target_ratio": target_ratio, "peer_target": peer_target}


PEER_POSTGRES = 1.5
"""On PostgreSQL eventfold stays at least this much faster than eventsourcing everywhere."""
