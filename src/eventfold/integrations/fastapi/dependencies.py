"""The mediator as a FastAPI dependency, kept on the application's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request

from eventfold.application.cqrs.mediator import Mediator
from eventfold.errors import ConfigurationError

__all__ = ["MediatorDep", "get_mediator", "use_mediator"]

_STATE_KEY = "eventfold_mediator"


def use_mediator(app: FastAPI, mediator: Mediator) -> None:
    """Make ``mediator`` the one :func:`get_mediator` hands to every route of ``app``."""
    setattr(app.state, _STATE_KEY, mediator)


def get_mediator(request: Request) -> Mediator:
    """The app's mediator (a FastAPI dependency); each ``send`` runs its own pipeline.

    The unit of work of a request is opened by the mediator's transaction behaviour, so
    a route needs nothing but the mediator.
    """
    mediator = getattr(request.app.state, _STATE_KEY, None)
    if not isinstance(mediator, Mediator):
        msg = "no mediator is set up for this app: call use_mediator(app, mediator) at start-up"
        raise ConfigurationError(msg)
    return mediator


MediatorDep = Annotated[Mediator, Depends(get_mediator)]
"""``mediator: MediatorDep`` in a route's signature injects the app's mediator."""
