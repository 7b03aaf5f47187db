"""DateTime(timezone=True) columns read through execute_sql come back aware, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Column, DateTime, Integer, MetaData, Table, insert, select
from sqlalchemy.schema import CreateTable

metadata = MetaData()
moments = Table(
    "tz_moments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
)

PARIS_NOON = datetime(2026, 3, 2, 12, 0, tzinfo=timezone(timedelta(hours=1)))


async def test_an_aware_datetime_comes_back_aware_in_utc(sql_storage: Any) -> None:
    async with sql_storage.transaction() as session:
        await session.execute_sql(CreateTable(moments, if_not_exists=True))
        await session.execute_sql(insert(moments).values(id=1, at=PARIS_NOON))
    async with sql_storage.transaction() as session:
        [row] = await session.execute_sql(select(moments))

    assert row["at"] == PARIS_NOON
    assert row["at"].utcoffset() == timedelta(0)
    assert row["at"].astimezone(UTC).hour == 11


async def test_a_comparison_with_an_aware_datetime_uses_the_instant(sql_storage: Any) -> None:
    async with sql_storage.transaction() as session:
        await session.execute_sql(CreateTable(moments, if_not_exists=True))
        await session.execute_sql(insert(moments).values(id=1, at=PARIS_NOON))
        later = await session.execute_sql(
            select(moments.c.id).where(moments.c.at > datetime(2026, 3, 2, 11, 30, tzinfo=UTC))
        )
        earlier = await session.execute_sql(
            select(moments.c.id).where(moments.c.at > datetime(2026, 3, 2, 10, 30, tzinfo=UTC))
        )

    assert later == []
    assert earlier == [{"id": 1}]


async def test_an_in_list_of_aware_datetimes_matches_the_same_instants(sql_storage: Any) -> None:
    other = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    async with sql_storage.transaction() as session:
        await session.execute_sql(CreateTable(moments, if_not_exists=True))
        await session.execute_sql(insert(moments).values([{"id": 1, "at": PARIS_NOON}]))
        await session.execute_sql(insert(moments).values([{"id": 2, "at": other}]))
        rows = await session.execute_sql(
            select(moments.c.id)
            .where(moments.c.at.in_([PARIS_NOON.astimezone(UTC), other]))
            .order_by(moments.c.id)
        )

    assert rows == [{"id": 1}, {"id": 2}]
