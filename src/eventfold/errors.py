"""Every error eventfold raises, in one hierarchy.

Adapters translate driver exceptions at the boundary (``raise ... from exc``); a user
never has to catch an asyncpg, aiosqlite, redis or aio-pika exception.

::

    EventfoldError
    ├── DomainError                      business rule refused the operation
    │   ├── RuleViolationError           → 400 bad_request
    │   ├── InvalidStateError            → 409 conflict
    │   └── EntityNotFoundError          → 404 not_found
    ├── ConfigurationError               wiring mistakes, found at registration or first use
    │   ├── MissingEventHandlerError     an aggregate cannot apply an event
    │   ├── AggregateDefinitionError     an aggregate written in a shape eventfold would mishandle
    │   ├── UnregisteredEventError       an event class to store was never registered
    │   ├── HandlerNotFoundError         no handler for a request type
    │   ├── DuplicateHandlerError        two handlers for one request type
    │   └── RegistrationError            no persistence handler for a type (or all declined)
    ├── SerializationError
    │   ├── UnknownEventTypeError        a stored type name no class is registered for
    │   └── EventDecodeError             a payload does not fit its class (type, version, field)
    ├── PersistenceError
    │   ├── ConcurrencyError             optimistic concurrency check failed
    │   │   └── CheckpointConflictError  another reader of the log moved a checkpoint first
    │   ├── DuplicateEventError          an event id is already stored (event log or outbox)
    │   ├── AggregateNotFoundError       also an EntityNotFoundError
    │   ├── StoreUnavailableError        the database cannot be reached
    │   └── SchemaMissingError           eventfold's tables are missing
    ├── QueryError                       a specification or query option is invalid
    │   ├── UnknownFieldError
    │   ├── UnknownOperatorError
    │   └── InvalidValueError
    └── MessagingError
        ├── BrokerUnavailableError       the broker cannot be reached
        └── PublishError                 the broker refused or did not confirm a message
"""

from __future__ import annotations

from eventfold.domain.errors import (
    AggregateDefinitionError,
    ConfigurationError,
    DomainError,
    EntityNotFoundError,
    EventfoldError,
    InvalidStateError,
    InvalidValueError,
    MissingEventHandlerError,
    QueryError,
    RuleViolationError,
    UnknownFieldError,
    UnknownOperatorError,
)

__all__ = [
    "AggregateDefinitionError",
    "AggregateNotFoundError",
    "BrokerUnavailableError",
    "CheckpointConflictError",
    "ConcurrencyError",
    "ConfigurationError",
    "DomainError",
    "DuplicateEventError",
    "DuplicateHandlerError",
    "EntityNotFoundError",
    "EventDecodeError",
    "EventfoldError",
    "HandlerNotFoundError",
    "InvalidStateError",
    "InvalidValueError",
    "MessagingError",
    "MissingEventHandlerError",
    "PersistenceError",
    "PublishError",
    "QueryError",
    "RegistrationError",
    "RuleViolationError",
    "SchemaMissingError",
    "SerializationError",
    "StoreUnavailableError",
    "UnknownEventTypeError",
    "UnknownFieldError",
    "UnknownOperatorError",
    "UnregisteredEventError",
]


class HandlerNotFoundError(ConfigurationError):
    """No handler is registered for a request type."""

    def __init__(self, request_type: type) -> None:
        super().__init__(f"no handler is registered for {request_type.__qualname__}")
        self.request_type = request_type


class DuplicateHandlerError(ConfigurationError):
    """A second handler was registered for a request type that already has one."""

    def __init__(self, request_type: type) -> None:
        super().__init__(f"{request_type.__qualname__} already has a handler; a request has one")
        self.request_type = request_type


class RegistrationError(ConfigurationError):
    """No persistence handler of a kind is registered for a type, or every one declined."""

    def __init__(self, entity_type: type, kind: str, *, declined: bool = False) -> None:
        name = entity_type.__qualname__
        if declined:
            message = f"every {kind} handler registered for {name} declined"
        else:
            message = f"no {kind} handler is registered for {name}"
        super().__init__(message)
        self.entity_type = entity_type
        self.kind = kind
        self.declined = declined


class UnregisteredEventError(ConfigurationError):
    """An event class was about to be stored without being registered with the EventRegistry.

    Stored under a guessed name, it would only fail later, in a reader in another process.
    """

    def __init__(self, event_type: type) -> None:
        name = event_type.__qualname__
        super().__init__(
            f"event class {name} is not registered with the EventRegistry: register it at "
            f"start-up, in every process that writes or reads it - EventRegistry([..., {name}]) "
            f"or events.register({name}) - and give it a stable name with "
            f"@event_type({event_type.__name__!r}) if its class may be renamed or moved"
        )
        self.event_type = event_type


class SerializationError(EventfoldError):
    """An event or state could not be turned into JSON or back."""


class UnknownEventTypeError(SerializationError):
    """A stored event names a type no class is registered for."""

    def __init__(self, type_name: str) -> None:
        super().__init__(
            f"unknown event type {type_name!r}: register its class with the EventRegistry"
        )
        self.type_name = type_name


class EventDecodeError(SerializationError):
    """A payload does not fit the class registered for its type."""

    def __init__(self, type_name: str, schema_version: int, field: str, reason: str) -> None:
        super().__init__(f"cannot decode {type_name} v{schema_version}: field {field!r}: {reason}")
        self.type_name = type_name
        self.schema_version = schema_version
        self.field = field
        self.reason = reason


class PersistenceError(EventfoldError):
    """A store could not do what was asked."""


class ConcurrencyError(PersistenceError):
    """Another writer changed the stream or row first; nothing of this write was stored."""

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        super().__init__(
            f"concurrency conflict on {stream_id!r}: expected version {expected}, "
            f"actual version {actual}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class CheckpointConflictError(ConcurrencyError):
    """Another reader of the log moved a checkpoint first; nothing of this batch was saved."""

    # Positions in the log, not stream versions: (commit, position) tuples or None.
    actual: object  # type: ignore[assignment]

    def __init__(self, name: str, expected: object, actual: object) -> None:
        PersistenceError.__init__(
            self,
            f"checkpoint {name!r} was moved by another reader: expected "
            f"{_position(expected)}, found {_position(actual)}",
        )
        self.stream_id = f"checkpoint:{name}"
        self.name = name
        self.expected = expected
        self.actual = actual


def _position(position: object) -> str:
    return "no checkpoint" if position is None else repr(position)


class DuplicateEventError(PersistenceError):
    """An event with this id is already stored; nothing of the write was stored."""

    def __init__(self, event_id: object) -> None:
        super().__init__(f"an event with id {event_id} is already stored")
        self.event_id = event_id


class AggregateNotFoundError(PersistenceError, EntityNotFoundError):
    """No aggregate is stored under this id."""

    def __init__(self, aggregate_type: str, aggregate_id: object) -> None:
        EntityNotFoundError.__init__(self, aggregate_type, aggregate_id)


class StoreUnavailableError(PersistenceError):
    """The database or cache cannot be reached."""

    def __init__(self, store: str, reason: str, *, hint: str | None = None) -> None:
        hint = hint or "check that the server is running and that the URL, host and port are right"
        super().__init__(f"{store} is unreachable: {reason} ({hint})")
        self.store = store
        self.reason = reason


class SchemaMissingError(PersistenceError):
    """eventfold's tables do not exist in the database."""

    def __init__(self, store: str, missing: str) -> None:
        super().__init__(
            f"{store} lacks eventfold's tables ({missing}): run `eventfold db init` "
            f"or `await storage.create_schema()`"
        )
        self.store = store
        self.missing = missing


class MessagingError(EventfoldError):
    """A broker could not do what was asked."""


class BrokerUnavailableError(MessagingError):
    """The broker cannot be reached."""

    def __init__(self, broker: str, reason: str) -> None:
        super().__init__(f"{broker} is unreachable: {reason}")
        self.broker = broker
        self.reason = reason


class PublishError(MessagingError):
    """The broker refused or did not confirm a message."""
