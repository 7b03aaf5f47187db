"""The schedule store of any of eventfold's storages."""

from __future__ import annotations

from eventfold.ports.scheduling import ScheduleStore
from eventfold.ports.storage import Storage

__all__ = ["schedule_store_for"]


def schedule_store_for(storage: Storage) -> ScheduleStore:
    """The :class:`~eventfold.ports.ScheduleStore` of a memory, SQLite or PostgreSQL storage."""
    from eventfold.adapters.memory.storage import MemoryStorage  # noqa: PLC0415

    if isinstance(storage, MemoryStorage):
        from eventfold.adapters.memory.scheduling import MemoryScheduleStore  # noqa: PLC0415

        return MemoryScheduleStore(storage)
    from eventfold.adapters.sql.scheduling import create_sql_schedule_store  # noqa: PLC0415

    return create_sql_schedule_store(storage)
