"""eventfold's own tables, declared once as SQLAlchemy ``MetaData``.

Fold ``metadata`` into your Alembic ``target_metadata`` to manage these tables with your
own migrations, or let ``storage.create_schema()`` / ``eventfold db init`` create them.
Both SQL backends use exactly these tables; their column types vary only where a
dialect has a better native type (``jsonb``, ``uuid``).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "checkpoints",
    "documents",
    "events",
    "inbox",
    "metadata",
    "outbox",
    "schedules",
    "snapshots",
]

metadata = MetaData()

_json = JSON().with_variant(JSONB(), "postgresql")
_uuid = Uuid(as_uuid=True).with_variant(String(36), "sqlite")
_timestamp = DateTime(timezone=True)

events = Table(
    "eventfold_events",
    metadata,
    # The global sequence number. Readers order by (commit_id, position).
    Column(
        "position",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    # On PostgreSQL the writing transaction's id (pg_current_xact_id()), so a reader can
    # stop below the oldest transaction still in progress; 0 where commits are serial.
    Column("commit_id", BigInteger, nullable=False, server_default=text("0")),
    Column("stream_id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("event_id", _uuid, nullable=False),
    Column("type_name", Text, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("data", _json, nullable=False),
    Column("occurred_at", _timestamp, nullable=False),
    Column("correlation_id", Text),
    Column("causation_id", Text),
    Column("actor", Text),
    UniqueConstraint("stream_id", "version", name="eventfold_events_stream_version"),
    UniqueConstraint("event_id", name="eventfold_events_event_id"),
    Index("eventfold_events_log", "commit_id", "position"),
)

snapshots = Table(
    "eventfold_snapshots",
    metadata,
    Column("stream_id", Text, primary_key=True),
    Column("version", Integer, nullable=False),
    Column("state_type", Text, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("data", _json, nullable=False),
    Column("taken_at", _timestamp, nullable=False),
)

documents = Table(
    "eventfold_documents",
    metadata,
    Column("collection", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("data", _json, nullable=False),
    Column("updated_at", _timestamp, nullable=False),
    PrimaryKeyConstraint("collection", "key", name="eventfold_documents_pk"),
)

outbox = Table(
    "eventfold_outbox",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("event_id", _uuid, nullable=False),
    Column("type_name", Text, nullable=False),
    Column("schema_version", Integer, nullable=False),
    Column("aggregate_type", Text, nullable=False),
    Column("aggregate_id", Text, nullable=False),
    Column("data", _json, nullable=False),
    Column("occurred_at", _timestamp, nullable=False),
    Column("correlation_id", Text),
    Column("causation_id", Text),
    Column("actor", Text),
    Column("created_at", _timestamp, nullable=False),
    Column("published_at", _timestamp),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    # Attempts the broker refused, as opposed to attempts made while it was unreachable:
    # only refusals make a row dead.
    Column("refusals", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", _timestamp),
    Column("last_error", Text),
    Column("dead", Boolean, nullable=False, server_default=text("false")),
    # The W3C trace context of the request that recorded the event, for the broker message.
    Column("traceparent", Text),
    UniqueConstraint("event_id", name="eventfold_outbox_event_id"),
    # The relay's work list: only rows still to publish are indexed.
    Index(
        "eventfold_outbox_pending",
        "aggregate_id",
        "id",
        postgresql_where=text("published_at IS NULL"),
        sqlite_where=text("published_at IS NULL"),
    ),
    # The relay's claim walks due rows in id order; published and dead rows stay out.
    Index(
        "eventfold_outbox_due",
        "id",
        postgresql_where=text("published_at IS NULL AND NOT dead"),
        sqlite_where=text("published_at IS NULL AND NOT dead"),
    ),
)

checkpoints = Table(
    "eventfold_checkpoints",
    metadata,
    Column("name", Text, primary_key=True),
    Column("commit_id", BigInteger, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("updated_at", _timestamp, nullable=False),
)

inbox = Table(
    "eventfold_inbox",
    metadata,
    Column("event_id", _uuid, nullable=False),
    Column("handler_name", Text, nullable=False),
    Column("processed_at", _timestamp, nullable=False),
    PrimaryKeyConstraint("event_id", "handler_name", name="eventfold_inbox_pk"),
    Index("eventfold_inbox_processed_at", "processed_at"),
)

# Messages due later (timeouts, reminders), written in the transaction that decided them.
# A scheduler claims due rows (claimed_by, claimed_until: a lease, also the retry time of
# a failed delivery), delivers them and stamps fired_at; fired rows stay, so scheduling
# the same id again (a replayed decision) fires nothing twice.
schedules = Table(
    "eventfold_schedules",
    metadata,
    Column("schedule_id", Text, primary_key=True),
    Column("message_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("key", Text),
    Column("due_at", _timestamp, nullable=False),
    Column("created_at", _timestamp, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("claimed_by", Text),
    Column("claimed_until", _timestamp),
    Column("fired_at", _timestamp),
    Column("last_error", Text),
    Index(
        "eventfold_schedules_due",
        "due_at",
        postgresql_where=text("fired_at IS NULL"),
        sqlite_where=text("fired_at IS NULL"),
    ),
    Index("eventfold_schedules_key", "key"),
)
