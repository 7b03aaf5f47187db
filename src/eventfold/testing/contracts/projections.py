"""The projection contract: checkpoints, poison events, rebuilds and lag on any storage.

Subclass :class:`ProjectionContract` and provide a ``storage`` fixture (an empty storage
with its schema created) to run it against a backend.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from eventfold.application.persistence.dispatcher import PersistenceDispatcher, PersistenceRegistry
from eventfold.application.persistence.model import PersistenceModel
from eventfold.application.persistence.read_model_queries import register_read_model
from eventfold.application.persistence.unit_of_work import DataSource, UnitOfWork
from eventfold.application.readside.health import (
    ProjectionParkedError,
    projection_health,
    retry_projection,
    skip_parked_event,
)
from eventfold.application.readside.partitions import Partition
from eventfold.application.readside.projections import (
    Projection,
    ProjectionContext,
    ProjectionFailedError,
    ProjectionRunner,
    ProjectionVersionError,
)
from eventfold.application.readside.queries import QueryOptions
from eventfold.application.readside.read_models import DocumentReadModel
from eventfold.application.readside.workers import ProjectionWorker
from eventfold.domain.aggregate import AggregateRoot
from eventfold.domain.errors import InvalidStateError, UnknownFieldError
from eventfold.domain.specification import SpecificationBuilder
from eventfold.errors import ConcurrencyError
from eventfold.ports.records import LOG_START, EventRecord, StreamState
from eventfold.ports.storage import Storage
from eventfold.serialization import EventRegistry
from eventfold.testing.contracts.storage import until_readable

__all__ = [
    "Deposited",
    "DocumentReadModelContract",
    "InlineProjectionContract",
    "ProjectionContract",
    "Withdrawn",
]

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Deposited:
    """Money paid into an account."""

    account: str
    amount: int


@dataclass(frozen=True)
class Withdrawn:
    """Money taken out of an account."""

    account: str
    amount: int


class Balances(Projection):
    """Balances per account, as JSON documents."""

    name: ClassVar[str] = "balances"
    collection: ClassVar[str] = "balances"
    fail_on_amount: int | None = None

    async def apply_Deposited(self, event: Deposited, context: ProjectionContext) -> None:  # noqa: N802
        if event.amount == self.fail_on_amount:
            msg = f"cannot handle amount {event.amount}"
            raise ValueError(msg)
        await _add(context, self.collection, event.account, event.amount)

    async def apply_Withdrawn(self, event: Withdrawn, context: ProjectionContext) -> None:  # noqa: N802
        await _add(context, self.collection, event.account, -event.amount)

    async def reset(self, context: ProjectionContext) -> None:
        for key in ("a", "b", "c"):
            record = await context.session.load_document(self.collection, key)
            if record is not None:
                await context.session.delete_document(
                    self.collection, key, expected_version=record.version
                )


class WithdrawalTotal(Projection):
    """Withdrawals per account: handles one event type of two."""

    name: ClassVar[str] = "withdrawals"

    async def apply_Withdrawn(self, event: Withdrawn, context: ProjectionContext) -> None:  # noqa: N802
        await _add(context, "withdrawals", event.account, event.amount)


class StreamLedger(Projection):
    """The versions applied per stream, in the order applied: shows duplicates and order."""

    name: ClassVar[str] = "ledger"
    partitions: ClassVar[int] = 4

    async def apply_Deposited(self, event: Deposited, context: ProjectionContext) -> None:  # noqa: N802
        record = context.record
        assert record is not None
        await _append_version(context, self.name, record.stream_id, record.version)


class AccountsOnly(StreamLedger):
    """A ledger of the ``account-…`` streams only."""

    name: ClassVar[str] = "accounts-only"
    partitions: ClassVar[int] = 1
    categories: ClassVar[tuple[str, ...]] = ("account",)


async def _append_version(
    context: ProjectionContext, collection: str, stream_id: str, version: int
) -> None:
    record = await context.session.load_document(collection, stream_id)
    versions = json.loads(record.data) if record is not None else []
    await context.session.save_document(
        collection,
        stream_id,
        json.dumps([*versions, version]),
        expected_version=record.version if record else 0,
    )


async def _ledger(storage: Storage, stream_id: str, collection: str = "ledger") -> list[int]:
    async with storage.transaction() as session:
        record = await session.load_document(collection, stream_id)
    return json.loads(record.data) if record is not None else []


_WAIT = 60.0
"""Seconds a contract test waits for a runner or a worker to get somewhere: a bound
against hanging on a loaded machine with a busy shared database, not a measure."""


async def _wait_for_ledger(storage: Storage, stream_id: str, expected: list[int]) -> None:
    try:
        async with asyncio.timeout(_WAIT):
            while await _ledger(storage, stream_id) != expected:
                await asyncio.sleep(0.02)
    except TimeoutError:
        found = await _ledger(storage, stream_id)
        msg = f"the ledger of {stream_id} is {found}, not {expected}, after {_WAIT} s"
        raise AssertionError(msg) from None


@dataclass(frozen=True)
class Total:
    """The sum of an account's deposits, as a document read model."""

    account: str
    amount: int


totals = DocumentReadModel("totals", Total, key="account")


class Totals(Projection):
    """Deposits summed per account (version 1)."""

    name: ClassVar[str] = "totals"
    read_models: ClassVar[tuple[DocumentReadModel[Total], ...]] = (totals,)
    factor: ClassVar[int] = 1
    gate: asyncio.Event | None = None
    reached: asyncio.Event | None = None

    async def apply_Deposited(self, event: Deposited, context: ProjectionContext) -> None:  # noqa: N802
        if self.gate is not None and self.reached is not None and context.rebuilding:
            self.reached.set()  # mid-rebuild: let the test look at the live version
            await self.gate.wait()
        documents = totals.documents(context)
        current = await documents.get(event.account)
        amount = (current.amount if current else 0) + event.amount * self.factor
        await documents.put(Total(event.account, amount))


class TotalsV2(Totals):
    """The same projection after a change to what it writes (ten times the amount)."""

    version: ClassVar[int | str] = 2
    factor: ClassVar[int] = 10


class _Interrupted(Exception):  # noqa: N818 - stands for a rebuild interrupted by its operator
    """A rebuild stopped half-way."""


async def _total(storage: Storage, account: str, collection: str = "totals") -> int | None:
    async with storage.transaction() as session:
        record = await session.load_document(collection, account)
    return None if record is None else int(json.loads(record.data)["amount"])


async def _wait_for_total(storage: Storage, account: str, expected: int) -> None:
    try:
        async with asyncio.timeout(_WAIT):
            while await _total(storage, account) != expected:
                await asyncio.sleep(0.02)
    except TimeoutError:
        found = await _total(storage, account)
        msg = f"the total of {account} is {found}, not {expected}, after {_WAIT} s"
        raise AssertionError(msg) from None


class DepositCount(Balances):
    """Counts deposits per account in another collection (a second, independent projection)."""

    name: ClassVar[str] = "deposit-count"
    collection: ClassVar[str] = "deposit_count"

    async def apply_Deposited(self, event: Deposited, context: ProjectionContext) -> None:  # noqa: N802
        await _add(context, self.collection, event.account, 1)

    async def apply_Withdrawn(self, event: Withdrawn, context: ProjectionContext) -> None:  # noqa: N802
        return None


async def _add(context: ProjectionContext, collection: str, key: str, amount: int) -> None:
    record = await context.session.load_document(collection, key)
    current = int(record.data) if record is not None else 0
    await context.session.save_document(
        collection, key, str(current + amount), expected_version=record.version if record else 0
    )


def _registry() -> EventRegistry:
    return EventRegistry([Deposited, Withdrawn])


async def _append(storage: Storage, registry: EventRegistry, *events: object) -> None:
    async with storage.transaction() as session:
        for event in events:
            encoded = registry.encode(event)
            record = EventRecord(
                event_id=uuid.uuid4(),
                type_name=encoded.type_name,
                schema_version=encoded.schema_version,
                data=encoded.data,
                occurred_at=T0,
            )
            account = getattr(event, "account", "x")
            await session.append(f"account-{account}", [record], expected_version=StreamState.ANY)
    for account in {getattr(event, "account", "x") for event in events}:
        await until_readable(storage, f"account-{account}")


async def _balance(storage: Storage, key: str, collection: str = "balances") -> int | None:
    async with storage.transaction() as session:
        record = await session.load_document(collection, key)
    return int(record.data) if record is not None else None


class ProjectionContract:
    """Behaviour every storage must show under a projection runner."""

    storage: Any

    async def test_catch_up_applies_every_event_once_and_saves_the_checkpoint(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 10), Deposited("a", 5), Withdrawn("a", 3))
        runner = ProjectionRunner(storage, registry, [Balances()], batch_size=2)

        assert await runner.catch_up("balances") == 3
        assert await runner.catch_up("balances") == 0
        assert await _balance(storage, "a") == 12

    async def test_a_restarted_runner_continues_from_the_checkpoint(self, storage: Storage) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 10))
        await ProjectionRunner(storage, registry, [Balances()]).catch_up("balances")
        await _append(storage, registry, Deposited("a", 1))

        processed = await ProjectionRunner(storage, registry, [Balances()]).catch_up("balances")

        assert processed == 1
        assert await _balance(storage, "a") == 11

    async def test_a_poison_event_stops_the_projection_before_it_with_a_clear_report(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 10), Deposited("a", 666), Deposited("a", 1))
        poisoned = Balances()
        poisoned.fail_on_amount = 666
        runner = ProjectionRunner(storage, registry, [poisoned], batch_size=1)

        await runner.process_batch("balances")
        with pytest.raises(ProjectionFailedError) as failure:
            await runner.process_batch("balances")

        assert failure.value.type_name == "Deposited"
        assert (failure.value.stream_id, failure.value.version) == ("account-a", 2)
        assert "666" in str(failure.value)
        assert failure.value.position.position > 0
        async with storage.transaction() as session:
            checkpoint = await session.load_checkpoint("balances")
            first = (await session.read_log(after=LOG_START, limit=1))[0]
        assert checkpoint == first.log_position
        assert await _balance(storage, "a") == 10

    async def test_a_failing_batch_leaves_no_partial_read_model_changes(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("b", 7), Deposited("a", 666))
        poisoned = Balances()
        poisoned.fail_on_amount = 666
        runner = ProjectionRunner(storage, registry, [poisoned], batch_size=10)

        with pytest.raises(ProjectionFailedError):
            await runner.process_batch("balances")

        assert await _balance(storage, "b") is None

    async def test_a_failing_projection_does_not_stop_the_others(self, storage: Storage) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 666), Deposited("a", 2))
        poisoned = Balances()
        poisoned.fail_on_amount = 666
        runner = ProjectionRunner(storage, registry, [poisoned, DepositCount()], max_idle_wait=0.05)

        task = asyncio.create_task(runner.run())
        await _wait_until(lambda: runner.status("balances").state == "failed")
        await _wait_for_balance(storage, "a", 2, "deposit_count")
        runner.stop()
        await asyncio.wait_for(task, _WAIT)

        failure = runner.status("balances").failure
        assert failure is not None
        assert failure.type_name == "Deposited"
        assert runner.status("deposit-count").state == "stopped"

    async def test_a_failed_event_parks_the_projection_for_every_runner_with_its_report(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 10), Deposited("a", 666))
        poisoned = Balances()
        poisoned.fail_on_amount = 666
        with pytest.raises(ProjectionFailedError):
            await ProjectionRunner(storage, registry, [poisoned], batch_size=1).catch_up("balances")

        # Another process, running code that would not fail, still stops at the park.
        with pytest.raises(ProjectionParkedError) as parked:
            await ProjectionRunner(storage, registry, [Balances()]).catch_up("balances")
        health = await projection_health(storage, "balances")
        assert health.parked == parked.value.failure
        assert (health.parked.type_name, health.parked.stream_id) == ("Deposited", "account-a")
        assert health.parked.version == 2
        assert health.parked.error == "ValueError: cannot handle amount 666"
        assert await _balance(storage, "a") == 10

    async def test_a_retried_projection_applies_the_parked_event_again(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 10), Deposited("a", 666))
        poisoned = Balances()
        poisoned.fail_on_amount = 666
        with pytest.raises(ProjectionFailedError):
            await ProjectionRunner(storage, registry, [poisoned]).catch_up("balances")

        retried = await retry_projection(storage, "balances")
        await ProjectionRunner(storage, registry, [Balances()]).catch_up("balances")

        assert retried.type_name == "Deposited"
        assert await _balance(storage, "a") == 676
        assert (await projection_health(storage, "balances")).parked is None

    async def test_a_skipped_event_is_passed_over_with_its_reason_on_record(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 10), Deposited("a", 666), Deposited("a", 1))
        poisoned = Balances()
        poisoned.fail_on_amount = 666
        runner = ProjectionRunner(storage, registry, [poisoned])
        with pytest.raises(ProjectionFailedError) as failure:
            await runner.catch_up("balances")

        skip = await skip_parked_event(
            storage, "balances", reason="test data", now=T0, event_id=failure.value.event_id
        )
        await runner.catch_up("balances")

        assert await _balance(storage, "a") == 11
        health = await projection_health(storage, "balances")
        assert health.parked is None
        assert health.skipped == (skip,)
        assert (skip.event_id, skip.reason) == (failure.value.event_id, "test data")
        # A rebuild passes over it too, instead of failing on it again.
        assert await runner.rebuild("balances") == 3
        assert await _balance(storage, "a") == 11

    async def test_an_operator_cannot_retry_or_skip_a_projection_that_is_not_parked(
        self, storage: Storage
    ) -> None:
        with pytest.raises(InvalidStateError, match="not parked"):
            await retry_projection(storage, "balances")
        with pytest.raises(InvalidStateError, match="not parked"):
            await skip_parked_event(storage, "balances", reason="why not", now=T0)

    async def test_a_skip_needs_a_reason_and_the_parked_event(self, storage: Storage) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 666))
        poisoned = Balances()
        poisoned.fail_on_amount = 666
        with pytest.raises(ProjectionFailedError):
            await ProjectionRunner(storage, registry, [poisoned]).catch_up("balances")

        with pytest.raises(InvalidStateError, match="reason"):
            await skip_parked_event(storage, "balances", reason=" ", now=T0)
        with pytest.raises(InvalidStateError, match="parked on event"):
            await skip_parked_event(
                storage, "balances", reason="typo", now=T0, event_id=uuid.uuid4()
            )
        assert (await projection_health(storage, "balances")).parked is not None

    async def test_a_live_runner_resumes_by_itself_once_an_operator_skips_the_event(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 666), Deposited("a", 2))
        poisoned = Balances()
        poisoned.fail_on_amount = 666
        runner = ProjectionRunner(storage, registry, [poisoned], max_idle_wait=0.05)
        task = asyncio.create_task(runner.run())
        try:
            await _wait_until(lambda: runner.status("balances").parked is not None)
            assert runner.status("balances").state == "failed"
            await skip_parked_event(storage, "balances", reason="refunded by hand", now=T0)
            await _wait_for_balance(storage, "a", 2)
            await _wait_until(lambda: runner.status("balances").state == "running")
        finally:
            runner.stop()
            await asyncio.wait_for(task, _WAIT)

    async def test_a_projection_reads_only_the_event_types_it_handles(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        deposits = [Deposited("a", 1) for _ in range(5)]
        await _append(storage, registry, *deposits, Withdrawn("a", 1), Withdrawn("a", 1))
        runner = ProjectionRunner(storage, registry, [WithdrawalTotal()], batch_size=2)

        assert await runner.process_batch("withdrawals") == 2
        assert await runner.process_batch("withdrawals") == 0
        assert await _balance(storage, "a", "withdrawals") == 2

    async def test_a_projection_past_events_it_does_not_handle_is_not_behind(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Withdrawn("a", 1), Deposited("a", 1), Deposited("a", 2))
        runner = ProjectionRunner(storage, registry, [WithdrawalTotal()])

        assert await runner.catch_up("withdrawals") == 1
        assert (await runner.lag("withdrawals")).events_behind == 0

    async def test_partitions_of_a_projection_together_apply_every_stream_once_in_order(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        accounts = [f"p{n}" for n in range(12)]
        await _append(storage, registry, *[Deposited(a, 1) for a in accounts for _ in range(3)])
        runner = ProjectionRunner(storage, registry, [StreamLedger()], batch_size=5)

        held: dict[int, set[str]] = {}
        for index in range(3):
            partition = Partition(index, 3)
            while await runner.process_batch("ledger", partition=partition):
                pass
            held[index] = {a for a in accounts if partition.holds(f"account-{a}")}

        assert set().union(*held.values()) == set(accounts)
        assert sum(len(streams) for streams in held.values()) == len(accounts)
        for account in accounts:
            assert await _ledger(storage, f"account-{account}") == [1, 2, 3]

    async def test_a_projection_follows_only_the_stream_categories_it_names(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 1))
        async with storage.transaction() as session:
            encoded = registry.encode(Deposited("a", 100))
            record = EventRecord(
                uuid.uuid4(), encoded.type_name, encoded.schema_version, encoded.data, T0
            )
            await session.append("audit-a", [record], expected_version=StreamState.ANY)
        await until_readable(storage, "audit-a")

        await ProjectionRunner(storage, registry, [AccountsOnly()]).catch_up("accounts-only")

        assert await _ledger(storage, "account-a", "accounts-only") == [1]
        assert await _ledger(storage, "audit-a", "accounts-only") == []

    async def test_two_workers_share_the_partitions_and_one_takes_over_when_the_other_stops(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        first = ProjectionWorker(storage, registry, [StreamLedger()], lease_seconds=0.6)
        second = ProjectionWorker(storage, registry, [StreamLedger()], lease_seconds=0.6)
        tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
        try:
            await _wait_until(
                lambda: len(first.owned) == len(second.owned) == 2,
                what="two workers owning two of the four partitions each",
            )
            assert set(first.owned).isdisjoint(second.owned)
            await _append(storage, registry, *[Deposited(f"w{n}", 1) for n in range(8)])
            second.stop()
            await asyncio.wait_for(tasks[1], _WAIT)
            await _wait_until(lambda: len(first.owned) == 4, what="the survivor owning all four")
            for n in range(8):
                await _wait_for_ledger(storage, f"account-w{n}", [1])
        finally:
            first.stop()
            second.stop()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), _WAIT)

    async def test_a_rebuild_beside_serves_the_old_version_until_it_swaps_in_the_new(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, *[Deposited("a", 1) for _ in range(6)])
        await ProjectionRunner(storage, registry, [Totals()]).catch_up("totals")
        changed = TotalsV2()
        changed.gate, changed.reached = asyncio.Event(), asyncio.Event()
        rebuilding = asyncio.create_task(
            ProjectionRunner(storage, registry, [changed], batch_size=2).rebuild("totals")
        )
        try:
            await asyncio.wait_for(changed.reached.wait(), _WAIT)
            assert await _total(storage, "a") == 6, "queries answer from the old version"
        finally:
            changed.gate.set()
        assert await asyncio.wait_for(rebuilding, _WAIT) == 6
        assert await _total(storage, "a") == 60, "the new version is a fold from scratch"
        assert await _total(storage, "a", "totals__next") is None

    async def test_a_swap_that_the_live_version_overtook_takes_in_what_it_applied_meanwhile(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 1), Deposited("a", 2))
        live = ProjectionRunner(storage, registry, [Totals()])
        await live.catch_up("totals")
        changed = TotalsV2()
        changed.gate, changed.reached = asyncio.Event(), asyncio.Event()
        rebuilding = asyncio.create_task(
            ProjectionRunner(storage, registry, [changed]).rebuild("totals")
        )
        try:
            await asyncio.wait_for(changed.reached.wait(), 10)  # inside the swap
            await _append(storage, registry, Deposited("a", 4))
            assert await live.catch_up("totals") == 1  # the live version moves ahead
        finally:
            changed.gate.set()
        await asyncio.wait_for(rebuilding, 30)

        assert await _total(storage, "a") == 70, "the swapped version misses no event"
        assert await ProjectionRunner(storage, registry, [TotalsV2()]).catch_up("totals") == 0

    async def test_a_rebuild_beside_that_was_interrupted_resumes_where_it_stopped(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, *[Deposited("a", 1) for _ in range(7)])
        runner = ProjectionRunner(storage, registry, [TotalsV2()], batch_size=2)

        def interrupt(done: int, total: int) -> None:
            raise _Interrupted

        with pytest.raises(_Interrupted):
            await runner.rebuild("totals", on_progress=interrupt)
        progress: list[tuple[int, int]] = []
        await runner.rebuild("totals", on_progress=lambda *p: progress.append(p))

        assert progress[0] == (4, 7), "the second run starts after the committed batch"
        assert progress[-1] == (7, 7)
        assert await _total(storage, "a") == 70

    async def test_a_changed_projection_version_is_rebuilt_before_it_follows_the_log(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 1), Deposited("a", 2))
        await ProjectionRunner(storage, registry, [Totals()]).catch_up("totals")
        assert await _total(storage, "a") == 3

        runner = ProjectionRunner(storage, registry, [TotalsV2()], max_idle_wait=0.05)
        task = asyncio.create_task(runner.run())
        try:
            await _wait_for_total(storage, "a", 30)
            await _append(storage, registry, Deposited("a", 4))
            await _wait_for_total(storage, "a", 70)
        finally:
            runner.stop()
            await asyncio.wait_for(task, _WAIT)
        assert (await projection_health(storage, "totals")).version == "2"

    async def test_code_of_an_older_version_stops_instead_of_writing_into_the_new_one(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 1))
        await ProjectionRunner(storage, registry, [TotalsV2()]).catch_up("totals")
        await _append(storage, registry, Deposited("a", 1))

        old = ProjectionRunner(storage, registry, [Totals()], max_idle_wait=0.05)
        with pytest.raises(ProjectionVersionError, match="built by version 2"):
            await old.catch_up("totals")
        await asyncio.wait_for(old.run(), _WAIT)  # it stops by itself

        assert old.status("totals").state == "superseded"
        assert await _total(storage, "a") == 10

    async def test_a_rebuild_beside_leaves_no_lag_behind_events_it_does_not_handle(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 5), Withdrawn("a", 1))
        runner = ProjectionRunner(storage, registry, [TotalsV2()])

        assert await runner.rebuild("totals") == 1

        assert (await runner.lag("totals")).events_behind == 0

    async def test_a_rebuild_beside_can_keep_the_old_version(self, storage: Storage) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 5))
        await ProjectionRunner(storage, registry, [Totals()]).catch_up("totals")

        await ProjectionRunner(storage, registry, [TotalsV2()]).rebuild("totals", keep_old=True)

        assert await _total(storage, "a") == 50
        assert await _total(storage, "a", "totals__old") == 5

    async def test_the_live_runner_picks_up_events_appended_after_it_started(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        runner = ProjectionRunner(storage, registry, [Balances()], max_idle_wait=0.05)
        task = asyncio.create_task(runner.run())
        try:
            await _wait_until(
                lambda: runner.status("balances").state == "running",
                what="the runner following the log",
            )
            await _append(storage, registry, Deposited("c", 4))
            await _wait_for_balance(storage, "c", 4)
        finally:
            runner.stop()
            await asyncio.wait_for(task, _WAIT)

    async def test_rebuild_replays_everything_and_reports_progress(self, storage: Storage) -> None:
        registry = _registry()
        await _append(storage, registry, *[Deposited("a", 1) for _ in range(7)])
        runner = ProjectionRunner(storage, registry, [Balances()], batch_size=3)
        await runner.catch_up("balances")
        progress: list[tuple[int, int]] = []

        replayed = await runner.rebuild(
            "balances", on_progress=lambda done, total: progress.append((done, total))
        )

        assert replayed == 7
        assert progress == [(3, 7), (6, 7), (7, 7)]
        assert await _balance(storage, "a") == 7
        assert await runner.catch_up("balances") == 0

    async def test_lag_reports_events_and_seconds_behind_the_head(self, storage: Storage) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 1), Deposited("a", 2))
        now = T0 + timedelta(seconds=30)
        runner = ProjectionRunner(storage, registry, [Balances()], batch_size=1, clock=lambda: now)

        before = await runner.lag("balances")
        await runner.process_batch("balances")
        middle = await runner.lag("balances")
        await runner.catch_up("balances")
        after = await runner.lag("balances")

        assert (before.events_behind, before.seconds_behind) == (2, 30.0)
        assert middle.events_behind == 1
        assert (after.events_behind, after.seconds_behind) == (0, 0.0)

    async def test_lag_of_a_caught_up_projection_has_the_committed_head_readable(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 1), Deposited("a", 2))
        runner = ProjectionRunner(storage, registry, [Balances()])
        await runner.catch_up("balances")

        lag = await runner.lag("balances")

        assert lag.readable_head == lag.committed_head == lag.checkpoint != LOG_START
        assert (lag.events_behind, lag.unreadable, lag.committed_behind) == (0, 0, 0)
        assert (lag.state, lag.blocker, lag.parked) == ("caught up", None, None)

    async def test_lag_of_a_failed_projection_shows_it_failed_with_its_error_and_position(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, Deposited("a", 1), Deposited("a", 2), Deposited("a", 3))
        failing = Balances()
        failing.fail_on_amount = 2
        runner = ProjectionRunner(storage, registry, [failing], batch_size=1)
        with pytest.raises(ProjectionFailedError) as failure:
            await runner.catch_up("balances")

        lag = await runner.lag("balances")

        assert lag.state == "failed"
        assert lag.parked is not None
        assert lag.parked.position == failure.value.position
        assert lag.parked.error == "ValueError: cannot handle amount 2"
        assert lag.events_behind == 2

    async def test_two_runners_of_one_projection_apply_every_event_exactly_once(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, *[Deposited("a", n) for n in range(1, 21)])
        first, second = (
            ProjectionRunner(storage, registry, [Applications()], batch_size=3) for _ in range(2)
        )

        counts = await asyncio.gather(
            first.catch_up("applications"), second.catch_up("applications")
        )

        assert sum(counts) == 20
        assert await _applications(storage) == [1] * 20

    async def test_a_rebuild_racing_a_live_runner_applies_every_event_exactly_once(
        self, storage: Storage
    ) -> None:
        registry = _registry()
        await _append(storage, registry, *[Deposited("a", n) for n in range(1, 11)])
        live = ProjectionRunner(storage, registry, [Applications()], batch_size=3)
        await live.catch_up("applications")
        await _append(storage, registry, *[Deposited("b", n) for n in range(1, 11)])
        rebuilding = ProjectionRunner(storage, registry, [Applications()], batch_size=3)

        await asyncio.gather(live.catch_up("applications"), rebuilding.rebuild("applications"))
        await live.catch_up("applications")

        assert await _applications(storage) == [1] * 20


@dataclass(frozen=True)
class Applied:
    """How many times a projection applied one event (exactly once, if all is well)."""

    event_id: str
    count: int


applied = DocumentReadModel("applications", Applied, key="event_id")


class Applications(Projection):
    """Counts the applications of each event, yielding between events to invite races."""

    name: ClassVar[str] = "applications"
    read_models: ClassVar[tuple[DocumentReadModel[Applied], ...]] = (applied,)

    async def apply_Deposited(self, event: Deposited, context: ProjectionContext) -> None:  # noqa: N802
        assert context.metadata is not None
        documents = applied.documents(context)
        event_id = str(context.metadata.event_id)
        seen = await documents.get(event_id) or Applied(event_id, 0)
        await asyncio.sleep(0)
        await documents.put(Applied(event_id, seen.count + 1))


async def _applications(storage: Storage) -> list[int]:
    async with storage.transaction() as session:
        found = [item async for item in applied.search(session, QueryOptions()).stream()]
    return [item.count for item in found]


async def _wait_until(condition: Any, seconds: float = _WAIT, what: str = "a condition") -> None:
    try:
        async with asyncio.timeout(seconds):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        msg = f"waited {seconds} s for {what}"
        raise AssertionError(msg) from None


async def _wait_for_balance(
    storage: Storage, key: str, expected: int, collection: str = "balances"
) -> None:
    try:
        async with asyncio.timeout(_WAIT):
            while await _balance(storage, key, collection) != expected:
                await asyncio.sleep(0.02)
    except TimeoutError:
        found = await _balance(storage, key, collection)
        msg = f"the {collection} balance of {key} is {found}, not {expected}, after {_WAIT} s"
        raise AssertionError(msg) from None


@dataclass(frozen=True)
class AccountView:
    """One account as a document read model."""

    account: str
    balance: int
    deposits: int


accounts = DocumentReadModel("accounts", AccountView, key="account")


class AccountViews(Projection):
    """Account views kept as JSON documents."""

    name: ClassVar[str] = "account-views"
    read_models: ClassVar[tuple[DocumentReadModel[AccountView], ...]] = (accounts,)

    async def apply_Deposited(self, event: Deposited, context: ProjectionContext) -> None:  # noqa: N802
        views = accounts.documents(context)
        view = await views.get(event.account) or AccountView(event.account, 0, 0)
        await views.put(AccountView(view.account, view.balance + event.amount, view.deposits + 1))

    async def apply_Withdrawn(self, event: Withdrawn, context: ProjectionContext) -> None:  # noqa: N802
        views = accounts.documents(context)
        view = await views.get(event.account)
        if view is not None and view.balance - event.amount == 0:
            await views.delete(event.account)
        elif view is not None:
            await views.put(AccountView(view.account, view.balance - event.amount, view.deposits))


class DocumentReadModelContract:
    """Document read models written by projections and queried by specification."""

    async def _project(self, storage: Storage, *events: object) -> ProjectionRunner:
        registry = _registry()
        await _append(storage, registry, *events)
        runner = ProjectionRunner(storage, registry, [AccountViews()], batch_size=4)
        await runner.catch_up("account-views")
        return runner

    async def test_a_document_read_model_holds_what_the_events_add_up_to(
        self, storage: Storage
    ) -> None:
        await self._project(
            storage, Deposited("a", 5), Deposited("b", 7), Deposited("a", 3), Withdrawn("b", 7)
        )

        async with storage.transaction() as session:
            a, b = await accounts.get(session, "a"), await accounts.get(session, "b")

        assert a == AccountView("a", 8, 2)
        assert b is None

    async def test_a_search_filters_orders_and_pages_by_specification(
        self, storage: Storage
    ) -> None:
        events = [
            Deposited(name, amount)
            for name, amount in zip("abcdef", [5, 50, 20, 70, 1, 30], strict=True)
        ]
        await self._project(storage, *events)
        spec = SpecificationBuilder().where("balance", ">=", 20).build()
        options = QueryOptions(spec).with_ordering("-balance").with_pagination(limit=2).with_total()

        async with storage.transaction() as session:
            result = accounts.search(session, options)
            first = await result
            total = result.total
            rest = await accounts.search(session, options.with_cursor(result.next_cursor or ""))

        assert [view.account for view in first] == ["d", "b"]
        assert total == 4
        assert [view.account for view in rest] == ["f", "c"]

    async def test_a_search_refuses_a_field_the_read_model_does_not_declare(
        self, storage: Storage
    ) -> None:
        spec = SpecificationBuilder().where("name; DROP TABLE x", "=", 1).build()

        async with storage.transaction() as session:
            with pytest.raises(UnknownFieldError):
                accounts.search(session, QueryOptions(spec))

    async def test_the_dispatcher_fetches_a_read_model_by_ids_and_by_specification(
        self, storage: Storage
    ) -> None:
        await self._project(storage, Deposited("a", 5), Deposited("b", 50), Deposited("c", 20))
        registry: PersistenceRegistry[UnitOfWork] = PersistenceRegistry()
        register_read_model(registry, accounts)
        source = DataSource("default", storage, PersistenceModel(), _registry())
        dispatcher = PersistenceDispatcher(registry, {"default": source.unit_of_work})
        rich = SpecificationBuilder().where("balance", ">", 10).build()

        by_ids = await dispatcher.fetch(AccountView, ["c", "missing", "a"])
        found = await dispatcher.fetch(AccountView, QueryOptions(rich).with_ordering("account"))

        assert [view.account for view in by_ids] == ["c", "a"]
        assert [view.account for view in await found] == ["b", "c"]

    async def test_a_rebuild_clears_the_collection_first(self, storage: Storage) -> None:
        runner = await self._project(storage, Deposited("a", 5))
        async with storage.transaction() as session:
            await session.save_document(
                "accounts",
                "stray",
                '{"account":"stray","balance":1,"deposits":1}',
                expected_version=0,
            )

        await runner.rebuild("account-views")

        async with storage.transaction() as session:
            assert await accounts.get(session, "stray") is None
            assert await accounts.get(session, "a") == AccountView("a", 5, 1)


@dataclass
class AccountState:
    """What an account's events add up to."""

    balance: int = 0

    def apply_Deposited(self, event: Deposited) -> None:  # noqa: N802
        self.balance += event.amount


class Account(AggregateRoot[AccountState, str]):
    """An event-sourced account."""

    def deposit(self, amount: int) -> None:
        self.record(Deposited(self.id, amount))


class InlineProjectionContract:
    """Inline projections write their read models inside the command's own transaction."""

    def _source(self, storage: Storage) -> DataSource:
        model = PersistenceModel()
        model.event_sourced(Account)
        return DataSource(
            "default", storage, model, _registry(), inline_projections=[AccountViews()]
        )

    async def test_an_inline_projection_is_readable_as_soon_as_the_command_commits(
        self, storage: Storage
    ) -> None:
        source = self._source(storage)
        async with source.unit_of_work() as uow:
            account = Account("a")
            account.deposit(5)
            account.deposit(2)
            uow.repository(Account).add(account)
            await uow.commit()

        async with storage.transaction() as session:
            assert await accounts.get(session, "a") == AccountView("a", 7, 2)

    async def test_an_inline_projection_rolls_back_with_a_failed_command(
        self, storage: Storage
    ) -> None:
        source = self._source(storage)
        async with source.unit_of_work() as uow:
            account = Account("a")
            account.deposit(5)
            uow.repository(Account).add(account)
            await uow.commit()

        with pytest.raises(ConcurrencyError):  # a second new account with the same id
            await _open_account(source, "a", 100)

        async with storage.transaction() as session:
            assert await accounts.get(session, "a") == AccountView("a", 5, 1)

    async def test_after_commit_callbacks_run_only_when_the_commit_succeeded(
        self, storage: Storage
    ) -> None:
        source = self._source(storage)
        calls: list[str] = []

        async def note(label: str) -> None:
            calls.append(label)

        await _open_account(source, "a", 1, after_commit=lambda: note("committed"))
        with pytest.raises(ConcurrencyError):
            await _open_account(source, "a", 1, after_commit=lambda: note("rolled back"))

        assert calls == ["committed"]


async def _open_account(
    source: DataSource,
    account_id: str,
    amount: int,
    *,
    after_commit: Callable[[], Awaitable[object]] | None = None,
) -> None:
    async with source.unit_of_work() as uow:
        account = Account(account_id)
        account.deposit(amount)
        uow.repository(Account).add(account)
        if after_commit is not None:
            uow.after_commit(after_commit)
        await uow.commit()
