"""The dashboard's daily series (web.md 11.5.1), the admin UI's one direct database read,
on both databases: revenue by settlement day, licenses by source, validations by result,
each counted on its UTC day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from keysat.clock import clock
from keysat.licensing.models import ValidationLog
from keysat.operator.daily import daily_series
from support import create_policy, create_product, issue_license, purchase, sandbox_action

# Ten minutes before midnight, so the next writes fall on the next UTC day.
T = datetime(2031, 5, 6, 23, 50, 0, 250000, tzinfo=UTC)


async def _validation(server: Any, at: datetime, result: str) -> None:
    async with server.state.db.write() as session:
        session.add(ValidationLog(result=result, occurred_at=at))


async def test_each_series_counts_its_rows_on_their_utc_day(sandbox: Any) -> None:
    await create_product(sandbox, "acme", price_sats=5000)
    await create_policy(sandbox, "acme", "pro")
    await create_policy(sandbox, "acme", "trial", is_trial=True, price_sats_override=0)
    clock.freeze(T)
    bought = await purchase(sandbox, "acme", policy_slug="pro")
    await sandbox_action(sandbox, bought["invoice_id"], "pay")
    await issue_license(sandbox, "acme")
    await _validation(sandbox, T, "ok")
    await _validation(sandbox, T - timedelta(days=8), "ok")

    clock.freeze(T + timedelta(minutes=20))
    free = await purchase(sandbox, "acme", policy_slug="trial", buyer_email="ada@example.com")
    assert free.get("license_key")
    await _validation(sandbox, T + timedelta(minutes=20), "ok")
    await _validation(sandbox, T + timedelta(minutes=21), "revoked")

    series = await daily_series(sandbox.state, 7)
    assert len(series.days) == 7
    assert series.ever_validated is True
    *earlier, before, today = series.days
    assert today.day.isoformat() == "2031-05-07"
    assert (before.revenue_sats, before.paid, before.manual, before.free_or_trial) == (
        5000,
        1,
        1,
        0,
    )
    assert (before.validations_ok, before.validations_failed) == (1, 0)
    assert (today.revenue_sats, today.paid, today.free_or_trial, today.manual) == (0, 0, 1, 0)
    assert (today.validations_ok, today.validations_failed) == (1, 1)
    # The validation eight days back is outside the seven-day window.
    assert all(day.validations_ok == 0 and day.revenue_sats == 0 for day in earlier)
