"""``eventfold dead-letters`` on Redis Streams: list, requeue, purge a group's dead letters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from eventfold.adapters.redis import create_redis_streams_broker
from eventfold.cli import _common
from eventfold.ports import BrokerMessage
from eventfold.testing.contracts.broker import Inbox, make_message
from tests.conftest import REDIS_URL, require_service, unique_name

pytestmark = pytest.mark.redis
runner = CliRunner()


@pytest.fixture
def prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    require_service("redis")
    # A terminal wide enough that no column wraps.
    monkeypatch.setattr(_common.out, "width", 200)
    name = unique_name("ef")
    yield name
    broker = create_redis_streams_broker(REDIS_URL, prefix=name)

    async def destroy() -> None:
        await broker.destroy()
        await broker.close()

    asyncio.run(destroy())


def invoke(prefix: str, *args: str) -> tuple[int, str]:
    from eventfold.cli import app  # noqa: PLC0415 - the CLI module under test

    options = ["--broker-url", REDIS_URL, "--name", prefix, "--group", "readers"]
    result = runner.invoke(app, ["dead-letters", *args, *options], terminal_width=200)
    return result.exit_code, result.output


def bury(prefix: str, messages: list[BrokerMessage]) -> None:
    """Publish ``messages`` to a group whose handler refuses them until they are dead."""

    async def run() -> None:
        broker = create_redis_streams_broker(REDIS_URL, prefix=prefix)
        try:
            await broker.subscribe("readers", Inbox(fail=lambda _: True), max_deliveries=1)
            await broker.publish(messages)
            async with asyncio.timeout(15):
                # Dead-lettering happens inside the broker: nothing to wait on but asking.
                while len(await broker.read_dead_letters("readers")) < len(messages):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        finally:
            await broker.close()

    asyncio.run(run())


def deliver_again(prefix: str, count: int) -> list[BrokerMessage]:
    """What the group receives once ``count`` messages were given back to it."""

    async def run() -> list[BrokerMessage]:
        broker = create_redis_streams_broker(REDIS_URL, prefix=prefix)
        inbox = Inbox()
        try:
            await broker.subscribe("readers", inbox)
            return await inbox.wait_for(count)
        finally:
            await broker.close()

    return asyncio.run(run())


def test_list_shows_a_groups_dead_letters_with_their_reason(prefix: str) -> None:
    message = make_message()
    bury(prefix, [message])
    code, output = invoke(prefix, "list")
    assert code == 0
    assert str(message.event_id) in output
    assert "handler refused attempt 1" in output


def test_list_json_gives_each_dead_letter_for_scripts(prefix: str) -> None:
    message = make_message()
    bury(prefix, [message])
    code, output = invoke(prefix, "list", "--json")
    assert code == 0
    [row] = json.loads(output)
    assert (row["event_id"], row["attempts"]) == (str(message.event_id), 1)


def test_requeue_gives_the_chosen_dead_letter_back_and_it_is_no_longer_listed(
    prefix: str,
) -> None:
    kept, requeued = make_message(), make_message()
    bury(prefix, [kept, requeued])
    code, output = invoke(prefix, "requeue", "--event-id", str(requeued.event_id))
    assert (code, "requeued 1 dead letter(s) of readers" in output) == (0, True)
    assert deliver_again(prefix, 1) == [requeued]
    listed = invoke(prefix, "list")[1]
    assert str(requeued.event_id) not in listed
    assert str(kept.event_id) in listed


def test_purge_all_deletes_every_dead_letter(prefix: str) -> None:
    bury(prefix, [make_message(), make_message()])
    code, output = invoke(prefix, "purge", "--all")
    assert (code, "purged 2 dead letter(s) of readers" in output) == (0, True)
    assert "OrderPlaced" not in invoke(prefix, "list")[1]


def test_requeue_without_event_ids_or_all_is_refused_and_changes_nothing(prefix: str) -> None:
    message = make_message()
    bury(prefix, [message])
    code, output = invoke(prefix, "requeue")
    assert code == 2
    assert "--event-id" in output
    assert str(message.event_id) in invoke(prefix, "list")[1]
