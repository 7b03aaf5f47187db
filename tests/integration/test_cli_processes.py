"""``eventfold processes`` on SQLite and PostgreSQL: list, show, resolve and retry."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eventfold.application.messaging.processes import ProcessInstance
from eventfold.cli import _common
from tests.conftest import POSTGRES_DSN, drop_schema, require_service, unique_name
from tests.support import process_app

runner = CliRunner()
FAILED = uuid.UUID("00000000-0000-4000-8000-000000000001")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A database of each SQL backend holding one process instance that waits for a person."""
    monkeypatch.setattr(_common.out, "width", 200)
    monkeypatch.setitem(process_app.PACKING_FAILS, "now", True)
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'processes.db'}"
    else:
        require_service("postgres")
        schema = unique_name("cli_processes")
        url = f"{POSTGRES_DSN}?schema={schema}"
    asyncio.run(_stuck_instance(url))
    yield url
    if schema is not None:
        asyncio.run(drop_schema(schema))


async def _stuck_instance(url: str) -> None:
    process_runner = process_app.make(url)
    await process_runner.storage.create_schema()
    await process_runner.handle(process_app.OrderPacked("o-1"), event_id=FAILED)
    await process_runner.handle(process_app.OrderLabelled("o-1"), event_id=uuid.uuid4())
    await process_runner.storage.close()


async def _instance(url: str) -> ProcessInstance:
    process_runner = process_app.make(url)
    instance = await process_runner.get("packing", "o-1")
    await process_runner.storage.close()
    assert instance is not None
    return instance


def invoke(*args: str) -> tuple[int, str]:
    from eventfold.cli import app  # noqa: PLC0415 - mounted on first use

    result = runner.invoke(app, ["processes", *args])
    return result.exit_code, result.output


def test_list_shows_the_instances_waiting_for_a_person(database_url: str) -> None:
    code, output = invoke("list", "--database-url", database_url)
    assert code == 0
    assert "packing" in output
    assert "the warehouse is down" in output


def test_list_json_gives_the_failed_event_of_each_instance(database_url: str) -> None:
    code, output = invoke("list", "--json", "--database-url", database_url)
    assert code == 0
    [row] = json.loads(output)
    assert (row["key"], row["failed_event"], row["event_id"], row["waiting"]) == (
        "o-1",
        "CliOrderPacked",
        str(FAILED),
        1,
    )


def test_show_tells_the_error_and_the_events_waiting(database_url: str) -> None:
    code, output = invoke("show", "packing", "o-1", "--database-url", database_url)
    assert code == 0
    assert "needs_intervention" in output
    assert "events waiting behind it: 1" in output


def test_resolve_goes_on_past_the_failed_event_with_the_note_kept(database_url: str) -> None:
    code, _ = invoke(
        "resolve",
        "packing",
        "o-1",
        "--note",
        "packed by hand",
        "--runner",
        "tests.support.process_app:make",
        "--database-url",
        database_url,
    )
    assert code == 0
    instance = asyncio.run(_instance(database_url))
    assert (instance.status, instance.state["steps"]) == ("active", ["labelled"])
    assert "packed by hand" in invoke("show", "packing", "o-1", "--database-url", database_url)[1]


def test_retry_applies_the_failed_event_again_once_the_cause_is_fixed(database_url: str) -> None:
    process_app.PACKING_FAILS["now"] = False
    code, output = invoke(
        "retry",
        "packing",
        "o-1",
        "--runner",
        "tests.support.process_app:make",
        "--database-url",
        database_url,
    )
    assert (code, "active" in output) == (0, True)
    instance = asyncio.run(_instance(database_url))
    assert instance.state["steps"] == ["packed", "labelled"]


def test_retry_without_the_runner_says_what_to_pass(database_url: str) -> None:
    code, output = invoke("retry", "packing", "o-1", "--database-url", database_url)
    assert code == 1
    assert "--runner" in output
    assert asyncio.run(_instance(database_url)).status == "needs_intervention"


def test_resolving_an_instance_that_needs_no_person_is_one_line_and_exit_1(
    database_url: str,
) -> None:
    process_app.PACKING_FAILS["now"] = False
    args = ("--runner", "tests.support.process_app:make", "--database-url", database_url)
    assert invoke("retry", "packing", "o-1", *args)[0] == 0
    code, output = invoke("resolve", "packing", "o-1", "--note", "again", *args)
    assert code == 1
    assert "not waiting for intervention" in output


def test_show_of_an_unknown_instance_is_one_line_and_exit_1(database_url: str) -> None:
    code, output = invoke("show", "packing", "nope", "--database-url", database_url)
    assert code == 1
    assert "no packing process instance 'nope'" in output
