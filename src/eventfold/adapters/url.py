"""A storage from a database URL: ``sqlite:///shop.db``, ``postgresql://host/db?schema=s``.

URLs are parsed by SQLAlchemy's ``make_url`` (both SQL backends need SQLAlchemy anyway);
each backend's driver is imported only when its URL is used, so an application that runs
on SQLite needs no PostgreSQL driver installed, and the other way round.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, get_args

from eventfold.errors import ConfigurationError
from eventfold.ports import Storage

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

__all__ = ["SUPPORTED_URLS", "sqlite_path", "storage_from_url"]

SUPPORTED_URLS = (
    "sqlite:///path/to.db[?timeout=seconds&synchronous=FULL|NORMAL], "
    "postgresql://user@host:5432/db[?schema=name&min_size=n&max_size=n] or memory://"
)


def storage_from_url(url: str, *, schema: str | None = None) -> Storage:
    """The storage a URL names; nothing connects until its first transaction.

    A PostgreSQL URL may carry ``?schema=name`` (the schema of eventfold's tables);
    ``schema`` overrides it. A driver suffix (``postgresql+asyncpg://``) is accepted.
    """
    if url.split(":", maxsplit=1)[0].lower() == "memory":
        from eventfold.adapters.memory import create_memory_storage  # noqa: PLC0415

        return create_memory_storage()
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite(parsed)
    if backend in ("postgres", "postgresql"):
        return _postgres(parsed, schema)
    msg = f"unsupported database URL {_redacted(parsed)!r}: use {SUPPORTED_URLS}"
    raise ConfigurationError(msg)


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:///`` URL names (``sqlite:////abs/path.db`` for absolute paths)."""
    return _sqlite_file(_parse(url))


def _sqlite_file(url: URL) -> str:
    if url.get_backend_name() != "sqlite" or url.host or url.port:
        msg = f"a SQLite URL is sqlite:///relative.db or sqlite:////absolute.db, got {url!s}"
        raise ConfigurationError(msg)
    if not url.database:
        msg = f"the SQLite URL {url!s} names no file"
        raise ConfigurationError(msg)
    return url.database


def _parse(url: str) -> URL:
    try:
        from sqlalchemy.engine import make_url  # noqa: PLC0415 - SQLAlchemy is an optional extra
        from sqlalchemy.exc import ArgumentError  # noqa: PLC0415
    except ImportError:  # pragma: no cover - exercised in an install without the extras
        msg = (
            f"database URL {url.rsplit('@', maxsplit=1)[-1]!r} needs SQLAlchemy: "
            "pip install 'eventfold[sqlite]' or 'eventfold[postgres]'"
        )
        raise ConfigurationError(msg) from None
    try:
        return make_url(url)
    except (ArgumentError, ValueError) as exc:
        where = url.rsplit("@", maxsplit=1)[-1]
        msg = f"{where!r} is not a database URL ({exc}): use {SUPPORTED_URLS}"
        raise ConfigurationError(msg) from None


def _sqlite(url: URL) -> Storage:
    from eventfold.adapters.sqlite import create_sqlite_storage  # noqa: PLC0415
    from eventfold.adapters.sqlite.storage import Synchronous  # noqa: PLC0415

    options = dict(url.query)
    path = _sqlite_file(url)
    timeout = _number(options.pop("timeout", "5"), "timeout", url)
    synchronous = str(options.pop("synchronous", "FULL")).upper()
    if synchronous not in get_args(Synchronous):
        msg = (
            f"synchronous={synchronous!r} in {_redacted(url)!r}: use one of {get_args(Synchronous)}"
        )
        raise ConfigurationError(msg)
    _refuse_unknown(options, url)
    return create_sqlite_storage(path, busy_timeout=timeout, synchronous=synchronous)  # type: ignore[arg-type]


def _postgres(url: URL, schema: str | None) -> Storage:
    from eventfold.adapters.postgres import create_postgres_storage  # noqa: PLC0415

    options = {key: str(value) for key, value in url.query.items()}
    # asyncpg would send an unknown parameter to the server as a setting: take ours out.
    schema = schema or options.pop("schema", None) or "public"
    min_size = int(_number(options.pop("min_size", "1"), "min_size", url))
    max_size = int(_number(options.pop("max_size", "10"), "max_size", url))
    dsn = url.set(drivername="postgresql", query=options).render_as_string(hide_password=False)
    return create_postgres_storage(dsn, schema=schema, min_size=min_size, max_size=max_size)


def _number(value: object, name: str, url: URL) -> float:
    try:
        number = float(str(value))
    except ValueError:
        number = -1.0
    if number < 0:
        msg = f"{name}={value!r} in {_redacted(url)!r} is not a non-negative number"
        raise ConfigurationError(msg)
    return number


def _refuse_unknown(options: Mapping[str, object], url: URL) -> None:
    if options:
        msg = f"unknown option(s) {sorted(options)} in {_redacted(url)!r}: use {SUPPORTED_URLS}"
        raise ConfigurationError(msg)


def _redacted(url: URL) -> str:
    return url.render_as_string(hide_password=True)
