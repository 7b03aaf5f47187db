"""The command line: options, the run loop, the table and the JSON file."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
import traceback
from pathlib import Path

from benchmarks.backends import DEFAULT_DSN, Backend
from benchmarks.harness import Context, Row, render_table, write_json
from benchmarks.machine import describe, machine_info, postgres_info
from benchmarks.workloads import all_workloads

RESULTS = Path(__file__).parent / "results"

METHOD = (
    "Each row: eventfold through its public API next to the raw driver (asyncpg; sqlite3 on "
    "one thread, one hop per transaction) doing the same statements and transactions on "
    "tables compiled from eventfold's MetaData, with the same durability settings, and next "
    "to eventsourcing (its Application and Aggregate with library defaults, its SQLite and "
    "PostgreSQL persistence modules, on a database file or schema of its own) doing the same "
    "work. Median of --repeat repetitions, fresh schema/database file per repetition. "
    "Sequential workloads (1-3) rotate eventfold, raw and eventsourcing every 50 operations "
    "within a repetition. Payloads are encoded and decoded on the raw side with the same "
    "pydantic TypeAdapter. 'x raw' and 'x es' are eventfold's speed relative to each."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="eventfold against the raw drivers and eventsourcing.",
    )
    parser.add_argument(
        "--backend", choices=["sqlite", "postgres", "both"], default="both", help="SQL backend"
    )
    parser.add_argument(
        "--only", default="", help="comma-separated workload keys (see --list); default all"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply operation counts")
    parser.add_argument("--quick", action="store_true", help="scale 0.2, for a smoke run")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per side (median)")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help="PostgreSQL DSN")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    return parser


async def _run(args: argparse.Namespace) -> int:
    workloads = all_workloads()
    if args.list:
        for workload in workloads:
            print(f"{workload.key:12} {workload.title}")
        return 0
    wanted = {key.strip() for key in args.only.split(",") if key.strip()}
    unknown = wanted - {w.key for w in workloads}
    if unknown:
        print(f"unknown workload(s): {', '.join(sorted(unknown))}; see --list")
        return 2
    selected = [w for w in workloads if not wanted or w.key in wanted]
    names = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    context = Context(scale=0.2 if args.quick else args.scale, repeat=max(1, args.repeat))

    machine = machine_info()
    backends = [Backend(name, dsn=args.dsn) for name in names]
    for backend in backends:
        if backend.name == "postgres":
            machine["postgres"] = await postgres_info(backend.dsn)
        else:
            try:
                machine["sqlite_pragmas"] = await backend.discover_sqlite_pragmas()
            except Exception as exc:  # noqa: BLE001 - the SQLite rows will then report it
                machine["sqlite_pragmas"] = {"unavailable": f"{type(exc).__name__}: {exc}"}
    print(describe(machine), flush=True)

    rows: list[Row] = []
    started = time.perf_counter()
    for workload in selected:
        targets = backends if workload.per_backend else [None]
        for backend in targets:
            label = f"{workload.key}/{backend.name if backend else 'memory'}"
            print(f"running {label} ...", flush=True)
            begun = time.perf_counter()
            try:
                produced = await workload.run(context, backend)
            except Exception:  # noqa: BLE001 - one failing workload must not lose the rest
                traceback.print_exc()
                produced = [
                    Row(
                        workload.title,
                        backend.name if backend else "memory",
                        "error",
                        "",
                        True,
                        None,
                        None,
                        note="failed: see the log above",
                    )
                ]
            for row in produced:
                row.judge()
            rows += produced
            print(f"  done in {time.perf_counter() - begun:.1f} s", flush=True)
    elapsed = time.perf_counter() - started

    table = render_table(rows)
    print()
    print(table)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or RESULTS / f"{stamp}.json"
    options = {
        "method": METHOD,
        "scale": context.scale,
        "repeat": context.repeat,
        "backends": names,
        "workloads": [w.key for w in selected],
        "elapsed_seconds": round(elapsed, 1),
    }
    write_json(out, machine, options, rows)
    print(f"\n{len(rows)} rows in {elapsed:.0f} s; JSON: {out}")
    return 0


def main() -> int:
    """Parse the options and run."""
    return asyncio.run(_run(_parser().parse_args()))
