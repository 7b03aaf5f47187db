"""The shipped behaviours: validation, logging and error mapping."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

from eventfold import (
    ConcurrencyError,
    EntityNotFoundError,
    ErrorMappingBehavior,
    InvalidStateError,
    LoggingBehavior,
    Mediator,
    OperationResult,
    RequestContext,
    RuleViolationError,
    ValidationBehavior,
    default_behaviors,
)


@dataclass(frozen=True)
class Address:
    city: Annotated[str, Field(min_length=1)]


@dataclass(frozen=True)
class AddItem:
    quantity: Annotated[int, Field(gt=0)]
    price: Annotated[int, Field(ge=0)]
    address: Address | None = None


@dataclass(frozen=True)
class SetPrice:
    price: Decimal
    quantity: int
    address: Address


class Rename(BaseModel):
    name: str = Field(min_length=2)
    times: int = Field(gt=0)


@dataclass(frozen=True)
class Fail:
    error: Exception


class Recorder:
    """A handler that remembers it was called and answers 200, or raises what it is told."""

    calls: list[object]

    def __init__(self, context: RequestContext) -> None:
        self.context = context

    async def handle(self, request: object, /) -> OperationResult[Any]:
        Recorder.calls.append(request)
        if isinstance(request, Fail):
            raise request.error
        return OperationResult.ok("done")


@pytest.fixture
def mediator() -> Mediator:
    Recorder.calls = []
    mediator = Mediator(default_behaviors())
    for request_type in (AddItem, SetPrice, Rename, Fail):
        mediator.register(request_type, Recorder)
    return mediator


def _fields(result: OperationResult[Any]) -> set[str]:
    return {error.field for error in result.errors}


# Validation


async def test_an_invalid_dataclass_command_is_a_400_listing_every_bad_field(
    mediator: Mediator,
) -> None:
    result = await mediator.send(AddItem(quantity=0, price=-1))
    assert (result.status, _fields(result)) == (400, {"quantity", "price"})


async def test_an_invalid_dataclass_command_never_reaches_its_handler(mediator: Mediator) -> None:
    await mediator.send(AddItem(quantity=0, price=-1))
    assert Recorder.calls == []


async def test_a_nested_dataclass_is_validated_with_a_dotted_path(mediator: Mediator) -> None:
    result = await mediator.send(AddItem(quantity=1, price=1, address=Address("")))
    assert (result.status, _fields(result)) == (400, {"address.city"})


async def test_a_pydantic_command_built_with_model_construct_is_a_400(mediator: Mediator) -> None:
    result = await mediator.send(Rename.model_construct(name="x", times=0))
    assert (result.status, _fields(result)) == (400, {"name", "times"})


async def test_a_pydantic_command_missing_a_field_is_a_400_not_a_500(mediator: Mediator) -> None:
    result = await mediator.send(Rename.model_construct(name="ada"))
    assert (result.status, _fields(result)) == (400, {"times"})


async def test_an_invalid_pydantic_command_never_reaches_its_handler(mediator: Mediator) -> None:
    await mediator.send(Rename.model_construct(name="x", times=0))
    assert Recorder.calls == []


async def test_a_valid_command_reaches_its_handler(mediator: Mediator) -> None:
    result = await mediator.send(AddItem(quantity=2, price=5, address=Address("Lyon")))
    assert (result.status, Recorder.calls) == (200, [AddItem(2, 5, Address("Lyon"))])


async def test_the_handler_receives_a_dataclass_command_with_its_values_converted(
    mediator: Mediator,
) -> None:
    sent = SetPrice("4.50", "2", {"city": "Lyon"})  # type: ignore[arg-type]  # as a client sends
    await mediator.send(sent)
    assert Recorder.calls == [SetPrice(Decimal("4.50"), 2, Address("Lyon"))]


async def test_the_handler_receives_converted_values_of_their_declared_types(
    mediator: Mediator,
) -> None:
    await mediator.send(SetPrice("4.50", "2", {"city": "Lyon"}))  # type: ignore[arg-type]
    (received,) = Recorder.calls
    assert isinstance(received, SetPrice)
    kinds = (type(received.price), type(received.quantity), type(received.address))
    assert kinds == (Decimal, int, Address)


async def test_the_handler_receives_a_pydantic_command_with_its_values_converted(
    mediator: Mediator,
) -> None:
    await mediator.send(Rename.model_construct(name="ada", times="3"))
    assert Recorder.calls == [Rename(name="ada", times=3)]


async def test_a_value_that_cannot_be_converted_is_a_400_naming_the_field(
    mediator: Mediator,
) -> None:
    result = await mediator.send(SetPrice("cheap", 2, Address("Lyon")))  # type: ignore[arg-type]
    assert (result.status, _fields(result), Recorder.calls) == (400, {"price"}, [])


@pytest.mark.parametrize("city", ["Ly\x00on", "Ly\ud800on"])
async def test_text_no_store_can_hold_is_a_400_naming_the_nested_field(
    mediator: Mediator, city: str
) -> None:
    result = await mediator.send(SetPrice(Decimal(1), 1, Address(city)))
    assert (result.status, _fields(result), Recorder.calls) == (400, {"address.city"}, [])


async def test_text_holding_an_escaped_backslash_u0000_reaches_the_handler(
    mediator: Mediator,
) -> None:
    result = await mediator.send(SetPrice(Decimal(1), 1, Address("\\u0000")))
    assert result.status == 200


async def test_a_request_that_is_not_a_dataclass_or_model_is_not_validated() -> None:
    class Ping:
        pass

    mediator = Mediator([ValidationBehavior()])
    mediator.register(Ping, Recorder)
    assert (await mediator.send(Ping())).status == 200


# Logging


async def test_logging_records_name_status_outcome_and_duration(
    mediator: Mediator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="eventfold.requests"):
        await mediator.send(AddItem(quantity=1, price=1), correlation_id="c-9")
    record = next(r for r in caplog.records if r.name == "eventfold.requests")
    extras = {key: getattr(record, key) for key in ("request", "status", "outcome")}
    assert extras == {"request": "AddItem", "status": 200, "outcome": "success"}
    assert record.duration_ms >= 0  # type: ignore[attr-defined]
    assert record.correlation_id == "c-9"  # type: ignore[attr-defined]


async def test_logging_marks_a_refused_request_as_a_failure(
    mediator: Mediator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="eventfold.requests"):
        await mediator.send(AddItem(quantity=0, price=1))
    record = next(r for r in caplog.records if r.name == "eventfold.requests")
    assert (record.status, record.outcome) == (400, "failure")  # type: ignore[attr-defined]


async def test_logging_marks_an_exception_as_an_error_and_lets_it_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mediator = Mediator([LoggingBehavior()])
    mediator.register(Fail, Recorder)
    with caplog.at_level(logging.INFO, logger="eventfold.requests"), pytest.raises(KeyError):
        await mediator.send(Fail(KeyError("x")))
    record = caplog.records[0]
    assert (record.status, record.outcome) == (500, "error")  # type: ignore[attr-defined]


# Error mapping


async def test_a_rule_violation_is_a_400_with_its_field(mediator: Mediator) -> None:
    error = RuleViolationError("must be positive", field="quantity")
    result = await mediator.send(Fail(error))
    assert (result.status, result.detail) == (400, "must be positive")
    assert [(e.field, e.message) for e in result.errors] == [("quantity", "must be positive")]


async def test_a_rule_violation_without_a_field_has_no_field_errors(mediator: Mediator) -> None:
    result = await mediator.send(Fail(RuleViolationError("order is empty")))
    assert (result.status, result.errors) == (400, ())


async def test_an_invalid_state_is_a_409(mediator: Mediator) -> None:
    result = await mediator.send(Fail(InvalidStateError("order already shipped")))
    assert (result.status, result.detail) == (409, "order already shipped")


async def test_an_entity_not_found_is_a_404(mediator: Mediator) -> None:
    result = await mediator.send(Fail(EntityNotFoundError("Order", "o-1")))
    assert (result.status, result.detail) == (404, "Order 'o-1' was not found")


async def test_a_concurrency_conflict_is_a_409(mediator: Mediator) -> None:
    result = await mediator.send(Fail(ConcurrencyError("order-o-1", 3, 4)))
    assert result.status == 409


async def test_an_unexpected_exception_is_a_500(mediator: Mediator) -> None:
    result = await mediator.send(Fail(RuntimeError("password=hunter2 at db.internal")))
    assert result.status == 500


async def test_a_500_does_not_leak_the_exception_text(mediator: Mediator) -> None:
    result = await mediator.send(Fail(RuntimeError("password=hunter2 at db.internal")))
    assert result.problem is not None
    assert "hunter2" not in repr(result.problem.to_dict())


async def test_an_unexpected_exception_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mediator = Mediator([ErrorMappingBehavior()])
    mediator.register(Fail, Recorder)
    with caplog.at_level(logging.ERROR, logger="eventfold.errors"):
        await mediator.send(Fail(RuntimeError("boom")), correlation_id="c-1")
    record = caplog.records[0]
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "boom"
    assert (record.request, record.correlation_id) == ("Fail", "c-1")  # type: ignore[attr-defined]
