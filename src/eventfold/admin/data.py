"""What the admin page reads and changes, on eventfold's own tables (SQL storages).

Payloads are read straight from the tables, never through a storage that decrypts
personal data: a sealed field, and every field an event class marks personal, shows as
its redacted placeholder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select

from eventfold.adapters.sql.schema import checkpoints, documents, events, inbox, outbox
from eventfold.application.messaging.sagas import SAGA_COLLECTION
from eventfold.application.persistence.personal_data import personal_fields
from eventfold.application.readside.health import HEALTH_COLLECTION, projection_health
from eventfold.application.readside.projections import projection_lag
from eventfold.domain.personal_data import FORGOTTEN
from eventfold.errors import ConfigurationError, EventfoldError
from eventfold.ports import OutboxRelayStore, Storage
from eventfold.serialization import EventRegistry

__all__ = ["AdminData", "outbox_store_for"]

_SEALED_PREFIX = "pd1:"  # what an encrypted personal value starts with


@dataclass(frozen=True, slots=True)
class StreamFilter:
    """What the streams page searches for."""

    text: str = ""
    type_name: str = ""
    since: datetime | None = None
    until: datetime | None = None


class AdminData:
    """Queries and actions of the admin page over one storage."""

    def __init__(self, storage: Storage, events: EventRegistry | None = None) -> None:
        self.storage = storage
        self.events = events
        self._outbox: OutboxRelayStore | None = None

    async def _rows(self, statement: Any) -> list[dict[str, Any]]:
        async with self.storage.transaction() as session:
            execute = getattr(session, "execute_sql", None)
            if execute is None:
                msg = "the admin page reads eventfold's tables with SQL: use SQLite or PostgreSQL"
                raise ConfigurationError(msg)
            rows: list[dict[str, Any]] = await execute(statement)
            return rows

    # -- overview ----------------------------------------------------------------------

    async def overview(self) -> dict[str, Any]:
        """Counts for the front page."""
        stats = await self.outbox.outbox_stats()
        (counts,) = await self._rows(
            select(
                func.count(func.distinct(events.c.stream_id)).label("streams"),
                func.count().label("events"),
            )
        )
        (handled,) = await self._rows(select(func.count().label("n")).select_from(inbox))
        projections = await self.projections()
        sagas = await self.sagas()
        return {
            **counts,
            "projections": len(projections),
            "parked": sum(1 for p in projections if p["parked"]),
            "backlog": stats.backlog,
            "dead": stats.dead,
            "inbox": handled["n"],
            "sagas": len(sagas),
            "interventions": sum(1 for s in sagas if s["status"] == "needs_intervention"),
        }

    # -- streams -----------------------------------------------------------------------

    async def event_types(self) -> list[str]:
        """Every event type in the log, for the search form."""
        rows = await self._rows(select(events.c.type_name).distinct().order_by(events.c.type_name))
        return [row["type_name"] for row in rows]

    async def streams(self, search: StreamFilter, *, limit: int = 100) -> list[dict[str, Any]]:
        """Streams whose id contains the text and that have events of the type in the time."""
        where: list[ColumnElement[bool]] = []
        if search.text:
            escaped = search.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(events.c.stream_id.like(f"%{escaped}%", escape="\\"))
        if search.type_name:
            where.append(events.c.type_name == search.type_name)
        if search.since is not None:
            where.append(events.c.occurred_at >= search.since)
        if search.until is not None:
            where.append(events.c.occurred_at <= search.until)
        last = func.max(events.c.occurred_at).label("last")
        query = (
            select(
                events.c.stream_id,
                func.max(events.c.version).label("version"),
                func.count().label("events"),
                last,
            )
            .where(*where)
            .group_by(events.c.stream_id)
            .order_by(last.desc(), events.c.stream_id)
            .limit(limit)
        )
        return await self._rows(query)

    async def stream(self, stream_id: str) -> list[dict[str, Any]]:
        """A stream's events, oldest first, personal data redacted."""
        query = select(events).where(events.c.stream_id == stream_id).order_by(events.c.version)
        rows = await self._rows(query)
        for row in rows:
            row["data"] = self.redacted(row["type_name"], row["data"])
        return rows

    def redacted(self, type_name: str, data: Any) -> Any:
        """The payload with every personal field as its redacted placeholder."""
        payload = json.loads(data) if isinstance(data, str) else data
        if not isinstance(payload, dict):
            return payload
        for field in self._personal(type_name):
            if field.name in payload and payload[field.name] is not None:
                payload[field.name] = field.redacted
        for key, value in payload.items():
            if isinstance(value, str) and value.startswith(_SEALED_PREFIX):
                payload[key] = FORGOTTEN  # sealed, whether or not the class is known here
        return payload

    def _personal(self, type_name: str) -> Sequence[Any]:
        if self.events is None:
            return ()
        try:
            return personal_fields(self.events.class_of(type_name))
        except EventfoldError:
            return ()

    # -- projections -------------------------------------------------------------------

    async def projections(self) -> list[dict[str, Any]]:
        """Each projection: checkpoint, lag, and the event it is parked on, if any."""
        named = await self._rows(select(checkpoints.c.name))
        with_health = await self._rows(
            select(documents.c.key).where(documents.c.collection == HEALTH_COLLECTION)
        )
        names = sorted({r["name"] for r in named} | {r["key"] for r in with_health})
        now = datetime.now(UTC)
        found = []
        for name in names:
            lag = await projection_lag(self.storage, name, now)
            health = await projection_health(self.storage, name)
            found.append(
                {
                    "name": name,
                    "position": lag.checkpoint.position,
                    "events_behind": lag.events_behind,
                    "seconds_behind": lag.seconds_behind,
                    "parked": health.parked,
                    "skipped": health.skipped,
                }
            )
        return found

    # -- outbox and inbox --------------------------------------------------------------

    @property
    def outbox(self) -> OutboxRelayStore:
        """The outbox relay store of the storage."""
        if self._outbox is None:
            self._outbox = outbox_store_for(self.storage)
        return self._outbox

    async def delete_dead(self, entry_id: int) -> int:
        """Delete one dead outbox row (it will never be published); how many went."""
        statement = delete(outbox).where(outbox.c.id == entry_id, outbox.c.dead.is_(True))
        async with self.storage.transaction() as session:
            before = await self._count_dead(session, entry_id)
            await session.execute_sql(statement)  # type: ignore[attr-defined]
        return before

    @staticmethod
    async def _count_dead(session: Any, entry_id: int) -> int:
        query = select(func.count().label("n")).where(outbox.c.id == entry_id, outbox.c.dead)
        rows = await session.execute_sql(query)
        return int(rows[0]["n"])

    async def inbox(self) -> list[dict[str, Any]]:
        """Per handler: entries, the oldest and the latest."""
        query = (
            select(
                inbox.c.handler_name,
                func.count().label("processed"),
                func.min(inbox.c.processed_at).label("oldest"),
                func.max(inbox.c.processed_at).label("latest"),
            )
            .group_by(inbox.c.handler_name)
            .order_by(inbox.c.handler_name)
        )
        return await self._rows(query)

    async def purge_inbox(self, older_than: datetime) -> int:
        """Forget inbox entries processed before ``older_than``."""
        async with self.storage.transaction() as session:
            return await session.purge_processed(older_than)

    # -- sagas -------------------------------------------------------------------------

    async def sagas(self) -> list[dict[str, Any]]:
        """Every saga instance, newest change first, as stored."""
        query = select(documents.c.key, documents.c.data).where(
            documents.c.collection == SAGA_COLLECTION
        )
        found = []
        for row in await self._rows(query):
            state = json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
            found.append({"saga_id": row["key"], **state})
        return sorted(found, key=lambda s: str(s.get("updated_at")), reverse=True)


def outbox_store_for(storage: Storage) -> OutboxRelayStore:
    """The outbox relay store of one of eventfold's SQL storages."""
    backend = type(storage).__module__
    if backend.startswith("eventfold.adapters.postgres"):
        from eventfold.adapters.postgres import (  # noqa: PLC0415 - the driver is an extra
            PostgresStorage,
            create_postgres_outbox_store,
        )

        if isinstance(storage, PostgresStorage):
            return create_postgres_outbox_store(storage)
    if backend.startswith("eventfold.adapters.sqlite"):
        from eventfold.adapters.sqlite import SqliteStorage, create_sqlite_outbox_store  # noqa: PLC0415

        if isinstance(storage, SqliteStorage):
            return create_sqlite_outbox_store(storage)
    inner = getattr(storage, "storage", None)  # a storage wrapping another (personal data)
    if inner is not None:
        return outbox_store_for(inner)
    msg = f"the admin page needs a SQLite or PostgreSQL storage, not {type(storage).__qualname__}"
    raise ConfigurationError(msg)
