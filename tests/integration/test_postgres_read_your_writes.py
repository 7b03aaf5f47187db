"""CatchUpBehavior on PostgreSQL: a command's client reads its own writes from a projection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from eventfold import (
    AggregateRoot,
    CatchUpBehavior,
    CatchUpOutcome,
    DataSource,
    EventRegistry,
    Mediator,
    Next,
    OperationResult,
    PersistenceModel,
    Projection,
    ProjectionContext,
    ProjectionRunner,
    RequestContext,
    TransactionBehavior,
    UnitOfWork,
)
from eventfold.adapters.postgres import PostgresStorage
from eventfold.errors import ConfigurationError
from tests.conftest import POSTGRES_DSN
from tests.support.postgres import dsn_of, open_transaction, other_database

pytestmark = pytest.mark.postgres

COMMANDS = 20


@dataclass(frozen=True)
class Noted:
    text: str


@dataclass
class NoteState:
    text: str = ""

    def apply_Noted(self, event: Noted) -> None:
        self.text = event.text


class Note(AggregateRoot[NoteState, str]):
    pass


@dataclass(frozen=True)
class TakeNote:
    note_id: str
    text: str


class TakeNoteHandler:
    def __init__(self, context: RequestContext) -> None:
        self.uow = UnitOfWork.of(context)

    async def handle(self, request: TakeNote, /) -> OperationResult[Any]:
        note = Note(request.note_id)
        note.record(Noted(request.text))
        self.uow.event_sourced(Note).add(note)
        return OperationResult.ok(None)


@dataclass(frozen=True)
class CountNotes:
    pass


class CountNotesHandler:
    def __init__(self, context: RequestContext) -> None:
        self.uow = UnitOfWork.of(context)

    async def handle(self, request: CountNotes, /) -> OperationResult[Any]:
        session = await self.uow.session()
        return OperationResult.ok(await session.stream_version("Note-n-1"))


class NoteTexts(Projection):
    name: ClassVar[str] = "note-texts"

    async def apply_Noted(self, event: Noted, context: ProjectionContext) -> None:
        assert context.record is not None
        await context.session.save_document(
            "note_texts", context.record.stream_id, f'"{event.text}"', expected_version=0
        )


class KeepContexts:
    """The outermost behaviour: keeps each request's context, where the outcome is."""

    def __init__(self) -> None:
        self.contexts: list[RequestContext] = []

    async def __call__(
        self,
        request: object,
        context: RequestContext,
        next: Next,  # noqa: A002
    ) -> OperationResult[Any]:
        self.contexts.append(context)
        return await next(request, context)

    def last_outcome(self) -> CatchUpOutcome | None:
        return CatchUpBehavior.outcome(self.contexts[-1])


def notes_mediator(storage: PostgresStorage, timeout: float) -> tuple[Mediator, KeepContexts]:
    events = EventRegistry([Noted])
    model = PersistenceModel()
    model.event_sourced(Note)
    runner = ProjectionRunner(storage, events, [NoteTexts()])
    source = DataSource("notes", storage, model, events)
    kept = KeepContexts()
    mediator = Mediator(
        [kept, CatchUpBehavior(runner, timeout=timeout), TransactionBehavior(source.unit_of_work)]
    )
    mediator.register(TakeNote, TakeNoteHandler)
    mediator.register(CountNotes, CountNotesHandler)
    return mediator, kept


@dataclass
class App:
    mediator: Mediator
    kept: KeepContexts
    storage: PostgresStorage

    async def read_note(self, note_id: str) -> str | None:
        async with self.storage.transaction() as session:
            record = await session.load_document("note_texts", f"Note-{note_id}")
        return None if record is None else str(record.data).strip('"')


@pytest.fixture
def app(postgres_storage: PostgresStorage) -> App:
    mediator, kept = notes_mediator(postgres_storage, timeout=10.0)
    return App(mediator, kept, postgres_storage)


async def test_every_command_reads_its_own_write_from_the_projection_when_it_returns(
    app: App,
) -> None:
    # Unrelated transactions stay open meanwhile: another database's, and one in this
    # database that is not eventfold's. Neither holds the log back.
    seen = 0
    async with (
        open_transaction(dsn_of(other_database())),
        open_transaction(POSTGRES_DSN, "CREATE TEMPORARY TABLE scratch (n int)"),
    ):
        for n in range(COMMANDS):
            result = await app.mediator.send(TakeNote(f"n-{n}", f"text {n}"))
            assert result.is_success
            if await app.read_note(f"n-{n}") == f"text {n}":
                seen += 1
            outcome = app.kept.last_outcome()
            assert outcome is not None
            assert outcome.complete
    assert seen == COMMANDS


async def test_a_catch_up_held_back_by_an_open_writer_returns_at_its_timeout_naming_it(
    postgres_storage: PostgresStorage,
) -> None:
    storage = postgres_storage
    mediator, kept = notes_mediator(storage, timeout=0.2)
    has_id, may_end = asyncio.Event(), asyncio.Event()

    async def open_writer() -> None:
        async with storage.transaction() as session:
            await session.save_document("other", "o-1", "{}", expected_version=0)
            has_id.set()
            await may_end.wait()

    writer = asyncio.create_task(open_writer())
    await has_id.wait()
    try:
        result = await mediator.send(TakeNote("n-1", "held"))
    finally:
        may_end.set()
        await writer

    assert result.is_success
    outcome = kept.last_outcome()
    assert outcome is not None
    assert (outcome.complete, outcome.timed_out) == (False, ("note-texts",))
    assert outcome.blocker is not None
    assert outcome.blocker.pid is not None


async def test_a_request_that_appends_nothing_waits_for_no_open_writer(
    postgres_storage: PostgresStorage,
) -> None:
    storage = postgres_storage
    mediator, kept = notes_mediator(storage, timeout=5.0)
    assert (await mediator.send(TakeNote("n-1", "first"))).is_success
    has_id, may_end = asyncio.Event(), asyncio.Event()

    async def open_writer() -> None:
        async with storage.transaction() as session:
            await session.save_document("other", "o-1", "{}", expected_version=0)
            has_id.set()
            await may_end.wait()

    writer = asyncio.create_task(open_writer())
    await has_id.wait()
    try:
        result = await mediator.send(CountNotes())
        outcome = kept.last_outcome()
    finally:
        may_end.set()
        await writer

    assert result.unwrap() == 1
    assert outcome is not None
    assert (outcome.target, outcome.complete) == (None, True)


def test_a_negative_catch_up_timeout_is_refused_by_name(postgres_storage: PostgresStorage) -> None:
    runner = ProjectionRunner(postgres_storage, EventRegistry([Noted]), [NoteTexts()])
    with pytest.raises(ConfigurationError, match="timeout must be 0 seconds or more"):
        CatchUpBehavior(runner, timeout=-1)
