"""One consumer for every broker: what to do with a delivery, written once.

A broker adapter subclasses :class:`BrokerConsumer` and supplies the few operations
that differ per broker (connect, receive a batch, acknowledge, give back, dead-letter,
keep a held message from timing out); everything a delivery goes through is here:

- messages of types the group did not ask for, or requeued for another group, are
  acknowledged unseen;
- a message whose headers do not parse, or that used up its tries while a consumer
  died, goes straight to the dead letters;
- an outage met by the handler (:class:`~eventfold.errors.StoreUnavailableError`,
  :class:`~eventfold.errors.BrokerUnavailableError`) is waited out with backoff and the
  handler is called again with the same attempt number: an outage never spends a try,
  only the handler's own errors do;
- a lost broker connection ends the batch in hand and the consumer reconnects with
  backoff (what it held goes back to the broker);
- with ``keep_stream_order``, a failing message is retried in place with backoff and
  the later messages of its stream (same aggregate type and id) wait behind it, while
  other streams go on; without it the message goes back to the broker, which may hand
  out messages it already gave this consumer first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
)

from eventfold.adapters.consumer_tasks import end_consumer_task, report_consumer_failure
from eventfold.errors import BrokerUnavailableError, StoreUnavailableError
from eventfold.ports.broker import BrokerMessage, Delivery, MessageHandler

__all__ = ["OUTAGES", "BrokerConsumer", "Received"]

_log = logging.getLogger("eventfold.brokers")

R = TypeVar("R")

OUTAGES: tuple[type[Exception], ...] = (StoreUnavailableError, BrokerUnavailableError)
"""Errors that mean "something the handler needs is unreachable": waited out, never counted."""

_OUTAGE_WAIT = wait_exponential(multiplier=0.05, max=5)
_RECONNECT_WAIT = wait_exponential(multiplier=0.1, max=5)
_FAILURE_FIRST_WAIT = 0.1
"""Seconds before a stream's failed head message is tried again; doubled each time, up to 5."""


@dataclass(frozen=True, slots=True)
class Received(Generic[R]):
    """A broker's message as the consumer got it.

    ``message`` is ``None`` when the headers did not parse (``problem`` says why);
    ``requeued_for`` names the group a requeued dead letter is meant for.
    """

    raw: R
    attempt: int
    message: BrokerMessage | None
    problem: str = ""
    requeued_for: str | None = None

    @property
    def stream(self) -> tuple[str, str] | None:
        """The stream the message belongs to: its aggregate type and id."""
        if self.message is None:
            return None
        return (self.message.aggregate_type, self.message.aggregate_id)


class _Failed(Exception):  # noqa: N818 - an outcome, not an error users see
    """The handler raised an error of its own."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


class _Abandoned(Exception):  # noqa: N818 - an outcome, not an error users see
    """The consumer is stopping while the handler waits out an outage."""


class BrokerConsumer(Generic[R]):
    """A running consumer of one group: the delivery rules, over a broker's primitives."""

    broker_name = "broker"
    keep_alive_every: float | None = None
    """Seconds between keep-alives of held messages; ``None`` when a broker needs none."""

    def __init__(
        self,
        group: str,
        handler: MessageHandler,
        *,
        event_types: Collection[str] | None,
        max_deliveries: int,
        keep_stream_order: bool,
    ) -> None:
        self._group = group
        self._handler = handler
        self._event_types = None if event_types is None else frozenset(event_types)
        self._max_deliveries = max_deliveries
        self._keep_stream_order = keep_stream_order
        self._stopping = False
        self._handling = False
        self._task: asyncio.Task[None] | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._held: dict[int, Received[R]] = {}
        self._lanes: dict[tuple[str, str], deque[Received[R]]] = {}
        self._lane_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._lane_handling: set[tuple[str, str]] = set()
        self._lost: BrokerUnavailableError | None = None

    # -- what a broker adapter provides -------------------------------------------------

    async def _connect(self) -> None:
        """Open (or open again) the connection and the group's consumer."""
        raise NotImplementedError

    async def _disconnect(self) -> None:
        """Close the connection; unsettled messages go back to the broker."""
        raise NotImplementedError

    async def _receive(self) -> Sequence[Received[R]]:
        """The next messages, waiting a while for some; empty when none came."""
        raise NotImplementedError

    async def _ack(self, raw: R) -> None:
        """Settle a message for good."""
        raise NotImplementedError

    async def _give_back(self, raw: R, attempt: int) -> None:
        """Hand a failed message back for another attempt."""
        raise NotImplementedError

    async def _bury(self, raw: R, attempts: int, reason: str) -> None:
        """Move a message to the group's dead letters with why, and settle it."""
        raise NotImplementedError

    async def _keep_alive(self, raw: R) -> None:
        """Tell the broker a held message is still being worked on."""

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def group(self) -> str:
        """The group this subscription consumes for."""
        return self._group

    async def start(self) -> None:
        """Connect and start consuming; returns once the consumer is ready."""
        await self._connect()
        prefix = f"eventfold-{self.broker_name}-{self._group}"
        self._task = asyncio.create_task(self._run(), name=prefix)
        self._task.add_done_callback(report_consumer_failure)
        if self.keep_alive_every is not None:
            self._keeper = asyncio.create_task(self._keep_held_alive(), name=f"{prefix}-alive")

    async def stop(self) -> None:
        """Finish the delivery in hand, then stop and close the connection."""
        self._stopping = True
        try:
            await end_consumer_task(self._task, handling=self._handling)
        finally:
            if self._keeper is not None:
                self._keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._keeper
            # A consumer that died of an error still gives its connection back.
            await self._disconnect()

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(BrokerUnavailableError),
            wait=_RECONNECT_WAIT,
            before_sleep=self._log_reconnect,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        await self._connect()
                    await self._consume()
        finally:
            await self._end_lanes()

    def _log_reconnect(self, state: RetryCallState) -> None:
        _log.warning(
            "consumer %s lost %s, reconnecting: %s",
            self._group,
            self.broker_name,
            state.outcome.exception() if state.outcome else None,
        )

    async def _consume(self) -> None:
        try:
            while not self._stopping:
                batch = await self._receive()
                for received in batch:
                    self._held[id(received)] = received
                self._raise_if_lost()
                if self._keep_stream_order:
                    for received in batch:
                        await self._route(received)
                    continue
                self._handling = True
                try:
                    for received in batch:
                        await self._handle(received)
                finally:
                    self._handling = False
        except BrokerUnavailableError:
            # What was held belongs to the lost connection: the broker hands it out again.
            await self._end_lanes()
            self._held.clear()
            raise

    def _raise_if_lost(self) -> None:
        lost, self._lost = self._lost, None
        if lost is not None:
            raise lost

    async def _handle(self, received: Received[R]) -> None:
        """Deliver one message in arrival order (no stream order kept)."""
        if await self._screened(received):
            return
        assert received.message is not None  # screened out otherwise
        delivery = Delivery(received.message, received.attempt, self._group)
        try:
            await self._attempt(received, delivery)
        except _Abandoned:
            return
        except _Failed as failed:
            if received.attempt >= self._max_deliveries:
                await self._bury(received.raw, received.attempt, repr(failed.error))
            else:
                await self._give_back(received.raw, received.attempt)
            self._held.pop(id(received), None)
            return
        await self._ack(received.raw)
        self._held.pop(id(received), None)

    async def _screened(self, received: Received[R]) -> bool:
        """Settle a message that must not reach the handler; whether it was one."""
        message = received.message
        if message is None:
            await self._bury(received.raw, received.attempt, received.problem)
        elif received.requeued_for not in (None, self._group) or (
            self._event_types is not None and message.type_name not in self._event_types
        ):
            await self._ack(received.raw)
        elif received.attempt > self._max_deliveries:
            reason = "the consumer stopped during the last attempt"
            await self._bury(received.raw, received.attempt - 1, reason)
        else:
            return False
        self._held.pop(id(received), None)
        return True

    async def _attempt(self, received: Received[R], delivery: Delivery) -> None:
        """Call the handler, waiting out outages; raise :class:`_Failed` if it failed."""
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(OUTAGES),
            wait=_OUTAGE_WAIT,
            stop=lambda _: self._stopping,
            before_sleep=self._log_outage,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._call(delivery)
        except OUTAGES as exc:
            # Stopping during an outage: the message stays unsettled and comes back later.
            _log.warning("consumer %s stops during an outage: %s", self._group, exc)
            raise _Abandoned from exc

    async def _call(self, delivery: Delivery) -> None:
        try:
            await self._handler(delivery)
        except OUTAGES:
            raise
        except Exception as exc:
            raise _Failed(exc) from exc

    def _log_outage(self, state: RetryCallState) -> None:
        _log.warning(
            "consumer %s waits out an outage (not counted as a failed try): %s",
            self._group,
            state.outcome.exception() if state.outcome else None,
        )

    # -- per-stream order ------------------------------------------------------------------

    async def _route(self, received: Received[R]) -> None:
        """Queue a message behind its stream's earlier ones; start the stream's lane."""
        if await self._screened(received):
            return
        stream = received.stream
        assert stream is not None  # a message that did not parse was screened out
        if stream in self._lanes:
            self._lanes[stream].append(received)
            return
        self._lanes[stream] = deque([received])
        self._lane_tasks[stream] = asyncio.create_task(
            self._lane(stream), name=f"eventfold-{self.broker_name}-{self._group}-lane"
        )

    async def _lane(self, stream: tuple[str, str]) -> None:
        waiting = self._lanes[stream]
        try:
            while waiting and not self._stopping:
                await self._in_order(waiting[0], stream)
                self._held.pop(id(waiting.popleft()), None)
        except BrokerUnavailableError as exc:
            self._lost = exc
        except _Abandoned:
            pass
        finally:
            if self._lanes.get(stream) is waiting:
                del self._lanes[stream]
                del self._lane_tasks[stream]

    async def _in_order(self, received: Received[R], stream: tuple[str, str]) -> None:
        """Deliver a stream's head message, retrying in place until it succeeds or dies."""
        assert received.message is not None
        attempt = received.attempt
        while True:
            self._lane_handling.add(stream)
            try:
                await self._attempt(received, Delivery(received.message, attempt, self._group))
            except _Failed as failed:
                if attempt >= self._max_deliveries:
                    await self._bury(received.raw, attempt, repr(failed.error))
                    return
            else:
                await self._ack(received.raw)
                return
            finally:
                self._lane_handling.discard(stream)
            if self._stopping:
                raise _Abandoned
            await asyncio.sleep(min(_FAILURE_FIRST_WAIT * 2 ** (attempt - received.attempt), 5.0))
            attempt += 1

    async def _end_lanes(self) -> None:
        """Let handlers in progress finish; stop the lanes that wait."""
        tasks = dict(self._lane_tasks)
        for stream, task in tasks.items():
            if stream not in self._lane_handling:
                task.cancel()
        # A cancelled wait leaves its messages unsettled: the broker gives them out again.
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        self._lanes.clear()
        self._lane_tasks.clear()

    async def _keep_held_alive(self) -> None:
        assert self.keep_alive_every is not None
        while True:
            await asyncio.sleep(self.keep_alive_every)
            for received in list(self._held.values()):
                try:
                    await self._keep_alive(received.raw)
                except BrokerUnavailableError as exc:
                    _log.debug("consumer %s could not keep a message: %s", self._group, exc)
