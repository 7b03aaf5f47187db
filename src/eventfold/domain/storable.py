"""What every backend can store alike: checks run before any value reaches a database.

The in-memory backend keeps any Python value, SQLite and PostgreSQL do not, and each
refuses different things (PostgreSQL a NUL character, SQLite a string that is not
UTF-8; a ``GLOB`` pattern stops at a NUL and so matches more). So that a value is
accepted or refused the same way on every backend, and refused *before* any SQL with an
error naming the field, every backend and the specification layer check values here:

- text holds no NUL character and no lone surrogate (it must be valid UTF-8);
- an integer fits in 64 bits (signed);
- a number is finite, and a ``Decimal`` fits PostgreSQL's ``numeric``: at most
  131072 digits before the point and 16383 after;
- a datetime stays within years 1 to 9999 when converted to UTC. A *naive* datetime is
  taken as UTC, on every backend;
- a ``like``, ``startswith`` or ``contains`` search text has at most
  :data:`MAX_PATTERN_LENGTH` characters (SQLite refuses longer patterns).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from decimal import Decimal

from eventfold.domain.errors import InvalidValueError

__all__ = [
    "MAX_PATTERN_LENGTH",
    "check_json_text",
    "check_key",
    "check_pattern",
    "check_value",
    "utc_moment",
]

MAX_PATTERN_LENGTH = 10_000
"""The longest search text: SQLite refuses patterns over 50,000 bytes, and a character
takes up to 4 bytes of UTF-8 (plus escapes)."""

_INT64 = 2**63
_MAX_INTEGER_DIGITS = 131_072  # PostgreSQL numeric: digits before the decimal point
_MAX_FRACTION_DIGITS = 16_383  # and after it
# "\u0000" in JSON text, not preceded by an escaping backslash: a NUL in a JSON string.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def check_key(field: str, value: object) -> str:
    """``value`` if it is text a backend can store as an id or key; else raise."""
    if not isinstance(value, str):
        raise InvalidValueError(field, value, f"an id is text, not {type(value).__name__}")
    return _check_text(field, value)


def check_value(field: str, value: object) -> object:
    """``value`` if every backend can store and compare it as it is; else raise."""
    if isinstance(value, str):
        _check_text(field, value)
    elif isinstance(value, int) and not isinstance(value, bool):
        if not -_INT64 <= value < _INT64:
            raise InvalidValueError(field, value, "integers must fit in 64 bits")
    elif isinstance(value, float) and not math.isfinite(value):
        raise InvalidValueError(field, value, "numbers must be finite")
    elif isinstance(value, Decimal):
        _check_decimal(field, value)
    elif isinstance(value, datetime):
        utc_moment(field, value)
    return value


def check_pattern(field: str, value: str) -> str:
    """``value`` if it is text a backend can match as a search pattern; else raise."""
    if len(value) > MAX_PATTERN_LENGTH:
        reason = f"a search text has at most {MAX_PATTERN_LENGTH} characters"
        raise InvalidValueError(field, value, reason)
    return _check_text(field, value)


def check_json_text(field: str, text: str) -> str:
    """``text`` (encoded JSON) if no string in it holds a NUL character; else raise."""
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise InvalidValueError(field, "…", "text must not contain a NUL character")
    return text


def utc_moment(field: str, value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (a naive one *is* UTC); raise if out of range."""
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidValueError(field, value, "is outside years 1 to 9999 in UTC") from None


def _check_text(field: str, value: str) -> str:
    if "\x00" in value:
        raise InvalidValueError(field, value, "text must not contain a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError:
        reason = "text must be valid Unicode (it holds a lone surrogate)"
        raise InvalidValueError(field, value, reason) from None
    return value


def _check_decimal(field: str, value: Decimal) -> Decimal:
    if not value.is_finite():
        raise InvalidValueError(field, value, "numbers must be finite")
    exponent = int(value.as_tuple().exponent)  # an int for every finite decimal
    if value.adjusted() >= _MAX_INTEGER_DIGITS or -exponent > _MAX_FRACTION_DIGITS:
        reason = (
            f"a decimal has at most {_MAX_INTEGER_DIGITS} digits before the point "
            f"and {_MAX_FRACTION_DIGITS} after it"
        )
        raise InvalidValueError(field, value, reason)
    return value
