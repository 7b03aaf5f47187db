"""JSON serialisation of events and states, with stable type names and upcasting.

pydantic does the encoding: ``Decimal`` stays ``Decimal`` (written as a string, never a
float), aware ``datetime``, ``UUID``, ``Enum``, nested dataclasses and lists round-trip
exactly. Old payloads pass through the upcaster chain before they are decoded, so stored
events are never rewritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from eventfold.domain.errors import ConfigurationError
from eventfold.domain.events import event_name, event_version
from eventfold.errors import (
    EventDecodeError,
    SerializationError,
    UnknownEventTypeError,
    UnregisteredEventError,
)

__all__ = ["EncodedEvent", "EventRegistry", "JsonCodec", "Upcaster"]

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns the payload of schema version N into the payload of version N + 1."""


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event as the stores keep it: a type name, a schema version and JSON text."""

    type_name: str
    schema_version: int
    data: str


class JsonCodec:
    """Encodes one class to JSON and back through a cached pydantic TypeAdapter."""

    __slots__ = ("_adapter", "name")

    def __init__(self, cls: type, name: str | None = None) -> None:
        self._adapter: TypeAdapter[Any] = TypeAdapter(cls)
        self.name = name or cls.__qualname__

    def encode(self, value: object) -> str:
        """JSON text for ``value``."""
        return self._adapter.dump_json(value).decode()

    def to_jsonable(self, value: object) -> Any:
        """Plain JSON-compatible Python data for ``value``."""
        return self._adapter.dump_python(value, mode="json")

    def decode(self, data: str | bytes, *, version: int = 1) -> Any:
        """The object ``data`` describes, or :class:`EventDecodeError` naming the field."""
        try:
            return self._adapter.validate_json(data)
        except PydanticValidationError as exc:
            raise _decode_error(self.name, version, exc) from exc

    @property
    def validate_json(self) -> Callable[[str | bytes], Any]:
        """pydantic's ``validate_json`` of the class (raises pydantic's own error)."""
        return self._adapter.validate_json

    def decode_python(self, data: Any, *, version: int = 1) -> Any:
        """The object plain JSON data describes (after upcasting)."""
        try:
            return self._adapter.validate_python(data)
        except PydanticValidationError as exc:
            raise _decode_error(self.name, version, exc) from exc


def _decode_error(name: str, version: int, exc: PydanticValidationError) -> EventDecodeError:
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "<root>"
    return EventDecodeError(name, version, field, first["msg"])


class EventRegistry:
    """Maps stable type names to event classes and back, and upcasts old payloads."""

    def __init__(self, events: Iterable[type] = ()) -> None:
        self._by_name: dict[str, type] = {}
        self._names: dict[type, str] = {}
        self._codecs: dict[str, JsonCodec] = {}
        self._versions: dict[str, int] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        # type name -> (current schema version, pydantic's validate_json): decoding a
        # current payload is one dict lookup and one call, the hot path of every load.
        self._current: dict[str, tuple[int, Callable[[str | bytes], Any]]] = {}
        for cls in events:
            self.register(cls)

    def register(self, cls: type, *, name: str | None = None) -> type:
        """Register an event class under its stable name; returns the class (decorator use)."""
        type_name = name or event_name(cls)
        known = self._by_name.get(type_name)
        if known is not None and known is not cls:
            msg = (
                f"event type name {type_name!r} is taken by {known.__qualname__}; "
                f"give {cls.__qualname__} another name with @event_type"
            )
            raise ConfigurationError(msg)
        registered_as = self._names.get(cls, type_name)
        if registered_as != type_name:
            msg = f"{cls.__qualname__} is already registered as {registered_as!r}"
            raise ConfigurationError(msg)
        self._by_name[type_name] = cls
        self._names[cls] = type_name
        codec = JsonCodec(cls, type_name)
        self._codecs[type_name] = codec
        self._versions[type_name] = event_version(cls)
        self._current[type_name] = (event_version(cls), codec.validate_json)
        return cls

    def register_upcaster(self, type_name: str, from_version: int, upcaster: Upcaster) -> None:
        """Register how a payload of ``from_version`` becomes one of ``from_version + 1``."""
        key = (type_name, from_version)
        if key in self._upcasters:
            msg = f"{type_name} already has an upcaster from version {from_version}"
            raise ConfigurationError(msg)
        self._upcasters[key] = upcaster

    def upcaster(self, type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator form of :meth:`register_upcaster`."""

        def add(func: Upcaster) -> Upcaster:
            self.register_upcaster(type_name, from_version, func)
            return func

        return add

    def type_names(self) -> dict[str, type]:
        """Every registered type name and its class."""
        return dict(self._by_name)

    def is_registered(self, cls: type) -> bool:
        """Whether ``cls`` has been registered."""
        return cls in self._names

    def name_of(self, cls: type) -> str:
        """The stable name ``cls`` was registered under."""
        try:
            return self._names[cls]
        except KeyError:
            msg = f"event class {cls.__qualname__} is not registered with the EventRegistry"
            raise ConfigurationError(msg) from None

    def class_of(self, type_name: str) -> type:
        """The class registered for ``type_name``."""
        try:
            return self._by_name[type_name]
        except KeyError:
            raise UnknownEventTypeError(type_name) from None

    def encode(self, event: object) -> EncodedEvent:
        """The stored form of ``event``; :class:`UnregisteredEventError` for an unknown class.

        Never registered on first sight: a name guessed at write time would be stored,
        and only a reader in another process, which never saw the class, would fail.
        """
        cls = type(event)
        type_name = self._names.get(cls)
        if type_name is None:
            raise UnregisteredEventError(cls)
        codec = self._codecs[type_name]
        return EncodedEvent(type_name, self._versions[type_name], codec.encode(event))

    def decode(self, type_name: str, schema_version: int, data: str | bytes) -> object:
        """The event a stored payload describes, upcast to the current schema version."""
        current = self._current.get(type_name)
        if current is not None and current[0] == schema_version:
            try:
                return current[1](data)
            except PydanticValidationError as exc:
                raise _decode_error(type_name, schema_version, exc) from exc
        return self._decode_older(type_name, schema_version, data)

    def _decode_older(self, type_name: str, schema_version: int, data: str | bytes) -> object:
        codec = self._codecs.get(type_name)
        if codec is None:
            raise UnknownEventTypeError(type_name)
        current = self._versions[type_name]
        if schema_version == current:
            return codec.decode(data, version=schema_version)
        return codec.decode_python(
            self._upcast(type_name, schema_version, current, data), version=schema_version
        )

    def _upcast(self, type_name: str, version: int, current: int, data: str | bytes) -> Any:
        if version > current:
            msg = (
                f"stored {type_name} has schema version {version}, newer than this "
                f"code's version {current}"
            )
            raise SerializationError(msg)
        payload = _load_json(type_name, version, data)
        for step in range(version, current):
            upcaster = self._upcasters.get((type_name, step))
            if upcaster is None:
                msg = f"no upcaster for {type_name} from version {step} to {step + 1}"
                raise SerializationError(msg)
            payload = _run_upcaster(upcaster, type_name, step, payload)
        return payload


def _load_json(type_name: str, version: int, data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise EventDecodeError(type_name, version, "<root>", f"invalid JSON: {exc}") from exc


def _run_upcaster(upcaster: Upcaster, type_name: str, version: int, payload: Any) -> Any:
    # An upcaster is user code reading old payloads; whatever it raises is reported as the
    # payload that could not be decoded, with the step that failed.
    try:
        return upcaster(payload)
    except Exception as exc:
        reason = f"upcaster to version {version + 1} failed: {exc!r}"
        raise EventDecodeError(type_name, version, "<root>", reason) from exc
