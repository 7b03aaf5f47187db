"""NATS JetStream broker on nats-py: one stream, durable pull consumers, a dead-letter stream.

Layout, for a stream ``S`` and a subject prefix ``p``:

- stream ``S`` holds the subjects ``p.>``; a message goes to ``p.<event type name>`` with
  its event id as ``Nats-Msg-Id``, so JetStream drops a republished duplicate within
  its duplicate window.
- a group ``G`` is the durable pull consumer ``G`` on ``S`` with explicit acks. A
  group of one type filters on its subject; a group of several types reads ``p.>``
  and acknowledges the other types unseen (one filter per consumer before NATS 2.10).
- stream ``S_DEAD`` holds ``p_dead.>``; ``p_dead.G`` are the dead letters of ``G``.

Redelivery limit: the consumer counts ``num_delivered`` from the message's metadata.
After the last failed attempt it publishes the message to the dead-letter subject
(with the handler's error) and then acknowledges it. The JetStream consumer itself
redelivers without limit, so a message whose consumer died during its last attempt
is still dead-lettered (on arrival) instead of being dropped with only an advisory.
Connections do not reconnect by themselves: a publisher reconnects on its next call,
a subscription reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Collection, Iterator, Sequence

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.client import JetStreamContext
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from eventfold.adapters.consumer_tasks import end_consumer_task, report_consumer_failure
from eventfold.errors import BrokerUnavailableError, MessagingError, PublishError
from eventfold.ports.broker import (
    BrokerMessage,
    DeadLetter,
    Delivery,
    MessageHandler,
    check_group_name,
    dead_letter_headers,
)

__all__ = ["NatsBroker", "NatsSubscription", "create_nats_broker"]

_log = logging.getLogger("eventfold.brokers")
_NAME = "nats"
_FETCH_WAIT = 5.0
"""Seconds one pull request waits for messages before it is renewed."""


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn nats-py's errors into eventfold's."""
    try:
        yield
    except (nats.js.errors.APIError, nats.js.errors.NoStreamResponseError) as exc:
        raise PublishError(f"{_NAME} refused to {action}: {exc!r}") from exc
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise BrokerUnavailableError(_NAME, f"{action}: {exc!r}") from exc


async def _quiet(exc: Exception) -> None:
    # Connection errors surface as eventfold errors from the call that met them.
    _log.debug("nats client error: %r", exc)


async def _connect(url: str, connect_seconds: float) -> Client:
    with _translated("connect"):
        return await nats.connect(
            url,
            allow_reconnect=False,
            connect_timeout=max(1, int(connect_seconds)),
            # nats-py's first connect loops over its pool until attempts run out; 0 means
            # "forever" there, so allow one retry, without waiting.
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            error_cb=_quiet,
        )


def _from_nats(msg: Msg | nats.js.api.RawStreamMsg) -> BrokerMessage:
    return BrokerMessage.from_headers(dict(msg.headers or {}), (msg.data or b"").decode())


class _Layout:
    """Names of the streams and subjects, and their declaration."""

    def __init__(self, stream: str, prefix: str) -> None:
        self.stream = stream
        self.prefix = prefix
        self.dead_stream = f"{stream}_DEAD"

    def subject(self, type_name: str) -> str:
        return f"{self.prefix}.{type_name}"

    def dead_subject(self, group: str) -> str:
        return f"{self.prefix}_dead.{group}"

    async def declare(self, js: JetStreamContext) -> None:
        with _translated("declare the streams"):
            await js.add_stream(StreamConfig(name=self.stream, subjects=[f"{self.prefix}.>"]))
            await js.add_stream(
                StreamConfig(name=self.dead_stream, subjects=[f"{self.prefix}_dead.>"])
            )


class NatsSubscription:
    """A pull consumer of one group on its own connection; it reconnects after an outage."""

    def __init__(
        self,
        url: str,
        layout: _Layout,
        group: str,
        handler: MessageHandler,
        *,
        event_types: Collection[str] | None,
        max_deliveries: int,
        ack_wait: float,
        batch: int,
    ) -> None:
        self._url = url
        self._layout = layout
        self._group = group
        self._handler = handler
        self._event_types = None if event_types is None else frozenset(event_types)
        self._max_deliveries = max_deliveries
        self._ack_wait = ack_wait
        self._batch = batch
        self._nc: Client | None = None
        self._handling = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def group(self) -> str:
        """The group this subscription consumes for."""
        return self._group

    async def start(self) -> None:
        """Create the durable consumer and start pulling."""
        pull = await self._open()
        self._task = asyncio.create_task(self._run(pull), name=f"eventfold-nats-{self._group}")
        self._task.add_done_callback(report_consumer_failure)

    async def stop(self) -> None:
        """Finish the delivery in hand, then stop and close the connection."""
        self._stopping = True
        try:
            await end_consumer_task(self._task, handling=self._handling)
        finally:
            # A consumer that died of an error still gives its connection back.
            await self._close()

    def _filter(self) -> str:
        if self._event_types is not None and len(self._event_types) == 1:
            return self._layout.subject(next(iter(self._event_types)))
        return f"{self._layout.prefix}.>"

    async def _open(self) -> JetStreamContext.PullSubscription:
        await self._close()
        self._nc = await _connect(self._url, self._ack_wait)
        js = self._nc.jetstream()
        await self._layout.declare(js)
        config = ConsumerConfig(
            durable_name=self._group,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,
            ack_wait=self._ack_wait,
            max_deliver=-1,
            filter_subject=self._filter(),
        )
        with _translated("create a consumer"):
            return await js.pull_subscribe(
                self._filter(), durable=self._group, stream=self._layout.stream, config=config
            )

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await nc.flush(timeout=1)  # acknowledgements still buffered
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await nc.close()

    async def _run(self, pull: JetStreamContext.PullSubscription) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(BrokerUnavailableError),
            wait=wait_exponential(multiplier=0.1, max=5),
            before_sleep=lambda state: _log.warning(
                "consumer %s lost NATS, reconnecting: %s", self._group, state.outcome
            ),
        )
        async for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    pull = await self._open()
                await self._consume(pull)

    async def _consume(self, pull: JetStreamContext.PullSubscription) -> None:
        while not self._stopping:
            with _translated("fetch"):
                try:
                    batch = await pull.fetch(self._batch, timeout=_FETCH_WAIT)
                except nats.errors.TimeoutError:
                    continue  # nothing arrived while the pull request was open
            self._handling = True
            try:
                for msg in batch:
                    await self._handle(msg)
            finally:
                self._handling = False

    async def _handle(self, msg: Msg) -> None:
        attempt = msg.metadata.num_delivered or 1
        try:
            message = _from_nats(msg)
        except MessagingError as exc:
            await self._bury(msg, attempt, repr(exc))
            return
        if self._event_types is not None and message.type_name not in self._event_types:
            await self._settle(msg.ack())
        elif attempt > self._max_deliveries:
            await self._bury(msg, attempt - 1, "the consumer stopped during the last attempt")
        else:
            await self._deliver(msg, Delivery(message=message, attempt=attempt, group=self._group))

    async def _deliver(self, msg: Msg, delivery: Delivery) -> None:
        try:
            await self._handler(delivery)
        except Exception as exc:  # noqa: BLE001 - any handler failure means "deliver again"
            if delivery.attempt >= self._max_deliveries:
                await self._bury(msg, delivery.attempt, repr(exc))
            else:
                await self._settle(msg.nak())
        else:
            await self._settle(msg.ack())

    async def _bury(self, msg: Msg, attempts: int, reason: str) -> None:
        """Publish a message to the group's dead letters with why, then acknowledge it."""
        if self._nc is None:  # the connection went away mid-delivery: redelivered later
            raise BrokerUnavailableError(_NAME, "the consumer connection closed")
        event_id = (msg.headers or {}).get("eventfold-event-id", msg.reply)
        headers = {
            **(msg.headers or {}),
            **dead_letter_headers(reason, attempts),
            "Nats-Msg-Id": f"{self._group}:{event_id}",
        }
        with _translated("dead-letter a message"):
            await self._nc.jetstream().publish(
                self._layout.dead_subject(self._group), msg.data, headers=headers
            )
        await self._settle(msg.ack())

    @staticmethod
    async def _settle(acknowledgement: Awaitable[None]) -> None:
        with _translated("acknowledge"):
            await acknowledgement


class NatsBroker:
    """Publishes to a JetStream stream with acks; consumes with durable pull consumers.

    Nothing connects until the first call. A publisher that lost its connection
    reconnects on the next publish.
    """

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        subject_prefix: str,
        ack_wait: float,
        publish_timeout: float,
        batch: int,
    ) -> None:
        self._url = url
        self._layout = _Layout(stream, subject_prefix)
        self._ack_wait = ack_wait
        self._publish_timeout = publish_timeout
        self._batch = batch
        self._nc: Client | None = None
        self._connecting = asyncio.Lock()
        self._subscriptions: list[NatsSubscription] = []

    @property
    def name(self) -> str:
        """``"nats"``."""
        return _NAME

    async def publish(self, messages: Sequence[BrokerMessage]) -> None:
        """Publish in order and wait until JetStream acknowledged every message."""
        if not messages:
            return
        js = await self._jetstream()
        try:
            with _translated("publish"):
                # Sent one after another (in order), acknowledgements awaited together.
                async with asyncio.timeout(self._publish_timeout):
                    acks = [
                        await js.publish_async(
                            self._layout.subject(message.type_name),
                            message.data.encode(),
                            headers={**message.to_headers(), "Nats-Msg-Id": str(message.event_id)},
                        )
                        for message in messages
                    ]
                    await asyncio.gather(*acks)
        except BrokerUnavailableError:
            await self._drop_connection()
            raise

    async def subscribe(
        self,
        group: str,
        handler: MessageHandler,
        *,
        event_types: Collection[str] | None = None,
        max_deliveries: int = 5,
    ) -> NatsSubscription:
        """Consume ``event_types`` (every type when ``None``) for ``group`` until stopped."""
        subscription = NatsSubscription(
            self._url,
            self._layout,
            check_group_name(group),
            handler,
            event_types=event_types,
            max_deliveries=max_deliveries,
            ack_wait=self._ack_wait,
            batch=self._batch,
        )
        await subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    async def read_dead_letters(self, group: str, *, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``group``, oldest first."""
        js = await self._jetstream()
        letters: list[DeadLetter] = []
        sequence = 1
        with _translated("read dead letters"):
            while len(letters) < limit:
                try:
                    raw = await js.get_msg(
                        self._layout.dead_stream,
                        seq=sequence,
                        subject=self._layout.dead_subject(group),
                        next=True,
                    )
                except nats.js.errors.NotFoundError:
                    break
                letters.append(_dead_letter(raw, group))
                sequence = (raw.seq or sequence) + 1
        return letters

    async def close(self) -> None:
        """Stop every subscription and close the publishing connection."""
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions.clear()
        await self._drop_connection()

    async def destroy(self) -> None:
        """Delete both streams, with their consumers and messages."""
        js = await self._jetstream()
        with _translated("delete the streams"):
            for stream in (self._layout.stream, self._layout.dead_stream):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_stream(stream)

    async def _jetstream(self) -> JetStreamContext:
        async with self._connecting:
            if self._nc is None or not self._nc.is_connected:
                await self._drop_connection()
                nc = await _connect(self._url, self._publish_timeout)
                try:
                    await self._layout.declare(nc.jetstream())
                except MessagingError:
                    await nc.close()
                    raise
                self._nc = nc
            return self._nc.jetstream()

    async def _drop_connection(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await nc.close()


def _dead_letter(raw: nats.js.api.RawStreamMsg, group: str) -> DeadLetter:
    return DeadLetter.from_headers(_from_nats(raw), group, raw.headers or {})


def create_nats_broker(
    url: str,
    *,
    stream: str = "EVENTFOLD",
    subject_prefix: str = "eventfold",
    ack_wait: float = 30.0,
    publish_timeout: float = 10.0,
    batch: int = 32,
) -> NatsBroker:
    """A JetStream broker over ``stream`` (subjects ``subject_prefix.>``); nothing connects yet.

    ``ack_wait`` is how long a handler may take before JetStream redelivers its message;
    ``batch`` is how many messages one pull request fetches.
    """
    return NatsBroker(
        url,
        stream=stream,
        subject_prefix=subject_prefix,
        ack_wait=ack_wait,
        publish_timeout=publish_timeout,
        batch=batch,
    )
