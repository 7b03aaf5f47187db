"""Scheduled messages in memory: each one a document of the session, so it commits with it.

Kept in the document collection ``eventfold.schedules`` of a
:class:`~eventfold.adapters.memory.MemoryStorage`: a message scheduled in a transaction
that rolls back is gone with it, exactly as a row would be. Claims are optimistic
document versions, so two workers in one process never hold one message at once.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from eventfold.application.readside.queries import QueryOptions
from eventfold.domain.specification import FieldSet
from eventfold.errors import ConcurrencyError
from eventfold.ports.records import DocumentRecord
from eventfold.ports.scheduling import ClaimedMessage, ScheduledMessage
from eventfold.ports.storage import Storage, StorageSession

__all__ = ["MemoryScheduleStore", "create_memory_schedule_store"]

COLLECTION = "eventfold.schedules"
_FIELDS = FieldSet("ScheduledMessage", {"schedule_id": str})


@dataclass(frozen=True, slots=True)
class _Row:
    message: ScheduledMessage
    attempts: int = 0
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    fired_at: datetime | None = None
    last_error: str | None = None
    version: int = 0

    def due(self, now: datetime) -> bool:
        free = self.claimed_until is None or self.claimed_until < now
        return self.fired_at is None and self.message.due_at <= now and free

    def encode(self) -> str:
        m = self.message
        return json.dumps(
            {
                "schedule_id": m.schedule_id,
                "message_id": str(m.message_id),
                "name": m.name,
                "payload": m.payload,
                "due_at": m.due_at.isoformat(),
                "key": m.key,
                "attempts": self.attempts,
                "claimed_by": self.claimed_by,
                "claimed_until": _text(self.claimed_until),
                "fired_at": _text(self.fired_at),
                "last_error": self.last_error,
            }
        )

    @classmethod
    def decode(cls, record: DocumentRecord) -> _Row:
        d: dict[str, Any] = json.loads(record.data)
        message = ScheduledMessage(
            d["schedule_id"],
            UUID(d["message_id"]),
            d["name"],
            d["payload"],
            datetime.fromisoformat(d["due_at"]),
            d["key"],
        )
        return cls(
            message,
            d["attempts"],
            d["claimed_by"],
            _time(d["claimed_until"]),
            _time(d["fired_at"]),
            d["last_error"],
            record.version,
        )


def _text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class MemoryScheduleStore:
    """:class:`~eventfold.ports.ScheduleStore` in a memory storage's documents."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def schedule(
        self, session: StorageSession, messages: Sequence[ScheduledMessage], *, now: datetime
    ) -> None:
        """Add ``messages`` in ``session``'s transaction; ids already there are kept."""
        for message in messages:
            if await session.load_document(COLLECTION, message.schedule_id) is None:
                row = _Row(message)
                await session.save_document(
                    COLLECTION, message.schedule_id, row.encode(), expected_version=0
                )

    async def cancel(
        self,
        session: StorageSession,
        *,
        schedule_ids: Collection[str] | None = None,
        key: str | None = None,
    ) -> int:
        """Cancel messages not yet fired (by id, or all of ``key``); how many."""
        cancelled = 0
        for row in await _rows(session):
            chosen = schedule_ids is None or row.message.schedule_id in schedule_ids
            if row.fired_at is None and chosen and (key is None or row.message.key == key):
                await session.delete_document(
                    COLLECTION, row.message.schedule_id, expected_version=row.version
                )
                cancelled += 1
        return cancelled

    async def claim_due(
        self, *, now: datetime, until: datetime, owner: str, limit: int
    ) -> list[ClaimedMessage]:
        """Claim up to ``limit`` due messages nobody holds, until ``until``."""
        claimed: list[ClaimedMessage] = []
        async with self._storage.transaction() as session:
            due = sorted(
                (row for row in await _rows(session) if row.due(now)),
                key=lambda row: (row.message.due_at, row.message.schedule_id),
            )
            for row in due[:limit]:
                taken = replace(
                    row, attempts=row.attempts + 1, claimed_by=owner, claimed_until=until
                )
                await _save(session, taken)
                claimed.append(ClaimedMessage(row.message, taken.attempts, until))
        return claimed

    async def mark_fired(self, schedule_id: str, *, owner: str, at: datetime) -> bool:
        """Record a claimed message delivered; False if ``owner`` lost its claim."""
        return await self._change(
            schedule_id,
            owner,
            lambda row: replace(
                row, fired_at=at, claimed_by=None, claimed_until=None, last_error=None
            ),
        )

    async def record_failure(
        self, schedule_id: str, *, owner: str, error: str, retry_at: datetime
    ) -> None:
        """Record a failed delivery; the message is due again at ``retry_at``."""
        await self._change(
            schedule_id,
            owner,
            lambda row: replace(row, claimed_until=retry_at, last_error=error[:2000]),
        )

    async def pending(self, *, key: str | None = None, limit: int = 100) -> list[ScheduledMessage]:
        """Messages not yet fired (of ``key``, or all), soonest due first."""
        async with self._storage.transaction() as session:
            rows = await _rows(session)
        chosen = [
            row.message
            for row in rows
            if row.fired_at is None and (key is None or row.message.key == key)
        ]
        return sorted(chosen, key=lambda m: (m.due_at, m.schedule_id))[:limit]

    async def _change(self, schedule_id: str, owner: str, change: Any) -> bool:
        async with self._storage.transaction() as session:
            record = await session.load_document(COLLECTION, schedule_id)
            if record is None:
                return False
            row = _Row.decode(record)
            if row.claimed_by != owner or row.fired_at is not None:
                return False
            try:
                await _save(session, change(row))
            except ConcurrencyError:
                return False
        return True


async def _rows(session: StorageSession) -> list[_Row]:
    search = session.search_documents(COLLECTION, QueryOptions(), _FIELDS)  # type: ignore[attr-defined]
    return [_Row.decode(record) async for record in search.stream()]


async def _save(session: StorageSession, row: _Row) -> None:
    await session.save_document(
        COLLECTION, row.message.schedule_id, row.encode(), expected_version=row.version
    )


def create_memory_schedule_store(storage: Storage) -> MemoryScheduleStore:
    """The schedule store of a memory storage."""
    return MemoryScheduleStore(storage)
