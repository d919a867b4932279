"""The dashboard's pure parts (web.md 11.5.1): the day series filled with zeros, the chart
scale, gridline labels, bar geometry and the period switch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from keysat.operator.daily import Day, fill_days, window_start
from keysat.web.admin.charts import (
    BOTTOM,
    HEIGHT,
    TOP,
    Series,
    bar_chart,
    compact,
    label_every,
    nice_ceiling,
)
from keysat.web.admin.dashboard import count_text, key_preview, window_days


def test_the_window_ends_today_and_every_day_is_present_in_order() -> None:
    start = window_start(date(2026, 3, 2), 7)
    assert start == date(2026, 2, 24)
    days = fill_days(
        start,
        7,
        revenue=[("2026-03-02", 50_000), ("2026-02-24", 1)],
        licenses=[("2026-03-01", "paid", 2), ("2026-03-01", "manual", 1)],
        validations=[("2026-03-02", True, 5), ("2026-03-02", False, 2)],
    )
    assert [day.day for day in days] == [date(2026, 2, 24 + n) for n in range(5)] + [
        date(2026, 3, 1),
        date(2026, 3, 2),
    ]
    assert days[0] == Day(date(2026, 2, 24), revenue_sats=1)
    assert days[5] == Day(date(2026, 3, 1), paid=2, manual=1)
    assert days[6] == Day(
        date(2026, 3, 2), revenue_sats=50_000, validations_ok=5, validations_failed=2
    )
    assert days[3] == Day(date(2026, 2, 27))


def test_rows_outside_the_window_are_ignored() -> None:
    days = fill_days(date(2026, 3, 1), 1, [("2026-02-28", 9)], [], [])
    assert days == [Day(date(2026, 3, 1))]


def test_the_scale_is_four_round_gridlines_covering_the_largest_bar() -> None:
    assert nice_ceiling(0) == 4
    assert nice_ceiling(3) == 4
    assert nice_ceiling(5) == 8
    assert nice_ceiling(50_000) == 80_000
    assert nice_ceiling(100_000) == 100_000
    assert nice_ceiling(123_456) == 200_000
    for value in range(1, 3000, 7):
        top = nice_ceiling(value)
        assert top >= value and top % 4 == 0


def test_gridline_labels_are_compact() -> None:
    assert [compact(v) for v in (0, 750, 1000, 12_500, 1_500_000, 2_000_000_000)] == [
        "0",
        "750",
        "1k",
        "12.5k",
        "1.5M",
        "2B",
    ]


def test_about_eight_day_labels_fit_and_today_is_always_labelled() -> None:
    assert label_every(7) == 1
    assert label_every(30) == 4
    assert label_every(90) == 12
    days = [date(2026, 1, 1 + n) for n in range(30)]
    chart = bar_chart("x", "X", [Series("a", "A", "#000")], days, [[0]] * 30, _text)
    assert chart.x_labels[-1].label == "30 Jan"
    assert len(chart.x_labels) <= 8


def _text(day: date, row: Sequence[int]) -> str:
    return f"{day}: {list(row)}"


def test_stacked_bars_sit_on_the_baseline_in_series_order() -> None:
    series = [Series("ok", "OK", "#0f0"), Series("bad", "Bad", "#f00")]
    days = [date(2026, 1, 1), date(2026, 1, 2)]
    chart = bar_chart("v", "Validations", series, days, [[6, 2], [0, 0]], _text)
    baseline = HEIGHT - BOTTOM
    plot = HEIGHT - TOP - BOTTOM
    first, second = chart.bars
    assert [s.series.key for s in first.segments] == ["ok", "bad"]
    ok, bad = first.segments
    assert ok.y + ok.height == baseline
    assert bad.y + bad.height == ok.y
    assert ok.height == plot * 6 / 8 and bad.height == plot * 2 / 8
    assert second.segments == [] and second.total == 0
    assert second.x > first.x
    assert first.text == "2026-01-01: [6, 2]"
    assert [t.label for t in chart.ticks] == ["0", "2", "4", "6", "8"]
    assert not chart.empty


def test_period_switch_and_capped_counts() -> None:
    assert [window_days(v) for v in ("7", "30", "90", None, "365", "x")] == [7, 30, 90, 30, 30, 30]
    assert count_text([1, 2], 1000) == "2"
    assert count_text([0] * 1000, 1000) == "1,000+"


def test_the_key_preview_keeps_the_armour_lines() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA" + "x" * 40 + "\n-----END PUBLIC KEY-----\n"
    preview = key_preview(pem).splitlines()
    assert preview[0] == "-----BEGIN PUBLIC KEY-----"
    assert preview[-1] == "-----END PUBLIC KEY-----"
    assert "…" in preview[1]
