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

Order: a failed message is redelivered after the rest of the fetched ``batch``;
``keep_stream_order`` retries it in place instead (reporting it in progress so JetStream
does not redeliver it meanwhile). A requeued dead letter is published to its type's
subject with an ``eventfold-requeued-for`` header; other groups acknowledge it unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Iterator, Sequence
from uuid import UUID

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.client import JetStreamContext

from eventfold.adapters.consumer import BrokerConsumer, Received
from eventfold.errors import BrokerUnavailableError, MessagingError, PublishError
from eventfold.ports.broker import (
    REQUEUED_FOR_HEADER,
    BrokerMessage,
    DeadLetter,
    MessageHandler,
    check_group_name,
    dead_letter_headers,
    requeue_headers,
)

__all__ = ["NatsBroker", "NatsSubscription", "create_nats_broker"]

_log = logging.getLogger("eventfold.brokers")
_NAME = "nats"
_EVENT_ID = "eventfold-event-id"
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


class NatsSubscription(BrokerConsumer[Msg]):
    """A pull consumer of one group on its own connection; it reconnects after an outage."""

    broker_name = _NAME

    def __init__(
        self,
        url: str,
        layout: _Layout,
        group: str,
        handler: MessageHandler,
        *,
        event_types: Collection[str] | None,
        max_deliveries: int,
        keep_stream_order: bool,
        ack_wait: float,
        batch: int,
    ) -> None:
        super().__init__(
            group,
            handler,
            event_types=event_types,
            max_deliveries=max_deliveries,
            keep_stream_order=keep_stream_order,
        )
        self._url = url
        self._layout = layout
        self._ack_wait = ack_wait
        # Held messages (waiting out an outage, parked behind a failing one) are
        # reported in progress well before JetStream would redeliver them.
        self.keep_alive_every = ack_wait / 3
        self._batch = batch
        self._nc: Client | None = None
        self._pull: JetStreamContext.PullSubscription | None = None

    def _filter(self) -> str:
        if self._event_types is not None and len(self._event_types) == 1:
            return self._layout.subject(next(iter(self._event_types)))
        return f"{self._layout.prefix}.>"

    async def _connect(self) -> None:
        await self._disconnect()
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
            self._pull = await js.pull_subscribe(
                self._filter(), durable=self._group, stream=self._layout.stream, config=config
            )

    async def _disconnect(self) -> None:
        nc, self._nc, self._pull = self._nc, None, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await nc.flush(timeout=1)  # acknowledgements still buffered
            with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                await nc.close()

    async def _receive(self) -> list[Received[Msg]]:
        if self._pull is None:
            raise BrokerUnavailableError(_NAME, "the consumer is not connected")
        with _translated("fetch"):
            try:
                batch = await self._pull.fetch(self._batch, timeout=_FETCH_WAIT)
            except nats.errors.TimeoutError:
                return []  # nothing arrived while the pull request was open
        return [_received(msg) for msg in batch]

    async def _ack(self, raw: Msg) -> None:
        with _translated("acknowledge"):
            await raw.ack()

    async def _give_back(self, raw: Msg, attempt: int) -> None:
        with _translated("give a message back"):
            await raw.nak()

    async def _keep_alive(self, raw: Msg) -> None:
        with _translated("report progress"):
            await raw.in_progress()

    async def _bury(self, raw: Msg, attempts: int, reason: str) -> None:
        """Publish a message to the group's dead letters with why, then acknowledge it."""
        if self._nc is None:  # the connection went away mid-delivery: redelivered later
            raise BrokerUnavailableError(_NAME, "the consumer connection closed")
        # The stream sequence tells a message from its requeued copy, which may die again.
        headers = {
            **(raw.headers or {}),
            **dead_letter_headers(reason, attempts),
            "Nats-Msg-Id": f"{self._group}:{raw.metadata.sequence.stream}",
        }
        with _translated("dead-letter a message"):
            await self._nc.jetstream().publish(
                self._layout.dead_subject(self._group), raw.data, headers=headers
            )
            await raw.ack()


def _received(msg: Msg) -> Received[Msg]:
    attempt = msg.metadata.num_delivered or 1
    requeued_for = (msg.headers or {}).get(REQUEUED_FOR_HEADER)
    try:
        return Received(msg, attempt, _from_nats(msg), requeued_for=requeued_for)
    except MessagingError as exc:
        return Received(msg, attempt, None, repr(exc))


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
        keep_stream_order: bool = False,
    ) -> NatsSubscription:
        """Consume ``event_types`` (every type when ``None``) for ``group`` until stopped."""
        subscription = NatsSubscription(
            self._url,
            self._layout,
            check_group_name(group),
            handler,
            event_types=event_types,
            max_deliveries=max_deliveries,
            keep_stream_order=keep_stream_order,
            ack_wait=self._ack_wait,
            batch=self._batch,
        )
        await subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    async def read_dead_letters(self, group: str, *, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``group``, oldest first."""
        js = await self._jetstream()
        return [_dead_letter(raw, group) for raw in await self._dead(js, group, None, limit)]

    async def requeue_dead_letters(
        self, group: str, *, event_ids: Collection[UUID] | None = None
    ) -> int:
        """Publish dead letters (those of ``event_ids``, or all) again, for ``group`` only."""
        js = await self._jetstream()
        letters = await self._dead(js, group, event_ids)
        with _translated("requeue dead letters"):
            for raw in letters:
                headers = {
                    **requeue_headers(raw.headers or {}, group),
                    "Nats-Msg-Id": f"requeued:{group}:{raw.seq}",
                }
                type_name = headers.get("eventfold-type", "unknown")
                await js.publish(self._layout.subject(type_name), raw.data or b"", headers=headers)
                await js.delete_msg(self._layout.dead_stream, raw.seq or 0)
        return len(letters)

    async def purge_dead_letters(
        self, group: str, *, event_ids: Collection[UUID] | None = None
    ) -> int:
        """Delete dead letters (those of ``event_ids``, or all) of ``group``; how many."""
        js = await self._jetstream()
        letters = await self._dead(js, group, event_ids)
        with _translated("purge dead letters"):
            for raw in letters:
                await js.delete_msg(self._layout.dead_stream, raw.seq or 0)
        return len(letters)

    async def _dead(
        self,
        js: JetStreamContext,
        group: str,
        event_ids: Collection[UUID] | None,
        limit: int | None = None,
    ) -> list[nats.js.api.RawStreamMsg]:
        """The dead letters of ``group`` (those of ``event_ids``, or all), oldest first."""
        chosen = None if event_ids is None else {str(event_id) for event_id in event_ids}
        found: list[nats.js.api.RawStreamMsg] = []
        sequence = 1
        with _translated("read dead letters"):
            while limit is None or len(found) < limit:
                try:
                    raw = await js.get_msg(
                        self._layout.dead_stream,
                        seq=sequence,
                        subject=self._layout.dead_subject(group),
                        next=True,
                    )
                except nats.js.errors.NotFoundError:
                    return found
                if chosen is None or (raw.headers or {}).get(_EVENT_ID) in chosen:
                    found.append(raw)
                sequence = (raw.seq or sequence) + 1
        return found

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
