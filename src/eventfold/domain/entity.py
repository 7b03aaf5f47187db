"""Entities: identity, equality by identity, and events recorded for the application to take."""

from __future__ import annotations

from typing import Generic, TypeVar

TKey = TypeVar("TKey")


class Entity(Generic[TKey]):
    """An object with identity that records the domain events it raises.

    The entity never publishes: the unit of work takes the recorded events with
    :meth:`pull_events` when it commits.
    """

    def __init__(self, id: TKey) -> None:  # noqa: A002 - `id` is the domain's word here
        self._id = id
        self._pending_events: list[object] = []
        self._version = 0

    @property
    def id(self) -> TKey:
        """The entity's identity."""
        return self._id

    @property
    def version(self) -> int:
        """The stored version this entity was loaded at (0 for a new entity)."""
        return self._version

    @property
    def pending_events(self) -> tuple[object, ...]:
        """Events recorded and not yet handed over."""
        return tuple(self._pending_events)

    def record(self, event: object) -> None:
        """Record an event for the application to persist and publish after commit."""
        self._pending_events.append(event)

    def pull_events(self) -> list[object]:
        """Hand over the recorded events and forget them."""
        events, self._pending_events = self._pending_events, []
        return events

    def _mark_persisted(self, version: int) -> None:
        """Set the stored version (repositories call this after load or save)."""
        self._version = version

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Entity) and type(other) is type(self) and other.id == self._id

    def __hash__(self) -> int:
        return hash((type(self), self._id))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self._id!r}, version={self._version})"
