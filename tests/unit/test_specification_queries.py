"""Query options applied in memory, and search results awaited or streamed."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import pytest

from eventfold import (
    FieldSet,
    InvalidValueError,
    Page,
    QueryError,
    QueryOptions,
    SearchResult,
    SpecificationBuilder,
    UnknownFieldError,
    query_in_memory,
)

ROWS = [
    {"id": "a", "score": 3, "name": "x"},
    {"id": "b", "score": None, "name": "y"},
    {"id": "c", "score": 1, "name": "x"},
    {"id": "d", "score": 3, "name": None},
    {"id": "e", "score": 2, "name": "y"},
]
FIELDS = FieldSet("Row", {"score": int, "name": str, "price": Decimal})


def ids(options: QueryOptions, rows: list[dict[str, Any]] = ROWS) -> list[str]:
    page = query_in_memory(rows, options, key=lambda row: row["id"], fields=FIELDS)
    return [row["id"] for row in page.items]


def test_ascending_order_puts_nulls_first_and_breaks_ties_by_key() -> None:
    assert ids(QueryOptions(order_by=("score",))) == ["b", "c", "e", "a", "d"]


def test_descending_order_puts_nulls_last() -> None:
    assert ids(QueryOptions(order_by=("-score",))) == ["a", "d", "e", "c", "b"]


def test_several_keys_order_one_after_the_other() -> None:
    assert ids(QueryOptions(order_by=("-name", "score"))) == ["b", "e", "c", "a", "d"]


def test_limit_and_offset_take_a_slice_of_the_ordered_rows() -> None:
    assert ids(QueryOptions(order_by=("score",), limit=2, offset=1)) == ["c", "e"]


def test_the_specification_filters_before_paging() -> None:
    spec = SpecificationBuilder().where("name", "=", "x").build()
    assert ids(QueryOptions(spec, order_by=("-score",), limit=1)) == ["a"]


def test_the_total_counts_every_match_not_just_the_page() -> None:
    spec = SpecificationBuilder().where("score", ">=", 2).build()
    options = QueryOptions(spec, limit=1, include_total=True)
    assert query_in_memory(ROWS, options, key=lambda row: row["id"]).total == 3


def test_the_next_cursor_continues_after_the_last_row() -> None:
    options = QueryOptions(order_by=("-score",), limit=2)
    first = query_in_memory(ROWS, options, key=lambda row: row["id"], fields=FIELDS)
    assert ids(options.with_cursor(first.next_cursor)) == ["e", "c"]


def test_a_cursor_stays_correct_when_earlier_rows_are_deleted() -> None:
    options = QueryOptions(order_by=("score",), limit=2)
    first = query_in_memory(ROWS, options, key=lambda row: row["id"], fields=FIELDS)
    remaining = [row for row in ROWS if row["id"] not in ("b", "c")]
    assert ids(options.with_cursor(first.next_cursor), remaining) == ["e", "a"]


def test_decimal_fields_stored_as_text_compare_as_numbers() -> None:
    rows = [{"id": "a", "price": "10.5"}, {"id": "b", "price": "9.75"}]
    spec = SpecificationBuilder().where("price", ">", Decimal("10")).build()
    assert ids(QueryOptions(spec), rows) == ["a"]


def test_a_cursor_from_another_ordering_is_refused() -> None:
    first = query_in_memory(ROWS, QueryOptions(order_by=("score",), limit=1), key=lambda r: r["id"])
    with pytest.raises(QueryError):
        ids(QueryOptions(order_by=("name",), after=first.next_cursor))


def test_a_forged_cursor_is_refused() -> None:
    with pytest.raises(QueryError):
        ids(QueryOptions(after="bm90IGEgY3Vyc29y"))


@pytest.mark.parametrize(
    "value",
    [{"decimal": "not a number"}, {"datetime": "yesterday"}, 2**64, "a\u0000b", {"n": 1}],
)
def test_a_cursor_holding_a_value_no_query_produced_is_refused(value: object) -> None:
    token = base64.urlsafe_b64encode(json.dumps({"o": ["score"], "v": [value, "a"]}).encode())
    with pytest.raises(QueryError):
        ids(QueryOptions(order_by=("score",), after=token.decode()))


@pytest.mark.parametrize("limit", [-1, 2**64, "5", True])
def test_a_limit_that_is_not_a_count_a_database_takes_is_refused(limit: object) -> None:
    with pytest.raises(InvalidValueError) as raised:
        QueryOptions(limit=limit)  # type: ignore[arg-type]
    assert raised.value.field == "limit"


def test_ordering_by_an_undeclared_field_is_refused() -> None:
    with pytest.raises(UnknownFieldError):
        QueryOptions(order_by=("-secret",)).validate(FIELDS)


@pytest.mark.parametrize("options", [{"limit": -1}, {"offset": -2}, {"limit": True}])
def test_negative_pagination_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidValueError):
        QueryOptions(**options)


def test_fluent_methods_build_the_same_options_as_the_constructor() -> None:
    spec = SpecificationBuilder().where("name", "=", "x").build()
    fluent = (
        QueryOptions()
        .with_specification(spec)
        .with_ordering("-score")
        .with_pagination(limit=5, offset=2)
        .with_total()
    )
    assert fluent == QueryOptions(spec, ("-score",), limit=5, offset=2, include_total=True)


class Source:
    """A fetch callable over in-memory rows that records the page sizes asked for."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.limits: list[int | None] = []

    async def __call__(self, options: QueryOptions) -> Page[dict[str, Any]]:
        self.limits.append(options.limit)
        return query_in_memory(self.rows, options, key=lambda row: row["id"], fields=FIELDS)


async def test_awaiting_a_search_result_gives_the_page_as_a_list() -> None:
    result = SearchResult(Source(ROWS), QueryOptions(order_by=("score",), limit=2))
    assert [row["id"] for row in await result] == ["b", "c"]


async def test_the_total_is_known_after_awaiting_when_asked_for() -> None:
    result = SearchResult(Source(ROWS), QueryOptions(limit=1, include_total=True))
    await result
    assert result.total == 5


def test_reading_the_total_before_awaiting_is_refused() -> None:
    result = SearchResult(Source(ROWS), QueryOptions(include_total=True))
    with pytest.raises(QueryError):
        _ = result.total


async def test_stream_yields_every_match_in_order_fetching_batch_by_batch() -> None:
    source = Source(ROWS)
    result = SearchResult(source, QueryOptions(order_by=("-score",)))
    streamed = [row["id"] async for row in result.stream(batch_size=2)]
    assert streamed == ["a", "d", "e", "c", "b"]
    assert source.limits == [2, 2, 2]


async def test_stream_stops_at_the_options_limit() -> None:
    result = SearchResult(Source(ROWS), QueryOptions(order_by=("score",), limit=3))
    assert [row["id"] async for row in result.stream(batch_size=2)] == ["b", "c", "e"]


async def test_stream_refuses_a_batch_size_below_one() -> None:
    result = SearchResult(Source(ROWS), QueryOptions())
    with pytest.raises(InvalidValueError):
        [row async for row in result.stream(batch_size=0)]
