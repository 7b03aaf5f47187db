"""Scheduling ports: messages due later, written with the decision, fired by a worker.

A :class:`ScheduledMessage` is written in the transaction of the decision that made it
(a saga step's outcome, a process's new state), so a crash never loses a timeout nor
leaves one behind for a decision that rolled back. A scheduler worker claims due
messages (a lease: competing workers never hold the same one at once), delivers them
and records them fired. Delivery is at least once: a worker that dies after delivering
but before recording leaves its claim to expire, and the message is delivered again;
the receiver deduplicates by ``message_id`` (the inbox does).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from eventfold.ports.storage import StorageSession

__all__ = [
    "ClaimedMessage",
    "ScheduleClaimer",
    "ScheduleStore",
    "ScheduleWriter",
    "ScheduledMessage",
]


@dataclass(frozen=True, slots=True)
class ScheduledMessage:
    """A message to deliver at ``due_at``.

    ``schedule_id`` is unique: scheduling it again is a no-op, so a replayed decision
    schedules nothing twice. ``name`` says what the message is (the scheduler's handler
    dispatches on it), ``payload`` is JSON text, ``key`` groups messages for cancelling
    (a saga or process instance id).
    """

    schedule_id: str
    message_id: UUID
    name: str
    payload: str
    due_at: datetime
    key: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """A due message a worker claimed, with how many deliveries were started (from 1)."""

    message: ScheduledMessage
    attempt: int
    claimed_until: datetime


class ScheduleWriter(Protocol):
    """Schedules and cancels messages inside a caller's transaction."""

    async def schedule(
        self, session: StorageSession, messages: Sequence[ScheduledMessage], *, now: datetime
    ) -> None:
        """Add ``messages`` in ``session``'s transaction; ids already there stay as they are."""
        ...

    async def cancel(
        self,
        session: StorageSession,
        *,
        schedule_ids: Collection[str] | None = None,
        key: str | None = None,
    ) -> int:
        """Cancel messages not yet fired (by id, or all of ``key``) in ``session``; how many."""
        ...


class ScheduleClaimer(Protocol):
    """What a scheduler worker does, each call in a transaction of its own."""

    async def claim_due(
        self, *, now: datetime, until: datetime, owner: str, limit: int
    ) -> list[ClaimedMessage]:
        """Claim up to ``limit`` messages due at ``now`` and not claimed, until ``until``."""
        ...

    async def mark_fired(self, schedule_id: str, *, owner: str, at: datetime) -> bool:
        """Record a claimed message delivered; False if ``owner`` no longer held its claim."""
        ...

    async def record_failure(
        self, schedule_id: str, *, owner: str, error: str, retry_at: datetime
    ) -> None:
        """Record a failed delivery; the message is due again at ``retry_at``."""
        ...

    async def pending(self, *, key: str | None = None, limit: int = 100) -> list[ScheduledMessage]:
        """Messages not yet fired (of ``key``, or all), soonest due first."""
        ...


class ScheduleStore(ScheduleWriter, ScheduleClaimer, Protocol):
    """Scheduled messages on one storage."""
