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
    """One line of the results table: eventfold and raw measuring the same work."""

    workload: str
    backend: str
    metric: str
    unit: str
    higher_is_better: bool
    eventfold: float | None
    raw: float | None
    target: str = ""
    target_ratio: float | None = None
    """The bound on eventfold/raw (a floor when higher is better, else a ceiling)."""
    met: bool | None = None
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """eventfold / raw for the row's metric."""
        if self.eventfold is None or not self.raw:
            return None
        return self.eventfold / self.raw

    def judge(self) -> None:
        """Set ``met`` from ``target_ratio`` when the row carries a ratio target."""
        ratio = self.ratio
        if self.target_ratio is None or ratio is None:
            return
        ok = ratio >= self.target_ratio if self.higher_is_better else ratio <= self.target_ratio
        self.met = ok if self.met is None else (self.met and ok)

    def to_json(self) -> dict[str, Any]:
        """The row as JSON-ready data, ratio included."""
        data = asdict(self)
        data["ratio"] = self.ratio
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


def render_table(rows: list[Row]) -> str:
    """The results as a markdown table."""
    lines = [
        "| workload | backend | metric | eventfold | raw | ef/raw | target | met |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        ratio = row.ratio
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        eventfold = NOT_AVAILABLE if row.note == NOT_AVAILABLE else _fmt(row.eventfold)
        lines.append(
            f"| {row.workload} | {row.backend} | {row.metric} ({row.unit}) | {eventfold} | "
            f"{_fmt(row.raw)} | {'-' if ratio is None else f'{ratio:.2f}'} | {row.target} "
            f"| {met} |"
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
