"""The pure domain model: entities, aggregates, deciders, events and domain errors."""

from eventfold.domain.aggregate import AggregateRoot
from eventfold.domain.decider import Decider
from eventfold.domain.dispatch import apply_event
from eventfold.domain.entity import Entity
from eventfold.domain.errors import (
    ConfigurationError,
    DomainError,
    EntityNotFoundError,
    EventfoldError,
    InvalidStateError,
    MissingEventHandlerError,
    RuleViolationError,
)
from eventfold.domain.events import (
    EventEnvelope,
    EventMetadata,
    event_name,
    event_type,
    event_version,
)

__all__ = [
    "AggregateRoot",
    "ConfigurationError",
    "Decider",
    "DomainError",
    "Entity",
    "EntityNotFoundError",
    "EventEnvelope",
    "EventMetadata",
    "EventfoldError",
    "InvalidStateError",
    "MissingEventHandlerError",
    "RuleViolationError",
    "apply_event",
    "event_name",
    "event_type",
    "event_version",
]
