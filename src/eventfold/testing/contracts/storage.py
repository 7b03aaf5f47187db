"""The storage contract: what every :class:`~eventfold.ports.Storage` backend must do.

Subclass :class:`StorageContract` in a test module and provide a ``storage`` fixture
that yields a fresh, empty storage with its schema created::

    class TestMyStorage(StorageContract):
        @pytest.fixture
        async def storage(self) -> AsyncIterator[Storage]:
            storage = create_my_storage(...)
            await storage.create_schema()
            yield storage
            await storage.close()
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from eventfold.errors import CheckpointConflictError, ConcurrencyError, DuplicateEventError
from eventfold.ports import (
    LOG_START,
    AppendEvents,
    DeleteDocument,
    EventRecord,
    ExpectedVersion,
    LogPosition,
    OutboxMessage,
    SaveDocument,
    SnapshotRecord,
    Storage,
    StorageSession,
    StoredEvent,
    StreamState,
)

__all__ = ["StorageContract", "event_record", "outbox_message"]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def event_record(
    type_name: str = "ThingHappened",
    *,
    n: int = 0,
    occurred_at: datetime = T0,
    event_id: uuid.UUID | None = None,
) -> EventRecord:
    """An event record with a small JSON payload ``{"n": n}``."""
    return EventRecord(
        event_id=event_id or uuid.uuid4(),
        type_name=type_name,
        schema_version=1,
        data=json.dumps({"n": n}),
        occurred_at=occurred_at,
        correlation_id="corr-1",
        causation_id="cause-1",
        actor="alice",
    )


def outbox_message(n: int = 0, *, event_id: uuid.UUID | None = None) -> OutboxMessage:
    """An outbox message for aggregate ``Thing`` ``t-1`` with payload ``{"n": n}``."""
    return OutboxMessage(
        event_id=event_id or uuid.uuid4(),
        type_name="ThingHappened",
        schema_version=1,
        aggregate_type="Thing",
        aggregate_id="t-1",
        data=json.dumps({"n": n}),
        occurred_at=T0,
        correlation_id="corr-1",
        causation_id=None,
        actor="alice",
    )


def payloads(events: list[StoredEvent]) -> list[int]:
    """The ``n`` of each event's payload (JSON text may be reformatted by a backend)."""
    return [json.loads(event.data)["n"] for event in events]


class _Rollback(Exception):  # noqa: N818 - a signal, not an error
    """Raised inside a transaction to make it roll back."""


async def rolled_back(
    storage: Storage, writes: Callable[[StorageSession], Awaitable[object]]
) -> None:
    """Run ``writes`` in a transaction that then raises, so that it rolls back."""
    try:
        async with storage.transaction() as session:
            await writes(session)
            raise _Rollback
    except _Rollback:
        return


async def append(
    storage: Storage,
    stream_id: str,
    *records: EventRecord,
    expected: ExpectedVersion = StreamState.ANY,
) -> int:
    """Append ``records`` in a transaction of their own; return once the log shows them."""
    async with storage.transaction() as session:
        version = await session.append(stream_id, records, expected_version=expected)
    await until_readable(storage, stream_id)
    return version


async def until_readable(storage: Storage, stream_id: str, seconds: float = 60.0) -> None:
    """Wait until the global log shows the last event of ``stream_id``.

    A gap-free log never passes a transaction still in progress anywhere on the server,
    so on a shared, busy database a committed event may become readable a moment later.
    ``seconds`` bounds the wait against hanging on a loaded machine; it is not a measure.
    """
    try:
        async with asyncio.timeout(seconds):
            while True:
                async with storage.transaction() as session:
                    last = (await session.read_stream(stream_id))[-1:]
                    if not last or await session.log_head() >= last[0].log_position:
                        return
                await asyncio.sleep(0.01)
    except TimeoutError:
        msg = f"the last event of {stream_id} was not readable in the global log after {seconds} s"
        raise AssertionError(msg) from None


async def read(storage: Storage, stream_id: str) -> list[StoredEvent]:
    """The whole stream, read in a transaction of its own."""
    async with storage.transaction() as session:
        return await session.read_stream(stream_id)


class StorageContract:
    """Async pytest tests every storage backend must pass; needs a ``storage`` fixture."""

    # -- streams -----------------------------------------------------------------------

    async def test_appended_events_are_read_back_in_order_with_their_metadata(
        self, storage: Storage
    ) -> None:
        records = [event_record(n=1), event_record("OtherHappened", n=2)]
        await append(storage, "thing-1", *records, expected=0)
        events = await read(storage, "thing-1")
        assert [(e.stream_id, e.version, e.event_id, e.type_name) for e in events] == [
            ("thing-1", 1, records[0].event_id, "ThingHappened"),
            ("thing-1", 2, records[1].event_id, "OtherHappened"),
        ]
        assert payloads(events) == [1, 2]
        first = events[0]
        assert (first.schema_version, first.occurred_at) == (1, T0)
        assert (first.correlation_id, first.causation_id, first.actor) == (
            "corr-1",
            "cause-1",
            "alice",
        )

    async def test_append_returns_the_new_stream_version(self, storage: Storage) -> None:
        assert await append(storage, "thing-1", event_record(), event_record(), expected=0) == 2
        assert await append(storage, "thing-1", event_record(), expected=2) == 3

    async def test_reading_a_stream_respects_from_and_to_version(self, storage: Storage) -> None:
        await append(storage, "thing-1", *(event_record(n=n) for n in range(1, 6)))
        async with storage.transaction() as session:
            middle = await session.read_stream("thing-1", from_version=2, to_version=4)
            tail = await session.read_stream("thing-1", from_version=4)
            head = await session.read_stream("thing-1", to_version=2)
        assert payloads(middle) == [2, 3, 4]
        assert payloads(tail) == [4, 5]
        assert payloads(head) == [1, 2]

    async def test_a_missing_stream_reads_empty_at_version_zero(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            assert await session.read_stream("nothing-here") == []
            assert await session.stream_version("nothing-here") == 0

    async def test_stream_version_counts_the_stored_events(self, storage: Storage) -> None:
        await append(storage, "thing-1", event_record(), event_record(), event_record())
        async with storage.transaction() as session:
            assert await session.stream_version("thing-1") == 3

    async def test_no_stream_expectation_creates_a_new_stream(self, storage: Storage) -> None:
        await append(storage, "thing-1", event_record(n=1), expected=StreamState.NO_STREAM)
        assert payloads(await read(storage, "thing-1")) == [1]

    async def test_no_stream_expectation_refuses_an_existing_stream(self, storage: Storage) -> None:
        await append(storage, "thing-1", event_record())
        with pytest.raises(ConcurrencyError):
            await append(storage, "thing-1", event_record(), expected=StreamState.NO_STREAM)

    async def test_any_expectation_appends_whatever_the_version(self, storage: Storage) -> None:
        await append(storage, "thing-1", event_record(n=1), event_record(n=2))
        await append(storage, "thing-1", event_record(n=3), expected=StreamState.ANY)
        assert [e.version for e in await read(storage, "thing-1")] == [1, 2, 3]

    async def test_a_conflict_names_the_stream_the_expected_and_the_actual_version(
        self, storage: Storage
    ) -> None:
        await append(storage, "thing-1", event_record(), event_record())
        with pytest.raises(ConcurrencyError) as raised:
            await append(storage, "thing-1", event_record(), expected=1)
        assert (raised.value.stream_id, raised.value.expected, raised.value.actual) == (
            "thing-1",
            1,
            2,
        )

    async def test_a_conflicting_batch_stores_none_of_its_events(self, storage: Storage) -> None:
        await append(storage, "thing-1", event_record(n=1))
        with pytest.raises(ConcurrencyError):
            await append(storage, "thing-1", event_record(n=2), event_record(n=3), expected=0)
        assert payloads(await read(storage, "thing-1")) == [1]

    async def test_concurrent_appenders_at_one_version_have_exactly_one_winner(
        self, storage: Storage
    ) -> None:
        async def attempt(n: int) -> bool:
            try:
                async with storage.transaction() as session:
                    await asyncio.sleep(0)  # let the other writers start their transactions
                    await session.append("thing-1", [event_record(n=n)], expected_version=0)
            except ConcurrencyError:
                return False
            return True

        outcomes = await asyncio.gather(*(attempt(n) for n in range(8)))
        assert outcomes.count(True) == 1
        assert payloads(await read(storage, "thing-1")) == [outcomes.index(True)]

    async def test_concurrent_appenders_retrying_on_conflict_lose_and_duplicate_nothing(
        self, storage: Storage
    ) -> None:
        async def append_until_stored(record: EventRecord) -> None:
            while True:
                try:
                    async with storage.transaction() as session:
                        version = await session.stream_version("thing-1")
                        await asyncio.sleep(0)  # widen the race between read and append
                        await session.append("thing-1", [record], expected_version=version)
                except ConcurrencyError:
                    continue
                return

        records = [event_record(n=n) for n in range(8)]
        await asyncio.gather(*(append_until_stored(record) for record in records))
        events = await read(storage, "thing-1")
        assert [e.version for e in events] == list(range(1, 9))
        assert sorted(e.event_id for e in events) == sorted(r.event_id for r in records)

    async def test_a_duplicate_event_id_is_rejected_and_its_batch_not_stored(
        self, storage: Storage
    ) -> None:
        first = event_record(n=1)
        await append(storage, "thing-1", first)
        with pytest.raises(DuplicateEventError):
            await append(
                storage, "thing-2", event_record(n=2), event_record(n=3, event_id=first.event_id)
            )
        assert await read(storage, "thing-2") == []

    async def test_as_of_reads_only_events_that_occurred_by_then(self, storage: Storage) -> None:
        hour = timedelta(hours=1)
        await append(
            storage,
            "thing-1",
            *(event_record(n=n, occurred_at=T0 + n * hour) for n in range(3)),
        )
        async with storage.transaction() as session:
            events = await session.read_stream("thing-1", as_of=T0 + hour)
        assert payloads(events) == [0, 1]

    # -- global log --------------------------------------------------------------------

    async def test_the_global_log_is_read_in_commit_order_in_pages(self, storage: Storage) -> None:
        appended: list[uuid.UUID] = []
        for n, stream_id in enumerate(["a", "b", "a", "c", "b"]):
            record = event_record(n=n)
            appended.append(record.event_id)
            await append(storage, stream_id, record)
        seen: list[StoredEvent] = []
        position = LOG_START
        async with storage.transaction() as session:
            while page := await session.read_log(after=position, limit=2):
                assert len(page) <= 2
                seen.extend(page)
                position = page[-1].log_position
        assert [e.event_id for e in seen] == appended
        positions = [e.log_position for e in seen]
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)

    async def test_the_global_log_can_be_read_for_some_types_only(self, storage: Storage) -> None:
        await append(
            storage,
            "a",
            event_record("Kept", n=1),
            event_record("Skipped", n=2),
            event_record("AlsoKept", n=3),
        )
        async with storage.transaction() as session:
            events = await session.read_log(after=LOG_START, limit=10, types={"Kept", "AlsoKept"})
        assert payloads(events) == [1, 3]

    async def test_the_global_log_stops_at_the_limit_when_filtering_by_type(
        self, storage: Storage
    ) -> None:
        await append(storage, "a", *(event_record("Kept", n=n) for n in range(5)))
        async with storage.transaction() as session:
            events = await session.read_log(after=LOG_START, limit=3, types=["Kept"])
        assert payloads(events) == [0, 1, 2]

    async def test_log_head_of_an_empty_log_is_log_start(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            assert await session.log_head() == LOG_START

    async def test_log_head_is_the_position_of_the_last_event(self, storage: Storage) -> None:
        await append(storage, "a", event_record(), event_record())
        await append(storage, "b", event_record())
        async with storage.transaction() as session:
            last = (await session.read_stream("b"))[-1]
            assert await session.log_head() == last.log_position

    async def test_count_after_counts_the_events_following_a_position(
        self, storage: Storage
    ) -> None:
        await append(storage, "a", *(event_record(n=n) for n in range(5)))
        async with storage.transaction() as session:
            events = await session.read_stream("a")
            assert await session.count_after(LOG_START) == 5
            assert await session.count_after(events[1].log_position) == 3
            assert await session.count_after(events[-1].log_position) == 0

    async def test_with_no_writer_in_flight_everything_committed_is_readable(
        self, storage: Storage
    ) -> None:
        await append(storage, "a", event_record(), event_record())
        async with storage.transaction() as session:
            last = (await session.read_stream("a"))[-1]
            horizon = await session.log_horizon()
        assert horizon.readable_head == horizon.committed_head == last.log_position
        assert (horizon.unreadable, horizon.blocker) == (0, None)

    async def test_the_log_horizon_of_an_empty_log_is_log_start(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            horizon = await session.log_horizon()
        assert horizon.readable_head == horizon.committed_head == LOG_START

    # -- snapshots ---------------------------------------------------------------------

    async def test_a_stream_without_snapshot_has_none(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            assert await session.load_snapshot("thing-1") is None

    async def test_a_newer_snapshot_replaces_the_older_one(self, storage: Storage) -> None:
        older = SnapshotRecord("thing-1", 5, "ThingState", 1, json.dumps({"n": 5}), T0)
        newer = SnapshotRecord("thing-1", 10, "ThingState", 2, json.dumps({"n": 10}), T0)
        for snapshot in (older, newer):
            async with storage.transaction() as session:
                await session.save_snapshot(snapshot)
        async with storage.transaction() as session:
            loaded = await session.load_snapshot("thing-1")
        assert loaded is not None
        assert (loaded.version, loaded.state_type, loaded.schema_version) == (10, "ThingState", 2)
        assert json.loads(loaded.data) == {"n": 10}
        assert loaded.taken_at == T0

    # -- documents ---------------------------------------------------------------------

    async def test_a_new_document_is_stored_at_version_one(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            version = await session.save_document(
                "customers", "c-1", '{"n": 1}', expected_version=0
            )
        async with storage.transaction() as session:
            document = await session.load_document("customers", "c-1")
        assert version == 1
        assert document is not None
        assert (document.collection, document.key, document.version) == ("customers", "c-1", 1)
        assert json.loads(document.data) == {"n": 1}

    async def test_updating_a_document_at_its_version_increments_it(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            await session.save_document("customers", "c-1", '{"n": 1}', expected_version=0)
        async with storage.transaction() as session:
            version = await session.save_document(
                "customers", "c-1", '{"n": 2}', expected_version=1
            )
            document = await session.load_document("customers", "c-1")
        assert version == 2
        assert document is not None
        assert json.loads(document.data) == {"n": 2}

    async def test_inserting_a_document_that_exists_raises_concurrency_error(
        self, storage: Storage
    ) -> None:
        async with storage.transaction() as session:
            await session.save_document("customers", "c-1", '{"n": 1}', expected_version=0)
        with pytest.raises(ConcurrencyError):
            async with storage.transaction() as session:
                await session.save_document("customers", "c-1", '{"n": 2}', expected_version=0)

    async def test_updating_a_document_at_a_stale_version_changes_nothing(
        self, storage: Storage
    ) -> None:
        async with storage.transaction() as session:
            await session.save_document("customers", "c-1", '{"n": 1}', expected_version=0)
            await session.save_document("customers", "c-1", '{"n": 2}', expected_version=1)
        with pytest.raises(ConcurrencyError):
            async with storage.transaction() as session:
                await session.save_document("customers", "c-1", '{"n": 3}', expected_version=1)
        async with storage.transaction() as session:
            document = await session.load_document("customers", "c-1")
        assert document is not None
        assert (document.version, json.loads(document.data)) == (2, {"n": 2})

    async def test_concurrent_document_updates_have_exactly_one_winner(
        self, storage: Storage
    ) -> None:
        async with storage.transaction() as session:
            await session.save_document("customers", "c-1", '{"n": 0}', expected_version=0)

        async def attempt(n: int) -> bool:
            try:
                async with storage.transaction() as session:
                    await asyncio.sleep(0)
                    data = json.dumps({"n": n})
                    await session.save_document("customers", "c-1", data, expected_version=1)
            except ConcurrencyError:
                return False
            return True

        outcomes = await asyncio.gather(*(attempt(n) for n in range(1, 6)))
        assert outcomes.count(True) == 1

    async def test_a_deleted_document_is_gone(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            await session.save_document("customers", "c-1", '{"n": 1}', expected_version=0)
        async with storage.transaction() as session:
            await session.delete_document("customers", "c-1", expected_version=1)
        async with storage.transaction() as session:
            assert await session.load_document("customers", "c-1") is None

    async def test_deleting_a_document_at_a_stale_version_raises(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            await session.save_document("customers", "c-1", '{"n": 1}', expected_version=0)
            await session.save_document("customers", "c-1", '{"n": 2}', expected_version=1)
        with pytest.raises(ConcurrencyError):
            async with storage.transaction() as session:
                await session.delete_document("customers", "c-1", expected_version=1)

    async def test_load_documents_returns_those_that_exist_in_the_collection(
        self, storage: Storage
    ) -> None:
        async with storage.transaction() as session:
            await session.save_document("customers", "c-1", '{"n": 1}', expected_version=0)
            await session.save_document("customers", "c-2", '{"n": 2}', expected_version=0)
            await session.save_document("suppliers", "c-3", '{"n": 3}', expected_version=0)
        async with storage.transaction() as session:
            documents = await session.load_documents("customers", ["c-1", "c-2", "c-3", "c-4"])
        assert sorted(d.key for d in documents) == ["c-1", "c-2"]

    # -- outbox ------------------------------------------------------------------------

    async def test_outbox_rows_are_pending_in_order_once_committed(self, storage: Storage) -> None:
        messages = [outbox_message(1), outbox_message(2)]
        async with storage.transaction() as session:
            await session.add_to_outbox(messages)
        async with storage.transaction() as session:
            entries = await session.read_outbox(limit=10)
        assert [entry.message.event_id for entry in entries] == [m.event_id for m in messages]
        first = entries[0]
        assert (first.message.aggregate_type, first.message.aggregate_id) == ("Thing", "t-1")
        assert json.loads(first.message.data) == {"n": 1}
        assert (first.attempts, first.published_at, first.dead) == (0, None, False)
        assert entries[0].id < entries[1].id

    async def test_outbox_rows_of_a_failed_transaction_leave_nothing(
        self, storage: Storage
    ) -> None:
        await rolled_back(storage, lambda session: session.add_to_outbox([outbox_message(1)]))
        async with storage.transaction() as session:
            assert await session.read_outbox(limit=10) == []

    async def test_an_outbox_message_with_a_stored_event_id_is_rejected(
        self, storage: Storage
    ) -> None:
        message = outbox_message(1)
        async with storage.transaction() as session:
            await session.add_to_outbox([message])
        with pytest.raises(DuplicateEventError):
            async with storage.transaction() as session:
                await session.add_to_outbox([message])

    # -- checkpoints -------------------------------------------------------------------

    async def test_a_reader_that_never_ran_has_no_checkpoint(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            assert await session.load_checkpoint("orders-view") is None

    async def test_a_saved_checkpoint_is_loaded_and_overwritten(self, storage: Storage) -> None:
        for position in (LogPosition(0, 3), LogPosition(7, 12)):
            async with storage.transaction() as session:
                await session.save_checkpoint("orders-view", position)
        async with storage.transaction() as session:
            assert await session.load_checkpoint("orders-view") == LogPosition(7, 12)
            assert await session.load_checkpoint("other-view") is None

    async def test_a_checkpoint_moves_when_the_saved_one_is_the_expected_one(
        self, storage: Storage
    ) -> None:
        async with storage.transaction() as session:
            await session.save_checkpoint("orders-view", LogPosition(0, 3), expected=None)
        async with storage.transaction() as session:
            await session.save_checkpoint(
                "orders-view", LogPosition(0, 5), expected=LogPosition(0, 3)
            )
        async with storage.transaction() as session:
            assert await session.load_checkpoint("orders-view") == LogPosition(0, 5)

    async def test_a_checkpoint_expected_absent_but_saved_is_refused(
        self, storage: Storage
    ) -> None:
        async with storage.transaction() as session:
            await session.save_checkpoint("orders-view", LogPosition(0, 3))
        with pytest.raises(CheckpointConflictError) as conflict:
            async with storage.transaction() as session:
                await session.save_checkpoint("orders-view", LogPosition(0, 9), expected=None)
        assert (conflict.value.name, conflict.value.expected) == ("orders-view", None)
        assert conflict.value.actual == LogPosition(0, 3)
        assert "orders-view" in str(conflict.value)

    async def test_of_two_readers_expecting_one_checkpoint_only_the_first_saves(
        self, storage: Storage
    ) -> None:
        async with storage.transaction() as session:
            await session.save_checkpoint("orders-view", LogPosition(0, 3))
        loaded = 0
        both_loaded = asyncio.Event()

        async def advance(position: LogPosition) -> None:
            nonlocal loaded
            async with storage.transaction() as session:
                expected = await session.load_checkpoint("orders-view")
                loaded += 1
                if loaded == 2:
                    both_loaded.set()
                await both_loaded.wait()
                await session.save_checkpoint("orders-view", position, expected=expected)

        outcomes = await asyncio.gather(
            advance(LogPosition(0, 4)), advance(LogPosition(0, 5)), return_exceptions=True
        )

        conflicts = [o for o in outcomes if isinstance(o, CheckpointConflictError)]
        assert len(conflicts) == 1, outcomes
        assert conflicts[0].expected == LogPosition(0, 3)
        winner = LogPosition(0, 4) if outcomes[0] is None else LogPosition(0, 5)
        assert conflicts[0].actual == winner
        async with storage.transaction() as session:
            assert await session.load_checkpoint("orders-view") == winner

    # -- inbox -------------------------------------------------------------------------

    async def test_the_inbox_reports_a_duplicate_delivery(self, storage: Storage) -> None:
        event_id = uuid.uuid4()
        async with storage.transaction() as session:
            assert await session.mark_processed(event_id, "send-email") is True
        async with storage.transaction() as session:
            assert await session.mark_processed(event_id, "send-email") is False

    async def test_the_inbox_keeps_handlers_of_one_event_apart(self, storage: Storage) -> None:
        event_id = uuid.uuid4()
        async with storage.transaction() as session:
            assert await session.mark_processed(event_id, "send-email") is True
            assert await session.mark_processed(event_id, "update-stock") is True

    async def test_an_inbox_pair_of_a_failed_transaction_is_not_remembered(
        self, storage: Storage
    ) -> None:
        event_id = uuid.uuid4()
        await rolled_back(storage, lambda session: session.mark_processed(event_id, "send-email"))
        async with storage.transaction() as session:
            assert await session.mark_processed(event_id, "send-email") is True

    async def test_purging_forgets_pairs_processed_before_the_cutoff(
        self, storage: Storage
    ) -> None:
        event_id = uuid.uuid4()
        async with storage.transaction() as session:
            await session.mark_processed(event_id, "send-email")
        async with storage.transaction() as session:
            assert await session.purge_processed(datetime.now(UTC) - timedelta(hours=1)) == 0
            assert await session.purge_processed(datetime.now(UTC) + timedelta(hours=1)) == 1
        async with storage.transaction() as session:
            assert await session.mark_processed(event_id, "send-email") is True

    # -- transactions ------------------------------------------------------------------

    async def test_a_transaction_reads_its_own_writes(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            await session.append("thing-1", [event_record(n=1)], expected_version=0)
            await session.save_document("customers", "c-1", '{"n": 1}', expected_version=0)
            assert payloads(await session.read_stream("thing-1")) == [1]
            assert await session.stream_version("thing-1") == 1
            assert await session.load_document("customers", "c-1") is not None

    async def test_a_transaction_that_raises_rolls_back_every_write(self, storage: Storage) -> None:
        snapshot = SnapshotRecord("thing-1", 1, "ThingState", 1, '{"n": 1}', T0)

        async def write_everything(session: StorageSession) -> None:
            await session.append("thing-1", [event_record()], expected_version=0)
            await session.save_snapshot(snapshot)
            await session.save_document("customers", "c-1", '{"n": 1}', expected_version=0)
            await session.add_to_outbox([outbox_message()])
            await session.save_checkpoint("orders-view", LogPosition(0, 1))

        await rolled_back(storage, write_everything)
        async with storage.transaction() as session:
            assert await session.read_stream("thing-1") == []
            assert await session.log_head() == LOG_START
            assert await session.load_snapshot("thing-1") is None
            assert await session.load_document("customers", "c-1") is None
            assert await session.read_outbox(limit=10) == []
            assert await session.load_checkpoint("orders-view") is None

    # -- write batches -----------------------------------------------------------------

    async def test_a_write_batch_stores_every_write_once_committed(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            await session.save_document("customers", "c-2", '{"n": 0}', expected_version=0)
        snapshot = SnapshotRecord("thing-1", 2, "ThingState", 1, '{"n": 2}', T0)
        async with storage.transaction() as session:
            await session.write_batch(
                [
                    AppendEvents("thing-1", [event_record(n=1), event_record(n=2)], 0),
                    snapshot,
                    SaveDocument("customers", "c-1", '{"n": 1}', 0),
                    DeleteDocument("customers", "c-2", 1),
                    outbox_message(1),
                    outbox_message(2),
                ]
            )
        async with storage.transaction() as session:
            assert payloads(await session.read_stream("thing-1")) == [1, 2]
            assert await session.load_snapshot("thing-1") == snapshot
            stored = await session.load_document("customers", "c-1")
            assert stored is not None
            assert stored.version == 1
            assert await session.load_document("customers", "c-2") is None
            outbox = await session.read_outbox(limit=10)
            assert [json.loads(entry.message.data)["n"] for entry in outbox] == [1, 2]

    async def test_a_transaction_reads_the_writes_of_its_batch(self, storage: Storage) -> None:
        async with storage.transaction() as session:
            await session.write_batch([AppendEvents("thing-1", [event_record(n=1)], 0)])
            assert payloads(await session.read_stream("thing-1")) == [1]
            await session.append("thing-1", [event_record(n=2)], expected_version=1)
        assert payloads(await read(storage, "thing-1")) == [1, 2]

    async def test_a_conflicting_write_batch_fails_its_transaction_and_stores_nothing(
        self, storage: Storage
    ) -> None:
        await append(storage, "thing-1", event_record(n=1))
        with pytest.raises(ConcurrencyError) as raised:
            async with storage.transaction() as session:
                await session.write_batch(
                    [
                        AppendEvents("thing-2", [event_record(n=5)], 0),
                        AppendEvents("thing-1", [event_record(n=2)], 0),
                        outbox_message(2),
                    ]
                )
        assert raised.value.stream_id == "thing-1"
        assert payloads(await read(storage, "thing-1")) == [1]
        assert await read(storage, "thing-2") == []
        async with storage.transaction() as session:
            assert await session.read_outbox(limit=10) == []

    async def test_a_write_batch_with_a_stored_event_id_fails_and_stores_nothing(
        self, storage: Storage
    ) -> None:
        taken = event_record(n=1)
        await append(storage, "thing-1", taken)
        with pytest.raises(DuplicateEventError):
            async with storage.transaction() as session:
                await session.write_batch(
                    [
                        AppendEvents("thing-2", [event_record(n=2)], 0),
                        AppendEvents("thing-3", [taken], 0),
                    ]
                )
        assert await read(storage, "thing-2") == []

    async def test_concurrent_write_batches_at_one_version_have_exactly_one_winner(
        self, storage: Storage
    ) -> None:
        await append(storage, "thing-1", event_record(n=0))

        async def commit(n: int) -> None:
            async with storage.transaction() as session:
                await session.write_batch(
                    [AppendEvents("thing-1", [event_record(n=n)], 1), outbox_message(n)]
                )

        results = await asyncio.gather(*(commit(n) for n in range(1, 6)), return_exceptions=True)
        winners = [n for n, result in zip(range(1, 6), results, strict=True) if result is None]
        assert len(winners) == 1
        assert all(isinstance(r, ConcurrencyError) for r in results if r is not None)
        assert payloads(await read(storage, "thing-1")) == [0, *winners]
        async with storage.transaction() as session:
            outbox = await session.read_outbox(limit=10)
        assert [json.loads(entry.message.data)["n"] for entry in outbox] == winners

    async def test_concurrent_write_batches_on_distinct_streams_are_all_stored(
        self, storage: Storage
    ) -> None:
        async def commit(n: int) -> None:
            async with storage.transaction() as session:
                await session.write_batch(
                    [AppendEvents(f"thing-{n}", [event_record(n=n)], 0), outbox_message(n)]
                )

        await asyncio.gather(*(commit(n) for n in range(8)))
        for n in range(8):
            assert payloads(await read(storage, f"thing-{n}")) == [n]
        async with storage.transaction() as session:
            assert len(await session.read_outbox(limit=20)) == 8

    async def test_the_writes_of_a_rolled_back_batch_leave_nothing(self, storage: Storage) -> None:
        async def write_batch(session: StorageSession) -> None:
            await session.write_batch(
                [AppendEvents("thing-1", [event_record()], 0), outbox_message()]
            )

        await rolled_back(storage, write_batch)
        async with storage.transaction() as session:
            assert await session.read_stream("thing-1") == []
            assert await session.read_outbox(limit=10) == []

    async def test_creating_the_schema_again_keeps_the_data(self, storage: Storage) -> None:
        await append(storage, "thing-1", event_record(n=1))
        await storage.create_schema()
        assert payloads(await read(storage, "thing-1")) == [1]
