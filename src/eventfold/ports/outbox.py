"""The outbox relay's port: claim due rows in order, record what became of them.

A relay claims a batch of due rows (unpublished, not dead, ``next_attempt_at`` reached),
publishes them, and reports each row as published or failed before the claim ends.
Within one aggregate the rows are handed out in id order: a claim never contains a row
while an earlier row of its aggregate is unpublished and not dead, unless that earlier
row is in the same claim. Competing relays (where a backend allows them) never hold
the same row at once.

Dead rows (failed too often, or refused by the broker) wait for a person: list them,
inspect one, requeue them.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from eventfold.ports.records import OutboxEntry

__all__ = ["OutboxClaim", "OutboxRelayStore", "OutboxStats"]


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """How the outbox stands: rows waiting, the oldest one's creation time, dead rows."""

    backlog: int
    oldest_unpublished_at: datetime | None
    dead: int


class OutboxClaim(Protocol):
    """A batch of rows held by one relay until the claim's context ends."""

    @property
    def entries(self) -> Sequence[OutboxEntry]:
        """The claimed rows, in id order."""
        ...

    async def mark_published(self, entry_ids: Sequence[int], *, at: datetime) -> None:
        """Record these rows as published at ``at``."""
        ...

    async def record_failure(
        self, entry_id: int, *, error: str, next_attempt_at: datetime, dead: bool, refused: bool
    ) -> None:
        """Count one more attempt, with its error; ``refused`` counts a refusal by the broker
        (not an outage); ``dead`` takes the row out of the relay."""
        ...


class OutboxRelayStore(Protocol):
    """What the relay and the ``eventfold outbox`` commands need from the outbox table."""

    def claim(self, *, limit: int, now: datetime) -> AbstractAsyncContextManager[OutboxClaim]:
        """Claim up to ``limit`` rows due at ``now``; what the claim recorded is kept on exit."""
        ...

    async def outbox_stats(self) -> OutboxStats:
        """Backlog size, the oldest unpublished row's creation time, dead row count."""
        ...

    async def read_dead(self, *, limit: int = 100, after_id: int = 0) -> list[OutboxEntry]:
        """Dead rows with an id above ``after_id``, in id order."""
        ...

    async def load_entry(self, entry_id: int) -> OutboxEntry | None:
        """One row, whatever its state, or None."""
        ...

    async def requeue(self, entry_ids: Sequence[int] | None) -> int:
        """Make dead rows (these, or all when None) due again with no attempts; how many."""
        ...

    async def purge_published(self, older_than: datetime) -> int:
        """Delete rows published before ``older_than``; return how many."""
        ...
