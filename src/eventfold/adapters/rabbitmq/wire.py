"""AMQP 0-9-1 frames for publishing eventfold messages, encoded without pamqp.

pamqp encodes a message's content header through generic per-property and per-header
dispatch that costs tens of microseconds per message, more than the rest of a relay's
work on it. The properties eventfold sends are few and fixed, so they are written here
with a handful of ``struct`` packs. ``tests/unit/test_rabbitmq_wire.py`` checks the
bytes against pamqp's.

Kept because the relay workload of ``python -m benchmarks`` on RabbitMQ measures it (4x
aio-pika's ``publish``). The publisher writes these frames on aiormq's channel and
registers their confirmations there, so aiormq and aio-pika are pinned in pyproject.toml
to the versions the test suite runs; the broker contract suite and the relay's outage
tests are its stress tests.
"""

from __future__ import annotations

import struct

from eventfold.ports.broker import BrokerMessage

__all__ = ["publish_frames", "short_string"]

_FRAME_END = b"\xce"
_METHOD, _HEADER, _BODY = 1, 2, 3
_BASIC = 60
_PUBLISH = 40
_SHORT_MAX = 255

_frame_start = struct.Struct(">BHI")
_publish_start = struct.Struct(">HHH")
_header_start = struct.Struct(">HHQH")
_long = struct.Struct(">I")
_timestamp = struct.Struct(">Q")

# Property flags, in the order the properties follow the flags (AMQP 0-9-1, 4.2.6.1).
_CONTENT_TYPE = 1 << 15
_CONTENT_ENCODING = 1 << 14
_HEADERS = 1 << 13
_DELIVERY_MODE = 1 << 12
_CORRELATION_ID = 1 << 10
_MESSAGE_ID = 1 << 7
_TIMESTAMP = 1 << 6
_TYPE = 1 << 5
_APP_ID = 1 << 3

_FIXED_START = (
    b"\x10application/json"  # content-type
    b"\x05utf-8"  # content-encoding
)
_PERSISTENT = b"\x02"
_APP = b"\x09eventfold"


def _short(text: str) -> bytes:
    data = text.encode()
    if len(data) > _SHORT_MAX:
        msg = f"AMQP short strings hold 255 bytes at most: {text[:40]!r}..."
        raise ValueError(msg)
    return bytes((len(data),)) + data


def _fits_short(text: str | None) -> bool:
    return text is not None and len(text.encode()) <= _SHORT_MAX


def _table(headers: dict[str, str]) -> bytes:
    """A field table of long-string values, keys sorted (as pamqp writes them)."""
    parts: list[bytes] = []
    for key in sorted(headers):
        value = headers[key].encode()
        parts += (_short(key), b"S", _long.pack(len(value)), value)
    body = b"".join(parts)
    return _long.pack(len(body)) + body


def _frame(kind: int, channel: int, payload: bytes) -> bytes:
    return _frame_start.pack(kind, channel, len(payload)) + payload + _FRAME_END


def _properties(message: BrokerMessage) -> tuple[int, bytes]:
    """Flags and encoded values of the message's AMQP basic properties."""
    flags = _CONTENT_TYPE | _CONTENT_ENCODING | _HEADERS | _DELIVERY_MODE
    parts = [_FIXED_START, _table(message.to_headers()), _PERSISTENT]
    # Optional text properties too long for a short string travel in the headers only.
    if _fits_short(message.correlation_id):
        flags |= _CORRELATION_ID
        parts.append(_short(message.correlation_id or ""))
    flags |= _MESSAGE_ID | _TIMESTAMP
    seconds = max(0, int(message.occurred_at.timestamp()))
    parts += (_short(str(message.event_id)), _timestamp.pack(seconds))
    if _fits_short(message.type_name):
        flags |= _TYPE
        parts.append(_short(message.type_name))
    flags |= _APP_ID
    parts.append(_APP)
    return flags, b"".join(parts)


def publish_frames(
    message: BrokerMessage, *, channel: int, exchange: bytes, max_body: int
) -> bytes:
    """The method, content header and body frames publishing ``message``.

    ``exchange`` is the exchange name as an encoded short string; ``max_body`` the
    largest body frame payload the connection's ``frame_max`` allows. The routing key
    is the message's type name; the message is persistent and not mandatory. Raises
    ValueError for a type name longer than a short string.
    """
    body = message.data.encode()
    method = (
        _publish_start.pack(_BASIC, _PUBLISH, 0) + exchange + _short(message.type_name) + b"\x00"
    )
    flags, properties = _properties(message)
    header = _header_start.pack(_BASIC, 0, len(body), flags) + properties
    frames = [_frame(_METHOD, channel, method), _frame(_HEADER, channel, header)]
    frames += (
        _frame(_BODY, channel, body[start : start + max_body])
        for start in range(0, len(body), max_body)
    )
    return b"".join(frames)


def short_string(text: str) -> bytes:
    """``text`` as an AMQP short string (length octet, UTF-8 bytes); ValueError if too long."""
    return _short(text)
