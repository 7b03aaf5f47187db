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

DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
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

# What asyncpg's InterfaceError says when the connection under a statement is gone: the
# server ended it (pg_terminate_backend, a restart) or the network cut it, and asyncpg
# took the dead connection out of the pool (the proxy a session holds then says it was
# "released back to the pool"). Usage errors (wrong arguments, ...) say none of these.
_CONNECTION_GONE = re.compile(
    r"connection is closed|connection was closed|released back to the pool"
)

_CONNECTION_LOST = "the connection was lost (the server ended it, or the network cut it)"

_RELATION = re.compile(r'relation "([^"]+)" does not exist')
_KEY_VALUE = re.compile(r"Key \([^)]*\)=\(([^)]*)\)")


def translate(exc: BaseException, store: str) -> PersistenceError:
    """The eventfold error that says what ``exc`` means for a user of ``store``."""
    if _connection_gone(exc):
        return StoreUnavailableError(store, _CONNECTION_LOST)
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailableError(store, _reason(exc))
    if isinstance(exc, asyncpg.UndefinedTableError):
        missing = _missing_relation(exc)
        if missing.startswith("eventfold_"):
            return SchemaMissingError(store, missing)
    if isinstance(exc, asyncpg.UniqueViolationError) and _is_event_id(exc):
        return DuplicateEventError(_key_value(exc))
    return PersistenceError(f"{store}: {_reason(exc)}")


def _connection_gone(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.OutdatedSchemaCacheError):
        return False  # a statement outlived a change of schema: the connection is fine
    if isinstance(exc, asyncpg.InternalClientError):
        # The server's goodbye (a FATAL error sent to an idle connection it is ending)
        # arrives before the socket closes and leaves asyncpg's protocol in a state where
        # the next statement fails with "another operation is in progress".
        return True
    return isinstance(exc, asyncpg.InterfaceError) and bool(_CONNECTION_GONE.search(str(exc)))


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
