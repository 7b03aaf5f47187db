"""Profile eventfold's side of a workload: ``python -m benchmarks.profiling WORKLOAD``.

Needs pyinstrument (``pip install pyinstrument``; not a dependency of eventfold). Prints
the call tree of the timed part (wall time, awaits included). Profiling inflates the cost
of small Python calls: use it to see where time goes, the benchmark for how much.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.backends import DEFAULT_DSN, Backend
from benchmarks.model import Account, deposit
from benchmarks.workloads.common import (
    REGISTRY,
    ef_record,
    history,
    interleaved_streams,
    now,
    seed_eventfold,
)
from eventfold import LOG_START

Body = Callable[[], Awaitable[int]]


async def _commands(storage: Any) -> Body:
    from benchmarks.workloads.commands import OpenAccount, build_mediator  # noqa: PLC0415

    mediator = build_mediator(storage)

    async def body() -> int:
        for i in range(1000):
            await mediator.send(OpenAccount(f"p-{i}", "Ada"))
        return 1000

    return body


async def _append(storage: Any) -> Body:
    await seed_eventfold(storage, [("long", history("long", 5000))])

    async def body() -> int:
        version = 5000
        for i in range(1000):
            record = ef_record(REGISTRY, deposit("long", i), now())
            async with storage.transaction() as session:
                version = await session.append("long", [record], expected_version=version)
        return 1000

    return body


async def _log(storage: Any) -> Body:
    await seed_eventfold(storage, interleaved_streams("log", 100, 20_000))

    async def body() -> int:
        position, seen = LOG_START, 0
        while True:
            async with storage.transaction() as session:
                records = await session.read_log(after=position, limit=1000)
            if not records:
                return seen
            seen += len([REGISTRY.decode(r.type_name, r.schema_version, r.data) for r in records])
            position = records[-1].log_position

    return body


async def _load(storage: Any) -> Body:
    from benchmarks.workloads.loading import _seed, _sources  # noqa: PLC0415

    plain, _ = _sources(storage)
    await _seed(plain, "p", 10_000)

    async def body() -> int:
        for _ in range(5):
            async with plain.unit_of_work() as uow:
                await uow.event_sourced(Account).get_required("p")
        return 5

    return body


async def _projection(storage: Any) -> Body:
    from benchmarks.workloads.projection import BATCH, Balances  # noqa: PLC0415
    from eventfold.application.readside.projections import ProjectionRunner  # noqa: PLC0415

    await seed_eventfold(storage, interleaved_streams("proj", 200, 20_000))
    runner = ProjectionRunner(storage, REGISTRY, [Balances()], batch_size=BATCH)

    async def body() -> int:
        return await runner.rebuild("balances")

    return body


TARGETS: dict[str, Callable[[Any], Awaitable[Body]]] = {
    "commands": _commands,
    "append": _append,
    "log": _log,
    "load": _load,
    "projection": _projection,
}


async def _main(args: argparse.Namespace) -> None:
    from pyinstrument import Profiler  # noqa: PLC0415 - an optional tool

    from benchmarks.workloads.projection import balances  # noqa: PLC0415

    backend = Backend(args.backend, dsn=args.dsn)
    async with backend.eventfold([balances]) as storage:
        body = await TARGETS[args.workload](storage)
        await body()  # warm: plans, caches, hint bits
        profiler = Profiler(interval=0.0005, async_mode="enabled")
        profiler.start()
        started = time.perf_counter()
        count = await body()
        elapsed = time.perf_counter() - started
        profiler.stop()
    print(f"{args.workload} on {args.backend}: {count} in {elapsed:.3f} s (profiled)")
    print(profiler.output_text(unicode=True, show_all=False))


def main() -> None:
    """Parse the options and profile."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling")
    parser.add_argument("workload", choices=sorted(TARGETS))
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
