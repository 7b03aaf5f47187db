"""SQLite storage: ``create_sqlite_storage("app.db")``."""

from eventfold.adapters.sqlite.session import SqliteSession
from eventfold.adapters.sqlite.storage import SqliteStorage, create_sqlite_storage

__all__ = ["SqliteSession", "SqliteStorage", "create_sqlite_storage"]
