"""FastAPI mapping: results as responses, problems as RFC 9457, the mediator as a dependency.

::

    app = FastAPI()
    setup(app, mediator)

    @app.post("/orders", status_code=201, responses=problem_responses(404, 409))
    async def place_order(body: PlaceOrder, mediator: MediatorDep) -> Response:
        return to_response(await mediator.send(body))
"""

from fastapi import FastAPI

from eventfold.application.cqrs.mediator import Mediator
from eventfold.integrations.fastapi.dependencies import MediatorDep, get_mediator, use_mediator
from eventfold.integrations.fastapi.openapi import (
    PROBLEM_SCHEMA,
    document_problems,
    problem_responses,
)
from eventfold.integrations.fastapi.responses import (
    PROBLEM_MEDIA_TYPE,
    RETRY_AFTER_SECONDS,
    ProblemMiddleware,
    add_problem_handlers,
    problem_response,
    to_response,
)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_SCHEMA",
    "RETRY_AFTER_SECONDS",
    "MediatorDep",
    "ProblemMiddleware",
    "add_problem_handlers",
    "document_problems",
    "get_mediator",
    "problem_response",
    "problem_responses",
    "setup",
    "to_response",
    "use_mediator",
]


def setup(app: FastAPI, mediator: Mediator) -> None:
    """Make ``mediator`` the app's dependency and answer errors as problem details."""
    use_mediator(app, mediator)
    add_problem_handlers(app)
    document_problems(app)
