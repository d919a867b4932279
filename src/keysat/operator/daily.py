"""Per-day series for the dashboard charts (web.md 11.5.1).

The admin API has no time-series endpoint (admin-api.md 19.2), so the dashboard reads these
three series straight from the database: this module is the admin UI's one direct read.
Days are UTC calendar days; counting happens in SQL, grouped by day, so a busy validation
log is never loaded row by row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from keysat.billing.models import Invoice
from keysat.clock import now
from keysat.licensing.models import License, ValidationLog
from keysat.state import AppState

WINDOWS = (7, 30, 90)


@dataclass(frozen=True)
class Day:
    """One UTC day of every chart."""

    day: date
    revenue_sats: int = 0
    paid: int = 0
    free_or_trial: int = 0
    manual: int = 0
    validations_ok: int = 0
    validations_failed: int = 0


@dataclass(frozen=True)
class DailySeries:
    days: list[Day]
    ever_validated: bool


def window_start(today: date, days: int) -> date:
    """The first day of a window of `days` days ending with `today`."""
    return today - timedelta(days=days - 1)


def _day_text(column: Any, sqlite: bool) -> Any:
    """The UTC day of a timestamp column as `YYYY-MM-DD` text. SQLite stores the fixed-width
    UTC text of `sqlite_timestamp`, whose first ten characters are that day."""
    if sqlite:
        return sa.func.substr(column, 1, 10)
    return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM-DD")


def fill_days(
    start: date,
    days: int,
    revenue: Iterable[tuple[str, int]],
    licenses: Iterable[tuple[str, str, int]],
    validations: Iterable[tuple[str, bool, int]],
) -> list[Day]:
    """Every day of the window in order, zero where nothing happened, from grouped rows
    keyed by `YYYY-MM-DD` text."""
    counts: dict[str, dict[str, int]] = {}
    for day, amount in revenue:
        counts.setdefault(day, {})["revenue_sats"] = int(amount or 0)
    for day, source, count in licenses:
        slot = counts.setdefault(day, {})
        slot[source] = slot.get(source, 0) + int(count)
    for day, ok, count in validations:
        slot = counts.setdefault(day, {})
        name = "validations_ok" if ok else "validations_failed"
        slot[name] = slot.get(name, 0) + int(count)
    dates = [start + timedelta(days=offset) for offset in range(days)]
    return [Day(each, **counts.get(each.isoformat(), {})) for each in dates]


async def daily_series(state: AppState, days: int) -> DailySeries:
    """Revenue (settled non-zero invoices, by settlement day), licenses issued by source,
    and validations succeeded or failed, for the `days` UTC days ending today."""
    today = now().astimezone(UTC).date()
    start = window_start(today, days)
    since = datetime.combine(start, time(0), tzinfo=UTC)
    until = datetime.combine(today + timedelta(days=1), time(0), tzinfo=UTC)
    sqlite = state.db.is_sqlite

    revenue_day = _day_text(Invoice.settled_at, sqlite)
    revenue_query = (
        sa.select(revenue_day, sa.func.sum(Invoice.amount_sats))
        .where(
            Invoice.status == "settled",
            Invoice.amount_sats > 0,
            Invoice.settled_at >= since,
            Invoice.settled_at < until,
        )
        .group_by(revenue_day)
    )
    issued_day = _day_text(License.issued_at, sqlite)
    # No invoice: issued by an admin. A trial, or an invoice that cost nothing: free.
    source = sa.case(
        (License.invoice_id.is_(None), "manual"),
        (sa.or_(License.is_trial, Invoice.amount_sats == 0), "free_or_trial"),
        else_="paid",
    )
    license_query = (
        sa.select(issued_day, source, sa.func.count())
        .select_from(License)
        .outerjoin(Invoice, Invoice.id == License.invoice_id)
        .where(License.issued_at >= since, License.issued_at < until)
        .group_by(issued_day, source)
    )
    checked_day = _day_text(ValidationLog.occurred_at, sqlite)
    succeeded = ValidationLog.result == "ok"
    validation_query = (
        sa.select(checked_day, succeeded, sa.func.count())
        .where(ValidationLog.occurred_at >= since, ValidationLog.occurred_at < until)
        .group_by(checked_day, succeeded)
    )
    async with state.db.read() as session:
        revenue = [(row[0], row[1]) for row in await session.execute(revenue_query)]
        licenses = [(row[0], row[1], row[2]) for row in await session.execute(license_query)]
        validations = [
            (row[0], bool(row[1]), row[2]) for row in await session.execute(validation_query)
        ]
        ever = await session.scalar(
            sa.select(ValidationLog.id).where(ValidationLog.result == "ok").limit(1)
        )
    return DailySeries(
        fill_days(start, days, revenue, licenses, validations), ever_validated=ever is not None
    )
