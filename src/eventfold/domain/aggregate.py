"""Aggregate roots: a separate state object changed only by applying events."""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Iterable
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin

from eventfold.domain.dispatch import Handler, catch_all_handler, find_handler
from eventfold.domain.entity import Entity
from eventfold.domain.errors import (
    AggregateDefinitionError,
    ConfigurationError,
    MissingEventHandlerError,
)

TState = TypeVar("TState")
TKey = TypeVar("TKey")

# The only attributes an aggregate instance holds; everything else lives in its state.
_OWN_ATTRIBUTES = frozenset({"_id", "_pending_events", "_version", "_state"})
# Public names AggregateRoot itself defines: a subclass may annotate them harmlessly.
_BASE_NAMES = frozenset({"id", "version", "state", "persisted_version", "pending_events"})


class AggregateRoot(Entity[TKey], Generic[TState, TKey]):
    """An aggregate whose state changes only by applying the events it records.

    Handlers live on the state class or on the aggregate, as ``apply_<EventName>``
    methods or overloads of a ``functools.singledispatchmethod`` named ``on``; the state's
    handler is used when both declare one. A plain ``on(self, event)`` method takes every
    event no specific handler takes. A handler mutates the state in place and returns
    None, or returns a new state of the state class (for frozen states).

    Everything the aggregate knows lives in its state: an attribute set on the aggregate
    itself would be lost when it is loaded from a snapshot or a cache, so setting one
    raises :class:`~eventfold.AggregateDefinitionError`, as do the shapes of other
    frameworks that eventfold would otherwise mishandle (see ``docs/migrating.md``).
    """

    def __init__(self, id: TKey, state: TState | None = None) -> None:  # noqa: A002
        state_cls = _checkable_state_type(type(self))
        if state_cls is not None:
            _check_arguments(type(self), state_cls, id, state)
        super().__init__(id)
        self._state: TState = self.initial_state() if state is None else state

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _refuse_fields_on_aggregate(cls)
        _refuse_applying_before_recording(cls)

    def __setattr__(self, name: str, value: object) -> None:
        if name not in _OWN_ATTRIBUTES and not _settable(type(self), name):
            raise AggregateDefinitionError(_field_on_aggregate(type(self), [name]))
        object.__setattr__(self, name, value)

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
        applied = 0
        for event in events:
            aggregate._apply(event)
            applied += 1
        object.__setattr__(aggregate, "_version", version + applied)
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
        # Past the attribute guard: _version is the aggregate's own (the hot path).
        object.__setattr__(self, "_version", self._version + 1)

    def register_event(self, event: object) -> None:
        """Refuse: ``record(event)`` applies and records; a separate apply would run twice."""
        raise AggregateDefinitionError(_register_event_message(type(self)))

    def _apply(self, event: object) -> None:
        # Specific handlers first (the state's, then the aggregate's), then a plain `on`.
        event_cls = type(event)
        state_cls: type = type(self._state)
        own_cls: type = type(self)
        owner: object = self._state
        handler = find_handler(state_cls, event_cls)
        if handler is None:
            owner, handler = self, find_handler(own_cls, event_cls)
        if handler is None:
            owner, handler = self._state, catch_all_handler(state_cls)
        if handler is None:
            owner, handler = self, catch_all_handler(own_cls)
        if handler is None:
            raise MissingEventHandlerError(own_cls, event_cls, state=state_cls)
        result = handler(owner, event)
        if result is not None:
            self._take_returned_state(owner, handler, result)

    def _take_returned_state(self, owner: object, handler: Handler, result: object) -> None:
        # Only a state replaces the state: a handler that returns anything else (a list it
        # appended to, a flag) would otherwise silently replace the whole state with it.
        state_cls = _checkable_state_type(type(self))
        if state_cls is not None and not isinstance(result, state_cls):
            name = f"{type(owner).__name__}.{getattr(handler, '__name__', 'on')}"
            state = state_cls.__name__
            msg = (
                f"{name} returned a {type(result).__name__}, not a {state}: a handler "
                f"changes the state in place and returns None, or returns a new {state} "
                f"(for a frozen state)"
            )
            raise AggregateDefinitionError(msg)
        object.__setattr__(self, "_state", result)


_state_types: dict[type, Any] = {}
_checkable: dict[type, type | None] = {}
_settable_names: dict[tuple[type, str], bool] = {}


def _find_state_type(cls: type) -> Any:
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            if get_origin(base) is AggregateRoot:
                state = get_args(base)[0]
                if isinstance(state, TypeVar):  # a generic intermediate base, not a class
                    break
                return state
    msg = (
        f"{cls.__qualname__} must subclass AggregateRoot[StateClass, KeyType]: an eventfold "
        f"aggregate keeps its data in a separate state class (e.g. a @dataclass "
        f"{cls.__name__}State with defaults for every field)"
    )
    raise ConfigurationError(msg)


def _checkable_state_type(cls: type) -> type | None:
    """The state class an ``isinstance`` check can use, or None (unknown, or not a class)."""
    try:
        return _checkable[cls]
    except KeyError:
        pass
    found: type | None = None
    try:
        state = get_origin(cls.state_type()) or cls.state_type()  # type: ignore[attr-defined]
        if isinstance(state, type):
            isinstance(None, state)  # TypedDicts and protocols refuse isinstance
            found = state
    except (ConfigurationError, TypeError):
        found = None
    _checkable[cls] = found
    return found


def _check_arguments(cls: type, state_cls: type, id: object, state: object) -> None:  # noqa: A002
    if isinstance(id, state_cls):
        msg = (
            f"{cls.__name__} passed its state as the id: AggregateRoot.__init__ takes "
            f"(id, state=None), the id first - write super().__init__({cls.__name__.lower()}"
            f"_id) (the state starts as {state_cls.__name__}()) or "
            f"super().__init__({cls.__name__.lower()}_id, {state_cls.__name__}(...))"
        )
        raise AggregateDefinitionError(msg)
    if state is not None and not isinstance(state, state_cls):
        msg = (
            f"{cls.__name__} was given a {type(state).__name__} as its state, not "
            f"a {state_cls.__name__}: AggregateRoot.__init__ takes (id, state=None)"
        )
        raise AggregateDefinitionError(msg)


def _settable(cls: type, name: str) -> bool:
    """Whether ``name`` is a data descriptor of the class (a property with a setter)."""
    key = (cls, name)
    try:
        return _settable_names[key]
    except KeyError:
        attribute = inspect.getattr_static(cls, name, None)
        settable = _settable_names[key] = hasattr(type(attribute), "__set__")
        return settable


def _state_name(cls: type) -> str:
    try:
        return str(getattr(_find_state_type(cls), "__name__", f"{cls.__name__}State"))
    except ConfigurationError:
        return f"{cls.__name__}State"


def _field_on_aggregate(cls: type, names: list[str]) -> str:
    state = _state_name(cls)
    first = names[0].lstrip("_")
    return (
        f"{cls.__name__} keeps {', '.join(names)} on the aggregate, where it would be lost "
        f"when the aggregate is loaded from a snapshot or a cache: an eventfold aggregate "
        f"holds only its id, version and state - declare the field on its state class "
        f"{state} (`{first}: ...` with a default), set it in an event handler, and read it "
        f"as self.state.{first}"
    )


def _refuse_fields_on_aggregate(cls: type) -> None:
    annotations = inspect.get_annotations(cls)
    fields = [
        name
        for name, hint in annotations.items()
        if not name.startswith("_") and name not in _BASE_NAMES and not _is_class_var(hint)
    ]
    if fields:
        raise AggregateDefinitionError(_field_on_aggregate(cls, fields))


def _is_class_var(hint: object) -> bool:
    if isinstance(hint, str):
        return hint.startswith(("ClassVar", "typing.ClassVar"))
    return hint is ClassVar or get_origin(hint) is ClassVar


def _register_event_message(cls: type) -> str:
    return (
        f"{cls.__name__} calls self.register_event(event): eventfold's aggregate "
        f"records with self.record(event), which also applies the event to the state - "
        f"write self.record(event) and drop the self.state.on(event) before it"
    )


def _refuse_applying_before_recording(cls: type) -> None:
    """Refuse methods that apply an event to the state themselves and then record it.

    ``record`` applies the event already, so the event would be applied twice (an item
    added twice, a total counted twice) with no error. Read from the methods' source;
    code without source (typed into a REPL) is not checked.
    """
    for name, member in cls.__dict__.items():
        if not inspect.isfunction(member):
            continue
        tree = _parse(member)
        if tree is None:
            continue
        calls = _self_calls(tree)
        if "register_event" in calls:
            raise AggregateDefinitionError(_register_event_message(cls))
        applied = calls & {"state.on", "_state.on"} or {c for c in calls if ".apply_" in c}
        if applied and "record" in calls:
            msg = (
                f"{cls.__name__}.{name} applies the event itself "
                f"(self.{sorted(applied)[0]}(event)) and then records it: record(event) "
                f"already applies it to the state, so it would be applied twice - drop "
                f"the self.{sorted(applied)[0]}(event) line and keep self.record(event)"
            )
            raise AggregateDefinitionError(msg)


def _parse(function: Any) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(function))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return None
    node = tree.body[0] if tree.body else None
    return node if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else None


def _self_calls(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Dotted names of methods called on the first parameter: ``record``, ``state.on``."""
    if not function.args.args:
        return set()
    self_name = function.args.args[0].arg
    found: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            dotted = _dotted(node.func, self_name)
            if dotted is not None:
                found.add(dotted)
    return found


def _dotted(node: ast.expr, self_name: str) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not (isinstance(node, ast.Name) and node.id == self_name and parts):
        return None
    return ".".join(reversed(parts))
