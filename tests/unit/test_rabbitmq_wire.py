"""eventfold's own AMQP publish frames are the bytes pamqp would write, and read back whole."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from uuid import uuid4

import pytest

pytest.importorskip("pamqp")

from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from eventfold.adapters.rabbitmq.wire import publish_frames, short_string
from eventfold.ports.broker import BrokerMessage

MESSAGE = BrokerMessage(
    event_id=uuid4(),
    type_name="OrderPlaced",
    schema_version=2,
    data='{"order": "o-1", "note": "caf\\u00e9 \u00e9"}',
    aggregate_type="Order",
    aggregate_id="o-1",
    occurred_at=datetime(2026, 3, 2, 9, 45, 12, 345678, tzinfo=UTC),
    correlation_id="c-1",
    causation_id="e-0",
    actor="ann",
)


def pamqp_bytes(message: BrokerMessage, *, channel: int, max_body: int) -> bytes:
    body = message.data.encode()
    properties = Basic.Properties(
        content_type="application/json",
        content_encoding="utf-8",
        headers=message.to_headers(),
        delivery_mode=2,
        correlation_id=message.correlation_id,
        message_id=str(message.event_id),
        timestamp=datetime.fromtimestamp(int(message.occurred_at.timestamp()), tz=UTC),
        message_type=message.type_name,
        app_id="eventfold",
    )
    frames: list[object] = [
        Basic.Publish(exchange="shop", routing_key=message.type_name),
        ContentHeader(0, len(body), properties),
    ]
    frames += [ContentBody(body[i : i + max_body]) for i in range(0, len(body), max_body)]
    return b"".join(pamqp_frame.marshal(f, channel) for f in frames)  # type: ignore[arg-type]


def encode(message: BrokerMessage, *, channel: int = 3, max_body: int = 131064) -> bytes:
    return publish_frames(
        message, channel=channel, exchange=short_string("shop"), max_body=max_body
    )


def test_the_frames_equal_pamqps_for_a_message_with_every_field() -> None:
    assert encode(MESSAGE) == pamqp_bytes(MESSAGE, channel=3, max_body=131064)


def test_optional_fields_left_out_are_left_out_of_headers_and_properties() -> None:
    bare = dataclasses.replace(MESSAGE, correlation_id=None, causation_id=None, actor=None)
    assert encode(bare) == pamqp_bytes(bare, channel=3, max_body=131064)


def test_a_body_longer_than_a_frame_is_split_into_several_body_frames() -> None:
    big = dataclasses.replace(MESSAGE, data='"' + "x" * 1000 + '"')
    assert encode(big, max_body=300) == pamqp_bytes(big, channel=3, max_body=300)


def test_pamqp_reads_the_frames_back_into_the_same_message() -> None:
    data = encode(MESSAGE)
    offset, frames = 0, []
    while offset < len(data):
        consumed, _, decoded = pamqp_frame.unmarshal(data[offset:])
        offset += consumed
        frames.append(decoded)
    publish, header, body = frames
    assert isinstance(publish, Basic.Publish)
    assert (publish.exchange, publish.routing_key) == ("shop", "OrderPlaced")
    assert isinstance(header, ContentHeader)
    assert isinstance(body, ContentBody)
    headers = {k: str(v) for k, v in (header.properties.headers or {}).items()}
    assert BrokerMessage.from_headers(headers, body.value.decode()) == MESSAGE


def test_a_correlation_id_too_long_for_a_property_travels_in_the_headers_only() -> None:
    long = dataclasses.replace(MESSAGE, correlation_id="c" * 300)
    _, _, header = pamqp_frame.unmarshal(encode(long)[len(encode_method(long)) :])
    assert isinstance(header, ContentHeader)
    assert header.properties.correlation_id is None
    assert header.properties.headers is not None
    assert header.properties.headers["eventfold-correlation-id"] == "c" * 300


def test_a_type_name_longer_than_a_short_string_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="255 bytes"):
        encode(dataclasses.replace(MESSAGE, type_name="T" * 256))


def encode_method(message: BrokerMessage) -> bytes:
    method = Basic.Publish(exchange="shop", routing_key=message.type_name)
    return pamqp_frame.marshal(method, 3)
