"""Document searches run through a storage session's ``execute_sql``; hostile input stays inert."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from eventfold import (
    FieldSet,
    QueryOptions,
    SpecificationBuilder,
    UnknownFieldError,
    UnknownOperatorError,
)
from eventfold.adapters.postgres import create_postgres_storage
from eventfold.adapters.sql.specification import document_query, search_documents
from eventfold.adapters.sqlite import create_sqlite_storage
from tests.conftest import POSTGRES_DSN, require_service, unique_name

FIELDS = FieldSet("Order", {"status": str, "total": Decimal, "customer.city": str})
HOSTILE = "x'; DROP TABLE eventfold_documents; --"
ORDERS = {
    "o1": {"status": "paid", "total": "10.50", "customer": {"city": "Oslo"}},
    "o2": {"status": "PAID", "total": "99.00", "customer": {"city": "Bergen"}},
    "o3": {"status": HOSTILE, "total": "5", "customer": {"city": "Oslo"}},
    "o4": {"status": "paid", "total": "100", "customer": None},
}


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A real storage holding the orders collection."""
    if request.param == "sqlite":
        store = create_sqlite_storage(tmp_path / "orders.db")
        await _filled(store)
        yield store
        await store.close()
        return
    require_service("postgres")
    schema = unique_name("spec")
    store = create_postgres_storage(POSTGRES_DSN, schema=schema)
    try:
        await _filled(store)
        yield store
    finally:
        await store.close()
        connection = await asyncpg.connect(POSTGRES_DSN)
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()


async def _filled(store: Any) -> None:
    await store.create_schema()
    async with store.transaction() as session:
        for key, order in ORDERS.items():
            await session.save_document("orders", key, json.dumps(order), expected_version=0)


async def keys(store: Any, options: QueryOptions) -> list[str]:
    async with store.transaction() as session:
        rows = await search_documents(session, "orders", options, FIELDS)
    return [row["key"] for row in rows]


async def test_a_search_through_execute_sql_filters_and_orders_documents(storage: Any) -> None:
    spec = SpecificationBuilder().where("status", "=", "paid").build()
    assert await keys(storage, QueryOptions(spec, order_by=("-total",))) == ["o4", "o1"]


async def test_a_nested_field_is_read_from_the_stored_json(storage: Any) -> None:
    spec = SpecificationBuilder().where("customer.city", "startswith", "Os").build()
    assert await keys(storage, QueryOptions(spec, order_by=("total",))) == ["o3", "o1"]


async def test_like_is_case_sensitive_in_the_database(storage: Any) -> None:
    spec = SpecificationBuilder().where("status", "like", "P%").build()
    assert await keys(storage, QueryOptions(spec)) == ["o2"]


async def test_the_total_counts_every_match_through_execute_sql(storage: Any) -> None:
    options = QueryOptions(order_by=("total",), limit=1, include_total=True)
    async with storage.transaction() as session:
        result = search_documents(session, "orders", options, FIELDS)
        await result
    assert result.total == 4


async def test_stream_walks_every_document_in_batches(storage: Any) -> None:
    async with storage.transaction() as session:
        result = search_documents(session, "orders", QueryOptions(order_by=("-total",)), FIELDS)
        streamed = [row["key"] async for row in result.stream(batch_size=3)]
    assert streamed == ["o4", "o2", "o1", "o3"]


async def test_a_hostile_value_is_matched_literally(storage: Any) -> None:
    spec = SpecificationBuilder().where("status", "=", HOSTILE).build()
    assert await keys(storage, QueryOptions(spec)) == ["o3"]
    assert len(await keys(storage, QueryOptions())) == 4


async def test_a_hostile_like_pattern_is_matched_literally(storage: Any) -> None:
    spec = SpecificationBuilder().where("status", "contains", "'; DROP").build()
    assert await keys(storage, QueryOptions(spec)) == ["o3"]


def test_a_hostile_field_name_is_refused_before_any_sql_is_built() -> None:
    spec = SpecificationBuilder().where("status') OR 1=1 --", "=", "x").build()
    with pytest.raises(UnknownFieldError):
        document_query("orders", QueryOptions(spec), FIELDS)


def test_a_hostile_ordering_is_refused_before_any_sql_is_built() -> None:
    with pytest.raises(UnknownFieldError):
        document_query("orders", QueryOptions(order_by=("total; DROP TABLE x",)), FIELDS)


def test_a_hostile_operator_is_refused_before_any_sql_is_built() -> None:
    with pytest.raises(UnknownOperatorError):
        SpecificationBuilder().where("status", "= 'x' OR 1=1 --", "x")
