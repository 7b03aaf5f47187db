"""The behaviours eventfold ships: validation, logging and error mapping."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from eventfold.application.cqrs.mediator import Next, RequestContext
from eventfold.application.cqrs.results import FieldError, OperationResult
from eventfold.domain.storable import check_value
from eventfold.errors import (
    ConcurrencyError,
    DomainError,
    EntityNotFoundError,
    InvalidStateError,
    InvalidValueError,
    QueryError,
    StoreUnavailableError,
    UnknownFieldError,
)

__all__ = ["ErrorMappingBehavior", "LoggingBehavior", "ValidationBehavior", "default_behaviors"]

Validator = Callable[[object], "Validated"]
"""Validates a request: the converted request, or the field errors that make it invalid."""

_MISSING = object()
# Nested dataclass instances are revalidated too (a plain dataclass never ran its
# constraints), and a field typed with a class pydantic does not know is taken as is.
_DATACLASS_CONFIG = ConfigDict(revalidate_instances="always", arbitrary_types_allowed=True)

_validators: dict[type, Validator | None] = {}


@dataclasses.dataclass(frozen=True, slots=True)
class Validated:
    """What validating a request gives: the request with converted values, or its errors."""

    request: object
    errors: list[FieldError]


def _validator_for(cls: type) -> Validator | None:
    if cls not in _validators:
        _validators[cls] = _build_validator(cls)
    return _validators[cls]


def _build_validator(cls: type) -> Validator | None:
    # Revalidate: a request built with model_construct() or a plain dataclass never ran its
    # declared constraints.
    if issubclass(cls, BaseModel):
        return _fields_validator(TypeAdapter(cls), list(cls.model_fields))
    if not dataclasses.is_dataclass(cls):
        return None
    if hasattr(cls, "__pydantic_config__"):  # a pydantic dataclass keeps its own config
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        return _fields_validator(TypeAdapter(cls), names)
    return _instance_validator(cls)


def _fields_validator(adapter: TypeAdapter[Any], names: list[str]) -> Validator:
    def validate(request: object) -> Validated:
        # A field model_construct() left unset is omitted, so pydantic reports it as missing.
        values = {name: getattr(request, name, _MISSING) for name in names}
        data = {name: value for name, value in values.items() if value is not _MISSING}
        try:
            return Validated(adapter.validate_python(data, by_name=True), [])
        except PydanticValidationError as exc:
            return Validated(request, field_errors(exc))

    return validate


def _instance_validator(cls: type) -> Validator:
    # A config reaches a stdlib dataclass only through an enclosing type, hence the tuple;
    # its error paths start with the tuple index, which is dropped.
    adapter: TypeAdapter[Any] = TypeAdapter(tuple[cls], config=_DATACLASS_CONFIG)  # type: ignore[valid-type]

    def validate(request: object) -> Validated:
        try:
            (converted,) = adapter.validate_python((request,))
        except PydanticValidationError as exc:
            return Validated(request, field_errors(exc, skip=1))
        return Validated(converted, [])

    return validate


def _unstorable_fields(request: object) -> list[FieldError]:
    """A field error for each text in ``request`` that no store could hold."""
    try:
        # Fast path: JSON in C; a NUL shows as an escape, a lone surrogate fails to encode.
        if b"\\u0000" not in pydantic_core.to_json(request):
            return []
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError):
        pass  # a lone surrogate, or a type JSON does not know: look field by field
    return list(_unstorable_text(request))


def _unstorable_text(value: object, path: str = "") -> Iterator[FieldError]:
    """A field error for each text in ``value`` that no store could hold (a NUL, ...)."""
    if isinstance(value, str):
        try:
            check_value(path or "<root>", value)
        except InvalidValueError as exc:
            yield FieldError(path or "<root>", exc.reason)
        return
    for key, item in _children(value):
        yield from _unstorable_text(item, f"{path}.{key}" if path else str(key))


def _children(value: object) -> Iterable[tuple[object, object]]:
    if isinstance(value, BaseModel):
        return ((name, getattr(value, name)) for name in type(value).model_fields)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, Mapping):
        return value.items()
    if isinstance(value, list | tuple | set | frozenset):
        return enumerate(value)
    return ()


def field_errors(exc: PydanticValidationError, *, skip: int = 0) -> list[FieldError]:
    """One :class:`FieldError` per pydantic error, with a dotted field path.

    ``skip`` drops that many leading path parts (the position in a wrapping tuple).
    """
    return [
        FieldError(".".join(str(part) for part in error["loc"][skip:]) or "<root>", error["msg"])
        for error in exc.errors()
    ]


class ValidationBehavior:
    """Validates a dataclass or pydantic request and hands the handler the converted request.

    Validation is pydantic's lax mode, so the handler receives the *validated* instance,
    never the values as sent: ``"4.50"`` for a ``Decimal`` field arrives as
    ``Decimal("4.50")``, ``"2"`` for an ``int`` as ``2``, a dict for a nested dataclass as
    that dataclass. A value that cannot be converted makes the request invalid, and so
    does text no store could hold (a NUL character, a lone surrogate: see
    :mod:`eventfold.domain.storable`): it is answered with ``bad_request`` listing every
    field by its dotted path, and the handler is not called.
    """

    async def __call__(
        self,
        request: object,
        context: RequestContext,
        next: Next,  # noqa: A002
    ) -> OperationResult[Any]:
        """Validate, then continue."""
        validate = _validator_for(type(request))
        if validate is None:
            return await next(request, context)
        validated = validate(request)
        if not validated.errors:
            validated = Validated(validated.request, _unstorable_fields(validated.request))
        if validated.errors:
            detail = f"{type(request).__name__} is invalid"
            return OperationResult.bad_request(detail, errors=validated.errors)
        return await next(validated.request, context)


class LoggingBehavior:
    """Logs every request with its outcome and duration, as structured ``extra`` fields."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("eventfold.requests")

    async def __call__(
        self,
        request: object,
        context: RequestContext,
        next: Next,  # noqa: A002
    ) -> OperationResult[Any]:
        """Time the rest of the pipeline and log the outcome."""
        if not self._logger.isEnabledFor(logging.INFO):
            return await next(request, context)
        started = time.perf_counter()
        outcome = "error"
        status = 500
        try:
            result = await next(request, context)
            status = result.status
            outcome = "success" if result.is_success else "failure"
            return result
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            self._logger.info(
                "%s -> %s in %.2f ms",
                type(request).__name__,
                status,
                duration_ms,
                extra={
                    "request": type(request).__name__,
                    "status": status,
                    "outcome": outcome,
                    "duration_ms": round(duration_ms, 3),
                    "correlation_id": context.correlation_id,
                },
            )


class ErrorMappingBehavior:
    """Turns exceptions into results: a caller's mistakes become 4xx, the rest 503 or 500.

    Domain errors map as :func:`result_for_domain_error` says; a :class:`QueryError` (a
    bad filter value, a cursor of another query) is a 400 naming the field; a
    :class:`ConcurrencyError` a 409 that says to retry, without stream ids or versions;
    a :class:`StoreUnavailableError` a 503 (the client may retry); anything else a
    logged 500 whose detail reveals nothing of the error.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("eventfold.errors")

    async def __call__(
        self,
        request: object,
        context: RequestContext,
        next: Next,  # noqa: A002
    ) -> OperationResult[Any]:
        """Continue, mapping what it raises."""
        try:
            return await next(request, context)
        except Exception as exc:  # every error becomes a result; an unexpected one is logged
            result = result_for_error(exc)
            extra = {"request": type(request).__name__, "correlation_id": context.correlation_id}
            if result is None:
                self._logger.exception(
                    "unexpected error handling %s", type(request).__name__, extra=extra
                )
                return OperationResult.internal_error()
            if result.status >= 500:
                self._logger.warning(
                    "%s handling %s: %s",
                    type(exc).__name__,
                    type(request).__name__,
                    exc,
                    extra=extra,
                )
            return result


def result_for_error(exc: Exception) -> OperationResult[Any] | None:
    """The result an eventfold or validation error stands for; ``None`` for any other error."""
    if isinstance(exc, DomainError):
        return result_for_domain_error(exc)
    if isinstance(exc, ConcurrencyError):
        return OperationResult.conflict(_CONFLICT_DETAIL)
    if isinstance(exc, QueryError):
        return result_for_query_error(exc)
    if isinstance(exc, PydanticValidationError):
        return OperationResult.bad_request("the request is invalid", errors=field_errors(exc))
    if isinstance(exc, StoreUnavailableError):
        return OperationResult.failure(503, _UNAVAILABLE_DETAIL)
    return None


_CONFLICT_DETAIL = "another request changed the same data first; read it again and retry"
_UNAVAILABLE_DETAIL = "the service cannot reach its store right now; retry later"


def result_for_query_error(exc: QueryError) -> OperationResult[Any]:
    """The 400 result a query error stands for, naming the field when there is one."""
    field = exc.field if isinstance(exc, InvalidValueError | UnknownFieldError) else None
    errors = [FieldError(field, str(exc))] if field else []
    return OperationResult.bad_request(str(exc), errors=errors)


def result_for_domain_error(exc: DomainError) -> OperationResult[Any]:
    """The 4xx result a domain error stands for."""
    if isinstance(exc, EntityNotFoundError):
        return OperationResult.not_found(exc.message)
    if isinstance(exc, InvalidStateError):
        return OperationResult.conflict(exc.message)
    errors = [FieldError(exc.field, exc.message)] if exc.field else []
    return OperationResult.bad_request(exc.message, errors=errors)


def default_behaviors() -> list[Any]:
    """Logging outermost, then error mapping, then validation."""
    return [LoggingBehavior(), ErrorMappingBehavior(), ValidationBehavior()]
