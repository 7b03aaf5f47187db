"""``eventfold sagas`` on SQLite and PostgreSQL: list, show, resolve and retry interventions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from eventfold.application.messaging.sagas import SagaStatus
from eventfold.cli import _common
from tests.conftest import POSTGRES_DSN, drop_schema, require_service, unique_name
from tests.support import saga_app

runner = CliRunner()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A database of each SQL backend holding one saga that waits for a person."""
    monkeypatch.setattr(_common.out, "width", 200)
    monkeypatch.setitem(saga_app.REFUND_FAILS, "now", True)
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sagas.db'}"
    else:
        require_service("postgres")
        schema = unique_name("cli_sagas")
        url = f"{POSTGRES_DSN}?schema={schema}"
    asyncio.run(_stuck_saga(url))
    yield url
    if schema is not None:
        asyncio.run(drop_schema(schema))


async def _stuck_saga(url: str) -> None:
    orchestrator = saga_app.make(url)
    await orchestrator.storage.create_schema()
    state = await orchestrator.start(saga_app.SAGA, saga_app.Payment("o-1"), saga_id="pay-o-1")
    assert state.status is SagaStatus.NEEDS_INTERVENTION
    await orchestrator.storage.close()


async def _status(url: str) -> SagaStatus:
    orchestrator = saga_app.make(url)
    state = await orchestrator.get("pay-o-1")
    await orchestrator.storage.close()
    assert state is not None
    return state.status


def invoke(*args: str) -> tuple[int, str]:
    from eventfold.cli import app  # noqa: PLC0415 - mounted on first use

    result = runner.invoke(app, ["sagas", *args])
    return result.exit_code, result.output


def test_list_shows_the_instances_waiting_for_a_person(database_url: str) -> None:
    code, output = invoke("list", "--status", "needs_intervention", "--database-url", database_url)
    assert code == 0
    assert "pay-o-1" in output
    assert "the payment service is down" in output


def test_list_json_gives_each_instance_for_scripts(database_url: str) -> None:
    code, output = invoke("list", "--json", "--database-url", database_url)
    assert code == 0
    [row] = json.loads(output)
    assert (row["saga_id"], row["status"], row["failed_step"]) == (
        "pay-o-1",
        "needs_intervention",
        "ship",
    )


def test_show_tells_the_history_of_an_instance(database_url: str) -> None:
    code, output = invoke("show", "pay-o-1", "--database-url", database_url)
    assert code == 0
    assert "needs_intervention" in output
    assert "no courier" in output


def test_resolve_closes_an_instance_with_the_note_in_its_history(database_url: str) -> None:
    code, _ = invoke(
        "resolve", "pay-o-1", "--note", "refunded by hand", "--database-url", database_url
    )
    assert code == 0
    assert asyncio.run(_status(database_url)) is SagaStatus.RESOLVED
    assert "refunded by hand" in invoke("show", "pay-o-1", "--database-url", database_url)[1]


def test_retry_runs_the_compensations_again_once_the_cause_is_fixed(database_url: str) -> None:
    saga_app.REFUND_FAILS["now"] = False
    code, output = invoke(
        "retry",
        "pay-o-1",
        "--orchestrator",
        "tests.support.saga_app:make",
        "--database-url",
        database_url,
    )
    assert (code, "compensated" in output) == (0, True)
    assert asyncio.run(_status(database_url)) is SagaStatus.COMPENSATED


def test_retry_without_the_orchestrator_says_what_to_pass(database_url: str) -> None:
    code, output = invoke("retry", "pay-o-1", "--database-url", database_url)
    assert code == 1
    assert "--orchestrator" in output
    assert asyncio.run(_status(database_url)) is SagaStatus.NEEDS_INTERVENTION


def test_show_of_an_unknown_instance_is_one_line_and_exit_1(database_url: str) -> None:
    code, output = invoke("show", "nope", "--database-url", database_url)
    assert code == 1
    assert "no saga instance 'nope'" in output
