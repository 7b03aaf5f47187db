"""The checks every storage adapter runs on what it is given, before any SQL.

A backend must accept or refuse an id, a key, a moment or a payload the same way as
every other (see :mod:`eventfold.domain.storable`), and refuse it with an
:class:`~eventfold.errors.InvalidValueError` naming the field, not with a driver error
half-way through a transaction. Each adapter calls these at the top of its methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from eventfold.domain.storable import check_json_text, check_key, utc_moment
from eventfold.ports.records import (
    AppendEvents,
    DeleteDocument,
    EventRecord,
    OutboxMessage,
    SaveDocument,
    SnapshotRecord,
    Write,
)

__all__ = [
    "check_document",
    "check_events",
    "check_keys",
    "check_outbox",
    "check_snapshot",
    "check_stream",
    "check_writes",
]


def check_stream(stream_id: str, as_of: datetime | None = None) -> datetime | None:
    """Check a stream id; return ``as_of`` in UTC (a naive ``as_of`` is UTC)."""
    check_key("stream_id", stream_id)
    return None if as_of is None else utc_moment("as_of", as_of)


def check_events(stream_id: str, events: Sequence[EventRecord]) -> None:
    """Check a stream id and every text of the events to append to it."""
    check_key("stream_id", stream_id)
    for record in events:
        check_key("type_name", record.type_name)
        check_json_text(f"{record.type_name}.data", record.data)
        utc_moment("occurred_at", record.occurred_at)
        for name in ("correlation_id", "causation_id", "actor"):
            value = getattr(record, name)
            if value is not None:
                check_key(name, value)


def check_snapshot(snapshot: SnapshotRecord) -> None:
    """Check a snapshot's stream id, type name and data."""
    check_key("stream_id", snapshot.stream_id)
    check_key("state_type", snapshot.state_type)
    check_json_text(f"{snapshot.state_type}.data", snapshot.data)


def check_document(collection: str, key: str, data: str | None = None) -> None:
    """Check a document's collection, key and (when written) data."""
    check_key("collection", collection)
    check_key("key", key)
    if data is not None:
        check_json_text(f"{collection}.data", data)


def check_keys(collection: str, keys: Iterable[str]) -> None:
    """Check a collection and each of the document keys asked for."""
    check_key("collection", collection)
    for key in keys:
        check_key("key", key)


def check_outbox(messages: Iterable[OutboxMessage]) -> None:
    """Check the aggregate id, type name and data of each outbox message."""
    for message in messages:
        check_key("aggregate_id", message.aggregate_id)
        check_key("type_name", message.type_name)
        check_json_text(f"{message.type_name}.data", message.data)


def check_writes(writes: Iterable[Write]) -> None:
    """Check every write of a batch as its own method would."""
    for write in writes:
        if isinstance(write, AppendEvents):
            check_events(write.stream_id, write.events)
        elif isinstance(write, SaveDocument):
            check_document(write.collection, write.key, write.data)
        elif isinstance(write, DeleteDocument):
            check_document(write.collection, write.key)
        elif isinstance(write, SnapshotRecord):
            check_snapshot(write)
        else:
            check_outbox([write])
