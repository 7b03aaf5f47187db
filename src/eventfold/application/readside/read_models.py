"""Read models kept as JSON documents: written by projections, queried by specification."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from eventfold.application.readside.projections import ProjectionContext
from eventfold.application.readside.queries import QueryOptions, SearchResult
from eventfold.domain.errors import ConfigurationError
from eventfold.domain.specification import FieldSet
from eventfold.ports.records import DocumentRecord
from eventfold.ports.storage import DocumentStore
from eventfold.serialization import JsonCodec

__all__ = [
    "DocumentBuffer",
    "DocumentReadModel",
    "DocumentSearch",
]

T = TypeVar("T")


class DocumentSearch(Protocol):
    """A session that can search and clear a collection of documents."""

    def search_documents(
        self, collection: str, options: QueryOptions, fields: FieldSet
    ) -> SearchResult[DocumentRecord]:
        """The documents of ``collection`` that ``options`` select, page by page."""
        ...

    async def clear_documents(self, collection: str) -> int:
        """Delete every document of ``collection``; return how many."""
        ...

    async def move_documents(self, source: str, target: str) -> int:
        """Replace every document of ``target`` with those of ``source``; return how many."""
        ...


class DocumentReadModel(Generic[T]):
    """A read model of ``model`` instances (dataclasses or pydantic models) in one collection.

    Projections write it through :meth:`documents` (buffered per batch); queries read it
    with :meth:`get` and :meth:`search`, which validate field names and values against the
    model's declared fields before any database sees them.
    """

    def __init__(self, collection: str, model: type[T], *, key: str | Callable[[T], str]) -> None:
        self.collection = collection
        self.model = model
        self.fields = FieldSet.from_model(model)
        self._codec = JsonCodec(model, f"{collection} document")
        self._key = key if callable(key) else _attribute(key)

    def key_of(self, item: T) -> str:
        """The document key of ``item``."""
        return self._key(item)

    def encode(self, item: T) -> str:
        """``item`` as JSON text."""
        return self._codec.encode(item)

    def decode(self, data: str | Any) -> T:
        """The model instance stored as ``data`` (JSON text or already-parsed JSON)."""
        if isinstance(data, str | bytes):
            return self._codec.decode(data)  # type: ignore[no-any-return]
        return self._codec.decode_python(data)  # type: ignore[no-any-return]

    def documents(self, context: ProjectionContext) -> DocumentBuffer[T]:
        """The batch's buffer of this collection's documents (its shadow's, in a rebuild)."""
        buffer = context.buffers.get(self)
        if buffer is None:
            target: DocumentReadModel[T] = context.targets.get(self, self)
            written = context.written.setdefault(target, {}) if target in context.cleared else None
            buffer = DocumentBuffer(target, context.session, written=written)
            context.buffers[self] = buffer
            context.on_flush(buffer.flush)
        return buffer

    def shadow(self) -> DocumentReadModel[T]:
        """The same read model in ``<collection>__next``, where a rebuild writes."""
        return DocumentReadModel(f"{self.collection}__next", self.model, key=self._key)

    async def prepare_shadow(self, context: ProjectionContext) -> None:
        """Empty the shadow collection."""
        await _searchable(context.session).clear_documents(f"{self.collection}__next")

    async def promote_shadow(self, context: ProjectionContext, *, keep_old: bool) -> None:
        """Put the shadow's documents in place of the live ones, in one transaction."""
        documents = _searchable(context.session)
        if keep_old:
            await documents.move_documents(self.collection, f"{self.collection}__old")
        await documents.move_documents(f"{self.collection}__next", self.collection)

    async def clear(self, context: ProjectionContext) -> None:
        """Delete every document of the collection (a rebuild starts empty)."""
        await _searchable(context.session).clear_documents(self.collection)

    async def get(self, session: DocumentStore, key: str) -> T | None:
        """The document with this key, or None."""
        record = await session.load_document(self.collection, key)
        return None if record is None else self.decode(record.data)

    def search(self, session: object, options: QueryOptions) -> SearchResult[T]:
        """The documents ``options`` select, as model instances."""
        options.validate(self.fields)
        records = _searchable(session).search_documents(self.collection, options, self.fields)
        return records.map(lambda record: self.decode(record.data))


class DocumentBuffer(Generic[T]):
    """Documents of one collection read and changed during one projection batch."""

    def __init__(
        self,
        model: DocumentReadModel[T],
        session: DocumentStore,
        *,
        written: dict[str, int] | None = None,
    ) -> None:
        self._model = model
        self._session = session
        # For a collection known to have started empty: the versions of the documents
        # written since (by this rebuild's batches); any other key is absent, unqueried.
        self._written = written
        self._items: dict[str, T | None] = {}
        self._versions: dict[str, int] = {}
        self._dirty: set[str] = set()

    async def get(self, key: str) -> T | None:
        """The document (as changed so far in the batch), or None."""
        if key not in self._items:
            record = None
            if self._written is None or key in self._written:
                record = await self._session.load_document(self._model.collection, key)
            self._versions[key] = 0 if record is None else record.version
            self._items[key] = None if record is None else self._model.decode(record.data)
        return self._items[key]

    async def put(self, item: T) -> None:
        """Insert or replace a document."""
        key = self._model.key_of(item)
        await self.get(key)  # learn the stored version this write builds on
        self._items[key] = item
        self._dirty.add(key)

    async def delete(self, key: str) -> None:
        """Delete a document (nothing happens if it does not exist)."""
        await self.get(key)
        self._items[key] = None
        self._dirty.add(key)

    async def flush(self) -> None:
        """Write the batch's changes with optimistic version checks."""
        collection = self._model.collection
        for key in sorted(self._dirty):
            item, version = self._items[key], self._versions[key]
            if item is not None:
                data = self._model.encode(item)
                self._versions[key] = await self._session.save_document(
                    collection, key, data, expected_version=version
                )
            elif version:
                await self._session.delete_document(collection, key, expected_version=version)
                self._versions[key] = 0
            if self._written is not None:
                if self._versions[key]:
                    self._written[key] = self._versions[key]
                else:
                    self._written.pop(key, None)
        self._dirty.clear()


def _searchable(session: object) -> DocumentSearch:
    if not hasattr(session, "search_documents"):
        msg = f"{type(session).__name__} cannot search documents"
        raise ConfigurationError(msg)
    return session  # type: ignore[return-value]


def _attribute(name: str) -> Callable[[Any], str]:
    def read(item: Any) -> str:
        value = item[name] if isinstance(item, dict) else getattr(item, name)
        return value if isinstance(value, str) else json.dumps(value)

    return read
