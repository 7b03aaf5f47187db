"""8. Mediator overhead: a command through four behaviours against calling its handler directly.

Two rows:

- *pipeline*: the behaviours eventfold ships (logging with INFO disabled, error mapping,
  validation) plus the transaction behaviour over an in-memory storage when it exists
  (else a pass-through fourth), and a handler that creates an aggregate. The direct call
  does the same store work (opens the same unit of work by hand).
- *dispatch only*: four pass-through behaviours and a handler that writes to a dict, so
  the figure is the mediator's own machinery.

Figures are microseconds per command (lower is better); ``eventfold`` is the time
through the mediator, ``raw`` the direct call, and the target applies to the difference.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import Context, Row, median
from benchmarks.model import Account
from benchmarks.workloads.common import REGISTRY
from eventfold import (
    CommandHandler,
    DataSource,
    ErrorMappingBehavior,
    LoggingBehavior,
    Mediator,
    OperationResult,
    PersistenceModel,
    RequestContext,
    TransactionBehavior,
    UnitOfWork,
    ValidationBehavior,
    default_behaviors,
)

TARGET_US = 25.0


@dataclass(frozen=True, slots=True)
class OpenAccount:
    """Open an account."""

    account_id: str
    owner: str


class DictHandler(CommandHandler[OpenAccount, str]):
    """Creates the aggregate and keeps its events in a dict: no storage at all."""

    def __init__(self, store: dict[str, list[object]]) -> None:
        self._store = store

    async def handle(self, command: OpenAccount, /) -> OperationResult[str]:
        account = Account.open(command.account_id, command.owner)
        self._store[command.account_id] = account.pull_events()
        return self.created(command.account_id)


async def passthrough(request: object, context: RequestContext, next: Any) -> Any:  # noqa: A002
    """A behaviour that does nothing but continue."""
    return await next(request, context)


async def _time_loop(send: Any, commands: list[OpenAccount]) -> float:
    started = time.perf_counter()
    for command in commands:
        await send(command)
    return (time.perf_counter() - started) / len(commands) * 1e6


async def _paired(
    through: Any, direct: Any, make: Any, n: int, block: int = 500
) -> tuple[float, float]:
    """µs per command of both callables, alternating blocks so machine load hits both."""
    spent = [0.0, 0.0]
    sides = (through, direct)
    gc.collect()
    for number, start in enumerate(range(0, n, block)):
        order = (0, 1) if number % 2 == 0 else (1, 0)
        for side in order:
            commands = [make(side, i) for i in range(start, min(n, start + block))]
            started = time.perf_counter()
            for command in commands:
                await sides[side](command)
            spent[side] += time.perf_counter() - started
    return spent[0] / n * 1e6, spent[1] / n * 1e6


def _commands(n: int, tag: str) -> list[OpenAccount]:
    return [OpenAccount(f"{tag}-{i}", "Ada") for i in range(n)]


async def _dispatch_only(context: Context) -> Row:
    n = context.n(10_000, 1000)
    store: dict[str, list[object]] = {}
    handler = DictHandler(store)
    mediator = Mediator([passthrough] * 4)
    mediator.register(OpenAccount, lambda _ctx: DictHandler(store))
    through: list[float] = []
    direct: list[float] = []
    await _time_loop(mediator.send, _commands(1000, "warm"))
    for rep in range(max(context.repeat, 5)):
        store.clear()
        m, d = await _paired(
            mediator.send,
            handler.handle,
            lambda side, i, rep=rep: OpenAccount(f"{rep}-{side}-{i}", "Ada"),
            n,
        )
        through.append(m)
        direct.append(d)
    return _row("dispatch only (4 pass-through behaviours)", through, direct)


async def _shipped(context: Context) -> Row:
    n = context.n(10_000, 1000)
    store: dict[str, list[object]] = {}
    handler = DictHandler(store)
    behaviors: list[Any] = [
        LoggingBehavior(),
        ErrorMappingBehavior(),
        ValidationBehavior(),
        passthrough,
    ]
    mediator = Mediator(behaviors)
    mediator.register(OpenAccount, lambda _ctx: DictHandler(store))
    through: list[float] = []
    direct: list[float] = []
    await _time_loop(mediator.send, _commands(1000, "warm"))
    for rep in range(max(context.repeat, 5)):
        store.clear()
        m, d = await _paired(
            mediator.send,
            handler.handle,
            lambda side, i, rep=rep: OpenAccount(f"{rep}-{side}-{i}", "Ada"),
            n,
        )
        through.append(m)
        direct.append(d)
    return _row(
        "logging+errors+validation+pass-through, dict store",
        through,
        direct,
    )


async def _with_unit_of_work(context: Context) -> Row:
    """The pipeline an application runs: shipped behaviours + transaction, in-memory store."""
    from benchmarks.workloads.commands import (  # noqa: PLC0415
        OpenAccount as Open,
    )
    from benchmarks.workloads.commands import (  # noqa: PLC0415
        OpenAccountHandler,
    )
    from eventfold.adapters.memory import create_memory_storage  # noqa: PLC0415

    n = context.n(3000, 500)

    async def fresh_source() -> DataSource:
        storage = create_memory_storage()
        await storage.create_schema()
        model = PersistenceModel()
        model.event_sourced(Account)
        return DataSource("main", storage, model, REGISTRY)

    through: list[float] = []
    direct: list[float] = []
    for _ in range(max(context.repeat, 5)):
        # Each side on a fresh storage of its own, so neither pays for a fuller store.
        via_source, hand_source = await fresh_source(), await fresh_source()
        mediator = Mediator([*default_behaviors(), TransactionBehavior(via_source.unit_of_work)])
        mediator.register(Open, lambda ctx: OpenAccountHandler(UnitOfWork.of(ctx)))

        async def by_hand(command: Open, source: DataSource = hand_source) -> None:
            # What the handler needs without the mediator: its own unit of work, committed.
            uow = source.unit_of_work()
            await OpenAccountHandler(uow).handle(command)
            await uow.commit()

        await _paired(mediator.send, by_hand, lambda side, i: Open(f"warm-{side}-{i}", "Ada"), 200)
        m, d = await _paired(mediator.send, by_hand, lambda side, i: Open(f"{side}-{i}", "Ada"), n)
        through.append(m)
        direct.append(d)
    return _row("logging+errors+validation+transaction, memory storage", through, direct)


def _row(metric: str, through: list[float], direct: list[float]) -> Row:
    via, raw = median(through), median(direct)
    # Paired by repetition: each pair ran back to back, so load on the machine cancels.
    overhead = median([m - d for m, d in zip(through, direct, strict=True)])
    row = Row(
        workload="8. mediator overhead",
        backend="memory",
        metric=metric,
        unit="µs/command",
        higher_is_better=False,
        eventfold=via,
        raw=raw,
        target=f"overhead ≤{TARGET_US:.0f} µs",
        samples={"eventfold": through, "raw": direct},
        extra={"overhead_us": overhead},
    )
    if overhead is not None:
        row.met = overhead <= TARGET_US
        row.note = f"overhead {overhead:.1f} µs/command (mediator minus direct handler call)"
    return row


async def run(context: Context, _backend: object) -> list[Row]:
    """Both rows."""
    return [
        await _dispatch_only(context),
        await _shipped(context),
        await _with_unit_of_work(context),
    ]
