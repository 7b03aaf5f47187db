"""A user's own statement with a value no backend can store fails alike on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, MetaData, Table, Text, insert, select
from sqlalchemy.schema import CreateTable

from eventfold import InvalidValueError

metadata = MetaData()
notes = Table(
    "unstorable_notes",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("body", Text, nullable=False),
)


@pytest.mark.parametrize("body", ["a\x00b", "a\ud800b"])
async def test_inserting_text_no_backend_can_store_names_the_column_and_stores_nothing(
    sql_storage: Any, body: str
) -> None:
    async with sql_storage.transaction() as session:
        await session.execute_sql(CreateTable(notes, if_not_exists=True))
    async with sql_storage.transaction() as session:
        with pytest.raises(InvalidValueError) as raised:
            await session.execute_sql(insert(notes).values(id=1, body=body))
        rows = await session.execute_sql(select(notes))
    assert (raised.value.field, rows) == ("body", [])


async def test_inserting_many_rows_refuses_one_with_a_nul_by_column_and_stores_none(
    sql_storage: Any,
) -> None:
    async with sql_storage.transaction() as session:
        await session.execute_sql(CreateTable(notes, if_not_exists=True))
    async with sql_storage.transaction() as session:
        with pytest.raises(InvalidValueError) as raised:
            await session.execute_sql_many(
                insert(notes), [{"id": 1, "body": "fine"}, {"id": 2, "body": "a\x00b"}]
            )
        rows = await session.execute_sql(select(notes))
    assert (raised.value.field, rows) == ("body", [])
