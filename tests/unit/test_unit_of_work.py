"""Unit of work wiring rules, on the in-memory storage."""

from __future__ import annotations

from types import TracebackType

import pytest

from eventfold import (
    ConfigurationError,
    EventRegistry,
    PersistenceModel,
    RequestContext,
    UnitOfWork,
)
from eventfold.adapters.memory import create_memory_storage
from eventfold.adapters.memory.storage import MemorySession, MemoryStorage
from eventfold.errors import StoreUnavailableError
from tests.unit.test_persistence_model import Cart, Note


def unit_of_work() -> UnitOfWork:
    model = PersistenceModel()
    model.event_sourced(Cart)
    model.state_stored(Note)
    return UnitOfWork(create_memory_storage(), model, EventRegistry())


def test_a_request_without_transaction_behavior_has_no_unit_of_work() -> None:
    with pytest.raises(ConfigurationError, match="TransactionBehavior"):
        UnitOfWork.of(RequestContext(object(), "corr-1"))


def test_a_state_stored_type_has_no_event_sourced_repository() -> None:
    with pytest.raises(ConfigurationError, match="not event-sourced"):
        unit_of_work().event_sourced(Note)  # type: ignore[type-var]


def test_an_event_sourced_type_has_no_state_stored_repository() -> None:
    with pytest.raises(ConfigurationError, match="not state-stored"):
        unit_of_work().state_stored(Cart)


async def test_a_committed_unit_of_work_cannot_be_used_again() -> None:
    uow = unit_of_work()
    await uow.commit()
    with pytest.raises(ConfigurationError, match="finished"):
        await uow.event_sourced(Cart).get("c-1")


async def test_a_unit_of_work_returns_the_instance_it_already_loaded() -> None:
    uow = unit_of_work()
    cart = Cart("c-1")
    uow.event_sourced(Cart).add(cart)
    assert await uow.event_sourced(Cart).get("c-1") is cart


class _UnreachableTransaction:
    """A transaction that cannot begin; like the real ones, it cannot end unbegun either."""

    async def __aenter__(self) -> MemorySession:
        raise StoreUnavailableError("test-store", "down")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        raise AssertionError("ended a transaction that never began")


class _UnreachableStorage(MemoryStorage):
    def transaction(self) -> _UnreachableTransaction:  # type: ignore[override]
        return _UnreachableTransaction()


async def test_a_transaction_that_cannot_begin_is_reported_as_it_failed() -> None:
    uow = UnitOfWork(_UnreachableStorage(name="test-store"), PersistenceModel(), EventRegistry())
    with pytest.raises(StoreUnavailableError, match="test-store is unreachable"):
        async with uow:
            await uow.session()


async def test_a_dropped_unit_of_work_is_freed_without_the_cyclic_collector() -> None:
    import gc  # noqa: PLC0415
    import weakref  # noqa: PLC0415

    gc.disable()
    try:
        uow = unit_of_work()
        uow.event_sourced(Cart).add(Cart("c-1"))
        await uow.state_stored(Note).get("n-1")
        await uow.commit()
        freed = weakref.ref(uow)
        del uow
        assert freed() is None, "a unit of work and its repositories form a reference cycle"
    finally:
        gc.enable()
