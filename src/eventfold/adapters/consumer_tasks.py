"""What the broker adapters' consumers share: a background task that never dies unheard."""

from __future__ import annotations

import asyncio
import logging

__all__ = ["report_consumer_failure"]

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
