"""SQLite storage: ``create_sqlite_storage("app.db")``."""

from eventfold.adapters.sqlite.outbox import SqliteOutboxStore, create_sqlite_outbox_store
from eventfold.adapters.sqlite.session import SqliteSession
from eventfold.adapters.sqlite.storage import SqliteStorage, create_sqlite_storage

__all__ = [
    "SqliteOutboxStore",
    "SqliteSession",
    "SqliteStorage",
    "create_sqlite_outbox_store",
    "create_sqlite_storage",
]
