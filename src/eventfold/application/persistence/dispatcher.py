"""The persistence registry and dispatcher: one entry point for writes, loads and queries.

Per entity or read-model type, the registry keeps four chains of handlers:

- ``operation``  persists an aggregate (``PersistenceDispatcher.apply``),
- ``retrieval``  loads aggregates by id (``fetch_domain``),
- ``query``      loads read models by id (``fetch`` with ids),
- ``query_spec`` searches read models (``fetch`` with :class:`QueryOptions`).

Each handler names the data source it works on and a priority. The dispatcher asks the
handlers in priority order (highest first, then registration order); a handler that
returns :data:`DECLINED` passes the request to the next one. With no unit of work given,
the dispatcher opens one from the handler's source, commits it after a write and only
closes it after a read.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, overload

from eventfold.application.persistence.repositories import (
    EventSourcedRepository,
    StateStoredRepository,
)
from eventfold.application.persistence.unit_of_work import DataSources
from eventfold.application.persistence.unit_of_work import UnitOfWork as EventfoldUnitOfWork
from eventfold.application.readside.queries import QueryOptions, SearchResult
from eventfold.domain.aggregate import AggregateRoot
from eventfold.domain.entity import Entity
from eventfold.errors import ConfigurationError, RegistrationError

__all__ = [
    "DECLINED",
    "DEFAULT_SOURCE",
    "Declined",
    "HandlerKind",
    "LoggingPersistenceHook",
    "OperationPersistence",
    "Outcome",
    "PersistenceCall",
    "PersistenceDispatcher",
    "PersistenceHook",
    "PersistenceRegistry",
    "PersistenceResult",
    "QueryPersistence",
    "Registration",
    "RepositoryPersistence",
    "RetrievalPersistence",
    "SpecificationPersistence",
    "SupportsPersistence",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "register_aggregate",
    "unit_of_work_factories",
]

logger = logging.getLogger("eventfold.persistence")

DEFAULT_SOURCE = "default"
"""The source a handler works on when its registration names none."""

T = TypeVar("T")
R = TypeVar("R")
T_contra = TypeVar("T_contra", contravariant=True)
U = TypeVar("U", bound="UnitOfWork")
U_contra = TypeVar("U_contra", contravariant=True)


class _Declined(enum.Enum):
    DECLINED = "declined"


DECLINED = _Declined.DECLINED
"""What a handler returns to pass a request on to the next handler in its chain."""

Declined = Literal[_Declined.DECLINED]
"""The type of :data:`DECLINED`."""


class UnitOfWork(Protocol):
    """What the dispatcher needs of a unit of work: a way to commit it."""

    async def commit(self) -> object:
        """Make the work durable (what it returns is ignored)."""
        ...


UnitOfWorkFactory = Callable[[], AbstractAsyncContextManager[U]]
"""Opens a unit of work on one data source (eventfold's commits on a clean exit)."""


class OperationPersistence(Protocol[T_contra, U_contra]):
    """Writes an aggregate in a unit of work."""

    async def persist(self, entity: T_contra, uow: U_contra) -> Declined | None:
        """Stage the aggregate's changes in ``uow``, or decline."""
        ...


class RetrievalPersistence(Protocol[T, U_contra]):
    """Loads aggregates by id."""

    async def retrieve(self, ids: Sequence[Any], uow: U_contra) -> Declined | list[T]:
        """The aggregates that exist among ``ids``, or decline."""
        ...


class QueryPersistence(Protocol[T, U_contra]):
    """Loads read models by id."""

    async def fetch(self, ids: Sequence[Any], uow: U_contra) -> Declined | list[T]:
        """The read models that exist among ``ids``, or decline."""
        ...


class SpecificationPersistence(Protocol[T, U_contra]):
    """Searches read models with a specification, ordering and paging."""

    async def search(self, options: QueryOptions, uow: U_contra) -> Declined | SearchResult[T]:
        """One page of matching read models, or decline."""
        ...


class HandlerKind(enum.Enum):
    """The four chains a type can have."""

    OPERATION = "operation"
    RETRIEVAL = "retrieval"
    QUERY = "query"
    QUERY_SPEC = "query_spec"


@dataclass(frozen=True, slots=True)
class Registration:
    """One handler in a chain."""

    handler: Any
    source: str
    priority: int
    order: int


class PersistenceRegistry(Generic[U]):
    """Which handlers persist, load and query each type, on which source, in which order."""

    def __init__(self) -> None:
        self._chains: dict[tuple[HandlerKind, type], list[Registration]] = {}
        self._count = 0

    def register_operation(
        self,
        entity_type: type[T],
        handler: OperationPersistence[T, U],
        *,
        source: str = DEFAULT_SOURCE,
        priority: int = 0,
    ) -> None:
        """Add a write handler for ``entity_type``."""
        self._add(HandlerKind.OPERATION, entity_type, handler, source, priority)

    def register_retrieval(
        self,
        entity_type: type[T],
        handler: RetrievalPersistence[T, U],
        *,
        source: str = DEFAULT_SOURCE,
        priority: int = 0,
    ) -> None:
        """Add a load-by-ids handler for ``entity_type``."""
        self._add(HandlerKind.RETRIEVAL, entity_type, handler, source, priority)

    def register_query(
        self,
        result_type: type[T],
        handler: QueryPersistence[T, U],
        *,
        source: str = DEFAULT_SOURCE,
        priority: int = 0,
    ) -> None:
        """Add a read-models-by-ids handler for ``result_type``."""
        self._add(HandlerKind.QUERY, result_type, handler, source, priority)

    def register_query_spec(
        self,
        result_type: type[T],
        handler: SpecificationPersistence[T, U],
        *,
        source: str = DEFAULT_SOURCE,
        priority: int = 0,
    ) -> None:
        """Add a search-by-specification handler for ``result_type``."""
        self._add(HandlerKind.QUERY_SPEC, result_type, handler, source, priority)

    def chain(self, kind: HandlerKind, entity_type: type) -> list[Registration]:
        """The handlers to ask, in order: the nearest class in the MRO that has any."""
        for klass in entity_type.__mro__:
            found = self._chains.get((kind, klass))
            if found:
                return sorted(found, key=lambda r: (-r.priority, r.order))
        raise RegistrationError(entity_type, kind.value)

    def has(self, kind: HandlerKind, entity_type: type) -> bool:
        """Whether ``entity_type`` (or a base class) has a handler of ``kind``."""
        return any((kind, klass) in self._chains for klass in entity_type.__mro__)

    def sources(self) -> set[str]:
        """Every source a registered handler names."""
        return {r.source for chain in self._chains.values() for r in chain}

    def _add(
        self, kind: HandlerKind, entity_type: type, handler: object, source: str, priority: int
    ) -> None:
        self._count += 1
        registration = Registration(handler, source, priority, self._count)
        self._chains.setdefault((kind, entity_type), []).append(registration)


class Outcome(enum.Enum):
    """How one handler call ended."""

    OK = "ok"
    DECLINED = "declined"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PersistenceCall:
    """What a hook learns before a handler runs."""

    entity_type: type
    kind: HandlerKind
    source: str


@dataclass(frozen=True, slots=True)
class PersistenceResult:
    """What a hook learns after a handler ran (its unit of work included)."""

    outcome: Outcome
    duration: float
    error: BaseException | None = None


class PersistenceHook(Protocol):
    """Observes every handler call: for logs, metrics and traces. Must not do I/O that blocks."""

    def before(self, call: PersistenceCall) -> None:
        """A handler is about to run."""
        ...

    def after(self, call: PersistenceCall, result: PersistenceResult) -> None:
        """A handler ran; ``result.duration`` is in seconds."""
        ...


class LoggingPersistenceHook:
    """Logs every handler call at DEBUG, and failures at WARNING."""

    def __init__(self, log: logging.Logger = logger) -> None:
        self._log = log

    def before(self, call: PersistenceCall) -> None:
        """Nothing to log before: the after-line carries everything."""

    def after(self, call: PersistenceCall, result: PersistenceResult) -> None:
        """One line per call."""
        level = logging.WARNING if result.outcome is Outcome.FAILED else logging.DEBUG
        self._log.log(
            level,
            "%s %s on %s: %s in %.1f ms%s",
            call.kind.value,
            call.entity_type.__qualname__,
            call.source,
            result.outcome.value,
            result.duration * 1000,
            f" ({result.error!r})" if result.error is not None else "",
        )


class SupportsPersistence(Protocol[U_contra]):
    """What callers use of a dispatcher; a caching dispatcher wraps any implementation."""

    async def apply(self, entity: object, uow: U_contra | None = None) -> None:
        """Persist ``entity``."""
        ...

    async def fetch_domain(
        self, entity_type: type[T], ids: Sequence[Any], uow: U_contra | None = None
    ) -> list[T]:
        """Aggregates by id."""
        ...

    @overload
    async def fetch(
        self, result_type: type[T], criteria: QueryOptions, uow: U_contra | None = None
    ) -> SearchResult[T]: ...

    @overload
    async def fetch(
        self, result_type: type[T], criteria: Sequence[Any], uow: U_contra | None = None
    ) -> list[T]: ...


class PersistenceDispatcher(Generic[U]):
    """Routes writes, loads and queries to the registered handlers, in their units of work."""

    def __init__(
        self,
        registry: PersistenceRegistry[U],
        unit_of_work_factories: Mapping[str, UnitOfWorkFactory[U]],
        *,
        hooks: Sequence[PersistenceHook] = (),
    ) -> None:
        self._registry = registry
        self._factories = dict(unit_of_work_factories)
        self._hooks = tuple(hooks)

    @property
    def registry(self) -> PersistenceRegistry[U]:
        """The registry this dispatcher routes by."""
        return self._registry

    async def apply(self, entity: object, uow: U | None = None) -> None:
        """Persist ``entity``; commit a unit of work of its own when none is given."""

        async def call(handler: Any, unit: U) -> Declined | None:
            result: Declined | None = await handler.persist(entity, unit)
            return result

        await self._run(HandlerKind.OPERATION, type(entity), uow, call, commit=True)

    async def fetch_domain(
        self, entity_type: type[T], ids: Sequence[Any], uow: U | None = None
    ) -> list[T]:
        """The aggregates of ``entity_type`` that exist among ``ids``."""

        async def call(handler: Any, unit: U) -> Declined | list[T]:
            result: Declined | list[T] = await handler.retrieve(ids, unit)
            return result

        return await self._run(HandlerKind.RETRIEVAL, entity_type, uow, call, commit=False)

    @overload
    async def fetch(
        self, result_type: type[T], criteria: QueryOptions, uow: U | None = None
    ) -> SearchResult[T]: ...

    @overload
    async def fetch(
        self, result_type: type[T], criteria: Sequence[Any], uow: U | None = None
    ) -> list[T]: ...

    async def fetch(
        self, result_type: type[T], criteria: QueryOptions | Sequence[Any], uow: U | None = None
    ) -> SearchResult[T] | list[T]:
        """Read models by ids (a list), or one page of a search (a :class:`SearchResult`)."""
        if isinstance(criteria, QueryOptions):
            return await self._search(result_type, criteria, uow)
        return await self._fetch_ids(result_type, criteria, uow)

    async def _fetch_ids(self, result_type: type[T], ids: Sequence[Any], uow: U | None) -> list[T]:
        async def call(handler: Any, unit: U) -> Declined | list[T]:
            result: Declined | list[T] = await handler.fetch(ids, unit)
            return result

        return await self._run(HandlerKind.QUERY, result_type, uow, call, commit=False)

    async def _search(
        self, result_type: type[T], options: QueryOptions, uow: U | None
    ) -> SearchResult[T]:
        async def call(handler: Any, unit: U) -> Declined | SearchResult[T]:
            result: Declined | SearchResult[T] = await handler.search(options, unit)
            return result

        return await self._run(HandlerKind.QUERY_SPEC, result_type, uow, call, commit=False)

    async def _run(
        self,
        kind: HandlerKind,
        entity_type: type,
        uow: U | None,
        call: Callable[[Any, U], Awaitable[Declined | R]],
        *,
        commit: bool,
    ) -> R:
        for registration in self._registry.chain(kind, entity_type):
            probe = PersistenceCall(entity_type, kind, registration.source)
            result = await self._attempt(probe, registration, uow, call, commit=commit)
            if result is not DECLINED:
                return result
        raise RegistrationError(entity_type, kind.value, declined=True)

    async def _attempt(
        self,
        probe: PersistenceCall,
        registration: Registration,
        uow: U | None,
        call: Callable[[Any, U], Awaitable[Declined | R]],
        *,
        commit: bool,
    ) -> Declined | R:
        self._notify_before(probe)
        started = time.perf_counter()
        try:
            if uow is not None:
                result = await call(registration.handler, uow)
            else:
                result = await self._in_own_unit(registration, call, commit=commit)
        except BaseException as exc:
            self._notify_after(probe, PersistenceResult(Outcome.FAILED, _since(started), exc))
            raise
        outcome = Outcome.DECLINED if result is DECLINED else Outcome.OK
        self._notify_after(probe, PersistenceResult(outcome, _since(started)))
        return result

    async def _in_own_unit(
        self,
        registration: Registration,
        call: Callable[[Any, U], Awaitable[Declined | R]],
        *,
        commit: bool,
    ) -> Declined | R:
        async with self._factory(registration.source)() as unit:
            result = await call(registration.handler, unit)
            if commit and result is not DECLINED:
                await unit.commit()
            else:
                # A read, or a declining handler, wrote nothing worth keeping: end it without
                # writing (eventfold's unit of work would commit on leaving the block).
                await _discard(unit)
        return result

    def _factory(self, source: str) -> UnitOfWorkFactory[U]:
        try:
            return self._factories[source]
        except KeyError:
            known = ", ".join(sorted(self._factories)) or "none"
            msg = f"no unit-of-work factory for source {source!r} (known: {known})"
            raise ConfigurationError(msg) from None

    def _notify_before(self, probe: PersistenceCall) -> None:
        for hook in self._hooks:
            try:
                hook.before(probe)
            except Exception:  # an observer must never break the operation it observes
                logger.exception("persistence hook %r failed before %s", hook, probe.kind.value)

    def _notify_after(self, probe: PersistenceCall, result: PersistenceResult) -> None:
        for hook in self._hooks:
            try:
                hook.after(probe, result)
            except Exception:  # an observer must never break the operation it observes
                logger.exception("persistence hook %r failed after %s", hook, probe.kind.value)


async def _discard(unit: object) -> None:
    rollback = getattr(unit, "rollback", None)
    if callable(rollback):
        await rollback()


def _since(started: float) -> float:
    return time.perf_counter() - started


class RepositoryPersistence:
    """Writes and loads one aggregate type through the repositories of eventfold's unit of work.

    Event-sourced and state-stored types alike: the unit of work's persistence model says
    how the type is kept. ``persist`` only tracks the aggregate; it is written when the
    unit of work commits, with its events and their outbox rows, at the version it was
    loaded at (a stale copy fails with :class:`~eventfold.ConcurrencyError`).
    """

    def __init__(self, entity_type: type[Entity[Any]]) -> None:
        self._type = entity_type

    async def persist(self, entity: Entity[Any], uow: EventfoldUnitOfWork) -> None:
        """Track ``entity`` in ``uow`` unless it already is."""
        if uow.tracked(type(entity), entity.id) is entity:
            return
        repository = uow.repository(type(entity))
        if isinstance(repository, EventSourcedRepository):
            repository.add(entity)
        elif isinstance(repository, StateStoredRepository):
            _attach_state_stored(repository, entity)

    async def retrieve(self, ids: Sequence[Any], uow: EventfoldUnitOfWork) -> list[Any]:
        """The aggregates stored among ``ids``, in the order of ``ids``."""
        repository = uow.repository(self._type)
        found = [await repository.get(key) for key in ids]
        return [entity for entity in found if entity is not None]


def _attach_state_stored(repository: StateStoredRepository[Any], entity: Entity[Any]) -> None:
    # An aggregate counts its pending events in `version`; the stored one is what to expect.
    stored = entity.persisted_version if isinstance(entity, AggregateRoot) else entity.version
    if stored == 0:
        repository.add(entity)
        return
    # A copy loaded elsewhere (another unit of work, the cache): update it at the version
    # it was loaded at, so a concurrent change is detected rather than overwritten.
    repository.attach(entity, stored)


def register_aggregate(
    registry: PersistenceRegistry[EventfoldUnitOfWork],
    entity_type: type[Entity[Any]],
    *,
    source: str = DEFAULT_SOURCE,
    priority: int = 0,
) -> None:
    """Register the repository-backed write and load handlers for ``entity_type``."""
    handler = RepositoryPersistence(entity_type)
    registry.register_operation(entity_type, handler, source=source, priority=priority)
    registry.register_retrieval(entity_type, handler, source=source, priority=priority)


def unit_of_work_factories(
    sources: DataSources,
) -> dict[str, UnitOfWorkFactory[EventfoldUnitOfWork]]:
    """One unit-of-work factory per data source, by name, for :class:`PersistenceDispatcher`."""
    return {source.name: source.unit_of_work for source in sources}
