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

import time
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import Context, Row, median
from benchmarks.model import Account
from eventfold import (
    CommandHandler,
    ErrorMappingBehavior,
    LoggingBehavior,
    Mediator,
    OperationResult,
    RequestContext,
    ValidationBehavior,
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


def _commands(n: int, tag: str) -> list[OpenAccount]:
    return [OpenAccount(f"{tag}-{i}", "Ada") for i in range(n)]


async def _dispatch_only(context: Context) -> Row:
    n = context.n(20_000, 1000)
    store: dict[str, list[object]] = {}
    handler = DictHandler(store)
    mediator = Mediator([passthrough] * 4)
    mediator.register(OpenAccount, lambda _ctx: DictHandler(store))
    through: list[float] = []
    direct: list[float] = []
    await _time_loop(mediator.send, _commands(1000, "warm"))
    for rep in range(max(context.repeat, 5)):
        store.clear()
        through.append(await _time_loop(mediator.send, _commands(n, f"m{rep}")))
        store.clear()
        direct.append(await _time_loop(handler.handle, _commands(n, f"d{rep}")))
    return _row("dispatch only (4 pass-through behaviours)", through, direct)


async def _shipped(context: Context) -> Row:
    n = context.n(20_000, 1000)
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
        through.append(await _time_loop(mediator.send, _commands(n, f"m{rep}")))
        store.clear()
        direct.append(await _time_loop(handler.handle, _commands(n, f"d{rep}")))
    return _row(
        "logging+errors+validation+pass-through, dict store",
        through,
        direct,
    )


def _row(metric: str, through: list[float], direct: list[float]) -> Row:
    via, raw = median(through), median(direct)
    overhead = None if via is None or raw is None else via - raw
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
    return [await _dispatch_only(context), await _shipped(context)]
