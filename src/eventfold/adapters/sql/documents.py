"""Document searches and clears shared by the SQL backends."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, update

from eventfold.adapters.sql.schema import documents
from eventfold.adapters.sql.specification import search_documents
from eventfold.application.readside.queries import QueryOptions, SearchResult
from eventfold.domain.specification import FieldSet
from eventfold.ports.records import DocumentRecord
from eventfold.ports.storage import SqlExecutor

__all__ = ["clear_document_collection", "move_document_collection", "search_document_records"]


def search_document_records(
    executor: SqlExecutor, collection: str, options: QueryOptions, fields: FieldSet
) -> SearchResult[DocumentRecord]:
    """The documents of ``collection`` that ``options`` select, as records."""
    return search_documents(executor, collection, options, fields).map(_record)


async def clear_document_collection(executor: SqlExecutor, collection: str) -> int:
    """Delete every document of ``collection``; return how many."""
    table = documents
    rows = await executor.execute_sql(
        delete(table).where(table.c.collection == collection).returning(table.c.key)
    )
    return len(rows)


async def move_document_collection(executor: SqlExecutor, source: str, target: str) -> int:
    """Replace every document of ``target`` with those of ``source``; return how many moved."""
    table = documents
    await executor.execute_sql(delete(table).where(table.c.collection == target))
    rows = await executor.execute_sql(
        update(table)
        .where(table.c.collection == source)
        .values(collection=target)
        .returning(table.c.key)
    )
    return len(rows)


def _record(row: Mapping[str, Any]) -> DocumentRecord:
    data = row["data"]
    return DocumentRecord(
        row["collection"],
        row["key"],
        row["version"],
        data if isinstance(data, str) else json.dumps(data),
        row["updated_at"],
    )
