"""Specifications: business predicates as data, evaluated in memory or translated to SQL.

A specification is an immutable tree of :class:`Condition` leaves joined by
:class:`AllOf`, :class:`AnyOf` and :class:`Not`. It answers ``is_satisfied_by(candidate)``
in memory; an adapter walks the same tree to build a query, so both agree.

Semantics, shared by every backend:

- A field is a name, dotted for nesting (``customer.address.city``); it is read from
  mappings by key and from dataclasses, pydantic models and other objects by attribute.
  A missing field reads as ``None``.
- Logic is two-valued. A ``None`` field satisfies no positive condition (``=``, ``<``,
  ``in``, ``like``, ``contains``, ...); ``!=`` and ``not in`` are the exact negations of
  ``=`` and ``in``, so they are satisfied by ``None``; ``~spec`` is the exact negation.
- ``like`` follows SQL: ``%`` matches any run of characters, ``_`` exactly one, ``\\``
  escapes the next character; matching is case-sensitive and covers the whole string.
- Strings compare by code point (as Python does, and as SQL with a binary collation).

Values are checked against their operator when a condition is built, and refused there
when a backend could not store or compare them alike (see :mod:`eventfold.domain.storable`:
NUL characters, lone surrogates, integers beyond 64 bits, overlong search text, ...);
field names and value types are checked against a :class:`FieldSet` by
:meth:`Specification.validate`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Self, Union, get_args, get_origin

from eventfold.domain.errors import (
    ConfigurationError,
    InvalidValueError,
    UnknownFieldError,
    UnknownOperatorError,
)
from eventfold.domain.storable import check_pattern, check_value, utc_moment

__all__ = [
    "AllOf",
    "AnyOf",
    "Condition",
    "FieldSet",
    "Not",
    "Operator",
    "Specification",
    "SpecificationBuilder",
    "like_to_regex",
    "resolve_field",
]

Resolver = Callable[[str], object]
"""Reads a field's value by its (dotted) name."""

_SCALARS = (str, int, float, Decimal, bool, datetime, date)
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class Operator(enum.StrEnum):
    """The operators a :class:`Condition` can use."""

    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "in"
    NOT_IN = "not in"
    LIKE = "like"
    CONTAINS = "contains"
    STARTSWITH = "startswith"
    IS_NULL = "is null"
    BETWEEN = "between"

    @classmethod
    def parse(cls, text: object) -> Operator:
        """The operator ``text`` names (case and spacing are ignored); else raise."""
        if isinstance(text, Operator):
            return text
        if not isinstance(text, str):
            raise UnknownOperatorError(repr(text))
        normal = " ".join(text.lower().split())
        try:
            return cls(_ALIASES.get(normal, normal))
        except ValueError:
            raise UnknownOperatorError(text) from None


_ALIASES = {"==": "=", "<>": "!=", "not_in": "not in", "is_null": "is null"}
_TEXT_ONLY = frozenset({Operator.LIKE, Operator.STARTSWITH})


def resolve_field(candidate: object, field: str) -> object:
    """The value at dotted ``field`` in ``candidate``; ``None`` where any step is missing."""
    value = candidate
    for part in field.split("."):
        if value is None:
            return None
        value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
    return value


@functools.lru_cache(maxsize=256)
def like_to_regex(pattern: str) -> re.Pattern[str]:
    """A regular expression matching exactly what SQL ``LIKE pattern ESCAPE '\\'`` does."""
    parts: list[str] = []
    chars = iter(pattern)
    for char in chars:
        if char == "\\":
            parts.append(re.escape(next(chars)))
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


class Specification:
    """A predicate over candidates; combine with ``&``, ``|`` and ``~``."""

    __slots__ = ()

    def evaluate(self, resolve: Resolver) -> bool:
        """Whether the candidate whose fields ``resolve`` reads satisfies this."""
        raise NotImplementedError

    def conditions(self) -> Iterator[Condition]:
        """Every leaf condition in this tree."""
        raise NotImplementedError

    def is_satisfied_by(self, candidate: object) -> bool:
        """Whether ``candidate`` (mapping, dataclass, pydantic model, object) satisfies this."""
        return self.evaluate(functools.partial(resolve_field, candidate))

    def validate(self, fields: FieldSet | Mapping[str, Any], model: str = "read model") -> None:
        """Check every field is declared and every value fits its field's type; else raise."""
        field_set = fields if isinstance(fields, FieldSet) else FieldSet(model, fields)
        for condition in self.conditions():
            field_set.check(condition)

    def and_(self, other: Specification) -> Specification:
        """Satisfied when both are."""
        return AllOf((self, other))

    def or_(self, other: Specification) -> Specification:
        """Satisfied when either is."""
        return AnyOf((self, other))

    def not_(self) -> Specification:
        """Satisfied when this is not."""
        return Not(self)

    def __and__(self, other: Specification) -> Specification:
        return self.and_(other)

    def __or__(self, other: Specification) -> Specification:
        return self.or_(other)

    def __invert__(self) -> Specification:
        return self.not_()


@dataclass(frozen=True, slots=True)
class Condition(Specification):
    """A leaf: ``field operator value``, checked against the operator when built."""

    field: str
    operator: Operator
    value: Any

    def __post_init__(self) -> None:
        if not isinstance(self.field, str) or not self.field:
            raise UnknownFieldError(repr(self.field), "specification")
        operator = Operator.parse(self.operator)
        object.__setattr__(self, "operator", operator)
        object.__setattr__(self, "value", _checked_value(self.field, operator, self.value))

    def evaluate(self, resolve: Resolver) -> bool:
        """Apply the operator to the field's value (two-valued: ``None`` fails positives)."""
        if self.operator is Operator.NE:
            return not _test(Operator.EQ, resolve(self.field), self.value)
        if self.operator is Operator.NOT_IN:
            return not _test(Operator.IN, resolve(self.field), self.value)
        return _test(self.operator, resolve(self.field), self.value)

    def conditions(self) -> Iterator[Condition]:
        """This condition."""
        yield self


@dataclass(frozen=True, slots=True)
class AllOf(Specification):
    """Satisfied when every part is (an empty ``AllOf`` is always satisfied)."""

    parts: tuple[Specification, ...]

    def evaluate(self, resolve: Resolver) -> bool:
        """Every part holds."""
        return all(part.evaluate(resolve) for part in self.parts)

    def conditions(self) -> Iterator[Condition]:
        """The leaves of every part."""
        for part in self.parts:
            yield from part.conditions()


@dataclass(frozen=True, slots=True)
class AnyOf(Specification):
    """Satisfied when some part is (an empty ``AnyOf`` is never satisfied)."""

    parts: tuple[Specification, ...]

    def evaluate(self, resolve: Resolver) -> bool:
        """Some part holds."""
        return any(part.evaluate(resolve) for part in self.parts)

    def conditions(self) -> Iterator[Condition]:
        """The leaves of every part."""
        for part in self.parts:
            yield from part.conditions()


@dataclass(frozen=True, slots=True)
class Not(Specification):
    """Satisfied when its part is not."""

    part: Specification

    def evaluate(self, resolve: Resolver) -> bool:
        """The part does not hold."""
        return not self.part.evaluate(resolve)

    def conditions(self) -> Iterator[Condition]:
        """The leaves of the part."""
        return self.part.conditions()


class SpecificationBuilder:
    """Builds a specification: ``where`` adds to the current and-group, ``or_where`` starts one.

    ``where(a).where(b).or_where(c)`` means ``(a and b) or c``.
    """

    def __init__(self) -> None:
        self._groups: list[list[Specification]] = [[]]

    def where(self, field: str, operator: str | Operator, value: object = True) -> Self:
        """And a condition onto the current group."""
        return self.add(Condition(field, Operator.parse(operator), value))

    def or_where(self, field: str, operator: str | Operator, value: object = True) -> Self:
        """Start a new group, or-ed with the previous ones, holding this condition."""
        self._groups.append([])
        return self.where(field, operator, value)

    def add(self, specification: Specification) -> Self:
        """And a whole specification onto the current group."""
        self._groups[-1].append(specification)
        return self

    def build(self) -> Specification:
        """The specification; one with no conditions is satisfied by everything."""
        groups = [_all_of(group) for group in self._groups if group]
        if not groups:
            return AllOf(())
        return groups[0] if len(groups) == 1 else AnyOf(tuple(groups))


def _all_of(parts: list[Specification]) -> Specification:
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


class FieldSet:
    """The fields a read model declares, with their types: what specifications may use.

    Types are ``str``, ``int``, ``float``, ``Decimal``, ``bool``, ``datetime``, ``date``,
    or ``list[T]`` of one of those (``contains`` and ``is null`` only). ``T | None`` is
    accepted as ``T``: every field may be null.
    """

    def __init__(self, model: str, fields: Mapping[str, Any]) -> None:
        self.model = model
        self._types: dict[str, Any] = {}
        for name, declared in fields.items():
            if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
                raise ConfigurationError(f"{model}: {name!r} is not a valid field name")
            self._types[name] = _normalise_type(model, name, declared)

    @classmethod
    def from_model(cls, model: type) -> FieldSet:
        """The fields of a dataclass or pydantic model, nested models flattened with dots."""
        return cls(model.__qualname__, dict(_model_fields(model, "")))

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def type_of(self, name: str) -> Any:
        """The declared type of ``name``; :class:`UnknownFieldError` if not declared."""
        try:
            return self._types[name]
        except KeyError:
            raise UnknownFieldError(name, self.model) from None

    def check(self, condition: Condition) -> None:
        """Raise unless the condition's field is declared and its value fits the type."""
        declared = self.type_of(condition.field)
        _check_type(condition, declared)

    def coerce(self, name: str, raw: object) -> object:
        """``raw`` as the declared type, as read from JSON.

        JSON keeps a ``Decimal`` as text (or a number), a datetime or a date as ISO 8601
        text, a float that happens to be whole as an int. A datetime is returned aware,
        in UTC (a naive one *is* UTC), so that every datetime compares by its instant.
        """
        declared = self.type_of(name)
        if raw is None or isinstance(raw, bool):
            return raw
        if declared is Decimal and isinstance(raw, str | int | float):
            return Decimal(str(raw))
        if declared is float and isinstance(raw, int):
            return float(raw)
        if declared is datetime and isinstance(raw, str | datetime):
            return _moment(name, raw)
        if declared is date and isinstance(raw, str):
            return _parsed(name, raw, date.fromisoformat)
        return raw


def _moment(name: str, raw: str | datetime) -> datetime:
    moment = _parsed(name, raw, datetime.fromisoformat) if isinstance(raw, str) else raw
    return utc_moment(name, moment)


def _parsed(name: str, raw: str, parse: Callable[[str], Any]) -> Any:
    try:
        return parse(raw)
    except ValueError:
        raise InvalidValueError(name, raw, "is not ISO 8601 text") from None


def _normalise_type(model: str, name: str, declared: Any) -> Any:
    args = [arg for arg in get_args(declared) if arg is not type(None)]
    if get_origin(declared) in (Union, types.UnionType) and len(args) == 1:
        return _normalise_type(model, name, args[0])
    if get_origin(declared) is list and len(args) == 1 and args[0] in _SCALARS:
        return declared
    if declared in _SCALARS:
        return declared
    raise ConfigurationError(f"{model}.{name}: type {declared!r} cannot be queried")


def _model_fields(model: type, prefix: str) -> Iterator[tuple[str, Any]]:
    for name, hint in typing.get_type_hints(model).items():
        if name.startswith("_") or get_origin(hint) is typing.ClassVar:
            continue
        nested = _nested_model(hint)
        if nested is not None:
            yield from _model_fields(nested, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", hint


def _nested_model(hint: Any) -> type | None:
    args = [arg for arg in get_args(hint) if arg is not type(None)]
    if get_origin(hint) in (Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    # A nested dataclass or pydantic model (the latter recognised without importing it).
    is_model = dataclasses.is_dataclass(hint) or hasattr(hint, "model_fields")
    return hint if isinstance(hint, type) and is_model else None


def _checked_value(field: str, operator: Operator, value: object) -> object:
    """The value in canonical form, or InvalidValueError when it cannot fit the operator."""
    if operator is Operator.IS_NULL:
        if not isinstance(value, bool):
            raise InvalidValueError(field, value, "'is null' takes True or False")
        return value
    if operator in (Operator.IN, Operator.NOT_IN):
        return _checked_collection(field, operator, value)
    if operator is Operator.BETWEEN:
        return _checked_range(field, value)
    if operator in _TEXT_ONLY:
        return _checked_pattern(field, operator, value)
    if operator is Operator.CONTAINS and isinstance(value, str):
        return check_pattern(field, value)
    return _checked_scalar(field, operator, value)


def _checked_scalar(field: str, operator: Operator, value: object) -> object:
    if value is None:
        raise InvalidValueError(field, value, f"{operator.value!r} needs a value; use 'is null'")
    if not isinstance(value, _SCALARS):
        raise InvalidValueError(field, value, f"{operator.value!r} needs a single plain value")
    return check_value(field, value)


def _checked_collection(field: str, operator: Operator, value: object) -> tuple[object, ...]:
    if isinstance(value, str | bytes | Mapping) or not isinstance(
        value, list | tuple | set | frozenset
    ):
        raise InvalidValueError(field, value, f"{operator.value!r} needs a list of values")
    return tuple(_checked_scalar(field, operator, item) for item in value)


def _checked_range(field: str, value: object) -> tuple[object, object]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidValueError(field, value, "'between' needs a (low, high) pair")
    low, high = (_checked_scalar(field, Operator.BETWEEN, item) for item in value)
    return (low, high)


def _checked_pattern(field: str, operator: Operator, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidValueError(field, value, f"{operator.value!r} needs a string")
    if operator is Operator.LIKE and re.search(r"(?<!\\)(\\\\)*\\$", value):
        raise InvalidValueError(field, value, "a like pattern cannot end with a lone '\\'")
    return check_pattern(field, value)


def _test(operator: Operator, actual: object, expected: Any) -> bool:
    """A positive operator on a resolved value; ``None`` and mismatched types fail."""
    if operator is Operator.IS_NULL:
        return (actual is None) is expected
    if actual is None:
        return False
    if isinstance(actual, datetime):
        actual, expected = _instant(actual), _instants(expected)
    try:
        return _POSITIVE[operator](actual, expected)
    except TypeError:
        # Values of incomparable types (a str against an int) satisfy nothing, as in SQL
        # where such a comparison is refused at validation time.
        return False


def _instant(value: object) -> object:
    """A datetime as an aware UTC one (naive is UTC), so that any two compare by instant."""
    if isinstance(value, datetime) and value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value


def _instants(expected: object) -> object:
    if isinstance(expected, tuple):
        return tuple(_instant(item) for item in expected)
    return _instant(expected)


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(actual, str):
        return isinstance(expected, str) and expected in actual
    if isinstance(actual, list | tuple | set | frozenset):
        return any(_same(item, expected) for item in actual)
    return False


def _same(actual: Any, expected: Any) -> bool:
    # bool is an int in Python but never equal to a number in a query.
    if isinstance(actual, bool) != isinstance(expected, bool):
        return False
    return bool(actual == expected)


def _like(actual: Any, pattern: str) -> bool:
    return isinstance(actual, str) and like_to_regex(pattern).fullmatch(actual) is not None


def _between(actual: Any, bounds: tuple[Any, Any]) -> bool:
    return bool(bounds[0] <= actual <= bounds[1])


_POSITIVE: dict[Operator, Callable[[Any, Any], bool]] = {
    Operator.EQ: _same,
    Operator.LT: lambda a, e: bool(a < e),
    Operator.LE: lambda a, e: bool(a <= e),
    Operator.GT: lambda a, e: bool(a > e),
    Operator.GE: lambda a, e: bool(a >= e),
    Operator.IN: lambda a, e: any(_same(a, item) for item in e),
    Operator.LIKE: _like,
    Operator.CONTAINS: _contains,
    Operator.STARTSWITH: lambda a, e: isinstance(a, str) and a.startswith(e),
    Operator.BETWEEN: _between,
}


def _check_type(condition: Condition, declared: Any) -> None:
    """Raise InvalidValueError unless the condition's operator and value fit ``declared``."""
    operator, field = condition.operator, condition.field
    if operator is Operator.IS_NULL:
        return
    if get_origin(declared) is list:
        if operator is not Operator.CONTAINS:
            raise InvalidValueError(field, condition.value, f"{operator.value!r} on a list")
        _check_scalar_type(field, condition.value, get_args(declared)[0])
        return
    if (operator in _TEXT_ONLY or operator is Operator.CONTAINS) and declared is not str:
        raise InvalidValueError(field, condition.value, f"{operator.value!r} needs text")
    values = condition.value if isinstance(condition.value, tuple) else (condition.value,)
    for value in values:
        _check_scalar_type(field, value, declared)


def _check_scalar_type(field: str, value: object, declared: type) -> None:
    if not _fits(value, declared):
        reason = f"expected {declared.__name__}, got {type(value).__name__}"
        raise InvalidValueError(field, value, reason)


def _fits(value: object, declared: type) -> bool:
    if isinstance(value, bool) or declared is bool:
        return isinstance(value, bool) and declared is bool
    if declared is float:
        return isinstance(value, int | float)
    if declared is Decimal:
        return isinstance(value, int | Decimal)
    if declared is date:
        return isinstance(value, date) and not isinstance(value, datetime)
    return isinstance(value, declared)
