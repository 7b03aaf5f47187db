"""Events survive the trip to JSON and back exactly, whatever their field values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from uuid import UUID

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from eventfold import EventRegistry


class Channel(Enum):
    WEB = "web"
    PHONE = "phone"


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class OrderPlaced:
    order_id: UUID
    placed_at: datetime
    total: Decimal
    channel: Channel
    lines: list[Line]
    note: str | None = None
    tags: list[str] = field(default_factory=list)


class CustomerRegistered(BaseModel):
    customer_id: UUID
    registered_at: datetime
    credit_limit: Decimal
    channel: Channel
    referrer: str | None = None


decimals = st.decimals(allow_nan=False, allow_infinity=False, places=None)
# Fixed offsets to the minute: ISO 8601 carries no zone names, and an instant in a
# zone's fold or gap compares unequal to its own fixed-offset copy (PEP 495).
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(9000, 1, 1), timezones=offsets
)
lines = st.builds(Line, st.text(), st.integers(), decimals)
orders = st.builds(
    OrderPlaced,
    order_id=st.uuids(),
    placed_at=aware_datetimes,
    total=decimals,
    channel=st.sampled_from(Channel),
    lines=st.lists(lines, max_size=3),
    note=st.none() | st.text(),
    tags=st.lists(st.text(), max_size=3),
)
customers = st.builds(
    CustomerRegistered,
    customer_id=st.uuids(),
    registered_at=aware_datetimes,
    credit_limit=decimals,
    channel=st.sampled_from(Channel),
    referrer=st.none() | st.text(),
)

registry = EventRegistry([OrderPlaced, CustomerRegistered])


def _round_trip(event: object) -> object:
    encoded = registry.encode(event)
    return registry.decode(encoded.type_name, encoded.schema_version, encoded.data)


@given(orders)
def test_a_dataclass_event_comes_back_equal(event: OrderPlaced) -> None:
    assert _round_trip(event) == event


@given(customers)
def test_a_pydantic_event_comes_back_equal(event: CustomerRegistered) -> None:
    assert _round_trip(event) == event


@given(decimals)
def test_a_decimal_keeps_its_type_and_exact_digits(total: Decimal) -> None:
    event = OrderPlaced(UUID(int=1), datetime(2024, 1, 1, tzinfo=UTC), total, Channel.WEB, [])
    decoded = _round_trip(event)
    assert isinstance(decoded, OrderPlaced)
    assert type(decoded.total) is Decimal
    assert decoded.total.as_tuple() == total.as_tuple()


@given(decimals)
def test_a_decimal_is_written_as_a_json_string_never_a_number(total: Decimal) -> None:
    event = OrderPlaced(UUID(int=1), datetime(2024, 1, 1, tzinfo=UTC), total, Channel.WEB, [])
    assert isinstance(json.loads(registry.encode(event).data)["total"], str)


@given(aware_datetimes)
def test_an_aware_datetime_keeps_its_instant_and_offset(placed_at: datetime) -> None:
    event = OrderPlaced(UUID(int=1), placed_at, Decimal(1), Channel.WEB, [])
    decoded = _round_trip(event)
    assert isinstance(decoded, OrderPlaced)
    assert decoded.placed_at == placed_at
    assert decoded.placed_at.utcoffset() == placed_at.utcoffset()


def test_a_nested_decimal_stays_a_decimal() -> None:
    line = Line("a", 1, Decimal("0.10"))
    event = OrderPlaced(
        UUID(int=1), datetime(2024, 1, 1, tzinfo=UTC), Decimal(1), Channel.WEB, [line]
    )
    decoded = _round_trip(event)
    assert isinstance(decoded, OrderPlaced)
    assert decoded.lines[0].unit_price.as_tuple() == Decimal("0.10").as_tuple()


def test_an_enum_is_stored_by_value_and_read_back_as_the_member() -> None:
    event = OrderPlaced(
        UUID(int=1), datetime(2024, 1, 1, tzinfo=UTC), Decimal(1), Channel.PHONE, []
    )
    assert json.loads(registry.encode(event).data)["channel"] == "phone"
    decoded = _round_trip(event)
    assert isinstance(decoded, OrderPlaced)
    assert decoded.channel is Channel.PHONE
