"""Projections: read models built from the global log, with checkpoints in the same transaction.

A :class:`ProjectionRunner` reads the log from each projection's checkpoint in batches and
writes the read-model changes *and* the new checkpoint in one transaction, so after a
crash every event's effect is applied exactly once. The log is gap-free (see the storage
ports), so a projection never passes an event that commits late.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable
from uuid import UUID

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_result,
    wait_exponential,
)

from eventfold.application.readside.health import (
    ParkedFailure,
    ProjectionHealth,
    ProjectionParkedError,
    load_health,
    park_projection,
    projection_health,
    save_health,
)
from eventfold.application.readside.partitions import Partition, checkpoint_name, stream_filter
from eventfold.domain.dispatch import find_handler
from eventfold.domain.errors import ConfigurationError, EventfoldError
from eventfold.domain.events import EventMetadata
from eventfold.domain.personal_data import SubjectForgotten, has_personal_data
from eventfold.errors import CheckpointConflictError, ConcurrencyError, StoreUnavailableError
from eventfold.ports.records import (
    LOG_START,
    HorizonBlocker,
    LogPosition,
    StoredEvent,
    StreamState,
)
from eventfold.ports.storage import Storage, StorageSession
from eventfold.ports.telemetry import Telemetry, active_telemetry
from eventfold.serialization import EventRegistry

__all__ = [
    "ProgressCallback",
    "Projection",
    "ProjectionContext",
    "ProjectionFailedError",
    "ProjectionLag",
    "ProjectionRunner",
    "ProjectionStatus",
    "ProjectionVersionError",
    "ReadModel",
    "SwappableReadModel",
    "shadow_name",
]

logger = logging.getLogger("eventfold.projections")

_FIRST_IDLE_WAIT = 0.05  # seconds a live runner first pauses on an empty log
_LAG_GAUGE_EVERY = 1.0  # seconds between lag measurements for telemetry, per projection

ProgressCallback = Callable[[int, int], None]
"""Called with (events done, events in total) while a projection rebuilds."""


@runtime_checkable
class EventNotifier(Protocol):
    """A storage that can wake live readers when events are appended (PostgreSQL)."""

    async def wait_for_events(self, timeout: float) -> bool:  # noqa: ASYNC109 - the wait is the point
        """Wait up to ``timeout`` seconds for new events; True if woken by one."""
        ...


class Projection:
    """Base class of projections: a name, one handler per event type, and a reset.

    Handlers are ``async def apply_<EventName>(self, event, context)`` methods or overloads
    of a ``functools.singledispatchmethod`` named ``on`` — the same dispatch aggregates use.
    Events a projection has no handler for are skipped without being decoded.
    """

    name: ClassVar[str]
    read_models: ClassVar[Sequence[ReadModel]] = ()
    categories: ClassVar[Sequence[str]] = ()
    """Stream categories to follow (``"order"`` follows ``order-…`` streams); empty: all."""
    partitions: ClassVar[int] = 1
    """How many partitions by stream workers may split this projection into."""
    version: ClassVar[int | str] = 1
    """Bump it when the handlers change what they write: runners then rebuild beside."""

    async def reset(self, context: ProjectionContext) -> None:
        """Clear the read models before a rebuild (inside the rebuild's transaction)."""
        for read_model in self.read_models:
            await read_model.clear(context)
            context.cleared.add(read_model)


class ReadModel(Protocol):
    """Storage of a projection's output that a rebuild can clear."""

    async def clear(self, context: ProjectionContext) -> None:
        """Delete every row of the read model, in the context's transaction."""
        ...


@runtime_checkable
class SwappableReadModel(Protocol):
    """A read model a rebuild can build beside the live one and swap in at once."""

    def shadow(self) -> object:
        """The same read model kept where a rebuild writes (``<name>__next``)."""
        ...

    async def prepare_shadow(self, context: ProjectionContext) -> None:
        """Make the shadow exist and empty, in the context's transaction."""
        ...

    async def promote_shadow(self, context: ProjectionContext, *, keep_old: bool) -> None:
        """Put the shadow in the live one's place, in the context's transaction."""
        ...


@dataclass(slots=True)
class ProjectionContext:
    """What a handler gets beside the event: the transaction, the metadata, the mode."""

    session: StorageSession
    rebuilding: bool = False
    record: StoredEvent | None = None
    """The stored event being applied, when it came from the log."""
    buffers: dict[object, Any] = field(default_factory=dict)
    """Per-transaction write buffers of read models, keyed by read model."""
    cleared: set[object] = field(default_factory=set)
    """Read models known to be empty in this transaction (a rebuild cleared them)."""
    targets: dict[object, Any] = field(default_factory=dict)
    """Where a read model's writes go instead of itself (its shadow, during a rebuild)."""
    written: dict[object, Any] = field(default_factory=dict)
    """Per read model known to have started empty: what a rebuild wrote to it so far.

    Shared by the batches of one rebuild, so keys never written cost no lookup.
    """
    _flushers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _metadata: EventMetadata | None = None

    @property
    def metadata(self) -> EventMetadata | None:
        """The metadata of the event being applied (built only when a handler asks)."""
        if self._metadata is None and self.record is not None:
            self._metadata = self.record.metadata()
        return self._metadata

    @metadata.setter
    def metadata(self, value: EventMetadata | None) -> None:
        self._metadata, self.record = value, None

    def on_flush(self, flusher: Callable[[], Awaitable[None]]) -> None:
        """Have ``flusher`` run at the end of each batch, before the checkpoint is saved."""
        self._flushers.append(flusher)

    async def flush(self) -> None:
        """Write what read models buffered during the batch."""
        for flusher in self._flushers:
            await flusher()

    async def execute(self, statement: Any) -> list[dict[str, Any]]:
        """Run a SQLAlchemy Core statement in the projection's transaction (SQL backends)."""
        execute_sql = getattr(self.session, "execute_sql", None)
        if execute_sql is None:
            msg = "this storage runs no SQL: use a document read model or a SQL backend"
            raise ConfigurationError(msg)
        rows: list[dict[str, Any]] = await execute_sql(statement)
        return rows


class ProjectionFailedError(EventfoldError):
    """A projection's handler raised on an event; its checkpoint stays before that event."""

    def __init__(self, projection: str, event: StoredEvent, error: BaseException) -> None:
        super().__init__(
            f"projection {projection!r} failed on event {event.event_id} "
            f"({event.type_name}, stream {event.stream_id!r} v{event.version}, "
            f"position {event.position}): {type(error).__name__}: {error}"
        )
        self.projection = projection
        self.record = event
        self.event_id = event.event_id
        self.type_name = event.type_name
        self.stream_id = event.stream_id
        self.version = event.version
        self.position = event.log_position
        self.error = error


class ProjectionVersionError(EventfoldError):
    """The read models were built by another version of the projection than this code's."""

    def __init__(self, name: str, built_by: str, running: str) -> None:
        super().__init__(
            f"projection {name!r}: its read models were built by version {built_by}, "
            f"this code is version {running}"
        )
        self.name = name
        self.built_by = built_by
        self.running = running

    @property
    def newer(self) -> bool:
        """Whether this code is newer (numbers compare; other versions are only different)."""
        if self.built_by.isdigit() and self.running.isdigit():
            return int(self.running) > int(self.built_by)
        return True


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where a projection stands in this runner: running, caught up, stopped or failed."""

    name: str
    state: str
    failure: ProjectionFailedError | None = None
    """The error this runner saw, when the failure happened here."""
    parked: ParkedFailure | None = None
    """The stored failure the projection is parked on (seen by every runner)."""


@dataclass(frozen=True, slots=True)
class ProjectionLag:
    """How far a projection is behind the log: what it can read, and what has committed.

    ``events_behind`` counts the events after the checkpoint that a reader can read now,
    up to ``readable_head``. On PostgreSQL a writer of the store still in flight holds
    readers back: events committed after it took its transaction id are not readable
    until it ends. Those are ``unreadable``, they end at ``committed_head``, and
    ``blocker`` names the transaction they wait for. Elsewhere both heads are equal and
    ``unreadable`` is 0. ``seconds_behind`` is the age of the oldest readable event not
    yet applied. ``parked`` is the stored failure a failed projection waits on (it
    applies nothing until it is retried or skipped): a failed projection is not caught
    up, whatever the counts say.
    """

    name: str
    checkpoint: LogPosition
    events_behind: int
    seconds_behind: float
    readable_head: LogPosition = LOG_START
    committed_head: LogPosition = LOG_START
    unreadable: int = 0
    blocker: HorizonBlocker | None = None
    parked: ParkedFailure | None = None

    @property
    def committed_behind(self) -> int:
        """Events committed after the checkpoint, readable or not yet."""
        return self.events_behind + self.unreadable

    @property
    def state(self) -> str:
        """``failed`` (parked), ``caught up`` (nothing committed is left), or ``behind``."""
        if self.parked is not None:
            return "failed"
        return "caught up" if self.committed_behind == 0 else "behind"


def _check_forgets(projection: Projection, events: EventRegistry) -> None:
    """Refuse a projection that reads personal data and cannot forget it.

    Its read models would keep a forgotten person's data in clear: it must handle
    :class:`SubjectForgotten` (erase or redact what it keeps of them), or say with
    ``keeps_personal_data = False`` that it stores none of the personal fields it reads.
    """
    projection_type = type(projection)
    if not getattr(projection_type, "keeps_personal_data", True):
        return
    if find_handler(projection_type, SubjectForgotten) is not None:
        return
    personal = sorted(
        name
        for name, cls in events.type_names().items()
        if has_personal_data(cls) and find_handler(projection_type, cls) is not None
    )
    if personal:
        msg = (
            f"projection {projection.name!r} reads personal data ({', '.join(personal)}) "
            f"but cannot forget it: give it apply_SubjectForgotten(self, event, context) "
            f"that erases what it keeps of event.subject, or set keeps_personal_data = False "
            f"on {projection_type.__name__} if it stores none of the personal fields"
        )
        raise ConfigurationError(msg)


class ProjectionRunner:
    """Runs projections side by side: catch up from the checkpoint, then follow live."""

    def __init__(
        self,
        storage: Storage,
        events: EventRegistry,
        projections: Sequence[Projection],
        *,
        batch_size: int = 500,
        max_idle_wait: float = 2.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        names = [p.name for p in projections]
        if len(set(names)) != len(names):
            msg = f"projection names must be unique, got {names}"
            raise ConfigurationError(msg)
        for projection in projections:
            _check_forgets(projection, events)
        self._storage = storage
        self._events = events
        self._projections = {p.name: p for p in projections}
        self._batch_size = batch_size
        self._max_idle_wait = max_idle_wait
        self._clock = clock
        self._status = {name: ProjectionStatus(name, "idle") for name in names}
        self._stopping = asyncio.Event()
        self._notifier = storage if isinstance(storage, EventNotifier) else None
        self._types: dict[str, frozenset[str]] = {}
        self._lag_measured: dict[str, float] = {}

    @property
    def projections(self) -> list[str]:
        """The names of the projections this runner runs."""
        return list(self._projections)

    @property
    def storage(self) -> Storage:
        """The storage whose log the projections follow and where they keep their state."""
        return self._storage

    def status(self, name: str, *, partition: Partition | None = None) -> ProjectionStatus:
        """The projection's (or one partition's) status in this runner."""
        key = checkpoint_name(self._projection(name).name, partition)
        return self._status.get(key, ProjectionStatus(key, "idle"))

    async def process_batch(self, name: str, *, partition: Partition | None = None) -> int:
        """Apply the next batch after the checkpoint in one transaction; return its size.

        With ``partition``, only the events of the streams that partition holds are
        applied, under the partition's own checkpoint (see :class:`Partition`).
        A handler that raises parks the projection (:class:`ProjectionFailedError`); a
        parked projection applies nothing until an operator retries or skips the event
        (:class:`ProjectionParkedError`).
        """
        telemetry = active_telemetry()
        if telemetry is None:
            return len(await self._process_batch(name, partition))
        with telemetry.span(f"project {name}", attributes={"eventfold.projection": name}) as span:
            records = await self._process_batch(name, partition)
            span.set_attribute("eventfold.projection.events", len(records))
        if records:
            # How far behind the newest event of the batch was when it was applied.
            lag = (self._clock() - records[-1].occurred_at).total_seconds()
            attributes = {"eventfold.projection": name}
            telemetry.record("eventfold.projection.lag", max(lag, 0.0), attributes)
            telemetry.add("eventfold.projection.events", len(records), attributes)
        await self._measure_lag(telemetry, checkpoint_name(name, partition))
        return len(records)

    async def _measure_lag(self, telemetry: Telemetry, name: str) -> None:
        """Gauges of how far ``name`` is behind, committed and readable (at most 1/s)."""
        now = time.monotonic()
        if now - self._lag_measured.get(name, -_LAG_GAUGE_EVERY) < _LAG_GAUGE_EVERY:
            return
        self._lag_measured[name] = now
        lag = await projection_lag(self._storage, name, self._clock())
        attributes = {"eventfold.projection": name}
        telemetry.gauge("eventfold.projection.behind", lag.events_behind, attributes)
        telemetry.gauge("eventfold.projection.held_back", lag.unreadable, attributes)
        telemetry.gauge("eventfold.projection.seconds_behind", lag.seconds_behind, attributes)

    async def _process_batch(self, name: str, partition: Partition | None) -> list[StoredEvent]:
        projection = self._projection(name)
        name = checkpoint_name(name, partition)
        in_scope = _scope(projection, partition)
        while True:
            loaded: LogPosition | None = None
            try:
                async with self._storage.transaction() as session:
                    health, health_version = await load_health(session, name)
                    if health.parked is not None:
                        raise ProjectionParkedError(name, health.parked)
                    versioned = partition is None or partition.count == 1
                    if versioned:
                        _check_version(projection, health)
                    loaded = await session.load_checkpoint(name)
                    start = loaded or LOG_START
                    # Read the head first: everything readable then is readable to the
                    # filtered read below, so a short batch may move past the events
                    # this projection does not handle, up to that head.
                    head = await session.log_head()
                    types = self._handled(projection)
                    records = (
                        await session.read_log(after=start, limit=self._batch_size, types=types)
                        if types
                        else []
                    )
                    position = records[-1].log_position if records else start
                    if len(records) < self._batch_size:
                        position = max(position, head)
                    if position == start:
                        return []
                    # Claim the batch before applying it (compare-and-set): of two runners
                    # of one projection, the loser fails here or at commit, rolls back
                    # everything it wrote and reads again from the winner's checkpoint.
                    await session.save_checkpoint(name, position, expected=loaded)
                    if versioned and health.version is None:
                        # Written after the log was read: on PostgreSQL the first write
                        # of a transaction narrows what it can read of the log.
                        running = replace(health, version=str(projection.version))
                        await save_health(session, running, health_version)
                    applied = records if in_scope is None else list(filter(in_scope, records))
                    await self._apply_all(
                        projection, applied, ProjectionContext(session), health.skipped_ids
                    )
            except ConcurrencyError:
                if await self._checkpoint(name) == loaded:
                    raise
                continue
            except ProjectionFailedError as failure:
                parked = ParkedFailure.of(failure.record, failure.error, self._clock())
                await park_projection(self._storage, name, parked)
                raise
            return records

    async def _checkpoint(self, name: str) -> LogPosition | None:
        async with self._storage.transaction() as session:
            return await session.load_checkpoint(name)

    async def catch_up(self, name: str) -> int:
        """Process batches until the projection reaches the head; return events processed."""
        total = 0
        while count := await self.process_batch(name):
            total += count
        return total

    async def rebuild(
        self, name: str, *, on_progress: ProgressCallback | None = None, keep_old: bool = False
    ) -> int:
        """Replay the whole log into a fresh read model; readers see the old one until then.

        A projection whose read models can all be built beside the live ones
        (:class:`SwappableReadModel`: table and document read models) is rebuilt *beside*
        them, in batches each committed with its own checkpoint, so an interrupted rebuild
        resumes where it stopped; the live version keeps serving queries and following
        the log until one transaction swaps the new version in. ``keep_old`` keeps the old
        tables (renamed ``<table>__old``). Other projections are reset and replayed in
        one transaction. Returns the number of events replayed.
        """
        projection = self._projection(name)
        if _swappable(projection):
            return await self._rebuild_beside(projection, on_progress, keep_old=keep_old)
        while True:
            before = await self._checkpoint(name)
            try:
                done = await self._rebuild(projection, on_progress)
            except ConcurrencyError:
                if await self._checkpoint(name) == before:
                    raise
                continue  # a live runner moved the checkpoint first: replay again
            self._status[name] = ProjectionStatus(name, "idle")
            return done

    async def _rebuild(self, projection: Projection, on_progress: ProgressCallback | None) -> int:
        name = projection.name
        async with self._storage.transaction() as session:
            # Count before the first write: on PostgreSQL a transaction that holds a
            # transaction id sees only the log committed before it began.
            total = await session.count_after(LOG_START)
            # Claim the checkpoint first: a live runner of this projection waits for the
            # rebuild (or fails at commit) and goes on from the position the rebuild saves.
            loaded = await session.load_checkpoint(name)
            await session.save_checkpoint(name, LOG_START, expected=loaded)
            health, health_version = await load_health(session, name)
            context = ProjectionContext(session, rebuilding=True)
            await projection.reset(context)
            position, done = LOG_START, 0
            while records := await session.read_log(after=position, limit=self._batch_size):
                await self._apply_all(projection, records, context, health.skipped_ids)
                position = records[-1].log_position
                done += len(records)
                if on_progress is not None:
                    on_progress(done, max(total, done))
            await session.save_checkpoint(name, position, expected=LOG_START)
            if health.parked is not None:
                # The whole log was applied again without failing: the park is over.
                await save_health(session, replace(health, parked=None), health_version)
        return done

    async def _rebuild_beside(
        self, projection: Projection, on_progress: ProgressCallback | None, *, keep_old: bool
    ) -> int:
        name = projection.name
        position, done, total = await self._start_shadow(projection)
        targets: dict[object, Any] = {
            model: model.shadow()  # type: ignore[attr-defined]
            for model in projection.read_models
        }
        # A shadow this run made empty: keys it never wrote need no lookup. A resumed
        # shadow holds rows of an earlier run, so every key is looked up.
        fresh = position == LOG_START
        state = _ShadowState(targets, set(targets.values()) if fresh else set(), {})
        while True:
            batch = await self._shadow_batch(projection, state, position)
            if batch is None:
                break
            position, count = batch
            done += count
            if on_progress is not None:
                on_progress(done, max(total, done))
        while True:
            try:
                done += await self._swap(projection, state, keep_old=keep_old)
            except ConcurrencyError:
                # The live runner moved its checkpoint meanwhile: swap again. What the
                # rolled-back attempt wrote is gone, so nothing known of the shadow holds.
                state.started_empty.clear()
                state.written.clear()
                continue
            break
        if on_progress is not None:
            on_progress(done, max(total, done))
        logger.info("projection %s rebuilt and swapped in (version %s)", name, projection.version)
        self._status[name] = ProjectionStatus(name, "idle")
        return done

    async def _start_shadow(self, projection: Projection) -> tuple[LogPosition, int, int]:
        """The shadow's checkpoint, events done and in total; a fresh shadow if none fits."""
        shadow, version = shadow_name(projection.name), str(projection.version)
        async with self._storage.transaction() as session:
            total = await session.count_after(LOG_START)
            health, health_version = await load_health(session, shadow)
            position = await session.load_checkpoint(shadow)
            if position is not None and health.version == version:
                return position, total - await session.count_after(position), total
            # Nothing to resume: make the shadow storage exist, empty, at the log's start.
            context = ProjectionContext(session, rebuilding=True)
            for model in projection.read_models:
                await model.prepare_shadow(context)  # type: ignore[attr-defined]
            await session.save_checkpoint(shadow, LOG_START, expected=position)
            fresh = ProjectionHealth(shadow, version=version)
            await save_health(session, fresh, health_version)
        return LOG_START, 0, total

    async def _shadow_batch(
        self, projection: Projection, state: _ShadowState, after: LogPosition
    ) -> tuple[LogPosition, int] | None:
        """Apply one full batch to the shadow; None once the rest fits in one batch."""
        shadow = shadow_name(projection.name)
        async with self._storage.transaction() as session:
            records = await session.read_log(
                after=after, limit=self._batch_size, types=self._handled(projection) or None
            )
            if len(records) < self._batch_size:
                return None  # the rest is applied by the swap, in its transaction
            position = records[-1].log_position
            await session.save_checkpoint(shadow, position, expected=after)
            skipped = (await load_health(session, projection.name))[0].skipped_ids
            await self._apply_all(projection, records, state.context(session), skipped)
        return position, len(records)

    async def _swap(self, projection: Projection, state: _ShadowState, *, keep_old: bool) -> int:
        """Apply the last events to the shadow and put it in the live one's place, at once."""
        name, shadow = projection.name, shadow_name(projection.name)
        async with self._storage.transaction() as session:
            position = await session.load_checkpoint(shadow) or LOG_START
            # Read the head first (as a live batch does): the filtered reads below see
            # everything readable then, so the swapped-in checkpoint moves past the events
            # this projection does not handle, and its lag after a rebuild is none.
            head = await session.log_head()
            live_health, live_version = await load_health(session, name)
            context = state.context(session)
            done = 0
            while records := await session.read_log(
                after=position, limit=self._batch_size, types=self._handled(projection) or None
            ):
                await self._apply_all(projection, records, context, live_health.skipped_ids)
                position, done = records[-1].log_position, done + len(records)
            position = max(position, head)
            await context.flush()
            for model in projection.read_models:
                await model.promote_shadow(context, keep_old=keep_old)  # type: ignore[attr-defined]
            # The live version may have applied events this transaction's reads did not
            # see yet (a reader's snapshot older than its first write): swapping now would
            # lose their effect, so the swap rolls back and is tried again. A live runner
            # that moves the checkpoint after this makes the compare-and-set fail, too.
            live = await session.load_checkpoint(name)
            if live is not None and live > position:
                raise CheckpointConflictError(name, position, live)
            await session.save_checkpoint(name, position, expected=live)
            await session.save_checkpoint(shadow, position, expected=StreamState.ANY)
            swapped = replace(live_health, parked=None, version=str(projection.version))
            await save_health(session, swapped, live_version)
            shadow_health, shadow_version = await load_health(session, shadow)
            await save_health(session, replace(shadow_health, version=None), shadow_version)
        return done

    async def lag(self, name: str) -> ProjectionLag:
        """Events and seconds between the projection's checkpoint and the head of the log."""
        self._projection(name)
        return await projection_lag(self._storage, name, self._clock())

    async def run(self) -> None:
        """Run every projection until :meth:`stop`; a failing one stops alone."""
        self._stopping.clear()
        await asyncio.gather(*(self.follow(name) for name in self._projections))

    def restart(self) -> None:
        """Forget an earlier :meth:`stop`, so :meth:`follow` loops can run again."""
        self._stopping.clear()

    def stop(self) -> None:
        """Ask :meth:`run` to finish after the batches in hand."""
        self._stopping.set()

    async def follow(self, name: str, *, partition: Partition | None = None) -> None:
        """Apply the projection's (or partition's) events as they come, until :meth:`stop`."""
        self._projection(name)
        key = checkpoint_name(name, partition)
        self._status[key] = ProjectionStatus(key, "running")
        # One retrying loop per batch that finds events: an empty log and an unreachable
        # database are both waited out with a doubling pause (50 ms up to max_idle_wait),
        # cut short by a NOTIFY or by stop(); progress starts the pauses again from 50 ms.
        follow = AsyncRetrying(
            sleep=self._idle,
            wait=wait_exponential(multiplier=_FIRST_IDLE_WAIT, max=self._max_idle_wait),
            retry=retry_if_exception_type(StoreUnavailableError) | retry_if_result(_no_events),
            stop=lambda _: self._stopping.is_set(),
            before_sleep=lambda attempt: _log_outage(key, attempt),
            retry_error_callback=lambda _: 0,
        )
        while not self._stopping.is_set():
            try:
                await follow(self.process_batch, name, partition=partition)
            except ProjectionVersionError as changed:
                if not await self._follow_new_version(changed):
                    return
            except (ProjectionFailedError, ProjectionParkedError) as error:
                failure = error if isinstance(error, ProjectionFailedError) else None
                if failure is not None:
                    logger.error("%s", failure, extra={"projection": key})
                if not await self._wait_while_parked(key, failure):
                    return  # stopped while parked: the status stays "failed"
        self._status[key] = ProjectionStatus(key, "stopped")

    async def _follow_new_version(self, changed: ProjectionVersionError) -> bool:
        """Rebuild for a newer version and go on (True); an older one stops (False)."""
        name = changed.name
        if not changed.newer:
            logger.warning("%s: newer code runs elsewhere, this runner stops", changed)
            self._status[name] = ProjectionStatus(name, "superseded")
            return False
        logger.info("%s: rebuilding it", changed)
        self._status[name] = ProjectionStatus(name, "rebuilding")
        await self.rebuild(name)
        self._status[name] = ProjectionStatus(name, "running")
        return True

    async def _wait_while_parked(self, name: str, failure: ProjectionFailedError | None) -> bool:
        """Wait until an operator lifts the park (True) or the runner stops (False)."""
        # An operator's retry or skip, from any process, lifts the park: this runner
        # then goes on by itself.
        while not self._stopping.is_set():
            try:
                health = await projection_health(self._storage, name)
            except StoreUnavailableError:
                health = None
            if health is not None and health.parked is None:
                logger.info("projection %s resumes", name)
                self._status[name] = ProjectionStatus(name, "running")
                return True
            parked = None if health is None else health.parked
            self._status[name] = ProjectionStatus(name, "failed", failure, parked)
            await self._idle(self._max_idle_wait)
        return False

    async def _idle(self, seconds: float) -> None:
        # Wake on NOTIFY where the storage offers it, on stop, or when the backoff ends.
        waiters: list[asyncio.Future[bool]] = [asyncio.ensure_future(self._stopping.wait())]
        if self._notifier is not None:
            waiters.append(asyncio.ensure_future(self._notifier.wait_for_events(seconds)))
        _, pending = await asyncio.wait(
            waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _apply_all(
        self,
        projection: Projection,
        records: list[StoredEvent],
        context: ProjectionContext,
        skipped: frozenset[UUID] = frozenset(),
    ) -> None:
        projection_type = type(projection)
        for record in records:
            handler = self._handler(projection_type, record.type_name)
            if handler is None or (skipped and record.event_id in skipped):
                continue
            try:
                event = self._events.decode(record.type_name, record.schema_version, record.data)
                context.record, context._metadata = record, None
                await handler(projection, event, context)
            except Exception as exc:
                raise ProjectionFailedError(projection.name, record, exc) from exc
        await context.flush()

    def _handled(self, projection: Projection) -> frozenset[str]:
        """The type names ``projection`` has handlers for: the log is filtered by them."""
        types = self._types.get(projection.name)
        if types is None:
            handled = self._events.type_names().items()
            types = frozenset(n for n, cls in handled if find_handler(type(projection), cls))
            self._types[projection.name] = types
        return types

    def _handler(self, projection_type: type, type_name: str) -> Any:
        try:
            event_cls = self._events.class_of(type_name)
        except EventfoldError:
            return None  # no class registered: no projection can handle it
        return find_handler(projection_type, event_cls)

    def _projection(self, name: str) -> Projection:
        try:
            return self._projections[name]
        except KeyError:
            msg = f"no projection named {name!r}; known: {sorted(self._projections)}"
            raise ConfigurationError(msg) from None


async def projection_lag(storage: Storage, name: str, now: datetime) -> ProjectionLag:
    """How far the checkpoint ``name`` is behind the log, and whether it is parked."""
    async with storage.transaction() as session:
        checkpoint = await session.load_checkpoint(name) or LOG_START
        behind = await session.count_after(checkpoint)
        oldest = await session.read_log(after=checkpoint, limit=1)
        # After the count: an event that becomes readable in between is then missed for
        # this once rather than counted both as readable and as not yet readable.
        horizon = await session.log_horizon()
        health, _ = await load_health(session, name)
    seconds = (now - oldest[0].occurred_at).total_seconds() if oldest else 0.0
    return ProjectionLag(
        name,
        checkpoint,
        behind,
        max(seconds, 0.0),
        readable_head=max(horizon.readable_head, checkpoint),
        committed_head=max(horizon.committed_head, checkpoint),
        unreadable=horizon.unreadable,
        blocker=horizon.blocker,
        parked=health.parked,
    )


def _no_events(count: int) -> bool:
    return count == 0


def _log_outage(name: str, attempt: RetryCallState) -> None:
    # A database that went away is waited out: the checkpoint did not move, so the
    # projection resumes exactly where it was once the database answers.
    if attempt.outcome is not None and attempt.outcome.failed:
        error = attempt.outcome.exception()
        logger.warning("projection %s waits for the database: %s", name, error)


def _scope(
    projection: Projection, partition: Partition | None
) -> Callable[[StoredEvent], bool] | None:
    """Which events of the log ``projection`` applies (None: every one it handles)."""
    categories = tuple(getattr(projection, "categories", ()))
    return stream_filter(categories, partition)


def shadow_name(projection: str) -> str:
    """The checkpoint and health name of a projection's rebuild beside the live one."""
    return f"{projection}@next"


def _swappable(projection: Projection) -> bool:
    models = projection.read_models
    whole = projection.partitions == 1
    return whole and bool(models) and all(isinstance(m, SwappableReadModel) for m in models)


def _check_version(projection: Projection, health: ProjectionHealth) -> None:
    """Code of another version never writes into read models another version built."""
    running = str(projection.version)
    if health.version is not None and health.version != running:
        raise ProjectionVersionError(projection.name, health.version, running)


@dataclass(slots=True)
class _ShadowState:
    """What the batches of one rebuild beside share: the shadows and what they hold."""

    targets: dict[object, Any]
    started_empty: set[object]
    written: dict[object, Any]

    def context(self, session: StorageSession) -> ProjectionContext:
        """A rebuilding context that writes to the shadows."""
        return ProjectionContext(
            session,
            rebuilding=True,
            targets=self.targets,
            cleared=set(self.started_empty),
            written=self.written,
        )
