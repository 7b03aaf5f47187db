"""A pipeline behaviour that catches projections up after each successful request."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from eventfold.application.cqrs.mediator import Next, RequestContext
from eventfold.application.cqrs.results import OperationResult
from eventfold.application.readside.projections import ProjectionRunner
from eventfold.domain.errors import EventfoldError

__all__ = ["CatchUpBehavior"]

logger = logging.getLogger("eventfold.projections")


class CatchUpBehavior:
    """After a successful request, bring projections up to the head of the log.

    Add it *before* (outside) the :class:`~eventfold.TransactionBehavior`, so it runs once
    the request's transaction committed. A client then usually reads its own writes from
    an asynchronous projection. Usually, not always: on PostgreSQL the log is readable only
    up to the oldest transaction still open on the server, so while other writers are busy
    a catch-up can stop short of the request's own events (they are applied by the next
    catch-up or by a running :class:`~eventfold.ProjectionRunner`). When a reader must see
    its write, project inline instead (``DataSource(inline_projections=...)``).

    A failing catch-up is logged and leaves the request's result alone: the request
    already committed.
    """

    def __init__(self, runner: ProjectionRunner, names: Sequence[str] | None = None) -> None:
        self._runner = runner
        self._names = list(runner.projections if names is None else names)

    async def __call__(
        self,
        request: object,
        context: RequestContext,
        next: Next,  # noqa: A002 - the pipeline's word
    ) -> OperationResult[Any]:
        """Run the request, then catch the projections up if it succeeded."""
        result = await next(request, context)
        if result.is_success:
            for name in self._names:
                try:
                    await self._runner.catch_up(name)
                except EventfoldError:  # the request committed; report, do not fail it
                    logger.exception("catching up projection %s failed", name)
        return result
