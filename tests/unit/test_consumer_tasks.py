"""A broker consumer's background task never dies unheard."""

from __future__ import annotations

import asyncio
import logging

import pytest

from eventfold.adapters.consumer_tasks import report_consumer_failure


async def test_a_consumer_task_that_fails_is_logged_with_its_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def consume() -> None:
        raise RuntimeError("dead-letter exchange is missing")

    task = asyncio.create_task(consume(), name="eventfold-test-group")
    task.add_done_callback(report_consumer_failure)
    with caplog.at_level(logging.ERROR, logger="eventfold.brokers"):
        with pytest.raises(RuntimeError):
            await task
        await asyncio.sleep(0)  # done callbacks run on the next loop iteration

    assert "eventfold-test-group" in caplog.text
    assert "dead-letter exchange is missing" in caplog.text


async def test_a_cancelled_consumer_task_is_not_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = asyncio.create_task(asyncio.Event().wait())
    task.add_done_callback(report_consumer_failure)
    await asyncio.sleep(0)
    task.cancel()
    with caplog.at_level(logging.ERROR, logger="eventfold.brokers"):
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)

    assert caplog.text == ""
