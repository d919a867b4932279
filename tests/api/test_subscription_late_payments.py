"""Late and replaced renewal payments (billing.md 4.5, 4.7, 6.4 step 6, 6.8): paid around
the grace deadline, an expired renewal invoice replaced for the same cycle inside the grace
period, and late payments of replaced invoices appended after the paid-through time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from keysat.clock import clock
from subscription_support import (
    SATS,
    T0,
    Subscribed,
    at,
    cycles,
    data_of,
    license_row,
    monthly_shop,
    renewal_invoices,
    subscribe,
    subscription_row,
    tick,
    ts,
    windows,
)
from support import events, invoice_row, sandbox_action


@pytest.fixture
async def shop(make_server: Any) -> Any:
    server = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_SOURCES="none")
    clock.freeze(T0)
    await monthly_shop(server)
    return server


async def pay(server: Any, invoice_id: str, moment: datetime) -> None:
    clock.freeze(moment)
    await sandbox_action(server, invoice_id, "pay")


async def renewed_at_jan_31(server: Any, sub: Subscribed) -> str:
    await tick(server, at(1, 31))
    [invoice] = await renewal_invoices(server, sub.subscription_id)
    return invoice.id


# --- paid around the grace deadline -----------------------------------------------------------


async def test_paid_after_the_deadline_before_the_sweep_restarts_at_payment(shop: Any) -> None:
    """billing.md 4.5: the deadline has passed (not yet swept to lapsed): the cycle
    restarts at the moment of payment, and it is no reactivation."""
    sub = await subscribe(shop)
    invoice_id = await renewed_at_jan_31(shop, sub)
    await pay(shop, invoice_id, at(2, 8))
    assert windows(await cycles(shop, sub.subscription_id))[1] == (2, at(2, 8), at(3, 10))
    assert (await license_row(shop, sub.license_id)).expires_at == at(3, 10)
    [renewed] = data_of(await events(shop, "subscription.renewed"))
    assert renewed["reactivated"] is False


async def test_paid_just_before_the_deadline_keeps_the_schedule(shop: Any) -> None:
    sub = await subscribe(shop)
    invoice_id = await renewed_at_jan_31(shop, sub)
    await pay(shop, invoice_id, at(2, 6, 23, 59, 59))
    assert windows(await cycles(shop, sub.subscription_id))[1] == (2, at(1, 31), at(3, 2))
    assert (await license_row(shop, sub.license_id)).expires_at == at(3, 2)


# --- 4.7: an expired renewal invoice is replaced inside the grace period ---------------------


@pytest.mark.parametrize("action", ["expire", "invalidate"])
async def test_expired_renewal_is_replaced_for_the_same_cycle_after_an_hour(
    shop: Any, action: str
) -> None:
    sub = await subscribe(shop)
    first_id = await renewed_at_jan_31(shop, sub)
    clock.freeze(at(2, 2))
    await sandbox_action(shop, first_id, action)
    assert (await invoice_row(shop, first_id)).status == (
        "expired" if action == "expire" else "invalid"
    )
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.open_invoice_id) == ("past_due", None)
    assert row.next_attempt_at == at(2, 2, 1)
    assert len(await events(shop, "subscription.renewal_pending")) == 1

    await tick(shop, at(2, 2, 0, 59, 59))
    assert len(await renewal_invoices(shop)) == 1
    await tick(shop, at(2, 2, 1))
    [first, second] = await renewal_invoices(shop, sub.subscription_id)
    assert first.id == first_id
    assert (second.cycle_number, second.status, second.expires_at) == (2, "pending", at(2, 7))
    assert second.amount_sats == SATS
    [cycle_one, cycle_two] = await cycles(shop, sub.subscription_id)
    assert cycle_one.cycle_number == 1
    assert (cycle_two.cycle_number, cycle_two.invoice_id) == (2, second.id)
    assert (cycle_two.cycle_start_at, cycle_two.cycle_end_at) == (at(1, 31), at(3, 2))
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.open_invoice_id, row.next_attempt_at) == ("past_due", second.id, None)
    [_, pending] = data_of(await events(shop, "subscription.renewal_pending"))
    assert (pending["invoice_id"], pending["cycle_number"]) == (second.id, 2)
    assert (pending["cycle_start_at"], pending["due_at"]) == (ts(at(1, 31)), ts(at(2, 7)))

    await pay(shop, second.id, at(2, 3))
    assert (await license_row(shop, sub.license_id)).expires_at == at(3, 2)
    [renewed] = data_of(await events(shop, "subscription.renewed"))
    assert (renewed["invoice_id"], renewed["cycle_number"]) == (second.id, 2)


async def test_no_replacement_within_an_hour_of_the_deadline(shop: Any) -> None:
    sub = await subscribe(shop)
    first_id = await renewed_at_jan_31(shop, sub)
    clock.freeze(at(2, 6, 23))
    await sandbox_action(shop, first_id, "expire")
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.open_invoice_id, row.next_attempt_at) == ("past_due", first_id, None)
    await tick(shop, at(2, 7))
    assert len(await renewal_invoices(shop)) == 1
    assert (await subscription_row(shop, sub.subscription_id)).status == "lapsed"
    assert len(await events(shop, "subscription.lapsed")) == 1


async def test_replaced_invoice_paid_late_appends_a_cycle(shop: Any) -> None:
    """billing.md 4.5: a late payment of an invoice that was replaced appends its paid time
    after the paid-through date, as a new cycle row."""
    sub = await subscribe(shop)
    first_id = await renewed_at_jan_31(shop, sub)
    clock.freeze(at(2, 2))
    await sandbox_action(shop, first_id, "expire")
    await tick(shop, at(2, 2, 1))
    [_, second] = await renewal_invoices(shop, sub.subscription_id)
    await pay(shop, second.id, at(2, 3))
    await pay(shop, first_id, at(2, 4))
    assert windows(await cycles(shop, sub.subscription_id)) == [
        (1, T0, at(1, 31)),
        (2, at(1, 31), at(3, 2)),
        (3, at(3, 2), at(4, 1)),
    ]
    assert (await cycles(shop, sub.subscription_id))[2].invoice_id == first_id
    assert (await license_row(shop, sub.license_id)).expires_at == at(4, 1)
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.current_period_end, row.next_attempt_at) == (at(4, 1), at(4, 1))
    renewed = data_of(await events(shop, "subscription.renewed"))
    assert [(r["invoice_id"], r["cycle_number"]) for r in renewed] == [
        (second.id, 2),
        (first_id, 3),
    ]


async def test_both_invoices_of_a_replaced_cycle_paid_never_move_the_expiry_back(
    shop: Any,
) -> None:
    """The replaced invoice is paid first (appended from the moment of payment), then the
    replacement: billing.md 6.8 says `expires_at` is never moved back."""
    sub = await subscribe(shop)
    first_id = await renewed_at_jan_31(shop, sub)
    clock.freeze(at(2, 2))
    await sandbox_action(shop, first_id, "expire")
    await tick(shop, at(2, 2, 1))
    [_, second] = await renewal_invoices(shop, sub.subscription_id)
    await pay(shop, first_id, at(2, 3))
    after_first = (await license_row(shop, sub.license_id)).expires_at
    assert after_first == at(3, 5)
    await pay(shop, second.id, at(2, 4))
    # The replacement belongs to cycle 2, an older cycle by now: appended after Mar 5.
    assert (await license_row(shop, sub.license_id)).expires_at == at(4, 4)
    sub_row = await subscription_row(shop, sub.subscription_id)
    assert (sub_row.current_period_end, sub_row.next_attempt_at) == (at(4, 4), at(4, 4))
    assert windows(await cycles(shop, sub.subscription_id)) == [
        (1, T0, at(1, 31)),
        (2, at(3, 5), at(4, 4)),
        (3, at(2, 3), at(3, 5)),
    ]
    renewed = data_of(await events(shop, "subscription.renewed"))
    assert [(r["invoice_id"], r["expires_at"]) for r in renewed] == [
        (first_id, ts(at(3, 5))),
        (second.id, ts(at(4, 4))),
    ]
