"""Tier-change arithmetic (billing.md 7.2-7.3) and the renewal backoff (6.5): integers only,
no database, so every worked example is a plain unit test."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

SECONDS_PER_DAY = 86_400
BACKOFF = (
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
    timedelta(hours=12),
)
MAX_FAILURES = 5


def backoff(failures: int) -> timedelta:
    """The wait after the n-th failed renewal attempt in a row (n >= 1)."""
    return BACKOFF[min(max(failures, 1), MAX_FAILURES) - 1]


class QuoteRefused(Exception):
    """A quote the rules refuse; `status` 400 (or 409, 403) with the spec's message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Side:
    """One end of a tier change: what the proration needs to know about a policy."""

    rank: int | None
    price: int
    recurring: bool
    renewal_period_days: int


@dataclass(frozen=True)
class LiveSubscription:
    current_period_end: datetime
    period_days: int


@dataclass(frozen=True)
class Proration:
    direction: str
    charge: int
    effective_at: datetime | None
    next_renewal_charge: int | None
    next_renewal_period_days: int | None


def direction(mode: str, current: Side, target: Side) -> str:
    """billing.md 7.2. Buyers move only along the ranked ladder; admins may move anywhere."""
    if mode == "buyer":
        if current.rank is None:
            raise QuoteRefused(
                "current policy is not in any tier ladder — admin must set tier_rank first"
            )
        if target.rank is None:
            raise QuoteRefused(
                "target policy is not in any tier ladder — admin must set tier_rank first"
            )
        if current.rank == target.rank:
            raise QuoteRefused("sideways tier changes (same rank) are admin-only")
        return "upgrade" if target.rank > current.rank else "downgrade"
    if current.rank is not None and target.rank is not None and current.rank != target.rank:
        return "upgrade" if target.rank > current.rank else "downgrade"
    return "upgrade" if target.price >= current.price else "downgrade"


def days_remaining(period_end: datetime, at: datetime, period_days: int) -> int:
    """Whole days until the paid-through time, clamped to [0, period_days]."""
    seconds = int((period_end - at).total_seconds())
    return min(max(seconds // SECONDS_PER_DAY, 0), period_days)


def prorate(
    mode: str,
    current: Side,
    target: Side,
    subscription: LiveSubscription | None,
    at: datetime,
    *,
    has_subscription: bool,
) -> Proration:
    """billing.md 7.3. `subscription` is the live (active or past_due) one, if any;
    `has_subscription` says whether the license has a subscription at all."""
    way = direction(mode, current, target)
    if not target.recurring:
        if way == "downgrade" and mode == "buyer":
            raise QuoteRefused(
                "downgrading from a recurring subscription to a perpetual policy is admin-only"
                if has_subscription
                else "perpetual downgrades are admin-only — they imply a refund decision"
            )
        return Proration(way, max(target.price - current.price, 0), None, None, None)
    next_days = max(target.renewal_period_days, 1)
    if way == "downgrade":
        effective = subscription.current_period_end if subscription is not None else None
        return Proration(way, 0, effective, target.price, next_days)
    if subscription is None:
        return Proration(way, max(target.price, 0), None, target.price, next_days)
    period = max(subscription.period_days, 1)
    remaining = days_remaining(subscription.current_period_end, at, subscription.period_days)
    charge = max(0, (target.price - current.price) * remaining // period)
    return Proration(way, charge, None, target.price, next_days)
