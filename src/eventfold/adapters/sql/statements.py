"""Compile a user's SQLAlchemy Core statement for a raw driver, and decode its rows.

The SQL backends run their hot paths as hand-written SQL on the raw driver; a user's
own statements (``session.execute_sql(...)``) go through here instead of a SQLAlchemy
engine. :func:`compile_statement` renders the statement for a dialect, binds its
parameters positionally (``?`` for sqlite, ``$1`` for asyncpg) through the dialect's
bind processors, and :meth:`CompiledStatement.process_rows` turns the driver's rows into
dictionaries of Python values (JSON decoded, ``Numeric`` as ``Decimal``, datetimes
parsed where the driver returns text) exactly as a SQLAlchemy engine would.

Every parameter is checked first: a value that one of the backends could not store (a
NUL character, an integer beyond 64 bits, see :mod:`eventfold.domain.storable`) raises
:class:`~eventfold.errors.InvalidValueError` naming its column, on every dialect alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.schema import Column
from sqlalchemy.sql.type_api import TypeEngine

from eventfold.domain.storable import check_value
from eventfold.errors import ConfigurationError

__all__ = ["CompiledStatement", "compile_many", "compile_statement"]

_Processor = Callable[[Any], Any] | None


class CompiledStatement:
    """A statement rendered for one dialect: SQL text, positional parameters, row decoding."""

    __slots__ = ("_dialect", "_types", "keys", "params", "sql")

    def __init__(
        self,
        sql: str,
        params: list[Any],
        keys: tuple[str, ...],
        types: tuple[TypeEngine[Any], ...],
        dialect: Dialect,
    ) -> None:
        self.sql = sql
        self.params = params
        self.keys = keys
        """Result column names in order; empty when the statement does not declare them."""
        self._types = types
        self._dialect = dialect

    def process_rows(
        self,
        rows: Iterable[Sequence[Any]],
        *,
        keys: Sequence[str] | None = None,
        column_types: Sequence[object] | None = None,
    ) -> list[dict[str, Any]]:
        """Rows as dictionaries of Python values.

        ``keys`` (from the driver's cursor description) name the columns of a textual
        statement that declares none; ``column_types`` are the driver's type codes,
        which some dialects (asyncpg) need to pick a result processor.
        """
        names = self.keys or tuple(keys or ())
        processors = self._processors(len(names), column_types)
        return [
            {
                name: value if process is None else process(value)
                for name, process, value in zip(names, processors, row, strict=True)
            }
            for row in rows
        ]

    def process_row(
        self, row: Sequence[Any], *, keys: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """One row as a dictionary of Python values."""
        return self.process_rows([row], keys=keys)[0]

    def _processors(self, width: int, column_types: Sequence[object] | None) -> list[_Processor]:
        if not self._types:
            return [None] * width
        codes = list(column_types) if column_types is not None else [None] * len(self._types)
        return [
            _result_processor(type_, self._dialect, code)
            for type_, code in zip(self._types, codes, strict=True)
        ]


def _aware(type_: TypeEngine[Any], dialect: Dialect) -> bool:
    """Whether ``type_`` is a ``DateTime(timezone=True)`` the dialect keeps without a zone.

    SQLite stores datetimes as text without an offset: eventfold writes them in UTC and
    reads them back as aware UTC datetimes, as PostgreSQL's ``timestamptz`` does.
    """
    return dialect.name == "sqlite" and isinstance(type_, DateTime) and type_.timezone


def _result_processor(type_: TypeEngine[Any], dialect: Dialect, code: object) -> _Processor:
    process = type_._cached_result_processor(dialect, code)
    if process is None or not _aware(type_, dialect):
        return process

    def aware(value: Any) -> Any:
        moment = process(value)
        if isinstance(moment, datetime) and moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment

    return aware


def _in_utc(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    if isinstance(value, tuple):
        return tuple(_in_utc(item) for item in value)
    if isinstance(value, list):
        return [_in_utc(item) for item in value]
    return value


def compile_statement(statement: Executable, dialect: Dialect) -> CompiledStatement:
    """Render ``statement`` for ``dialect`` with positional, bind-processed parameters."""
    if not isinstance(statement, ClauseElement):
        msg = f"cannot compile {type(statement).__name__}: pass a SQLAlchemy Core statement"
        raise ConfigurationError(msg)
    if not dialect.positional:
        msg = f"dialect {dialect.name} binds parameters by name; a positional one is needed"
        raise ConfigurationError(msg)
    # render_postcompile expands IN (...) lists into one parameter per value now, the
    # step an engine would otherwise do at execution time.
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    if not isinstance(compiled, SQLCompiler):
        # DDL (CREATE TABLE for a read model, ...) binds no parameters and returns no rows.
        return CompiledStatement(compiled.string, [], (), (), dialect)
    values = compiled.construct_params()
    _apply_python_defaults(compiled, values)
    # The compiler's private bind processors and result columns are what an engine
    # itself uses to execute a compiled statement; no public API exposes them.
    processors = compiled._bind_processors
    for name in compiled.positiontup or ():
        _check_storable(_field_of(compiled, name), values[name])
    if dialect.name == "sqlite":
        # SQLite keeps datetimes as text without an offset: aware ones are written in UTC.
        values = {name: _in_utc(value) for name, value in values.items()}
    params = [
        _bind(_processor_for(compiled, processors, name), values[name])
        for name in compiled.positiontup or ()
    ]
    columns = compiled._result_columns
    return CompiledStatement(
        compiled.string,
        params,
        tuple(column.keyname for column in columns),
        tuple(column.type for column in columns),
        dialect,
    )


def compile_many(
    statement: Executable, dialect: Dialect, rows: Sequence[Mapping[str, Any]]
) -> tuple[str, list[list[Any]]]:
    """Render ``statement`` once for rows that all bind the same keys; one parameter list each.

    For ``executemany``: the statement (an ``INSERT`` of a table, say) is compiled a
    single time, and every row's values are checked and bind-processed as
    :func:`compile_statement` does for one.
    """
    if not isinstance(statement, ClauseElement) or not dialect.positional:
        msg = "compile_many needs a SQLAlchemy Core statement and a positional dialect"
        raise ConfigurationError(msg)
    if not rows:
        return "", []
    compiled = statement.compile(dialect=dialect, column_keys=list(rows[0]))
    if not isinstance(compiled, SQLCompiler):
        msg = f"cannot bind rows to {type(statement).__name__}"
        raise ConfigurationError(msg)
    names = compiled.positiontup or ()
    fields = [_field_of(compiled, name) for name in names]
    processors = [_processor_for(compiled, compiled._bind_processors, name) for name in names]
    in_utc = dialect.name == "sqlite"
    params: list[list[Any]] = []
    for row in rows:
        values = compiled.construct_params(params=dict(row))
        _apply_python_defaults(compiled, values)
        bound = []
        for name, field, processor in zip(names, fields, processors, strict=True):
            value = values[name]
            _check_storable(field, value)
            bound.append(_bind(processor, _in_utc(value) if in_utc else value))
        params.append(bound)
    return compiled.string, params


def _check_storable(field: str, value: Any) -> None:
    """Refuse, by name, a value one of the SQL backends could not store (see storable)."""
    if isinstance(value, tuple | list):
        for item in value:
            _check_storable(field, item)
    else:
        check_value(field, value)


def _field_of(compiled: SQLCompiler, name: str) -> str:
    """The column a parameter is bound for, as a user names it."""
    bind = compiled.binds.get(name)
    if bind is None:  # one value of an expanded IN list: "<bind>_<n>"
        bind = compiled.binds.get(name.rpartition("_")[0])
    # A comparison's bind keeps its column's name; a VALUES/SET bind is named after its
    # column already (its own key is a generic "param").
    key = getattr(bind, "_orig_key", None)
    return name if key in (None, "param") else str(key)


def _processor_for(compiled: SQLCompiler, processors: Mapping[str, Any], name: str) -> Any:
    """The bind processor of ``name``, also for one value of an expanded ``IN`` list."""
    if name in processors:
        return processors[name]
    # render_postcompile names the values of an expanding bind "<bind>_<n>"; they are
    # processed like the bind they were expanded from.
    base, _, index = name.rpartition("_")
    bind = compiled.binds.get(base)
    if index.isdigit() and bind is not None and bind.expanding:
        return processors.get(base)
    return None


def _bind(processor: Any, value: Any) -> Any:
    if processor is None:
        return value
    if callable(processor):
        return processor(value)
    # A tuple parameter (``tuple_(a, b).in_(...)``) has one processor per element.
    return tuple(_bind(item, element) for item, element in zip(processor, value, strict=True))


def _apply_python_defaults(compiled: SQLCompiler, values: MutableMapping[str, Any]) -> None:
    """Fill in Python-side column defaults (``default=`` / ``onupdate=``) an engine computes."""
    if not (compiled.insert_prefetch or compiled.update_prefetch):
        return  # only INSERT and UPDATE compilers know the parameter names of columns
    key_of = compiled._within_exec_param_key_getter
    for column in compiled.insert_prefetch:
        values[key_of(column)] = _default_value(column, column.default)
    for column in compiled.update_prefetch:
        values[key_of(column)] = _default_value(column, column.onupdate)


def _default_value(column: Column[Any], default: Any) -> Any:
    if default is None:
        return None
    if default.is_scalar:
        return default.arg
    if default.is_callable:
        # SQLAlchemy wraps zero-argument callables to take an execution context; there
        # is no engine context here, so context-sensitive defaults are not supported.
        return default.arg(None)
    msg = (
        f"column {column.name!r} has a SQL expression default that needs a round trip; "
        "give it a server_default or a Python default"
    )
    raise ConfigurationError(msg)
