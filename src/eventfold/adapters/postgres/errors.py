"""asyncpg's exceptions translated into eventfold's, at the adapter's boundary."""

from __future__ import annotations

import re
from uuid import UUID

import asyncpg

from eventfold.errors import (
    DuplicateEventError,
    PersistenceError,
    SchemaMissingError,
    StoreUnavailableError,
)

DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
"""What the driver (or the socket under it) raises; everything else passes untouched."""

_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)

_RELATION = re.compile(r'relation "([^"]+)" does not exist')
_KEY_VALUE = re.compile(r"Key \([^)]*\)=\(([^)]*)\)")


def translate(exc: BaseException, store: str) -> PersistenceError:
    """The eventfold error that says what ``exc`` means for a user of ``store``."""
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailableError(store, _reason(exc))
    if isinstance(exc, asyncpg.UndefinedTableError):
        missing = _missing_relation(exc)
        if missing.startswith("eventfold_"):
            return SchemaMissingError(store, missing)
    if isinstance(exc, asyncpg.UniqueViolationError) and _is_event_id(exc):
        return DuplicateEventError(_key_value(exc))
    return PersistenceError(f"{store}: {_reason(exc)}")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _missing_relation(exc: asyncpg.PostgresError) -> str:
    match = _RELATION.search(str(exc))
    return match.group(1) if match else str(exc)


def _is_event_id(exc: asyncpg.UniqueViolationError) -> bool:
    constraint = getattr(exc, "constraint_name", None) or ""
    return constraint.endswith("_event_id")


def _key_value(exc: asyncpg.PostgresError) -> object:
    match = _KEY_VALUE.search(getattr(exc, "detail", None) or "")
    if match is None:
        return "(unknown)"
    try:
        return UUID(match.group(1))
    except ValueError:
        return match.group(1)
