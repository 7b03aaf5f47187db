"""Query handlers that serve document read models through the persistence dispatcher."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from eventfold.application.persistence.dispatcher import DEFAULT_SOURCE, PersistenceRegistry
from eventfold.application.persistence.unit_of_work import UnitOfWork
from eventfold.application.readside.queries import QueryOptions, SearchResult
from eventfold.application.readside.read_models import DocumentReadModel

__all__ = ["DocumentReadModelPersistence", "register_read_model"]

T = TypeVar("T")


class DocumentReadModelPersistence(Generic[T]):
    """Query handlers for a document read model: by ids, and by specification."""

    def __init__(self, read_model: DocumentReadModel[T]) -> None:
        self._model = read_model

    async def fetch(self, ids: Sequence[Any], uow: UnitOfWork) -> list[T]:
        """The read models stored under ``ids``, in the order of ``ids``."""
        session = await uow.session()
        keys = [str(key) for key in ids]
        records = await session.load_documents(self._model.collection, keys)
        by_key = {record.key: record for record in records}
        return [self._model.decode(by_key[key].data) for key in keys if key in by_key]

    async def search(self, options: QueryOptions, uow: UnitOfWork) -> SearchResult[T]:
        """The page ``options`` select, fetched now (``stream()`` needs ``uow`` kept open)."""
        result = self._model.search(await uow.session(), options)
        await result.page()
        return result


def register_read_model(
    registry: PersistenceRegistry[UnitOfWork],
    read_model: DocumentReadModel[T],
    *,
    source: str = DEFAULT_SOURCE,
    priority: int = 0,
) -> None:
    """Register the query-by-ids and query-by-specification handlers of ``read_model``."""
    handler = DocumentReadModelPersistence(read_model)
    registry.register_query(read_model.model, handler, source=source, priority=priority)
    registry.register_query_spec(read_model.model, handler, source=source, priority=priority)
