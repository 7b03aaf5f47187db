"""create_read_models makes the tables of table read models, idempotently, on each SQL backend."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from sqlalchemy import Column, Index, Integer, MetaData, Table, Text, insert, select

from eventfold import ConfigurationError, Projection
from eventfold.adapters.memory import create_memory_storage
from eventfold.adapters.sql import TableReadModel, create_read_models

metadata = MetaData()
labels_table = Table(
    "crm_labels",
    metadata,
    Column("id", Text, primary_key=True),
    Column("uses", Integer, nullable=False),
    Index("crm_labels_uses", "uses"),
)
labels = TableReadModel(labels_table)


class Labels(Projection):
    name: ClassVar[str] = "labels"
    read_models: ClassVar[tuple[TableReadModel, ...]] = (labels,)


async def test_the_tables_are_created_once_and_kept_with_their_rows(sql_storage: Any) -> None:
    await create_read_models(sql_storage, [Labels()])
    async with sql_storage.transaction() as session:
        await session.execute_sql(insert(labels_table).values(id="a", uses=1))

    await create_read_models(sql_storage, [Labels()])

    async with sql_storage.transaction() as session:
        rows = await session.execute_sql(select(labels_table))
    assert rows == [{"id": "a", "uses": 1}]


async def test_a_storage_without_sql_is_refused_for_a_table_read_model() -> None:
    with pytest.raises(ConfigurationError, match="runs no SQL"):
        await create_read_models(create_memory_storage(), [Labels()])


async def test_projections_without_table_read_models_need_nothing() -> None:
    await create_read_models(create_memory_storage(), [])
