"""``eventfold dead-letters``: what a broker group's consumers gave up on; requeue, purge.

Every command takes ``--broker-url`` (``EVENTFOLD_BROKER_URL``), ``--name`` (the
exchange, stream or key prefix, as given to the broker) and ``--group``. ``requeue``
and ``purge`` take ``--event-id`` (repeatable) or ``--all``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from uuid import UUID

import typer

from eventfold.cli._common import JsonOption, fail, out, print_rows, run

if TYPE_CHECKING:
    from eventfold.ports import DeadLetter, MessageBroker

__all__ = ["app"]

T = TypeVar("T")
BROKER_URLS = "amqp://user:pass@host:5672/, nats://host:4222, redis://host:6379/0 or memory"

app = typer.Typer(
    help="Broker consumers' dead letters: list, requeue, purge.", no_args_is_help=True
)

BrokerUrl = Annotated[
    str, typer.Option("--broker-url", envvar="EVENTFOLD_BROKER_URL", help=BROKER_URLS)
]
Name = Annotated[str, typer.Option(help="Exchange, stream or key prefix name.")]
Group = Annotated[str, typer.Option(help="The consumer group.")]
EventIds = Annotated[
    list[str] | None, typer.Option("--event-id", help="A dead letter's event id (repeatable).")
]
All = Annotated[bool, typer.Option("--all", help="Every dead letter of the group.")]


def _on_broker(broker_url: str, name: str, work: Callable[[MessageBroker], Awaitable[T]]) -> T:
    """Run ``work`` on the broker the URL names, then close it."""

    async def main() -> T:
        from eventfold.cli_outbox import broker_from_url

        broker = broker_from_url(broker_url, name=name)
        try:
            return await work(broker)
        finally:
            await broker.close()

    return run(main)


def _chosen(event_ids: list[str] | None, *, every: bool) -> list[UUID] | None:
    """The event ids asked for, ``None`` for all; exits 2 when neither or both were given."""
    if every == bool(event_ids):
        raise fail("give --event-id (one or more) or --all", code=2)
    if every:
        return None
    try:
        return [UUID(event_id) for event_id in event_ids or []]
    except ValueError:
        raise fail(f"not an event id in {event_ids}", code=2) from None


def _row(letter: DeadLetter) -> dict[str, Any]:
    message = letter.message
    return {
        "event_id": str(message.event_id),
        "type": message.type_name,
        "aggregate": f"{message.aggregate_type}/{message.aggregate_id}",
        "attempts": letter.attempts,
        "reason": letter.reason,
    }


@app.command("list")
def list_(
    *,
    broker_url: BrokerUrl,
    group: Group,
    name: Name = "eventfold",
    limit: Annotated[int, typer.Option(min=1)] = 100,
    as_json: JsonOption = False,
) -> None:
    """List a group's dead letters, oldest first."""
    from eventfold.application.messaging.dead_letters import list_dead_letters

    letters = _on_broker(broker_url, name, lambda b: list_dead_letters(b, group, limit=limit))
    print_rows(
        [_row(letter) for letter in letters],
        ["event_id", "type", "aggregate", "attempts", "reason"],
        as_json=as_json,
        title=group,
        empty=f"no dead letters in {group}",
    )


@app.command("requeue")
def requeue(
    *,
    broker_url: BrokerUrl,
    group: Group,
    name: Name = "eventfold",
    event_id: EventIds = None,
    every: All = False,
) -> None:
    """Give dead letters back to their group, which tries them afresh."""
    from eventfold.application.messaging.dead_letters import requeue_dead_letters

    chosen = _chosen(event_id, every=every)
    count = _on_broker(broker_url, name, lambda b: requeue_dead_letters(b, group, event_ids=chosen))
    out.print(f"requeued {count} dead letter(s) of {group}")


@app.command("purge")
def purge(
    *,
    broker_url: BrokerUrl,
    group: Group,
    name: Name = "eventfold",
    event_id: EventIds = None,
    every: All = False,
) -> None:
    """Delete dead letters for good."""
    from eventfold.application.messaging.dead_letters import purge_dead_letters

    chosen = _chosen(event_id, every=every)
    count = _on_broker(broker_url, name, lambda b: purge_dead_letters(b, group, event_ids=chosen))
    out.print(f"purged {count} dead letter(s) of {group}")
