"""A live projection runner waits out a database that went away."""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from typing import Any

from eventfold import ProjectionRunner, StoreUnavailableError
from eventfold.adapters.memory import create_memory_storage
from eventfold.testing.contracts.projections import (
    Balances,
    Deposited,
    _append,
    _registry,
    _wait_for_balance,
    _wait_until,
)


class FlakyStorage:
    """Delegates to a real storage, but the first transactions fail as if it were down."""

    def __init__(self, storage: Any, failures: int) -> None:
        self._storage = storage
        self.failures = failures
        self.name = "flaky"

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailableError("flaky", "connection refused")
        return self._storage.transaction()


async def test_the_runner_resumes_once_the_database_answers_again() -> None:
    storage = create_memory_storage()
    registry = _registry()
    await _append(storage, registry, Deposited("a", 3))
    flaky = FlakyStorage(storage, failures=3)
    runner = ProjectionRunner(flaky, registry, [Balances()], max_idle_wait=0.02)  # type: ignore[arg-type]

    task = asyncio.create_task(runner.run())
    await _wait_until(lambda: flaky.failures == 0)
    await _wait_for_balance(storage, "a", 3)
    runner.stop()
    await asyncio.wait_for(task, 5)

    assert runner.status("balances").state == "stopped"
    assert (await runner.lag("balances")).events_behind == 0
