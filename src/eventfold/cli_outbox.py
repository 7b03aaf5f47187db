"""``eventfold outbox``: run the relay as its own process, watch it, handle dead letters.

``run`` relays until SIGTERM or SIGINT, then finishes the batch in hand and exits 0
(``--drain``: until no row is due). ``purge --older-than 7d`` deletes rows published
longer ago than that.
Every command takes ``--database-url`` (``EVENTFOLD_DATABASE_URL``); ``run`` also takes
``--broker-url`` (``EVENTFOLD_BROKER_URL``): ``amqp://...``, ``nats://...``,
or ``redis://...``. ``run`` logs (logger ``eventfold.outbox``) a start-up line, the
rows relayed every ``--report-every`` seconds, and a stop line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.table import Table

from eventfold.adapters.url import SUPPORTED_URLS, storage_from_url
from eventfold.application.messaging.outbox import OutboxRelay, RetryPolicy
from eventfold.cli._common import JsonOption, fail, print_rows
from eventfold.cli._common import run as _run
from eventfold.errors import ConfigurationError, EventfoldError
from eventfold.ports import MessageBroker, OutboxEntry, OutboxRelayStore, Storage

__all__ = [
    "app",
    "broker_from_url",
    "parse_duration",
    "relay_store_for",
    "report_relay",
    "serve_relay",
]

T = TypeVar("T")
BROKER_URLS = "amqp://user:pass@host:5672/, nats://host:4222, redis://host:6379/0 or memory"
_log = logging.getLogger("eventfold.outbox")

app = typer.Typer(help="The outbox relay and its dead letters.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

DatabaseUrl = Annotated[
    str,
    typer.Option("--database-url", envvar="EVENTFOLD_DATABASE_URL", help=SUPPORTED_URLS),
]
BrokerUrl = Annotated[
    str, typer.Option("--broker-url", envvar="EVENTFOLD_BROKER_URL", help=BROKER_URLS)
]


def relay_store_for(storage: Storage) -> OutboxRelayStore:
    """The relay store of one of eventfold's storages."""
    # Each backend is imported here, not at the top: its driver is an optional extra.
    from eventfold.adapters.memory import MemoryStorage, create_memory_outbox_store  # noqa: PLC0415

    if isinstance(storage, MemoryStorage):
        return create_memory_outbox_store(storage)
    backend = type(storage).__module__
    if backend.startswith("eventfold.adapters.postgres"):
        from eventfold.adapters.postgres import (  # noqa: PLC0415
            PostgresStorage,
            create_postgres_outbox_store,
        )

        if isinstance(storage, PostgresStorage):
            return create_postgres_outbox_store(storage)
    if backend.startswith("eventfold.adapters.sqlite"):
        from eventfold.adapters.sqlite import SqliteStorage, create_sqlite_outbox_store  # noqa: PLC0415

        if isinstance(storage, SqliteStorage):
            return create_sqlite_outbox_store(storage)
    msg = f"no outbox relay store for {type(storage).__qualname__}"
    raise ConfigurationError(msg)


def broker_from_url(url: str, *, name: str = "eventfold") -> MessageBroker:
    """A broker for ``url``; ``name`` is the exchange, stream prefix or subject prefix."""
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("amqp", "amqps"):
        from eventfold.adapters.rabbitmq import create_rabbitmq_broker  # noqa: PLC0415

        return create_rabbitmq_broker(url, exchange=name)
    if scheme in ("nats", "tls"):
        from eventfold.adapters.nats import create_nats_broker  # noqa: PLC0415

        return create_nats_broker(url, stream=name.upper(), subject_prefix=name)
    if scheme in ("redis", "rediss"):
        from eventfold.adapters.redis import create_redis_streams_broker  # noqa: PLC0415

        return create_redis_streams_broker(url, prefix=name)
    if scheme == "memory":
        from eventfold.adapters.memory import create_memory_broker  # noqa: PLC0415

        return create_memory_broker()
    msg = f"unsupported broker URL scheme {scheme!r}: use {BROKER_URLS}"
    raise ConfigurationError(msg)


async def serve_relay(relay: OutboxRelay) -> None:
    """Run ``relay`` until SIGTERM or SIGINT, then let it finish its batch."""
    loop = asyncio.get_running_loop()
    stopping: set[asyncio.Task[None]] = set()

    def request_stop() -> None:
        stopping.add(loop.create_task(relay.stop()))

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop)
    # The relay runs in a task of its own: past its grace period, ``stop()`` cancels the
    # task that runs it and waits for it, which must not be the task waiting for ``stop()``.
    runner = loop.create_task(relay.run(), name="eventfold-outbox-relay")
    try:
        await asyncio.wait({runner})
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if not runner.done():  # this task was cancelled: take the relay down with it
            runner.cancel()
            await asyncio.wait({runner})
        if stopping:
            await asyncio.gather(*stopping)
    if not runner.cancelled():  # cancelled by stop(): its batch was released, not lost
        runner.result()


async def _with_store(database_url: str, work: Callable[[OutboxRelayStore], Awaitable[T]]) -> T:
    storage = storage_from_url(database_url)
    try:
        return await work(relay_store_for(storage))
    finally:
        await storage.close()


@app.command("run")
def run(
    *,
    database_url: DatabaseUrl,
    broker_url: BrokerUrl,
    name: Annotated[str, typer.Option(help="Exchange, stream or prefix name.")] = "eventfold",
    batch_size: Annotated[int, typer.Option(min=1)] = 500,
    poll_interval: Annotated[float, typer.Option(min=0.01)] = 0.5,
    max_attempts: Annotated[int, typer.Option(min=1)] = 10,
    publish_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds a batch may take to publish; the batch's database transaction "
            "stays open no longer, and a slower broker counts as unreachable.",
        ),
    ] = 10.0,
    report_every: Annotated[
        float, typer.Option(min=0.1, help="Seconds between two log lines counting rows relayed.")
    ] = 60.0,
    drain: Annotated[
        bool, typer.Option("--drain", help="Relay the rows due now, then exit.")
    ] = False,
) -> None:
    """Relay outbox rows until SIGTERM or SIGINT; with --drain, until none is due."""
    if broker_url.split(":", 1)[0].lower() == "memory":
        # Rows relayed into a broker that lives in this process would be marked published
        # and lost with it: refuse rather than lose them.
        raise fail(
            "the memory broker lives in this process only: relayed rows would be marked "
            f"published and lost when it exits; use {BROKER_URLS.removesuffix(' or memory')}",
            code=2,
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    async def work() -> None:
        storage = storage_from_url(database_url)
        broker = broker_from_url(broker_url, name=name)
        relay = OutboxRelay(
            relay_store_for(storage),
            broker,
            batch_size=batch_size,
            poll_interval=poll_interval,
            retry=RetryPolicy(max_attempts=max_attempts),
            publish_timeout=publish_timeout,
        )
        started = time.monotonic()
        _log.info(
            "outbox relay started: rows of %s to %s (%s), batches of %d, polling every %ss%s",
            storage.name,
            _without_password(broker_url),
            name,
            batch_size,
            poll_interval,
            ", until none is due" if drain else "",
        )
        reporter = asyncio.create_task(report_relay(relay, report_every))
        published = 0
        try:
            if drain:
                while batch := await relay.relay_once():
                    published += batch
                out.print(f"published {published} row(s)")
            else:
                await serve_relay(relay)
        finally:
            reporter.cancel()
            await asyncio.gather(reporter, return_exceptions=True)
            await broker.close()
            await storage.close()
            _log.info(
                "outbox relay stopped: %d row(s) relayed in %.1fs",
                relay.published_total,
                time.monotonic() - started,
            )

    _run(work)


async def report_relay(relay: OutboxRelay, every: float) -> None:
    """Log the rows relayed since the last report, the backlog and the dead letters."""
    last = 0
    while True:
        await asyncio.sleep(every)
        try:
            metrics = await relay.metrics()
        except EventfoldError as exc:  # the database is down: the relay waits it out too
            _log.warning("outbox relay: no count, the database does not answer: %s", exc)
            continue
        _log.info(
            "outbox relay: %d row(s) relayed in the last %ss (%d in all); backlog %d, "
            "dead letters %d",
            metrics.published_total - last,
            every,
            metrics.published_total,
            metrics.backlog,
            metrics.dead_letters,
        )
        last = metrics.published_total


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


@app.command("status")
def status(database_url: DatabaseUrl, as_json: JsonOption = False) -> None:
    """Backlog, age of the oldest unpublished row, dead letters."""
    stats = _run(lambda: _with_store(database_url, lambda store: store.outbox_stats()))
    oldest = stats.oldest_unpublished_at
    seconds = None if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
    if as_json:
        row = {"backlog": stats.backlog, "oldest_unpublished_seconds": seconds, "dead": stats.dead}
        print_rows([row], list(row), as_json=True)
        return
    age = "-" if seconds is None else f"{seconds:.1f}s"
    table = Table("backlog", "oldest unpublished", "dead letters")
    table.add_row(str(stats.backlog), age, str(stats.dead))
    out.print(table)


@app.command("dead-letters")
def dead_letters(
    database_url: DatabaseUrl,
    entry_id: Annotated[int | None, typer.Argument(help="Show this row in full.")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    """List dead rows, or show one in full."""
    if entry_id is not None:
        entry = _run(lambda: _with_store(database_url, lambda store: store.load_entry(entry_id)))
        if entry is None:
            err.print(f"[red]error:[/red] no outbox row {entry_id}")
            raise typer.Exit(1)
        out.print_json(json.dumps(_describe(entry)))
        return
    entries = _run(lambda: _with_store(database_url, lambda store: store.read_dead(limit=limit)))
    if as_json:
        print_rows([_describe(e) for e in entries], [], as_json=True)
        return
    table = Table("id", "type", "aggregate", "attempts", "last error")
    for e in entries:
        aggregate = f"{e.message.aggregate_type}/{e.message.aggregate_id}"
        table.add_row(str(e.id), e.message.type_name, aggregate, str(e.attempts), e.last_error)
    out.print(table)


@app.command("requeue")
def requeue(
    database_url: DatabaseUrl,
    entry_ids: Annotated[list[int] | None, typer.Argument(help="Rows to requeue.")] = None,
    requeue_all: Annotated[bool, typer.Option("--all", help="Requeue every dead row.")] = False,
) -> None:
    """Make dead rows due again, with their attempts reset."""
    if bool(entry_ids) == requeue_all:
        err.print("[red]error:[/red] name row ids or pass --all (not both)")
        raise typer.Exit(2)
    ids = None if requeue_all else entry_ids
    count = _run(lambda: _with_store(database_url, lambda store: store.requeue(ids)))
    out.print(f"requeued {count} row(s)")


@app.command("purge")
def purge(
    database_url: DatabaseUrl,
    older_than: Annotated[
        str,
        typer.Option("--older-than", help="Age of published rows to delete: 30m, 12h, 7d, 1d12h."),
    ],
) -> None:
    """Delete rows published longer ago than --older-than; unpublished and dead rows stay."""
    age = parse_duration(older_than)
    if age is None:
        err.print(
            f"[red]error:[/red] --older-than {older_than!r} is not a duration such as 30m, 12h, 7d",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    cutoff = datetime.now(UTC) - age
    count = _run(lambda: _with_store(database_url, lambda store: store.purge_published(cutoff)))
    out.print(f"purged {count} row(s) published before {cutoff.isoformat(timespec='seconds')}")


_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta | None:
    """``30s``, ``15m``, ``12h``, ``7d``, ``2w`` or a sum such as ``1d12h``; None if not one."""
    compact = text.strip().lower()
    if not compact or _DURATION.sub("", compact):
        return None
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION.findall(compact))
    return timedelta(seconds=seconds)


def _describe(entry: OutboxEntry) -> dict[str, Any]:
    message = entry.message

    def stamp(moment: datetime | None) -> str | None:
        return None if moment is None else moment.isoformat()

    return {
        "id": entry.id,
        "event_id": str(message.event_id),
        "type": message.type_name,
        "schema_version": message.schema_version,
        "aggregate": f"{message.aggregate_type}/{message.aggregate_id}",
        "occurred_at": stamp(message.occurred_at),
        "created_at": stamp(entry.created_at),
        "attempts": entry.attempts,
        "next_attempt_at": stamp(entry.next_attempt_at),
        "published_at": stamp(entry.published_at),
        "dead": entry.dead,
        "last_error": entry.last_error,
        "correlation_id": message.correlation_id,
        "data": json.loads(message.data),
    }


if __name__ == "__main__":
    app()
