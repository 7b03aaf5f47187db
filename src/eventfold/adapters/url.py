"""A storage from a database URL: ``sqlite:///shop.db``, ``postgresql://host/db?schema=s``.

Each backend's driver is imported only when its URL is used, so an application that
runs on SQLite needs no PostgreSQL driver installed, and the other way round.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from eventfold.errors import ConfigurationError
from eventfold.ports import Storage

__all__ = ["SUPPORTED_URLS", "sqlite_path", "storage_from_url"]

SUPPORTED_URLS = "sqlite:///path/to.db, postgresql://user@host:5432/db[?schema=name] or memory://"


def storage_from_url(url: str, *, schema: str | None = None) -> Storage:
    """The storage a URL names; nothing connects until its first transaction.

    A PostgreSQL URL may carry ``?schema=name`` (the schema of eventfold's tables);
    ``schema`` overrides it. A driver suffix (``postgresql+asyncpg://``) is accepted.
    """
    scheme = urlsplit(url).scheme.split("+", maxsplit=1)[0].lower()
    if scheme == "sqlite":
        return _sqlite(url)
    if scheme in ("postgres", "postgresql"):
        return _postgres(url, schema)
    if scheme == "memory":
        from eventfold.adapters.memory import create_memory_storage  # noqa: PLC0415

        return create_memory_storage()
    msg = f"unsupported database URL {_redacted(url)!r}: use {SUPPORTED_URLS}"
    raise ConfigurationError(msg)


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:///`` URL names (``sqlite:////abs/path.db`` for absolute paths)."""
    rest = url.split(":", maxsplit=1)[1]
    if not rest.startswith("///"):
        msg = f"a SQLite URL is sqlite:///relative.db or sqlite:////absolute.db, got {url!r}"
        raise ConfigurationError(msg)
    path = rest[3:]
    if not path:
        msg = f"the SQLite URL {url!r} names no file"
        raise ConfigurationError(msg)
    return path


def _sqlite(url: str) -> Storage:
    from eventfold.adapters.sqlite import create_sqlite_storage  # noqa: PLC0415

    return create_sqlite_storage(sqlite_path(url))


def _postgres(url: str, schema: str | None) -> Storage:
    from eventfold.adapters.postgres import create_postgres_storage  # noqa: PLC0415

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    # asyncpg would send an unknown parameter to the server as a setting: take ours out.
    schema = schema or query.pop("schema", None) or "public"
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), parts.fragment))
    return create_postgres_storage(dsn, schema=schema)


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
