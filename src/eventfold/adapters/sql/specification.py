"""Specifications and query options as SQLAlchemy Core, with the same results as in memory.

Two kinds of source:

- :func:`table_query`: a user's ``Table``; fields are column names.
- :func:`document_query`: eventfold's ``eventfold_documents`` table; fields are dotted
  paths into the JSON ``data`` column, read as their declared types (``int`` as a
  64-bit integer, ``float`` as a double, ``bool``, ``str``). ``Decimal`` fields may be
  stored as JSON text (as eventfold's serialiser writes them) or numbers, and compare
  exactly on both dialects (``numeric`` on PostgreSQL; on SQLite, which has no decimal
  type, through an order-preserving text key computed by a function eventfold
  registers). ``datetime`` fields are ISO 8601 text, with or without a UTC offset (a
  naive one is UTC), and compare by instant; ``date`` fields are ISO 8601 dates.

Every field is checked against a :class:`FieldSet` before any SQL is built and every
value is a bound parameter. To agree with Python on both dialects, strings compare by
code point (``COLLATE "C"`` on PostgreSQL, SQLite's default binary collation), ``like``
is case-sensitive (``GLOB`` on SQLite, whose ``LIKE`` ignores ASCII case), conditions
are two-valued (a null field fails positive conditions, never yields SQL ``NULL``), and
``NULL`` sorts first ascending and last descending.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, get_origin

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    Numeric,
    String,
    Table,
    and_,
    cast,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement, Select
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from eventfold.adapters.sql.schema import documents
from eventfold.adapters.sql.sortable import DECIMAL_KEY, MOMENT_KEY, decimal_key, moment_key
from eventfold.application.readside.queries import Page, QueryOptions, SearchResult, decode_cursor
from eventfold.application.readside.queries import encode_cursor as _encode_cursor
from eventfold.domain.specification import (
    AllOf,
    AnyOf,
    Condition,
    FieldSet,
    Not,
    Operator,
    Specification,
    resolve_field,
)
from eventfold.domain.storable import utc_moment
from eventfold.errors import ConfigurationError, QueryError, UnknownFieldError
from eventfold.ports.storage import SqlExecutor, StorageSession

__all__ = [
    "SqlQuery",
    "document_query",
    "fetch_page",
    "search_documents",
    "search_table",
    "table_query",
]

Row = dict[str, Any]
Clause = ColumnElement[bool]


# -- dialect-specific pieces ------------------------------------------------------------


class _Bytewise(FunctionElement[str]):
    """A text expression that compares and sorts by code point on every dialect."""

    type = String()
    name = "bytewise"
    inherit_cache = True


@compiles(_Bytewise)
def _bytewise(element: _Bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_Bytewise, "postgresql")
def _bytewise_postgresql(element: _Bytewise, compiler: SQLCompiler, **kw: Any) -> str:
    # The database's collation may be a locale's (case-folding, accent-aware); "C" is not.
    return f'({compiler.process(element.clauses, **kw)}) COLLATE "C"'


class _Like(FunctionElement[bool]):
    """``text LIKE pattern`` with ``\\`` as escape, case-sensitive on every dialect."""

    type = Boolean()
    name = "case_sensitive_like"
    inherit_cache = True


@compiles(_Like)
def _like(element: _Like, compiler: SQLCompiler, **kw: Any) -> str:
    text, like, _ = element.clauses
    return f"({compiler.process(text, **kw)} LIKE {compiler.process(like, **kw)} ESCAPE '\\')"


@compiles(_Like, "sqlite")
def _like_sqlite(element: _Like, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite's LIKE folds ASCII case and changing that is a per-connection pragma;
    # GLOB is case-sensitive, so the pattern is rewritten into GLOB syntax instead.
    text, _, glob = element.clauses
    return f"({compiler.process(text, **kw)} GLOB {compiler.process(glob, **kw)})"


class _JsonArrayContains(FunctionElement[bool]):
    """Whether the JSON array at a path holds a value."""

    type = Boolean()
    name = "json_array_contains"
    inherit_cache = True


@compiles(_JsonArrayContains, "postgresql")
def _json_contains_postgresql(element: _JsonArrayContains, compiler: SQLCompiler, **kw: Any) -> str:
    # Only the arguments a dialect renders may be compiled: compiling binds a parameter.
    array, needle = (compiler.process(arg, **kw) for arg in list(element.clauses)[:2])
    return f"(({array}) @> CAST(CAST({needle} AS TEXT) AS JSONB))"


@compiles(_JsonArrayContains)
def _json_contains(element: _JsonArrayContains, compiler: SQLCompiler, **kw: Any) -> str:
    data, path, value = (compiler.process(arg, **kw) for arg in list(element.clauses)[2:])
    return f"(EXISTS (SELECT 1 FROM json_each({data}, {path}) WHERE json_each.value = {value}))"


class _JsonScalar(FunctionElement[str]):
    """The scalar at a path in a JSON column, before it is cast to the field's type."""

    type = String()
    name = "json_scalar"
    inherit_cache = True


@compiles(_JsonScalar)
def _json_scalar(element: _JsonScalar, compiler: SQLCompiler, **kw: Any) -> str:
    as_text, _ = element.clauses
    return compiler.process(as_text, **kw)


@compiles(_JsonScalar, "sqlite")
def _json_scalar_sqlite(element: _JsonScalar, compiler: SQLCompiler, **kw: Any) -> str:
    # JSON_EXTRACT returns SQLite's own number types; going through text would round
    # doubles to 15 digits, so the value is cast from what JSON_EXTRACT gives.
    _, extracted = element.clauses
    return compiler.process(extracted, **kw)


def _glob_pattern(like: str) -> str:
    """The GLOB pattern matching what ``like`` (with ``\\`` escapes) matches."""
    out: list[str] = []
    chars = iter(like)
    for char in chars:
        if char == "\\":
            out.append(_glob_literal(next(chars)))
        else:
            out.append({"%": "*", "_": "?"}.get(char) or _glob_literal(char))
    return "".join(out)


def _glob_literal(char: str) -> str:
    return f"[{char}]" if char in "*?[" else char


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _case_sensitive_like(expression: ColumnElement[Any], pattern: str) -> Clause:
    like = literal(pattern, String())
    glob = literal(_glob_pattern(pattern), String())
    return _Like(expression, like, glob)


class _ByDialect(TypeDecorator[Any]):
    """A bound value as PostgreSQL's own type, or as SQLite's order key of it."""

    impl = String
    cache_ok = True
    postgres: TypeEngine[Any] = String()

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(self.postgres if dialect.name == "postgresql" else String())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return self.for_postgres(value) if dialect.name == "postgresql" else self.key(value)

    def for_postgres(self, value: Any) -> Any:
        return value

    def key(self, value: Any) -> Any:
        raise NotImplementedError


class _DecimalKey(_ByDialect):
    postgres = Numeric()
    cache_ok = True

    def key(self, value: Any) -> Any:
        return decimal_key(value)


class _MomentKey(_ByDialect):
    postgres = DateTime(timezone=True)
    cache_ok = True

    def for_postgres(self, value: Any) -> Any:
        return utc_moment("value", value)

    def key(self, value: Any) -> Any:
        return moment_key(value)


class _DateKey(_ByDialect):
    postgres = Date()
    cache_ok = True

    def key(self, value: Any) -> Any:
        return value.isoformat()  # ISO dates sort as their text


class _JsonDecimal(FunctionElement[Decimal]):
    """A JSON number or number text as an exactly ordered decimal."""

    type = _DecimalKey()
    name = "json_decimal"
    inherit_cache = True


@compiles(_JsonDecimal)
def _json_decimal(element: _JsonDecimal, compiler: SQLCompiler, **kw: Any) -> str:
    as_text, _ = element.clauses
    return f"CAST({compiler.process(as_text, **kw)} AS NUMERIC)"


@compiles(_JsonDecimal, "sqlite")
def _json_decimal_sqlite(element: _JsonDecimal, compiler: SQLCompiler, **kw: Any) -> str:
    _, extracted = element.clauses
    return f"{DECIMAL_KEY}({compiler.process(extracted, **kw)})"


class _JsonMoment(FunctionElement[datetime]):
    """ISO 8601 datetime text as its instant (a naive one is UTC)."""

    type = _MomentKey()
    name = "json_moment"
    inherit_cache = True


@compiles(_JsonMoment)
def _json_moment(element: _JsonMoment, compiler: SQLCompiler, **kw: Any) -> str:
    text = compiler.process(element.clauses, **kw)
    # A text with an offset is that instant; one without is UTC, whatever the session's zone.
    return (
        f"(CASE WHEN ({text}) ~ '([zZ]|[+-][0-9][0-9](:?[0-9][0-9])?)$' "
        f"THEN CAST({text} AS TIMESTAMPTZ) "
        f"ELSE CAST({text} AS TIMESTAMP) AT TIME ZONE 'UTC' END)"
    )


@compiles(_JsonMoment, "sqlite")
def _json_moment_sqlite(element: _JsonMoment, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{MOMENT_KEY}({compiler.process(element.clauses, **kw)})"


class _JsonDate(FunctionElement[date]):
    """ISO 8601 date text as a date."""

    type = _DateKey()
    name = "json_date"
    inherit_cache = True


@compiles(_JsonDate)
def _json_date(element: _JsonDate, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS DATE)"


@compiles(_JsonDate, "sqlite")
def _json_date_sqlite(element: _JsonDate, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


# -- sources: where a field's typed expression comes from -------------------------------


class _Source:
    """A table as the translator sees it: typed field expressions and a tie-break key."""

    def __init__(self, fields: FieldSet) -> None:
        self.fields = fields

    def expression(self, field: str) -> ColumnElement[Any]:
        """The field as a typed SQL expression."""
        raise NotImplementedError

    def list_contains(self, field: str, value: object) -> Clause:
        """Whether the list field holds ``value``."""
        raise QueryError(f"{self.fields.model}: 'contains' on a list field is not supported")

    def tie_break(self) -> list[ColumnElement[Any]]:
        """Unique, non-null keys that make any ordering total."""
        raise NotImplementedError

    def sort_values(self, row: Mapping[str, Any], options: QueryOptions) -> list[object]:
        """A result row's sort values (sort keys, then tie-break) for its cursor."""
        raise NotImplementedError


class _TableSource(_Source):
    def __init__(self, table: Table, fields: FieldSet) -> None:
        super().__init__(fields)
        self.table = table
        self.keys = list(table.primary_key.columns)
        if not self.keys:
            msg = f"table {table.name} has no primary key to order ties by"
            raise ConfigurationError(msg)

    def expression(self, field: str) -> ColumnElement[Any]:
        if field not in self.table.c:
            raise UnknownFieldError(field, self.fields.model)
        column = self.table.c[field]
        return _Bytewise(column) if self.fields.type_of(field) is str else column

    def tie_break(self) -> list[ColumnElement[Any]]:
        return [_Bytewise(c) if _is_text(c) else c for c in self.keys]

    def sort_values(self, row: Mapping[str, Any], options: QueryOptions) -> list[object]:
        keys = [row[key.field] for key in options.sort_keys()]
        return keys + [row[column.name] for column in self.keys]


class _DocumentSource(_Source):
    def __init__(self, table: Table, fields: FieldSet) -> None:
        super().__init__(fields)
        self.table = table

    def expression(self, field: str) -> ColumnElement[Any]:
        declared = self.fields.type_of(field)
        as_text = self.table.c.data[tuple(field.split("."))].as_string()
        extracted = func.json_extract(self.table.c.data, literal("$." + field, String()))
        if declared is Decimal:
            return _JsonDecimal(as_text, extracted)
        if declared is datetime:
            return _JsonMoment(as_text)
        if declared is date:
            return _JsonDate(as_text)
        text: ColumnElement[Any] = _JsonScalar(as_text, extracted)
        caster = _JSON_CASTS.get(declared)
        if get_origin(declared) is list:
            return text
        if caster is None:
            msg = f"{self.fields.model}.{field}: {declared!r} fields cannot be queried"
            raise QueryError(msg)
        return caster(text)

    def list_contains(self, field: str, value: object) -> Clause:
        if isinstance(value, Decimal | datetime | date):
            raise QueryError(f"{self.fields.model}.{field}: cannot look for {value!r} in JSON")
        path = tuple(field.split("."))
        array = self.table.c.data[path]
        needle = literal(json.dumps([value]), String())
        sqlite_path = literal("$." + field, String())
        return _JsonArrayContains(array, needle, self.table.c.data, sqlite_path, literal(value))

    def tie_break(self) -> list[ColumnElement[Any]]:
        return [_Bytewise(self.table.c.key)]

    def sort_values(self, row: Mapping[str, Any], options: QueryOptions) -> list[object]:
        data = row["data"]
        data = json.loads(data) if isinstance(data, str | bytes) else data
        keys = [
            self.fields.coerce(k.field, resolve_field(data, k.field)) for k in options.sort_keys()
        ]
        return [*keys, row["key"]]


_JSON_CASTS: dict[Any, Callable[[ColumnElement[Any]], ColumnElement[Any]]] = {
    str: _Bytewise,
    int: lambda text: cast(text, BigInteger()),
    float: lambda text: cast(text, Float()),
    bool: lambda text: cast(text, Boolean()),
}


# -- specifications ---------------------------------------------------------------------


def _where(source: _Source, spec: Specification) -> Clause:
    if isinstance(spec, Condition):
        return _condition(source, spec)
    if isinstance(spec, AllOf):
        parts = [_where(source, part) for part in spec.parts]
        return and_(*parts) if parts else true()
    if isinstance(spec, AnyOf):
        parts = [_where(source, part) for part in spec.parts]
        return or_(*parts) if parts else false()
    if isinstance(spec, Not):
        return not_(_where(source, spec.part))
    raise QueryError(f"{type(spec).__name__} has no SQL translation")


def _condition(source: _Source, condition: Condition) -> Clause:
    field, operator, value = condition.field, condition.operator, condition.value
    expression = source.expression(field)
    if operator is Operator.IS_NULL:
        return expression.is_(None) if value else expression.is_not(None)
    if operator is Operator.NE:
        return not_(_condition(source, Condition(field, Operator.EQ, value)))
    if operator is Operator.NOT_IN:
        return not_(_condition(source, Condition(field, Operator.IN, value)))
    # A null field makes the bare test NULL; the guard turns that into FALSE, so that
    # NOT and != behave as the exact negations they are in memory.
    return and_(expression.is_not(None), _positive(source, condition, expression))


def _positive(source: _Source, condition: Condition, expression: ColumnElement[Any]) -> Clause:
    field, operator = condition.field, condition.operator
    value = _bindable(source.fields, field, condition.value)
    if operator is Operator.CONTAINS and get_origin(source.fields.type_of(field)) is list:
        return source.list_contains(field, condition.value)
    tests: dict[Operator, Callable[[], Clause]] = {
        Operator.EQ: lambda: expression == _bound(expression, value),
        Operator.LT: lambda: expression < _bound(expression, value),
        Operator.LE: lambda: expression <= _bound(expression, value),
        Operator.GT: lambda: expression > _bound(expression, value),
        Operator.GE: lambda: expression >= _bound(expression, value),
        Operator.IN: lambda: expression.in_([_bound(expression, item) for item in value]),
        Operator.BETWEEN: lambda: expression.between(
            _bound(expression, value[0]), _bound(expression, value[1])
        ),
        Operator.LIKE: lambda: _case_sensitive_like(expression, value),
        Operator.STARTSWITH: lambda: _case_sensitive_like(expression, _escape_like(value) + "%"),
        Operator.CONTAINS: lambda: _case_sensitive_like(
            expression, "%" + _escape_like(value) + "%"
        ),
    }
    return tests[operator]()


def _bound(expression: ColumnElement[Any], value: object) -> ColumnElement[Any]:
    """A parameter of the expression's kind (SQLAlchemy refuses bare True/False operands).

    Of its kind, not its exact type: PostgreSQL would cast the value to the column's
    ``NUMERIC(12, 2)``, ``VARCHAR(5)`` or ``INTEGER``, rounding or cutting it (so that
    ``total >= 99.999`` meant ``>= 100.00``) or overflowing; the value is compared as given.
    """
    return literal(value, _unbounded(expression.type))


def _unbounded(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    if isinstance(type_, TypeDecorator | Float):
        return type_
    if isinstance(type_, Numeric):
        return Numeric() if type_.asdecimal else Numeric(asdecimal=False)
    if isinstance(type_, Integer):
        return BigInteger()
    if isinstance(type_, String) and type_.length is not None:
        return String()
    return type_


def _bindable(fields: FieldSet, field: str, value: Any) -> Any:
    """The value as the field's Python type, so drivers bind it as the column's type."""
    if isinstance(value, tuple):
        return tuple(_bindable(fields, field, item) for item in value)
    declared = fields.type_of(field)
    if declared is float and isinstance(value, int):
        return float(value)
    return fields.coerce(field, value)


# -- ordering and keyset pagination -----------------------------------------------------


def _order_by(source: _Source, options: QueryOptions) -> list[Any]:
    clauses: list[Any] = []
    for key in options.sort_keys():
        expression = source.expression(key.field)
        # NULL is the smallest value, as in memory; PostgreSQL's default is the opposite.
        order = expression.desc().nulls_last() if key.descending else expression.asc()
        clauses.append(order if key.descending else order.nulls_first())
    return clauses + [key.asc() for key in source.tie_break()]


def _after(source: _Source, options: QueryOptions) -> Clause:
    """Rows strictly after the cursor's row in the query's total order."""
    values = list(decode_cursor(options, source.fields))
    sort_keys = options.sort_keys()
    keys: list[tuple[ColumnElement[Any], bool, str | None]] = [
        (source.expression(k.field), k.descending, k.field) for k in sort_keys
    ]
    keys += [(column, False, None) for column in source.tie_break()]
    if len(values) != len(keys):
        raise QueryError("the cursor belongs to a different query")
    bound = [
        value if field is None else _bindable(source.fields, field, value)
        for (_, _, field), value in zip(keys, values, strict=True)
    ]
    equal = [
        _equal(expression, value) for (expression, _, _), value in zip(keys, bound, strict=True)
    ]
    branches = [
        and_(true(), *equal[:index], _beyond(expression, descending, bound[index]))
        for index, (expression, descending, _) in enumerate(keys)
    ]
    return or_(*branches)


def _equal(expression: ColumnElement[Any], value: object) -> Clause:
    if value is None:
        return expression.is_(None)
    return and_(expression.is_not(None), expression == _bound(expression, value))


def _beyond(expression: ColumnElement[Any], descending: bool, value: object) -> Clause:
    if descending:
        if value is None:
            return false()
        return or_(expression.is_(None), expression < _bound(expression, value))
    if value is None:
        return expression.is_not(None)
    return and_(expression.is_not(None), expression > _bound(expression, value))


# -- queries ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SqlQuery:
    """A page query: ``select`` for the rows, ``count`` for the total (when asked)."""

    select: Select[Any]
    count: Select[Any] | None
    options: QueryOptions
    _source: _Source

    def page(self, rows: Sequence[Row], total: int | None = None) -> Page[Row]:
        """The page these rows (from ``select``) make, with the cursor of the last one."""
        cursor = None
        if rows:
            cursor = _encode_cursor(self.options, self._source.sort_values(rows[-1], self.options))
        return Page(list(rows), total, cursor)


def table_query(table: Table, options: QueryOptions, *, fields: FieldSet | None = None) -> SqlQuery:
    """The query for ``options`` over a user's table; fields default to its columns."""
    source = _TableSource(table, fields or _columns(table))
    return _build(source, options, table, [])


def document_query(
    collection: str, options: QueryOptions, fields: FieldSet, *, table: Table = documents
) -> SqlQuery:
    """The query for ``options`` over one collection of eventfold's JSON documents."""
    source = _DocumentSource(table, fields)
    return _build(source, options, table, [table.c.collection == collection])


def _build(source: _Source, options: QueryOptions, table: Table, base: list[Clause]) -> SqlQuery:
    options.validate(source.fields)
    spec = options.specification
    filters = [*base] + ([] if spec is None else [_where(source, spec)])
    count = select(func.count()).select_from(table).where(*filters)
    if options.after is not None:
        filters.append(_after(source, options))
    statement = select(table).where(*filters).order_by(*_order_by(source, options))
    if options.limit is not None:
        statement = statement.limit(options.limit)
    if options.offset:
        statement = statement.offset(options.offset)
    return SqlQuery(statement, count if options.include_total else None, options, source)


def _is_text(column: ColumnElement[Any]) -> bool:
    try:
        return column.type.python_type is str
    except NotImplementedError:  # a type that does not say; compare it as the database does
        return False


def _columns(table: Table) -> FieldSet:
    fields: dict[str, Any] = {}
    for column in table.c:
        try:
            python_type = column.type.python_type
        except NotImplementedError:
            continue
        if python_type in (str, int, float, Decimal, bool, datetime, date):
            fields[column.name] = python_type
    return FieldSet(table.name, fields)


async def fetch_page(executor: SqlExecutor, query: SqlQuery) -> Page[Row]:
    """Run ``query`` (and its count) in ``executor``'s transaction."""
    rows = await executor.execute_sql(query.select)
    total = None
    if query.count is not None:
        (count_row,) = await executor.execute_sql(query.count)
        total = int(next(iter(count_row.values())))
    return query.page(rows, total)


def search_table(
    executor: SqlExecutor | StorageSession,
    table: Table,
    options: QueryOptions,
    *,
    fields: FieldSet | None = None,
) -> SearchResult[Row]:
    """A search over a user's table, run page by page in ``executor``'s transaction.

    ``executor`` is a SQL backend's session, such as ``await uow.session()``.
    """
    table_query(table, options, fields=fields)  # invalid options fail here, not on await
    if not hasattr(executor, "execute_sql"):
        msg = f"{type(executor).__name__} runs no SQL: search a table on a SQL backend"
        raise ConfigurationError(msg)
    sql: SqlExecutor = executor  # type: ignore[assignment]  # it runs SQL, checked above

    async def fetch(page_options: QueryOptions) -> Page[Row]:
        return await fetch_page(sql, table_query(table, page_options, fields=fields))

    return SearchResult(fetch, options)


def search_documents(
    executor: SqlExecutor, collection: str, options: QueryOptions, fields: FieldSet
) -> SearchResult[Row]:
    """A search over a document collection, run page by page in ``executor``'s transaction."""
    document_query(collection, options, fields)

    async def fetch(page_options: QueryOptions) -> Page[Row]:
        return await fetch_page(executor, document_query(collection, page_options, fields))

    return SearchResult(fetch, options)
