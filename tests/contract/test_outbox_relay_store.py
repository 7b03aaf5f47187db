"""The outbox relay store contract on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from eventfold.adapters.memory.outbox import create_memory_outbox_store
from eventfold.adapters.postgres.outbox import create_postgres_outbox_store
from eventfold.adapters.sqlite.outbox import create_sqlite_outbox_store
from eventfold.testing.contracts import OutboxRelayContract
from eventfold.testing.contracts.outbox import CompetingRelaysContract


class TestMemoryOutboxRelayStore(OutboxRelayContract, CompetingRelaysContract):
    @pytest.fixture
    def storage(self, memory_storage: Any) -> Any:
        return memory_storage

    @pytest.fixture
    def outbox_store(self, storage: Any) -> Any:
        return create_memory_outbox_store(storage)


class TestSqliteOutboxRelayStore(OutboxRelayContract):
    """SQLite runs one relay per database file: no competing-relays tests."""

    @pytest.fixture
    def storage(self, sqlite_storage: Any) -> Any:
        return sqlite_storage

    @pytest.fixture
    def outbox_store(self, storage: Any) -> Any:
        return create_sqlite_outbox_store(storage)


@pytest.mark.postgres
class TestPostgresOutboxRelayStore(OutboxRelayContract, CompetingRelaysContract):
    @pytest.fixture
    def storage(self, postgres_storage: Any) -> Any:
        return postgres_storage

    @pytest.fixture
    def outbox_store(self, storage: Any) -> Any:
        return create_postgres_outbox_store(storage)
