"""In-process handlers read the metadata of the event they handle, in commit order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import uuid4

from eventfold import (
    AggregateRoot,
    DataSource,
    Entity,
    EventMetadata,
    EventRegistry,
    Mediator,
    PersistenceModel,
    RequestContext,
    current_event_metadata,
)
from eventfold.adapters.memory import create_memory_storage

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Opened:
    name: str


@dataclass(frozen=True)
class Noted:
    text: str


@dataclass
class LedgerState:
    name: str = ""

    def apply_Opened(self, event: Opened) -> None:
        self.name = event.name


class Ledger(AggregateRoot[LedgerState, str]):
    pass


class Memo(Entity[str]):
    text: str

    def __init__(self, memo_id: str, text: str) -> None:
        super().__init__(memo_id)
        self.text = text


@dataclass
class Seen:
    """A one-argument handler that asks for the metadata of what it handles."""

    seen: list[tuple[object, EventMetadata | None]]

    async def handle(self, event: object, /) -> None:
        self.seen.append((event, current_event_metadata()))


def source(mediator: Mediator) -> DataSource:
    model = PersistenceModel()
    model.event_sourced(Ledger)
    model.state_stored(Memo)
    events = EventRegistry([Opened, Noted])
    storage = create_memory_storage()
    return DataSource("s", storage, model, events, publish=mediator.publish, clock=lambda: T0)


async def test_a_handler_reads_the_metadata_of_the_event_it_handles() -> None:
    mediator, seen = Mediator(), Seen([])
    mediator.subscribe(object, lambda: seen)
    context = RequestContext(object(), "corr-1", "cause-1", "ada")
    async with source(mediator).unit_of_work(context) as uow:
        ledger = Ledger("l-1")
        ledger.record(Opened("cash"))
        uow.event_sourced(Ledger).add(ledger)
        await uow.commit()

    [(event, metadata)] = seen.seen
    assert event == Opened("cash")
    assert metadata is not None
    assert (metadata.type_name, metadata.stream_id, metadata.version) == ("Opened", "Ledger-l-1", 1)
    assert (metadata.correlation_id, metadata.causation_id, metadata.actor) == (
        "corr-1",
        "cause-1",
        "ada",
    )
    assert metadata.occurred_at == T0
    assert current_event_metadata() is None  # only while the handler runs


async def test_events_are_published_in_the_order_they_were_written() -> None:
    mediator, seen = Mediator(), Seen([])
    mediator.subscribe(object, lambda: seen)
    async with source(mediator).unit_of_work() as uow:
        memo = Memo("m-1", "first")
        memo.record(Noted("first"))
        uow.state_stored(Memo).add(memo)
        ledger = Ledger("l-1")
        ledger.record(Opened("cash"))
        ledger.record(Opened("bank"))
        uow.event_sourced(Ledger).add(ledger)
        await uow.commit()

    assert [event for event, _ in seen.seen] == [Noted("first"), Opened("cash"), Opened("bank")]
    versions = [metadata.version for _, metadata in seen.seen if metadata is not None]
    assert versions[1:] == [1, 2]
    assert len({metadata.event_id for _, metadata in seen.seen if metadata}) == 3


async def test_an_event_published_directly_has_no_metadata_unless_given() -> None:
    mediator, seen = Mediator(), Seen([])
    mediator.subscribe(Opened, lambda: seen)
    given = EventMetadata(
        event_id=uuid4(),
        type_name="Opened",
        schema_version=1,
        stream_id="Ledger-l-9",
        version=3,
        occurred_at=T0,
    )

    await mediator.publish(Opened("a"))
    await mediator.publish(Opened("b"), given)

    assert [metadata for _, metadata in seen.seen] == [None, given]
