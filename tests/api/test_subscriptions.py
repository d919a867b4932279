"""Recurring subscriptions through the sandbox provider (billing.md 4.4-4.5, 6, 12.4 F1-F7,
F9, F10): one license for life, invoiced by the renewal worker, extended when paid, valid in
grace and then expired, lapsed once, reactivated by a late payment; trials, free tiers and
discounts."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from keysat.clock import clock
from keysat.keys import parse_key
from keysat.licensing.models import License
from keysat.operator.models import MerchantProfile
from keysat.payments.models import SandboxInvoice
from subscription_support import (
    CENTS,
    DAY,
    GRACE,
    PERIOD,
    RATE,
    SATS,
    T0,
    Subscribed,
    at,
    cycles,
    data_of,
    license_row,
    monthly_shop,
    pin_usd,
    renewal_invoices,
    start_trial,
    subscribe,
    subscription_of,
    subscription_row,
    tick,
    ts,
    validate,
    windows,
)
from support import (
    assert_error,
    audit_rows,
    events,
    invoice_row,
    poll,
    purchase,
    sandbox_action,
    self_license_key,
)

GRACE_SECONDS = GRACE * 86_400


@pytest.fixture
async def shop(make_server: Any) -> Any:
    """Sandbox mode, manual rate pins only, the business clock frozen at 2026-01-01."""
    server = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_SOURCES="none")
    clock.freeze(T0)
    return server


async def license_count(server: Any) -> int:
    async with server.state.db.read() as session:
        query = sa.select(sa.func.count()).select_from(License)
        return int((await session.execute(query)).scalar_one())


async def default_profile_id(server: Any) -> str:
    async with server.state.db.read() as session:
        query = sa.select(MerchantProfile.id).where(MerchantProfile.is_default.is_(True))
        return str((await session.execute(query)).scalar_one())


async def pay(server: Any, invoice_id: str, moment: datetime) -> None:
    clock.freeze(moment)
    await sandbox_action(server, invoice_id, "pay")


def key_expiry(key: str) -> int:
    return parse_key(key).expires_at


async def renewed_at_jan_31(server: Any, sub: Subscribed) -> str:
    """F2: the first tick at the end of cycle 1; returns the renewal invoice id."""
    await tick(server, at(1, 31))
    [invoice] = await renewal_invoices(server, sub.subscription_id)
    return invoice.id


# --- F1: the first cycle ------------------------------------------------------------------


@pytest.mark.parametrize("usd", [True, False])
async def test_f1_paid_purchase_starts_cycle_one(shop: Any, usd: bool) -> None:
    # The policy's grace_seconds is not used for a recurring license (billing.md 4.4).
    policy = await monthly_shop(shop, usd=usd, grace_seconds=3_600)
    bought = await purchase(shop, "acme", policy_slug="monthly", buyer_email="ada@example.com")
    assert bought["amount_sats"] == bought["base_price_sats"] == SATS
    purchase_row = await invoice_row(shop, bought["invoice_id"])
    if usd:
        assert (purchase_row.listed_currency, purchase_row.listed_value) == ("USD", CENTS)
        assert purchase_row.exchange_rate_centibps == RATE
    await sandbox_action(shop, bought["invoice_id"], "pay")

    polled = await poll(shop, bought["invoice_id"])
    row = await license_row(shop, polled["license_id"])
    assert row.expires_at == at(1, 31) and row.issued_at == T0
    assert row.grace_seconds == GRACE_SECONDS == 604_800
    assert row.is_trial is False and row.trial_started_at is None
    assert key_expiry(polled["license_key"]) == int(at(1, 31).timestamp())

    sub = await subscription_of(shop, row.id)
    assert (sub.status, sub.license_id, sub.policy_id) == ("active", row.id, policy["id"])
    assert sub.product_id == row.product_id and sub.period_days == PERIOD
    assert (sub.listed_currency, sub.listed_value) == (("USD", CENTS) if usd else ("SAT", SATS))
    assert sub.started_at == sub.current_period_start == T0
    assert sub.current_period_end == sub.next_attempt_at == at(1, 31)
    assert sub.open_invoice_id is None and sub.consecutive_failures == 0
    assert sub.cancelled_at is None and sub.lapsed_at is None
    assert (sub.provider_kind, sub.payment_provider_id) == ("sandbox", None)
    assert sub.merchant_profile_id == await default_profile_id(shop)

    [cycle] = await cycles(shop, sub.id)
    assert (cycle.cycle_number, cycle.invoice_id) == (1, bought["invoice_id"])
    assert (cycle.cycle_start_at, cycle.cycle_end_at, cycle.paid_at) == (T0, at(1, 31), T0)
    [issued] = data_of(await events(shop, "license.issued"))
    assert issued["expires_at"] == ts(at(1, 31)) and issued["is_trial"] is False
    assert await events(shop, "subscription.renewal_pending") == []


# --- F2: the worker invoices cycle 2 ------------------------------------------------------


@pytest.mark.parametrize("usd", [True, False])
@pytest.mark.parametrize("first_tick", [at(1, 31), at(2, 1, 12)])
async def test_f2_first_tick_at_or_after_the_cycle_end_invoices_cycle_two(
    shop: Any, usd: bool, first_tick: datetime
) -> None:
    await monthly_shop(shop, usd=usd)
    sub = await subscribe(shop)
    await tick(shop, at(1, 30, 23, 59, 59))
    assert await renewal_invoices(shop) == []

    await tick(shop, first_tick)
    [invoice] = await renewal_invoices(shop)
    assert (invoice.kind, invoice.status) == ("renewal", "pending")
    assert invoice.amount_sats == invoice.base_price_sats == SATS
    assert invoice.discount_applied_sats == 0
    if usd:
        assert (invoice.listed_currency, invoice.listed_value) == ("USD", CENTS)
        assert (invoice.exchange_rate_centibps, invoice.exchange_rate_source) == (
            RATE,
            "manual_pin",
        )
    else:
        assert invoice.listed_currency is None and invoice.listed_value is None
        assert invoice.exchange_rate_centibps is None and invoice.exchange_rate_source is None
    assert (invoice.subscription_id, invoice.cycle_number) == (sub.subscription_id, 2)
    assert invoice.subject_license_id == sub.license_id
    assert invoice.buyer_email == "ada@example.com"
    assert invoice.buyer_note == f"Renewal cycle for subscription {sub.subscription_id}"
    assert (invoice.provider_kind, invoice.payment_provider_id) == ("sandbox", None)
    assert invoice.expires_at == at(2, 7)
    assert invoice.created_at == first_tick and invoice.settled_at is None

    async with shop.state.db.read() as session:
        sandbox_row = await session.get(SandboxInvoice, invoice.provider_invoice_id)
    assert sandbox_row is not None
    assert (sandbox_row.amount_value, sandbox_row.amount_currency) == (SATS, "SAT")
    assert sandbox_row.expires_at == at(2, 7)
    assert sandbox_row.external_order_id == invoice.id
    assert sandbox_row.redirect_url == f"http://keysat.test/thank-you?invoice_id={invoice.id}"
    assert sandbox_row.invoice_metadata == {
        "productId": invoice.product_id,
        "subscriptionId": sub.subscription_id,
        "cycleStartAt": ts(at(1, 31)),
    }

    assert windows(await cycles(shop, sub.subscription_id)) == [
        (1, T0, at(1, 31)),
        (2, at(1, 31), at(3, 2)),
    ]
    [_, cycle_two] = await cycles(shop, sub.subscription_id)
    assert cycle_two.invoice_id == invoice.id and cycle_two.paid_at is None

    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.open_invoice_id, row.next_attempt_at) == ("past_due", invoice.id, None)
    assert row.last_renewal_attempt_at == first_tick and row.consecutive_failures == 0
    assert row.current_period_end == at(1, 31)
    assert (await license_row(shop, sub.license_id)).expires_at == at(1, 31)

    [pending] = await events(shop, "subscription.renewal_pending")
    assert pending["timestamp"] == ts(first_tick)
    assert pending["data"] == {
        "subscription_id": sub.subscription_id,
        "license_id": sub.license_id,
        "product_id": invoice.product_id,
        "policy_id": invoice.policy_id,
        "invoice_id": invoice.id,
        "checkout_url": invoice.checkout_url,
        "amount_sats": SATS,
        "listed_currency": "USD" if usd else "SAT",
        "listed_value": CENTS if usd else SATS,
        "cycle_number": 2,
        "cycle_start_at": ts(at(1, 31)),
        "cycle_end_at": ts(at(3, 2)),
        "due_at": ts(at(2, 7)),
        "buyer_email": "ada@example.com",
        "is_first_paid_cycle": False,
    }

    # Unpaid, the renewal invoice's poll shows no key yet (public-api.md 1.11, 6.2).
    assert await poll(shop, invoice.id) == {
        "invoice_id": invoice.id,
        "status": "pending",
        "product_id": invoice.product_id,
        "amount_sats": SATS,
        "license_key": None,
        "license_id": None,
    }

    # An open invoice is never invoiced again.
    await tick(shop, at(2, 3))
    assert len(await renewal_invoices(shop)) == 1
    assert len(await events(shop, "subscription.renewal_pending")) == 1


async def test_fiat_renewals_are_quoted_again_each_cycle(shop: Any) -> None:
    await monthly_shop(shop)
    sub = await subscribe(shop)
    invoice_id = await renewed_at_jan_31(shop, sub)
    await pay(shop, invoice_id, at(2, 1))
    await pin_usd(shop, "62500")
    await tick(shop, at(3, 2))
    [_, third] = await renewal_invoices(shop, sub.subscription_id)
    assert third.cycle_number == 3
    assert (third.amount_sats, third.exchange_rate_centibps) == (40_000, 625_000_000)
    assert (third.listed_currency, third.listed_value) == ("USD", CENTS)


# --- F3: paid on time ---------------------------------------------------------------------


async def test_f3_paid_renewal_extends_the_same_license(shop: Any) -> None:
    await monthly_shop(shop)
    sub = await subscribe(shop)
    invoice_id = await renewed_at_jan_31(shop, sub)
    await pay(shop, invoice_id, at(2, 3))

    assert (await invoice_row(shop, invoice_id)).settled_at == at(2, 3)
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.open_invoice_id, row.consecutive_failures) == ("active", None, 0)
    assert (row.current_period_start, row.current_period_end) == (at(1, 31), at(3, 2))
    assert row.next_attempt_at == at(3, 2) and row.last_renewal_attempt_at == at(2, 3)
    [_, cycle_two] = await cycles(shop, sub.subscription_id)
    assert (cycle_two.cycle_start_at, cycle_two.cycle_end_at) == (at(1, 31), at(3, 2))
    assert cycle_two.paid_at == at(2, 3)

    extended = await license_row(shop, sub.license_id)
    assert extended.expires_at == at(3, 2) and extended.grace_seconds == GRACE_SECONDS
    assert extended.status == "active" and extended.invoice_id == sub.invoice_id
    assert await license_count(shop) == 1
    assert len(await events(shop, "license.issued")) == 1

    [renewed] = data_of(await events(shop, "subscription.renewed"))
    assert renewed == {
        "subscription_id": sub.subscription_id,
        "invoice_id": invoice_id,
        "amount_sats": SATS,
        "license_id": sub.license_id,
        "cycle_number": 2,
        "expires_at": ts(at(3, 2)),
        "reactivated": False,
    }

    # The renewal invoice's poll answers the extended key of the same license.
    polled = await poll(shop, invoice_id)
    assert polled["status"] == "settled" and polled["license_id"] == sub.license_id
    assert key_expiry(polled["license_key"]) == int(at(3, 2).timestamp())
    assert str(parse_key(polled["license_key"]).license_id) == sub.license_id
    # Validate with the old key: ok, and the refreshed key rides along.
    answer = await validate(shop, sub.license_key)
    assert answer["ok"] is True and answer["license_id"] == sub.license_id
    assert answer["expires_at"] == ts(at(3, 2)) and "in_grace_period" not in answer
    assert answer["license_key"] == polled["license_key"]
    assert "license_key" not in await validate(shop, polled["license_key"])

    # Cycle 3 follows on schedule, and it is not the first paid cycle.
    await tick(shop, at(3, 2))
    [_, third] = data_of(await events(shop, "subscription.renewal_pending"))
    assert (third["cycle_number"], third["cycle_start_at"]) == (3, ts(at(3, 2)))
    assert (third["cycle_end_at"], third["due_at"]) == (ts(at(4, 1)), ts(at(3, 9)))
    assert third["is_first_paid_cycle"] is False


async def test_paying_a_renewal_twice_extends_once(shop: Any) -> None:
    await monthly_shop(shop)
    sub = await subscribe(shop)
    invoice_id = await renewed_at_jan_31(shop, sub)
    await pay(shop, invoice_id, at(2, 3))
    await pay(shop, invoice_id, at(2, 4))
    assert (await license_row(shop, sub.license_id)).expires_at == at(3, 2)
    assert len(await events(shop, "subscription.renewed")) == 1
    assert len(await cycles(shop, sub.subscription_id)) == 2


# --- F4: never paid ------------------------------------------------------------------------


async def test_f4_unpaid_renewal_is_in_grace_then_expired_and_lapses_once(shop: Any) -> None:
    await monthly_shop(shop)
    sub = await subscribe(shop)
    await renewed_at_jan_31(shop, sub)

    clock.freeze(at(2, 6, 23, 59, 59))
    answer = await validate(shop, sub.license_key)
    assert answer["ok"] is True and answer["in_grace_period"] is True
    assert answer["grace_until"] == ts(at(2, 7)) and answer["expires_at"] == ts(at(1, 31))
    await tick(shop, at(2, 6, 23, 59, 59))
    assert (await subscription_row(shop, sub.subscription_id)).status == "past_due"
    assert await events(shop, "subscription.lapsed") == []

    clock.freeze(at(2, 7))
    answer = await validate(shop, sub.license_key)
    assert answer == {
        "ok": False,
        "reason": "expired",
        "license_id": sub.license_id,
        "product_id": answer["product_id"],
        "expires_at": ts(at(1, 31)),
    }
    await tick(shop, at(2, 7))
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.lapsed_at, row.next_attempt_at) == ("lapsed", at(2, 7), None)
    [lapsed] = await events(shop, "subscription.lapsed")
    assert lapsed["timestamp"] == ts(at(2, 7))
    assert lapsed["data"] == {
        "subscription_id": sub.subscription_id,
        "license_id": sub.license_id,
        "product_id": row.product_id,
        "policy_id": row.policy_id,
    }

    # Lapsed is final for the worker: no second event, no further invoice.
    for moment in (at(2, 8), at(3, 2), at(4, 1), at(6, 1)):
        await tick(shop, moment)
    assert len(await events(shop, "subscription.lapsed")) == 1
    assert len(await renewal_invoices(shop)) == 1
    assert (await subscription_row(shop, sub.subscription_id)).status == "lapsed"
    assert (await license_row(shop, sub.license_id)).status == "active"


# --- F5: paid after the lapse --------------------------------------------------------------


@pytest.mark.parametrize("expired_first", [False, True])
async def test_f5_late_payment_reactivates_and_rewrites_cycle_two(
    shop: Any, expired_first: bool
) -> None:
    await monthly_shop(shop)
    sub = await subscribe(shop)
    invoice_id = await renewed_at_jan_31(shop, sub)
    if expired_first:
        # Expired within the last hour of grace: not replaced; a late payment still wins.
        clock.freeze(at(2, 6, 23, 30))
        await sandbox_action(shop, invoice_id, "expire")
        assert (await invoice_row(shop, invoice_id)).status == "expired"
    await tick(shop, at(2, 7))
    assert (await subscription_row(shop, sub.subscription_id)).status == "lapsed"

    paid_at = at(2, 10, 12)
    await pay(shop, invoice_id, paid_at)
    row = await subscription_row(shop, sub.subscription_id)
    assert (row.status, row.lapsed_at, row.open_invoice_id) == ("active", None, None)
    assert (row.current_period_start, row.current_period_end) == (paid_at, at(3, 12, 12))
    assert row.next_attempt_at == at(3, 12, 12)
    assert windows(await cycles(shop, sub.subscription_id)) == [
        (1, T0, at(1, 31)),
        (2, paid_at, at(3, 12, 12)),
    ]
    assert (await cycles(shop, sub.subscription_id))[1].paid_at == paid_at
    assert (await license_row(shop, sub.license_id)).expires_at == at(3, 12, 12)
    [renewed] = data_of(await events(shop, "subscription.renewed"))
    assert renewed["reactivated"] is True and renewed["expires_at"] == ts(at(3, 12, 12))
    assert renewed["cycle_number"] == 2

    answer = await validate(shop, sub.license_key)
    assert answer["ok"] is True and "in_grace_period" not in answer
    assert key_expiry(answer["license_key"]) == int(at(3, 12, 12).timestamp())

    await tick(shop, at(3, 12, 12))
    [_, third] = await renewal_invoices(shop, sub.subscription_id)
    assert third.cycle_number == 3 and third.expires_at == at(3, 19, 12)
    assert windows(await cycles(shop, sub.subscription_id))[2] == (
        3,
        at(3, 12, 12),
        at(4, 11, 12),
    )


# --- F6, F7: a trial, then the first paid cycle -------------------------------------------


async def test_f6_f7_trial_then_first_paid_cycle(shop: Any) -> None:
    await monthly_shop(shop, trial_days=14)
    trial = await start_trial(shop)
    free = await invoice_row(shop, trial.invoice_id)
    assert (free.status, free.amount_sats, free.provider_kind) == ("settled", 0, "none")
    row = await license_row(shop, trial.license_id)
    assert row.is_trial is True and row.trial_started_at == T0
    assert row.expires_at == at(1, 15) and row.grace_seconds == GRACE_SECONDS
    assert parse_key(trial.license_key).is_trial is True

    sub = await subscription_row(shop, trial.subscription_id)
    assert (sub.listed_currency, sub.listed_value, sub.period_days) == ("USD", CENTS, PERIOD)
    assert (sub.current_period_end, sub.next_attempt_at) == (at(1, 15), at(1, 15))
    assert (sub.provider_kind, sub.payment_provider_id) == (None, None)
    assert windows(await cycles(shop, sub.id)) == [(1, T0, at(1, 15))]

    answer = await validate(shop, trial.license_key)
    assert answer["ok"] is True and answer["is_trial"] is True

    await tick(shop, at(1, 15))
    [invoice] = await renewal_invoices(shop)
    assert (invoice.amount_sats, invoice.cycle_number, invoice.expires_at) == (SATS, 2, at(1, 22))
    assert invoice.exchange_rate_centibps == RATE and invoice.provider_kind == "sandbox"
    [pending] = data_of(await events(shop, "subscription.renewal_pending"))
    assert pending["is_first_paid_cycle"] is True
    assert (pending["cycle_start_at"], pending["cycle_end_at"]) == (ts(at(1, 15)), ts(at(2, 14)))
    assert pending["due_at"] == ts(at(1, 22))
    # The provider is resolved at the first renewal and remembered (billing.md 6.4 step 4).
    assert (await subscription_row(shop, sub.id)).provider_kind == "sandbox"

    # F7
    await pay(shop, invoice.id, at(1, 20))
    row = await license_row(shop, trial.license_id)
    assert row.expires_at == at(2, 14) and row.is_trial is False
    assert row.trial_started_at == T0
    answer = await validate(shop, trial.license_key)
    assert answer["ok"] is True and "is_trial" not in answer
    refreshed = parse_key(answer["license_key"])
    assert refreshed.is_trial is False
    assert refreshed.expires_at == int(at(2, 14).timestamp())

    await tick(shop, at(2, 14))
    [_, second] = data_of(await events(shop, "subscription.renewal_pending"))
    assert second["cycle_number"] == 3 and second["is_first_paid_cycle"] is False


# --- F9: a free recurring tier --------------------------------------------------------------


async def test_f9_free_recurring_tier_renews_at_once_without_a_provider(make_server: Any) -> None:
    """Outside sandbox mode with no payment provider at all: free renewals need none."""
    server = await make_server(KEYSAT_LICENSE=self_license_key("recurring_billing"))
    clock.freeze(T0)
    await monthly_shop(server, usd=False, price_sats_override=0)
    bought = await purchase(server, "acme", policy_slug="monthly", buyer_email="ada@example.com")
    assert bought["amount_sats"] == 0 and bought["license_key"]
    license_id = bought["license_id"]
    row = await license_row(server, license_id)
    assert row.is_trial is False and row.expires_at == at(1, 31)
    sub = await subscription_of(server, license_id)
    assert (sub.listed_currency, sub.listed_value) == ("SAT", 0)

    await tick(server, at(1, 31))
    [first] = await renewal_invoices(server)
    assert (first.kind, first.status, first.amount_sats) == ("renewal", "settled", 0)
    assert (first.provider_kind, first.provider_invoice_id) == ("none", f"free-{first.id}")
    assert first.checkout_url == "" and first.settled_at == at(1, 31)
    assert (first.subscription_id, first.cycle_number) == (sub.id, 2)
    assert (await license_row(server, license_id)).expires_at == at(3, 2)
    refreshed = await subscription_row(server, sub.id)
    assert (refreshed.status, refreshed.open_invoice_id) == ("active", None)
    assert refreshed.next_attempt_at == at(3, 2)

    await tick(server, at(3, 2))
    assert (await license_row(server, license_id)).expires_at == at(4, 1)
    assert windows(await cycles(server, sub.id)) == [
        (1, T0, at(1, 31)),
        (2, at(1, 31), at(3, 2)),
        (3, at(3, 2), at(4, 1)),
    ]
    assert [c.paid_at for c in await cycles(server, sub.id)] == [T0, at(1, 31), at(3, 2)]
    renewed = data_of(await events(server, "subscription.renewed"))
    assert [(r["amount_sats"], r["cycle_number"], r["reactivated"]) for r in renewed] == [
        (0, 2, False),
        (0, 3, False),
    ]
    assert await events(server, "subscription.renewal_pending") == []
    assert await license_count(server) == 1


# --- F10: one trial per e-mail ---------------------------------------------------------------


async def test_f10_second_trial_with_the_same_email_is_409(shop: Any) -> None:
    await monthly_shop(shop, trial_days=14)
    await start_trial(shop, "ada@example.com")
    response = await shop.client.post(
        "/v1/purchase",
        json={"product": "acme", "policy_slug": "monthly", "buyer_email": "ada@example.com"},
    )
    assert_error(
        response,
        409,
        "conflict",
        "conflict: a trial of this product has already been used with this e-mail address",
    )
    await start_trial(shop, "bob@example.com")
    assert await license_count(shop) == 2


async def test_f10_repeat_trials_when_the_policy_allows_them(shop: Any) -> None:
    await monthly_shop(shop, trial_days=14, allow_repeat_trials=True)
    first = await start_trial(shop, "ada@example.com")
    second = await start_trial(shop, "ada@example.com")
    assert first.license_id != second.license_id
    assert first.subscription_id != second.subscription_id


# --- the license keeps its id for life ------------------------------------------------------


async def test_a_year_of_renewals_keeps_one_license_and_one_subscription(shop: Any) -> None:
    await monthly_shop(shop)
    sub = await subscribe(shop)
    moment = at(1, 31)
    keys = {sub.license_key}
    for number in range(2, 14):
        await tick(shop, moment)
        [*_, invoice] = await renewal_invoices(shop, sub.subscription_id)
        assert invoice.cycle_number == number
        await pay(shop, invoice.id, moment + DAY)
        polled = await poll(shop, invoice.id)
        assert polled["license_id"] == sub.license_id
        keys.add(polled["license_key"])
        moment += timedelta(days=PERIOD)
    assert (await license_row(shop, sub.license_id)).expires_at == moment
    assert len(keys) == 13 and await license_count(shop) == 1
    assert len(await events(shop, "subscription.renewed")) == 12
    assert [c.cycle_number for c in await cycles(shop, sub.subscription_id)] == list(range(1, 14))


# --- discounts apply to the first paid cycle only ----------------------------------------------


async def create_code(server: Any, code: str, percent_bps: int) -> None:
    body = {"code": code, "kind": "percent", "amount": percent_bps}
    response = await server.admin_post("/v1/admin/discount-codes", body)
    assert response.status_code == 200, response.text


async def test_a_discount_applies_to_the_first_cycle_only(shop: Any) -> None:
    await monthly_shop(shop)
    await create_code(shop, "HALF", 5_000)
    bought = await purchase(shop, "acme", policy_slug="monthly", code="half")
    assert (bought["amount_sats"], bought["discount_applied_sats"]) == (25_000, 25_000)
    await sandbox_action(shop, bought["invoice_id"], "pay")
    sub = await subscription_of(shop, (await poll(shop, bought["invoice_id"]))["license_id"])
    assert (sub.listed_currency, sub.listed_value) == ("USD", CENTS)
    await tick(shop, at(1, 31))
    [invoice] = await renewal_invoices(shop)
    assert invoice.amount_sats == SATS and invoice.discount_applied_sats == 0
    [pending] = data_of(await events(shop, "subscription.renewal_pending"))
    assert pending["is_first_paid_cycle"] is False


async def test_a_discount_to_zero_gives_a_full_free_cycle_that_is_no_trial(shop: Any) -> None:
    await monthly_shop(shop, trial_days=0)
    await create_code(shop, "FREE", 10_000)
    bought = await purchase(shop, "acme", policy_slug="monthly", code="FREE")
    assert bought["amount_sats"] == 0 and bought["license_key"]
    row = await license_row(shop, bought["license_id"])
    assert row.is_trial is False and row.expires_at == at(1, 31)
    sub = await subscription_of(shop, bought["license_id"])
    assert (sub.listed_value, sub.provider_kind) == (CENTS, None)
    await tick(shop, at(1, 31))
    [pending] = data_of(await events(shop, "subscription.renewal_pending"))
    assert pending["amount_sats"] == SATS and pending["is_first_paid_cycle"] is True


# --- the admin run endpoint ticks at the business time ------------------------------------------


async def test_jobs_run_endpoint_runs_one_renewals_tick(shop: Any) -> None:
    await monthly_shop(shop)
    sub = await subscribe(shop)
    clock.freeze(at(1, 30))
    response = await shop.admin_post("/v1/admin/jobs/renewals/run")
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "renewals"
    assert response.json()["last_status"] == "ok"
    assert await renewal_invoices(shop) == []
    clock.freeze(at(1, 31))
    assert (await shop.admin_post("/v1/admin/jobs/renewals/run")).status_code == 200
    [invoice] = await renewal_invoices(shop)
    assert invoice.created_at == at(1, 31) and invoice.cycle_number == 2
    assert (await subscription_row(shop, sub.subscription_id)).status == "past_due"
    assert len(await audit_rows(shop, "job.run")) == 2


async def test_paid_renewal_takes_the_policys_current_grace(shop: Any) -> None:
    """billing.md 4.5 step 3: grace_seconds is recomputed from the current policy."""
    policy = await monthly_shop(shop)
    sub = await subscribe(shop)
    invoice_id = await renewed_at_jan_31(shop, sub)
    response = await shop.admin_patch(
        f"/v1/admin/policies/{policy['id']}", {"grace_period_days": 10}
    )
    assert response.status_code == 200, response.text
    await pay(shop, invoice_id, at(2, 1))
    assert (await license_row(shop, sub.license_id)).grace_seconds == 10 * 86_400
    clock.freeze(at(3, 11, 23))
    answer = await validate(shop, sub.license_key)
    assert answer["ok"] is True and answer["grace_until"] == ts(at(3, 12))
