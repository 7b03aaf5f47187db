"""The workloads, in the order the table shows them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import Context, Row


@dataclass(frozen=True)
class Workload:
    """One workload: a key for ``--only``, a title, and whether it runs per SQL backend."""

    key: str
    title: str
    per_backend: bool
    run: Callable[[Context, Any], Awaitable[list[Row]]]


def all_workloads() -> list[Workload]:
    """Every workload (imported lazily so ``--help`` stays fast)."""
    from benchmarks.workloads import (  # noqa: PLC0415 - keeps --help fast
        appends,
        commands,
        concurrent,
        loading,
        log,
        mediator,
        projection,
        rebuild,
        relay,
        telemetry,
    )

    return [
        Workload("commands", "1. create aggregate per command", True, commands.run),
        Workload("append1", "2. append 1 event/tx, long stream", True, appends.run_one),
        Workload("append10", "3. append 10 events/tx", True, appends.run_ten),
        Workload("load", "4. load aggregate", True, loading.run),
        Workload("log", "5. read global log, decoded", True, log.run),
        Workload("concurrent", "6. 8 concurrent writers + reader", True, concurrent.run),
        Workload("projection", "7. projection rebuild", True, projection.run),
        Workload("mediator", "8. mediator overhead, 4 behaviours", False, mediator.run),
        Workload("relay", "9. outbox relay → RabbitMQ with confirms", True, relay.run),
        Workload("telemetry", "10. telemetry hooks, off and on", False, telemetry.run),
        Workload("rebuild", "11. rebuild into a table, many keys per page", True, rebuild.run),
    ]
