"""Partitions of a projection by stream, and the categories of streams it follows.

A heavy projection can be split into ``count`` partitions: each stream belongs to exactly
one (a stable hash of its id), each partition has its own checkpoint, so several workers
apply one projection side by side while every stream's events stay in order.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eventfold.domain.errors import ConfigurationError
from eventfold.ports.records import StoredEvent

__all__ = ["Partition", "checkpoint_name", "stream_filter"]


@dataclass(frozen=True, slots=True)
class Partition:
    """Partition ``index`` of ``count``: the streams whose id hashes to ``index``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            msg = f"partition {self.index} of {self.count} does not exist"
            raise ConfigurationError(msg)

    def holds(self, stream_id: str) -> bool:
        """Whether the stream's events belong to this partition."""
        # crc32, not hash(): the same stream must land in the same partition in every
        # process, whatever its hash seed.
        return zlib.crc32(stream_id.encode()) % self.count == self.index


def checkpoint_name(projection: str, partition: Partition | None) -> str:
    """The checkpoint (and health) name of a projection's partition."""
    if partition is None or partition.count == 1:
        return projection
    return f"{projection}#{partition.index}/{partition.count}"


def stream_filter(
    categories: Sequence[str], partition: Partition | None
) -> Callable[[StoredEvent], bool] | None:
    """A test of the events a projection applies (None when it applies every one)."""
    prefixes = tuple(f"{category}-" for category in categories)
    split = partition is not None and partition.count > 1
    if not prefixes and not split:
        return None

    def in_scope(record: StoredEvent) -> bool:
        stream_id = record.stream_id
        if prefixes and not stream_id.startswith(prefixes):
            return False
        return not split or partition.holds(stream_id)  # type: ignore[union-attr]

    return in_scope
