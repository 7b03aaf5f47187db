"""10. Telemetry: what eventfold's hook points cost with telemetry off, and with it on.

Two rows, microseconds per command through a mediator with four pass-through behaviours
and a handler that writes to a dict:

- *off*: ``mediator.send`` with no telemetry installed (the default) against calling the
  same composed pipeline directly, which is what ``send`` did before it had a hook: the
  difference is the hook's whole cost (one call and one ``None`` check) and must stay
  within noise.
- *on*: ``send`` with ``eventfold.integrations.otel.instrument()`` on an SDK tracer and
  meter provider that export nowhere, against ``send`` with telemetry off: the price of a
  span and a histogram point per command.
"""

from __future__ import annotations

from typing import Any

from benchmarks.harness import Context, Row, median
from benchmarks.workloads.mediator import DictHandler, OpenAccount, _paired, passthrough
from eventfold import Mediator, RequestContext
from eventfold.ports.telemetry import install_telemetry

TARGET_OFF_US = 0.5


def _mediator() -> Mediator:
    store: dict[str, list[object]] = {}
    mediator = Mediator([passthrough] * 4)
    mediator.register(OpenAccount, lambda _ctx: DictHandler(store))
    return mediator


def _make(rep: int) -> Any:
    return lambda side, i: OpenAccount(f"{rep}-{side}-{i}", "Ada")


async def _off(context: Context) -> Row:
    mediator = _mediator()
    pipeline = mediator._pipeline(OpenAccount)

    async def direct(command: OpenAccount) -> Any:
        return await pipeline(command, RequestContext(command, None, None, None))

    n = context.n(20_000, 2000)
    await _paired(mediator.send, direct, _make(-1), 2000)
    through, raw = [], []
    for rep in range(max(context.repeat, 5)):
        m, d = await _paired(mediator.send, direct, _make(rep), n)
        through.append(m)
        raw.append(d)
    return _row("telemetry off: send vs the pipeline it wraps", through, raw, TARGET_OFF_US)


async def _on(context: Context) -> Row:
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415 - the otel extra
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415

    from eventfold.integrations.otel import instrument  # noqa: PLC0415

    mediator = _mediator()
    telemetry = instrument(TracerProvider(), MeterProvider())
    install_telemetry(None)

    async def traced(command: OpenAccount) -> Any:
        install_telemetry(telemetry)
        try:
            return await mediator.send(command)
        finally:
            install_telemetry(None)

    async def untraced(command: OpenAccount) -> Any:
        install_telemetry(None)
        return await mediator.send(command)

    n = context.n(10_000, 1000)
    await _paired(traced, untraced, _make(-1), 1000)
    through, raw = [], []
    for rep in range(max(context.repeat, 5)):
        m, d = await _paired(traced, untraced, _make(rep), n)
        through.append(m)
        raw.append(d)
    return _row("telemetry on (SDK, no exporter): send vs send off", through, raw, None)


def _row(metric: str, through: list[float], raw: list[float], target: float | None) -> Row:
    # Paired by repetition: each pair ran back to back, so load on the machine cancels.
    overhead = median([m - d for m, d in zip(through, raw, strict=True)])
    row = Row(
        workload="10. telemetry",
        backend="memory",
        metric=metric,
        unit="µs/command",
        higher_is_better=False,
        eventfold=median(through),
        raw=median(raw),
        target="" if target is None else f"overhead ≤{target} µs",
        samples={"eventfold": through, "raw": raw},
        extra={"overhead_us": overhead},
    )
    if overhead is not None:
        if target is not None:
            row.met = overhead <= target
        row.note = f"overhead {overhead:.2f} µs/command"
    return row


async def run(context: Context, _backend: object) -> list[Row]:
    """Both rows."""
    return [await _off(context), await _on(context)]
