"""OpenTelemetry for eventfold: ``instrument()`` once per process, spans and metrics follow.

``pip install 'eventfold[otel]'``, configure OpenTelemetry's providers and exporters as
usual, then call :func:`instrument` (it uses the global providers unless given some).
From then on a command or query through the mediator, the unit of work's commit, the
outbox relay's publish, a broker consumer's handling through the inbox, a projection's
batch and a saga's steps and compensations each make a span, and the trace context of a
request travels in the outbox row and the broker message's ``traceparent`` header, so a
consumer in another process continues the trace of the command that recorded the event.

Metrics (instruments created on first use):

- ``eventfold.request.duration`` (s, histogram): by request type and outcome
  (``success``, ``failure`` for a non-2xx result, ``error`` for an exception)
- ``eventfold.projection.lag`` (s, histogram) and ``eventfold.projection.events``
- ``eventfold.projection.behind`` (events readable, not yet applied),
  ``eventfold.projection.held_back`` (committed, not yet readable behind an open writer)
  and ``eventfold.projection.seconds_behind`` (gauges, at most once a second)
- ``eventfold.outbox.published`` (relay throughput), ``eventfold.outbox.backlog`` and
  ``eventfold.outbox.dead_letters`` (gauges, each time the relay measures them)
- ``eventfold.inbox.duplicates``: deliveries the inbox absorbed
- ``eventfold.saga.transitions``: saga steps by the state they led to
- ``eventfold.pool.connections`` (gauge, ``state`` = ``used``/``idle``/``max``): the
  connection pools of the storages given to :func:`observe_pools`
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from eventfold.ports.telemetry import Attributes, AttributeValue, SpanHandle, install_telemetry
from eventfold.ports.telemetry import SpanKind as EventfoldSpanKind

__all__ = ["OpenTelemetry", "PoolUsage", "instrument", "observe_pools", "uninstrument"]

_SCOPE = "eventfold"
_KINDS = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
_UNITS = {"duration": "s", "lag": "s"}
_propagator = TraceContextTextMapPropagator()


class _Span:
    """An OpenTelemetry span as eventfold's hook points see it."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def set_error(self, description: str) -> None:
        self._span.set_status(Status(StatusCode.ERROR, description))

    def traceparent(self) -> str | None:
        return _traceparent_of(trace.set_span_in_context(self._span))


def _traceparent_of(context: otel_context.Context | None) -> str | None:
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    return carrier.get("traceparent")


def _context_of(traceparent: str) -> otel_context.Context:
    return _propagator.extract({"traceparent": traceparent})


class OpenTelemetry:
    """eventfold's :class:`~eventfold.ports.telemetry.Telemetry` on OpenTelemetry."""

    def __init__(self, tracer: Tracer, meter: Meter) -> None:
        self._tracer = tracer
        self._meter = meter
        self._instruments: dict[tuple[str, str], Any] = {}

    @contextmanager
    def _span(
        self,
        name: str,
        kind: EventfoldSpanKind,
        attributes: Attributes | None,
        parent: str | None,
        links: Sequence[str],
    ) -> Iterator[SpanHandle]:
        context = None if parent is None else _context_of(parent)
        span_links = [Link(c) for c in (_span_context(p) for p in links) if c is not None]
        with self._tracer.start_as_current_span(
            name, context=context, kind=_KINDS[kind], attributes=attributes, links=span_links
        ) as span:
            yield _Span(span)

    def span(
        self,
        name: str,
        *,
        kind: EventfoldSpanKind = "internal",
        attributes: Attributes | None = None,
        parent: str | None = None,
        links: Sequence[str] = (),
    ) -> AbstractContextManager[SpanHandle]:
        """A span current inside the ``with`` block (see the port)."""
        return self._span(name, kind, attributes, parent, links)

    def traceparent(self) -> str | None:
        """The current span's context as a ``traceparent``, None outside any span."""
        if not trace.get_current_span().get_span_context().is_valid:
            return None
        return _traceparent_of(None)

    def add(self, metric: str, amount: float, attributes: Attributes | None = None) -> None:
        """Add to the counter ``metric``."""
        self._instrument("counter", metric, self._meter.create_counter).add(amount, attributes)

    def record(self, metric: str, value: float, attributes: Attributes | None = None) -> None:
        """Record a value of the histogram ``metric``."""
        histogram = self._instrument("histogram", metric, self._meter.create_histogram)
        histogram.record(value, attributes)

    def gauge(self, metric: str, value: float, attributes: Attributes | None = None) -> None:
        """Set the gauge ``metric``."""
        self._instrument("gauge", metric, self._meter.create_gauge).set(value, attributes)

    def _instrument(self, kind: str, name: str, create: Callable[..., Any]) -> Any:
        instrument = self._instruments.get((kind, name))
        if instrument is None:
            unit = _UNITS.get(name.rsplit(".", 1)[-1], "1")
            instrument = self._instruments[kind, name] = create(name, unit=unit)
        return instrument


def _span_context(traceparent: str) -> trace.SpanContext | None:
    context = trace.get_current_span(_context_of(traceparent)).get_span_context()
    return context if context.is_valid else None


def instrument(
    tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> OpenTelemetry:
    """Send eventfold's spans and metrics to OpenTelemetry from now on (global providers
    unless given); return the telemetry installed."""
    tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
    meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
    telemetry = OpenTelemetry(tracer, meter)
    install_telemetry(telemetry)
    return telemetry


def uninstrument() -> None:
    """Switch eventfold's telemetry off again."""
    install_telemetry(None)


class PoolUsage(Protocol):
    """A storage that can tell how its connection pool is used (PostgreSQL's can)."""

    @property
    def name(self) -> str:
        """The storage's name."""
        ...

    def pool_usage(self) -> tuple[int, int, int]:
        """Connections in use, idle, and the most the pool opens."""
        ...


def observe_pools(
    storages: Iterable[PoolUsage], meter_provider: MeterProvider | None = None
) -> None:
    """Report the connection pools of ``storages`` as ``eventfold.pool.connections``."""
    watched = list(storages)

    def observe(_: CallbackOptions) -> Iterable[Observation]:
        for storage in watched:
            used, idle, most = storage.pool_usage()
            for state, value in (("used", used), ("idle", idle), ("max", most)):
                yield Observation(value, {"eventfold.storage": storage.name, "state": state})

    meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
    meter.create_observable_gauge("eventfold.pool.connections", [observe], unit="1")
