"""RabbitMQ broker on aio-pika: a durable topic exchange, one quorum queue per group.

Publishing writes a batch's AMQP frames (``wire``) in one piece on an aiormq channel
with publisher confirms, and waits for every confirm.

Topology, for an exchange named ``X`` and a group ``G``:

- ``X``: durable topic exchange; a message's routing key is its event type name.
- ``X.G``: durable quorum queue bound to ``X`` by each subscribed type (``#`` for all).
- ``X.dead``: durable direct exchange; ``X.G.dead``: the group's dead letters, bound by ``G``.

Redelivery limit: quorum queues count deliveries in ``x-delivery-count``, including
the ones a crashed consumer never acknowledged, so the count survives restarts and is
the attempt number a handler sees. The consumer dead-letters a message itself after its
last failed attempt (recording the handler's error), and ``x-delivery-limit`` makes the
broker dead-letter a message whose consumer keeps dying before it can. A group's
``max_deliveries`` is fixed when its queue is created. Messages a stopped consumer had
prefetched but not handled go back to the queue with their count raised.

Order: a failed message is requeued behind the messages the consumer already holds (up
to ``prefetch``); ``keep_stream_order`` retries it in place instead. A requeued dead
letter is published straight into ``X.G`` through the default exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection, Iterator, Sequence
from typing import Any, cast
from uuid import UUID

import aio_pika
import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractQueueIterator,
)
from aiormq.abc import ChannelFrame

from eventfold.adapters.consumer import BrokerConsumer, Received
from eventfold.adapters.rabbitmq.wire import publish_frames, short_string
from eventfold.errors import BrokerUnavailableError, MessagingError, PublishError
from eventfold.ports.broker import (
    DEAD_ATTEMPTS_HEADER,
    DEAD_REASON_HEADER,
    BrokerMessage,
    DeadLetter,
    MessageHandler,
    check_group_name,
    dead_letter_headers,
    requeue_headers,
)

__all__ = ["RabbitMQBroker", "RabbitMQSubscription", "create_rabbitmq_broker"]

_NAME = "rabbitmq"
_EVENT_ID = "eventfold-event-id"
# Errors that mean "the broker (or the way to it) is gone", as opposed to a refusal.
# aio-pika raises a bare RuntimeError for a channel whose connection has closed.
_UNREACHABLE = (OSError, TimeoutError, RuntimeError, aiormq.exceptions.ChannelInvalidStateError)


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn aio-pika's errors into eventfold's."""
    try:
        yield
    except aiormq.exceptions.AMQPConnectionError as exc:
        raise BrokerUnavailableError(_NAME, f"{action}: {exc!r}") from exc
    except _UNREACHABLE as exc:
        raise BrokerUnavailableError(_NAME, f"{action}: {exc!r}") from exc
    except aiormq.exceptions.AMQPError as exc:
        raise PublishError(f"{_NAME} refused to {action}: {exc!r}") from exc


def _from_amqp(incoming: AbstractIncomingMessage) -> BrokerMessage:
    headers = {key: str(value) for key, value in (incoming.headers or {}).items()}
    return BrokerMessage.from_headers(headers, incoming.body.decode())


class _Topology:
    """Names and declarations shared by the publisher and the consumers."""

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self.dead_exchange = f"{exchange}.dead"

    def queue(self, group: str) -> str:
        return f"{self.exchange}.{group}"

    def dead_queue(self, group: str) -> str:
        return f"{self.exchange}.{group}.dead"

    async def declare_exchanges(self, channel: AbstractChannel) -> AbstractExchange:
        await channel.declare_exchange(
            self.dead_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        return await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )

    async def declare_group(
        self,
        channel: AbstractChannel,
        group: str,
        event_types: Collection[str] | None,
        max_deliveries: int,
    ) -> AbstractQueue:
        dead = await channel.declare_queue(self.dead_queue(group), durable=True)
        await dead.bind(self.dead_exchange, routing_key=group)
        queue = await channel.declare_queue(
            self.queue(group),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": max_deliveries - 1,
                "x-dead-letter-exchange": self.dead_exchange,
                "x-dead-letter-routing-key": group,
                # at-least-once dead-lettering needs the queue to refuse, not drop, overflow.
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
        for routing_key in sorted(event_types) if event_types is not None else ["#"]:
            await queue.bind(self.exchange, routing_key=routing_key)
        return queue


class RabbitMQSubscription(BrokerConsumer[AbstractIncomingMessage]):
    """A consumer of one group on its own connection; it reconnects after an outage."""

    broker_name = _NAME

    def __init__(
        self,
        url: str,
        topology: _Topology,
        group: str,
        handler: MessageHandler,
        *,
        event_types: Collection[str] | None,
        max_deliveries: int,
        keep_stream_order: bool,
        prefetch: int,
    ) -> None:
        super().__init__(
            group,
            handler,
            event_types=None,  # the queue's bindings filter the types
            max_deliveries=max_deliveries,
            keep_stream_order=keep_stream_order,
        )
        self._url = url
        self._topology = topology
        self._event_types_bound = event_types
        self._prefetch = prefetch
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._iterator: AbstractQueueIterator | None = None

    async def _connect(self) -> None:
        await self._disconnect()
        with _translated("open a consumer"):
            self._connection = await aio_pika.connect(self._url, timeout=10)
            self._channel = await self._connection.channel()
            await self._channel.set_qos(prefetch_count=self._prefetch)
            await self._topology.declare_exchanges(self._channel)
            queue = await self._topology.declare_group(
                self._channel, self._group, self._event_types_bound, self._max_deliveries
            )
            self._iterator = queue.iterator()
            await self._iterator.consume()

    async def _disconnect(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._iterator = None
        if connection is not None:
            with contextlib.suppress(*_UNREACHABLE, aiormq.exceptions.AMQPError):
                await connection.close()

    async def _receive(self) -> list[Received[AbstractIncomingMessage]]:
        if self._iterator is None:
            raise BrokerUnavailableError(_NAME, "the consumer is not connected")
        with _translated("consume"):
            try:
                incoming = await self._iterator.__anext__()
            except StopAsyncIteration:
                # The iterator ends when its channel closed under it.
                raise BrokerUnavailableError(_NAME, "the consumer channel closed") from None
        attempt = int(str((incoming.headers or {}).get("x-delivery-count", 0))) + 1
        try:
            return [Received(incoming, attempt, _from_amqp(incoming))]
        except MessagingError as exc:
            return [Received(incoming, attempt, None, repr(exc))]

    async def _ack(self, raw: AbstractIncomingMessage) -> None:
        with _translated("acknowledge"):
            await raw.ack()

    async def _give_back(self, raw: AbstractIncomingMessage, attempt: int) -> None:
        with _translated("give a message back"):
            await raw.nack(requeue=True)

    async def _bury(self, raw: AbstractIncomingMessage, attempts: int, reason: str) -> None:
        """Move a message to the group's dead letters with why, then acknowledge it."""
        if self._channel is None:  # the connection went away mid-delivery: redelivered later
            raise BrokerUnavailableError(_NAME, "the consumer channel closed")
        with _translated("dead-letter a message"):
            dead_exchange = await self._channel.get_exchange(self._topology.dead_exchange)
            headers = {**(raw.headers or {}), **dead_letter_headers(reason, attempts)}
            await dead_exchange.publish(
                _copy(raw, headers), routing_key=self._group, mandatory=False
            )
            await raw.ack()


def _copy(incoming: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """A persistent copy of a received message with other headers."""
    return aio_pika.Message(
        body=incoming.body,
        headers=headers,
        content_type=incoming.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=incoming.message_id,
        correlation_id=incoming.correlation_id,
        type=incoming.type,
        app_id=incoming.app_id,
    )


class RabbitMQBroker:
    """Publishes to a topic exchange with publisher confirms; consumes with quorum queues.

    Nothing connects until the first call. A publisher that lost its connection
    reconnects on the next publish.
    """

    def __init__(self, url: str, *, exchange: str, prefetch: int, publish_timeout: float) -> None:
        self._url = url
        self._topology = _Topology(exchange)
        self._prefetch = prefetch
        self._publish_timeout = publish_timeout
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._connecting = asyncio.Lock()
        self._subscriptions: list[RabbitMQSubscription] = []
        self._groups: set[str] = set()

    @property
    def name(self) -> str:
        """``"rabbitmq"``."""
        return _NAME

    async def publish(self, messages: Sequence[BrokerMessage]) -> None:
        """Publish in order and wait until RabbitMQ confirmed every message."""
        if not messages:
            return
        publishing = await self._ready_channel()
        try:
            with _translated("publish"):
                async with asyncio.timeout(self._publish_timeout):
                    # The concrete aiormq channel, whose confirmations we register.
                    channel = cast("aiormq.Channel", await publishing.get_underlay_channel())
                    confirms = await self._send(channel, messages)
                    await asyncio.gather(*confirms)
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
    ) -> RabbitMQSubscription:
        """Consume ``event_types`` (every type when ``None``) for ``group`` until stopped."""
        subscription = RabbitMQSubscription(
            self._url,
            self._topology,
            check_group_name(group),
            handler,
            event_types=event_types,
            max_deliveries=max_deliveries,
            keep_stream_order=keep_stream_order,
            prefetch=self._prefetch,
        )
        self._groups.add(group)
        await subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    async def read_dead_letters(self, group: str, *, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``group``, oldest first, left in their queue."""
        connection = await self._ready_connection()
        with _translated("read dead letters"):
            # Fetched without acknowledgement; closing the channel puts them all back.
            async with connection.channel() as channel:
                try:
                    queue = await channel.declare_queue(
                        self._topology.dead_queue(group), passive=True
                    )
                except aiormq.exceptions.ChannelNotFoundEntity:
                    return []
                return await _peek(queue, group, limit)

    async def requeue_dead_letters(
        self, group: str, *, event_ids: Collection[UUID] | None = None
    ) -> int:
        """Give dead letters (those of ``event_ids``, or all) back to ``group``'s queue only."""
        return await self._take_dead(group, event_ids, requeue=True)

    async def purge_dead_letters(
        self, group: str, *, event_ids: Collection[UUID] | None = None
    ) -> int:
        """Delete dead letters (those of ``event_ids``, or all) of ``group``; how many."""
        return await self._take_dead(group, event_ids, requeue=False)

    async def _take_dead(
        self, group: str, event_ids: Collection[UUID] | None, *, requeue: bool
    ) -> int:
        connection = await self._ready_connection()
        chosen = None if event_ids is None else {str(event_id) for event_id in event_ids}
        taken = 0
        with _translated("requeue dead letters" if requeue else "purge dead letters"):
            # Letters not chosen stay unacknowledged; closing the channel puts them back
            # in their place. A chosen one is acknowledged only once its copy is confirmed.
            async with connection.channel(publisher_confirms=True) as channel:
                try:
                    queue = await channel.declare_queue(
                        self._topology.dead_queue(group), passive=True
                    )
                except aiormq.exceptions.ChannelNotFoundEntity:
                    return 0
                while (incoming := await queue.get(no_ack=False, fail=False)) is not None:
                    headers = incoming.headers or {}
                    if chosen is not None and str(headers.get(_EVENT_ID)) not in chosen:
                        continue
                    if requeue:
                        copy = _copy(incoming, requeue_headers(headers, group))
                        # The default exchange routes by queue name: to this group alone.
                        await channel.default_exchange.publish(
                            copy, routing_key=self._topology.queue(group)
                        )
                    await incoming.ack()
                    taken += 1
        return taken

    async def close(self) -> None:
        """Stop every subscription and close the publishing connection."""
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions.clear()
        await self._drop_connection()

    async def destroy(self) -> None:
        """Delete the exchanges and every group queue this broker object declared."""
        connection = await self._ready_connection()
        with _translated("delete the topology"):
            async with connection.channel() as channel:
                for group in self._groups:
                    await channel.queue_delete(self._topology.queue(group))
                    await channel.queue_delete(self._topology.dead_queue(group))
                await channel.exchange_delete(self._topology.exchange)
                await channel.exchange_delete(self._topology.dead_exchange)
        self._channel = None

    async def _send(
        self, channel: aiormq.Channel, messages: Sequence[BrokerMessage]
    ) -> list[asyncio.Future[object]]:
        """Write the whole batch as one buffer; return one confirmation future per message.

        ``basic_publish`` costs a lock, a queue hand-off, a socket write and pamqp's
        generic encoding per message: most of a relay's time. Here the frames of every
        message are encoded at once (``wire``) and handed to the connection's writer in
        one piece, while the confirmations are registered under the delivery tags the
        broker will count, exactly as ``basic_publish`` does. It relies on the channel's
        ``lock``, ``delivery_tag``, ``confirmations`` and ``write_queue`` (public
        attributes since aiormq 6); the RabbitMQ contract tests exercise each of them.
        """
        try:
            exchange = short_string(self._topology.exchange)
            payload = b"".join(
                publish_frames(
                    m, channel=channel.number, exchange=exchange, max_body=channel.max_content_size
                )
                for m in messages
            )
        except ValueError as exc:
            raise PublishError(f"{_NAME} cannot encode a message: {exc}") from exc
        async with channel.lock:
            first = channel.delivery_tag + 1
            confirms = [channel.create_future() for _ in messages]
            tags = range(first, first + len(messages))
            channel.confirmations.update(zip(tags, confirms, strict=True))
            channel.delivery_tag += len(messages)
            written = channel.create_future()
            frame = ChannelFrame(payload=payload, should_close=False, drain_future=written)
            try:
                await channel.write_queue.put(frame)
            except BaseException:
                # Never handed over: the broker will not count these tags, so neither may we.
                channel.delivery_tag = first - 1
                for tag, confirm in enumerate(confirms, start=first):
                    channel.confirmations.pop(tag, None)
                    confirm.cancel()
                raise
            # Once queued, the frames go out whatever happens to this task.
            await written
        return confirms

    async def _ready_connection(self) -> AbstractConnection:
        async with self._connecting:
            if self._connection is None or self._connection.is_closed:
                with _translated("connect"):
                    self._connection = await aio_pika.connect(
                        self._url, timeout=self._publish_timeout
                    )
            return self._connection

    async def _ready_channel(self) -> AbstractChannel:
        connection = await self._ready_connection()
        if self._channel is None or self._channel.is_closed:
            try:
                with _translated("open a publishing channel"):
                    channel = await connection.channel(publisher_confirms=True)
                    await self._topology.declare_exchanges(channel)
            except BrokerUnavailableError:
                await self._drop_connection()
                raise
            self._channel = channel
        return self._channel

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = None
        if connection is not None:
            with contextlib.suppress(*_UNREACHABLE, aiormq.exceptions.AMQPError):
                await connection.close()


async def _peek(queue: AbstractQueue, group: str, limit: int) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    while len(letters) < limit:
        incoming = await queue.get(no_ack=False, fail=False)
        if incoming is None:
            break
        # A message the broker dead-lettered itself (its consumer kept dying) carries only
        # RabbitMQ's delivery count, not eventfold's headers.
        headers = {
            DEAD_ATTEMPTS_HEADER: (incoming.headers or {}).get("x-delivery-count", 0),
            DEAD_REASON_HEADER: "the broker's delivery limit was reached",
            **(incoming.headers or {}),
        }
        letters.append(DeadLetter.from_headers(_from_amqp(incoming), group, headers))
    return letters


def create_rabbitmq_broker(
    url: str,
    *,
    exchange: str = "eventfold",
    prefetch: int = 32,
    publish_timeout: float = 10.0,
) -> RabbitMQBroker:
    """A RabbitMQ broker over the topic exchange ``exchange``; nothing connects yet.

    ``prefetch`` bounds the unacknowledged messages a consumer holds;
    ``publish_timeout`` bounds connecting and waiting for a publisher confirm.
    """
    return RabbitMQBroker(
        url, exchange=exchange, prefetch=prefetch, publish_timeout=publish_timeout
    )
