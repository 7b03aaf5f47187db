"""Query options (filter, order, page) and search results, applied in memory or by a backend.

Ordering is total and the same everywhere: the sort keys the caller names, then the
backend's key (a document's key, a table's primary key) ascending as a tie-break.
``None`` is the smallest value: first in ascending order, last in descending order.

Pages are taken by ``limit``/``offset`` or by keyset: ``after`` is the opaque cursor of
the last row already seen (``Page.next_cursor``), which stays correct while rows are
inserted or deleted between requests.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, Self, TypeVar, get_origin

from eventfold.domain.errors import InvalidValueError, QueryError
from eventfold.domain.specification import FieldSet, Specification, resolve_field
from eventfold.domain.storable import check_value

__all__ = [
    "Page",
    "QueryOptions",
    "SearchResult",
    "SortKey",
    "compare_sort_values",
    "decode_cursor",
    "encode_cursor",
    "query_in_memory",
]

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class SortKey:
    """One ordering key: a field, ascending unless ``descending``."""

    field: str
    descending: bool = False

    @classmethod
    def parse(cls, text: str) -> SortKey:
        """``"name"`` or ``"+name"`` ascending, ``"-name"`` descending."""
        if not isinstance(text, str) or not text.lstrip("+-"):
            raise QueryError(f"invalid ordering {text!r}")
        return cls(text.lstrip("+-"), descending=text.startswith("-"))


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """What to fetch: a specification, an ordering, a page, and whether to count the total."""

    specification: Specification | None = None
    order_by: tuple[str, ...] = ()
    limit: int | None = None
    offset: int = 0
    after: str | None = None
    include_total: bool = False

    def __post_init__(self) -> None:
        if self.limit is not None:
            _check_count("limit", self.limit)
        _check_count("offset", self.offset)
        object.__setattr__(self, "order_by", tuple(self.order_by))
        self.sort_keys()  # reject malformed ordering strings when the options are made

    def with_specification(self, specification: Specification) -> Self:
        """These options filtered by ``specification``."""
        return dataclasses.replace(self, specification=specification)

    def with_ordering(self, *keys: str) -> Self:
        """These options ordered by ``keys`` (``"-created_at"`` sorts descending)."""
        return dataclasses.replace(self, order_by=keys)

    def with_pagination(self, *, limit: int | None = None, offset: int = 0) -> Self:
        """These options limited to ``limit`` rows after skipping ``offset``."""
        return dataclasses.replace(self, limit=limit, offset=offset)

    def with_cursor(self, after: str | None) -> Self:
        """These options continuing after the row ``after`` (a ``Page.next_cursor``) names."""
        return dataclasses.replace(self, after=after)

    def with_total(self, include_total: bool = True) -> Self:
        """These options asking for the number of matching rows as well."""
        return dataclasses.replace(self, include_total=include_total)

    def sort_keys(self) -> tuple[SortKey, ...]:
        """The ordering as parsed keys."""
        return tuple(SortKey.parse(text) for text in self.order_by)

    def validate(self, fields: FieldSet) -> None:
        """Check the specification, the ordering and the cursor against ``fields``; else raise."""
        if self.specification is not None:
            self.specification.validate(fields)
        for key in self.sort_keys():
            if get_origin(fields.type_of(key.field)) is list:
                raise QueryError(f"cannot order by list field {key.field!r}")
        if self.after is not None:
            decode_cursor(self, fields)


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidValueError(name, value, "must be a non-negative integer")
    check_value(name, value)  # a database takes 64 bits at most


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of results, the cursor of its last row, and the total when it was asked."""

    items: list[T]
    total: int | None = None
    next_cursor: str | None = None


class SearchResult(Generic[T]):
    """The result of a query: ``await`` it for the page, or ``stream()`` every match in batches.

    ``fetch`` runs one page query for the given options; the result never loads more
    than one page or batch at a time.
    """

    def __init__(
        self, fetch: Callable[[QueryOptions], Awaitable[Page[T]]], options: QueryOptions
    ) -> None:
        self._fetch = fetch
        self.options = options
        self._page: Page[T] | None = None

    async def page(self) -> Page[T]:
        """The page the options describe (fetched once)."""
        if self._page is None:
            self._page = await self._fetch(self.options)
        return self._page

    async def items(self) -> list[T]:
        """The rows of the page."""
        return (await self.page()).items

    def __await__(self) -> Generator[Any, None, list[T]]:
        return self.items().__await__()

    @property
    def total(self) -> int | None:
        """How many rows match (``None`` unless ``include_total``); available once awaited."""
        if self._page is None:
            raise QueryError("await the search result before reading its total")
        return self._page.total

    @property
    def next_cursor(self) -> str | None:
        """The cursor after the page's last row; available once awaited."""
        if self._page is None:
            raise QueryError("await the search result before reading its cursor")
        return self._page.next_cursor

    def map(self, transform: Callable[[T], U]) -> SearchResult[U]:
        """The same search with every row turned by ``transform``."""
        fetch = self._fetch

        async def mapped(options: QueryOptions) -> Page[U]:
            page = await fetch(options)
            return Page([transform(item) for item in page.items], page.total, page.next_cursor)

        return SearchResult(mapped, self.options)

    async def stream(self, batch_size: int = 100) -> AsyncIterator[T]:
        """Every matching row in order, fetched ``batch_size`` rows at a time."""
        if isinstance(batch_size, bool) or batch_size < 1:
            raise InvalidValueError("batch_size", batch_size, "must be a positive integer")
        remaining = self.options.limit
        options = dataclasses.replace(self.options, include_total=False)
        while remaining is None or remaining > 0:
            size = batch_size if remaining is None else min(batch_size, remaining)
            page = await self._fetch(dataclasses.replace(options, limit=size))
            for item in page.items:
                yield item
            if len(page.items) < size or page.next_cursor is None:
                return
            remaining = None if remaining is None else remaining - len(page.items)
            options = dataclasses.replace(options, after=page.next_cursor, offset=0)


def compare_sort_values(
    left: Sequence[object], right: Sequence[object], descending: Sequence[bool]
) -> int:
    """-1, 0 or 1: how ``left`` orders against ``right``; ``None`` is the smallest value."""
    for a, b, desc in zip(left, right, descending, strict=False):
        result = _compare(a, b)
        if result:
            return -result if desc else result
    return 0


def _compare(a: Any, b: Any) -> int:
    if a is None or b is None:
        return (a is not None) - (b is not None)
    return int(a > b) - int(a < b)


def query_in_memory(
    items: Iterable[T],
    options: QueryOptions,
    *,
    key: Callable[[T], object],
    fields: FieldSet | None = None,
    view: Callable[[T], object] | None = None,
) -> Page[T]:
    """Filter, order and page ``items`` as a SQL backend would.

    ``key`` gives each item's unique tie-break value; ``view`` the object its fields are
    read from (the item itself by default); ``fields``, when given, validates the options
    and reads values as their declared types (``Decimal`` kept as text in JSON, say).
    """
    if fields is not None:
        options.validate(fields)
    reader = _reader(fields, view)
    spec = options.specification
    matches = [item for item in items if spec is None or spec.evaluate(reader(item))]
    sort_keys = options.sort_keys()
    desc = [k.descending for k in sort_keys] + [False]

    def values(item: T) -> list[object]:
        read = reader(item)
        return [read(k.field) for k in sort_keys] + [key(item)]

    def order(x: tuple[list[object], T], y: tuple[list[object], T]) -> int:
        return compare_sort_values(x[0], y[0], desc)

    rows = sorted(((values(item), item) for item in matches), key=functools.cmp_to_key(order))
    if options.after is not None:
        cursor = list(decode_cursor(options, fields))
        rows = [row for row in rows if compare_sort_values(row[0], cursor, desc) > 0]
    end = None if options.limit is None else options.offset + options.limit
    page = rows[options.offset : end]
    total = len(matches) if options.include_total else None
    next_cursor = encode_cursor(options, page[-1][0]) if page else None
    return Page([item for _, item in page], total, next_cursor)


def _reader(
    fields: FieldSet | None, view: Callable[[T], object] | None
) -> Callable[[T], Callable[[str], object]]:
    def reader(item: T) -> Callable[[str], object]:
        target = item if view is None else view(item)
        if fields is None:
            return functools.partial(resolve_field, target)
        return lambda name: fields.coerce(name, resolve_field(target, name))

    return reader


def encode_cursor(options: QueryOptions, values: Sequence[object]) -> str:
    """The opaque cursor of a row whose sort values (sort keys, then tie-break) are ``values``."""
    body = {"o": list(options.order_by), "v": [_encode_value(value) for value in values]}
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(options: QueryOptions, fields: FieldSet | None = None) -> tuple[object, ...]:
    """The sort values in ``options.after``; :class:`QueryError` if it is not a cursor of them."""
    token = options.after or ""
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        values = tuple(_decode_value(value) for value in body["v"])
        ordering = tuple(body["o"])
        for value in values:
            check_value("after", value)
    except (ValueError, TypeError, KeyError, ArithmeticError, binascii.Error, QueryError):
        # ArithmeticError: decimal.InvalidOperation; QueryError: a value no store holds.
        raise QueryError("the cursor is not one this query produced") from None
    if ordering != options.order_by or len(values) <= len(ordering):
        raise QueryError("the cursor belongs to a different ordering")
    if fields is None:
        return values
    return _typed_cursor(options, values, fields)


def _typed_cursor(
    options: QueryOptions, values: tuple[object, ...], fields: FieldSet
) -> tuple[object, ...]:
    """The cursor's sort values as their fields' declared types; raise where one cannot be."""
    typed: list[object] = []
    for key, value in zip(options.sort_keys(), values, strict=False):
        declared = fields.type_of(key.field)
        coerced = fields.coerce(key.field, value)
        if coerced is not None and not _same_kind(coerced, declared):
            raise InvalidValueError(key.field, value, "the cursor does not fit this field")
        typed.append(coerced)
    return (*typed, *values[len(typed) :])


def _same_kind(value: object, declared: type) -> bool:
    if declared in (int, float, Decimal):
        return isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    return isinstance(value, declared)


def _encode_value(value: object) -> object:
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise QueryError(f"cannot put a {type(value).__name__} sort value in a cursor")


def _decode_value(value: object) -> object:
    if isinstance(value, dict) and len(value) == 1:
        ((tag, text),) = value.items()
        decoders: dict[str, Callable[[str], object]] = {
            "decimal": Decimal,
            "datetime": datetime.fromisoformat,
            "date": date.fromisoformat,
        }
        return decoders[tag](text)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(value)
