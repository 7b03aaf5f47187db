"""A read-through cache in front of any persistence dispatcher, invalidated by writes.

What is cached
    ``fetch_domain`` and ``fetch`` by ids, one entry per (type, id), as JSON text with a
    time to live. Aggregates (:class:`~eventfold.AggregateRoot` subclasses, event-sourced or
    state-stored alike) are cached as their state plus version and come back rehydrated,
    a fresh object per read; read models are cached whole through a pydantic TypeAdapter
    and keyed by their ``id`` attribute. A :class:`CacheCodec` given per type overrides
    either (``None`` turns caching off for the type). Other domain types, and a type
    pydantic cannot encode (warned once), are served uncached. Searches
    (``fetch`` with :class:`~eventfold.application.readside.queries.QueryOptions`) are never cached.

What bypasses the cache
    A load that revealed anyone's personal data through a
    :class:`~eventfold.ShreddingStorage` is served but not cached, so forgetting a person
    leaves no copy of their data here. Reads given a caller's unit of work: only the
    transaction knows what it sees (its own uncommitted writes, and under snapshot
    isolation a snapshot older than the cache), so such a read goes to the inner
    dispatcher and fills nothing.

Freshness guarantee
    Every (type, id) has a generation counter in the cache; an entry is stored with the
    generation read *before* the database was read, and is served only while that is
    still the current generation. A write commits first, then increments the generation
    and deletes the entries. So once ``apply`` has returned, no reader sharing the cache
    is served the value from before the write - including a reader that loaded the old
    value just before the commit and stores it just after the invalidation: its entry
    carries the old generation. Between the commit and the invalidation a concurrent
    reader may still see the previous value, as it would without a cache.

    With a caller's unit of work the commit comes later. If the unit offers
    ``after_commit(callback)`` (:class:`SupportsAfterCommit`) the invalidation runs
    there. Otherwise ``apply`` invalidates at once and leases the id for ``lease``
    seconds: while leased, the id is neither served from nor stored in the cache, so the
    guarantee holds for transactions that end within the lease.

    The generation keys live longer than entries (``ttl * 2 + 60`` seconds), so the
    guarantee assumes no single read takes longer than that margin and that the cache
    server does not evict a generation key ahead of its entries under memory pressure.

When the cache is unreachable
    Reads fall back to the inner dispatcher and a warning is logged (at most one per
    ``warn_interval``); the cache is not retried for ``retry_after`` seconds. A failed
    invalidation is remembered; before the cache serves anything again, every remembered
    invalidation is replayed, and until that succeeds nothing is read from the cache. In
    this process a write is therefore never followed by a read of the value it replaced.
    Other processes sharing the cache learn of that write once the replay succeeds, or
    when the entry expires: at most ``ttl`` of staleness, only across an outage.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar, cast, overload

from pydantic.errors import PydanticSchemaGenerationError

from eventfold.application.persistence.dispatcher import SupportsPersistence, UnitOfWork
from eventfold.application.persistence.model import shape_of
from eventfold.application.persistence.personal_data import watching_personal_data
from eventfold.application.readside.queries import QueryOptions, SearchResult
from eventfold.domain.aggregate import AggregateRoot
from eventfold.errors import ConfigurationError, PersistenceError, SerializationError
from eventfold.ports.cache import Cache
from eventfold.serialization import JsonCodec

__all__ = [
    "AggregateCacheCodec",
    "CacheCodec",
    "CachingPersistenceDispatcher",
    "ReadModelCacheCodec",
    "SupportsAfterCommit",
]

logger = logging.getLogger("eventfold.cache")

T = TypeVar("T")
U = TypeVar("U", bound=UnitOfWork)

Clock = Callable[[], float]


class CacheCodec(Protocol[T]):
    """How one type is keyed and turned into cache text and back."""

    def key_of(self, value: T) -> object:
        """The id a value is cached under (the id callers fetch it by)."""
        ...

    def encode(self, value: T) -> str:
        """Text to cache."""
        ...

    def decode(self, data: str, key: object) -> T:
        """The value ``encode`` produced ``data`` from; ``key`` is the id it was fetched by."""
        ...


class SupportsAfterCommit(Protocol):
    """A unit of work that runs callbacks once it has committed."""

    def after_commit(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``callback`` after a successful commit (never after a rollback)."""
        ...


class AggregateCacheCodec(Generic[T]):
    """Caches an aggregate as ``{"version", "state"}`` and rehydrates it without events."""

    def __init__(self, aggregate_type: type[AggregateRoot[Any, Any]]) -> None:
        self._type = aggregate_type
        self._state = JsonCodec(aggregate_type.state_type())
        # An entry cached by a process whose state had other fields is a miss, not data.
        self._shape = shape_of(aggregate_type.state_type())

    def key_of(self, value: T) -> object:
        """The aggregate's id."""
        return getattr(value, "id", None)

    def encode(self, value: T) -> str:
        """State and stored version as JSON."""
        if not isinstance(value, AggregateRoot):
            msg = f"cannot cache {type(value).__qualname__} as {self._type.__qualname__}"
            raise ConfigurationError(msg)
        state = self._state.to_jsonable(value.state)
        return json.dumps(
            {"version": value.persisted_version, "shape": self._shape, "state": state}
        )

    def decode(self, data: str, key: object) -> T:
        """A fresh aggregate at the cached version, with no pending events."""
        payload = json.loads(data)
        if payload.get("shape") != self._shape:
            msg = f"cached {self._type.__qualname__} has another state shape"
            raise ValueError(msg)
        state = self._state.decode_python(payload["state"])
        aggregate = self._type.rehydrate(key, (), state=state, version=payload["version"])
        return cast("T", aggregate)


class ReadModelCacheCodec(Generic[T]):
    """Caches a read model whole through a pydantic TypeAdapter."""

    def __init__(self, result_type: type[T], key: Callable[[T], object] | None = None) -> None:
        self._codec = JsonCodec(result_type)
        self._key = key
        self._name = result_type.__qualname__

    def key_of(self, value: T) -> object:
        """``key(value)`` when given, else ``value.id``."""
        if self._key is not None:
            return self._key(value)
        try:
            return value.id  # type: ignore[attr-defined]
        except AttributeError:
            msg = f"{self._name} has no 'id': give the caching dispatcher a codec with a key"
            raise ConfigurationError(msg) from None

    def encode(self, value: T) -> str:
        """JSON text."""
        return self._codec.encode(value)

    def decode(self, data: str, key: object) -> T:
        """The read model."""
        value: T = self._codec.decode(data)
        return value


class CachingPersistenceDispatcher(Generic[U]):
    """Serves loads by id from a :class:`~eventfold.ports.cache.Cache`, writes through."""

    def __init__(
        self,
        inner: SupportsPersistence[U],
        cache: Cache,
        *,
        ttl: float = 300.0,
        namespace: str = "persistence",
        codecs: Mapping[type, CacheCodec[Any] | None] | None = None,
        lease: float = 30.0,
        retry_after: float = 1.0,
        warn_interval: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._inner = inner
        self._cache = cache
        self._ttl = ttl
        self._generation_ttl = ttl * 2 + 60
        self._lease = lease
        self._namespace = namespace
        self._codecs: dict[tuple[str, type], CacheCodec[Any] | None] = {}
        for cls, codec in (codecs or {}).items():
            self._codecs["d", cls] = self._codecs["q", cls] = codec
        self._health = _CacheHealth(retry_after, warn_interval, clock)
        # base -> its latest remembered invalidation (a new object at each write, so a
        # replay forgets only the one it carried out, never a write's that came meanwhile)
        self._pending: dict[str, _Pending] = {}

    @property
    def pending_invalidations(self) -> int:
        """How many written entities still wait for their cache entries to be invalidated."""
        return len(self._pending)

    async def apply(self, entity: object, uow: U | None = None) -> None:
        """Persist through the inner dispatcher, then invalidate the entity's entries."""
        bases = [self._base(type(entity), _entity_id(entity))]
        if uow is None:
            try:
                await self._inner.apply(entity)
            finally:
                # Also after a failure: a commit whose outcome is unknown may have landed.
                await self._invalidate(bases)
            return
        await self._inner.apply(entity, uow)
        register = _after_commit_of(uow)
        if register is None:
            # The commit happens later, out of sight: keep the entries out of use until the
            # lease runs out, by which time the caller's transaction has ended.
            await self._invalidate(bases, lease=True)
            return

        async def invalidate() -> None:
            await self._invalidate(bases)

        register(invalidate)

    async def fetch_domain(
        self, entity_type: type[T], ids: Sequence[Any], uow: U | None = None
    ) -> list[T]:
        """Aggregates by id: from the cache where fresh, else loaded and cached."""
        codec = self._codec("d", entity_type)
        if uow is not None or codec is None:
            return await self._inner.fetch_domain(entity_type, ids, uow)

        async def load(missing: list[Any]) -> list[T]:
            return await self._inner.fetch_domain(entity_type, missing)

        return await self._read_through("d", entity_type, ids, codec, load)

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
        """Read models by ids through the cache; searches always go to the inner dispatcher."""
        if isinstance(criteria, QueryOptions):
            return await self._inner.fetch(result_type, criteria, uow)
        codec = self._codec("q", result_type)
        if uow is not None or codec is None:
            return await self._inner.fetch(result_type, criteria, uow)

        async def load(missing: list[Any]) -> list[T]:
            return await self._inner.fetch(result_type, missing)

        return await self._read_through("q", result_type, criteria, codec, load)

    async def invalidate(self, entity_type: type, ids: Sequence[Any]) -> None:
        """Drop cached copies of ``ids`` (a projection calls this after updating read models)."""
        await self._invalidate([self._base(entity_type, key) for key in ids])

    async def _read_through(
        self,
        kind: str,
        entity_type: type[T],
        ids: Sequence[Any],
        codec: CacheCodec[T],
        load: Callable[[list[Any]], Awaitable[list[T]]],
    ) -> list[T]:
        wanted = _unique(ids)
        if not wanted:
            return []
        if not await self._cache_usable():
            return await load(list(wanted.values()))
        bases = [self._base(entity_type, key) for key in wanted]
        fetched = await self._lookup(kind, bases)
        if fetched is None:
            return await load(list(wanted.values()))
        # A leased id is neither served nor filled: a write to it may be about to commit.
        fillable = {key: g for key, g in zip(wanted, fetched[0], strict=True) if g is not None}
        hits = self._hits(wanted, fetched[1], fillable, codec)
        missing = [value for key, value in wanted.items() if key not in hits]
        with watching_personal_data() as revealed:
            loaded = await load(missing) if missing else []
        # A person's data decrypted by a ShreddingStorage is never copied to the cache,
        # where forgetting them could not reach it: such a load is served uncached.
        if not revealed():
            await self._fill(kind, entity_type, loaded, fillable, codec)
        return _in_order(wanted, hits, loaded, codec)

    async def _lookup(
        self, kind: str, bases: list[str]
    ) -> tuple[list[int | None], list[str | None]] | None:
        """Per base, its generation (None while leased) and its entry, in one round trip."""
        keys = [_generation_key(b) for b in bases]
        keys += [_entry_key(kind, b) for b in bases] + [_lease_key(b) for b in bases]
        try:
            values = await self._cache.get_many(keys)
        except PersistenceError as exc:
            self._health.failed(exc)
            return None
        count = len(bases)
        leases = values[2 * count :]
        generations = [
            None if lease is not None else _as_generation(value)
            for value, lease in zip(values[:count], leases, strict=True)
        ]
        return generations, values[count : 2 * count]

    def _hits(
        self,
        wanted: dict[str, Any],
        entries: list[str | None],
        generations: dict[str, int],
        codec: CacheCodec[T],
    ) -> dict[str, T]:
        hits: dict[str, T] = {}
        for (key, requested), entry in zip(wanted.items(), entries, strict=True):
            generation = generations.get(key)
            if generation is None:
                continue
            value = _decode_entry(entry, generation, requested, codec)
            if value is not None:
                hits[key] = value[0]
        return hits

    async def _fill(
        self,
        kind: str,
        entity_type: type,
        loaded: list[T],
        generations: dict[str, int],
        codec: CacheCodec[T],
    ) -> None:
        for value in loaded:
            key = str(codec.key_of(value))
            generation = generations.get(key)
            if generation is None:
                continue  # the inner dispatcher returned something not asked for: leave it
            try:
                entry = f"{generation}|{codec.encode(value)}"
            except (SerializationError, ValueError, TypeError) as exc:
                # The caller still gets the value; it just is not cached.
                logger.warning("cannot cache %s %s: %s", entity_type.__qualname__, key, exc)
                continue
            try:
                await self._cache.set(
                    _entry_key(kind, self._base(entity_type, key)), entry, ttl=self._ttl
                )
            except PersistenceError as exc:
                self._health.failed(exc)
                return

    async def _cache_usable(self) -> bool:
        """Whether the cache is up and every remembered invalidation has been replayed."""
        if not self._health.may_try():
            return False
        if self._pending:
            return await self._invalidate(list(self._pending))
        return True

    async def _invalidate(self, bases: list[str], *, lease: bool = False) -> bool:
        """Bump generations and delete entries; remember the bases if the cache is down."""
        for base in bases:
            earlier = self._pending.get(base)
            self._pending[base] = _Pending(lease or (earlier is not None and earlier.lease))
        if not self._health.may_try():
            return False
        try:
            for base, pending in sorted(self._pending.items(), key=lambda item: item[0]):
                if pending.lease:
                    await self._cache.set(_lease_key(base), "1", ttl=self._lease)
                await self._cache.incr(_generation_key(base), ttl=self._generation_ttl)
                await self._cache.delete_many([_entry_key("d", base), _entry_key("q", base)])
                # Forget only this invalidation: a write that committed while it ran
                # registered its own, which must still be carried out (by its writer or
                # a later replay), else a reader that loaded before that write could
                # cache the old value under the generation bumped here. Another task
                # replaying the same one may have finished it first.
                if self._pending.get(base) is pending:
                    del self._pending[base]
        except PersistenceError as exc:
            self._health.failed(exc)
            return False
        self._health.recovered()
        return True

    def _codec(self, kind: str, cls: type[T]) -> CacheCodec[T] | None:
        if (kind, cls) not in self._codecs:
            self._codecs[kind, cls] = _default_codec(kind, cls)
        return self._codecs[kind, cls]

    def _base(self, entity_type: type, key: object) -> str:
        return f"{self._namespace}:{entity_type.__module__}.{entity_type.__qualname__}:{key}"


class _Pending:
    """One remembered invalidation of an entity, and whether it also needs a lease."""

    __slots__ = ("lease",)

    def __init__(self, lease: bool) -> None:
        self.lease = lease


class _CacheHealth:
    """Remembers an outage: when to try again, and when a warning was last logged.

    A two-state breaker (closed, or open until a time) written here rather than taken
    from a library: it only guards reads that fall back to the database, so there is no
    half-open trial to manage. Stressed by the Redis outage tests in
    ``tests/integration/test_redis_cache.py``.
    """

    def __init__(self, retry_after: float, warn_interval: float, clock: Clock) -> None:
        self._retry_after = retry_after
        self._warn_interval = warn_interval
        self._clock = clock
        self._down_until: float | None = None
        self._warned_at: float | None = None

    def may_try(self) -> bool:
        return self._down_until is None or self._clock() >= self._down_until

    def failed(self, exc: Exception) -> None:
        now = self._clock()
        self._down_until = now + self._retry_after
        if self._warned_at is None or now - self._warned_at >= self._warn_interval:
            self._warned_at = now
            logger.warning("cache unavailable, reading from the database instead: %s", exc)

    def recovered(self) -> None:
        if self._down_until is not None:
            logger.info("cache reachable again")
        self._down_until = None


def _default_codec(kind: str, cls: type) -> CacheCodec[Any] | None:
    try:
        if isinstance(cls, type) and issubclass(cls, AggregateRoot):
            return AggregateCacheCodec(cls)
        if kind == "q":
            return ReadModelCacheCodec(cls)
    except (PydanticSchemaGenerationError, ConfigurationError) as exc:
        logger.warning("%s is served uncached: %s", cls.__qualname__, exc)
    return None


def _decode_entry(
    entry: str | None, generation: int, requested: object, codec: CacheCodec[T]
) -> tuple[T] | None:
    if entry is None:
        return None
    tag, _, data = entry.partition("|")
    if tag != str(generation):
        return None
    try:
        return (codec.decode(data, requested),)
    except (SerializationError, ValueError, KeyError) as exc:
        # An entry written by an older shape of the type: a miss, reloaded and rewritten.
        logger.debug("ignoring an undecodable cache entry: %s", exc)
        return None


def _in_order(
    wanted: dict[str, Any], hits: dict[str, T], loaded: list[T], codec: CacheCodec[T]
) -> list[T]:
    found = dict(hits)
    extra: list[T] = []
    for value in loaded:
        key = str(codec.key_of(value))
        if key in wanted:
            found.setdefault(key, value)
        else:
            extra.append(value)
    return [found[key] for key in wanted if key in found] + extra


def _unique(ids: Sequence[Any]) -> dict[str, Any]:
    wanted: dict[str, Any] = {}
    for key in ids:
        wanted.setdefault(str(key), key)
    return wanted


def _as_generation(value: str | None) -> int:
    try:
        return 0 if value is None else int(value)
    except ValueError:
        return -1  # not a counter: no entry can match it


def _generation_key(base: str) -> str:
    return f"{base}:gen"


def _lease_key(base: str) -> str:
    return f"{base}:lease"


def _entry_key(kind: str, base: str) -> str:
    return f"{base}:{kind}"


def _entity_id(entity: object) -> object:
    try:
        return entity.id  # type: ignore[attr-defined]
    except AttributeError:
        msg = f"cannot cache {type(entity).__qualname__}: it has no 'id'"
        raise ConfigurationError(msg) from None


def _after_commit_of(uow: object) -> Callable[[Callable[[], Awaitable[None]]], None] | None:
    register = getattr(uow, "after_commit", None)
    return register if callable(register) else None
