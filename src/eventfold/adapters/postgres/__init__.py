"""The PostgreSQL backend (asyncpg): ``create_postgres_storage(dsn, schema=...)``."""

from eventfold.adapters.postgres.outbox import PostgresOutboxStore, create_postgres_outbox_store
from eventfold.adapters.postgres.session import PostgresSession
from eventfold.adapters.postgres.storage import (
    PostgresStorage,
    PostgresTransaction,
    create_postgres_storage,
)

__all__ = [
    "PostgresOutboxStore",
    "PostgresSession",
    "PostgresStorage",
    "PostgresTransaction",
    "create_postgres_outbox_store",
    "create_postgres_storage",
]
