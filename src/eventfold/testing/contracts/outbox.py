"""The outbox relay store contract: what every :class:`~eventfold.ports.OutboxRelayStore` does.

Subclass :class:`OutboxRelayContract` and provide two fixtures: ``storage`` (a fresh
storage with its schema) and ``outbox_store`` (the relay store over that storage).
Backends that run several relays at once also subclass :class:`CompetingRelaysContract`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from eventfold.ports import OutboxMessage, Storage
from eventfold.ports.outbox import OutboxRelayStore
from eventfold.ports.records import OutboxEntry

__all__ = ["CompetingRelaysContract", "OutboxRelayContract", "add_outbox_rows", "relay_message"]

NOW = datetime(2030, 1, 1, tzinfo=UTC)
"""A claim time later than any row a test writes, so every new row is due."""


class _Abandon(Exception):  # noqa: N818 - a signal, not an error
    """Ends a claim as a crashing relay would."""


def relay_message(aggregate_id: str = "a-1", n: int = 0) -> OutboxMessage:
    """An outbox message of aggregate ``aggregate_id`` with payload ``{"n": n}``."""
    return OutboxMessage(
        event_id=uuid.uuid4(),
        type_name="ThingHappened",
        schema_version=1,
        aggregate_type="Thing",
        aggregate_id=aggregate_id,
        data=json.dumps({"n": n}),
        occurred_at=NOW - timedelta(days=1),
    )


async def add_outbox_rows(storage: Storage, *aggregate_ids: str) -> list[OutboxMessage]:
    """One committed outbox row per aggregate id given (repeat an id for several rows)."""
    messages = [relay_message(aggregate_id, n) for n, aggregate_id in enumerate(aggregate_ids)]
    async with storage.transaction() as session:
        await session.add_to_outbox(messages)
    return messages


def _payloads(entries: Sequence[OutboxEntry]) -> list[int]:
    return [json.loads(entry.message.data)["n"] for entry in entries]


async def _claimed(store: OutboxRelayStore, *, limit: int = 100, now: datetime = NOW) -> list[int]:
    async with store.claim(limit=limit, now=now) as claim:
        return _payloads(claim.entries)


async def _fail(
    store: OutboxRelayStore,
    *,
    next_at: datetime,
    dead: bool,
    limit: int = 1,
    refused: bool = True,
) -> None:
    async with store.claim(limit=limit, now=NOW) as claim:
        for entry in claim.entries:
            await claim.record_failure(
                entry.id, error="refused", next_attempt_at=next_at, dead=dead, refused=refused
            )


async def _publish_all(store: OutboxRelayStore, *, at: datetime = NOW) -> None:
    async with store.claim(limit=1000, now=NOW) as claim:
        await claim.mark_published([entry.id for entry in claim.entries], at=at)


class OutboxRelayContract:
    """Tests every relay store must pass."""

    async def test_a_claim_hands_out_due_rows_in_order_with_their_messages(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        messages = await add_outbox_rows(storage, "a-1", "a-2", "a-1")
        async with outbox_store.claim(limit=10, now=NOW) as claim:
            assert [entry.message for entry in claim.entries] == messages
            assert [entry.attempts for entry in claim.entries] == [0, 0, 0]

    async def test_a_claim_hands_out_at_most_its_limit(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1", "a-2", "a-3")
        assert await _claimed(outbox_store, limit=2) == [0, 1]

    async def test_published_rows_are_not_handed_out_again(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1", "a-2")
        await _publish_all(outbox_store)
        assert await _claimed(outbox_store) == []

    async def test_a_claim_that_ends_in_an_error_records_nothing_and_releases_its_rows(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1")

        async def crash() -> None:
            async with outbox_store.claim(limit=10, now=NOW) as claim:
                await claim.mark_published([claim.entries[0].id], at=NOW)
                raise _Abandon

        with pytest.raises(_Abandon):
            await crash()
        assert await _claimed(outbox_store) == [0]

    async def test_a_failure_counts_the_attempt_and_keeps_the_error_and_next_attempt(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1")
        later = NOW + timedelta(seconds=30)
        await _fail(outbox_store, next_at=later, dead=False)
        async with outbox_store.claim(limit=10, now=later) as claim:
            (entry,) = claim.entries
        assert (entry.attempts, entry.last_error, entry.dead) == (1, "refused", False)
        assert entry.next_attempt_at == later

    async def test_refusals_are_counted_apart_from_attempts_made_during_outages(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1")
        await _fail(outbox_store, next_at=NOW, dead=False, refused=False)
        await _fail(outbox_store, next_at=NOW, dead=False, refused=False)
        await _fail(outbox_store, next_at=NOW, dead=False, refused=True)
        async with outbox_store.claim(limit=10, now=NOW) as claim:
            (entry,) = claim.entries
        assert (entry.attempts, entry.refusals) == (3, 1)

    async def test_a_requeued_row_starts_again_with_no_refusals(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1")
        await _fail(outbox_store, next_at=NOW, dead=True, refused=True)
        await outbox_store.requeue(None)
        async with outbox_store.claim(limit=10, now=NOW) as claim:
            (entry,) = claim.entries
        assert (entry.attempts, entry.refusals, entry.dead) == (0, 0, False)

    async def test_a_row_waiting_for_its_next_attempt_is_not_due(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1")
        await _fail(outbox_store, next_at=NOW + timedelta(seconds=30), dead=False)
        assert await _claimed(outbox_store) == []
        assert await _claimed(outbox_store, now=NOW + timedelta(seconds=31)) == [0]

    async def test_later_rows_of_an_aggregate_wait_for_an_earlier_row_in_backoff(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1", "a-1", "a-2")
        await _fail(outbox_store, next_at=NOW + timedelta(seconds=30), dead=False)
        assert await _claimed(outbox_store) == [2]

    async def test_a_dead_row_is_not_handed_out_and_no_longer_holds_its_aggregate_back(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1", "a-1")
        await _fail(outbox_store, next_at=NOW, dead=True)
        assert await _claimed(outbox_store) == [1]

    async def test_dead_rows_are_listed_and_inspected(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        messages = await add_outbox_rows(storage, "a-1", "a-2", "a-3")
        await _fail(outbox_store, next_at=NOW, dead=True, limit=2)
        dead = await outbox_store.read_dead()
        assert [entry.message for entry in dead] == messages[:2]
        assert [entry.message for entry in await outbox_store.read_dead(after_id=dead[0].id)] == [
            messages[1]
        ]
        loaded = await outbox_store.load_entry(dead[0].id)
        assert loaded is not None
        assert (loaded.dead, loaded.last_error) == (True, "refused")
        assert await outbox_store.load_entry(dead[-1].id + 1000) is None

    async def test_a_requeued_dead_row_is_due_again_with_no_attempts(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1", "a-2")
        await _fail(outbox_store, next_at=NOW + timedelta(days=1), dead=True, limit=2)
        first, _ = await outbox_store.read_dead()
        assert await outbox_store.requeue([first.id]) == 1
        async with outbox_store.claim(limit=10, now=NOW) as claim:
            assert [(e.id, e.attempts, e.dead) for e in claim.entries] == [(first.id, 0, False)]
        assert await outbox_store.requeue(None) == 1
        assert await _claimed(outbox_store) == [0, 1]

    async def test_requeue_leaves_live_rows_alone(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1")
        async with outbox_store.claim(limit=1, now=NOW) as claim:
            entry_id = claim.entries[0].id
        assert await outbox_store.requeue([entry_id]) == 0
        assert await outbox_store.requeue(None) == 0

    async def test_stats_count_the_backlog_its_oldest_row_and_the_dead(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        empty = await outbox_store.outbox_stats()
        assert (empty.backlog, empty.oldest_unpublished_at, empty.dead) == (0, None, 0)
        before = datetime.now(UTC) - timedelta(seconds=5)
        await add_outbox_rows(storage, "a-1", "a-2", "a-3")
        await _fail(outbox_store, next_at=NOW, dead=True)
        stats = await outbox_store.outbox_stats()
        assert (stats.backlog, stats.dead) == (2, 1)
        assert stats.oldest_unpublished_at is not None
        assert before <= stats.oldest_unpublished_at <= datetime.now(UTC) + timedelta(seconds=5)

    async def test_purge_deletes_only_rows_published_before_the_cutoff(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1")
        await _publish_all(outbox_store, at=NOW - timedelta(days=10))
        await add_outbox_rows(storage, "a-2", "a-3")
        async with outbox_store.claim(limit=1, now=NOW) as claim:
            await claim.mark_published([claim.entries[0].id], at=NOW)
            kept_id = claim.entries[0].id
        assert await outbox_store.purge_published(NOW - timedelta(days=1)) == 1
        assert await outbox_store.load_entry(kept_id) is not None
        assert (await outbox_store.outbox_stats()).backlog == 1

    async def test_rows_added_after_a_purge_get_new_ids(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1", "a-2")
        await _publish_all(outbox_store, at=NOW - timedelta(days=10))
        await outbox_store.purge_published(NOW)
        await add_outbox_rows(storage, "a-3")
        async with outbox_store.claim(limit=10, now=NOW) as claim:
            (entry,) = claim.entries
        assert await outbox_store.purge_published(NOW) == 0
        assert (await outbox_store.outbox_stats()).backlog == 1
        assert entry.message.aggregate_id == "a-3"


class CompetingRelaysContract:
    """Relays on one database share the work: for backends that run several at once."""

    async def test_competing_claims_never_share_a_row_nor_split_an_aggregates_order(
        self, storage: Storage, outbox_store: OutboxRelayStore
    ) -> None:
        await add_outbox_rows(storage, "a-1", "a-2", "a-1", "a-3")
        holding = asyncio.Event()
        release = asyncio.Event()

        async def first() -> list[int]:
            async with outbox_store.claim(limit=2, now=NOW) as claim:
                holding.set()
                await asyncio.wait_for(release.wait(), 10)
                return _payloads(claim.entries)

        task = asyncio.create_task(first())
        await asyncio.wait_for(holding.wait(), 10)
        try:
            second = await _claimed(outbox_store)
        finally:
            release.set()
        # The first holds rows 0 (a-1) and 1 (a-2); row 2 is a-1's next and must wait.
        assert await task == [0, 1]
        assert second == [3]
