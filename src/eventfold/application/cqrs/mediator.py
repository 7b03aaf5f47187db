"""The mediator: one handler per request, any number per event, behaviours around every request."""

from __future__ import annotations

import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import reduce
from typing import Any, Generic, Protocol, TypeVar, overload

from eventfold.application.cqrs.results import OperationResult, ResultFactory
from eventfold.domain.events import EventMetadata
from eventfold.errors import DuplicateHandlerError, HandlerNotFoundError
from eventfold.ports.telemetry import Telemetry, active_telemetry

__all__ = [
    "Behavior",
    "CommandHandler",
    "EventHandler",
    "HandlerFailure",
    "Mediator",
    "Next",
    "PublishReport",
    "QueryHandler",
    "Request",
    "RequestContext",
    "RequestHandler",
    "current_event_metadata",
    "publishing",
]

T = TypeVar("T")
TRequest_contra = TypeVar("TRequest_contra", contravariant=True)
TResult = TypeVar("TResult")
TCommand = TypeVar("TCommand")
TQuery = TypeVar("TQuery")
E_contra = TypeVar("E_contra", contravariant=True)

logger = logging.getLogger("eventfold.mediator")


_event_metadata: ContextVar[EventMetadata | None] = ContextVar(
    "eventfold_event_metadata", default=None
)


def current_event_metadata() -> EventMetadata | None:
    """The metadata of the event being published, while its in-process handlers run.

    A handler that wants more than the event (its id, stream and version, when it occurred,
    the correlation and causation ids, the actor) calls this; handlers keep taking the
    event alone. None outside a publication, or for an event published without metadata.
    The unit of work publishes every event with its metadata; the log ``position`` is 0
    there, because a commit does not learn the positions its events were given.
    """
    return _event_metadata.get()


@contextmanager
def publishing(metadata: EventMetadata | None) -> Iterator[None]:
    """Make ``metadata`` the :func:`current_event_metadata` inside the ``with`` block."""
    token = _event_metadata.set(metadata)
    try:
        yield
    finally:
        _event_metadata.reset(token)


class Request(Generic[T]):
    """Optional base for requests: ``send(Request[T])`` returns ``OperationResult[T]``."""

    __slots__ = ()


class RequestContext:
    """What behaviours and handler factories share while one request is handled."""

    __slots__ = ("_correlation_id", "actor", "causation_id", "items", "request", "unit_of_work")

    def __init__(
        self,
        request: object,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        actor: str | None = None,
        *,
        unit_of_work: Any = None,
        items: dict[str, object] | None = None,
    ) -> None:
        self.request = request
        self._correlation_id = correlation_id
        self.causation_id = causation_id
        self.actor = actor
        self.unit_of_work = unit_of_work
        self.items: dict[str, object] = {} if items is None else items

    @property
    def correlation_id(self) -> str:
        """The id shared by everything this request causes; a new UUID unless one was given."""
        # Made on first read: a request nobody correlates does not pay for a random UUID.
        if self._correlation_id is None:
            self._correlation_id = str(uuid.uuid4())
        return self._correlation_id

    @correlation_id.setter
    def correlation_id(self, value: str) -> None:
        self._correlation_id = value

    def __repr__(self) -> str:
        return (
            f"RequestContext(request={self.request!r}, correlation_id={self.correlation_id!r}, "
            f"causation_id={self.causation_id!r}, actor={self.actor!r})"
        )


class RequestHandler(Protocol[TRequest_contra, TResult]):
    """Handles one request type."""

    async def handle(self, request: TRequest_contra, /) -> OperationResult[TResult]:
        """Handle the request."""
        ...


class CommandHandler(ResultFactory[TResult], ABC, Generic[TCommand, TResult]):
    """Base class for command handlers: ``self.ok(...)``, ``self.not_found(...)`` and the rest."""

    @abstractmethod
    async def handle(self, command: TCommand, /) -> OperationResult[TResult]:
        """Handle the command."""


class QueryHandler(ResultFactory[TResult], ABC, Generic[TQuery, TResult]):
    """Base class for query handlers."""

    @abstractmethod
    async def handle(self, query: TQuery, /) -> OperationResult[TResult]:
        """Answer the query."""


class EventHandler(Protocol[E_contra]):
    """Reacts to an event after the transaction that recorded it committed."""

    async def handle(self, event: E_contra, /) -> None:
        """React to the event."""
        ...


Next = Callable[[object, RequestContext], Awaitable[OperationResult[Any]]]
"""The rest of the pipeline, as a behaviour sees it."""

Behavior = Callable[[object, RequestContext, Next], Awaitable[OperationResult[Any]]]
"""A pipeline behaviour: does its part and calls ``next`` (or answers without it)."""

HandlerFactory = Callable[[RequestContext], RequestHandler[Any, Any]]
EventHandlerFactory = Callable[[], EventHandler[Any]]


@dataclass(frozen=True, slots=True)
class HandlerFailure:
    """An event handler that raised, and what it raised."""

    handler: str
    event_type: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class PublishReport:
    """What happened when an event was published in process."""

    handled: int
    failures: tuple[HandlerFailure, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no handler failed."""
        return not self.failures


class Mediator:
    """Sends each request through the behaviours to its one handler; publishes events to many."""

    def __init__(self, behaviors: Sequence[Behavior] = ()) -> None:
        self._behaviors: list[Behavior] = list(behaviors)
        self._handlers: dict[type, HandlerFactory] = {}
        self._subscribers: dict[type, list[EventHandlerFactory]] = {}
        self._pipelines: dict[type, Next] = {}
        self._event_routes: dict[type, list[EventHandlerFactory]] = {}

    def add_behavior(self, behavior: Behavior) -> None:
        """Append a behaviour; the first added is the outermost."""
        self._behaviors.append(behavior)
        self._pipelines.clear()

    def register(self, request_type: type, factory: HandlerFactory) -> None:
        """Register the factory that builds the handler of ``request_type`` for each request."""
        if request_type in self._handlers:
            raise DuplicateHandlerError(request_type)
        self._handlers[request_type] = factory
        self._pipelines.pop(request_type, None)

    def subscribe(self, event_type: type, factory: EventHandlerFactory) -> None:
        """Add an in-process handler for ``event_type`` (and its subclasses)."""
        self._subscribers.setdefault(event_type, []).append(factory)
        self._event_routes.clear()

    def has_handler(self, request_type: type) -> bool:
        """Whether ``request_type`` has a handler."""
        return request_type in self._handlers

    @overload
    async def send(
        self,
        request: Request[T],
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        actor: str | None = None,
        unit_of_work: object = None,
    ) -> OperationResult[T]: ...

    @overload
    async def send(
        self,
        request: object,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        actor: str | None = None,
        unit_of_work: object = None,
    ) -> OperationResult[Any]: ...

    async def send(
        self,
        request: object,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        actor: str | None = None,
        unit_of_work: object = None,
    ) -> OperationResult[Any]:
        """Handle a command or query through the pipeline and return its result.

        With ``unit_of_work``, the request joins that open unit of work: its writes commit
        (or roll back) with the caller's, who owns the transaction (a process manager
        commits its state, its commands' changes and their outbox rows at once).
        """
        context = RequestContext(
            request, correlation_id, causation_id, actor, unit_of_work=unit_of_work
        )
        telemetry = active_telemetry()
        if telemetry is None:  # the default: no telemetry work at all
            return await self._pipeline(type(request))(request, context)
        return await _send_traced(telemetry, self._pipeline(type(request)), request, context)

    async def publish(self, event: object, metadata: EventMetadata | None = None) -> PublishReport:
        """Deliver ``event`` to every in-process handler; a failing one is logged and reported.

        With ``metadata``, handlers read it through :func:`current_event_metadata`.
        """
        if metadata is not None:
            with publishing(metadata):
                return await self._deliver(event)
        return await self._deliver(event)

    async def _deliver(self, event: object) -> PublishReport:
        failures: list[HandlerFailure] = []
        factories = self._routes(type(event))
        for factory in factories:
            try:
                await factory().handle(event)
            # Isolate: one failing handler must not stop the rest; it is logged and reported.
            except Exception as exc:  # noqa: BLE001
                failures.append(_report_failure(factory, event, exc))
        return PublishReport(len(factories), tuple(failures))

    def _routes(self, event_type: type) -> list[EventHandlerFactory]:
        routes = self._event_routes.get(event_type)
        if routes is None:
            routes = [
                factory
                for klass in event_type.__mro__
                for factory in self._subscribers.get(klass, ())
            ]
            self._event_routes[event_type] = routes
        return routes

    def _pipeline(self, request_type: type) -> Next:
        pipeline = self._pipelines.get(request_type)
        if pipeline is None:
            factory = self._handlers.get(request_type)
            if factory is None:
                raise HandlerNotFoundError(request_type)
            pipeline = _compose(self._behaviors, _call_handler(factory))
            self._pipelines[request_type] = pipeline
        return pipeline


async def _send_traced(
    telemetry: Telemetry, pipeline: Next, request: object, context: RequestContext
) -> OperationResult[Any]:
    """``send`` inside a span, with the result's status and the duration measured."""
    name = type(request).__name__
    started = time.perf_counter()
    outcome = "error"
    try:
        with telemetry.span(f"send {name}", attributes={"eventfold.request.type": name}) as span:
            result = await pipeline(request, context)
            span.set_attribute("eventfold.result.status", result.status)
            outcome = "success" if result.is_success else "failure"
            if not result.is_success:
                span.set_error(result.detail or f"status {result.status}")
            return result
    finally:
        attributes = {"eventfold.request.type": name, "eventfold.outcome": outcome}
        telemetry.record("eventfold.request.duration", time.perf_counter() - started, attributes)


def _report_failure(factory: EventHandlerFactory, event: object, exc: Exception) -> HandlerFailure:
    # The factory is usually the handler class itself; a lambda or function has its own name.
    name = getattr(factory, "__qualname__", type(factory).__qualname__)
    event_type = type(event).__qualname__
    logger.error(
        "event handler %s failed on %s",
        name,
        event_type,
        exc_info=exc,
        extra={"handler": name, "event_type": event_type},
    )
    return HandlerFailure(name, event_type, exc)


# The steps below are plain functions returning the next awaitable rather than coroutines
# awaiting it: each behaviour costs one coroutine frame, not two.


def _call_handler(factory: HandlerFactory) -> Next:
    def call(request: object, context: RequestContext) -> Awaitable[OperationResult[Any]]:
        return factory(context).handle(request)

    return call


def _compose(behaviors: Sequence[Behavior], innermost: Next) -> Next:
    def wrap(inner: Next, behavior: Behavior) -> Next:
        def step(request: object, context: RequestContext) -> Awaitable[OperationResult[Any]]:
            return behavior(request, context, inner)

        return step

    return reduce(wrap, reversed(behaviors), innermost)
