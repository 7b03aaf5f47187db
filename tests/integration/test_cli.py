"""The eventfold command on SQLite and PostgreSQL, and its one-line errors."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from examples.shop.demo import run_demo
from rich.console import Console
from typer.testing import CliRunner

from eventfold.cli import app
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
    assert "position 11" in output


def test_projections_rebuild_replays_the_log_through_the_application(shop_url: str) -> None:
    code, output = invoke(
        "projections", "rebuild", "order-summaries", "--database-url", shop_url, "--app", SHOP
    )
    assert code == 0, output
    assert "rebuilt order-summaries: 11 events replayed" in output


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
