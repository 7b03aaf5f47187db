"""CatchUpBehavior: projections catch up after a successful request, never after a failed one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from eventfold import (
    AggregateRoot,
    CatchUpBehavior,
    DataSource,
    EventRegistry,
    Mediator,
    OperationResult,
    PersistenceModel,
    Projection,
    ProjectionContext,
    ProjectionRunner,
    RequestContext,
    TransactionBehavior,
    UnitOfWork,
)
from eventfold.adapters.memory import create_memory_storage


@dataclass(frozen=True)
class Rang:
    loud: bool


@dataclass
class BellState:
    rings: int = 0

    def apply_Rang(self, event: Rang) -> None:
        self.rings += 1


class Bell(AggregateRoot[BellState, str]):
    pass


@dataclass(frozen=True)
class Ring:
    loud: bool = True


class Rings(Projection):
    name: ClassVar[str] = "rings"
    seen: ClassVar[list[bool]] = []

    async def apply_Rang(self, event: Rang, context: ProjectionContext) -> None:
        if not event.loud:
            msg = "too quiet"
            raise ValueError(msg)
        self.seen.append(event.loud)


class RingHandler:
    def __init__(self, context: RequestContext) -> None:
        self.uow = UnitOfWork.of(context)

    async def handle(self, request: Ring, /) -> OperationResult[Any]:
        bell = Bell(f"bell-{len(Rings.seen)}")
        bell.record(Rang(request.loud))
        self.uow.event_sourced(Bell).add(bell)
        return OperationResult.ok(None)


def mediator() -> Mediator:
    storage, events = create_memory_storage(), EventRegistry([Rang])
    model = PersistenceModel()
    model.event_sourced(Bell)
    runner = ProjectionRunner(storage, events, [Rings()])
    source = DataSource("s", storage, model, events)
    mediator = Mediator([CatchUpBehavior(runner), TransactionBehavior(source.unit_of_work)])
    mediator.register(Ring, RingHandler)
    return mediator


async def test_a_successful_request_is_projected_before_it_returns() -> None:
    Rings.seen.clear()
    result = await mediator().send(Ring())
    assert result.is_success
    assert Rings.seen == [True]


async def test_a_failing_projection_is_logged_and_the_request_still_succeeds() -> None:
    Rings.seen.clear()
    result = await mediator().send(Ring(loud=False))
    assert result.is_success
    assert Rings.seen == []
