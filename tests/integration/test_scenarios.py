"""Command and projection scenarios on every backend, wired by eventfold's pytest plugin."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from eventfold import (
    AggregateRoot,
    CommandHandler,
    DocumentReadModel,
    Entity,
    EventRegistry,
    Mediator,
    OperationResult,
    PersistenceModel,
    Projection,
    ProjectionContext,
    RequestContext,
    RuleViolationError,
    UnitOfWork,
    event_type,
)
from eventfold.testing import CommandScenario, ProjectionScenario


@event_type("test.Deposited")
@dataclass(frozen=True)
class Deposited:
    amount: int


@event_type("test.Renamed")
@dataclass(frozen=True)
class Renamed:
    name: str


@dataclass
class AccountState:
    balance: int = 0

    def apply_Deposited(self, event: Deposited) -> None:
        self.balance += event.amount


class Account(AggregateRoot[AccountState, str]):
    def deposit(self, amount: int) -> None:
        if self.state.balance + amount > 100:
            raise RuleViolationError("at most 100 in an account", field="amount")
        self.record(Deposited(amount))


class Owner(Entity[str]):
    name: str

    def __init__(self, owner_id: str, name: str) -> None:
        super().__init__(owner_id)
        self.name = name

    def rename(self, name: str) -> None:
        self.name = name
        self.record(Renamed(name))


@dataclass(frozen=True)
class Deposit:
    account_id: str
    amount: int


@dataclass(frozen=True)
class Rename:
    owner_id: str
    name: str


class DepositHandler(CommandHandler[Deposit, int]):
    def __init__(self, context: RequestContext) -> None:
        self.accounts = UnitOfWork.of(context).event_sourced(Account)

    async def handle(self, command: Deposit, /) -> OperationResult[int]:
        account = await self.accounts.get(command.account_id)
        if account is None:
            account = Account(command.account_id)
            self.accounts.add(account)
        account.deposit(command.amount)
        return self.ok(account.state.balance)


class RenameHandler(CommandHandler[Rename, None]):
    def __init__(self, context: RequestContext) -> None:
        self.owners = UnitOfWork.of(context).state_stored(Owner)

    async def handle(self, command: Rename, /) -> OperationResult[None]:
        owner = await self.owners.get(command.owner_id)
        assert owner is not None
        owner.rename(command.name)
        return self.ok(None)


@dataclass(frozen=True)
class Balance:
    account_id: str
    balance: int = 0
    deposits: list[int] = field(default_factory=list)


balances = DocumentReadModel("test_balances", Balance, key="account_id")


class Balances(Projection):
    name: ClassVar[str] = "balances"
    read_models = (balances,)

    async def apply_Deposited(self, event: Deposited, context: ProjectionContext) -> None:
        assert context.metadata is not None
        account_id = context.metadata.stream_id.removeprefix("Account-")
        documents = balances.documents(context)
        seen = await documents.get(account_id) or Balance(account_id)
        await documents.put(
            Balance(account_id, seen.balance + event.amount, [*seen.deposits, event.amount])
        )


@pytest.fixture
def storage(any_storage: Any) -> Any:
    return any_storage


@pytest.fixture
def event_registry() -> EventRegistry:
    return EventRegistry([Deposited, Renamed])


@pytest.fixture
def persistence_model() -> PersistenceModel:
    model = PersistenceModel()
    model.event_sourced(Account)
    model.state_stored(Owner)
    return model


@pytest.fixture
def scenario(mediator: Mediator, data_source: Any) -> CommandScenario:
    mediator.register(Deposit, DepositHandler)
    mediator.register(Rename, RenameHandler)
    return CommandScenario(mediator, data_source)


async def test_a_command_scenario_reports_the_result_the_appended_events_and_the_outbox(
    scenario: CommandScenario,
) -> None:
    outcome = await (
        scenario.given(Account, "a-1", Deposited(30), Deposited(20))
        .when(Deposit("a-1", 5), actor="ada")
        .then(status=200, data=55, events=[Deposited(5)], outbox=[Deposited(5)])
    )
    assert [(row.message.aggregate_id, row.message.actor) for row in outcome.outbox_rows] == [
        ("a-1", "ada")
    ]


async def test_a_state_stored_entitys_events_reach_the_outbox_but_no_stream(
    scenario: CommandScenario,
) -> None:
    await (
        scenario.given_stored(Owner("o-1", "Ada"))
        .when(Rename("o-1", "Ada L."))
        .then(status=200, events=[], outbox=[Renamed("Ada L.")])
    )


async def test_a_rejected_command_stores_no_event_and_no_outbox_row(
    scenario: CommandScenario,
) -> None:
    await (
        scenario.given(Account, "a-1", Deposited(90))
        .when(Deposit("a-1", 20))
        .then(status=400, events=[], outbox=[])
    )


async def test_a_command_scenario_fails_when_the_events_differ(scenario: CommandScenario) -> None:
    with pytest.raises(AssertionError, match="expected events"):
        await scenario.when(Deposit("a-1", 5)).then(events=[Deposited(6)])


async def test_a_projection_scenario_shows_the_read_model_after_the_given_events(
    storage: Any, event_registry: EventRegistry
) -> None:
    await (
        ProjectionScenario(Balances(), storage, event_registry)
        .given("Account-a-1", Deposited(10), Deposited(5))
        .given("Account-a-2", Deposited(7))
        .then_documents(balances, Balance("a-2", 7, [7]), Balance("a-1", 15, [10, 5]))
    )


async def test_a_projection_scenario_fails_when_the_read_model_holds_more(
    storage: Any, event_registry: EventRegistry
) -> None:
    scenario = ProjectionScenario(Balances(), storage, event_registry).given(
        "Account-a-1", Deposited(10)
    )
    with pytest.raises(AssertionError, match="also holds"):
        await scenario.then_documents(balances)


async def test_a_projection_scenario_answers_a_query_of_the_read_model(
    storage: Any, event_registry: EventRegistry
) -> None:
    await (
        ProjectionScenario(Balances(), storage, event_registry)
        .given("Account-a-1", Deposited(10))
        .then(lambda session: balances.get(session, "a-1"), Balance("a-1", 10, [10]))
    )
