"""``eventfold db``: create eventfold's tables, print their DDL, check a database against them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from eventfold.cli._common import (
    DatabaseUrl,
    JsonOption,
    open_storage,
    out,
    print_rows,
    reported,
    run,
    sql,
    using,
)

if TYPE_CHECKING:
    from sqlalchemy import MetaData

    from eventfold.ports import Storage

__all__ = ["Difference", "app", "ddl", "differences"]

app = typer.Typer(help="eventfold's own tables.", no_args_is_help=True)


class Dialect(StrEnum):
    """The SQL dialects eventfold's tables exist in."""

    postgresql = "postgresql"
    sqlite = "sqlite"


@app.command("init")
def db_init(database_url: DatabaseUrl = None) -> None:
    """Create eventfold's tables if missing (safe to run again)."""
    with reported():
        storage = open_storage(database_url, must_exist=False)
    run(lambda: using(storage, lambda s: s.create_schema()))
    out.print(f"[green]eventfold's tables are ready in {storage.name}")


@app.command("sql")
def db_sql(
    dialect: Annotated[Dialect, typer.Option(help="The database the DDL is for.")] = (
        Dialect.postgresql
    ),
    schema: Annotated[
        str | None, typer.Option(help="PostgreSQL schema to create the tables in.")
    ] = None,
) -> None:
    """Print the DDL of eventfold's tables, for a migration tool such as Alembic."""
    with reported():
        statements = ddl(dialect.value, schema)
    # Plain output: the DDL is meant to be redirected into a file.
    typer.echo("\n\n".join(f"{statement.strip()};" for statement in statements))


def ddl(dialect_name: str, schema: str | None = None) -> list[str]:
    """The CREATE statements of eventfold's tables and indexes in ``dialect_name``."""
    from sqlalchemy.dialects import postgresql, sqlite
    from sqlalchemy.schema import CreateIndex, CreateSchema, CreateTable

    dialect: Any = postgresql.dialect() if dialect_name == "postgresql" else sqlite.dialect()  # type: ignore[no-untyped-call]
    tables = _tables(schema)
    statements = []
    if schema is not None:
        statements.append(str(CreateSchema(schema, if_not_exists=True).compile(dialect=dialect)))
    for table in tables.sorted_tables:
        statements.append(str(CreateTable(table, if_not_exists=True).compile(dialect=dialect)))
        statements.extend(
            str(CreateIndex(index, if_not_exists=True).compile(dialect=dialect))
            for index in sorted(table.indexes, key=lambda index: str(index.name))
        )
    return statements


def _tables(schema: str | None) -> MetaData:
    from sqlalchemy import MetaData

    from eventfold.adapters.sql.schema import metadata

    if schema is None:
        return metadata
    copy = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(copy, schema=schema)
    return copy


# -- check ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Difference:
    """One way a database differs from the tables this version of eventfold expects."""

    table: str
    kind: str  # missing table | missing column | extra column | missing index
    name: str


@app.command("check")
def db_check(database_url: DatabaseUrl = None, as_json: JsonOption = False) -> None:
    """What differs between the database and the tables this eventfold version expects."""
    with reported():
        storage = open_storage(database_url)
    found = run(lambda: using(storage, differences))
    rows = [asdict(difference) for difference in found]
    print_rows(
        rows,
        ["table", "kind", "name"],
        as_json=as_json,
        title=f"{storage.name}: what differs",
        empty=f"[green]{storage.name} has every table, column and index eventfold expects",
    )
    if found:
        raise typer.Exit(1)


async def differences(storage: Storage) -> list[Difference]:
    """Tables, columns and indexes missing from the database, and columns it has extra."""
    from eventfold.adapters.sql.schema import metadata

    columns, indexes = await _live(storage)
    found: list[Difference] = []
    for table in metadata.sorted_tables:
        live = columns.get(table.name)
        if live is None:
            found.append(Difference(table.name, "missing table", table.name))
            continue
        expected = {column.name for column in table.columns}
        found += [Difference(table.name, "missing column", c) for c in sorted(expected - live)]
        found += [Difference(table.name, "extra column", c) for c in sorted(live - expected)]
        found += [
            Difference(table.name, "missing index", str(index.name))
            for index in sorted(table.indexes, key=lambda index: str(index.name))
            if index.name not in indexes
        ]
    return found


async def _live(storage: Storage) -> tuple[dict[str, set[str]], set[str]]:
    """The database's eventfold tables with their columns, and its index names."""
    from sqlalchemy import text

    postgres = storage.name.startswith("postgres")
    if postgres:
        column_sql = (
            "SELECT table_name AS t, column_name AS c FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name LIKE 'eventfold%'"
        )
        index_sql = "SELECT indexname AS i FROM pg_indexes WHERE schemaname = current_schema()"
    else:
        column_sql = (
            "SELECT m.name AS t, p.name AS c FROM sqlite_master AS m, pragma_table_info(m.name) "
            "AS p WHERE m.type = 'table' AND m.name LIKE 'eventfold%'"
        )
        index_sql = "SELECT name AS i FROM sqlite_master WHERE type = 'index'"
    async with storage.transaction() as session:
        column_rows = await sql(session, text(column_sql))
        index_rows = await sql(session, text(index_sql))
    columns: dict[str, set[str]] = {}
    for row in column_rows:
        columns.setdefault(row["t"], set()).add(row["c"])
    return columns, {row["i"] for row in index_rows}
