"""The persistence contract on SQLite, with state-stored rows in a user's own table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData
from sqlalchemy.schema import CreateTable

from eventfold.adapters.sqlite import create_sqlite_storage
from eventfold.testing.contracts.persistence import PersistenceContract, SqlTableContract


class TestSqlitePersistence(PersistenceContract):
    @pytest.fixture
    def storage(self, sqlite_storage: Any) -> Any:
        return sqlite_storage

    @pytest.fixture
    async def second_storage(self, tmp_path: Path) -> AsyncIterator[Any]:
        storage = create_sqlite_storage(tmp_path / "invoicing.db")
        await storage.create_schema()
        yield storage
        await storage.close()


class TestSqliteTablePersistence(SqlTableContract):
    @pytest.fixture
    def storage(self, sqlite_storage: Any) -> Any:
        return sqlite_storage

    @pytest.fixture
    async def products(self, storage: Any) -> Any:
        table = self.products_table(MetaData())
        async with storage.transaction() as session:
            await session.execute_sql(CreateTable(table, if_not_exists=True))
        return table
