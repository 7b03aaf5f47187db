"""Exact order for decimals and datetimes on SQLite, which has neither type.

SQLite would compare a ``Decimal`` as a double (wrong beyond 15 digits) and ISO 8601
datetimes as text (wrong across UTC offsets). Each value is turned instead into a text
key whose byte order is the value's order: the functions below compute it in Python,
for bound parameters, and inside SQLite, registered on every connection by
:func:`register_functions`, for values read out of JSON documents.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

__all__ = ["DECIMAL_KEY", "MOMENT_KEY", "decimal_key", "moment_key", "register_functions"]

DECIMAL_KEY = "eventfold_decimal_key"
"""The SQLite function that gives a number's (or its text's) order key."""
MOMENT_KEY = "eventfold_moment_key"
"""The SQLite function that gives an ISO 8601 datetime's order key (its UTC instant)."""

_EXPONENT_OFFSET = 50_000_000
_EXPONENT_WIDTH = 8
_COMPLEMENT = str.maketrans("0123456789", "9876543210")


def decimal_key(value: object) -> str | None:
    """Text that sorts as ``value`` (a number or a number's text) does; ``None`` if not one."""
    number = _decimal(value)
    if number is None or not number.is_finite():
        return None
    if number.is_zero():
        return "1"
    digits = "".join(str(digit) for digit in number.as_tuple().digits).rstrip("0")
    exponent = min(max(number.adjusted() + _EXPONENT_OFFSET, 0), 2 * _EXPONENT_OFFSET - 1)
    if number > 0:
        return f"2{exponent:0{_EXPONENT_WIDTH}d}{digits}"
    # Negative: a larger magnitude sorts first, so exponent and digits are complemented;
    # "~" sorts after every digit, so that -1.2 (shorter) sorts after -1.23.
    flipped = 2 * _EXPONENT_OFFSET - 1 - exponent
    return f"0{flipped:0{_EXPONENT_WIDTH}d}{digits.translate(_COMPLEMENT)}~"


def moment_key(value: object) -> str | None:
    """Fixed-width UTC text of a datetime or its ISO 8601 text (naive is UTC); else ``None``."""
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        if not isinstance(moment, datetime):
            return None
        if moment.utcoffset() is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        return moment.replace(tzinfo=None).isoformat(timespec="microseconds")
    except (ValueError, OverflowError):
        return None


def register_functions(connection: sqlite3.Connection) -> None:
    """Make :data:`DECIMAL_KEY` and :data:`MOMENT_KEY` callable in SQL on ``connection``."""
    connection.create_function(DECIMAL_KEY, 1, decimal_key, deterministic=True)
    connection.create_function(MOMENT_KEY, 1, moment_key, deterministic=True)


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None
