"""One way to apply an event: a per-class table from event type to handler.

A handler comes from an ``apply_<EventName>`` method or from the registry of a
``functools.singledispatchmethod`` named ``on``; both land in the same table, so
``state.on(event)`` and ``aggregate.apply_X(event)`` styles share one lookup. A plain
``on(self, event)`` method (one function with an ``isinstance`` chain) is the fallback
of a state or an aggregate for every event no specific handler takes: see
:func:`catch_all_handler`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache, singledispatchmethod
from typing import Any

from eventfold.domain.errors import MissingEventHandlerError

Handler = Callable[..., Any]


@cache
def _by_name(cls: type) -> dict[str, Handler]:
    return {
        name.removeprefix("apply_"): member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if name.startswith("apply_")
    }


@cache
def _single_dispatch(cls: type) -> singledispatchmethod[Any] | None:
    for klass in cls.__mro__:
        candidate = klass.__dict__.get("on")
        if isinstance(candidate, singledispatchmethod):
            return candidate
    return None


_handlers: dict[tuple[type, type], Handler | None] = {}


def find_handler(cls: type, event_type: type) -> Handler | None:
    """The handler ``cls`` declares for ``event_type``, or None (memoised per pair)."""
    key = (cls, event_type)
    try:
        return _handlers[key]
    except KeyError:
        handler = _handlers[key] = _resolve(cls, event_type)
        return handler


def _resolve(cls: type, event_type: type) -> Handler | None:
    # Walk the event's classes from the most specific: the first class with a handler
    # wins, whether that handler is an apply_<Name> method or an overload of `on`.
    named = _by_name(cls)
    dispatcher = _single_dispatch(cls)
    registry = dispatcher.dispatcher.registry if dispatcher is not None else {}
    for klass in event_type.__mro__[:-1]:
        handler = named.get(klass.__name__) or registry.get(klass)
        if handler is not None:
            return handler
    if dispatcher is None:
        return None
    # singledispatch also knows abstract base classes an event is only registered with.
    func = dispatcher.dispatcher.dispatch(event_type)
    # The base implementation of a singledispatchmethod is registered for `object`;
    # reaching it means no overload matched this event type.
    return None if func is registry[object] else func


@cache
def catch_all_handler(cls: type) -> Handler | None:
    """A plain ``on(self, event)`` method of ``cls`` (not a singledispatchmethod), or None.

    It takes every event no ``apply_<Name>`` or ``on`` overload takes: a state written as
    one ``on`` method with an ``isinstance`` chain applies events as its author meant.
    """
    for klass in cls.__mro__[:-1]:
        candidate = klass.__dict__.get("on")
        if candidate is None:
            continue
        return candidate if inspect.isfunction(candidate) else None
    return None


def apply_event(target: object, event: object) -> None:
    """Apply ``event`` to ``target`` through its declared handler, or raise."""
    handler = find_handler(type(target), type(event))
    if handler is None:
        raise MissingEventHandlerError(type(target), type(event))
    handler(target, event)


def evolve_by_dispatch(state: Any, event: object) -> Any:
    """Apply ``event`` to a state object and return it (for mutable states)."""
    apply_event(state, event)
    return state
