"""Markers for personal data in events: plain metadata, read once per class by the codec.

A personal field names the field that holds the id of the person it belongs to (the
*subject*)::

    @dataclass(frozen=True)
    class CustomerRegistered:
        customer_id: str
        name: Annotated[str, PersonalData(subject="customer_id")]
        email: Annotated[str | None, PersonalData(subject="customer_id")] = None

or, declared on the class, :func:`personal_data` (``@personal_data("name", "email",
subject="customer_id")``). Nothing here encrypts anything: the storage does, above the
domain, so events stay plain values in memory.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from eventfold.domain.events import event_type

__all__ = [
    "FORGOTTEN",
    "NOT_SET",
    "PersonalData",
    "SubjectForgotten",
    "declared_personal_fields",
    "has_personal_data",
    "personal_data",
]

T = TypeVar("T", bound=type)

FORGOTTEN = "[forgotten]"
"""What a forgotten ``str`` field reads as."""


class _NotSet:
    """The type of :data:`NOT_SET`: no redaction value was declared."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_SET"


NOT_SET: Any = _NotSet()
"""No explicit redaction value: one is chosen from the field's type."""

_DECLARED_ATTR = "__eventfold_personal_data__"


@dataclass(frozen=True, slots=True)
class PersonalData:
    """Marks a field as personal data of the subject whose id is in field ``subject``.

    ``redacted`` is what the field reads as once the subject is forgotten (JSON data, as
    the event's codec reads it). Unset: ``None`` for an optional field, ``"[forgotten]"``
    for a string; any other type must name one.
    """

    subject: str
    redacted: Any = NOT_SET


def personal_data(*fields: str, subject: str, redacted: Any = NOT_SET) -> Callable[[T], T]:
    """Declare ``fields`` of an event class personal data of the subject in ``subject``."""
    if not fields:
        msg = "name at least one personal field"
        raise ValueError(msg)

    def mark(cls: T) -> T:
        declared = dict(cls.__dict__.get(_DECLARED_ATTR, {}))
        declared.update(dict.fromkeys(fields, PersonalData(subject, redacted)))
        setattr(cls, _DECLARED_ATTR, declared)
        return cls

    return mark


def declared_personal_fields(cls: type) -> dict[str, PersonalData]:
    """The fields :func:`personal_data` declared on ``cls`` itself (not inherited)."""
    return dict(cls.__dict__.get(_DECLARED_ATTR, {}))


def has_personal_data(cls: type) -> bool:
    """Whether an event class marks any field as personal data."""
    if declared_personal_fields(cls):
        return True
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except (NameError, TypeError):
        return False
    return any(
        isinstance(item, PersonalData)
        for hint in hints.values()
        if typing.get_origin(hint) is typing.Annotated
        for item in hint.__metadata__
    )


@event_type("eventfold.SubjectForgotten")
@dataclass(frozen=True, slots=True)
class SubjectForgotten:
    """A person was forgotten: whoever keeps copies of their personal data erases them.

    Written to the log (stream ``eventfold.forgotten-<subject>``) and to the outbox when a
    subject's key is deleted, so projections and broker consumers hear of it.
    """

    subject: str
