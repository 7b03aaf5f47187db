"""A process manager fed from a list of events, in a process of its own, for crash tests.

``python -m tests.support.process_worker <database url> <pause seconds>``: applies each of
:data:`EVENTS` twice (a redelivery), printing ``handled <n>`` after each, pausing between
events so that a test can kill it mid-run; prints ``done`` at the end.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from eventfold import DataSource, EventRegistry, Mediator, PersistenceModel, event_type
from eventfold.adapters.url import storage_from_url
from eventfold.application.cqrs.behaviors import default_behaviors
from eventfold.application.cqrs.mediator import RequestContext
from eventfold.application.cqrs.results import OperationResult
from eventfold.application.messaging.processes import (
    ProcessContext,
    ProcessManager,
    ProcessRunner,
    Reaction,
)
from eventfold.application.persistence.unit_of_work import TransactionBehavior, UnitOfWork
from eventfold.ports import Storage

_NAMESPACE = uuid.UUID("0b7c9d4e-2f61-4a8e-9c3d-5e6f7a8b9c0d")


@event_type("WorkerCounted")
@dataclass(frozen=True)
class Counted:
    key: str
    n: int


@dataclass(frozen=True)
class Record:
    key: str
    n: int


@dataclass
class Tally:
    total: int = 0
    seen: list[int] = field(default_factory=list)


EVENTS = [(uuid.uuid5(_NAMESPACE, str(n)), Counted(f"k{n % 3}", n)) for n in range(30)]


async def _count(state: Tally, event: Counted, context: ProcessContext) -> Tally:
    context.send(Record(event.key, event.n))
    return Tally(state.total + event.n, [*state.seen, event.n])


class _Records:
    """Writes ``records/<key>-<n>`` once: a second write of it would be a double effect."""

    def __init__(self, context: RequestContext) -> None:
        self._context = context

    async def handle(self, command: Record, /) -> OperationResult[None]:
        session = await UnitOfWork.of(self._context).session()
        key = f"{command.key}-{command.n}"
        await session.save_document("records", key, json.dumps({}), expected_version=0)
        return OperationResult.ok()


PROCESS = ProcessManager(
    "tally", Tally, Tally, [Reaction(Counted, lambda e: e.key, _count, starts=True)]
)


def runner(storage: Storage) -> ProcessRunner:
    """The tally process's runner over ``storage``."""
    source = DataSource("app", storage, PersistenceModel(), EventRegistry([Counted]))
    mediator = Mediator(default_behaviors())
    mediator.add_behavior(TransactionBehavior(source.unit_of_work))
    mediator.register(Record, _Records)
    return ProcessRunner(source, mediator, [PROCESS])


async def main(url: str, pause: float) -> None:
    storage = storage_from_url(url)
    tally = runner(storage)
    for number, (event_id, event) in enumerate(EVENTS, start=1):
        for _ in range(2):  # every event is delivered twice
            await tally.handle(event, event_id=event_id)
        print(f"handled {number}", flush=True)
        if pause:
            await asyncio.sleep(pause)
    print("done", flush=True)
    await storage.close()


def states(instances: Any) -> dict[str, Any]:
    """Comparable instance states."""
    return {key: None if i is None else (i.state, i.handled) for key, i in instances.items()}


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
