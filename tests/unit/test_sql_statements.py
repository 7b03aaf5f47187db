"""compile_statement renders statements for asyncpg's numeric parameters without I/O."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import asyncpg
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from eventfold import QueryOptions
from eventfold.adapters.sql.specification import search_table
from eventfold.adapters.sql.statements import compile_statement
from eventfold.errors import ConfigurationError, InvalidValueError

metadata = sa.MetaData()
items = sa.Table(
    "items",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.Text),
)


def test_asyncpg_parameter_numbers_index_the_parameter_list() -> None:
    statement = sa.select(items.c.name).where(items.c.id.in_([4, 5]), items.c.name != "x")

    compiled = compile_statement(statement, asyncpg.dialect())

    values = {
        column: compiled.params[int(number) - 1]
        for column, number in re.findall(r"items\.(\w+) (?:IN \(|!= )\$(\d+)", compiled.sql)
    }
    assert values == {"name": "x", "id": 4}
    assert compiled.params[1:] == [4, 5]


def test_result_keys_follow_the_selected_columns() -> None:
    compiled = compile_statement(sa.select(items.c.name, items.c.id), asyncpg.dialect())

    assert compiled.keys == ("name", "id")


def test_dialects_binding_parameters_by_name_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="positional"):
        compile_statement(sa.select(items), PGDialect_psycopg())


def test_searching_a_table_in_a_session_that_runs_no_sql_says_so() -> None:
    table = sa.Table("views", sa.MetaData(), sa.Column("id", sa.String, primary_key=True))

    with pytest.raises(ConfigurationError, match="runs no SQL"):
        search_table(object(), table, QueryOptions())  # type: ignore[arg-type]


@pytest.mark.parametrize("dialect", [asyncpg.dialect(), sqlite.dialect()])
@pytest.mark.parametrize("value", ["a\x00b", "a\ud800b"])
def test_text_no_backend_can_store_is_refused_naming_its_column(
    dialect: sa.engine.Dialect, value: str
) -> None:
    statement = sa.insert(items).values(id=1, name=value)
    with pytest.raises(InvalidValueError) as raised:
        compile_statement(statement, dialect)
    assert raised.value.field == "name"


@pytest.mark.parametrize("dialect", [asyncpg.dialect(), sqlite.dialect()])
def test_an_integer_beyond_64_bits_in_a_list_is_refused_naming_its_column(
    dialect: sa.engine.Dialect,
) -> None:
    statement = sa.select(items.c.name).where(items.c.id.in_([1, 2**64]))
    with pytest.raises(InvalidValueError) as raised:
        compile_statement(statement, dialect)
    assert raised.value.field == "id"
