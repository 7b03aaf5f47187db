"""The domain the workloads use: a bank account with two small events."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter

from eventfold import AggregateRoot, EventRegistry, event_type
from eventfold.ports import OutboxMessage


@event_type("AccountOpened")
@dataclass(frozen=True, slots=True)
class AccountOpened:
    """A new account."""

    account_id: str
    owner: str
    currency: str


@event_type("Deposited")
@dataclass(frozen=True, slots=True)
class Deposited:
    """Money paid in."""

    account_id: str
    amount: int
    reference: str


@dataclass
class AccountState:
    """What the account knows."""

    owner: str = ""
    currency: str = ""
    balance: int = 0
    deposits: int = 0

    def apply_AccountOpened(self, event: AccountOpened) -> None:  # noqa: N802
        self.owner = event.owner
        self.currency = event.currency

    def apply_Deposited(self, event: Deposited) -> None:  # noqa: N802
        self.balance += event.amount
        self.deposits += 1


class Account(AggregateRoot[AccountState, str]):
    """An event-sourced account."""

    @classmethod
    def open(cls, account_id: str, owner: str) -> Account:
        account = cls(account_id)
        account.record(AccountOpened(account_id, owner, "EUR"))
        return account

    def deposit(self, amount: int, reference: str) -> None:
        self.record(Deposited(self.id, amount, reference))


def make_registry() -> EventRegistry:
    """The registry every eventfold workload uses."""
    return EventRegistry([AccountOpened, Deposited])


# The raw side encodes and decodes with the same pydantic adapters eventfold uses, so the
# comparison measures the framework around the driver, not a faster JSON library.
ADAPTERS: dict[str, TypeAdapter[object]] = {
    "AccountOpened": TypeAdapter(AccountOpened),
    "Deposited": TypeAdapter(Deposited),
}


def deposit(account_id: str, number: int) -> Deposited:
    """The ``number``-th deposit of an account."""
    return Deposited(account_id, 100 + number % 900, f"ref-{number:08d}")


def relay_message(aggregate_id: str, n: int) -> OutboxMessage:
    """An outbox row of aggregate ``aggregate_id`` with payload ``{"n": n}``, a day old."""
    return OutboxMessage(
        event_id=uuid.uuid4(),
        type_name="ThingHappened",
        schema_version=1,
        aggregate_type="Thing",
        aggregate_id=aggregate_id,
        data=json.dumps({"n": n}),
        occurred_at=datetime.now(UTC) - timedelta(days=1),
    )
