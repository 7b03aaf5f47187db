"""Read models in a user's SQLAlchemy table, written in batches by projections."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

from sqlalchemy import Column, MetaData, Table, delete, insert, select, tuple_
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from eventfold.application.readside.projections import Projection, ProjectionContext
from eventfold.domain.errors import ConfigurationError
from eventfold.ports.storage import SqlExecutor, Storage

__all__ = ["RowBuffer", "TableReadModel", "create_read_models"]

Key = tuple[Any, ...]
T = TypeVar("T")

# PostgreSQL binds at most 32,767 parameters in one statement and SQLite 32,766: a batch
# is written in as many statements as keep each one below that.
_MAX_PARAMETERS = 30_000
# Rows a rebuild keeps of what it wrote, so that the next batches need not read them back.
_RECENT_ROWS = 50_000


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    step = max(size, 1)
    for start in range(0, len(items), step):
        yield items[start : start + step]


class _Written:
    """What one rebuild wrote to a table that started empty: every key, the latest rows.

    Only the rebuild writes to that table (its shadow), so a row it wrote is the row
    stored: a later batch reads it from here instead of querying (up to ``_RECENT_ROWS``).
    """

    __slots__ = ("keys", "rows")

    def __init__(self) -> None:
        self.keys: set[Key] = set()
        self.rows: dict[Key, dict[str, Any]] = {}


def _by_keys(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The rows grouped by the columns they name, each group in its first row's order."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    yield from groups.values()


class TableReadModel:
    """A projection's output table; rows are keyed by the table's primary key.

    Handlers read and write rows through :meth:`rows`; the changes of a batch are written
    with one DELETE and one multi-row INSERT when the batch ends, which keeps rebuilds fast.
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self.key_columns = list(table.primary_key.columns)
        if not self.key_columns:
            msg = f"table {table.name!r} needs a primary key to serve as a read model"
            raise ValueError(msg)

    def rows(self, context: ProjectionContext) -> RowBuffer:
        """The batch's buffer of this table's rows (of its shadow, during a rebuild)."""
        buffer = context.buffers.get(self)
        if buffer is None:
            target: TableReadModel = context.targets.get(self, self)
            buffer = RowBuffer(target, context, known_empty=target in context.cleared)
            context.buffers[self] = buffer
            context.on_flush(buffer.flush)
        return buffer

    def shadow(self) -> TableReadModel:
        """The same table under ``<name>__next``, where a rebuild writes (no indexes)."""
        table = self.table
        columns = [
            Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in table.columns
        ]
        return TableReadModel(
            Table(f"{table.name}__next", MetaData(), *columns, schema=table.schema)
        )

    async def prepare_shadow(self, context: ProjectionContext) -> None:
        """Create the shadow table anew, empty."""
        shadow = self.shadow().table
        await context.execute(DropTable(shadow, if_exists=True))
        await context.execute(CreateTable(shadow))

    async def promote_shadow(self, context: ProjectionContext, *, keep_old: bool) -> None:
        """Replace the live rows with the shadow's, in the context's transaction.

        The rows are copied into the live table rather than the tables renamed: the
        table keeps its identity (indexes, constraints, grants, views that use it), at
        the cost of one copy of the read model inside the swap's transaction.
        """
        live, shadow = self.table, self.shadow().table
        if keep_old:
            old_table = shadow.to_metadata(MetaData(), name=f"{live.name}__old")
            await context.execute(DropTable(old_table, if_exists=True))
            await context.execute(CreateTable(old_table))
            await context.execute(_copy(live, old_table))
        await context.execute(delete(live))
        await context.execute(_copy(shadow, live))
        await context.execute(DropTable(shadow))

    async def create(self, session: SqlExecutor) -> None:
        """Create the table and its indexes if they do not exist (idempotent)."""
        await session.execute_sql(CreateTable(self.table, if_not_exists=True))
        for index in sorted(self.table.indexes, key=lambda index: str(index.name)):
            await session.execute_sql(CreateIndex(index, if_not_exists=True))

    async def clear(self, context: ProjectionContext) -> None:
        """Delete every row (a rebuild starts from an empty table)."""
        await context.execute(delete(self.table))

    def key_of(self, row: Mapping[str, Any]) -> Key:
        """The primary key of ``row``."""
        return tuple(row[column.name] for column in self.key_columns)


def _copy(source: Table, target: Table) -> Any:
    names = [column.name for column in source.columns]
    return insert(target).from_select(names, select(*(source.c[name] for name in names)))


async def create_read_models(storage: Storage, projections: Iterable[Projection]) -> None:
    """Create the tables of the projections' table read models if missing, in one transaction.

    Idempotent, like :func:`~eventfold.create_tables`; document read models need no table
    of their own. For migrations, fold the tables into your own Alembic ``MetaData`` instead.
    """
    tables = [
        read_model
        for projection in projections
        for read_model in projection.read_models
        if isinstance(read_model, TableReadModel)
    ]
    if not tables:
        return
    async with storage.transaction() as session:
        if not hasattr(session, "execute_sql"):
            msg = f"{storage.name} runs no SQL: table read models need a SQL backend"
            raise ConfigurationError(msg)
        for read_model in tables:
            await read_model.create(cast("SqlExecutor", session))


class RowBuffer:
    """Rows of one table read and changed during one batch."""

    def __init__(
        self, model: TableReadModel, context: ProjectionContext, *, known_empty: bool
    ) -> None:
        self._model = model
        self._context = context
        self._known_empty = known_empty
        self._rows: dict[Key, dict[str, Any] | None] = {}
        self._dirty: set[Key] = set()
        # What this rebuild's batches wrote to the table so far; while the table is known
        # to have started empty, every other key is absent without a query.
        written = context.written.setdefault(model, _Written()) if known_empty else _Written()
        self._stored = written.keys
        self._recent = written.rows

    async def get(self, *key: Any) -> dict[str, Any] | None:
        """The row with this primary key (as changed so far in the batch), or None."""
        if key not in self._rows:
            if self._known_empty and key not in self._stored:
                self._rows[key] = None
            elif (recent := self._recent.get(key)) is not None:
                self._rows[key] = recent
            else:
                self._rows[key] = await self._load(key)
        row = self._rows[key]
        return dict(row) if row is not None else None

    def put(self, row: Mapping[str, Any]) -> None:
        """Insert or replace a whole row."""
        key = self._model.key_of(row)
        self._rows[key] = dict(row)
        self._dirty.add(key)

    def delete(self, *key: Any) -> None:
        """Delete the row with this primary key."""
        self._rows[key] = None
        self._dirty.add(key)

    async def flush(self) -> None:
        """Write the batch's changes: one DELETE of every touched key, one INSERT of the rest."""
        if not self._dirty:
            return
        keys = list(self._dirty)
        columns = self._model.key_columns
        table = self._model.table
        stale = keys if not self._known_empty else [k for k in keys if k in self._stored]
        for stale_keys in _chunks(stale, _MAX_PARAMETERS // len(columns)):
            if len(columns) == 1:
                condition = columns[0].in_([key[0] for key in stale_keys])
            else:
                condition = tuple_(*columns).in_(stale_keys)
            await self._context.execute(delete(table).where(condition))
        live = [row for key in keys if (row := self._rows[key]) is not None]
        execute_many = getattr(self._context.session, "execute_sql_many", None)
        if execute_many is not None:
            # One statement compiled once and run for every row (executemany): compiling a
            # multi-row VALUES afresh for each batch cost more than writing it.
            for rows in _by_keys(live):
                await execute_many(insert(table), rows)
        else:
            for rows in _chunks(live, _MAX_PARAMETERS // len(table.columns)):
                await self._context.execute(insert(table).values(rows))
        if self._known_empty:
            self._stored.update(self._model.key_of(row) for row in live)
            self._stored.difference_update(k for k in keys if self._rows[k] is None)
            recent = self._recent
            for key in keys:
                recent.pop(key, None)
                if (row := self._rows[key]) is not None:
                    recent[key] = row
            while len(recent) > _RECENT_ROWS:  # the oldest go first: looked up if needed
                del recent[next(iter(recent))]
        self._dirty.clear()

    async def _load(self, key: Key) -> dict[str, Any] | None:
        conditions = [
            column == value for column, value in zip(self._model.key_columns, key, strict=True)
        ]
        rows = await self._context.execute(select(self._model.table).where(*conditions))
        return dict(rows[0]) if rows else None
