"""One way to apply an event: a per-class table from event type to handler.

A handler comes from an ``apply_<EventName>`` method or from the registry of a
``functools.singledispatchmethod`` named ``on``; both land in the same table, so
``state.on(event)`` and ``aggregate.apply_X(event)`` styles share one lookup.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache, singledispatchmethod
from typing import Any

from eventfold.domain.errors import MissingEventHandlerError

Handler = Callable[[Any, Any], Any]


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
    named = _by_name(cls).get(event_type.__name__)
    if named is not None:
        return named
    dispatcher = _single_dispatch(cls)
    if dispatcher is None:
        return None
    func = dispatcher.dispatcher.dispatch(event_type)
    # The base implementation of a singledispatchmethod is registered for `object`;
    # reaching it means no overload matched this event type.
    if func is dispatcher.dispatcher.registry[object]:
        return None
    return func


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
