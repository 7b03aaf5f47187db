"""The outbox relay's store on the in-memory storage: one relay per store.

A claim reads committed rows and keeps what it records until it ends; like SQLite,
it holds no transaction while the relay publishes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from eventfold.adapters.memory.storage import MemoryStorage, _Committed
from eventfold.ports.outbox import OutboxStats
from eventfold.ports.records import OutboxEntry

__all__ = ["MemoryOutboxClaim", "MemoryOutboxStore", "create_memory_outbox_store"]


def _pending(entry: OutboxEntry) -> bool:
    return entry.published_at is None and not entry.dead


def _due(entry: OutboxEntry, now: datetime) -> bool:
    return entry.next_attempt_at is None or entry.next_attempt_at <= now


def _select(outbox: list[OutboxEntry], held: set[int], limit: int, now: datetime) -> list[int]:
    """Indexes of due rows, each aggregate's in order with no pending row skipped before."""
    chosen: list[int] = []
    blocked: set[str] = set()
    for index, entry in enumerate(outbox):
        if len(chosen) == limit:
            break
        aggregate = entry.message.aggregate_id
        if not _pending(entry) or aggregate in blocked:
            continue
        if entry.id in held or not _due(entry, now):
            blocked.add(aggregate)  # later rows of this aggregate wait for this one
            continue
        chosen.append(index)
    return chosen


class MemoryOutboxClaim:
    """A claimed batch; its changes reach the storage when the claim ends cleanly."""

    def __init__(self, entries: list[OutboxEntry]) -> None:
        self._entries = entries
        self.published: dict[int, datetime] = {}
        self.failures: dict[int, tuple[str, datetime, bool, bool]] = {}

    @property
    def entries(self) -> Sequence[OutboxEntry]:
        """The claimed rows, in id order."""
        return self._entries

    async def mark_published(self, entry_ids: Sequence[int], *, at: datetime) -> None:
        """Record these rows as published at ``at``."""
        self.published.update(dict.fromkeys(entry_ids, at))

    async def record_failure(
        self, entry_id: int, *, error: str, next_attempt_at: datetime, dead: bool, refused: bool
    ) -> None:
        """Count one more attempt, with its error; ``dead`` takes the row out of the relay."""
        self.failures[entry_id] = (error, next_attempt_at, dead, refused)

    def apply_to(self, entry: OutboxEntry) -> OutboxEntry:
        """``entry`` with what this claim recorded about it."""
        at = self.published.get(entry.id)
        if at is not None:
            return dataclasses.replace(entry, published_at=at)
        failure = self.failures.get(entry.id)
        if failure is None:
            return entry
        error, next_attempt_at, dead, refused = failure
        return dataclasses.replace(
            entry,
            attempts=entry.attempts + 1,
            refusals=entry.refusals + refused,
            last_error=error,
            next_attempt_at=next_attempt_at,
            dead=dead,
        )


class MemoryOutboxStore:
    """:class:`~eventfold.ports.OutboxRelayStore` over a :class:`MemoryStorage`."""

    def __init__(self, storage: MemoryStorage) -> None:
        self._committed: _Committed = storage._committed
        self._held: set[int] = set()

    @asynccontextmanager
    async def claim(self, *, limit: int, now: datetime) -> AsyncIterator[MemoryOutboxClaim]:
        """Claim up to ``limit`` due rows; recorded changes apply when the block ends cleanly."""
        outbox = self._committed.outbox
        entries = [outbox[i] for i in _select(outbox, self._held, limit, now)]
        claim = MemoryOutboxClaim(entries)
        ids = {entry.id for entry in entries}
        self._held |= ids
        try:
            yield claim
            self._apply(claim)
        finally:
            self._held -= ids

    def _apply(self, claim: MemoryOutboxClaim) -> None:
        outbox = self._committed.outbox
        outbox[:] = [claim.apply_to(entry) for entry in outbox]

    async def outbox_stats(self) -> OutboxStats:
        """Backlog size, the oldest unpublished row's creation time, dead row count."""
        outbox = self._committed.outbox
        pending = [entry for entry in outbox if _pending(entry)]
        oldest = min((entry.created_at for entry in pending), default=None)
        return OutboxStats(len(pending), oldest, sum(1 for entry in outbox if entry.dead))

    async def read_dead(self, *, limit: int = 100, after_id: int = 0) -> list[OutboxEntry]:
        """Dead rows with an id above ``after_id``, in id order."""
        dead = [entry for entry in self._committed.outbox if entry.dead and entry.id > after_id]
        return dead[:limit]

    async def load_entry(self, entry_id: int) -> OutboxEntry | None:
        """One row, whatever its state, or None."""
        return next((e for e in self._committed.outbox if e.id == entry_id), None)

    async def requeue(self, entry_ids: Sequence[int] | None) -> int:
        """Make dead rows (these, or all when None) due again with no attempts; how many."""
        wanted = None if entry_ids is None else set(entry_ids)
        outbox = self._committed.outbox
        count = 0
        for index, entry in enumerate(outbox):
            if entry.dead and (wanted is None or entry.id in wanted):
                outbox[index] = dataclasses.replace(
                    entry, dead=False, attempts=0, refusals=0, next_attempt_at=None
                )
                count += 1
        return count

    async def purge_published(self, older_than: datetime) -> int:
        """Delete rows published before ``older_than``; return how many."""
        outbox = self._committed.outbox
        kept = [e for e in outbox if e.published_at is None or e.published_at >= older_than]
        purged = len(outbox) - len(kept)
        outbox[:] = kept
        return purged


def create_memory_outbox_store(storage: MemoryStorage) -> MemoryOutboxStore:
    """The relay's store for ``storage``; run one relay per store."""
    return MemoryOutboxStore(storage)
