"""Mediator: one handler per request, behaviours in order, isolated event handlers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from eventfold import (
    CommandHandler,
    DuplicateHandlerError,
    HandlerNotFoundError,
    Mediator,
    Next,
    OperationResult,
    Request,
    RequestContext,
)


@dataclass(frozen=True)
class PlaceOrder(Request[str]):
    customer: str


@dataclass(frozen=True)
class CancelOrder:
    order_id: str


class PlaceOrderHandler(CommandHandler[PlaceOrder, str]):
    def __init__(self, context: RequestContext) -> None:
        self.context = context

    async def handle(self, command: PlaceOrder, /) -> OperationResult[str]:
        return self.created(f"order for {command.customer}")


class SeenContext(CommandHandler[PlaceOrder, str]):
    def __init__(self, context: RequestContext) -> None:
        self.context = context

    async def handle(self, command: PlaceOrder, /) -> OperationResult[str]:
        return self.ok(self.context.correlation_id)


def _recording_behavior(name: str, trail: list[str]) -> Any:
    async def behavior(request: object, context: RequestContext, next: Next) -> Any:  # noqa: A002
        trail.append(f"{name} in")
        result = await next(request, context)
        trail.append(f"{name} out")
        return result

    return behavior


async def test_send_returns_the_handlers_result() -> None:
    mediator = Mediator()
    mediator.register(PlaceOrder, PlaceOrderHandler)
    result = await mediator.send(PlaceOrder("ada"))
    assert (result.status, result.data) == (201, "order for ada")


async def test_behaviours_run_in_registration_order_around_the_handler() -> None:
    trail: list[str] = []
    mediator = Mediator([_recording_behavior("outer", trail), _recording_behavior("inner", trail)])
    mediator.register(PlaceOrder, PlaceOrderHandler)
    await mediator.send(PlaceOrder("ada"))
    assert trail == ["outer in", "inner in", "inner out", "outer out"]


async def test_a_behaviour_added_later_runs_innermost() -> None:
    trail: list[str] = []
    mediator = Mediator([_recording_behavior("first", trail)])
    mediator.register(PlaceOrder, PlaceOrderHandler)
    await mediator.send(PlaceOrder("ada"))
    mediator.add_behavior(_recording_behavior("second", trail))
    trail.clear()
    await mediator.send(PlaceOrder("ada"))
    assert trail == ["first in", "second in", "second out", "first out"]


async def test_a_behaviour_can_answer_without_calling_the_handler() -> None:
    async def refuse(request: object, context: RequestContext, next: Next) -> Any:  # noqa: A002
        return OperationResult.forbidden("not today")

    mediator = Mediator([refuse])
    mediator.register(PlaceOrder, PlaceOrderHandler)
    assert (await mediator.send(PlaceOrder("ada"))).status == 403


def test_a_second_handler_for_a_request_type_is_refused_at_registration() -> None:
    mediator = Mediator()
    mediator.register(PlaceOrder, PlaceOrderHandler)
    with pytest.raises(DuplicateHandlerError, match="PlaceOrder already has a handler"):
        mediator.register(PlaceOrder, SeenContext)


async def test_a_request_without_handler_raises_at_first_use() -> None:
    with pytest.raises(HandlerNotFoundError, match="CancelOrder"):
        await Mediator().send(CancelOrder("o-1"))


async def test_the_handler_factory_gets_the_request_and_a_correlation_id() -> None:
    contexts: list[RequestContext] = []

    def factory(context: RequestContext) -> PlaceOrderHandler:
        contexts.append(context)
        return PlaceOrderHandler(context)

    mediator = Mediator()
    mediator.register(PlaceOrder, factory)
    await mediator.send(PlaceOrder("ada"))
    assert contexts[0].request == PlaceOrder("ada")
    assert contexts[0].correlation_id


async def test_each_request_gets_its_own_correlation_id() -> None:
    mediator = Mediator()
    mediator.register(PlaceOrder, SeenContext)
    first = await mediator.send(PlaceOrder("ada"))
    second = await mediator.send(PlaceOrder("ada"))
    assert first.data != second.data


async def test_a_given_correlation_id_reaches_the_handler() -> None:
    mediator = Mediator()
    mediator.register(PlaceOrder, SeenContext)
    assert (await mediator.send(PlaceOrder("ada"), correlation_id="req-7")).data == "req-7"


# Events


@dataclass(frozen=True)
class OrderEvent:
    order_id: str


@dataclass(frozen=True)
class OrderPlaced(OrderEvent):
    customer: str


def _collector(seen: list[str], name: str) -> Any:
    class Collect:
        async def handle(self, event: object, /) -> None:
            seen.append(f"{name}:{type(event).__name__}")

    Collect.__qualname__ = name
    return Collect


class FailingHandler:
    async def handle(self, event: object, /) -> None:
        raise RuntimeError("mail server down")


async def test_publish_delivers_to_every_subscribed_handler() -> None:
    seen: list[str] = []
    mediator = Mediator()
    mediator.subscribe(OrderPlaced, _collector(seen, "email"))
    mediator.subscribe(OrderPlaced, _collector(seen, "stock"))
    report = await mediator.publish(OrderPlaced("o-1", "ada"))
    assert (seen, report.handled) == (["email:OrderPlaced", "stock:OrderPlaced"], 2)


async def test_a_handler_subscribed_to_a_base_class_receives_subclass_events() -> None:
    seen: list[str] = []
    mediator = Mediator()
    mediator.subscribe(OrderEvent, _collector(seen, "audit"))
    await mediator.publish(OrderPlaced("o-1", "ada"))
    assert seen == ["audit:OrderPlaced"]


async def test_a_subscription_added_after_publishing_is_used_next_time() -> None:
    seen: list[str] = []
    mediator = Mediator()
    await mediator.publish(OrderPlaced("o-1", "ada"))
    mediator.subscribe(OrderEvent, _collector(seen, "audit"))
    await mediator.publish(OrderPlaced("o-2", "bob"))
    assert seen == ["audit:OrderPlaced"]


async def test_an_event_without_subscribers_is_handled_by_nobody() -> None:
    report = await Mediator().publish(OrderPlaced("o-1", "ada"))
    assert (report.handled, report.ok) == (0, True)


async def test_a_failing_event_handler_does_not_stop_the_others() -> None:
    seen: list[str] = []
    mediator = Mediator()
    mediator.subscribe(OrderPlaced, FailingHandler)
    mediator.subscribe(OrderPlaced, _collector(seen, "stock"))
    await mediator.publish(OrderPlaced("o-1", "ada"))
    assert seen == ["stock:OrderPlaced"]


async def test_a_failing_event_handler_is_reported() -> None:
    mediator = Mediator()
    mediator.subscribe(OrderPlaced, FailingHandler)
    report = await mediator.publish(OrderPlaced("o-1", "ada"))
    failure = report.failures[0]
    assert not report.ok
    assert (failure.handler, failure.event_type) == ("FailingHandler", "OrderPlaced")
    assert str(failure.error) == "mail server down"


async def test_a_failing_event_handler_is_logged_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mediator = Mediator()
    mediator.subscribe(OrderPlaced, FailingHandler)
    with caplog.at_level(logging.ERROR, logger="eventfold.mediator"):
        await mediator.publish(OrderPlaced("o-1", "ada"))
    record = caplog.records[0]
    assert record.handler == "FailingHandler"  # type: ignore[attr-defined]
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError


async def test_a_handler_factory_that_fails_is_isolated_and_reported() -> None:
    seen: list[str] = []

    def broken_factory() -> Any:
        raise LookupError("no smtp settings")

    mediator = Mediator()
    mediator.subscribe(OrderPlaced, broken_factory)
    mediator.subscribe(OrderPlaced, _collector(seen, "stock"))
    report = await mediator.publish(OrderPlaced("o-1", "ada"))
    assert seen == ["stock:OrderPlaced"]
    assert "broken_factory" in report.failures[0].handler


def test_a_generated_correlation_id_stays_the_same_for_the_whole_request() -> None:
    context = RequestContext(PlaceOrder("ada"))
    assert context.correlation_id == context.correlation_id
