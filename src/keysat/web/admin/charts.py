"""Geometry of the dashboard's bar charts (web.md 11.5.1): plain numbers the template turns
into inline SVG, so the charts need no script and no chart library. Stacked bars, a rounded
scale with four gridlines, and a readable subset of day labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from keysat.web.format import MONTHS

WIDTH = 640
HEIGHT = 240
LEFT = 56
RIGHT = 28
TOP = 12
BOTTOM = 30
GRIDLINES = 4


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    colour: str


@dataclass(frozen=True)
class Segment:
    series: Series
    value: int
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    day: date
    label: str
    x: float
    width: float
    total: int
    segments: list[Segment]
    text: str  # what hover, focus and screen readers announce


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class XLabel:
    x: float
    label: str


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    series: list[Series]
    bars: list[Bar]
    ticks: list[Tick]
    x_labels: list[XLabel]
    empty: bool
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    baseline: int = HEIGHT - BOTTOM


def day_label(day: date) -> str:
    return f"{day.day} {MONTHS[day.month - 1]}"


def nice_ceiling(value: int) -> int:
    """The top of the scale: four gridlines apart by a whole 1, 2, 2.5 or 5 times a power of
    ten, the smallest such that covers `value`."""
    magnitude = 1
    while True:
        for step in (magnitude, 2 * magnitude, 5 * magnitude // 2, 5 * magnitude):
            if step * GRIDLINES >= max(value, 1):
                return step * GRIDLINES
        magnitude *= 10


def compact(value: int) -> str:
    """A gridline label: "750", "12k", "1.5M"."""
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if value >= size:
            number = value / size
            text = f"{number:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return str(value)


def label_every(days: int) -> int:
    """How many days apart the x-axis labels are, so about eight fit."""
    if days <= 8:
        return 1
    return -(-days // 8)


def bar_chart(
    key: str,
    title: str,
    series: Sequence[Series],
    days: Sequence[date],
    values: Sequence[Sequence[int]],
    describe: Callable[[date, Sequence[int]], str],
) -> Chart:
    """A stacked bar per day; `values[i]` holds one number per series for `days[i]`."""
    top_value = nice_ceiling(max((sum(row) for row in values), default=0))
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(len(days), 1)
    width = max(slot * 0.72, 1.5)
    bars = []
    for index, (day, row) in enumerate(zip(days, values, strict=True)):
        x = LEFT + index * slot + (slot - width) / 2
        base = float(HEIGHT - BOTTOM)
        segments = []
        for part, value in zip(series, row, strict=True):
            height = plot_height * value / top_value
            base -= height
            segments.append(Segment(part, value, round(base, 2), round(height, 2)))
        bars.append(
            Bar(
                day=day,
                label=day_label(day),
                x=round(x, 2),
                width=round(width, 2),
                total=sum(row),
                segments=[segment for segment in segments if segment.value > 0],
                text=describe(day, row),
            )
        )
    ticks = [
        Tick(
            round(HEIGHT - BOTTOM - plot_height * step / GRIDLINES, 2),
            compact(top_value * step // GRIDLINES),
        )
        for step in range(GRIDLINES + 1)
    ]
    every = label_every(len(days))
    last = len(days) - 1
    x_labels = [
        XLabel(round(LEFT + index * slot + slot / 2, 2), day_label(day))
        for index, day in enumerate(days)
        if (last - index) % every == 0
    ]
    return Chart(
        key=key,
        title=title,
        series=list(series),
        bars=bars,
        ticks=ticks,
        x_labels=x_labels,
        empty=all(sum(row) == 0 for row in values),
    )
