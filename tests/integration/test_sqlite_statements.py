"""compile_statement runs SQLAlchemy Core statements on a raw sqlite3 connection."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from eventfold.adapters.sql.statements import compile_statement

metadata = sa.MetaData()
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("customer", sa.Uuid),
    sa.Column("lines", sa.JSON),
    sa.Column("total", sa.Numeric(10, 2)),
    sa.Column("placed_at", sa.DateTime),
    sa.Column("paid", sa.Boolean, default=False),
    sa.Column("note", sa.Text, default=lambda: "none"),
)

DIALECT = sqlite.dialect()


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "statements.db")
    connection.execute(str(sa.schema.CreateTable(orders).compile(dialect=DIALECT)))
    yield connection
    connection.close()


def run(connection: sqlite3.Connection, statement: Any) -> list[dict[str, Any]]:
    compiled = compile_statement(statement, DIALECT)
    cursor = connection.execute(compiled.sql, compiled.params)
    if cursor.description is None:
        return []
    keys = [column[0] for column in cursor.description]
    return compiled.process_rows(cursor.fetchall(), keys=keys)


def insert_order(connection: sqlite3.Connection, order_id: int, **values: Any) -> None:
    run(connection, orders.insert().values(id=order_id, **values))


def test_selected_rows_come_back_as_python_values(connection: sqlite3.Connection) -> None:
    customer = uuid.uuid4()
    placed_at = datetime(2024, 5, 17, 9, 30, 15, 123456)
    insert_order(
        connection,
        1,
        customer=customer,
        lines=[{"sku": "A-1", "qty": 2}],
        total=Decimal("19.90"),
        placed_at=placed_at,
        paid=True,
    )

    [row] = run(connection, sa.select(orders))

    assert row == {
        "id": 1,
        "customer": customer,
        "lines": [{"sku": "A-1", "qty": 2}],
        "total": Decimal("19.90"),
        "placed_at": placed_at,
        "paid": True,
        "note": "none",
    }


def test_python_side_defaults_are_applied_on_insert(connection: sqlite3.Connection) -> None:
    insert_order(connection, 1)

    [row] = run(connection, sa.select(orders.c.paid, orders.c.note))

    assert row == {"paid": False, "note": "none"}


def test_in_lists_expand_to_one_parameter_per_value(connection: sqlite3.Connection) -> None:
    for order_id in (1, 2, 3, 4):
        insert_order(connection, order_id)

    rows = run(connection, sa.select(orders.c.id).where(orders.c.id.in_([2, 4])).order_by("id"))

    assert rows == [{"id": 2}, {"id": 4}]


def test_labels_name_the_keys_of_a_row(connection: sqlite3.Connection) -> None:
    insert_order(connection, 1, total=Decimal("5.00"))

    [row] = run(connection, sa.select(sa.func.sum(orders.c.total).label("revenue")))

    assert row == {"revenue": Decimal("5.00")}


def test_updates_bind_processed_values(connection: sqlite3.Connection) -> None:
    insert_order(connection, 1, lines=[])
    run(connection, orders.update().where(orders.c.id == 1).values(lines={"gift": True}))

    [row] = run(connection, sa.select(orders.c.lines))

    assert row == {"lines": {"gift": True}}


def test_deletes_remove_the_matching_rows(connection: sqlite3.Connection) -> None:
    insert_order(connection, 1)
    insert_order(connection, 2)
    run(connection, orders.delete().where(orders.c.id == 1))

    assert run(connection, sa.select(orders.c.id)) == [{"id": 2}]


def test_textual_statements_take_their_keys_from_the_driver(
    connection: sqlite3.Connection,
) -> None:
    insert_order(connection, 7)

    rows = run(
        connection, sa.text("SELECT id AS order_id FROM orders WHERE id = :id").bindparams(id=7)
    )

    assert rows == [{"order_id": 7}]


def test_returning_rows_are_decoded(connection: sqlite3.Connection) -> None:
    statement = orders.insert().values(id=3, lines=["x"]).returning(orders.c.id, orders.c.lines)

    assert run(connection, statement) == [{"id": 3, "lines": ["x"]}]
