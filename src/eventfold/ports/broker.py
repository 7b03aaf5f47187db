"""Broker ports: publish messages, consume them in durable groups, inspect dead letters.

Delivery is at least once. A group is a named, durable consumer (a RabbitMQ queue, a
JetStream durable consumer, a Redis consumer group): every group receives every
message of the types it subscribed to; the subscriptions of one group share its
messages. A handler that returns acknowledges its message; a handler that raises
gets the message again, and after ``max_deliveries`` attempts the message moves to
the group's dead letters. An outage the handler meets (``StoreUnavailableError``,
``BrokerUnavailableError``) is waited out with backoff and never counts as an attempt.
Dead letters can be read, requeued (the message starts its attempts afresh, for that
group only) and purged.

Order: messages of one publish call arrive in order. When a handler fails, the
message comes back after the messages the consumer already holds (up to the prefetch
or batch size; the in-process broker puts it back first), so a stream's later events
can overtake it. Subscribe with ``keep_stream_order=True`` to park a stream's later
events behind its failing one (other streams go on); this holds per subscription, so
for a group with several subscriptions each stream's order is kept only where one
subscription consumes the group.

On the wire the payload is the body and the metadata travels in headers named
``eventfold-*`` (see :meth:`BrokerMessage.to_headers`), so consumers written in
other languages can read them without eventfold.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from eventfold.errors import ConfigurationError, MessagingError
from eventfold.ports.records import OutboxMessage

__all__ = [
    "REQUEUED_FOR_HEADER",
    "TRACEPARENT_HEADER",
    "BrokerMessage",
    "DeadLetter",
    "DeadLetterKeeper",
    "DeadLetterReader",
    "Delivery",
    "MessageBroker",
    "MessageHandler",
    "MessagePublisher",
    "MessageSubscriber",
    "Subscription",
    "check_group_name",
]

_HEADER = "eventfold-"
TRACEPARENT_HEADER = "traceparent"
"""W3C Trace Context's header: any tracing consumer, not only eventfold's, continues it."""
_GROUP_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


@dataclass(frozen=True, slots=True)
class BrokerMessage:
    """An event as it travels through a broker: JSON payload text plus its metadata.

    ``aggregate_id`` is the ordering key: messages of one aggregate published in one
    call arrive in the order given.
    """

    event_id: UUID
    type_name: str
    schema_version: int
    data: str
    aggregate_type: str
    aggregate_id: str
    occurred_at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None
    traceparent: str | None = None
    """W3C trace context, sent as the standard ``traceparent`` header."""

    @classmethod
    def from_outbox(cls, message: OutboxMessage) -> BrokerMessage:
        """The broker form of an outbox row's message."""
        return cls(
            event_id=message.event_id,
            type_name=message.type_name,
            schema_version=message.schema_version,
            data=message.data,
            aggregate_type=message.aggregate_type,
            aggregate_id=message.aggregate_id,
            occurred_at=message.occurred_at,
            correlation_id=message.correlation_id,
            causation_id=message.causation_id,
            actor=message.actor,
            traceparent=message.traceparent,
        )

    def to_headers(self) -> dict[str, str]:
        """The metadata as ``eventfold-*`` string headers; absent optional fields are left out."""
        headers = {
            "event-id": str(self.event_id),
            "type": self.type_name,
            "schema-version": str(self.schema_version),
            "aggregate-type": self.aggregate_type,
            "aggregate-id": self.aggregate_id,
            "occurred-at": self.occurred_at.isoformat(),
            "correlation-id": self.correlation_id,
            "causation-id": self.causation_id,
            "actor": self.actor,
        }
        fields = {_HEADER + key: value for key, value in headers.items() if value is not None}
        if self.traceparent is not None:
            fields[TRACEPARENT_HEADER] = self.traceparent
        return fields

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], data: str) -> BrokerMessage:
        """The message ``to_headers`` described; :class:`MessagingError` if they do not fit."""
        try:
            return cls(
                event_id=UUID(headers[_HEADER + "event-id"]),
                type_name=headers[_HEADER + "type"],
                schema_version=int(headers[_HEADER + "schema-version"]),
                data=data,
                aggregate_type=headers[_HEADER + "aggregate-type"],
                aggregate_id=headers[_HEADER + "aggregate-id"],
                occurred_at=datetime.fromisoformat(headers[_HEADER + "occurred-at"]),
                correlation_id=headers.get(_HEADER + "correlation-id"),
                causation_id=headers.get(_HEADER + "causation-id"),
                actor=headers.get(_HEADER + "actor"),
                traceparent=headers.get(TRACEPARENT_HEADER),
            )
        except (KeyError, ValueError) as exc:
            msg = f"a broker message lacks or garbles eventfold's headers: {exc!r}"
            raise MessagingError(msg) from exc


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message handed to a handler, with how many times it has been handed out (from 1)."""

    message: BrokerMessage
    attempt: int
    group: str


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message a group gave up on, with the attempts made and the last handler error."""

    message: BrokerMessage
    group: str
    attempts: int
    reason: str

    @classmethod
    def from_headers(
        cls, message: BrokerMessage, group: str, headers: Mapping[str, object]
    ) -> DeadLetter:
        """The dead letter a copy's headers describe."""
        attempts = int(str(headers.get(DEAD_ATTEMPTS_HEADER, 0)))
        return cls(message, group, attempts, str(headers.get(DEAD_REASON_HEADER, "")))


DEAD_REASON_HEADER = "eventfold-dead-reason"
DEAD_ATTEMPTS_HEADER = "eventfold-attempts"


REQUEUED_FOR_HEADER = "eventfold-requeued-for"
"""On a requeued dead letter: the one group it is for, where every group shares a stream."""


def dead_letter_headers(reason: str, attempts: int) -> dict[str, str]:
    """The headers a dead-lettered copy of a message carries: why, after how many tries."""
    return {DEAD_REASON_HEADER: reason, DEAD_ATTEMPTS_HEADER: str(attempts)}


def requeue_headers(headers: Mapping[str, object], group: str) -> dict[str, str]:
    """A dead letter's headers for its requeued copy: no dead-letter ones, for ``group``."""
    dropped = (DEAD_REASON_HEADER, DEAD_ATTEMPTS_HEADER, REQUEUED_FOR_HEADER)
    kept = {
        key: str(value)
        for key, value in headers.items()
        if (key.startswith(_HEADER) or key == TRACEPARENT_HEADER) and key not in dropped
    }
    return {**kept, REQUEUED_FOR_HEADER: group}


MessageHandler = Callable[[Delivery], Awaitable[None]]
"""Handles one delivery; returning acknowledges it, raising asks for it again."""


class MessagePublisher(Protocol):
    """Publishes messages and returns once the broker confirmed every one."""

    async def publish(self, messages: Sequence[BrokerMessage]) -> None:
        """Publish in order; raise ``BrokerUnavailableError`` or ``PublishError`` on failure.

        When it raises, some of the messages may have been published: callers retry the
        whole batch and consumers deduplicate by event id.
        """
        ...


class Subscription(Protocol):
    """A running consumer of one group."""

    @property
    def group(self) -> str:
        """The group this subscription consumes for."""
        ...

    async def stop(self) -> None:
        """Finish the delivery in hand, then stop; unacknowledged messages stay queued."""
        ...


class MessageSubscriber(Protocol):
    """Starts consumers of durable groups."""

    async def subscribe(
        self,
        group: str,
        handler: MessageHandler,
        *,
        event_types: Collection[str] | None = None,
        max_deliveries: int = 5,
        keep_stream_order: bool = False,
    ) -> Subscription:
        """Consume ``event_types`` (every type when ``None``) for ``group`` until stopped.

        The group is created on first use and receives messages published from then on.
        The call returns once the consumer is ready to receive. ``keep_stream_order``
        retries a failing message in place and holds its stream's later messages back
        until it succeeded or went to the dead letters.
        """
        ...


class DeadLetterReader(Protocol):
    """Reads the messages a group gave up on, without removing them."""

    async def read_dead_letters(self, group: str, *, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of ``group``, oldest first."""
        ...


class DeadLetterKeeper(DeadLetterReader, Protocol):
    """Reads, requeues and purges the messages a group gave up on."""

    async def requeue_dead_letters(
        self, group: str, *, event_ids: Collection[UUID] | None = None
    ) -> int:
        """Give dead letters (those of ``event_ids``, or all) back to ``group``; how many.

        A requeued message goes to ``group`` only, starts its attempts afresh and is no
        longer a dead letter.
        """
        ...

    async def purge_dead_letters(
        self, group: str, *, event_ids: Collection[UUID] | None = None
    ) -> int:
        """Delete dead letters (those of ``event_ids``, or all) of ``group``; how many."""
        ...


class MessageBroker(MessagePublisher, MessageSubscriber, DeadLetterKeeper, Protocol):
    """A broker connection: publishing, consuming and dead-letter handling."""

    @property
    def name(self) -> str:
        """A short name for errors and logs, e.g. ``"rabbitmq"``."""
        ...

    async def close(self) -> None:
        """Stop every subscription and close the connections; the broker is unusable after."""
        ...


def check_group_name(group: str) -> str:
    """``group`` if it is usable as a queue, consumer and key name on every broker."""
    if not _GROUP_NAME.match(group):
        msg = f"group name {group!r} must be 1-200 letters, digits, '-' or '_'"
        raise ConfigurationError(msg)
    return group
