"""State-stored rows in a user's own SQLAlchemy table, with a version column checked on write.

Imported only when a type is mapped to a table, so SQLAlchemy stays an optional extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, insert, select, update

from eventfold.application.persistence.model import TableMapping
from eventfold.errors import ConcurrencyError
from eventfold.ports import SqlExecutor

__all__ = ["delete_row", "load_row", "save_row"]


async def load_row(
    executor: SqlExecutor, mapping: TableMapping, key: Any
) -> Mapping[str, Any] | None:
    """The row stored under ``key``, or None."""
    table = mapping.table
    rows = await executor.execute_sql(select(table).where(table.c[mapping.key_column] == key))
    return rows[0] if rows else None


async def save_row(executor: SqlExecutor, mapping: TableMapping, entity: Any, expected: int) -> int:
    """Insert (``expected == 0``) or update at ``expected``; return the row's new version."""
    table = mapping.table
    values = {**mapping.to_row(entity), mapping.version_column: expected + 1}
    if expected == 0:
        await executor.execute_sql(insert(table).values(values))
        return 1
    version = table.c[mapping.version_column]
    statement = (
        update(table)
        .where(table.c[mapping.key_column] == entity.id, version == expected)
        .values(values)
        .returning(version)
    )
    if not await executor.execute_sql(statement):
        raise await _conflict(executor, mapping, entity.id, expected)
    return expected + 1


async def delete_row(executor: SqlExecutor, mapping: TableMapping, key: Any, expected: int) -> None:
    """Delete the row at ``expected``."""
    table = mapping.table
    version = table.c[mapping.version_column]
    statement = (
        delete(table)
        .where(table.c[mapping.key_column] == key, version == expected)
        .returning(version)
    )
    if not await executor.execute_sql(statement):
        raise await _conflict(executor, mapping, key, expected)


async def _conflict(
    executor: SqlExecutor, mapping: TableMapping, key: Any, expected: int
) -> ConcurrencyError:
    # Only on the failure path: one more read to say what the version is now.
    row = await load_row(executor, mapping, key)
    actual = 0 if row is None else int(row[mapping.version_column])
    return ConcurrencyError(f"{mapping.table.name}/{key}", expected, actual)
