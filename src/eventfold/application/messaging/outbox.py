"""The outbox relay: publishes committed outbox rows to a broker, at least once.

Each pass claims a batch of due rows, publishes it through a
:class:`~eventfold.ports.MessagePublisher`, and records every row as published or
failed before the claim ends. A failed row waits an exponentially growing, jittered
delay (tenacity's ``wait_exponential`` plus ``wait_random``) before its next attempt.

- The broker refuses a message (or the publisher raises for it): the batch is retried
  one message at a time to find it; after ``max_attempts`` attempts it is dead, and
  waits for ``eventfold outbox requeue``. While it is retried, later rows of its
  aggregate wait for it; once it is dead they go on, and a requeued row is published
  after them.
- The broker is unreachable: every row of the batch records the attempt and its
  backoff, and the relay itself waits with backoff before it tries again. Only
  refusals count towards ``max_attempts``: an outage delays events, it never drops them.
- The broker hangs or crawls: a claim's transaction stays open while its rows are
  published, so every broker call made for one claim shares one deadline,
  ``publish_timeout``; past it the batch counts as an outage (above), and the
  transaction ends.
- The database is unreachable (a cut or reset connection, a restart): the pass fails
  with ``StoreUnavailableError``, the claim's rows stay due, and the relay waits with
  backoff before it claims again.
- The relay dies mid-batch: nothing it had not recorded is lost; the rows are claimed
  again and published again. Consumers deduplicate by event id (see the inbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)
from tenacity.wait import wait_base

from eventfold.application.persistence.unit_of_work import Clock, utc_now
from eventfold.errors import BrokerUnavailableError, ConfigurationError, StoreUnavailableError
from eventfold.ports.broker import BrokerMessage, MessagePublisher
from eventfold.ports.outbox import OutboxClaim, OutboxRelayStore
from eventfold.ports.records import OutboxEntry
from eventfold.ports.telemetry import AttributeValue, Telemetry, active_telemetry

__all__ = ["OutboxMetrics", "OutboxRelay", "RetryPolicy"]

_log = logging.getLogger("eventfold.outbox")
_OUTAGES = (BrokerUnavailableError, StoreUnavailableError)
_ERROR_LENGTH = 2000
_RATE_WINDOW = 10.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how far apart a row is retried: ``initial * 2**n`` seconds, jittered."""

    max_attempts: int = 10
    initial: float = 0.5
    maximum: float = 60.0
    jitter: float = 1.0

    def wait(self) -> wait_base:
        """The tenacity wait strategy these numbers describe."""
        exponential = wait_exponential(multiplier=self.initial, max=self.maximum)
        return exponential + wait_random(0, self.jitter)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the ``attempt``-th failure (from 1), as :meth:`wait` does.

        A row's next attempt is a time stored in the database, for whichever relay claims
        it then; tenacity paces calls within one process, so the arithmetic is spelt out.
        """
        backoff: float = min(self.maximum, self.initial * 2.0 ** max(attempt - 1, 0))
        return backoff + random.uniform(0, self.jitter)  # noqa: S311 - jitter, not secrets


@dataclass(frozen=True, slots=True)
class OutboxMetrics:
    """How the outbox and this relay are doing."""

    backlog: int
    oldest_unpublished_age: timedelta | None
    dead_letters: int
    published_per_second: float
    published_total: int


AlertHook = Callable[[OutboxMetrics], Awaitable[None] | None]
"""Called when the oldest unpublished row is older than the relay's ``alert_after``."""


class _Rate:
    """Events per second over the last few seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()
        self.total = 0

    def add(self, count: int) -> None:
        self.total += count
        self._samples.append((time.monotonic(), count))

    def per_second(self) -> float:
        now = time.monotonic()
        while self._samples and self._samples[0][0] < now - _RATE_WINDOW:
            self._samples.popleft()
        if not self._samples:
            return 0.0
        span = max(now - self._samples[0][0], 1.0)
        return sum(count for _, count in self._samples) / span


def _sent_from(spans: ExitStack, telemetry: Telemetry, message: BrokerMessage) -> BrokerMessage:
    if message.traceparent is None:
        return message
    span = spans.enter_context(
        telemetry.span(
            f"send {message.type_name}",
            kind="producer",
            parent=message.traceparent,
            attributes={
                "messaging.operation.type": "send",
                "messaging.message.id": str(message.event_id),
                "messaging.message.conversation_id": message.correlation_id or "",
            },
        )
    )
    return dataclasses.replace(message, traceparent=span.traceparent() or message.traceparent)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_ERROR_LENGTH]


class OutboxRelay:
    """Moves outbox rows to a broker; ``run()`` until ``stop()``, or ``relay_once()``."""

    def __init__(
        self,
        store: OutboxRelayStore,
        publisher: MessagePublisher,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        retry: RetryPolicy | None = None,
        alert_after: timedelta | None = None,
        on_alert: AlertHook | None = None,
        check_interval: float = 10.0,
        publish_timeout: float = 10.0,
        clock: Clock = utc_now,
    ) -> None:
        if publish_timeout <= 0:
            msg = f"publish_timeout must be a positive number of seconds, got {publish_timeout}"
            raise ConfigurationError(msg)
        self._store = store
        self._publish_timeout = publish_timeout
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._retry = retry or RetryPolicy()
        self._alert_after = alert_after
        self._on_alert = on_alert
        self._check_interval = check_interval
        self._clock = clock
        self._rate = _Rate()
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[object] | None = None
        self._next_check = 0.0

    # -- one pass ----------------------------------------------------------------------

    async def relay_once(self) -> int:
        """Publish one batch of due rows; return how many were published.

        Raises :class:`BrokerUnavailableError` (after recording the attempt on every row
        of the batch) when the broker cannot be reached.
        """
        now = self._clock()
        telemetry = active_telemetry()
        async with self._store.claim(limit=self._batch_size, now=now) as claim:
            if telemetry is None:
                published, outage = await self._publish(claim, now)
            else:
                published, outage = await self._publish_traced(telemetry, claim, now)
        self._rate.add(published)
        if outage is not None:
            raise outage
        return published

    async def _publish(
        self,
        claim: OutboxClaim,
        now: datetime,
        wrap: Callable[[list[BrokerMessage]], list[BrokerMessage]] | None = None,
    ) -> tuple[int, BrokerUnavailableError | None]:
        entries = list(claim.entries)
        if not entries:
            return 0, None
        messages = [BrokerMessage.from_outbox(e.message) for e in entries]
        # The claim's transaction stays open while the broker is called: every call made
        # for this claim shares one deadline, so that no broker that hangs or crawls keeps
        # the transaction (and its row locks) open for longer than publish_timeout.
        deadline = asyncio.get_running_loop().time() + self._publish_timeout
        try:
            await self._send(messages if wrap is None else wrap(messages), deadline)
        except BrokerUnavailableError as exc:
            await self._record_outage(claim, entries, exc, now)
            return 0, exc
        except Exception:  # noqa: BLE001 - some message was refused: find which, one by one
            return await self._publish_one_by_one(claim, entries, now, deadline)
        await claim.mark_published([entry.id for entry in entries], at=self._clock())
        return len(entries), None

    async def _publish_traced(
        self, telemetry: Telemetry, claim: OutboxClaim, now: datetime
    ) -> tuple[int, BrokerUnavailableError | None]:
        """``_publish`` in a batch span, each message sent from a span in its own trace."""
        entries = claim.entries
        links = [e.message.traceparent for e in entries if e.message.traceparent]
        attributes: dict[str, AttributeValue] = {
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.batch.message_count": len(entries),
        }
        with ExitStack() as spans:

            def traced(messages: list[BrokerMessage]) -> list[BrokerMessage]:
                # A span per message, child of the request that recorded it: the message
                # carries this span's context, so its consumer continues the same trace.
                return [_sent_from(spans, telemetry, message) for message in messages]

            batch = spans.enter_context(
                telemetry.span(
                    "publish outbox", kind="producer", attributes=attributes, links=links
                )
            )
            published, outage = await self._publish(claim, now, traced)
            if outage is not None:
                batch.set_error(str(outage))
        telemetry.add("eventfold.outbox.published", published)
        return published, outage

    async def _send(self, messages: list[BrokerMessage], deadline: float) -> None:
        """Publish ``messages``; a broker still busy at ``deadline`` counts as unreachable."""
        try:
            async with asyncio.timeout_at(deadline):
                await self._publisher.publish(messages)
        except TimeoutError as exc:
            reason = (
                "publishing took longer than the relay's publish_timeout of "
                f"{self._publish_timeout:g}s"
            )
            raise BrokerUnavailableError("broker", reason) from exc

    async def _publish_one_by_one(
        self,
        claim: OutboxClaim,
        entries: Sequence[OutboxEntry],
        now: datetime,
        deadline: float,
    ) -> tuple[int, BrokerUnavailableError | None]:
        published: list[int] = []
        failed: set[str] = set()
        outage: BrokerUnavailableError | None = None
        for index, entry in enumerate(entries):
            if entry.message.aggregate_id in failed:
                continue  # stays due: it goes out after the row that failed before it
            try:
                await self._send([BrokerMessage.from_outbox(entry.message)], deadline)
            except BrokerUnavailableError as exc:
                outage = exc
                await self._record_outage(claim, entries[index:], exc, now)
                break
            except Exception as exc:  # noqa: BLE001 - recorded on the row, never raised
                failed.add(entry.message.aggregate_id)
                await self._record_refusal(claim, entry, exc, now)
            else:
                published.append(entry.id)
        await claim.mark_published(published, at=self._clock())
        return len(published), outage

    async def _record_refusal(
        self, claim: OutboxClaim, entry: OutboxEntry, exc: Exception, now: datetime
    ) -> None:
        # Only refusals count towards the limit: attempts made while the broker was
        # unreachable say nothing about this message.
        refusals = entry.refusals + 1
        dead = refusals >= self._retry.max_attempts
        if dead:
            _log.error("outbox row %s is dead after %s refusals: %s", entry.id, refusals, exc)
        await claim.record_failure(
            entry.id,
            error=_describe(exc),
            next_attempt_at=self._next_attempt(now, entry.attempts + 1),
            dead=dead,
            refused=True,
        )

    async def _record_outage(
        self,
        claim: OutboxClaim,
        entries: Sequence[OutboxEntry],
        exc: BrokerUnavailableError,
        now: datetime,
    ) -> None:
        error = _describe(exc)
        for entry in entries:
            next_attempt_at = self._next_attempt(now, entry.attempts + 1)
            await claim.record_failure(
                entry.id, error=error, next_attempt_at=next_attempt_at, dead=False, refused=False
            )

    def _next_attempt(self, now: datetime, attempt: int) -> datetime:
        return now + timedelta(seconds=self._retry.delay(attempt))

    # -- running -----------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until :meth:`stop`; wait with backoff while the broker or database is down."""
        self._task = asyncio.current_task()
        self._stopping.clear()
        self._stopped.clear()
        try:
            while not self._stopping.is_set():
                published = await self._relay_retrying()
                await self._check_alert()
                if published < self._batch_size:
                    await self._pause(self._poll_interval)
        finally:
            self._stopped.set()

    async def _relay_retrying(self) -> int:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_OUTAGES),
            wait=self._retry.wait(),
            sleep=self._pause,
            before_sleep=_log_outage,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if self._stopping.is_set():
                    return 0
                return await self.relay_once()
        return 0  # pragma: no cover - tenacity either returns or raises above

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by :meth:`stop`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def stop(self, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109 - a grace period
        """Finish the batch in hand and return; past ``timeout``, release it and return."""
        self._stopping.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._stopped.wait()), timeout)
        except TimeoutError:
            # Cancelling rolls the claim back: its rows are due again for the next relay.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- metrics and alerts ------------------------------------------------------------

    @property
    def published_total(self) -> int:
        """Rows this relay has published since it was made."""
        return self._rate.total

    async def metrics(self) -> OutboxMetrics:
        """Backlog, oldest unpublished age, dead letters and this relay's publish rate."""
        stats = await self._store.outbox_stats()
        oldest = stats.oldest_unpublished_at
        age = None if oldest is None else max(self._clock() - oldest, timedelta(0))
        telemetry = active_telemetry()
        if telemetry is not None:
            telemetry.gauge("eventfold.outbox.backlog", stats.backlog)
            telemetry.gauge("eventfold.outbox.dead_letters", stats.dead)
        return OutboxMetrics(
            backlog=stats.backlog,
            oldest_unpublished_age=age,
            dead_letters=stats.dead,
            published_per_second=self._rate.per_second(),
            published_total=self._rate.total,
        )

    async def _check_alert(self) -> None:
        if self._alert_after is None or self._on_alert is None:
            return
        if time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + self._check_interval
        try:
            metrics = await self.metrics()
        except StoreUnavailableError:
            return  # the next pass waits for the database; alert once it answers
        age = metrics.oldest_unpublished_age
        if age is not None and age > self._alert_after:
            await self._alert(metrics)

    async def _alert(self, metrics: OutboxMetrics) -> None:
        assert self._on_alert is not None
        try:
            outcome = self._on_alert(metrics)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:  # noqa: BLE001 - whatever the hook raises
            # A broken alert hook must not stop the relay; the log shows it.
            _log.exception("the outbox alert hook failed")


def _log_outage(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    _log.warning("outbox relay: %s; retrying in %.1fs", error, wait)
