"""Errors the domain model raises: the root of eventfold's hierarchy and the domain branch.

The whole hierarchy is drawn in :mod:`eventfold.errors`.
"""

from __future__ import annotations


class EventfoldError(Exception):
    """Root of every error eventfold raises."""


class DomainError(EventfoldError):
    """A business rule refused an operation; carries a message safe to show a caller."""

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


class RuleViolationError(DomainError):
    """The operation breaks an invariant of the aggregate (maps to a 400-style result)."""


class InvalidStateError(DomainError):
    """The operation is not allowed in the aggregate's current state (maps to 409)."""


class EntityNotFoundError(DomainError):
    """The entity an operation targets does not exist (maps to 404)."""

    def __init__(self, entity_type: str, entity_id: object) -> None:
        super().__init__(f"{entity_type} {entity_id!r} was not found")
        self.entity_type = entity_type
        self.entity_id = entity_id


class ConfigurationError(EventfoldError):
    """eventfold was wired wrongly: a missing or duplicate registration, a bad declaration."""


class MissingEventHandlerError(ConfigurationError):
    """An aggregate or state was asked to apply an event it declares no handler for."""

    def __init__(self, target: type, event_type: type, *, state: type | None = None) -> None:
        where = f"{target.__qualname__} declares"
        if state is not None:
            where = f"neither {target.__qualname__} nor its state {state.__qualname__} declares"
        super().__init__(
            f"{where} a handler for event {event_type.__qualname__}: "
            f"define apply_{event_type.__name__}(self, event), register it on a "
            f"singledispatchmethod 'on', or take it in a plain on(self, event) method"
        )
        self.target = target
        self.event_type = event_type
        self.state = state


class AggregateDefinitionError(ConfigurationError):
    """An aggregate is written in a shape eventfold would mishandle; the message says the fix.

    Raised when the class is defined, or at the first call that shows the mistake.
    """


_SHOWN_LENGTH = 60


class QueryError(EventfoldError):
    """A specification or query option is invalid; raised before any database is asked."""


class UnknownFieldError(QueryError):
    """A specification names a field the read model does not declare."""

    def __init__(self, field: str, model: str) -> None:
        super().__init__(f"unknown field {field!r} for {model}")
        self.field = field
        self.model = model


class UnknownOperatorError(QueryError):
    """A specification uses an operator eventfold does not know."""

    def __init__(self, operator: str) -> None:
        super().__init__(f"unknown operator {operator!r}")
        self.operator = operator


class InvalidValueError(QueryError):
    """A value does not fit its field or operator, or no backend could store it alike."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        shown = repr(value)
        if len(shown) > _SHOWN_LENGTH:  # a search text may be 10,000 characters long
            shown = shown[: _SHOWN_LENGTH - 1] + "…"
        super().__init__(f"invalid value {shown} for field {field!r}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason
