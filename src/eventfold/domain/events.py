"""Domain events: stable type names, schema versions and the metadata that travels beside them.

Users write events as frozen dataclasses or pydantic models. Nothing here is required of
them but a class; :func:`event_type` gives a class a stable name (so renaming or moving the
class does not break stored events) and a schema version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

E = TypeVar("E")
T = TypeVar("T", bound=type)

_NAME_ATTR = "__eventfold_name__"
_VERSION_ATTR = "__eventfold_version__"


def event_type(name: str | None = None, *, version: int = 1) -> Callable[[T], T]:
    """Give an event class a stable type name and a schema version."""
    if version < 1:
        msg = f"schema version must be 1 or more, got {version}"
        raise ValueError(msg)

    def mark(cls: T) -> T:
        setattr(cls, _NAME_ATTR, name or cls.__name__)
        setattr(cls, _VERSION_ATTR, version)
        return cls

    return mark


def event_name(cls: type) -> str:
    """The stable type name of an event class (its class name unless declared)."""
    # Read from the class's own __dict__ so a subclass does not inherit its parent's name.
    return str(cls.__dict__.get(_NAME_ATTR, cls.__name__))


def event_version(cls: type) -> int:
    """The current schema version of an event class (1 unless declared)."""
    return int(cls.__dict__.get(_VERSION_ATTR, 1))


@dataclass(frozen=True, slots=True)
class EventMetadata:
    """What the store knows about a recorded event, kept apart from the event's own fields."""

    event_id: UUID
    type_name: str
    schema_version: int
    stream_id: str
    version: int
    occurred_at: datetime
    position: int = 0
    correlation_id: str | None = None
    causation_id: str | None = None
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class EventEnvelope(Generic[E]):
    """A domain event together with its metadata."""

    event: E
    metadata: EventMetadata
