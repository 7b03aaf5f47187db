"""The values contract: what a backend refuses, and how it compares money and time.

Subclass :class:`StorableValuesContract` and :class:`DocumentValuesContract` and provide
a ``storage`` fixture (an empty storage with its schema created). Every backend must
refuse the same values, before any SQL, with an :class:`InvalidValueError` naming the
field; and filter and order decimals, datetimes (with any UTC offset) and dates exactly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from eventfold.application.readside.queries import QueryOptions
from eventfold.application.readside.read_models import DocumentReadModel
from eventfold.domain.errors import InvalidValueError
from eventfold.domain.specification import SpecificationBuilder
from eventfold.domain.storable import MAX_PATTERN_LENGTH
from eventfold.ports.records import AppendEvents, SaveDocument, StreamState, Write
from eventfold.ports.storage import Storage, StorageSession
from eventfold.testing.contracts.storage import append, event_record, read

__all__ = ["DocumentValuesContract", "Entry", "StorableValuesContract", "entries"]

PLUS_ONE = timezone(timedelta(hours=1))
UNSTORABLE_TEXT = ["a\x00b", "a\ud800b"]


class StorableValuesContract:
    """Ids, keys, moments and payloads no backend could store alike are refused, by name."""

    @pytest.mark.parametrize("stream_id", UNSTORABLE_TEXT)
    async def test_reading_a_stream_whose_id_no_backend_can_store_names_the_stream_id(
        self, storage: Storage, stream_id: str
    ) -> None:
        async with storage.transaction() as session:
            with pytest.raises(InvalidValueError) as raised:
                await session.read_stream(stream_id)
        assert raised.value.field == "stream_id"

    @pytest.mark.parametrize("stream_id", UNSTORABLE_TEXT)
    async def test_appending_to_a_stream_whose_id_no_backend_can_store_stores_nothing(
        self, storage: Storage, stream_id: str
    ) -> None:
        with pytest.raises(InvalidValueError) as raised:
            await append(storage, stream_id, event_record(), expected=StreamState.NO_STREAM)
        async with storage.transaction() as session:
            head = await session.log_head()
        assert (raised.value.field, head.position) == ("stream_id", 0)

    async def test_an_event_payload_holding_a_nul_character_is_refused_naming_its_type(
        self, storage: Storage
    ) -> None:
        record = event_record("NameChanged")
        bad = dataclasses.replace(record, data=json.dumps({"name": "a\x00b"}))
        with pytest.raises(InvalidValueError) as raised:
            await append(storage, "s-1", bad)
        assert raised.value.field == "NameChanged.data"

    async def test_a_payload_holding_an_escaped_backslash_before_u0000_is_stored(
        self, storage: Storage
    ) -> None:
        record = event_record()
        text = "a\\u0000b"  # a backslash, then "u0000": text, not a NUL character
        kept = dataclasses.replace(record, data=json.dumps({"name": text}))
        await append(storage, "s-1", kept)
        assert json.loads((await read(storage, "s-1"))[0].data) == {"name": text}

    @pytest.mark.parametrize("key", UNSTORABLE_TEXT)
    async def test_a_document_key_no_backend_can_store_is_refused_naming_the_key(
        self, storage: Storage, key: str
    ) -> None:
        async with storage.transaction() as session:
            with pytest.raises(InvalidValueError) as raised:
                await session.load_document("things", key)
        assert raised.value.field == "key"

    async def test_a_document_holding_a_nul_character_is_refused_before_it_is_written(
        self, storage: Storage
    ) -> None:
        data = json.dumps({"name": "a\x00b"})
        async with storage.transaction() as session:
            with pytest.raises(InvalidValueError) as raised:
                await session.save_document("things", "t-1", data, expected_version=0)
            assert await session.load_document("things", "t-1") is None
        assert raised.value.field == "things.data"

    async def test_a_write_batch_holding_an_unstorable_key_is_refused_and_stores_nothing(
        self, storage: Storage
    ) -> None:
        writes: list[Write] = [
            AppendEvents("s-1", [event_record()], StreamState.NO_STREAM),
            SaveDocument("things", "t\x00", "{}", 0),
        ]
        async with storage.transaction() as session:
            with pytest.raises(InvalidValueError) as raised:
                await session.write_batch(writes)
        assert (raised.value.field, await read(storage, "s-1")) == ("key", [])

    async def test_an_as_of_that_leaves_the_calendar_in_utc_is_refused_naming_as_of(
        self, storage: Storage
    ) -> None:
        await append(storage, "s-1", event_record())
        async with storage.transaction() as session:
            with pytest.raises(InvalidValueError) as raised:
                await session.read_stream("s-1", as_of=datetime(1, 1, 1, tzinfo=PLUS_ONE))
        assert raised.value.field == "as_of"

    async def test_a_naive_as_of_is_read_as_utc(self, storage: Storage) -> None:
        noon = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
        await append(storage, "s-1", event_record(n=1, occurred_at=noon))
        await append(storage, "s-1", event_record(n=2, occurred_at=noon + timedelta(hours=2)))
        async with storage.transaction() as session:
            events = await session.read_stream("s-1", as_of=datetime(2024, 5, 1, 13, 0))
        assert [json.loads(event.data)["n"] for event in events] == [1]


async def _fill(session: StorageSession) -> None:
    for entry in LEDGER:
        if await session.load_document(entries.collection, entry.key) is None:
            data = entries.encode(entry)
            await session.save_document(entries.collection, entry.key, data, expected_version=0)


@dataclass(frozen=True)
class Entry:
    """A ledger entry: money, a moment with an offset, and a day."""

    key: str
    amount: Decimal
    at: datetime
    day: date
    note: str = ""


entries = DocumentReadModel("ledger", Entry, key="key")

# Amounts a double cannot tell apart: REAL comparison would call them equal.
TINY = Decimal("0.1")
TINY_PLUS = Decimal("0.10000000000000000001")
TINY_PLUS_MORE = Decimal("0.10000000000000000002")
# Three instants given with three offsets, in this order in time: b (08:00Z), c
# (08:30Z), a (09:00Z); as text they sort a, b, c.
PLUS_TWO = timezone(timedelta(hours=2))
MINUS_ONE = timezone(timedelta(hours=-1))
LEDGER = [
    Entry("a", TINY_PLUS_MORE, datetime(2026, 1, 1, 9, 0, tzinfo=UTC), date(2026, 3, 1), "x"),
    Entry("b", TINY, datetime(2026, 1, 1, 10, 0, tzinfo=PLUS_TWO), date(2025, 12, 31), "y"),
    Entry("c", TINY_PLUS, datetime(2026, 1, 1, 7, 30, tzinfo=MINUS_ONE), date(2026, 1, 15), "xy"),
]


class DocumentValuesContract:
    """Decimals, datetimes and dates in documents compare exactly, the same on every backend."""

    async def _search(self, storage: Storage, options: QueryOptions) -> list[str]:
        async with storage.transaction() as session:
            await _fill(session)
            return [entry.key for entry in await entries.search(session, options)]

    async def test_decimals_a_double_cannot_tell_apart_filter_exactly(
        self, storage: Storage
    ) -> None:
        spec = SpecificationBuilder().where("amount", ">", TINY).build()
        found = await self._search(storage, QueryOptions(spec).with_ordering("key"))
        assert found == ["a", "c"]

    async def test_an_equal_decimal_matches_only_its_own_value(self, storage: Storage) -> None:
        spec = SpecificationBuilder().where("amount", "=", TINY_PLUS).build()
        assert await self._search(storage, QueryOptions(spec)) == ["c"]

    async def test_decimals_a_double_cannot_tell_apart_order_exactly(
        self, storage: Storage
    ) -> None:
        found = await self._search(storage, QueryOptions().with_ordering("-amount"))
        assert found == ["a", "c", "b"]

    async def test_datetimes_with_different_offsets_order_by_their_instant(
        self, storage: Storage
    ) -> None:
        found = await self._search(storage, QueryOptions().with_ordering("at"))
        assert found == ["b", "c", "a"]

    async def test_datetimes_with_different_offsets_filter_by_their_instant(
        self, storage: Storage
    ) -> None:
        after = datetime(2026, 1, 1, 9, 15, tzinfo=PLUS_ONE)  # 08:15Z
        spec = SpecificationBuilder().where("at", ">", after).build()
        assert await self._search(storage, QueryOptions(spec).with_ordering("at")) == ["c", "a"]

    async def test_a_naive_datetime_in_a_condition_is_utc(self, storage: Storage) -> None:
        spec = SpecificationBuilder().where("at", "<", datetime(2026, 1, 1, 8, 15)).build()
        assert await self._search(storage, QueryOptions(spec)) == ["b"]

    async def test_dates_filter_and_order_as_dates(self, storage: Storage) -> None:
        spec = SpecificationBuilder().where("day", ">=", date(2026, 1, 1)).build()
        assert await self._search(storage, QueryOptions(spec).with_ordering("-day")) == ["a", "c"]

    async def test_pages_ordered_by_datetime_follow_the_cursor(self, storage: Storage) -> None:
        first = QueryOptions().with_ordering("-at").with_pagination(limit=2)
        async with storage.transaction() as session:
            await _fill(session)
            page = entries.search(session, first)
            seen = [entry.key for entry in await page]
            rest = await entries.search(session, first.with_cursor(page.next_cursor))
        assert seen + [entry.key for entry in rest] == ["a", "c", "b"]

    @pytest.mark.parametrize(
        ("operator", "text"), [("contains", "x"), ("startswith", "x"), ("like", "x%")]
    )
    async def test_search_text_with_a_nul_character_is_refused_never_widening_the_filter(
        self, storage: Storage, operator: str, text: str
    ) -> None:
        with pytest.raises(InvalidValueError) as raised:
            SpecificationBuilder().where("note", operator, text + "\x00")
        spec = SpecificationBuilder().where("note", operator, text).build()
        found = await self._search(storage, QueryOptions(spec).with_ordering("key"))
        assert (raised.value.field, found) == ("note", ["a", "c"])

    async def test_search_text_longer_than_a_backend_can_match_is_refused(
        self, storage: Storage
    ) -> None:
        with pytest.raises(InvalidValueError) as raised:
            SpecificationBuilder().where("note", "contains", "x" * (MAX_PATTERN_LENGTH + 1))
        longest = SpecificationBuilder().where("note", "contains", "y" * MAX_PATTERN_LENGTH)
        found = await self._search(storage, QueryOptions(longest.build()))
        assert (raised.value.field, found) == ("note", [])

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("amount", Decimal("1e999999")),
            ("at", datetime(1, 1, 1, tzinfo=PLUS_ONE)),
            ("note", "a\ud800"),
        ],
    )
    async def test_a_condition_value_no_backend_can_compare_is_refused_naming_the_field(
        self, storage: Storage, field: str, value: object
    ) -> None:
        with pytest.raises(InvalidValueError) as raised:
            SpecificationBuilder().where(field, "=", value)
        assert raised.value.field == field

    async def test_an_integer_beyond_64_bits_is_refused_naming_the_field(
        self, storage: Storage
    ) -> None:
        with pytest.raises(InvalidValueError) as raised:
            SpecificationBuilder().where("count", ">", 2**64)
        assert raised.value.field == "count"
