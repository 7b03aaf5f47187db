"""Read-your-writes: catch projections up to a request's own commit before it returns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eventfold.application.cqrs.mediator import Next, RequestContext
from eventfold.application.cqrs.results import OperationResult
from eventfold.application.readside.projections import ProjectionRunner
from eventfold.domain.errors import ConfigurationError, EventfoldError
from eventfold.ports.records import HorizonBlocker, LogPosition
from eventfold.ports.storage import Storage

__all__ = ["CatchUpBehavior", "CatchUpOutcome", "catch_up_to"]

logger = logging.getLogger("eventfold.projections")

_FIRST_POLL = 0.002
_LAST_POLL = 0.05
"""Seconds between two looks at the readable head while waiting: doubling, up to this."""


@dataclass(frozen=True, slots=True)
class CatchUpOutcome:
    """How a catch-up to a position ended, projection by projection.

    ``target`` is the position waited for (None when there was nothing to wait for: every
    projection just applied what was readable). Projections in ``caught_up`` applied every
    event up to it. ``timed_out`` ones did not, because the target did not become readable within
    the timeout: on PostgreSQL an older writer of the store was still open, and
    ``blocker`` names it. ``failed`` ones raised (parked, or the database failed); the
    error is logged.
    """

    target: LogPosition | None
    caught_up: tuple[str, ...] = ()
    timed_out: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    blocker: HorizonBlocker | None = None

    @property
    def complete(self) -> bool:
        """Whether every projection applied everything up to the target."""
        return not self.timed_out and not self.failed


async def committed_head(storage: Storage) -> LogPosition:
    """The last committed event's position: a new transaction sees every commit before it."""
    async with storage.transaction() as session:
        return (await session.log_horizon()).committed_head


async def catch_up_to(
    runner: ProjectionRunner,
    target: LogPosition | None,
    *,
    names: Sequence[str] | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - a bound on the wait, returned as an outcome
) -> CatchUpOutcome:
    """Wait until ``target`` is readable, then apply every event up to it to the projections.

    Returns when each projection has applied the log up to ``target`` or the ``timeout``
    (seconds) has passed: never raises for a projection that failed or a wait that timed
    out, it says so in the outcome. With no ``target``, applies what is readable now.
    """
    names = list(runner.projections if names is None else names)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    readable = None
    if target is not None:
        readable = await _wait_readable(runner.storage, target, deadline)
    caught_up: list[str] = []
    failed: list[str] = []
    for name in names:
        try:
            await runner.catch_up(name)
        except EventfoldError:
            logger.exception("catching up projection %s failed", name)
            failed.append(name)
            continue
        caught_up.append(name)
    if readable is None:
        return CatchUpOutcome(target, tuple(caught_up), (), tuple(failed))
    # Not readable in time: what was readable is applied, the rest waits for the runner.
    return CatchUpOutcome(target, (), tuple(caught_up), tuple(failed), readable)


async def _wait_readable(
    storage: Storage, target: LogPosition, deadline: float
) -> HorizonBlocker | None:
    """Wait until ``target`` is readable (None), or return what still holds it back."""
    loop = asyncio.get_running_loop()
    pause = _FIRST_POLL
    while True:
        async with storage.transaction() as session:
            if await session.log_head() >= target:
                return None
            if loop.time() >= deadline:
                horizon = await session.log_horizon()
                if horizon.readable_head >= target:
                    return None
                return horizon.blocker or _UNKNOWN_BLOCKER
        await asyncio.sleep(min(pause, max(deadline - loop.time(), 0.0)))
        pause = min(pause * 2, _LAST_POLL)


_UNTOLD: Any = object()
"""A unit of work that does not say where its commit is in the log."""

_UNKNOWN_BLOCKER = HorizonBlocker(None, None, None, None)
"""Held back by a writer that ended while it was being looked up."""


class CatchUpBehavior:
    """After a successful request, apply the log up to the request's commit to projections.

    Add it *before* (outside) the :class:`~eventfold.TransactionBehavior`, so it runs once
    the request's transaction committed. It waits until the request's own events are
    readable (the unit of work's ``readable_at``; the log's committed head when the unit
    of work does not tell), then catches the projections up: the client then reads its
    own writes from an asynchronous projection. A request that appended nothing waits for
    nothing. On PostgreSQL an older writer of the same store still open can hold the
    events back; the wait is bounded by ``timeout`` seconds, after which the request
    returns anyway and its events are applied by the next catch-up or a running
    :class:`~eventfold.ProjectionRunner`. The :class:`CatchUpOutcome` is kept on the
    request's context (:meth:`outcome`) and logged as a warning when incomplete.

    A failing catch-up is logged and leaves the request's result alone: the request
    already committed.
    """

    ITEM = "eventfold.catch_up"
    """The key of the outcome in ``RequestContext.items``."""

    def __init__(
        self,
        runner: ProjectionRunner,
        names: Sequence[str] | None = None,
        *,
        timeout: float = 5.0,
    ) -> None:
        if timeout < 0:
            msg = f"CatchUpBehavior timeout must be 0 seconds or more, got {timeout}"
            raise ConfigurationError(msg)
        self._runner = runner
        self._names = list(runner.projections if names is None else names)
        self._timeout = timeout

    @classmethod
    def outcome(cls, context: RequestContext) -> CatchUpOutcome | None:
        """How the catch-up after this request ended (None if none ran)."""
        outcome = context.items.get(cls.ITEM)
        return outcome if isinstance(outcome, CatchUpOutcome) else None

    async def __call__(
        self,
        request: object,
        context: RequestContext,
        next: Next,  # noqa: A002 - the pipeline's word
    ) -> OperationResult[Any]:
        """Run the request, then catch the projections up to its commit if it succeeded."""
        result = await next(request, context)
        if not result.is_success:
            return result
        try:
            target = getattr(context.unit_of_work, "readable_at", _UNTOLD)
            if target is _UNTOLD:
                target = await committed_head(self._runner.storage)
            outcome = await catch_up_to(
                self._runner, target, names=self._names, timeout=self._timeout
            )
        except EventfoldError:  # the request committed; report, do not fail it
            logger.exception("catching projections up after %s failed", type(request).__name__)
            return result
        context.items[self.ITEM] = outcome
        if outcome.timed_out:
            logger.warning(
                "projections %s not caught up to %s within %.1f s: held back by %s",
                ", ".join(outcome.timed_out),
                outcome.target,
                self._timeout,
                outcome.blocker,
            )
        return result
