"""The eventfold command on SQLite and PostgreSQL, and its one-line errors."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from importlib import metadata
from pathlib import Path
from uuid import uuid4

import pytest
from examples.shop.demo import run_demo
from rich.console import Console
from sqlalchemy import text
from typer.testing import CliRunner

from eventfold import EventRegistry, Projection, ProjectionFailedError, ProjectionRunner
from eventfold.adapters.url import storage_from_url
from eventfold.cli import app
from eventfold.ports import EventRecord
from eventfold.testing.contracts.projections import Deposited, _append
from eventfold.testing.contracts.storage import T0
from tests.conftest import POSTGRES_DSN, require_service, unique_name
from tests.examples.conftest import drop_postgres_schema
from tests.support.network import closed_port

runner = CliRunner()
SHOP = "examples.shop.bootstrap:bootstrap"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cli.db'}"
        return
    require_service("postgres")
    schema = unique_name("cli")
    yield f"{POSTGRES_DSN}?schema={schema}"
    asyncio.run(drop_postgres_schema(schema))


@pytest.fixture
def shop_url(database_url: str) -> str:
    """A database holding the shop's scripted day."""
    asyncio.run(run_demo(database_url, console=Console(file=io.StringIO())))
    return database_url


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), terminal_width=200)
    return result.exit_code, result.output


def test_db_init_creates_the_tables_and_can_run_again(database_url: str) -> None:
    assert invoke("db", "init", "--database-url", database_url)[0] == 0
    code, output = invoke("db", "init", "--database-url", database_url)
    assert code == 0
    assert "tables are ready" in output


def test_streams_list_shows_each_stream_with_its_version(shop_url: str) -> None:
    code, output = invoke("streams", "list", "--database-url", shop_url)
    assert code == 0
    assert "Order-o-1001 │ 5" in output.replace("  ", "")


def test_streams_show_prints_versions_types_and_payloads(shop_url: str) -> None:
    code, output = invoke("streams", "show", "Order-o-1001", "--database-url", shop_url)
    assert code == 0
    assert "shop.OrderCancelled" in output
    assert "found a cheaper teapot" in output
    assert "2026-03-02T09:46:00" in output


def test_the_database_url_can_come_from_the_environment(
    shop_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTFOLD_DATABASE_URL", shop_url)
    code, output = invoke("streams", "list")
    assert code == 0
    assert "Order-o-1002" in output


def test_projections_status_shows_checkpoint_and_lag(shop_url: str) -> None:
    code, output = invoke("projections", "status", "--database-url", shop_url)
    assert code == 0
    assert "order-summaries" in output
    assert "position 22" in output


def test_projections_rebuild_replays_the_log_through_the_application(shop_url: str) -> None:
    code, output = invoke(
        "projections", "rebuild", "order-summaries", "--database-url", shop_url, "--app", SHOP
    )
    assert code == 0, output
    assert "rebuilt order-summaries: 22 events replayed" in output


def test_rebuilding_after_db_init_creates_the_read_model_tables(database_url: str) -> None:
    assert invoke("db", "init", "--database-url", database_url)[0] == 0
    code, output = invoke(
        "projections", "rebuild", "order-summaries", "--database-url", database_url, "--app", SHOP
    )
    assert code == 0, output
    assert "rebuilt order-summaries: 0 events replayed" in output


def test_the_application_module_is_found_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = unique_name("cli_app")
    (tmp_path / f"{module}.py").write_text(f"from {SHOP.replace(':', ' import ')}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # restored after the test
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert invoke("db", "init", "--database-url", url)[0] == 0
    code, output = invoke(
        "projections",
        "rebuild",
        "order-summaries",
        "--database-url",
        url,
        "--app",
        f"{module}:bootstrap",
    )
    assert code == 0, output
    monkeypatch.delitem(sys.modules, module)


def test_rebuilding_an_unknown_projection_names_the_known_ones(shop_url: str) -> None:
    code, output = invoke(
        "projections", "rebuild", "nope", "--database-url", shop_url, "--app", SHOP
    )
    assert code == 1
    assert "['order-summaries']" in output


def test_an_unsupported_url_is_one_line_saying_which_urls_work() -> None:
    code, output = invoke("streams", "list", "--database-url", "mysql://db/shop")
    assert code == 1
    assert output.strip().startswith("error: unsupported database URL")
    assert "Traceback" not in output


def test_a_server_that_does_not_answer_is_one_line() -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    code, output = invoke("streams", "list", "--database-url", url)
    assert code == 1
    assert "is unreachable" in output
    assert len(output.strip().splitlines()) == 1


def test_missing_tables_say_to_run_db_init(database_url: str, tmp_path: Path) -> None:
    if database_url.startswith("sqlite"):
        (tmp_path / "cli.db").touch()
    code, output = invoke("projections", "status", "--database-url", database_url)
    assert code == 1
    assert "eventfold db init" in output
    assert len(output.strip().splitlines()) == 1


def test_a_missing_sqlite_file_is_not_created_by_a_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    code, output = invoke("streams", "list", "--database-url", url)
    assert code == 1
    assert "no database file" in output
    assert not (tmp_path / "absent.db").exists()


# -- the root command ------------------------------------------------------------------------


def test_version_prints_the_installed_version() -> None:
    code, output = invoke("--version")
    assert code == 0
    assert output.strip() == f"eventfold {metadata.version('eventfold')}"


def test_shell_completion_can_be_shown() -> None:
    assert "--show-completion" in invoke("--help")[1]


# -- listings as JSON ------------------------------------------------------------------------


def test_streams_list_json_is_an_array_of_streams(shop_url: str) -> None:
    code, output = invoke("streams", "list", "--database-url", shop_url, "--json")
    assert code == 0
    rows = {row["stream_id"]: row for row in json.loads(output)}
    assert rows["Order-o-1001"]["version"] == 5


def test_projections_status_json_has_the_checkpoint_and_lag(shop_url: str) -> None:
    code, output = invoke("projections", "status", "--database-url", shop_url, "--json")
    assert code == 0
    assert json.loads(output) == [
        {
            "name": "order-summaries",
            "state": "caught up",
            "position": 22,
            "events_behind": 0,
            "not_yet_readable": 0,
            "seconds_behind": 0.0,
            "readable_head": 22,
            "committed_head": 22,
            "blocker": None,
            "parked": None,
        }
    ]


def test_streams_show_json_has_each_event_with_its_payload(shop_url: str) -> None:
    code, output = invoke("streams", "show", "Order-o-1001", "--database-url", shop_url, "--json")
    assert code == 0
    events = json.loads(output)
    assert [e["version"] for e in events] == [1, 2, 3, 4, 5]
    assert events[-1]["type"] == "shop.OrderCancelled"


# -- db sql and db check ---------------------------------------------------------------------


def test_db_sql_prints_the_ddl_of_every_table_in_the_schema_asked_for() -> None:
    code, output = invoke("db", "sql", "--dialect", "postgresql", "--schema", "app")
    assert code == 0
    assert "CREATE SCHEMA IF NOT EXISTS app;" in output
    for table in ("events", "outbox", "inbox", "checkpoints", "snapshots", "documents"):
        assert f"CREATE TABLE IF NOT EXISTS app.eventfold_{table} (" in output


def test_db_sql_for_sqlite_creates_a_database_db_check_finds_complete(tmp_path: Path) -> None:
    code, ddl = invoke("db", "sql", "--dialect", "sqlite")
    assert code == 0
    with closing(sqlite3.connect(tmp_path / "ddl.db")) as connection:
        connection.executescript(ddl)
    code, output = invoke("db", "check", "--database-url", f"sqlite:///{tmp_path / 'ddl.db'}")
    assert code == 0, output
    assert "has every table, column and index" in output


def test_db_check_names_a_missing_table_and_an_extra_column(database_url: str) -> None:
    assert invoke("db", "init", "--database-url", database_url)[0] == 0
    execute(
        database_url, "DROP TABLE eventfold_snapshots", "ALTER TABLE eventfold_inbox ADD note TEXT"
    )
    code, output = invoke("db", "check", "--database-url", database_url, "--json")
    assert code == 1
    assert json.loads(output) == [
        {"table": "eventfold_inbox", "kind": "extra column", "name": "note"},
        {"table": "eventfold_snapshots", "kind": "missing table", "name": "eventfold_snapshots"},
    ]


# -- projections reset, retry, skip ----------------------------------------------------------


def checkpoint(url: str) -> int:
    rows = json.loads(invoke("projections", "status", "--database-url", url, "--json")[1])
    return int(rows[0]["position"])


def test_projections_reset_empties_the_read_model_and_moves_the_checkpoint_to_the_start(
    shop_url: str,
) -> None:
    code, output = invoke(
        "projections", "reset", "order-summaries", "--database-url", shop_url, "--app", SHOP
    )
    assert code == 0, output
    assert checkpoint(shop_url) == 0
    assert execute(shop_url, "SELECT count(*) AS n FROM shop_order_summaries") == [{"n": 0}]


def test_projections_retry_applies_the_events_after_the_checkpoint(shop_url: str) -> None:
    invoke("projections", "reset", "order-summaries", "--database-url", shop_url, "--app", SHOP)
    code, output = invoke(
        "projections", "retry", "order-summaries", "--database-url", shop_url, "--app", SHOP
    )
    assert code == 0, output
    assert "22 events applied" in output
    assert checkpoint(shop_url) == 22


# -- snapshots -------------------------------------------------------------------------------


def test_snapshots_take_saves_the_streams_state_at_its_version(shop_url: str) -> None:
    invoke("snapshots", "drop", "--all", "--database-url", shop_url)
    code, output = invoke(
        "snapshots", "take", "Order-o-1001", "--database-url", shop_url, "--app", SHOP
    )
    assert code == 0, output
    rows = json.loads(invoke("snapshots", "list", "--database-url", shop_url, "--json")[1])
    assert [(r["stream_id"], r["version"]) for r in rows] == [("Order-o-1001", 5)]


def test_snapshots_drop_deletes_only_the_streams_named(shop_url: str) -> None:
    invoke("snapshots", "drop", "--all", "--database-url", shop_url)
    invoke("snapshots", "take", "Order-o-1001", "--database-url", shop_url, "--app", SHOP)
    invoke("snapshots", "take", "Order-o-1002", "--database-url", shop_url, "--app", SHOP)
    code, output = invoke("snapshots", "drop", "Order-o-1001", "--database-url", shop_url)
    assert code == 0, output
    rows = json.loads(invoke("snapshots", "list", "--database-url", shop_url, "--json")[1])
    assert [r["stream_id"] for r in rows] == ["Order-o-1002"]


def test_snapshots_take_of_a_stream_no_type_keeps_is_one_line(shop_url: str) -> None:
    code, output = invoke("snapshots", "take", "Nope-1", "--database-url", shop_url, "--app", SHOP)
    assert code == 1
    assert "no event-sourced type" in output


# -- inbox -----------------------------------------------------------------------------------


def test_inbox_purge_forgets_entries_older_than_the_duration_only(database_url: str) -> None:
    assert invoke("db", "init", "--database-url", database_url)[0] == 0
    asyncio.run(mark_processed(database_url, "mailer", 2))
    assert (
        "purged 0 inbox entries"
        in invoke("inbox", "purge", "--older-than", "1h", "--database-url", database_url)[1]
    )
    rows = json.loads(invoke("inbox", "status", "--database-url", database_url, "--json")[1])
    assert [(r["handler_name"], r["processed"]) for r in rows] == [("mailer", 2)]
    code, output = invoke("inbox", "purge", "--older-than", "0s", "--database-url", database_url)
    assert code == 0, output
    assert "purged 2 inbox entries" in output


def test_inbox_purge_with_a_malformed_duration_is_one_line(database_url: str) -> None:
    code, output = invoke("inbox", "purge", "--older-than", "soon", "--database-url", database_url)
    assert code == 2
    assert "not a duration" in output


# -- helpers ---------------------------------------------------------------------------------


def execute(url: str, *statements: str) -> list[dict[str, object]]:
    async def work() -> list[dict[str, object]]:
        storage = storage_from_url(url)
        try:
            rows: list[dict[str, object]] = []
            for statement in statements:
                async with storage.transaction() as session:
                    rows = await session.execute_sql(text(statement))  # type: ignore[attr-defined]
            return rows
        finally:
            await storage.close()

    return asyncio.run(work())


async def mark_processed(url: str, handler: str, count: int) -> None:
    storage = storage_from_url(url)
    try:
        async with storage.transaction() as session:
            for _ in range(count):
                await session.mark_processed(uuid4(), handler)
    finally:
        await storage.close()


# -- a parked projection ---------------------------------------------------------------------


async def _park_a_projection(url: str) -> str:
    """A projection named 'failing' parked on its first event; returns the event's id."""

    class Failing(Projection):
        name = "failing"

        async def apply_Deposited(self, event: Deposited, context: object) -> None:
            raise ValueError("cannot handle it")

    storage = storage_from_url(url)
    try:
        await storage.create_schema()
        registry = EventRegistry([Deposited])
        await _append(storage, registry, Deposited("a", 5))
        with pytest.raises(ProjectionFailedError) as failure:
            await ProjectionRunner(storage, registry, [Failing()]).catch_up("failing")
        return str(failure.value.event_id)
    finally:
        await storage.close()


def test_projections_status_shows_a_parked_projection_with_its_event_and_error(
    database_url: str,
) -> None:
    event_id = asyncio.run(_park_a_projection(database_url))
    code, output = invoke("projections", "status", "--database-url", database_url)
    assert code == 0
    assert "parked" in output
    assert f"failing: parked at position 1 on Deposited {event_id}" in output
    assert "ValueError: cannot handle it" in output
    code, output = invoke("projections", "status", "--database-url", database_url, "--json")
    [row] = json.loads(output)
    assert (row["parked"]["event_id"], row["parked"]["error"]) == (
        event_id,
        "ValueError: cannot handle it",
    )


def test_projections_skip_records_the_reason_and_unparks(database_url: str) -> None:
    event_id = asyncio.run(_park_a_projection(database_url))
    code, output = invoke(
        "projections", "skip", "failing", "--reason", "bad import",
        "--event-id", event_id, "--database-url", database_url,
    )  # fmt: skip
    assert code == 0, output
    assert "bad import" in output
    code, output = invoke("projections", "retry", "failing", "--database-url", database_url)
    assert code == 1
    assert "not parked" in output


def test_projections_retry_unparks_a_parked_projection(database_url: str) -> None:
    event_id = asyncio.run(_park_a_projection(database_url))
    code, output = invoke("projections", "retry", "failing", "--database-url", database_url)
    assert code == 0, output
    assert event_id in output


def test_projections_skip_refuses_an_event_id_that_is_not_a_uuid(database_url: str) -> None:
    asyncio.run(_park_a_projection(database_url))
    code, output = invoke(
        "projections", "skip", "failing", "--reason", "x", "--event-id", "nope",
        "--database-url", database_url,
    )  # fmt: skip
    assert code == 1
    assert "not an event id" in output


# Only PostgreSQL lets writers commit concurrently, so only there can events wait.
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_projections_status_shows_events_held_back_and_the_transaction_holding_them(
    shop_url: str,
) -> None:

    async def status_while_a_writer_is_open() -> tuple[str, str, int]:
        storage = storage_from_url(shop_url)
        registry = EventRegistry([Deposited])
        try:
            async with storage.transaction() as session:
                rows = await session.execute_sql(text("SELECT pg_backend_pid() AS pid"))
                await session.save_document("notes", "n-1", "{}", expected_version=0)
                async with storage.transaction() as later:
                    for amount in (1, 2):
                        encoded = registry.encode(Deposited("a", amount))
                        record = EventRecord(uuid4(), encoded.type_name, 1, encoded.data, T0)
                        await later.append("account-a", [record], expected_version=amount - 1)
                # The command runs its own event loop: give it a thread.
                status = ("projections", "status", "--database-url", shop_url)
                table = (await asyncio.to_thread(invoke, *status))[1]
                as_json = (await asyncio.to_thread(invoke, *status, "--json"))[1]
                return table, as_json, int(rows[0]["pid"])
        finally:
            await storage.close()

    table, as_json, pid = asyncio.run(status_while_a_writer_is_open())

    assert "2 committed events are not readable yet" in table
    assert f"transaction pid {pid}" in table
    [row] = json.loads(as_json)
    assert (row["not_yet_readable"], row["state"]) == (2, "behind")
    assert row["blocker"]["pid"] == pid
    assert row["committed_head"] > row["readable_head"] == row["position"]
