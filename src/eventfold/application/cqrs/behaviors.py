"""The behaviours eventfold ships: validation, logging and error mapping."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from eventfold.application.cqrs.mediator import Next, RequestContext
from eventfold.application.cqrs.results import FieldError, OperationResult
from eventfold.errors import (
    ConcurrencyError,
    DomainError,
    EntityNotFoundError,
    InvalidStateError,
)

__all__ = ["ErrorMappingBehavior", "LoggingBehavior", "ValidationBehavior", "default_behaviors"]

Validator = Callable[[object], list[FieldError]]
"""Returns the field errors of a request, empty when it is valid."""

_MISSING = object()
# Nested dataclass instances are revalidated too (a plain dataclass never ran its
# constraints), and a field typed with a class pydantic does not know is taken as is.
_DATACLASS_CONFIG = ConfigDict(revalidate_instances="always", arbitrary_types_allowed=True)

_validators: dict[type, Validator | None] = {}


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
    def validate(request: object) -> list[FieldError]:
        # A field model_construct() left unset is omitted, so pydantic reports it as missing.
        values = {name: getattr(request, name, _MISSING) for name in names}
        data = {name: value for name, value in values.items() if value is not _MISSING}
        try:
            adapter.validate_python(data, by_name=True)
        except PydanticValidationError as exc:
            return field_errors(exc)
        return []

    return validate


def _instance_validator(cls: type) -> Validator:
    # A config reaches a stdlib dataclass only through an enclosing type, hence the tuple;
    # its error paths start with the tuple index, which is dropped.
    adapter: TypeAdapter[Any] = TypeAdapter(tuple[cls], config=_DATACLASS_CONFIG)  # type: ignore[valid-type]

    def validate(request: object) -> list[FieldError]:
        try:
            adapter.validate_python((request,))
        except PydanticValidationError as exc:
            return field_errors(exc, skip=1)
        return []

    return validate


def field_errors(exc: PydanticValidationError, *, skip: int = 0) -> list[FieldError]:
    """One :class:`FieldError` per pydantic error, with a dotted field path.

    ``skip`` drops that many leading path parts (the position in a wrapping tuple).
    """
    return [
        FieldError(".".join(str(part) for part in error["loc"][skip:]) or "<root>", error["msg"])
        for error in exc.errors()
    ]


class ValidationBehavior:
    """Validates a dataclass or pydantic request against its declared types and constraints.

    An invalid request is answered with ``bad_request`` listing every field; the handler
    is not called.
    """

    async def __call__(
        self,
        request: object,
        context: RequestContext,
        next: Next,  # noqa: A002
    ) -> OperationResult[Any]:
        """Validate, then continue."""
        validate = _validator_for(type(request))
        if validate is not None and (errors := validate(request)):
            detail = f"{type(request).__name__} is invalid"
            return OperationResult.bad_request(detail, errors=errors)
        return await next(request, context)


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
    """Turns exceptions into results: domain errors become 4xx, anything else a logged 500."""

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
        except DomainError as exc:
            return result_for_domain_error(exc)
        except ConcurrencyError as exc:
            return OperationResult.conflict(str(exc))
        except PydanticValidationError as exc:
            return OperationResult.bad_request("the request is invalid", errors=field_errors(exc))
        except Exception:
            self._logger.exception(
                "unexpected error handling %s",
                type(request).__name__,
                extra={"request": type(request).__name__, "correlation_id": context.correlation_id},
            )
            return OperationResult.internal_error()


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
