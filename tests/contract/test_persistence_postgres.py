"""The persistence contract on PostgreSQL, with state-stored rows in a user's own table."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import MetaData
from sqlalchemy.schema import CreateTable

from eventfold.adapters.postgres import create_postgres_storage
from eventfold.testing.contracts.persistence import PersistenceContract, SqlTableContract
from tests.conftest import POSTGRES_DSN, unique_name

pytestmark = pytest.mark.postgres


class TestPostgresPersistence(PersistenceContract):
    @pytest.fixture
    def storage(self, postgres_storage: Any) -> Any:
        return postgres_storage

    @pytest.fixture
    async def second_storage(self, postgres_storage: Any) -> AsyncIterator[Any]:
        schema = unique_name("ef_second")
        storage = create_postgres_storage(POSTGRES_DSN, schema=schema)
        await storage.create_schema()
        yield storage
        await storage.close()
        connection = await asyncpg.connect(POSTGRES_DSN)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()


class TestPostgresTablePersistence(SqlTableContract):
    @pytest.fixture
    def storage(self, postgres_storage: Any) -> Any:
        return postgres_storage

    @pytest.fixture
    async def products(self, storage: Any) -> Any:
        # The user's table lives beside eventfold's, in the test's own schema.
        table = self.products_table(MetaData(schema=storage.schema))
        async with storage.transaction() as session:
            await session.execute_sql(CreateTable(table, if_not_exists=True))
        return table
