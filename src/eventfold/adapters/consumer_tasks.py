"""What the broker adapters' consumers share: a background task that never dies unheard."""

from __future__ import annotations

import asyncio
import contextlib
import logging

__all__ = ["end_consumer_task", "report_consumer_failure"]

_log = logging.getLogger("eventfold.brokers")


def report_consumer_failure(task: asyncio.Task[None]) -> None:
    """Log the error a consumer task ended with (a done callback); stop() still raises it."""
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        _log.error(
            "consumer task %s stopped: %s: %s",
            task.get_name(),
            type(error).__name__,
            error,
            exc_info=error,
        )


async def end_consumer_task(task: asyncio.Task[None] | None, *, handling: bool) -> None:
    """Wait for a consumer task to end: an idle one is cancelled, a delivery in hand finishes.

    Raises what the task died of, if it died of an error.
    """
    if task is None:
        return
    if not handling:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
