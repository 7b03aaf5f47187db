"""Database URLs name a storage and its options; a malformed one is refused with a reason."""

from __future__ import annotations

import pytest

from eventfold import ConfigurationError
from eventfold.adapters import postgres, sqlite
from eventfold.adapters.memory.storage import MemoryStorage
from eventfold.adapters.url import sqlite_path, storage_from_url


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """What the storage factories were called with, instead of a storage."""
    calls: dict[str, object] = {}

    def record(*args: object, **kwargs: object) -> MemoryStorage:
        calls.update(args=args, **kwargs)
        return MemoryStorage()

    monkeypatch.setattr(sqlite, "create_sqlite_storage", record)
    monkeypatch.setattr(postgres, "create_postgres_storage", record)
    return calls


def test_a_sqlite_url_with_options_names_the_file_without_them() -> None:
    assert sqlite_path("sqlite:///x.db?timeout=5") == "x.db"


def test_a_sqlite_url_with_four_slashes_names_an_absolute_path() -> None:
    assert sqlite_path("sqlite:////var/data/shop.db") == "/var/data/shop.db"


def test_a_sqlite_url_takes_a_busy_timeout_and_a_synchronous_mode(
    created: dict[str, object],
) -> None:
    storage_from_url("sqlite:///x.db?timeout=2.5&synchronous=normal")
    assert created == {"args": ("x.db",), "busy_timeout": 2.5, "synchronous": "NORMAL"}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sqlite://x.db", "sqlite:///relative.db"),
        ("sqlite:///", "names no file"),
        ("sqlite:///x.db?cache=shared", "unknown option"),
        ("sqlite:///x.db?timeout=soon", "timeout='soon'"),
        ("sqlite:///x.db?synchronous=sometimes", "synchronous='SOMETIMES'"),
        ("mysql://host/db", "unsupported database URL"),
        ("not a url", "not a database URL"),
        ("postgresql://u@h/db?max_size=many", "max_size='many'"),
    ],
)
def test_a_malformed_url_is_refused_with_its_reason(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason.replace("?", r"\?")):
        storage_from_url(url)


def test_a_postgres_url_keeps_its_schema_and_pool_size_out_of_the_driver_dsn(
    created: dict[str, object],
) -> None:
    storage_from_url("postgresql+asyncpg://app:secret@db:5433/shop?schema=s&max_size=3&ssl=off")
    assert created == {
        "args": ("postgresql://app:secret@db:5433/shop?ssl=off",),
        "schema": "s",
        "min_size": 1,
        "max_size": 3,
    }


def test_an_explicit_schema_overrides_the_url(created: dict[str, object]) -> None:
    storage_from_url("postgresql://db/shop?schema=s", schema="other")
    assert created["schema"] == "other"


def test_a_refused_url_does_not_show_its_password() -> None:
    with pytest.raises(ConfigurationError) as refused:
        storage_from_url("mysql://app:secret@db/shop")
    assert "secret" not in str(refused.value)


def test_a_memory_url_names_the_in_memory_storage() -> None:
    assert isinstance(storage_from_url("memory://"), MemoryStorage)
