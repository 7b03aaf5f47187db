"""Timing, repetitions, results and their rendering (markdown table and JSON)."""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NOT_AVAILABLE = "not available"


@dataclass
class Row:
    """One line of the results table: eventfold, raw and eventsourcing measuring the same work."""

    workload: str
    backend: str
    metric: str
    unit: str
    higher_is_better: bool
    eventfold: float | None
    raw: float | None
    target: str = ""
    target_ratio: float | None = None
    """The floor on eventfold's speed relative to raw (see :attr:`speed`)."""
    met: bool | None = None
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    peer: float | None = None
    """eventsourcing's figure for the same work, when it has one."""
    peer_target: float | None = None
    """The floor on eventfold's speed relative to eventsourcing."""

    @property
    def ratio(self) -> float | None:
        """eventfold / raw for the row's metric."""
        if self.eventfold is None or not self.raw:
            return None
        return self.eventfold / self.raw

    def _speed(self, other: float | None) -> float | None:
        if not self.eventfold or not other:
            return None
        return self.eventfold / other if self.higher_is_better else other / self.eventfold

    @property
    def speed(self) -> float | None:
        """How fast eventfold is relative to raw (>1: faster), whatever the unit."""
        return self._speed(self.raw)

    @property
    def peer_speed(self) -> float | None:
        """How fast eventfold is relative to eventsourcing (>1: faster)."""
        return self._speed(self.peer)

    def judge(self) -> None:
        """Set ``met`` from the speed floors the row carries."""
        checks = []
        if self.target_ratio is not None and self.speed is not None:
            checks.append(self.speed >= self.target_ratio)
        if self.peer_target is not None and self.peer_speed is not None:
            checks.append(self.peer_speed >= self.peer_target)
        if not checks:
            return
        self.met = all(checks) if self.met is None else (self.met and all(checks))

    def to_json(self) -> dict[str, Any]:
        """The row as JSON-ready data, ratios included."""
        data = asdict(self)
        data["ratio"] = self.ratio
        data["speed_vs_raw"] = self.speed
        data["speed_vs_eventsourcing"] = self.peer_speed
        return data


class Stopwatch:
    """Measures one timed section; collect garbage first so one run does not pay for another."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __enter__(self) -> Stopwatch:
        gc.collect()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self._started


Trial = Callable[[], Awaitable[float]]
"""One repetition of one side: sets up fresh tables, measures, tears down, returns the value."""


async def alternate(eventfold: Trial, raw: Trial, repeat: int) -> tuple[list[float], list[float]]:
    """Run both sides ``repeat`` times, interleaved so drift hits both equally."""
    ef_values: list[float] = []
    raw_values: list[float] = []
    for index in range(repeat):
        # Alternate who goes first: a warm page cache or a checkpoint must not favour one.
        if index % 2 == 0:
            ef_values.append(await eventfold())
            raw_values.append(await raw())
        else:
            raw_values.append(await raw())
            ef_values.append(await eventfold())
    return ef_values, raw_values


def median(values: list[float]) -> float | None:
    """The median, or None for no values."""
    return statistics.median(values) if values else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_table(rows: list[Row]) -> str:
    """The results as a markdown table; ``x raw`` and ``x es`` are eventfold's relative speed."""
    lines = [
        "| workload | backend | metric | eventfold | raw | x raw | eventsourcing | x es "
        "| target | met |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        eventfold = NOT_AVAILABLE if row.note == NOT_AVAILABLE else _fmt(row.eventfold)
        lines.append(
            f"| {row.workload} | {row.backend} | {row.metric} ({row.unit}) | {eventfold} | "
            f"{_fmt(row.raw)} | {_times(row.speed)} | {_fmt(row.peer)} | "
            f"{_times(row.peer_speed)} | {row.target} | {met} |"
        )
    notes = [f"- {row.workload} / {row.backend}: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)


def write_json(
    path: Path, machine: dict[str, Any], options: dict[str, Any], rows: list[Row]
) -> None:
    """Write the whole run (machine, options, rows) as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine, "options": options, "rows": [row.to_json() for row in rows]}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


@dataclass
class Context:
    """What every workload gets: the scale, the repetition count and the run's options."""

    scale: float = 1.0
    repeat: int = 3

    def n(self, base: int, minimum: int = 1) -> int:
        """``base`` operations at the run's scale."""
        return max(minimum, round(base * self.scale))
