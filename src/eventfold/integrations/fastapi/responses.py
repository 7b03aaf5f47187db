"""``OperationResult`` as HTTP: JSON on success, ``application/problem+json`` on failure.

:func:`add_problem_handlers` makes every failure a problem: invalid input a 400 (not
FastAPI's 422), an eventfold error raised in a route the status it stands for, an
unreachable store a 503 with ``Retry-After``, and any other error a logged 500 whose
body reveals nothing of it. It also lets :func:`to_response` check a result's data
against the ``response_model`` of the route answering, as FastAPI does for the values a
route returns.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar, cast
from urllib.parse import quote

import pydantic_core
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

from eventfold.application.cqrs.behaviors import result_for_error
from eventfold.application.cqrs.results import FieldError, OperationResult, ProblemDetails

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "RETRY_AFTER_SECONDS",
    "ProblemMiddleware",
    "add_problem_handlers",
    "problem_response",
    "to_response",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 5
"""What a 503 answer's ``Retry-After`` says, in seconds."""

T = TypeVar("T")
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"
_logger = logging.getLogger("eventfold.http")
# The ASGI scope of the request being answered: the router records its route there.
_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar(
    "eventfold_scope", default=None
)
_adapters: dict[Any, TypeAdapter[Any]] = {}


def to_response(
    result: OperationResult[T], *, location: str | Callable[[T], str] | None = None
) -> Response:
    """The HTTP response for ``result``: its data as JSON, nothing for 204, else a problem.

    With :func:`add_problem_handlers` set up, the data is checked against the route's
    ``response_model`` and written as that model (fields it does not declare are left
    out); data that does not fit is a server error, answered with a 500 problem. A 201
    carries ``Location`` when ``location`` is given: the URL, or a function of the data
    (quote each id put in a path with ``urllib.parse.quote(id, safe="")``; characters a
    header cannot hold are percent-encoded in any case).
    """
    if result.problem is not None:
        return problem_response(result.problem)
    if result.status == 204:
        return Response(status_code=204)
    try:
        body = _body(result.data)
    except PydanticValidationError:
        _logger.exception(
            "the data of a %s result does not fit the route's response model", result.status
        )
        return problem_response(_internal_error())
    headers = None
    if result.status == 201 and location is not None:
        url = location if isinstance(location, str) else location(cast(T, result.data))
        # A header is Latin-1; an id may hold any character, so whatever a URL cannot
        # hold as it is gets percent-encoded (reserved characters and escapes stay).
        headers = {"Location": quote(url, safe=_URL_SAFE)}
    return Response(body, status_code=result.status, headers=headers, media_type="application/json")


def _body(data: object) -> bytes:
    model = _response_model()
    if model is None:
        # pydantic writes dataclasses, models, Decimal (as a string), datetimes, UUIDs, enums.
        return pydantic_core.to_json(data)
    adapter = _adapters.get(model)
    if adapter is None:
        adapter = _adapters[model] = TypeAdapter(model)
    # Through JSON, so that a dataclass instance holding the wrong types is caught too.
    validated = adapter.validate_json(pydantic_core.to_json(data))
    return adapter.dump_json(validated)


def _response_model() -> Any:
    scope = _scope.get()
    route = None if scope is None else scope.get("route")
    return getattr(route, "response_model", None)


def problem_response(problem: ProblemDetails, headers: dict[str, str] | None = None) -> Response:
    """An RFC 9457 ``application/problem+json`` response (503 says when to retry)."""
    if problem.status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS), **(headers or {})}
    body = json.dumps(problem.to_dict())
    return Response(body, problem.status, headers, media_type=PROBLEM_MEDIA_TYPE)


def add_problem_handlers(app: FastAPI) -> None:
    """Answer invalid requests, HTTP errors and anything raised with problem details."""
    # Starlette types a handler for any exception; each of these gets only its own kind.
    app.add_exception_handler(RequestValidationError, cast(ExceptionHandler, _invalid_request))
    app.add_exception_handler(HTTPException, cast(ExceptionHandler, _http_error))
    app.add_middleware(ProblemMiddleware)


class ProblemMiddleware:
    """Answers an error a route raised with a problem, and records the request's route.

    An eventfold error becomes the status it stands for (``StoreUnavailableError`` a 503
    with ``Retry-After``); any other error is logged and becomes a 500 problem whose body
    says nothing of it. An error raised once the response has started is raised on.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app for one request, answering what it raises."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        token = _scope.set(scope)
        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            await _answer(exc, scope)(scope, receive, send)
        finally:
            _scope.reset(token)


def _answer(exc: Exception, scope: Scope) -> Response:
    result = result_for_error(exc)
    if isinstance(exc, PydanticValidationError):
        # Not FastAPI's check of the request (that is a RequestValidationError): a model
        # the route's own code built; nothing says the client sent it.
        result = None
    if result is None or result.problem is None:
        method, path = scope.get("method"), scope.get("path")
        _logger.exception(
            "unexpected error answering %s %s", method, path, extra={"method": method, "path": path}
        )
        return problem_response(_internal_error())
    return problem_response(result.problem)


def _internal_error() -> ProblemDetails:
    problem = OperationResult[None].internal_error().problem
    assert problem is not None
    return problem


async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
    # The same 400 with field errors the ValidationBehavior gives an invalid command.
    errors = tuple(FieldError(_field_path(e["loc"]), e["msg"]) for e in exc.errors())
    return problem_response(_problem(400, "the request is invalid", errors))


def _field_path(loc: tuple[int | str, ...]) -> str:
    # "body" says where FastAPI found the field; a command's fields are the body's fields.
    parts = loc[1:] if loc and loc[0] == "body" else loc
    return ".".join(str(part) for part in parts) or "<root>"


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return problem_response(_problem(exc.status_code, exc.detail), dict(exc.headers or {}))


def _problem(
    status: int, detail: str | None, errors: tuple[FieldError, ...] = ()
) -> ProblemDetails:
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    return ProblemDetails(status, title, detail, errors=errors)
