"""``OperationResult``: what every command and query returns, shaped after RFC 9457."""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_DEFAULT_500_DETAIL = "An unexpected error occurred."


def _title(status: int) -> str:
    # RFC 9457: with the "about:blank" type, the title is the status code's reason phrase.
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid input field: a dotted path and what is wrong with it."""

    field: str
    message: str


@dataclass(frozen=True, slots=True)
class ProblemDetails:
    """An RFC 9457 problem: type URI, title, status, detail, and field errors as an extension."""

    status: int
    title: str
    detail: str | None = None
    type: str = "about:blank"
    instance: str | None = None
    errors: tuple[FieldError, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The problem as a JSON-ready dictionary (``application/problem+json``)."""
        body: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail is not None:
            body["detail"] = self.detail
        if self.instance is not None:
            body["instance"] = self.instance
        if self.errors:
            body["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return body


@dataclass(frozen=True, slots=True)
class OperationResult(Generic[T]):
    """The outcome of a request: an HTTP-style status, data on success, a problem on failure."""

    status: int
    data: T | None = None
    problem: ProblemDetails | None = field(default=None)

    @property
    def is_success(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status < 300

    @property
    def errors(self) -> tuple[FieldError, ...]:
        """Field errors of a failed request (empty on success)."""
        return self.problem.errors if self.problem is not None else ()

    @property
    def detail(self) -> str | None:
        """The problem's detail, if any."""
        return self.problem.detail if self.problem is not None else None

    def unwrap(self) -> T:
        """The data of a successful result; raises ``ValueError`` on a failed one."""
        if not self.is_success:
            msg = f"operation failed with {self.status}: {self.detail or _title(self.status)}"
            raise ValueError(msg)
        return self.data  # type: ignore[return-value]

    @staticmethod
    def ok(data: T | None = None) -> OperationResult[T]:
        """200: done, here is the data."""
        return OperationResult(200, data)

    @staticmethod
    def created(data: T | None = None) -> OperationResult[T]:
        """201: a new resource exists."""
        return OperationResult(201, data)

    @staticmethod
    def accepted(data: T | None = None) -> OperationResult[T]:
        """202: taken for processing later."""
        return OperationResult(202, data)

    @staticmethod
    def no_content() -> OperationResult[T]:
        """204: done, nothing to return."""
        return OperationResult(204)

    @staticmethod
    def failure(
        status: int,
        detail: str | None = None,
        *,
        errors: tuple[FieldError, ...] | list[FieldError] = (),
        type: str = "about:blank",  # noqa: A002 - RFC 9457's member name
    ) -> OperationResult[T]:
        """A failed result (status 400-599) with a problem body."""
        if not 400 <= status < 600:
            msg = f"a failure has a 4xx or 5xx status, got {status}"
            raise ValueError(msg)
        problem = ProblemDetails(status, _title(status), detail, type, None, tuple(errors))
        return OperationResult(status, None, problem)

    @staticmethod
    def bad_request(
        detail: str | None = None, *, errors: tuple[FieldError, ...] | list[FieldError] = ()
    ) -> OperationResult[T]:
        """400: the request is invalid; ``errors`` lists each bad field."""
        return OperationResult.failure(400, detail, errors=errors)

    @staticmethod
    def unauthorized(detail: str | None = None) -> OperationResult[T]:
        """401: the caller is not authenticated."""
        return OperationResult.failure(401, detail)

    @staticmethod
    def forbidden(detail: str | None = None) -> OperationResult[T]:
        """403: the caller may not do this."""
        return OperationResult.failure(403, detail)

    @staticmethod
    def not_found(detail: str | None = None) -> OperationResult[T]:
        """404: the target does not exist."""
        return OperationResult.failure(404, detail)

    @staticmethod
    def conflict(detail: str | None = None) -> OperationResult[T]:
        """409: the target's state does not allow this, or someone else changed it first."""
        return OperationResult.failure(409, detail)

    @staticmethod
    def internal_error(detail: str | None = _DEFAULT_500_DETAIL) -> OperationResult[T]:
        """500: something failed that the caller cannot fix; details stay in the logs."""
        return OperationResult.failure(500, detail)


class ResultFactory(Generic[T]):
    """Mixin giving handlers ``self.ok(...)``, ``self.not_found(...)`` and the rest."""

    def ok(self, data: T | None = None) -> OperationResult[T]:
        """200."""
        return OperationResult.ok(data)

    def created(self, data: T | None = None) -> OperationResult[T]:
        """201."""
        return OperationResult.created(data)

    def accepted(self, data: T | None = None) -> OperationResult[T]:
        """202."""
        return OperationResult.accepted(data)

    def no_content(self) -> OperationResult[T]:
        """204."""
        return OperationResult.no_content()

    def bad_request(
        self, detail: str | None = None, *, errors: tuple[FieldError, ...] | list[FieldError] = ()
    ) -> OperationResult[T]:
        """400."""
        return OperationResult.bad_request(detail, errors=errors)

    def unauthorized(self, detail: str | None = None) -> OperationResult[T]:
        """401."""
        return OperationResult.unauthorized(detail)

    def forbidden(self, detail: str | None = None) -> OperationResult[T]:
        """403."""
        return OperationResult.forbidden(detail)

    def not_found(self, detail: str | None = None) -> OperationResult[T]:
        """404."""
        return OperationResult.not_found(detail)

    def conflict(self, detail: str | None = None) -> OperationResult[T]:
        """409."""
        return OperationResult.conflict(detail)

    def internal_error(self, detail: str | None = _DEFAULT_500_DETAIL) -> OperationResult[T]:
        """500."""
        return OperationResult.internal_error(detail)
