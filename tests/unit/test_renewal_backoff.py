"""The renewal failure backoff of billing.md 6.5 (and the F8 schedule of 12.4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keysat.subscriptions.proration import MAX_FAILURES, backoff

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("failures", "wait"),
    [(1, 5 * MINUTE), (2, 30 * MINUTE), (3, 2 * HOUR), (4, 6 * HOUR), (5, 12 * HOUR)],
)
def test_the_table_of_6_5(failures: int, wait: timedelta) -> None:
    assert backoff(failures) == wait


def test_five_failures_end_the_attempts() -> None:
    """Phase 1 selects `consecutive_failures < 5`: the fifth failure is the last attempt."""
    assert MAX_FAILURES == 5


def test_waits_only_grow() -> None:
    waits = [backoff(n) for n in range(1, MAX_FAILURES + 1)]
    assert waits == sorted(waits) and len(set(waits)) == len(waits)


def test_f8_attempt_times() -> None:
    """Failures at t, t+5 min, t+35 min, t+2 h 35 min, t+8 h 35 min (billing.md 12.4 F8)."""
    t = datetime(2026, 1, 31, tzinfo=UTC)
    attempts = [t]
    for failures in range(1, MAX_FAILURES):
        attempts.append(attempts[-1] + backoff(failures))
    assert [moment - t for moment in attempts] == [
        timedelta(0),
        5 * MINUTE,
        35 * MINUTE,
        2 * HOUR + 35 * MINUTE,
        8 * HOUR + 35 * MINUTE,
    ]
    # The wait recorded after the fifth failure is never used: nothing is selected again.
    assert attempts[-1] + backoff(MAX_FAILURES) == t + 20 * HOUR + 35 * MINUTE


def test_first_failure_to_fifth_attempt_is_8h35() -> None:
    assert sum((backoff(n) for n in range(1, MAX_FAILURES)), timedelta(0)) == timedelta(
        hours=8, minutes=35
    )
