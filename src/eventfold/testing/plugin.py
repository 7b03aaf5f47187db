"""eventfold's pytest plugin: fresh storages on every backend, a wired mediator, a broker.

pytest loads it by itself once eventfold is installed (entry point ``pytest11``). The
fixtures are async, so they need pytest-asyncio (``pip install 'eventfold[testing]'``);
without it the plugin offers none and stays out of the way.

Storages, each empty with eventfold's tables created, closed (and dropped) afterwards:

- ``memory_storage``; ``sqlite_storage`` (a database file in the test's ``tmp_path``);
  ``postgres_storage`` (a schema of its own, dropped afterwards, on the server named by
  ``--eventfold-postgres=DSN`` or ``EVENTFOLD_TEST_POSTGRES``; skipped when neither is set);
- ``sql_storage`` (SQLite, then PostgreSQL) and ``any_storage`` (all three), parametrised;
- ``storage``: the one the wiring below uses, ``memory_storage`` unless you override it.

Wiring, overridable in a ``conftest.py``: ``event_registry`` (empty), ``persistence_model``
(empty), ``data_source`` (the three over ``storage``), ``mediator`` (the default behaviours
and a ``TransactionBehavior``, in-process events published after each commit), and
``memory_broker`` (an in-process broker, closed afterwards).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from eventfold.application.cqrs.behaviors import default_behaviors
from eventfold.application.cqrs.mediator import Mediator
from eventfold.application.persistence.model import PersistenceModel
from eventfold.application.persistence.unit_of_work import DataSource, TransactionBehavior
from eventfold.serialization import EventRegistry
from eventfold.testing.storages import BACKENDS, fresh_storage

if TYPE_CHECKING:
    from eventfold.adapters.memory import MemoryBroker

__all__ = ["POSTGRES_ENV"]

POSTGRES_ENV = "EVENTFOLD_TEST_POSTGRES"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--eventfold-postgres=DSN``: the server ``postgres_storage`` makes its schemas on."""
    group = parser.getgroup("eventfold")
    group.addoption(
        "--eventfold-postgres",
        dest="eventfold_postgres",
        default=None,
        metavar="DSN",
        help=f"PostgreSQL for eventfold's postgres_storage fixture (default: ${POSTGRES_ENV})",
    )


@pytest.fixture(scope="session")
def eventfold_postgres_dsn(request: pytest.FixtureRequest) -> str:
    """The PostgreSQL DSN from ``--eventfold-postgres`` or the environment; else skip."""
    dsn: str | None = request.config.getoption("eventfold_postgres") or os.environ.get(POSTGRES_ENV)
    if not dsn:
        pytest.skip(f"no PostgreSQL for this test: pass --eventfold-postgres or set {POSTGRES_ENV}")
    return dsn


@pytest.fixture(params=["sqlite", "postgres"])
def sql_storage(request: pytest.FixtureRequest) -> Any:
    """Each SQL backend in turn."""
    return request.getfixturevalue(f"{request.param}_storage")


@pytest.fixture(params=list(BACKENDS))
def any_storage(request: pytest.FixtureRequest) -> Any:
    """Every backend in turn."""
    return request.getfixturevalue(f"{request.param}_storage")


@pytest.fixture
def storage(memory_storage: Any) -> Any:
    """The storage ``data_source`` and ``mediator`` use; override it to pick another."""
    return memory_storage


@pytest.fixture
def event_registry() -> EventRegistry:
    """The application's events; override it to return your registry."""
    return EventRegistry()


@pytest.fixture
def persistence_model() -> PersistenceModel:
    """How the application keeps each type; override it to return your model."""
    return PersistenceModel()


@pytest.fixture
def data_source(
    storage: Any, persistence_model: PersistenceModel, event_registry: EventRegistry
) -> DataSource:
    """``storage`` with the model and events: ``data_source.unit_of_work()`` in a test."""
    return DataSource("app", storage, persistence_model, event_registry)


@pytest.fixture
def mediator(
    storage: Any, persistence_model: PersistenceModel, event_registry: EventRegistry
) -> Mediator:
    """A mediator with the default behaviours and one unit of work per request.

    Register your handlers on it; events reach subscribed handlers after each commit.
    """
    wired = Mediator(default_behaviors())
    source = DataSource("app", storage, persistence_model, event_registry, publish=wired.publish)
    wired.add_behavior(TransactionBehavior(source.unit_of_work))
    return wired


if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def memory_storage() -> AsyncIterator[Any]:
        """A fresh in-memory storage."""
        async with fresh_storage("memory") as opened:
            yield opened

    @pytest_asyncio.fixture
    async def sqlite_storage(tmp_path: Path) -> AsyncIterator[Any]:
        """A fresh SQLite database file in the test's own directory."""
        async with fresh_storage("sqlite", directory=tmp_path) as opened:
            yield opened

    @pytest_asyncio.fixture
    async def postgres_storage(eventfold_postgres_dsn: str) -> AsyncIterator[Any]:
        """A PostgreSQL storage in a schema of its own, dropped afterwards."""
        async with fresh_storage("postgres", postgres_dsn=eventfold_postgres_dsn) as opened:
            yield opened

    @pytest_asyncio.fixture
    async def memory_broker() -> AsyncIterator[MemoryBroker]:
        """An in-process broker, closed afterwards."""
        from eventfold.adapters.memory import create_memory_broker  # noqa: PLC0415

        broker = create_memory_broker()
        try:
            yield broker
        finally:
            await broker.close()
