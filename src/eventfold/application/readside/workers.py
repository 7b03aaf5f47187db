"""Projection workers spread over processes: each projection partition owned by one worker.

Every worker process runs a :class:`ProjectionWorker` over the same projections. The work
is cut into *units*, one per projection partition (``Projection.partitions``, 1 by
default). A unit is owned through a lease, a document in ``eventfold_documents`` taken
and renewed with a compare-and-set on its version, so it works on every backend. Workers
announce themselves with a heartbeat document of their own; each takes its fair share of
the units (units divided by live workers, rounded up) and lets go of any above it, so a
new worker gets work without restarting the others, and the units of a worker that died
are taken over once its lease runs out.

Leases only decide who *works*; correctness does not rest on them. Each batch moves its
unit's checkpoint with a compare-and-set in the batch's own transaction, so even two
workers that both believe they own a unit (a lease that ran out mid-batch) never apply an
event twice; per-stream order holds because a stream belongs to one partition only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from eventfold.application.readside.partitions import Partition, checkpoint_name
from eventfold.application.readside.projections import Projection, ProjectionRunner
from eventfold.application.readside.queries import QueryOptions
from eventfold.application.readside.read_models import DocumentSearch
from eventfold.domain.errors import ConfigurationError
from eventfold.domain.specification import FieldSet
from eventfold.errors import ConcurrencyError, StoreUnavailableError
from eventfold.ports.storage import DocumentStore, Storage
from eventfold.serialization import EventRegistry, JsonCodec

__all__ = ["LEASE_COLLECTION", "WORKER_COLLECTION", "ProjectionWorker", "WorkUnit"]

logger = logging.getLogger("eventfold.projections")

LEASE_COLLECTION = "eventfold:projection-leases"
WORKER_COLLECTION = "eventfold:projection-workers"


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """One projection partition: what one worker owns at a time."""

    projection: str
    partition: Partition

    @property
    def name(self) -> str:
        """The unit's checkpoint name (the projection's own name when it has one partition)."""
        return checkpoint_name(self.projection, self.partition)


@dataclass(frozen=True, slots=True)
class _Lease:
    owner: str
    expires_at: datetime


_lease_codec = JsonCodec(_Lease, "projection lease")


class ProjectionWorker:
    """Runs its share of the projections' partitions, alongside workers in other processes."""

    def __init__(
        self,
        storage: Storage,
        events: EventRegistry,
        projections: Sequence[Projection],
        *,
        worker_id: str | None = None,
        lease_seconds: float = 10.0,
        batch_size: int = 500,
        max_idle_wait: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if lease_seconds <= 0:
            msg = f"lease_seconds must be positive, got {lease_seconds}"
            raise ConfigurationError(msg)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._storage = storage

        def runner() -> ProjectionRunner:
            # One runner per unit: a unit given up is stopped after its batch in hand,
            # never cancelled in the middle of its transaction.
            return ProjectionRunner(
                storage,
                events,
                projections,
                batch_size=batch_size,
                max_idle_wait=min(max_idle_wait, lease_seconds / 3),
                clock=clock,
            )

        self._new_runner = runner
        self._units = [
            WorkUnit(p.name, Partition(i, p.partitions))
            for p in projections
            for i in range(p.partitions)
        ]
        self._lease = timedelta(seconds=lease_seconds)
        self._clock = clock
        self._owned: dict[str, tuple[ProjectionRunner, asyncio.Task[None]]] = {}
        self._stopped: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()

    @property
    def units(self) -> list[WorkUnit]:
        """Every unit of work of these projections."""
        return list(self._units)

    @property
    def owned(self) -> list[str]:
        """The names of the units this worker owns now."""
        return sorted(self._owned)

    async def run(self) -> None:
        """Take a fair share of the units and apply their events until :meth:`stop`."""
        self._stopping.clear()
        try:
            while not self._stopping.is_set():
                try:
                    await self._rebalance()
                except StoreUnavailableError as exc:
                    logger.warning("worker %s waits for the database: %s", self.worker_id, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._lease.total_seconds() / 3)
        finally:
            await self._release_all()

    def stop(self) -> None:
        """Ask :meth:`run` to let go of its units and return."""
        self._stopping.set()
        for runner, _ in self._owned.values():
            runner.stop()

    # -- leases ---------------------------------------------------------------------------

    async def _rebalance(self) -> None:
        now = self._clock()
        async with self._storage.transaction() as session:
            await self._beat(session, now)
            share = math.ceil(len(self._units) / max(await self._live_workers(session, now), 1))
        for unit in self._units:
            if unit.name in self._owned and self._owned[unit.name][1].done():
                self._owned.pop(unit.name)  # its task ended (the unit is parked, or failed)
            owned = unit.name in self._owned
            if owned and len(self._owned) > share:
                await self._let_go(unit)
            elif owned:
                if not await self._take(unit, now):
                    self._drop(unit)  # another worker has it now: stop working on it
            elif len(self._owned) < share and await self._take(unit, now):
                runner = self._new_runner()
                task = asyncio.create_task(runner.follow(unit.projection, partition=unit.partition))
                self._owned[unit.name] = (runner, task)

    async def _beat(self, session: DocumentStore, now: datetime) -> None:
        record = await session.load_document(WORKER_COLLECTION, self.worker_id)
        lease = _Lease(self.worker_id, now + self._lease)
        version = 0 if record is None else record.version
        await session.save_document(
            WORKER_COLLECTION, self.worker_id, _lease_codec.encode(lease), expected_version=version
        )

    async def _live_workers(self, session: DocumentStore, now: datetime) -> int:
        live = 0
        for record in await _all_documents(session, WORKER_COLLECTION):
            if _lease_codec.decode(record).expires_at > now:
                live += 1
        return live

    async def _take(self, unit: WorkUnit, now: datetime) -> bool:
        """Take or renew the unit's lease; False when another live worker holds it."""
        try:
            async with self._storage.transaction() as session:
                record = await session.load_document(LEASE_COLLECTION, unit.name)
                if record is not None:
                    held = _lease_codec.decode(record.data)
                    if held.owner != self.worker_id and held.expires_at > now:
                        return False
                lease = _Lease(self.worker_id, now + self._lease)
                await session.save_document(
                    LEASE_COLLECTION,
                    unit.name,
                    _lease_codec.encode(lease),
                    expected_version=0 if record is None else record.version,
                )
        except ConcurrencyError:
            return False  # another worker took it between our read and our write
        return True

    async def _let_go(self, unit: WorkUnit) -> None:
        self._drop(unit)
        with contextlib.suppress(ConcurrencyError, StoreUnavailableError):
            async with self._storage.transaction() as session:
                record = await session.load_document(LEASE_COLLECTION, unit.name)
                if record is not None and _lease_codec.decode(record.data).owner == self.worker_id:
                    await session.delete_document(
                        LEASE_COLLECTION, unit.name, expected_version=record.version
                    )

    def _drop(self, unit: WorkUnit) -> None:
        owned = self._owned.pop(unit.name, None)
        if owned is not None:
            runner, task = owned
            runner.stop()
            self._stopped.add(task)
            task.add_done_callback(self._stopped.discard)

    async def _release_all(self) -> None:
        for unit in self._units:
            if unit.name in self._owned:
                await self._let_go(unit)
        await asyncio.gather(*self._stopped, return_exceptions=True)
        with contextlib.suppress(ConcurrencyError, StoreUnavailableError):
            async with self._storage.transaction() as session:
                record = await session.load_document(WORKER_COLLECTION, self.worker_id)
                if record is not None:
                    await session.delete_document(
                        WORKER_COLLECTION, self.worker_id, expected_version=record.version
                    )


async def _all_documents(session: DocumentStore, collection: str) -> list[str]:
    search: DocumentSearch = session  # type: ignore[assignment]
    found = search.search_documents(collection, QueryOptions(), FieldSet(collection, {}))
    return [record.data async for record in found.stream()]
