"""The scheduler: fires scheduled messages when they are due, at least once, across crashes.

Messages are scheduled with :func:`scheduled_message` in the transaction of the
decision that made them (:class:`~eventfold.ports.ScheduleWriter`). A
:class:`Scheduler` worker claims due messages for a lease, hands each to its handler
and records it fired. Several workers compete safely: a message is held by one claim
at a time (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the single write lock on SQLite).

- **At least once.** A worker that dies after its handler ran but before the message
  was recorded fired leaves its claim to expire; the next claim delivers it again.
  Handlers deduplicate by ``message.message_id``: :class:`ScheduledInbox` applies a
  handler once per (message id, handler name) in the handler's own transaction.
- **Failures back off.** A handler that raises records the error and the message is
  due again after ``RetryPolicy.delay(attempt)``; it is never dropped.
- **Outages are waited out.** An unreachable database (``StoreUnavailableError``) stops
  the loop only for a backoff, never for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from eventfold.application.messaging.outbox import RetryPolicy
from eventfold.application.persistence.unit_of_work import Clock, utc_now
from eventfold.errors import StoreUnavailableError
from eventfold.ports.scheduling import ClaimedMessage, ScheduleClaimer, ScheduledMessage
from eventfold.ports.storage import Storage, StorageSession

__all__ = [
    "ScheduledHandler",
    "ScheduledInbox",
    "Scheduler",
    "scheduled_message",
]

_log = logging.getLogger("eventfold.scheduler")

ScheduledHandler = Callable[[ClaimedMessage], Awaitable[None]]
"""Delivers one due message; returning records it fired, raising retries it later."""

_DEFAULT_RETRY = RetryPolicy(max_attempts=0, initial=1.0, maximum=300.0, jitter=1.0)
_NAMESPACE = uuid.UUID("5d6c1f8e-7a4b-4d51-9f0e-2b7f6c0a9e31")


def scheduled_message(
    schedule_id: str,
    name: str,
    payload: Any,
    *,
    due_at: datetime,
    key: str | None = None,
) -> ScheduledMessage:
    """A message ``name`` with JSON-able ``payload`` due at ``due_at``.

    ``schedule_id`` names it for good ("order-42/payment-timeout"): scheduling it again
    is a no-op, and its ``message_id`` is derived from it, so every delivery of it
    carries the same id for the inbox to deduplicate.
    """
    return ScheduledMessage(
        schedule_id=schedule_id,
        message_id=uuid.uuid5(_NAMESPACE, schedule_id),
        name=name,
        payload=json.dumps(payload),
        due_at=due_at,
        key=key,
    )


class Scheduler:
    """A worker that claims due messages, delivers them and records them fired."""

    def __init__(
        self,
        store: ScheduleClaimer,
        handler: ScheduledHandler,
        *,
        lease: timedelta = timedelta(minutes=1),
        batch_size: int = 50,
        poll_interval: float = 0.5,
        retry: RetryPolicy = _DEFAULT_RETRY,
        clock: Clock = utc_now,
        owner: str | None = None,
    ) -> None:
        """``lease`` must outlast a batch's deliveries: a claim older than that is taken as
        abandoned by a dead worker, and its messages are delivered again."""
        self._store = store
        self._handler = handler
        self._lease = lease
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._retry = retry
        self._clock = clock
        self.owner = owner or f"scheduler-{uuid.uuid4().hex[:12]}"
        self._stopping = asyncio.Event()

    async def fire_due(self) -> int:
        """Claim one batch of due messages and deliver it; how many were claimed."""
        now = self._clock()
        claimed = await self._store.claim_due(
            now=now, until=now + self._lease, owner=self.owner, limit=self._batch_size
        )
        for message in claimed:
            await self._deliver(message)
        return len(claimed)

    async def run(self) -> None:
        """Fire due messages until :meth:`stop`; an unreachable database is waited out."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(StoreUnavailableError),
            wait=wait_exponential(multiplier=0.1, max=10),
            before_sleep=lambda state: _log.warning(
                "scheduler %s waits for its database: %s", self.owner, state.outcome
            ),
        )
        async for attempt in retrying:
            with attempt:
                await self._loop()

    async def stop(self) -> None:
        """Finish the delivery in hand, then stop."""
        self._stopping.set()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            if await self.fire_due() >= self._batch_size:
                continue  # more may be due already
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._poll_interval)

    async def _deliver(self, claimed: ClaimedMessage) -> None:
        message = claimed.message
        try:
            await self._handler(claimed)
        except Exception as exc:  # noqa: BLE001 - a failed delivery is retried later
            delay = self._retry.delay(claimed.attempt)
            _log.warning(
                "scheduled message %s (%s) attempt %d failed, again in %.1fs: %r",
                message.schedule_id,
                message.name,
                claimed.attempt,
                delay,
                exc,
            )
            retry_at = self._clock() + timedelta(seconds=delay)
            error = f"{type(exc).__name__}: {exc}"
            await self._store.record_failure(
                message.schedule_id, owner=self.owner, error=error, retry_at=retry_at
            )
            return
        if not await self._store.mark_fired(
            message.schedule_id, owner=self.owner, at=self._clock()
        ):
            _log.warning(
                "scheduled message %s was delivered after its claim expired", message.schedule_id
            )


@dataclass(frozen=True, slots=True)
class ScheduledInbox:
    """A :data:`ScheduledHandler` that applies ``handler`` once per message id.

    The inbox row ``(message id, name)`` and the handler's writes commit in one
    transaction: a message delivered again (a worker died before recording it fired)
    finds its row and is skipped.
    """

    storage: Storage
    name: str
    handler: Callable[[ClaimedMessage, StorageSession], Awaitable[None]]

    async def __call__(self, claimed: ClaimedMessage) -> None:
        """Apply the message unless this handler has applied it already."""
        async with self.storage.transaction() as session:
            if await session.mark_processed(claimed.message.message_id, self.name):
                await self.handler(claimed, session)
