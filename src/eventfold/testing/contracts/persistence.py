"""The persistence contract: units of work, repositories and snapshots on a real backend.

Subclass :class:`PersistenceContract` and provide two fixtures: ``storage`` and
``second_storage`` (another, independent storage of the same backend, for the test of
several data sources). Backends that run SQL also subclass :class:`SqlTableContract`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from eventfold.application.cqrs.behaviors import ErrorMappingBehavior
from eventfold.application.cqrs.mediator import Mediator, RequestContext
from eventfold.application.cqrs.results import OperationResult
from eventfold.application.persistence.model import (
    PersistenceModel,
    TableMapping,
    non_event_sourced,
)
from eventfold.application.persistence.unit_of_work import (
    DataSource,
    DataSources,
    TransactionBehavior,
    UnitOfWork,
)
from eventfold.domain.aggregate import AggregateRoot
from eventfold.domain.decider import Decider
from eventfold.domain.entity import Entity
from eventfold.domain.errors import RuleViolationError
from eventfold.domain.events import event_type
from eventfold.errors import AggregateNotFoundError, ConcurrencyError, UnregisteredEventError
from eventfold.ports import LOG_START, EventRecord, Storage, StoredEvent
from eventfold.serialization import EventRegistry
from eventfold.testing.contracts.storage import until_readable

__all__ = ["ManualClock", "PersistenceContract", "SqlTableContract"]

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class ManualClock:
    """A clock that says what it is told: ``clock.now = ...`` or ``clock.advance(...)``."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        """The current time."""
        return self.now

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward."""
        self.now += delta


# -- a small domain: accounts are event-sourced, customers state-stored --------------------


@dataclass(frozen=True)
class AccountOpened:
    owner: str


@dataclass(frozen=True)
class Deposited:
    amount: int


@event_type("Withdrawn", version=2)
@dataclass(frozen=True)
class Withdrawn:
    amount: int
    reason: str


@dataclass(frozen=True)
class CreditGranted:
    customer_id: str
    amount: int


@dataclass
class AccountState:
    owner: str = ""
    balance: int = 0
    last_reason: str = ""

    def apply_AccountOpened(self, event: AccountOpened) -> None:  # noqa: N802
        self.owner = event.owner

    def apply_Deposited(self, event: Deposited) -> None:  # noqa: N802
        self.balance += event.amount

    def apply_Withdrawn(self, event: Withdrawn) -> None:  # noqa: N802
        self.balance -= event.amount
        self.last_reason = event.reason


class Account(AggregateRoot[AccountState, str]):
    @classmethod
    def open(cls, account_id: str, owner: str) -> Account:
        account = cls(account_id)
        account.record(AccountOpened(owner))
        return account

    def deposit(self, amount: int) -> None:
        if amount <= 0:
            raise RuleViolationError("a deposit must be positive", field="amount")
        self.record(Deposited(amount))


@non_event_sourced
class Customer(Entity[str]):
    name: str
    credit: int

    def __init__(self, customer_id: str, name: str, credit: int = 0) -> None:
        super().__init__(customer_id)
        self.name = name
        self.credit = credit

    def grant_credit(self, amount: int) -> None:
        self.credit += amount
        self.record(CreditGranted(self.id, amount))


# A decider over the same stores: a counter that refuses to go past a limit.
@dataclass(frozen=True)
class Increment:
    by: int


@dataclass(frozen=True)
class Incremented:
    by: int


def _decide(command: Increment, total: int) -> list[Incremented]:
    if total + command.by > 10:
        raise RuleViolationError("the counter stops at 10")
    return [Incremented(command.by)]


def _evolve(total: int, event: Incremented) -> int:
    return total + event.by


counter: Decider[Increment, int, Incremented] = Decider(_decide, _evolve, lambda: 0)


# -- requests for the transaction behaviour -----------------------------------------------


@dataclass(frozen=True)
class OpenAccount:
    account_id: str
    owner: str
    first_deposit: int = 10


@dataclass(frozen=True)
class OpenInvoicingAccount:
    account_id: str
    owner: str
    data_source: ClassVar[str] = "invoicing_db"


class OpenAccountHandler:
    def __init__(self, context: RequestContext) -> None:
        self._uow = UnitOfWork.of(context)

    async def handle(self, command: OpenAccount | OpenInvoicingAccount) -> OperationResult[str]:
        account = Account.open(command.account_id, command.owner)
        if isinstance(command, OpenAccount):
            account.deposit(command.first_deposit)
        self._uow.repository(Account).add(account)
        return OperationResult.created(account.id)


@dataclass
class Published:
    """Events handed to in-process handlers, and account a-1's stored version at each."""

    events: list[object] = field(default_factory=list)
    stored_then: list[int] = field(default_factory=list)


def read_outbox_types(entries: list[Any]) -> list[tuple[str, str, str]]:
    """(type, aggregate type, aggregate id) of each outbox entry."""
    return [
        (e.message.type_name, e.message.aggregate_type, e.message.aggregate_id) for e in entries
    ]


class PersistenceContract:
    """Async pytest tests of the unit of work and repositories; needs ``storage`` fixtures."""

    @pytest.fixture
    def clock(self) -> ManualClock:
        """A clock the test controls."""
        return ManualClock()

    @pytest.fixture
    def events(self) -> EventRegistry:
        """The event registry, with an upcaster from Withdrawn v1 (no reason) to v2."""
        registry = EventRegistry([AccountOpened, Deposited, Withdrawn, CreditGranted, Incremented])
        registry.register_upcaster("Withdrawn", 1, lambda data: {**data, "reason": "unknown"})
        return registry

    @pytest.fixture
    def published(self) -> Published:
        """What was published in process."""
        return Published()

    def source(
        self,
        storage: Storage,
        events: EventRegistry,
        *,
        clock: Callable[[], datetime] = lambda: T0,
        published: Published | None = None,
        snapshot_every: int | None = None,
        state_version: int = 1,
        name: str = "orders_db",
    ) -> DataSource:
        """A data source over ``storage`` with accounts and customers registered."""
        model = PersistenceModel()
        model.event_sourced(Account, snapshot_every=snapshot_every, state_version=state_version)
        model.register(Customer)

        async def publish(event: object) -> None:
            assert published is not None
            published.events.append(event)
            async with storage.transaction() as session:
                # The stream, not the global log: a log reader may lag behind a commit.
                published.stored_then.append(await session.stream_version("Account-a-1"))

        return DataSource(
            name, storage, model, events, publish=publish if published else None, clock=clock
        )

    async def open_account(
        self, source: DataSource, account_id: str = "a-1", *deposits: int
    ) -> None:
        """Open an account and make each deposit, one unit of work each."""
        async with source.unit_of_work() as uow:
            uow.event_sourced(Account).add(Account.open(account_id, "alice"))
            await uow.commit()
        for amount in deposits:
            async with source.unit_of_work() as uow:
                account = await uow.event_sourced(Account).get_required(account_id)
                account.deposit(amount)
                await uow.commit()

    async def load(self, source: DataSource, account_id: str = "a-1", **when: Any) -> Account:
        """Load an account in a unit of work of its own."""
        async with source.unit_of_work() as uow:
            return await uow.event_sourced(Account).get_required(account_id, **when)

    # -- event-sourced -----------------------------------------------------------------

    async def test_an_event_sourced_aggregate_is_saved_and_loaded_back(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events)
        await self.open_account(source, "a-1", 5, 7)
        account = await self.load(source)
        assert (account.state.owner, account.state.balance, account.version) == ("alice", 12, 3)

    async def test_saved_events_carry_the_request_metadata_and_the_clock_time(
        self, storage: Storage, events: EventRegistry, clock: ManualClock
    ) -> None:
        source = self.source(storage, events, clock=clock)
        context = RequestContext(object(), "corr-9", "cause-9", "bob")
        async with source.unit_of_work(context) as uow:
            uow.event_sourced(Account).add(Account.open("a-1", "alice"))
            await uow.commit()
        stored = await _read(storage, "Account-a-1")
        assert [(e.type_name, e.occurred_at) for e in stored] == [("AccountOpened", T0)]
        assert (stored[0].correlation_id, stored[0].causation_id, stored[0].actor) == (
            "corr-9",
            "cause-9",
            "bob",
        )

    async def test_the_outbox_gets_one_row_per_event_with_the_same_event_id(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        await self.open_account(self.source(storage, events), "a-1", 5)
        stored = await _read(storage, "Account-a-1")
        async with storage.transaction() as session:
            entries = await session.read_outbox(limit=10)
        assert read_outbox_types(entries) == [
            ("AccountOpened", "Account", "a-1"),
            ("Deposited", "Account", "a-1"),
        ]
        assert [e.message.event_id for e in entries] == [e.event_id for e in stored]

    async def test_an_unknown_id_gives_none_from_get(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        async with self.source(storage, events).unit_of_work() as uow:
            assert await uow.event_sourced(Account).get("nobody") is None

    async def test_an_unknown_id_raises_aggregate_not_found_from_get_required(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        with pytest.raises(AggregateNotFoundError):
            await self.load(self.source(storage, events), "nobody")

    async def test_events_are_published_only_after_the_commit(
        self, storage: Storage, events: EventRegistry, published: Published
    ) -> None:
        await self.open_account(self.source(storage, events, published=published), "a-1", 5)
        assert published.events == [AccountOpened("alice"), Deposited(5)]
        # Each handler ran when its event was already committed and visible to others.
        assert published.stored_then == [1, 2]

    async def test_a_failed_commit_publishes_nothing_and_leaves_no_event_or_outbox_row(
        self, storage: Storage, events: EventRegistry, published: Published
    ) -> None:
        source = self.source(storage, events, published=published)
        async with source.unit_of_work() as uow:
            uow.state_stored(Customer).add(Customer("c-1", "Carol"))
            await uow.commit()
        published.events.clear()
        async with source.unit_of_work() as uow:
            uow.event_sourced(Account).add(Account.open("a-1", "alice"))
            duplicate = Customer("c-1", "Carol again")
            duplicate.grant_credit(5)
            uow.state_stored(Customer).add(duplicate)
            with pytest.raises(ConcurrencyError):
                await uow.commit()
        assert published.events == []
        assert await _read(storage, "Account-a-1") == []
        async with storage.transaction() as session:
            assert read_outbox_types(await session.read_outbox(limit=10)) == []

    async def test_two_units_of_work_saving_one_aggregate_conflict(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events)
        await self.open_account(source, "a-1")
        async with source.unit_of_work() as first, source.unit_of_work() as second:
            mine = await first.event_sourced(Account).get_required("a-1")
            theirs = await second.event_sourced(Account).get_required("a-1")
            mine.deposit(5)
            theirs.deposit(7)
            await first.commit()
            with pytest.raises(ConcurrencyError):
                await second.commit()
        assert (await self.load(source)).state.balance == 5

    async def test_a_decider_appends_at_the_version_it_folded(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events)
        for by in (3, 4):
            async with source.unit_of_work() as uow:
                await uow.decider(counter, "Counter").decide("k-1", Increment(by))
                await uow.commit()
        async with source.unit_of_work() as uow:
            assert await uow.decider(counter, "Counter").load("k-1") == (7, 2)
            with pytest.raises(RuleViolationError):
                await uow.decider(counter, "Counter").decide("k-1", Increment(4))

    async def test_a_deciders_history_lists_its_events_with_their_versions(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events)
        for by in (2, 5):
            async with source.unit_of_work() as uow:
                await uow.decider(counter, "Counter").decide("k-9", Increment(by))
                await uow.commit()
        async with source.unit_of_work() as uow:
            history = await uow.decider(counter, "Counter").history("k-9")
        assert [envelope.event for envelope in history] == [Incremented(2), Incremented(5)]
        assert [envelope.metadata.version for envelope in history] == [1, 2]
        assert {envelope.metadata.stream_id for envelope in history} == {"Counter-k-9"}

    async def test_two_deciders_on_one_stream_conflict(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events)
        async with source.unit_of_work() as first, source.unit_of_work() as second:
            await first.decider(counter, "Counter").decide("k-1", Increment(1))
            await second.decider(counter, "Counter").decide("k-1", Increment(2))
            await first.commit()
            with pytest.raises(ConcurrencyError):
                await second.commit()

    # -- leaving the block, unregistered events -----------------------------------------

    async def test_leaving_the_block_cleanly_commits_what_was_not_committed(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events)
        async with source.unit_of_work() as uow:
            uow.event_sourced(Account).add(Account.open("a-1", "alice"))
            uow.state_stored(Customer).add(Customer("c-1", "Carol"))
        assert (await self.load(source)).state.owner == "alice"
        async with source.unit_of_work() as uow:
            assert (await uow.state_stored(Customer).get_required("c-1")).name == "Carol"

    async def test_leaving_the_block_by_an_exception_writes_nothing(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events)

        async def fail_after_staging() -> None:
            async with source.unit_of_work() as uow:
                uow.event_sourced(Account).add(Account.open("a-1", "alice"))
                uow.state_stored(Customer).add(Customer("c-1", "Carol"))
                raise LookupError("the command failed after staging its writes")

        with pytest.raises(LookupError):
            await fail_after_staging()
        assert await _read(storage, "Account-a-1") == []
        async with source.unit_of_work() as uow:
            assert await uow.state_stored(Customer).get("c-1") is None
            await uow.rollback()

    async def test_a_loaded_aggregate_left_unchanged_is_not_written_on_leaving_the_block(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events)
        async with source.unit_of_work() as uow:
            uow.state_stored(Customer).add(Customer("c-1", "Carol"))
        for _ in range(2):
            async with source.unit_of_work() as uow:
                customer = await uow.state_stored(Customer).get_required("c-1")
        assert customer.version == 1

    async def test_an_unregistered_event_fails_the_commit_naming_its_class_and_writes_nothing(
        self, storage: Storage
    ) -> None:
        source = self.source(storage, EventRegistry([AccountOpened]))

        async def open_and_deposit() -> None:
            async with source.unit_of_work() as uow:
                account = Account.open("a-1", "alice")
                account.deposit(5)
                uow.event_sourced(Account).add(account)

        with pytest.raises(UnregisteredEventError, match=r"Deposited is not registered"):
            await open_and_deposit()
        assert await _read(storage, "Account-a-1") == []
        async with storage.transaction() as session:
            assert await session.read_outbox(limit=10) == []

    # -- snapshots, upcasting, temporal reads ------------------------------------------

    async def test_a_snapshot_is_taken_when_the_version_crosses_the_policy(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events, snapshot_every=3)
        await self.open_account(source, "a-1", 1, 2, 3)
        async with storage.transaction() as session:
            snapshot = await session.load_snapshot("Account-a-1")
        assert snapshot is not None
        assert (snapshot.version, snapshot.schema_version) == (3, 1)
        # The state's name, then a fingerprint of its shape.
        assert snapshot.state_type.startswith("AccountState@")
        assert json.loads(snapshot.data)["balance"] == 3

    async def test_loading_starts_from_the_snapshot_and_applies_later_events(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events, snapshot_every=3)
        await self.open_account(source, "a-1", 1, 2, 3)
        await _rewrite_snapshot_balance(storage, "Account-a-1", 1000)
        account = await self.load(source)
        # 1000 from the snapshot at version 3, plus the deposit of 3 at version 4.
        assert (account.state.balance, account.version) == (1003, 4)

    async def test_a_snapshot_of_another_state_schema_version_is_ignored(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        await self.open_account(self.source(storage, events, snapshot_every=3), "a-1", 1, 2, 3)
        await _rewrite_snapshot_balance(storage, "Account-a-1", 1000)
        reshaped = self.source(storage, events, snapshot_every=3, state_version=2)
        assert (await self.load(reshaped)).state.balance == 6

    async def test_a_snapshot_of_another_state_shape_is_ignored_at_the_same_version(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events, snapshot_every=3)
        await self.open_account(source, "a-1", 1, 2, 3)
        await _rewrite_snapshot_balance(storage, "Account-a-1", 1000)
        async with storage.transaction() as session:
            snapshot = await session.load_snapshot("Account-a-1")
            assert snapshot is not None
            # As written by an AccountState whose fields differed (same name, same version).
            older_shape = replace(snapshot, state_type="AccountState@00000000deadbeef")
            await session.save_snapshot(older_shape)
        assert (await self.load(source)).state.balance == 6

    async def test_old_event_payloads_are_upcast_when_loaded(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events)
        await self.open_account(source, "a-1", 10)
        old = EventRecord(uuid.uuid4(), "Withdrawn", 1, json.dumps({"amount": 4}), T0)
        async with storage.transaction() as session:
            await session.append("Account-a-1", [old], expected_version=2)
        account = await self.load(source)
        assert (account.state.balance, account.state.last_reason) == (6, "unknown")

    async def test_as_of_loads_the_aggregate_as_it_was_then(
        self, storage: Storage, events: EventRegistry, clock: ManualClock
    ) -> None:
        source = self.source(storage, events, clock=clock, snapshot_every=2)
        await self.open_account(source, "a-1")
        for amount in (1, 2, 4):
            clock.advance(timedelta(days=1))
            await self.open_deposit(source, amount)
        then = await self.load(source, as_of=T0 + timedelta(days=2, hours=1))
        assert (then.state.balance, then.version) == (3, 3)

    async def test_history_lists_each_event_with_its_metadata_up_to_as_of(
        self, storage: Storage, events: EventRegistry, clock: ManualClock
    ) -> None:
        source = self.source(storage, events, clock=clock)
        context = RequestContext(object(), "corr-9", "cause-9", "bob")
        async with source.unit_of_work(context) as uow:
            uow.event_sourced(Account).add(Account.open("a-1", "alice"))
            await uow.commit()
        clock.advance(timedelta(days=1))
        await self.open_deposit(source, 5)

        async with source.unit_of_work() as uow:
            history = await uow.event_sourced(Account).history("a-1")
            earlier = await uow.event_sourced(Account).history("a-1", as_of=T0)
            unknown = await uow.event_sourced(Account).history("a-404")

        assert [envelope.event for envelope in history] == [AccountOpened("alice"), Deposited(5)]
        first, second = (envelope.metadata for envelope in history)
        assert (first.type_name, first.stream_id, first.version, first.occurred_at) == (
            "AccountOpened",
            "Account-a-1",
            1,
            T0,
        )
        assert (first.correlation_id, first.causation_id, first.actor) == (
            "corr-9",
            "cause-9",
            "bob",
        )
        assert (second.version, second.occurred_at) == (2, T0 + timedelta(days=1))
        assert first.event_id != second.event_id
        assert first.position < second.position
        assert [envelope.event for envelope in earlier] == [AccountOpened("alice")]
        assert unknown == []

    async def test_version_loads_the_aggregate_at_that_version(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events, snapshot_every=2)
        await self.open_account(source, "a-1", 1, 2, 4, 8)
        then = await self.load(source, version=3)
        assert (then.state.balance, then.version) == (3, 3)

    async def open_deposit(self, source: DataSource, amount: int) -> None:
        """Deposit into account a-1 in a unit of work of its own."""
        async with source.unit_of_work() as uow:
            (await uow.event_sourced(Account).get_required("a-1")).deposit(amount)
            await uow.commit()

    # -- state-stored and hybrid -------------------------------------------------------

    async def test_a_state_stored_entity_is_saved_and_loaded_back(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events)
        async with source.unit_of_work() as uow:
            uow.state_stored(Customer).add(Customer("c-1", "Carol", 5))
            await uow.commit()
        async with source.unit_of_work() as uow:
            customer = await uow.state_stored(Customer).get_required("c-1")
        assert (customer.id, customer.name, customer.credit, customer.version) == (
            "c-1",
            "Carol",
            5,
            1,
        )

    async def test_state_stored_events_go_to_the_outbox_but_not_to_the_event_log(
        self, storage: Storage, events: EventRegistry, published: Published
    ) -> None:
        source = self.source(storage, events, published=published)
        async with source.unit_of_work() as uow:
            customer = Customer("c-1", "Carol")
            customer.grant_credit(5)
            uow.state_stored(Customer).add(customer)
            await uow.commit()
        async with storage.transaction() as session:
            assert await session.count_after(LOG_START) == 0
            entries = await session.read_outbox(limit=10)
        assert read_outbox_types(entries) == [("CreditGranted", "Customer", "c-1")]
        assert published.events == [CreditGranted("c-1", 5)]

    async def test_a_state_stored_type_that_logs_its_events_puts_them_in_the_global_log(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        model = PersistenceModel()
        model.event_sourced(Account)
        model.state_stored(Customer, log_events=True)
        source = DataSource("orders_db", storage, model, events, clock=lambda: T0)
        async with source.unit_of_work() as uow:
            customer = Customer("c-1", "Carol")
            customer.grant_credit(5)
            uow.state_stored(Customer).add(customer)
            uow.event_sourced(Account).add(Account.open("a-1", "alice"))
            await uow.commit()
        async with source.unit_of_work() as uow:
            (await uow.state_stored(Customer).get_required("c-1")).grant_credit(7)
            await uow.commit()

        await until_readable(storage, "Customer-c-1")
        logged = [(e.stream_id, e.version, e.type_name) for e in await _read_log(storage)]
        assert sorted(logged) == [
            ("Account-a-1", 1, "AccountOpened"),
            ("Customer-c-1", 1, "CreditGranted"),
            ("Customer-c-1", 2, "CreditGranted"),
        ]
        async with storage.transaction() as session:
            outbox = await session.read_outbox(limit=10)
        assert len(outbox) == 3, "logging its events still writes their outbox rows"

    async def test_a_stale_state_stored_update_raises_concurrency_error(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events)
        async with source.unit_of_work() as uow:
            uow.state_stored(Customer).add(Customer("c-1", "Carol"))
            await uow.commit()
        async with source.unit_of_work() as first, source.unit_of_work() as second:
            (await first.state_stored(Customer).get_required("c-1")).grant_credit(1)
            (await second.state_stored(Customer).get_required("c-1")).grant_credit(2)
            await first.commit()
            with pytest.raises(ConcurrencyError):
                await second.commit()
        async with source.unit_of_work() as uow:
            customer = await uow.state_stored(Customer).get_required("c-1")
        assert (customer.credit, customer.version) == (1, 2)

    async def test_a_hybrid_command_commits_both_kinds_in_one_transaction(
        self, storage: Storage, events: EventRegistry
    ) -> None:
        source = self.source(storage, events)
        async with source.unit_of_work() as uow:
            uow.state_stored(Customer).add(Customer("c-1", "Carol"))
            await uow.commit()
        async with source.unit_of_work() as uow:
            account = Account.open("a-1", "Carol")
            uow.event_sourced(Account).add(account)
            customer = await uow.state_stored(Customer).get_required("c-1")
            customer.grant_credit(50)
            await uow.commit()
        async with source.unit_of_work() as uow:
            assert (await uow.state_stored(Customer).get_required("c-1")).credit == 50
        assert [e.type_name for e in await _read(storage, "Account-a-1")] == ["AccountOpened"]
        async with storage.transaction() as session:
            entries = await session.read_outbox(limit=10)
        assert read_outbox_types(entries) == [
            ("AccountOpened", "Account", "a-1"),
            ("CreditGranted", "Customer", "c-1"),
        ]

    # -- sources and the transaction behaviour -----------------------------------------

    async def test_each_data_source_keeps_its_own_aggregates(
        self, storage: Storage, second_storage: Storage, events: EventRegistry
    ) -> None:
        sources = DataSources(
            self.source(storage, events, name="orders_db"),
            self.source(second_storage, events, name="invoicing_db"),
        )
        mediator = self.mediator(sources)
        assert (await mediator.send(OpenAccount("a-1", "alice"))).status == 201
        assert (await mediator.send(OpenInvoicingAccount("i-1", "bob"))).status == 201
        assert len(await _read(storage, "Account-a-1")) == 2
        assert await _read(storage, "Account-i-1") == []
        assert len(await _read(second_storage, "Account-i-1")) == 1
        assert await _read(second_storage, "Account-a-1") == []

    async def test_the_transaction_behavior_commits_and_then_publishes(
        self, storage: Storage, events: EventRegistry, published: Published
    ) -> None:
        source = self.source(storage, events, published=published)
        mediator = self.mediator(DataSources(source))
        result = await mediator.send(OpenAccount("a-1", "alice", first_deposit=5))
        assert (result.status, result.data) == (201, "a-1")
        assert (await self.load(source)).state.balance == 5
        assert published.stored_then == [2, 2]

    async def test_a_domain_error_answers_4xx_and_stores_and_publishes_nothing(
        self, storage: Storage, events: EventRegistry, published: Published
    ) -> None:
        source = self.source(storage, events, published=published)
        mediator = self.mediator(DataSources(source))
        result = await mediator.send(OpenAccount("a-1", "alice", first_deposit=-5))
        assert result.status == 400
        assert await _read_log(storage) == []
        assert published.events == []

    @staticmethod
    def mediator(sources: DataSources) -> Mediator:
        """A mediator mapping errors to results around a transaction per request."""
        mediator = Mediator([ErrorMappingBehavior(), TransactionBehavior(sources.unit_of_work)])
        mediator.register(OpenAccount, OpenAccountHandler)
        mediator.register(OpenInvoicingAccount, OpenAccountHandler)
        return mediator


# -- the user's own SQL table --------------------------------------------------------------


class Product(Entity[str]):
    """A state-stored entity kept in a table of the user's own."""

    def __init__(self, product_id: str, title: str, stock: int) -> None:
        super().__init__(product_id)
        self.title = title
        self.stock = stock


class SqlTableContract:
    """Tests of state-stored entities kept in a user's SQLAlchemy table; needs ``storage``.

    The subclass creates the table described by :meth:`products_table` in ``storage``'s
    database and provides it as the ``products`` fixture.
    """

    @staticmethod
    def products_table(metadata: Any) -> Any:
        """The user's table: id, title, stock and a version column."""
        from sqlalchemy import Column, Integer, Table, Text  # noqa: PLC0415 - optional extra

        return Table(
            "shop_products",
            metadata,
            Column("id", Text, primary_key=True),
            Column("title", Text, nullable=False),
            Column("stock", Integer, nullable=False),
            Column("version", Integer, nullable=False),
        )

    def source(self, storage: Storage, products: Any) -> DataSource:
        """A data source keeping products in the table."""
        model = PersistenceModel()
        mapping = TableMapping(
            products,
            to_row=lambda p: {"id": p.id, "title": p.title, "stock": p.stock},
            from_row=lambda row: Product(row["id"], row["title"], row["stock"]),
        )
        model.state_stored(Product, table=mapping)
        return DataSource("shop", storage, model, EventRegistry())

    async def test_a_row_is_inserted_and_loaded_back_with_its_version(
        self, storage: Storage, products: Any
    ) -> None:
        source = self.source(storage, products)
        async with source.unit_of_work() as uow:
            uow.state_stored(Product).add(Product("p-1", "Teapot", 3))
            await uow.commit()
        async with source.unit_of_work() as uow:
            product = await uow.state_stored(Product).get_required("p-1")
        assert (product.title, product.stock, product.version) == ("Teapot", 3, 1)

    async def test_a_stale_row_update_raises_concurrency_error(
        self, storage: Storage, products: Any
    ) -> None:
        source = self.source(storage, products)
        async with source.unit_of_work() as uow:
            uow.state_stored(Product).add(Product("p-1", "Teapot", 3))
            await uow.commit()
        async with source.unit_of_work() as first, source.unit_of_work() as second:
            (await first.state_stored(Product).get_required("p-1")).stock = 2
            (await second.state_stored(Product).get_required("p-1")).stock = 1
            await first.commit()
            with pytest.raises(ConcurrencyError):
                await second.commit()
        async with source.unit_of_work() as uow:
            product = await uow.state_stored(Product).get_required("p-1")
        assert (product.stock, product.version) == (2, 2)


async def _read(storage: Storage, stream_id: str) -> list[StoredEvent]:
    async with storage.transaction() as session:
        return await session.read_stream(stream_id)


async def _read_log(storage: Storage) -> list[StoredEvent]:
    async with storage.transaction() as session:
        return await session.read_log(after=LOG_START, limit=100)


async def _rewrite_snapshot_balance(storage: Storage, stream_id: str, balance: int) -> None:
    """Change a stored snapshot's balance, to tell whether a load started from it."""
    async with storage.transaction() as session:
        snapshot = await session.load_snapshot(stream_id)
        assert snapshot is not None
        data = {**json.loads(snapshot.data), "balance": balance}
        await session.save_snapshot(replace(snapshot, data=json.dumps(data)))
