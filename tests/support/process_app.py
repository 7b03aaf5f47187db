"""A process whose packing fails until a test says otherwise, for ``eventfold processes``."""

from __future__ import annotations

from dataclasses import dataclass, field

from eventfold.adapters.url import storage_from_url
from eventfold.application.cqrs.behaviors import default_behaviors
from eventfold.application.cqrs.mediator import Mediator
from eventfold.application.messaging.outbox import RetryPolicy
from eventfold.application.messaging.processes import (
    ProcessContext,
    ProcessManager,
    ProcessRunner,
    Reaction,
)
from eventfold.application.persistence.model import PersistenceModel
from eventfold.application.persistence.unit_of_work import DataSource
from eventfold.domain.events import event_type
from eventfold.serialization import EventRegistry

PACKING_FAILS = {"now": True}
"""While True, packing fails: the instance ends waiting for a person."""


@event_type("CliOrderPacked")
@dataclass(frozen=True)
class OrderPacked:
    order_id: str


@event_type("CliOrderLabelled")
@dataclass(frozen=True)
class OrderLabelled:
    order_id: str


@dataclass
class Packing:
    steps: list[str] = field(default_factory=list)


async def packed(state: Packing, event: OrderPacked, context: ProcessContext) -> Packing:
    """Record the packing, or fail while the warehouse is down."""
    if PACKING_FAILS["now"]:
        raise ConnectionError("the warehouse is down")
    return Packing([*state.steps, "packed"])


async def labelled(state: Packing, event: OrderLabelled, context: ProcessContext) -> Packing:
    """Record the label."""
    return Packing([*state.steps, "labelled"])


PROCESS = ProcessManager(
    "packing",
    Packing,
    Packing,
    [
        Reaction(OrderPacked, lambda e: e.order_id, packed, starts=True),
        Reaction(OrderLabelled, lambda e: e.order_id, labelled, starts=True),
    ],
)


def make(database_url: str) -> ProcessRunner:
    """The runner ``eventfold processes retry|resolve --runner`` loads."""
    registry = EventRegistry([OrderPacked, OrderLabelled])
    source = DataSource("app", storage_from_url(database_url), PersistenceModel(), registry)
    return ProcessRunner(
        source,
        Mediator(default_behaviors()),
        [PROCESS],
        retry=RetryPolicy(max_attempts=1, initial=0, maximum=0, jitter=0),
    )
