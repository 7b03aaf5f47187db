"""Aggregate roots: a separate state object changed only by applying events."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar, get_args, get_origin

from eventfold.domain.dispatch import find_handler
from eventfold.domain.entity import Entity
from eventfold.domain.errors import ConfigurationError, MissingEventHandlerError

TState = TypeVar("TState")
TKey = TypeVar("TKey")


class AggregateRoot(Entity[TKey], Generic[TState, TKey]):
    """An aggregate whose state changes only by applying the events it records.

    Handlers live on the state class or on the aggregate, as ``apply_<EventName>``
    methods or overloads of a ``functools.singledispatchmethod`` named ``on``; the state's
    handler is used when both declare one. A handler may mutate the state in place or
    return a new state (for frozen states).
    """

    def __init__(self, id: TKey, state: TState | None = None) -> None:  # noqa: A002
        super().__init__(id)
        self._state: TState = self.initial_state() if state is None else state

    @classmethod
    def initial_state(cls) -> TState:
        """The state of a new aggregate: the declared state class called with no arguments."""
        state_cls = cls.state_type()
        return state_cls()  # type: ignore[no-any-return]

    @classmethod
    def state_type(cls) -> Any:
        """The state class named in ``AggregateRoot[TState, TKey]``."""
        state = _state_types.get(cls)
        if state is None:
            state = _state_types[cls] = _find_state_type(cls)
        return state

    @classmethod
    def rehydrate(
        cls,
        id: TKey,  # noqa: A002
        events: Iterable[object],
        *,
        state: TState | None = None,
        version: int = 0,
    ) -> AggregateRoot[TState, TKey]:
        """Rebuild an aggregate from history (optionally from a snapshot) without recording."""
        aggregate = cls.__new__(cls)
        AggregateRoot.__init__(aggregate, id, state)
        aggregate._version = version
        for event in events:
            aggregate._apply(event)
            aggregate._version += 1
        return aggregate

    @property
    def version(self) -> int:
        """The stored version plus the events recorded since (0 for a new aggregate)."""
        return self._version

    @property
    def state(self) -> TState:
        """The current state, including events recorded and not yet committed."""
        return self._state

    @property
    def persisted_version(self) -> int:
        """The version stored when this aggregate was loaded (the expected version on save)."""
        return self._version - len(self._pending_events)

    def record(self, event: object) -> None:
        """Apply an event to the state and keep it as uncommitted."""
        self._apply(event)
        self._pending_events.append(event)
        self._version += 1

    def _apply(self, event: object) -> None:
        # Whichever side declares the handler, a returned value is the new state.
        event_cls = type(event)
        state_handler = find_handler(type(self._state), event_cls)
        if state_handler is not None:
            result = state_handler(self._state, event)
        else:
            handler = find_handler(type(self), event_cls)
            if handler is None:
                raise MissingEventHandlerError(type(self), event_cls, state=type(self._state))
            result = handler(self, event)
        if result is not None:
            self._state = result


_state_types: dict[type, Any] = {}


def _find_state_type(cls: type) -> Any:
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            if get_origin(base) is AggregateRoot:
                state = get_args(base)[0]
                if isinstance(state, TypeVar):  # a generic intermediate base, not a class
                    break
                return state
    msg = f"{cls.__qualname__} must subclass AggregateRoot[StateClass, KeyType]"
    raise ConfigurationError(msg)
