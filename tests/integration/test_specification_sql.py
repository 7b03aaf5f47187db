"""Specifications translated to SQL select what they select in memory, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
)
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.base import Executable

from eventfold.adapters.sql.schema import documents
from eventfold.adapters.sql.sortable import register_functions
from eventfold.adapters.sql.specification import SqlQuery, document_query, table_query
from eventfold.adapters.sql.statements import compile_statement
from eventfold.application.readside.queries import QueryOptions, query_in_memory
from eventfold.domain.specification import Condition, FieldSet, Operator, Specification
from tests.conftest import POSTGRES_DSN, require_service, unique_name

pytestmark = pytest.mark.filterwarnings("error")

DOCUMENT_FIELDS = FieldSet(
    "Row",
    {
        "n": int,
        "x": float,
        "s": str,
        "b": bool,
        "d": Decimal,
        "c.city": str,
        "tags": list[str],
    },
)
TABLE_FIELDS = FieldSet(
    "Row", {"n": int, "x": float, "s": str, "b": bool, "d": Decimal, "city": str}
)
COLLECTION = "rows"

# Characters that trip translations: LIKE and GLOB wildcards, the escape, case, non-ASCII.
TEXT = st.text(alphabet="aAbB%_\\*?[é ", max_size=4)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "n": st.integers(-(2**62), 2**62),
    "x": st.floats(allow_nan=False, allow_infinity=False),
    "s": TEXT,
    "b": st.booleans(),
    "d": st.decimals(places=2, min_value=-(10**6), max_value=10**6, allow_nan=False),
    "c.city": TEXT,
}
NUMERIC_OPS = ["=", "!=", "<", "<=", ">", ">=", "in", "not in", "between", "is null"]
TEXT_OPS = [*NUMERIC_OPS, "like", "contains", "startswith"]
OPERATORS = {"n": NUMERIC_OPS, "x": NUMERIC_OPS, "d": NUMERIC_OPS, "b": ["=", "!=", "in"]}
OPERATORS |= {"s": TEXT_OPS, "c.city": TEXT_OPS}


def _like_pattern() -> st.SearchStrategy[str]:
    return TEXT.filter(lambda p: not p.endswith("\\") or p.endswith("\\\\"))


@st.composite
def conditions(draw: st.DrawFn) -> Specification:
    field = draw(st.sampled_from([*OPERATORS, "tags"]))
    if field == "tags":
        operator = draw(st.sampled_from(["contains", "is null"]))
        value: Any = draw(st.booleans() if operator == "is null" else TEXT)
        return Condition(field, Operator(operator), value)
    operator = draw(st.sampled_from(OPERATORS[field]))
    values = VALUES[field]
    if operator == "is null":
        value = draw(st.booleans())
    elif operator in ("in", "not in"):
        value = draw(st.lists(values, max_size=3))
    elif operator == "between":
        value = (draw(values), draw(values))
    elif operator == "like":
        value = draw(_like_pattern())
    else:
        value = draw(values)
    return Condition(field, Operator(operator), value)


specifications = st.recursive(
    conditions(),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda pair: pair[0] & pair[1]),
        st.tuples(inner, inner).map(lambda pair: pair[0] | pair[1]),
        inner.map(lambda spec: ~spec),
    ),
    max_leaves=4,
)


@st.composite
def rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(0, 8))
    result = []
    for index in range(count):
        row: dict[str, Any] = {"id": f"k{index:02d}"}
        for field, values in VALUES.items():
            row[field] = draw(st.none() | values)
        row["tags"] = draw(st.none() | st.lists(TEXT, max_size=3))
        result.append(row)
    return result


orderings = st.lists(
    st.sampled_from(["n", "-n", "x", "-x", "s", "-s", "b", "-b", "d", "-d", "c.city", "-c.city"]),
    max_size=3,
    unique_by=lambda key: key.lstrip("-"),
)


def _document(row: dict[str, Any]) -> dict[str, Any]:
    """The row as eventfold's serialiser would store it: Decimal as text, nesting kept."""
    data = {k: v for k, v in row.items() if k not in ("id", "c.city")}
    data["d"] = None if row["d"] is None else str(row["d"])
    data["c"] = {"city": row["c.city"]}
    return data


def _table_row(row: dict[str, Any]) -> dict[str, Any]:
    values = {k: v for k, v in row.items() if k not in ("c.city", "tags")}
    return values | {"city": row["c.city"]}


def _for_table(spec: Specification) -> Specification | None:
    """The same specification over the table's column names; None if it uses a list field."""
    if any(c.field == "tags" for c in spec.conditions()):
        return None
    return _rename(spec)


def _rename(spec: Specification) -> Specification:
    if isinstance(spec, Condition):
        field = "city" if spec.field == "c.city" else spec.field
        return Condition(field, spec.operator, spec.value)
    parts = getattr(spec, "parts", None)
    if parts is not None:
        return type(spec)(tuple(_rename(part) for part in parts))  # type: ignore[call-arg]
    return ~_rename(spec.part)  # type: ignore[attr-defined]


class Database:
    """One real database with a user table and eventfold's document table."""

    def __init__(self) -> None:
        self.metadata = MetaData()
        self.table = Table(
            unique_name("spec"),
            self.metadata,
            Column("id", String(8), primary_key=True),
            Column("n", BigInteger),
            Column("x", Float(precision=53)),
            Column("s", Text),
            Column("b", Boolean),
            # Returned as float: SQLite stores doubles and SQLAlchemy warns on Decimal.
            Column("d", Numeric(12, 2, asdecimal=False)),
            Column("city", Text),
        )
        documents.to_metadata(self.metadata)

    async def execute(self, statement: Executable) -> list[dict[str, Any]]:
        """Run a Core statement; rows as dictionaries."""
        raise NotImplementedError

    async def load(self, data: list[dict[str, Any]]) -> None:
        await self.execute(delete(self.table))
        await self.execute(delete(documents))
        for row in data:
            await self.execute(insert(self.table).values(_table_row(row)))
            await self.execute(insert(documents).values(_document_row(row)))

    async def ids(self, query: SqlQuery) -> tuple[list[str], int | None, str | None]:
        found = await self.execute(query.select)
        total = None
        if query.count is not None:
            total = next(iter((await self.execute(query.count))[0].values()))
        page = query.page(found, total)
        return [row.get("id") or row["key"] for row in page.items], total, page.next_cursor


class SqliteDatabase(Database):
    """A SQLite file, through SQLAlchemy's engine over the standard library driver."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.engine = create_engine(f"sqlite:///{path}")
        # What eventfold's SQLite storage does on every connection it opens.
        event.listen(self.engine, "connect", lambda connection, _: register_functions(connection))
        self.metadata.create_all(self.engine)

    async def execute(self, statement: Executable) -> list[dict[str, Any]]:
        with self.engine.begin() as connection:
            result = connection.execute(statement)
            return [dict(row) for row in result.mappings()] if result.returns_rows else []


class PostgresDatabase(Database):
    """A PostgreSQL schema, through asyncpg and eventfold's statement compiler."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        super().__init__()
        self.connection = connection

    async def create(self) -> None:
        for table in self.metadata.sorted_tables:
            await self.connection.execute(str(CreateTable(table).compile(dialect=_PG)))

    async def execute(self, statement: Executable) -> list[dict[str, Any]]:
        compiled = compile_statement(statement, _PG)
        prepared = await self.connection.prepare(compiled.sql)
        rows = await prepared.fetch(*compiled.params)
        attributes = prepared.get_attributes()
        keys = [attribute.name for attribute in attributes]
        types = [attribute.type.oid for attribute in attributes]
        return compiled.process_rows(rows, keys=keys, column_types=types)


_PG = asyncpg_dialect()


def _document_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "collection": COLLECTION,
        "key": row["id"],
        "version": 1,
        "data": _document(row),
        "updated_at": datetime(2024, 1, 1, tzinfo=UTC),
    }


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh SQLite file, or a PostgreSQL schema of its own dropped afterwards."""
    if request.param == "sqlite":
        database = SqliteDatabase(tmp_path / "spec.db")
        yield database
        database.engine.dispose()
        return
    require_service("postgres")
    schema = unique_name("spec")
    admin = await asyncpg.connect(POSTGRES_DSN)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    connection = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})
    try:
        postgres = PostgresDatabase(connection)
        await postgres.create()
        yield postgres
    finally:
        await connection.close()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


def _memory_documents(data: list[dict[str, Any]], options: QueryOptions) -> tuple[Any, ...]:
    stored = [(row["id"], json.loads(json.dumps(_document(row)))) for row in data]
    page = query_in_memory(
        stored, options, key=lambda item: item[0], view=lambda item: item[1], fields=DOCUMENT_FIELDS
    )
    return [key for key, _ in page.items], page.total


def _memory_table(data: list[dict[str, Any]], options: QueryOptions) -> tuple[Any, ...]:
    stored = [_table_row(row) for row in data]
    page = query_in_memory(stored, options, key=lambda row: row["id"], fields=TABLE_FIELDS)
    return [row["id"] for row in page.items], page.total


EXAMPLES = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@EXAMPLES
@given(data=rows(), spec=specifications)
async def test_documents_matching_in_sql_are_those_matching_in_memory(
    database: Database, data: list[dict[str, Any]], spec: Specification
) -> None:
    await database.load(data)
    options = QueryOptions(spec, include_total=True)
    found = await database.ids(document_query(COLLECTION, options, DOCUMENT_FIELDS))
    assert found[:2] == _memory_documents(data, options)


@EXAMPLES
@given(data=rows(), spec=specifications)
async def test_table_rows_matching_in_sql_are_those_matching_in_memory(
    database: Database, data: list[dict[str, Any]], spec: Specification
) -> None:
    table_spec = _for_table(spec)
    if table_spec is None:
        return
    await database.load(data)
    options = QueryOptions(table_spec, include_total=True)
    found = await database.ids(table_query(database.table, options, fields=TABLE_FIELDS))
    assert found[:2] == _memory_table(data, options)


@EXAMPLES
@given(data=rows(), order=orderings, limit=st.integers(1, 4), offset=st.integers(0, 2))
async def test_documents_are_ordered_and_paged_as_in_memory(
    database: Database, data: list[dict[str, Any]], order: list[str], limit: int, offset: int
) -> None:
    await database.load(data)
    options = QueryOptions(order_by=tuple(order), limit=limit, offset=offset)
    first = await database.ids(document_query(COLLECTION, options, DOCUMENT_FIELDS))
    assert first[:2] == _memory_documents(data, options)
    following = options.with_cursor(first[2]).with_pagination(limit=limit)
    if first[2] is not None:
        second = await database.ids(document_query(COLLECTION, following, DOCUMENT_FIELDS))
        assert second[:2] == _memory_documents(data, following)


@EXAMPLES
@given(data=rows(), order=orderings, limit=st.integers(1, 4))
async def test_table_rows_are_ordered_and_keyset_paged_as_in_memory(
    database: Database, data: list[dict[str, Any]], order: list[str], limit: int
) -> None:
    await database.load(data)
    table_order = tuple(key.replace("c.city", "city") for key in order)
    options = QueryOptions(order_by=table_order, limit=limit)
    first = await database.ids(table_query(database.table, options, fields=TABLE_FIELDS))
    assert first[:2] == _memory_table(data, options)
    if first[2] is not None:
        following = options.with_cursor(first[2])
        second = await database.ids(table_query(database.table, following, fields=TABLE_FIELDS))
        assert second[:2] == _memory_table(data, following)
