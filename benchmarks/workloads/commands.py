"""1. Commands that each create an event-sourced aggregate with one event.

eventfold: ``mediator.send(OpenAccount(...))`` through the shipped behaviours (logging,
error mapping, validation) and the ``TransactionBehavior``; the handler adds a new
``Account`` to its repository and the unit of work commits one transaction holding the
event and its outbox row. raw: BEGIN; INSERT event; INSERT outbox row; COMMIT, with the
event encoded by the same pydantic adapter. eventsourcing: ``Bank.open_account``, an
application method that creates an ``Aggregate`` and saves it (one event row).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from benchmarks.backends import Backend
from benchmarks.harness import Context, Row
from benchmarks.model import ADAPTERS, Account, AccountOpened
from benchmarks.peer import Bank
from benchmarks.workloads.common import REGISTRY, Op, interleaved_pair, now, row, targets
from eventfold import (
    CommandHandler,
    DataSource,
    Mediator,
    OperationResult,
    PersistenceModel,
    TransactionBehavior,
    UnitOfWork,
    default_behaviors,
)


@dataclass(frozen=True, slots=True)
class OpenAccount:
    """Open a new account."""

    account_id: str
    owner: str


class OpenAccountHandler(CommandHandler[OpenAccount, str]):
    """Creates the aggregate; the unit of work saves it."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._accounts = uow.event_sourced(Account)

    async def handle(self, command: OpenAccount, /) -> OperationResult[str]:
        self._accounts.add(Account.open(command.account_id, command.owner))
        return self.created(command.account_id)


def build_mediator(storage: Any) -> Mediator:
    """The application as a user wires it: model, data source, behaviours, handler."""
    model = PersistenceModel()
    model.event_sourced(Account)
    source = DataSource("main", storage, model, REGISTRY)
    mediator = Mediator([*default_behaviors(), TransactionBehavior(source.unit_of_work)])
    mediator.register(OpenAccount, lambda context: OpenAccountHandler(UnitOfWork.of(context)))
    return mediator


async def run(context: Context, backend: Backend) -> list[Row]:
    """Workload 1."""
    count = context.n(2000, 100)

    async def eventfold(storage: Any) -> Op:
        mediator = build_mediator(storage)

        async def op(i: int) -> None:
            result = await mediator.send(OpenAccount(f"acc-{i}", "Ada"))
            assert result.status == 201, result

        return op

    async def raw(store: Any) -> Op:
        adapter = ADAPTERS["AccountOpened"]

        async def op(i: int) -> None:
            account_id = f"acc-{i}"
            data = adapter.dump_json(AccountOpened(account_id, "Ada", "EUR")).decode()
            event_id, at = uuid.uuid4(), now()
            await store.create(
                (f"Account-{account_id}", 1, event_id, "AccountOpened", 1, data, at),
                (event_id, "AccountOpened", 1, "Account", account_id, data, at),
            )

        return op

    async def peer(app: Bank) -> Op:
        async def op(i: int) -> None:
            app.open_account(f"acc-{i}", "Ada")

        return op

    values = await interleaved_pair(context, backend, eventfold, raw, count, es_setup=peer)
    return [
        row(
            "1. create aggregate per command",
            backend,
            f"{count} commands",
            "commands/s",
            values,
            **targets(backend, raw_sqlite=0.5, raw_postgres=0.75, peer_sqlite=1.2),
        )
    ]
