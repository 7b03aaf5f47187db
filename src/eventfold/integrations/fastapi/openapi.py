"""OpenAPI for problem responses: declare them per route, and replace FastAPI's 422."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from eventfold.integrations.fastapi.responses import PROBLEM_MEDIA_TYPE

__all__ = ["PROBLEM_SCHEMA", "document_problems", "problem_responses"]

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "ProblemDetails",
    "description": "An RFC 9457 problem; `errors` lists each invalid field.",
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "format": "uri-reference", "default": "about:blank"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "format": "uri-reference"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

_DEFAULT_STATUSES = (400, 404, 409, 500)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: a problem body for each status (400, 404, 409, 500 if none)."""
    return {status: _problem_response(status) for status in statuses or _DEFAULT_STATUSES}


def _problem_response(status: int) -> dict[str, Any]:
    return {
        "description": HTTPStatus(status).phrase,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
    }


def document_problems(app: FastAPI) -> None:
    """Document invalid input as the 400 problem it is answered with, not FastAPI's 422.

    Every operation also documents the 500 and 503 problems any route may answer.
    """
    app.openapi = _openapi_with_problems(app)  # type: ignore[method-assign]


def _openapi_with_problems(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    responses = operation.setdefault("responses", {})
                    _replace_422(responses)
                    # Any route may fail unexpectedly or find its store unreachable.
                    for status in (500, 503):
                        responses.setdefault(str(status), _problem_response(status))
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _replace_422(responses: dict[str, Any]) -> None:
    if responses.pop("422", None) is not None:
        responses.setdefault("400", _problem_response(400))
