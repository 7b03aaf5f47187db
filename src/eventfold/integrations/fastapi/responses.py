"""``OperationResult`` as HTTP: JSON on success, ``application/problem+json`` on failure."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, cast

import pydantic_core
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ExceptionHandler

from eventfold.application.cqrs.results import FieldError, OperationResult, ProblemDetails

__all__ = ["PROBLEM_MEDIA_TYPE", "add_problem_handlers", "problem_response", "to_response"]

PROBLEM_MEDIA_TYPE = "application/problem+json"


def to_response(result: OperationResult[Any]) -> Response:
    """The HTTP response for ``result``: its data as JSON, nothing for 204, else a problem."""
    if result.problem is not None:
        return problem_response(result.problem)
    if result.status == 204:
        return Response(status_code=204)
    # pydantic writes dataclasses, models, Decimal (as a string), datetimes, UUIDs, enums.
    body = pydantic_core.to_json(result.data)
    return Response(body, status_code=result.status, media_type="application/json")


def problem_response(problem: ProblemDetails, headers: dict[str, str] | None = None) -> Response:
    """An RFC 9457 ``application/problem+json`` response."""
    body = json.dumps(problem.to_dict())
    return Response(body, problem.status, headers, media_type=PROBLEM_MEDIA_TYPE)


def add_problem_handlers(app: FastAPI) -> None:
    """Answer invalid requests and HTTP errors with problem details, like failed results."""
    # Starlette types a handler for any exception; each of these gets only its own kind.
    app.add_exception_handler(RequestValidationError, cast(ExceptionHandler, _invalid_request))
    app.add_exception_handler(HTTPException, cast(ExceptionHandler, _http_error))


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
