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
    from benchmarks.workloads import mediator  # noqa: PLC0415 - keeps --help fast

    return [
        Workload("mediator", "8. mediator overhead, 4 behaviours", False, mediator.run),
    ]
