"""The scheduled-messages contract: what every :class:`~eventfold.ports.ScheduleStore` does.

Subclass :class:`ScheduleStoreContract` and provide a ``storage`` fixture (a fresh
storage with its schema); override ``schedule_store`` for a store of your own.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from eventfold.adapters.scheduling import schedule_store_for
from eventfold.ports.scheduling import ScheduledMessage, ScheduleStore
from eventfold.ports.storage import Storage

__all__ = ["ScheduleStoreContract", "scheduled"]

NOW = datetime(2031, 3, 4, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def scheduled(
    schedule_id: str, *, due_in: timedelta = timedelta(0), key: str | None = "order-1"
) -> ScheduledMessage:
    """A message due ``due_in`` after the contract's fixed now."""
    return ScheduledMessage(
        schedule_id, uuid.uuid4(), "PaymentTimedOut", '{"order": 1}', NOW + due_in, key
    )


class ScheduleStoreContract:
    """Async tests every schedule store passes; subclasses provide ``storage``."""

    @pytest.fixture
    def storage(self) -> Storage:
        """A fresh storage with its schema; subclasses override this."""
        raise NotImplementedError

    @pytest.fixture
    def schedule_store(self, storage: Storage) -> ScheduleStore:
        """The store under test: eventfold's own for ``storage`` unless overridden."""
        return schedule_store_for(storage)

    async def _schedule(
        self, storage: Storage, store: ScheduleStore, *messages: ScheduledMessage
    ) -> None:
        async with storage.transaction() as session:
            await store.schedule(session, messages, now=NOW)

    async def _claim(
        self, store: ScheduleStore, *, at: datetime = NOW, owner: str = "w1"
    ) -> list[str]:
        claimed = await store.claim_due(now=at, until=at + LEASE, owner=owner, limit=100)
        return [c.message.schedule_id for c in claimed]

    async def test_a_scheduled_message_is_claimed_with_all_its_fields_once_it_is_due(
        self, storage: Storage, schedule_store: ScheduleStore
    ) -> None:
        message = scheduled("s-1", due_in=timedelta(minutes=15))
        await self._schedule(storage, schedule_store, message)
        assert await self._claim(schedule_store, at=NOW + timedelta(minutes=14)) == []
        claimed = await schedule_store.claim_due(
            now=NOW + timedelta(minutes=15), until=NOW + LEASE * 2, owner="w1", limit=10
        )
        assert [(c.message, c.attempt) for c in claimed] == [(message, 1)]

    async def test_a_message_scheduled_in_a_transaction_that_rolled_back_is_not_there(
        self, storage: Storage, schedule_store: ScheduleStore
    ) -> None:
        async def decide_then_fail() -> None:
            async with storage.transaction() as session:
                await schedule_store.schedule(session, [scheduled("s-1")], now=NOW)
                raise RuntimeError("the decision failed")

        with pytest.raises(RuntimeError):
            await decide_then_fail()
        assert await schedule_store.pending() == []
        assert await self._claim(schedule_store) == []

    async def test_scheduling_an_id_again_keeps_the_first_message(
        self, storage: Storage, schedule_store: ScheduleStore
    ) -> None:
        first = scheduled("s-1")
        await self._schedule(storage, schedule_store, first)
        await self._schedule(storage, schedule_store, scheduled("s-1", due_in=timedelta(hours=1)))
        assert await schedule_store.pending() == [first]

    async def test_due_messages_are_claimed_soonest_first_up_to_the_limit(
        self, storage: Storage, schedule_store: ScheduleStore
    ) -> None:
        late, early, middle = (scheduled(f"s-{n}", due_in=timedelta(seconds=-n)) for n in (1, 3, 2))
        await self._schedule(storage, schedule_store, late, early, middle)
        claimed = await schedule_store.claim_due(now=NOW, until=NOW + LEASE, owner="w1", limit=2)
        assert [c.message.schedule_id for c in claimed] == ["s-3", "s-2"]

    async def test_competing_workers_never_claim_the_same_message(
        self, storage: Storage, schedule_store: ScheduleStore
    ) -> None:
        messages = [scheduled(f"s-{n:03}") for n in range(60)]
        await self._schedule(storage, schedule_store, *messages)

        async def worker(owner: str) -> list[str]:
            taken: list[str] = []
            while batch := await self._claim(schedule_store, owner=owner):
                taken.extend(batch)
            return taken

        first, second, third = await asyncio.gather(worker("w1"), worker("w2"), worker("w3"))
        assert sorted(first + second + third) == [m.schedule_id for m in messages]

    async def test_a_claim_not_recorded_fired_is_claimed_again_once_its_lease_passed(
        self, storage: Storage, schedule_store: ScheduleStore
    ) -> None:
        await self._schedule(storage, schedule_store, scheduled("s-1"))
        assert await self._claim(schedule_store, owner="dies") == ["s-1"]
        assert await self._claim(schedule_store, at=NOW + LEASE / 2, owner="w2") == []
        later = NOW + LEASE + timedelta(seconds=1)
        claimed = await schedule_store.claim_due(
            now=later, until=later + LEASE, owner="w2", limit=5
        )
        assert [(c.message.schedule_id, c.attempt) for c in claimed] == [("s-1", 2)]
        assert not await schedule_store.mark_fired("s-1", owner="dies", at=later)
        assert await schedule_store.mark_fired("s-1", owner="w2", at=later)

    async def test_a_fired_message_is_never_claimed_again_nor_scheduled_again(
        self, storage: Storage, schedule_store: ScheduleStore
    ) -> None:
        await self._schedule(storage, schedule_store, scheduled("s-1"))
        await self._claim(schedule_store)
        assert await schedule_store.mark_fired("s-1", owner="w1", at=NOW)
        await self._schedule(storage, schedule_store, scheduled("s-1"))
        assert await self._claim(schedule_store, at=NOW + LEASE * 3) == []
        assert await schedule_store.pending() == []

    async def test_a_failed_delivery_is_due_again_at_its_retry_time(
        self, storage: Storage, schedule_store: ScheduleStore
    ) -> None:
        await self._schedule(storage, schedule_store, scheduled("s-1"))
        await self._claim(schedule_store)
        retry_at = NOW + timedelta(seconds=5)
        await schedule_store.record_failure("s-1", owner="w1", error="boom", retry_at=retry_at)
        assert await self._claim(schedule_store, at=NOW + timedelta(seconds=4), owner="w2") == []
        assert await self._claim(schedule_store, at=NOW + timedelta(seconds=6), owner="w2") == [
            "s-1"
        ]

    async def test_cancelling_a_key_removes_its_pending_messages_only(
        self, storage: Storage, schedule_store: ScheduleStore
    ) -> None:
        mine, fired, other = scheduled("s-1"), scheduled("s-2"), scheduled("s-3", key="order-2")
        await self._schedule(storage, schedule_store, mine, fired, other)
        await schedule_store.claim_due(now=NOW, until=NOW + LEASE, owner="w1", limit=100)
        await schedule_store.mark_fired("s-2", owner="w1", at=NOW)
        async with storage.transaction() as session:
            assert await schedule_store.cancel(session, key="order-1") == 1
        assert await schedule_store.pending() == [other]

    async def test_a_message_can_be_cancelled_by_id_in_the_deciding_transaction(
        self, storage: Storage, schedule_store: ScheduleStore
    ) -> None:
        kept = scheduled("s-2")
        await self._schedule(storage, schedule_store, scheduled("s-1"), kept)
        async with storage.transaction() as session:
            assert await schedule_store.cancel(session, schedule_ids=["s-1"]) == 1
        assert await schedule_store.pending(key="order-1") == [kept]
