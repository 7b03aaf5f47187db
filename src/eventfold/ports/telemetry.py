"""The telemetry port: spans and metrics at eventfold's hook points, off unless installed.

The mediator, the unit of work, the outbox relay, the inbox, projections and sagas ask
:func:`active_telemetry` for the installed :class:`Telemetry`; with none installed (the
default) they skip every telemetry call, so switched off it costs one function call per
hook. ``eventfold.integrations.otel.instrument()`` installs the OpenTelemetry one.

Trace context crosses processes as a W3C ``traceparent`` string: the unit of work stores
the context of the request that recorded an event in its outbox row, the relay sends it
as the broker message's ``traceparent`` header, and the consumer's span continues it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Literal, Protocol

__all__ = [
    "AttributeValue",
    "Attributes",
    "SpanHandle",
    "SpanKind",
    "Telemetry",
    "active_telemetry",
    "install_telemetry",
]

SpanKind = Literal["internal", "server", "client", "producer", "consumer"]
AttributeValue = str | int | float | bool
Attributes = Mapping[str, AttributeValue]


class SpanHandle(Protocol):
    """A span in progress, as the code it measures sees it."""

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Add or replace one attribute."""
        ...

    def set_error(self, description: str) -> None:
        """Mark the span failed (an error status), with what went wrong."""
        ...

    def traceparent(self) -> str | None:
        """This span's context as a W3C ``traceparent``, for a message to carry."""
        ...


class Telemetry(Protocol):
    """Where eventfold's spans and measurements go."""

    def span(
        self,
        name: str,
        *,
        kind: SpanKind = "internal",
        attributes: Attributes | None = None,
        parent: str | None = None,
        links: Sequence[str] = (),
    ) -> AbstractContextManager[SpanHandle]:
        """A span current inside the ``with`` block; an exception raised in it fails it.

        ``parent`` (a ``traceparent``) continues a trace that came in a message instead of
        the current one; ``links`` relate the span to the traces of the messages it handles.
        """
        ...

    def traceparent(self) -> str | None:
        """The current span's context as a W3C ``traceparent``; None outside any span."""
        ...

    def add(self, metric: str, amount: float, attributes: Attributes | None = None) -> None:
        """Add to a counter (``metric`` is its name, such as ``eventfold.outbox.published``)."""
        ...

    def record(self, metric: str, value: float, attributes: Attributes | None = None) -> None:
        """Record one value of a histogram (a duration, a lag)."""
        ...

    def gauge(self, metric: str, value: float, attributes: Attributes | None = None) -> None:
        """Set a gauge to its latest value (a backlog, sagas in a state)."""
        ...


_active: Telemetry | None = None


def active_telemetry() -> Telemetry | None:
    """The installed telemetry, or None when telemetry is off (the default)."""
    return _active


def install_telemetry(telemetry: Telemetry | None) -> None:
    """Send eventfold's spans and metrics to ``telemetry`` from now on; None switches off."""
    global _active  # noqa: PLW0603 - one switch per process, as OpenTelemetry's own providers
    _active = telemetry
