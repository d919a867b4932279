"""Tier-change arithmetic (billing.md 7.2-7.3) against the worked examples of 12.3: the pure
formulas, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keysat.subscriptions.proration import (
    LiveSubscription,
    Proration,
    QuoteRefused,
    Side,
    days_remaining,
    direction,
    prorate,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

STANDARD = Side(rank=1, price=2_500, recurring=False, renewal_period_days=0)
PRO = Side(rank=2, price=7_500, recurring=False, renewal_period_days=0)
STANDARD_MONTHLY = Side(rank=1, price=2_500, recurring=True, renewal_period_days=30)
PRO_MONTHLY = Side(rank=2, price=7_500, recurring=True, renewal_period_days=30)
PRO_ANNUAL = Side(rank=2, price=75_000, recurring=True, renewal_period_days=365)

NO_LADDER_CURRENT = "current policy is not in any tier ladder — admin must set tier_rank first"
NO_LADDER_TARGET = "target policy is not in any tier ladder — admin must set tier_rank first"
SIDEWAYS = "sideways tier changes (same rank) are admin-only"
PERPETUAL_DOWN = "perpetual downgrades are admin-only — they imply a refund decision"
RECURRING_TO_PERPETUAL_DOWN = (
    "downgrading from a recurring subscription to a perpetual policy is admin-only"
)


def live(left: timedelta, period_days: int = 30) -> LiveSubscription:
    return LiveSubscription(current_period_end=NOW + left, period_days=period_days)


def quote(
    current: Side,
    target: Side,
    subscription: LiveSubscription | None = None,
    *,
    mode: str = "buyer",
    has_subscription: bool | None = None,
) -> Proration:
    return prorate(
        mode,
        current,
        target,
        subscription,
        NOW,
        has_subscription=subscription is not None if has_subscription is None else has_subscription,
    )


def refusal(
    current: Side,
    target: Side,
    subscription: LiveSubscription | None = None,
    *,
    mode: str = "buyer",
    has_subscription: bool | None = None,
) -> QuoteRefused:
    with pytest.raises(QuoteRefused) as raised:
        quote(current, target, subscription, mode=mode, has_subscription=has_subscription)
    return raised.value


# --- worked examples E1-E6, E9 ---------------------------------------------------------------


def test_e1_perpetual_upgrade_charges_the_difference_at_once() -> None:
    for mode in ("buyer", "admin"):
        assert quote(STANDARD, PRO, mode=mode) == Proration("upgrade", 5_000, None, None, None)


def test_e2_fifteen_days_left_of_thirty_charges_half_the_difference() -> None:
    assert quote(STANDARD_MONTHLY, PRO_MONTHLY, live(15 * DAY)) == Proration(
        "upgrade", 2_500, None, 7_500, 30
    )


@pytest.mark.parametrize(
    ("left", "days", "charge"),
    [
        pytest.param(14 * DAY + timedelta(hours=23, minutes=59), 14, 2_333, id="E3"),
        pytest.param(15 * DAY - timedelta(microseconds=1), 14, 2_333, id="E3-one-microsecond"),
        pytest.param(15 * DAY, 15, 2_500, id="E2-exact"),
        pytest.param(DAY - timedelta(seconds=1), 0, 0, id="under-a-day"),
        pytest.param(DAY, 1, 166, id="one-day"),
        pytest.param(30 * DAY, 30, 5_000, id="whole-period"),
        pytest.param(29 * DAY + timedelta(hours=23), 29, 4_833, id="29-days-23-hours"),
    ],
)
def test_e3_whole_days_are_counted_down(left: timedelta, days: int, charge: int) -> None:
    assert days_remaining(NOW + left, NOW, 30) == days
    assert quote(STANDARD_MONTHLY, PRO_MONTHLY, live(left)).charge == charge


@pytest.mark.parametrize(
    "left",
    [timedelta(0), -timedelta(seconds=1), -timedelta(hours=12), -3 * DAY, -400 * DAY],
)
def test_e4_period_end_now_or_past_charges_nothing(left: timedelta) -> None:
    proration = quote(STANDARD_MONTHLY, PRO_MONTHLY, live(left))
    assert proration == Proration("upgrade", 0, None, 7_500, 30)


def test_e5_buyer_downgrade_of_a_subscription_waits_for_the_period_end() -> None:
    end = NOW + 20 * DAY
    proration = quote(PRO_MONTHLY, STANDARD_MONTHLY, live(20 * DAY))
    assert proration == Proration("downgrade", 0, end, 2_500, 30)
    # the same arithmetic in admin mode
    assert quote(PRO_MONTHLY, STANDARD_MONTHLY, live(20 * DAY), mode="admin") == proration


def test_e6_buyer_perpetual_downgrade_is_refused() -> None:
    error = refusal(PRO, STANDARD)
    assert (error.status, error.message) == (400, PERPETUAL_DOWN)
    assert "admin-only" in error.message


def test_e6_buyer_downgrade_from_a_subscription_to_perpetual_has_its_own_message() -> None:
    error = refusal(PRO_MONTHLY, STANDARD, live(10 * DAY))
    assert (error.status, error.message) == (400, RECURRING_TO_PERPETUAL_DOWN)
    # a subscription that is no longer live still counts as "with a subscription"
    error = refusal(PRO_MONTHLY, STANDARD, None, has_subscription=True)
    assert error.message == RECURRING_TO_PERPETUAL_DOWN


def test_e9_admin_unranked_price_tie_is_an_upgrade_with_no_charge() -> None:
    current = Side(rank=None, price=2_500, recurring=False, renewal_period_days=0)
    target = Side(rank=None, price=2_500, recurring=False, renewal_period_days=0)
    assert direction("admin", current, target) == "upgrade"
    assert quote(current, target, mode="admin") == Proration("upgrade", 0, None, None, None)


def test_e10_admin_perpetual_downgrade_is_quoted_at_zero() -> None:
    assert quote(PRO, STANDARD, mode="admin") == Proration("downgrade", 0, None, None, None)
    assert quote(PRO_MONTHLY, STANDARD, live(9 * DAY), mode="admin") == Proration(
        "downgrade", 0, None, None, None
    )


# --- days_remaining -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "period_days", "expected"),
    [
        (45 * DAY, 30, 30),  # clamped to the period
        (31 * DAY, 30, 30),
        (30 * DAY, 30, 30),
        (10 * DAY, 7, 7),
        (-DAY, 30, 0),  # in the past
        (-timedelta(seconds=1), 30, 0),
        (timedelta(seconds=86_399), 30, 0),
        (timedelta(seconds=86_400), 30, 1),
        (5 * DAY, 0, 0),  # a zero-day period clamps to 0
    ],
)
def test_days_remaining_is_clamped(left: timedelta, period_days: int, expected: int) -> None:
    assert days_remaining(NOW + left, NOW, period_days) == expected


def test_a_longer_remaining_time_than_the_period_charges_the_full_difference() -> None:
    # e.g. a 30-day subscription paid through 40 days from now
    assert quote(STANDARD_MONTHLY, PRO_MONTHLY, live(40 * DAY)).charge == 5_000


def test_a_zero_day_subscription_period_divides_by_one_and_charges_nothing() -> None:
    assert quote(STANDARD_MONTHLY, PRO_MONTHLY, live(3 * DAY, period_days=0)).charge == 0


def test_the_subscription_period_not_the_target_period_is_the_divisor() -> None:
    # Standard monthly with 15 of 30 days left -> Pro Annual: (75 000 - 2 500) * 15 div 30
    assert quote(STANDARD_MONTHLY, PRO_ANNUAL, live(15 * DAY)) == Proration(
        "upgrade", 36_250, None, 75_000, 365
    )


# --- direction ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current_rank", "target_rank", "message"),
    [
        (None, 2, NO_LADDER_CURRENT),
        (None, None, NO_LADDER_CURRENT),
        (1, None, NO_LADDER_TARGET),
        (2, 2, SIDEWAYS),
    ],
)
def test_buyer_ladder_refusals(
    current_rank: int | None, target_rank: int | None, message: str
) -> None:
    current = Side(rank=current_rank, price=100, recurring=False, renewal_period_days=0)
    target = Side(rank=target_rank, price=900, recurring=False, renewal_period_days=0)
    with pytest.raises(QuoteRefused) as raised:
        direction("buyer", current, target)
    assert (raised.value.status, raised.value.message) == (400, message)
    assert str(raised.value) == message
    error = refusal(current, target)
    assert error.message == message


def test_buyer_direction_follows_rank_not_price() -> None:
    cheap_high = Side(rank=5, price=100, recurring=False, renewal_period_days=0)
    dear_low = Side(rank=1, price=9_000, recurring=False, renewal_period_days=0)
    assert direction("buyer", dear_low, cheap_high) == "upgrade"
    assert direction("buyer", cheap_high, dear_low) == "downgrade"
    # an upgrade to a cheaper tier owes nothing, never a negative charge
    assert quote(dear_low, cheap_high).charge == 0


@pytest.mark.parametrize(
    ("current", "target", "expected"),
    [
        ((1, 9_000), (2, 100), "upgrade"),  # ranks set and differ: by rank
        ((2, 100), (1, 9_000), "downgrade"),
        ((2, 100), (2, 9_000), "upgrade"),  # equal ranks: by price
        ((2, 9_000), (2, 100), "downgrade"),
        ((None, 100), (1, 9_000), "upgrade"),  # one rank missing: by price
        ((1, 9_000), (None, 100), "downgrade"),
        ((3, 9_000), (None, 100), "downgrade"),
        ((None, 500), (None, 500), "upgrade"),  # tie
        ((None, 501), (None, 500), "downgrade"),
    ],
)
def test_admin_direction(
    current: tuple[int | None, int], target: tuple[int | None, int], expected: str
) -> None:
    left = Side(rank=current[0], price=current[1], recurring=False, renewal_period_days=0)
    right = Side(rank=target[0], price=target[1], recurring=False, renewal_period_days=0)
    assert direction("admin", left, right) == expected


def test_admin_mode_never_refuses() -> None:
    unranked = Side(rank=None, price=3_000, recurring=True, renewal_period_days=30)
    assert quote(unranked, STANDARD, live(5 * DAY), mode="admin").direction == "downgrade"
    assert quote(PRO, Side(None, 100, False, 0), mode="admin").direction == "downgrade"
    assert quote(STANDARD, Side(1, 2_500, False, 0), mode="admin").direction == "upgrade"


# --- recurring and perpetual targets --------------------------------------------------------


def test_perpetual_target_upgrade_from_a_subscription_charges_the_full_difference() -> None:
    pro_lifetime = Side(rank=3, price=30_000, recurring=False, renewal_period_days=0)
    assert quote(PRO_MONTHLY, pro_lifetime, live(2 * DAY)) == Proration(
        "upgrade", 22_500, None, None, None
    )


def test_e7_recurring_target_without_a_live_subscription_charges_a_full_cycle() -> None:
    assert quote(STANDARD, PRO_MONTHLY) == Proration("upgrade", 7_500, None, 7_500, 30)
    # a cancelled or lapsed subscription is not live
    assert quote(STANDARD_MONTHLY, PRO_MONTHLY, None, has_subscription=True) == Proration(
        "upgrade", 7_500, None, 7_500, 30
    )
    assert quote(STANDARD, PRO_ANNUAL, mode="admin") == Proration(
        "upgrade", 75_000, None, 75_000, 365
    )


def test_recurring_downgrade_without_a_subscription_is_immediate() -> None:
    assert quote(PRO, STANDARD_MONTHLY) == Proration("downgrade", 0, None, 2_500, 30)
    assert quote(PRO_MONTHLY, STANDARD_MONTHLY, None, has_subscription=True) == Proration(
        "downgrade", 0, None, 2_500, 30
    )


@pytest.mark.parametrize(("renewal_days", "next_days"), [(0, 1), (1, 1), (7, 7), (365, 365)])
def test_next_renewal_period_is_at_least_one_day(renewal_days: int, next_days: int) -> None:
    target = Side(rank=2, price=7_500, recurring=True, renewal_period_days=renewal_days)
    assert quote(STANDARD, target).next_renewal_period_days == next_days
    assert quote(STANDARD_MONTHLY, target, live(15 * DAY)).next_renewal_period_days == next_days
    lower = Side(rank=0, price=100, recurring=True, renewal_period_days=renewal_days)
    assert quote(STANDARD_MONTHLY, lower, live(15 * DAY)).next_renewal_period_days == next_days


def test_free_recurring_target_owes_nothing() -> None:
    free_plus = Side(rank=2, price=0, recurring=True, renewal_period_days=30)
    assert quote(STANDARD, free_plus) == Proration("upgrade", 0, None, 0, 30)


def test_quote_refused_carries_a_status() -> None:
    assert QuoteRefused("x").status == 400
    assert QuoteRefused("target policy is archived", status=409).status == 409


# --- properties -----------------------------------------------------------------------------

prices = st.integers(min_value=0, max_value=10**12)
ranks = st.one_of(st.none(), st.integers(min_value=0, max_value=5))
periods = st.integers(min_value=0, max_value=3_650)
offsets = st.integers(min_value=-(10**9), max_value=10**9)  # seconds from NOW
sides = st.builds(
    Side, rank=ranks, price=prices, recurring=st.booleans(), renewal_period_days=periods
)


def reference_charge(current: Side, target: Side, left_seconds: int, period_days: int) -> int:
    """billing.md 7.3 read literally: `div` truncates toward zero, then max(0, ...)."""
    remaining = min(max(left_seconds // 86_400 if left_seconds >= 0 else 0, 0), period_days)
    product = (target.price - current.price) * remaining
    period = max(period_days, 1)
    truncated = abs(product) // period * (1 if product >= 0 else -1)
    return max(0, truncated)


@given(sides, sides, st.one_of(st.none(), st.tuples(offsets, periods)), st.booleans())
def test_charge_is_never_negative(
    current: Side,
    target: Side,
    sub: tuple[int, int] | None,
    admin: bool,
) -> None:
    subscription = (
        LiveSubscription(NOW + timedelta(seconds=sub[0]), sub[1]) if sub is not None else None
    )
    try:
        proration = quote(current, target, subscription, mode="admin" if admin else "buyer")
    except QuoteRefused:
        assert not admin
        return
    assert proration.charge >= 0
    assert proration.direction in ("upgrade", "downgrade")
    if proration.direction == "downgrade" and target.recurring:
        assert proration.charge == 0
    if target.recurring:
        assert proration.next_renewal_charge == target.price
        assert proration.next_renewal_period_days == max(target.renewal_period_days, 1)
    else:
        assert proration.effective_at is None
        assert proration.next_renewal_charge is None
        assert proration.next_renewal_period_days is None


@given(
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    offsets,
    st.integers(1, 3_650),
    st.sampled_from(["buyer", "admin"]),
)
def test_live_upgrade_charge_is_between_zero_and_the_price_difference(
    from_price: int, to_price: int, left: int, period_days: int, mode: str
) -> None:
    current = Side(rank=1, price=from_price, recurring=True, renewal_period_days=30)
    target = Side(rank=2, price=to_price, recurring=True, renewal_period_days=30)
    subscription = LiveSubscription(NOW + timedelta(seconds=left), period_days)
    proration = quote(current, target, subscription, mode=mode)
    assert proration.direction == "upgrade"
    assert 0 <= proration.charge <= max(to_price - from_price, 0)
    assert proration.charge == reference_charge(current, target, left, period_days)
    assert proration.effective_at is None


@given(
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.integers(0, 3_650),
    st.sampled_from(["buyer", "admin"]),
)
def test_no_charge_once_the_period_end_has_passed(
    from_price: int, to_price: int, ago: int, period_days: int, mode: str
) -> None:
    current = Side(rank=1, price=from_price, recurring=True, renewal_period_days=30)
    target = Side(rank=2, price=to_price, recurring=True, renewal_period_days=30)
    past = LiveSubscription(NOW - timedelta(seconds=ago), period_days)
    assert quote(current, target, past, mode=mode).charge == 0


@given(st.integers(-(10**9), 10**9), periods)
def test_days_remaining_stays_in_range(left: int, period_days: int) -> None:
    days = days_remaining(NOW + timedelta(seconds=left), NOW, period_days)
    assert 0 <= days <= period_days
    if 0 <= left < (period_days + 1) * 86_400:
        assert days == min(left // 86_400, period_days)
