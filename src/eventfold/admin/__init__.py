"""The admin page: streams, projections, the outbox, the inbox and sagas, in a browser.

``pip install 'eventfold[admin]'``. Mount the router in the application::

    app.include_router(create_admin_router(storage, events=events), prefix="/admin")

or run ``eventfold admin --database-url ...``. Pages are rendered on the server (Jinja2
templates, no JavaScript build); every action is a POST carrying a CSRF token. The page
answers on localhost only unless it is given a token or the application's own auth
dependencies (see :func:`create_admin_router`).
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI

from eventfold.admin.router import create_admin_router
from eventfold.application.messaging.sagas import SagaOrchestrator
from eventfold.application.readside.projections import Projection
from eventfold.ports import Storage
from eventfold.serialization import EventRegistry

__all__ = ["create_admin_app", "create_admin_router"]


def create_admin_app(
    storage: Storage,
    *,
    events: EventRegistry | None = None,
    projections: Sequence[Projection] = (),
    sagas: SagaOrchestrator | None = None,
    token: str | None = None,
) -> FastAPI:
    """A FastAPI application serving only the admin page, at ``/``."""
    app = FastAPI(title="eventfold admin", openapi_url=None, docs_url=None, redoc_url=None)
    router = create_admin_router(
        storage, events=events, projections=projections, sagas=sagas, token=token
    )
    app.include_router(router)
    return app
