"""Operator actions on a broker group's dead letters: list, requeue, purge.

The functions the command line and an admin page call; each action is logged with the
group and the count, so what an operator did shows up next to what the consumers did.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from uuid import UUID

from eventfold.ports.broker import DeadLetter, DeadLetterKeeper

__all__ = ["list_dead_letters", "purge_dead_letters", "requeue_dead_letters"]

_log = logging.getLogger("eventfold.dead_letters")


async def list_dead_letters(
    broker: DeadLetterKeeper, group: str, *, limit: int = 100
) -> list[DeadLetter]:
    """Up to ``limit`` dead letters of ``group``, oldest first."""
    return await broker.read_dead_letters(group, limit=limit)


async def requeue_dead_letters(
    broker: DeadLetterKeeper, group: str, *, event_ids: Collection[UUID] | None = None
) -> int:
    """Give dead letters (those of ``event_ids``, or all) back to ``group``; how many."""
    count = await broker.requeue_dead_letters(group, event_ids=event_ids)
    _log.info("requeued %d dead letter(s) of group %s", count, group)
    return count


async def purge_dead_letters(
    broker: DeadLetterKeeper, group: str, *, event_ids: Collection[UUID] | None = None
) -> int:
    """Delete dead letters (those of ``event_ids``, or all) of ``group``; how many."""
    count = await broker.purge_dead_letters(group, event_ids=event_ids)
    _log.info("purged %d dead letter(s) of group %s", count, group)
    return count
