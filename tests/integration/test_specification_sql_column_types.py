"""A condition on a user's table compares the value as given, whatever the column's size."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Integer, MetaData, Numeric, String, Table, insert
from sqlalchemy.schema import CreateTable

from eventfold import QueryOptions, SpecificationBuilder
from eventfold.adapters.sql import search_table

metadata = MetaData()
items = Table(
    "sized_items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("code", String(5), nullable=False),
    Column("price", Numeric(12, 2), nullable=False),
    Column("stock", Integer, nullable=False),
)


async def _found(storage: Any, field: str, operator: str, value: object) -> list[int]:
    async with storage.transaction() as session:
        await session.execute_sql(CreateTable(items, if_not_exists=True))
        await session.execute_sql(insert(items).values(id=1, code="abcde", price=100, stock=3))
        spec = SpecificationBuilder().where(field, operator, value).build()
        rows = await search_table(session, items, QueryOptions(spec))
    return [row["id"] for row in rows]


async def test_a_decimal_with_more_places_than_the_column_is_not_rounded(
    sql_storage: Any,
) -> None:
    assert await _found(sql_storage, "price", ">=", Decimal("100.001")) == []


async def test_a_decimal_larger_than_the_column_holds_compares_instead_of_failing(
    sql_storage: Any,
) -> None:
    assert await _found(sql_storage, "price", "<", Decimal("1e20")) == [1]


async def test_text_longer_than_the_column_is_not_cut_to_match(sql_storage: Any) -> None:
    assert await _found(sql_storage, "code", "=", "abcdefgh") == []


async def test_an_integer_beyond_the_columns_32_bits_compares_instead_of_failing(
    sql_storage: Any,
) -> None:
    assert await _found(sql_storage, "stock", "in", [2**40, 3]) == [1]
