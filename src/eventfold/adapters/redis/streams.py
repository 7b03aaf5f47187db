"""Redis Streams broker on redis-py asyncio: one stream, consumer groups, reclaim, dead letters.

Keys, for a prefix ``p``:

- ``p:events``: the stream every message is appended to (XADD), in publish order; the
  entry's fields are the ``eventfold-*`` headers plus ``data``. Optional approximate
  MAXLEN trimming.
- a group ``G`` is a consumer group on ``p:events`` starting at the messages appended
  after its creation; each subscription is a consumer of its own name. A group
  reads every type and acknowledges the ones it did not subscribe to unseen: one
  stream keeps the publish order across types, as a topic exchange queue does.
- ``p:dead:G``: the dead letters of ``G``.

Redelivery: Redis has no "nack". A failed message stays pending on its consumer,
which reads its own pending entries again (XREADGROUP from 0) before new ones; each
such read raises the entry's delivery counter, which is the attempt number. After
the last failed attempt the entry is added to the dead-letter stream and acknowledged
in one MULTI. A consumer that died leaves entries pending: after ``claim_idle``
seconds another consumer of the group takes them over (XAUTOCLAIM).

Order: a failed entry comes back after the rest of the entries read with it, then
before new ones; ``keep_stream_order`` retries it in place instead (re-claiming held
entries so no other consumer takes them over). A requeued dead letter is appended again
with an ``eventfold-requeued-for`` field; other groups acknowledge it unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

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

__all__ = ["RedisStreamsBroker", "RedisStreamsSubscription", "create_redis_streams_broker"]

_log = logging.getLogger("eventfold.brokers")
_NAME = "redis"
_BLOCK_MS = 2000
"""How long one XREADGROUP waits for new entries before the consumer looks around again."""

Entry = tuple[str, dict[str, str], int]
"""A stream entry as a consumer handles it: id, fields, attempt number."""


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn redis-py's errors into eventfold's."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise BrokerUnavailableError(_NAME, f"{action}: {exc!r}") from exc
    except TimeoutError as exc:
        raise BrokerUnavailableError(_NAME, f"{action}: no answer in time") from exc
    except redis.exceptions.RedisError as exc:
        raise PublishError(f"{_NAME} refused to {action}: {exc!r}") from exc


def _client(url: str, timeout: float) -> aioredis.Redis:
    # No driver-level retries: a publish fails fast and the caller (the relay) retries.
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=timeout,
        socket_timeout=max(timeout, _BLOCK_MS / 1000 + 3),
        retry=Retry(NoBackoff(), 0),
    )


def _fields(message: BrokerMessage) -> dict[str, str]:
    return {**message.to_headers(), "data": message.data}


def _from_fields(fields: Mapping[str, str]) -> BrokerMessage:
    return BrokerMessage.from_headers(fields, fields.get("data", ""))


class _Keys:
    """The key names under one prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.stream = f"{prefix}:events"

    def dead(self, group: str) -> str:
        return f"{self.prefix}:dead:{group}"


class RedisStreamsSubscription(BrokerConsumer[tuple[str, dict[str, str]]]):
    """A consumer of one group with a name of its own; it reconnects after an outage."""

    broker_name = _NAME

    def __init__(
        self,
        client: aioredis.Redis,
        keys: _Keys,
        group: str,
        handler: MessageHandler,
        *,
        event_types: Collection[str] | None,
        max_deliveries: int,
        keep_stream_order: bool,
        claim_idle: float,
        batch: int,
    ) -> None:
        super().__init__(
            group,
            handler,
            event_types=event_types,
            max_deliveries=max_deliveries,
            keep_stream_order=keep_stream_order,
        )
        self._redis = client
        self._keys = keys
        self._consumer = f"{group}-{uuid.uuid4().hex[:12]}"
        self._claim_idle_ms = int(claim_idle * 1000)
        # Held entries are touched well before another consumer could claim them.
        self.keep_alive_every = claim_idle / 3
        self._batch = batch
        self._next_claim = 0.0
        self._own_from: str | None = "0"

    async def _connect(self) -> None:
        with _translated("create a consumer group"):
            try:
                await self._redis.xgroup_create(self._keys.stream, self._group, "$", mkstream=True)
            except redis.exceptions.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        # Entries this consumer held when the connection went are read again first.
        self._own_from = "0"

    async def _disconnect(self) -> None:
        # A consumer that died of an error still leaves the group tidy and disconnects.
        with contextlib.suppress(MessagingError):
            await self._forget_consumer()
        await self._redis.aclose()

    async def _forget_consumer(self) -> None:
        # A consumer with pending entries stays, so that another consumer can claim them.
        with _translated("remove a consumer"):
            pending = await self._redis.xpending_range(
                self._keys.stream, self._group, "-", "+", 1, consumername=self._consumer
            )
            if not pending:
                await self._redis.xgroup_delconsumer(self._keys.stream, self._group, self._consumer)

    async def _receive(self) -> list[Received[tuple[str, dict[str, str]]]]:
        received = []
        for entry_id, fields, attempt in await self._next_entries():
            if fields:
                received.append(_received(entry_id, fields, attempt))
                continue
            # Trimmed by MAXLEN while pending: nothing left to deliver.
            _log.warning(
                "entry %s of %s was trimmed before %s handled it",
                entry_id,
                self._keys.stream,
                self._group,
            )
            await self._ack((entry_id, fields))
        return received

    async def _next_entries(self) -> list[Entry]:
        """Own failed entries first, then entries dead consumers left, then new ones."""
        with _translated("read"):
            if self._own_from is not None:
                own = await self._read_from(self._own_from, block=None)
                if own:
                    if self._keep_stream_order:
                        # In hand until settled, so the next read starts after them.
                        self._own_from = own[-1][0]
                    return await self._with_attempts(own)
                if self._keep_stream_order:
                    # Failures are retried in place: own entries are read once per connection.
                    self._own_from = None
            if time.monotonic() >= self._next_claim:
                self._next_claim = time.monotonic() + self._claim_idle_ms / 2000
                claimed = await self._claim()
                if claimed:
                    return await self._with_attempts(claimed)
            fresh = await self._read_from(">", block=_BLOCK_MS)
            return [(entry_id, fields, 1) for entry_id, fields in fresh]

    async def _read_from(self, start: str, block: int | None) -> list[tuple[str, dict[str, str]]]:
        reply: Any = await self._redis.xreadgroup(
            self._group, self._consumer, {self._keys.stream: start}, count=self._batch, block=block
        )
        return [
            (entry_id, fields or {}) for _, entries in reply or [] for entry_id, fields in entries
        ]

    async def _claim(self) -> list[tuple[str, dict[str, str]]]:
        reply: Any = await self._redis.xautoclaim(
            self._keys.stream,
            self._group,
            self._consumer,
            self._claim_idle_ms,
            "0-0",
            count=self._batch,
        )
        return [(entry_id, fields or {}) for entry_id, fields in reply[1]]

    async def _with_attempts(self, entries: list[tuple[str, dict[str, str]]]) -> list[Entry]:
        pending: Any = await self._redis.xpending_range(
            self._keys.stream,
            self._group,
            entries[0][0],
            entries[-1][0],
            len(entries),
            consumername=self._consumer,
        )
        counts = {row["message_id"]: int(row["times_delivered"]) for row in pending}
        return [(entry_id, fields, counts.get(entry_id, 1)) for entry_id, fields in entries]

    async def _ack(self, raw: tuple[str, dict[str, str]]) -> None:
        with _translated("acknowledge"):
            await self._redis.xack(self._keys.stream, self._group, raw[0])

    async def _give_back(self, raw: tuple[str, dict[str, str]], attempt: int) -> None:
        # The entry stays pending and the next read of our own entries retries it.
        pass

    async def _keep_alive(self, raw: tuple[str, dict[str, str]]) -> None:
        # Claiming an entry one holds resets its idle time; JUSTID leaves its count alone.
        with _translated("keep an entry"):
            await self._redis.xclaim(
                self._keys.stream, self._group, self._consumer, 0, [raw[0]], justid=True
            )

    async def _bury(self, raw: tuple[str, dict[str, str]], attempts: int, reason: str) -> None:
        """Add an entry to the group's dead letters with why and acknowledge it, atomically."""
        entry_id, fields = raw
        letter = {**fields, **dead_letter_headers(reason, attempts)}
        with _translated("dead-letter a message"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xadd(self._keys.dead(self._group), letter)  # type: ignore[arg-type]
                pipe.xack(self._keys.stream, self._group, entry_id)
                await pipe.execute()


def _received(
    entry_id: str, fields: dict[str, str], attempt: int
) -> Received[tuple[str, dict[str, str]]]:
    requeued_for = fields.get(REQUEUED_FOR_HEADER)
    raw = (entry_id, fields)
    try:
        return Received(raw, attempt, _from_fields(fields), requeued_for=requeued_for)
    except MessagingError as exc:
        return Received(raw, attempt, None, repr(exc))


class RedisStreamsBroker:
    """Appends to one Redis stream; consumes with consumer groups.

    Nothing connects until the first call; redis-py opens a fresh connection on the
    call after one was lost.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        maxlen: int | None,
        claim_idle: float,
        publish_timeout: float,
        batch: int,
    ) -> None:
        self._url = url
        self._keys = _Keys(prefix)
        self._maxlen = maxlen
        self._claim_idle = claim_idle
        self._publish_timeout = publish_timeout
        self._batch = batch
        self._redis = _client(url, publish_timeout)
        self._subscriptions: list[RedisStreamsSubscription] = []
        self._groups: set[str] = set()

    @property
    def name(self) -> str:
        """``"redis"``."""
        return _NAME

    async def publish(self, messages: Sequence[BrokerMessage]) -> None:
        """Append every message in order in one round trip; returns once Redis replied."""
        if not messages:
            return
        with _translated("publish"):
            async with asyncio.timeout(self._publish_timeout):
                async with self._redis.pipeline(transaction=False) as pipe:
                    for message in messages:
                        pipe.xadd(
                            self._keys.stream,
                            _fields(message),  # type: ignore[arg-type]
                            maxlen=self._maxlen,
                            approximate=True,
                        )
                    await pipe.execute()

    async def subscribe(
        self,
        group: str,
        handler: MessageHandler,
        *,
        event_types: Collection[str] | None = None,
        max_deliveries: int = 5,
        keep_stream_order: bool = False,
    ) -> RedisStreamsSubscription:
        """Consume ``event_types`` (every type when ``None``) for ``group`` until stopped."""
        subscription = RedisStreamsSubscription(
            # Its own client: a blocking read holds a connection for its whole wait.
            _client(self._url, self._publish_timeout),
            self._keys,
            check_group_name(group),
            handler,
            event_types=event_types,
            max_deliveries=max_deliveries,
            keep_stream_order=keep_stream_order,
            claim_idle=self._claim_idle,
            batch=self._batch,
        )
        self._groups.add(group)
        await subscription.start()
        self._subscriptions.append(subscription)
        return subscription

    async def read_dead_letters(self, group: str, *, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``group``, oldest first."""
        with _translated("read dead letters"):
            entries: Any = await self._redis.xrange(self._keys.dead(group), count=limit)
        return [_dead_letter(fields, group) for _, fields in entries]

    async def requeue_dead_letters(
        self, group: str, *, event_ids: Collection[UUID] | None = None
    ) -> int:
        """Append dead letters (those of ``event_ids``, or all) again, for ``group`` only."""
        letters = await self._dead(group, event_ids)
        with _translated("requeue dead letters"):
            for entry_id, fields in letters:
                copy = {**requeue_headers(fields, group), "data": fields.get("data", "")}
                # Appended and removed from the dead letters at once.
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.xadd(self._keys.stream, copy, maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
                    pipe.xdel(self._keys.dead(group), entry_id)
                    await pipe.execute()
        return len(letters)

    async def purge_dead_letters(
        self, group: str, *, event_ids: Collection[UUID] | None = None
    ) -> int:
        """Delete dead letters (those of ``event_ids``, or all) of ``group``; how many."""
        letters = await self._dead(group, event_ids)
        if letters:
            with _translated("purge dead letters"):
                await self._redis.xdel(
                    self._keys.dead(group), *(entry_id for entry_id, _ in letters)
                )
        return len(letters)

    async def _dead(
        self, group: str, event_ids: Collection[UUID] | None
    ) -> list[tuple[str, dict[str, str]]]:
        """The dead-letter entries of ``group`` (those of ``event_ids``, or all), oldest first."""
        chosen = None if event_ids is None else {str(event_id) for event_id in event_ids}
        with _translated("read dead letters"):
            entries: Any = await self._redis.xrange(self._keys.dead(group))
        return [
            (entry_id, fields)
            for entry_id, fields in entries
            if chosen is None or fields.get("eventfold-event-id") in chosen
        ]

    async def close(self) -> None:
        """Stop every subscription and close the connections."""
        for subscription in self._subscriptions:
            await subscription.stop()
        self._subscriptions.clear()
        await self._redis.aclose()

    async def destroy(self) -> None:
        """Delete the stream and the dead-letter streams of the groups this object used."""
        with _translated("delete the streams"):
            await self._redis.delete(
                self._keys.stream, *(self._keys.dead(group) for group in self._groups)
            )


def _dead_letter(fields: Mapping[str, str], group: str) -> DeadLetter:
    return DeadLetter.from_headers(_from_fields(fields), group, fields)


def create_redis_streams_broker(
    url: str,
    *,
    prefix: str = "eventfold",
    maxlen: int | None = None,
    claim_idle: float = 30.0,
    publish_timeout: float = 10.0,
    batch: int = 32,
) -> RedisStreamsBroker:
    """A Redis Streams broker over the keys ``prefix:*``; nothing connects yet.

    ``maxlen`` trims the stream (approximately) to that many entries; ``claim_idle`` is
    how long an entry stays with a silent consumer before another one takes it over,
    so it must exceed the longest handler run.
    """
    return RedisStreamsBroker(
        url,
        prefix=prefix,
        maxlen=maxlen,
        claim_idle=claim_idle,
        publish_timeout=publish_timeout,
        batch=batch,
    )
