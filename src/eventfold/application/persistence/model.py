"""The persistence model: how each aggregate type is kept, event-sourced or as state.

Register every type once, at start-up::

    model = PersistenceModel()
    model.event_sourced(Order, snapshot_every=100, state_version=2)
    model.state_stored(Customer)                      # a JSON document per customer
    model.state_stored(Invoice, table=invoice_rows)   # the user's own SQLAlchemy table

A class decorated with :func:`non_event_sourced` is registered as state-stored by
:meth:`PersistenceModel.register`; any other :class:`AggregateRoot` as event-sourced.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, get_type_hints

from pydantic import TypeAdapter
from pydantic.errors import PydanticUserError

# pydantic reads TypedDicts from typing_extensions before Python 3.12 (a pydantic dependency).
from typing_extensions import TypedDict

from eventfold.domain.aggregate import AggregateRoot
from eventfold.domain.entity import Entity
from eventfold.errors import ConfigurationError
from eventfold.serialization import JsonCodec

if TYPE_CHECKING:
    from sqlalchemy import Table

__all__ = [
    "EventSourcedModel",
    "PersistenceModel",
    "SnapshotPolicy",
    "StateStoredModel",
    "TableMapping",
    "is_state_stored",
    "non_event_sourced",
]

T = TypeVar("T", bound=type)

_STATE_STORED_MARK = "__eventfold_state_stored__"


def non_event_sourced(cls: T) -> T:
    """Mark an entity or aggregate type as state-stored: its events are published, not kept."""
    setattr(cls, _STATE_STORED_MARK, True)
    return cls


def is_state_stored(cls: type) -> bool:
    """Whether ``cls`` (or a base class) was marked with :func:`non_event_sourced`."""
    return bool(getattr(cls, _STATE_STORED_MARK, False))


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    """Take a snapshot each time a stream's version crosses a multiple of ``every``."""

    every: int

    def __post_init__(self) -> None:
        if self.every < 1:
            msg = f"snapshots are taken every 1 or more events, got {self.every}"
            raise ConfigurationError(msg)

    def is_due(self, previous_version: int, new_version: int) -> bool:
        """Whether a save from ``previous_version`` to ``new_version`` calls for a snapshot."""
        # Crossing a multiple, not landing on one: a save of several events may jump over it.
        return new_version // self.every > previous_version // self.every


@dataclass(frozen=True, slots=True)
class EventSourcedModel:
    """An event-sourced aggregate type: its stream names, state codec and snapshot policy.

    ``state_codec`` is None for a state pydantic cannot encode (a plain class); such a
    type is folded from its events on every load and cannot be snapshotted.
    """

    aggregate_type: type[AggregateRoot[Any, Any]]
    name: str
    state_name: str
    state_version: int
    state_codec: JsonCodec | None
    snapshots: SnapshotPolicy | None
    state_shape: str = ""

    def stream_id(self, aggregate_id: object) -> str:
        """The stream an aggregate's events live in: ``<name>-<id>``."""
        return f"{self.name}-{aggregate_id}"

    @property
    def snapshot_type(self) -> str:
        """The state type a snapshot is stored under: the state's name and its shape.

        A snapshot is read only when this and ``state_version`` both match, so a state
        whose fields changed is folded from its events even if its version was not bumped.
        """
        return f"{self.state_name}@{self.state_shape}" if self.state_shape else self.state_name


@dataclass(frozen=True, slots=True)
class TableMapping:
    """A user's own SQLAlchemy table for a state-stored type, and how rows map to entities.

    ``to_row`` gives the column values of an entity (without the version column);
    ``from_row`` builds the entity from a row's values keyed by column name.
    """

    table: Table
    to_row: Callable[[Any], Mapping[str, Any]]
    from_row: Callable[[Mapping[str, Any]], Any]
    key_column: str = "id"
    version_column: str = "version"


@dataclass(frozen=True, slots=True)
class StateStoredModel:
    """A state-stored type: kept as a JSON document, or as a row of a user's table."""

    entity_type: type[Entity[Any]]
    name: str
    dump: Callable[[Any], str]
    load: Callable[[Any, str], Any]
    table: TableMapping | None = None
    log_events: bool = False
    """Whether its events are also appended to the global log (stream ``<name>-<id>``)."""

    def stream_id(self, entity_id: object) -> str:
        """The stream its events are logged under, when ``log_events`` is on."""
        return f"{self.name}-{entity_id}"


Model = EventSourcedModel | StateStoredModel


class PersistenceModel:
    """Which aggregate types are event-sourced and which are state-stored, and how."""

    def __init__(self) -> None:
        self._models: dict[type, Model] = {}
        self._names: dict[str, type] = {}

    def event_sourced(
        self,
        aggregate_type: type[AggregateRoot[Any, Any]],
        *,
        name: str | None = None,
        snapshot_every: int | None = None,
        state_version: int = 1,
    ) -> EventSourcedModel:
        """Keep ``aggregate_type`` as a stream of events, snapshotted every N if asked."""
        if not (isinstance(aggregate_type, type) and issubclass(aggregate_type, AggregateRoot)):
            msg = (
                f"{_name_of(aggregate_type)} is not an AggregateRoot: only those are event-sourced"
            )
            raise ConfigurationError(msg)
        if is_state_stored(aggregate_type):
            msg = f"{aggregate_type.__qualname__} is marked @non_event_sourced"
            raise ConfigurationError(msg)
        if state_version < 1:
            msg = f"state schema version must be 1 or more, got {state_version}"
            raise ConfigurationError(msg)
        state_type = aggregate_type.state_type()
        # Only snapshots need the state as JSON: a plain state class is fine without them.
        codec = _state_codec(
            aggregate_type, state_type, "snapshots" if snapshot_every is not None else None
        )
        model = EventSourcedModel(
            aggregate_type=aggregate_type,
            name=name or aggregate_type.__name__,
            state_name=_name_of(state_type),
            state_version=state_version,
            state_codec=codec,
            snapshots=None if snapshot_every is None else SnapshotPolicy(snapshot_every),
            state_shape="" if codec is None else shape_of(state_type),
        )
        self._add(aggregate_type, model)
        return model

    def state_stored(
        self,
        entity_type: type[Entity[Any]],
        *,
        name: str | None = None,
        table: TableMapping | None = None,
        dump: Callable[[Any], str] | None = None,
        load: Callable[[Any, str], Any] | None = None,
        log_events: bool = False,
    ) -> StateStoredModel:
        """Keep ``entity_type`` as its current state; its events go to the outbox.

        With ``log_events``, its events are also appended to the global log (one more row
        per event, in the same transaction), so projections can follow them beside the
        event-sourced types' events. The state row stays the source of truth: the log of
        a state-stored type is a history to project, not one to load the entity from.
        """
        if not (isinstance(entity_type, type) and issubclass(entity_type, Entity)):
            msg = f"{_name_of(entity_type)} is not an Entity: only entities are state-stored"
            raise ConfigurationError(msg)
        if (dump is None) != (load is None):
            msg = f"give both dump and load for {entity_type.__qualname__}, or neither"
            raise ConfigurationError(msg)
        if dump is None or load is None:
            # A row of the user's table is mapped by the table mapping, not by JSON.
            dump, load = _no_codec(entity_type) if table else _default_codec(entity_type)
        model = StateStoredModel(
            entity_type, name or entity_type.__name__, dump, load, table, log_events
        )
        self._add(entity_type, model)
        return model

    def register(self, cls: type[Entity[Any]]) -> Model:
        """Register as declared: state-stored if marked @non_event_sourced, else event-sourced."""
        if is_state_stored(cls) or not issubclass(cls, AggregateRoot):
            return self.state_stored(cls)
        return self.event_sourced(cls)

    def model_for(self, cls: type) -> Model:
        """How ``cls`` is kept; :class:`ConfigurationError` when it was never registered."""
        try:
            return self._models[cls]
        except KeyError:
            msg = (
                f"{cls.__qualname__} has no persistence model: register it with "
                f"PersistenceModel.event_sourced() or .state_stored()"
            )
            raise ConfigurationError(msg) from None

    def for_stream(self, stream_id: str) -> EventSourcedModel | None:
        """The event-sourced type whose streams are named like ``stream_id``, if any."""
        for model in self._models.values():
            if isinstance(model, EventSourcedModel) and stream_id.startswith(f"{model.name}-"):
                return model
        return None

    def _add(self, cls: type, model: Model) -> None:
        if cls in self._models:
            msg = f"{cls.__qualname__} is already registered"
            raise ConfigurationError(msg)
        taken = self._names.get(model.name)
        if taken is not None:
            msg = f"the name {model.name!r} is taken by {taken.__qualname__}"
            raise ConfigurationError(msg)
        self._models[cls] = model
        self._names[model.name] = cls


def _name_of(cls: object) -> str:
    return str(getattr(cls, "__qualname__", cls))


def shape_of(state_type: Any) -> str:
    """A short fingerprint of a state's JSON schema: its fields, their types and defaults.

    Descriptions and titles are left out, so a new docstring is not a new shape. A change
    that keeps every name and type (cents now meaning euros) is invisible here: bump
    ``state_version`` for that.
    """
    try:
        schema = TypeAdapter(state_type).json_schema()
    except (PydanticUserError, TypeError, ValueError):
        return ""  # no schema to compare: state_version alone decides
    text = json.dumps(_without_prose(schema), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _without_prose(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: _without_prose(value)
            for key, value in schema.items()
            if key not in ("description", "title")
        }
    if isinstance(schema, list):
        return [_without_prose(item) for item in schema]
    return schema


def _state_codec(owner: type, state_type: Any, needed_for: str | None) -> JsonCodec | None:
    """The state's JSON codec; a typed error naming the fix when ``needed_for`` needs one."""
    try:
        return JsonCodec(state_type)
    except (PydanticUserError, TypeError) as exc:
        if needed_for is None:
            return None
        name = _name_of(state_type)
        msg = (
            f"{owner.__qualname__}'s state {name} cannot be stored as JSON for {needed_for} "
            f"({type(exc).__name__}): make {name} a @dataclass (or a pydantic model) whose "
            f"fields are typed and have defaults, e.g. `@dataclass class {name}: status: str "
            f"= 'draft'`"
        )
        raise ConfigurationError(msg) from exc


def _no_codec(
    entity_type: type[Entity[Any]],
) -> tuple[Callable[[Any], str], Callable[[Any, str], Any]]:
    def refuse(*_: Any) -> Any:
        msg = f"{entity_type.__qualname__} is kept in a table: it has no JSON form"
        raise ConfigurationError(msg)

    return refuse, refuse


def _default_codec(
    entity_type: type[Entity[Any]],
) -> tuple[Callable[[Any], str], Callable[[Any, str], Any]]:
    """How a state-stored type becomes JSON and back, unless the user says otherwise."""
    if issubclass(entity_type, AggregateRoot):
        return _aggregate_state_codec(entity_type)
    return _annotated_fields_codec(entity_type)


def _aggregate_state_codec(
    aggregate_type: type[AggregateRoot[Any, Any]],
) -> tuple[Callable[[Any], str], Callable[[Any, str], Any]]:
    codec = _state_codec(aggregate_type, aggregate_type.state_type(), "state-stored rows")
    assert codec is not None

    def dump(aggregate: Any) -> str:
        return codec.encode(aggregate.state)

    def load(aggregate_id: Any, data: str) -> Any:
        return aggregate_type.rehydrate(aggregate_id, (), state=codec.decode(data))

    return dump, load


def _annotated_fields_codec(
    entity_type: type[Entity[Any]],
) -> tuple[Callable[[Any], str], Callable[[Any, str], Any]]:
    # A plain entity is stored as the public attributes its class annotates, or else as
    # the attributes named (and typed) by its __init__ parameters after the id.
    hints = {
        field: hint
        for field, hint in get_type_hints(entity_type).items()
        if not field.startswith("_")
    }
    from_init = not hints
    if from_init:
        hints = _init_hints(entity_type)
    fields_type = TypedDict(f"{entity_type.__name__}Fields", hints)  # type: ignore[misc]
    try:
        codec = JsonCodec(fields_type, entity_type.__qualname__)
    except (PydanticUserError, TypeError) as exc:
        msg = (
            f"{entity_type.__qualname__}'s stored attributes {sorted(hints)} cannot be "
            f"stored as JSON ({exc}): give them types pydantic encodes (str, int, Decimal, "
            f"datetime, dataclasses ...), or pass dump= and load= to state_stored()"
        )
        raise ConfigurationError(msg) from exc

    def dump(entity: Any) -> str:
        if from_init:
            _check_attributes(entity, hints)
        return codec.encode({field: getattr(entity, field) for field in hints})

    def load(entity_id: Any, data: str) -> Any:
        entity = entity_type.__new__(entity_type)
        Entity.__init__(entity, entity_id)
        entity.__dict__.update(codec.decode(data))
        return entity

    return dump, load


def _init_hints(entity_type: type[Entity[Any]]) -> dict[str, Any]:
    """The typed ``__init__`` parameters after the id: the attributes an entity stores."""
    name = entity_type.__qualname__
    init = entity_type.__init__
    parameters = list(inspect.signature(init).parameters.values())[2:]  # self, the id
    hints = get_type_hints(init)
    fields = {p.name: hints.get(p.name) for p in parameters if not p.name.startswith("_")}
    untyped = [field for field, hint in fields.items() if hint is None]
    if init is Entity.__init__ or not fields or untyped:
        msg = (
            f"{name} declares no typed state: annotate the public attributes it stores on "
            f"the class (e.g. `price: Decimal`), give its __init__ typed parameters of the "
            f"same names after the id{f' (untyped: {untyped})' if untyped else ''}, or pass "
            f"dump= and load= to state_stored()"
        )
        raise ConfigurationError(msg)
    return fields


def _check_attributes(entity: Any, hints: Mapping[str, Any]) -> None:
    """Refuse to store an entity whose public attributes its __init__ does not describe."""
    public = {field for field in vars(entity) if not field.startswith("_")}
    unknown, missing = sorted(public - hints.keys()), sorted(hints.keys() - public)
    if unknown or missing:
        name = type(entity).__qualname__
        msg = (
            f"{name} is stored as its __init__ parameters {sorted(hints)}, but its public "
            f"attributes differ (not parameters: {unknown}, not set: {missing}): annotate "
            f"every stored attribute on the class (e.g. `{(unknown or missing)[0]}: ...`) "
            f"or pass dump= and load= to state_stored()"
        )
        raise ConfigurationError(msg)
