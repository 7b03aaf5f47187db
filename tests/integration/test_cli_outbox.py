"""``eventfold outbox`` on SQLite and PostgreSQL: run, status, dead letters, requeue, purge."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from typer.testing import CliRunner

from eventfold.adapters.memory import create_memory_broker
from eventfold.adapters.memory.outbox import create_memory_outbox_store
from eventfold.adapters.rabbitmq import create_rabbitmq_broker
from eventfold.adapters.url import storage_from_url
from eventfold.application.messaging.outbox import OutboxRelay
from eventfold.cli import app
from eventfold.cli_outbox import parse_duration, relay_store_for, report_relay, serve_relay
from eventfold.ports import OutboxRelayStore
from eventfold.testing.contracts.broker import Inbox
from eventfold.testing.contracts.outbox import add_outbox_rows
from tests.conftest import POSTGRES_DSN, RABBITMQ_URL, REDIS_URL, require_service, unique_name
from tests.examples.conftest import drop_postgres_schema
from tests.support.network import closed_port

T = TypeVar("T")
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC)
# The console script's entry point, in a process of its own.
RUN = [sys.executable, "-c", "from eventfold.cli import main; main()", "outbox", "run"]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An initialised database: each SQL backend in turn, removed afterwards."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'outbox.db'}"
        assert invoke("db", "init", "--database-url", url)[0] == 0
        yield url
        return
    require_service("postgres")
    schema = unique_name("cli_outbox")
    url = f"{POSTGRES_DSN}?schema={schema}"
    assert invoke("db", "init", "--database-url", url)[0] == 0
    yield url
    asyncio.run(drop_postgres_schema(schema))


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), terminal_width=200)
    return result.exit_code, result.output


def with_store(url: str, work: Callable[[OutboxRelayStore, Any], Awaitable[T]]) -> T:
    """Run ``work(store, storage)`` on the database at ``url``."""

    async def run() -> T:
        storage = storage_from_url(url)
        try:
            return await work(relay_store_for(storage), storage)
        finally:
            await storage.close()

    return asyncio.run(run())


def add_rows(url: str, *aggregate_ids: str) -> list[Any]:
    return with_store(url, lambda _, storage: add_outbox_rows(storage, *aggregate_ids))


def kill_rows(url: str, count: int, error: str) -> list[int]:
    """Claim ``count`` rows and record each as dead with ``error``; their ids."""

    async def work(store: OutboxRelayStore, _: Any) -> list[int]:
        async with store.claim(limit=count, now=NOW + timedelta(seconds=1)) as claim:
            ids = [entry.id for entry in claim.entries]
            for entry_id in ids:
                await claim.record_failure(
                    entry_id, error=error, next_attempt_at=NOW, dead=True, refused=True
                )
        return ids

    return with_store(url, work)


def stats(url: str) -> Any:
    return with_store(url, lambda store, _: store.outbox_stats())


def table_cells(output: str) -> list[list[str]]:
    """The body rows of a rich table, cell by cell."""
    rows = [line for line in output.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in row.strip("│").split("│")] for row in rows]


# -- status --------------------------------------------------------------------------------


def test_status_of_an_empty_outbox_shows_no_backlog_and_no_dead_rows(database_url: str) -> None:
    code, output = invoke("outbox", "status", "--database-url", database_url)
    assert code == 0, output
    assert table_cells(output) == [["0", "-", "0"]]


def test_status_counts_the_backlog_its_age_and_the_dead_rows(database_url: str) -> None:
    add_rows(database_url, "a-1", "a-2", "a-3")
    kill_rows(database_url, 1, "refused")
    code, output = invoke("outbox", "status", "--database-url", database_url)
    assert code == 0, output
    ((backlog, age, dead),) = table_cells(output)
    assert (backlog, dead) == ("2", "1")
    assert age.endswith("s")
    assert float(age[:-1]) >= 0


# -- run -----------------------------------------------------------------------------------


def drain(database_url: str) -> tuple[int, str]:
    """``outbox run --drain`` to a Redis stream of this test's own."""
    require_service("redis")
    broker = ["--broker-url", REDIS_URL, "--name", unique_name("cli_relay")]
    return invoke("outbox", "run", "--database-url", database_url, *broker, "--drain")


def test_run_drain_publishes_every_due_row_and_exits(database_url: str) -> None:
    add_rows(database_url, "a-1", "a-1", "a-2")
    code, output = drain(database_url)
    assert code == 0, output
    assert "published 3 row(s)" in output
    assert stats(database_url).backlog == 0


def test_run_logs_what_it_relays_from_where_to_where_and_when_it_stops(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    add_rows(database_url, "a-1", "a-2")
    with caplog.at_level(logging.INFO, logger="eventfold.outbox"):
        assert drain(database_url)[0] == 0
    started, *_, stopped = [r.getMessage() for r in caplog.records if r.name == "eventfold.outbox"]
    assert started.startswith("outbox relay started: rows of ")
    assert "to redis://" in started
    assert stopped.startswith("outbox relay stopped: 2 row(s) relayed")


def test_run_refuses_the_memory_broker_which_would_lose_the_rows(database_url: str) -> None:
    add_rows(database_url, "a-1")
    code, output = invoke(
        "outbox", "run", "--database-url", database_url, "--broker-url", "memory", "--drain"
    )
    assert code == 2
    assert "memory broker lives in this process only" in output
    assert stats(database_url).backlog == 1


def test_run_with_an_unknown_broker_scheme_is_one_line(database_url: str) -> None:
    code, output = invoke(
        "outbox", "run", "--database-url", database_url, "--broker-url", "kafka://k:9092"
    )
    assert code == 1
    assert output.strip().startswith("error: unsupported broker URL scheme 'kafka'")
    assert len(output.strip().splitlines()) == 1


def test_run_drain_against_an_unreachable_broker_is_one_line_and_keeps_the_rows(
    database_url: str,
) -> None:
    add_rows(database_url, "a-1")
    broker_url = f"amqp://guest:guest@127.0.0.1:{closed_port()}/"
    code, output = invoke(
        "outbox", "run", "--database-url", database_url, "--broker-url", broker_url, "--drain"
    )
    assert code == 1
    error_lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "unreachable" in error_lines[0] or "rabbitmq" in error_lines[0]
    now = stats(database_url)
    assert (now.backlog, now.dead) == (1, 0)


def test_run_relays_to_rabbitmq_until_sigterm_and_exits_zero(database_url: str) -> None:
    require_service("rabbitmq")
    exchange = unique_name("cli_relay")
    broker = create_rabbitmq_broker(RABBITMQ_URL, exchange=exchange)
    inbox = Inbox()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(broker.subscribe("readers", inbox))
        sent = add_rows(database_url, "a-1", "a-2", "a-1")
        process = subprocess.Popen(
            [*RUN, "--name", exchange, "--poll-interval", "0.05"],
            cwd=ROOT,
            env={
                **os.environ,
                "EVENTFOLD_DATABASE_URL": database_url,
                "EVENTFOLD_BROKER_URL": RABBITMQ_URL,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            received = loop.run_until_complete(inbox.wait_for(3))
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert [m.event_id for m in received] == [m.event_id for m in sent]
        assert stats(database_url).backlog == 0
    finally:
        loop.run_until_complete(broker.close())
        loop.run_until_complete(broker.destroy())
        loop.run_until_complete(broker.close())
        loop.close()


# -- dead letters and requeue --------------------------------------------------------------


def test_dead_letters_lists_each_dead_row_with_its_attempts_and_last_error(
    database_url: str,
) -> None:
    add_rows(database_url, "a-1", "a-2", "a-3")
    first, second = kill_rows(database_url, 2, "PublishError: refused")
    code, output = invoke("outbox", "dead-letters", "--database-url", database_url)
    assert code == 0, output
    assert table_cells(output) == [
        [str(first), "ThingHappened", "Thing/a-1", "1", "PublishError: refused"],
        [str(second), "ThingHappened", "Thing/a-2", "1", "PublishError: refused"],
    ]


def test_dead_letters_shows_one_row_in_full_as_json(database_url: str) -> None:
    (message,) = add_rows(database_url, "a-1")
    (entry_id,) = kill_rows(database_url, 1, "refused")
    code, output = invoke("outbox", "dead-letters", str(entry_id), "--database-url", database_url)
    assert code == 0, output
    shown = json.loads(output)
    assert shown["id"] == entry_id
    assert shown["event_id"] == str(message.event_id)
    assert (shown["dead"], shown["attempts"], shown["last_error"]) == (True, 1, "refused")
    assert shown["data"] == {"n": 0}


def test_dead_letters_of_an_unknown_row_is_one_line(database_url: str) -> None:
    code, output = invoke("outbox", "dead-letters", "999", "--database-url", database_url)
    assert code == 1
    assert output.strip() == "error: no outbox row 999"


def test_requeue_all_makes_every_dead_row_due_again(database_url: str) -> None:
    add_rows(database_url, "a-1", "a-2")
    kill_rows(database_url, 2, "refused")
    code, output = invoke("outbox", "requeue", "--all", "--database-url", database_url)
    assert code == 0, output
    assert "requeued 2 row(s)" in output
    now = stats(database_url)
    assert (now.backlog, now.dead) == (2, 0)


def test_requeue_by_id_requeues_only_that_row(database_url: str) -> None:
    add_rows(database_url, "a-1", "a-2")
    first, _ = kill_rows(database_url, 2, "refused")
    code, output = invoke("outbox", "requeue", str(first), "--database-url", database_url)
    assert code == 0, output
    assert "requeued 1 row(s)" in output
    assert stats(database_url).dead == 1


def test_requeue_without_ids_or_all_is_one_line_and_exit_two(database_url: str) -> None:
    code, output = invoke("outbox", "requeue", "--database-url", database_url)
    assert code == 2
    assert output.strip() == "error: name row ids or pass --all (not both)"


# -- purge ---------------------------------------------------------------------------------


def test_purge_deletes_published_rows_older_than_the_duration_only(database_url: str) -> None:
    add_rows(database_url, "a-1", "a-2")
    assert drain(database_url)[0] == 0
    add_rows(database_url, "a-3")  # unpublished: never purged
    code, output = invoke("outbox", "purge", "--older-than", "1h", "--database-url", database_url)
    assert code == 0, output
    assert "purged 0 row(s)" in output
    code, output = invoke("outbox", "purge", "--older-than", "0s", "--database-url", database_url)
    assert code == 0, output
    assert "purged 2 row(s)" in output
    assert stats(database_url).backlog == 1


def test_purge_with_a_malformed_duration_is_one_line_and_exit_two(database_url: str) -> None:
    code, output = invoke(
        "outbox", "purge", "--older-than", "a week", "--database-url", database_url
    )
    assert code == 2
    assert output.strip().startswith("error: --older-than 'a week' is not a duration")
    assert len(output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("0s", timedelta(0)),
        ("", None),
        ("7", None),
        ("7x", None),
        ("-1d", None),
    ],
)
def test_durations_are_sums_of_numbers_with_units(text: str, expected: timedelta | None) -> None:
    assert parse_duration(text) == expected


# -- errors --------------------------------------------------------------------------------


def test_an_unsupported_database_url_is_one_line() -> None:
    code, output = invoke("outbox", "status", "--database-url", "mysql://db/shop")
    assert code == 1
    assert output.strip().startswith("error: unsupported database URL")
    assert len(output.strip().splitlines()) == 1


def test_an_unreachable_database_is_one_line() -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    code, output = invoke("outbox", "status", "--database-url", url)
    assert code == 1
    assert "is unreachable" in output
    assert len(output.strip().splitlines()) == 1


async def test_serve_relay_returns_when_a_batch_outlasts_the_grace_period_after_sigterm(
    memory_storage: Any,
) -> None:
    entered, never = asyncio.Event(), asyncio.Event()

    class HangingPublisher:
        async def publish(self, messages: object) -> None:
            entered.set()
            await never.wait()

    class ImpatientRelay(OutboxRelay):
        async def stop(self, *, timeout: float = 0.1) -> None:  # noqa: ASYNC109
            await super().stop(timeout=0.1)

    await add_outbox_rows(memory_storage, "a-1")
    store = create_memory_outbox_store(memory_storage)
    serving = asyncio.create_task(serve_relay(ImpatientRelay(store, HangingPublisher())))
    await asyncio.wait_for(entered.wait(), 5)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(serving, 5)
    assert (await store.outbox_stats()).backlog == 1


async def test_run_reports_the_rows_relayed_the_backlog_and_dead_letters_periodically(
    memory_storage: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await add_outbox_rows(memory_storage, "a-1", "a-2")
    relay = OutboxRelay(create_memory_outbox_store(memory_storage), create_memory_broker())
    await relay.relay_once()
    await add_outbox_rows(memory_storage, "a-3")  # still due: the backlog
    with caplog.at_level(logging.INFO, logger="eventfold.outbox"):
        reporting = asyncio.create_task(report_relay(relay, 0.05))
        try:
            async with asyncio.timeout(10):  # waiting for the first report
                while not caplog.records:  # noqa: ASYNC110 - log records signal nothing
                    await asyncio.sleep(0.01)
        finally:
            reporting.cancel()
    assert caplog.records[0].getMessage() == (
        "outbox relay: 2 row(s) relayed in the last 0.05s (2 in all); backlog 1, dead letters 0"
    )


def test_status_json_has_the_backlog_and_the_dead_rows(database_url: str) -> None:
    add_rows(database_url, "a-1", "a-2")
    kill_rows(database_url, 1, "refused")
    code, output = invoke("outbox", "status", "--database-url", database_url, "--json")
    assert code == 0, output
    ((row),) = json.loads(output)
    assert (row["backlog"], row["dead"]) == (1, 1)


def test_dead_letters_json_lists_each_dead_row_with_its_error(database_url: str) -> None:
    add_rows(database_url, "a-1", "a-2")
    (dead,) = kill_rows(database_url, 1, "no route")
    code, output = invoke("outbox", "dead-letters", "--database-url", database_url, "--json")
    assert code == 0, output
    assert [(r["id"], r["last_error"]) for r in json.loads(output)] == [(dead, "no route")]
