"""Tier upgrades and downgrades end to end (billing.md 4.6, 7, 12.3; public-api.md 12;
admin-api.md 5.9; webhooks.md 3): buyer quotes and upgrades, admin change-tier, scheduled
downgrades applied by the renewal worker, and the provider a tier-change invoice goes to."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from fakes.btcpay import FakeBTCPay
from keysat.billing.models import Invoice
from keysat.clock import clock
from keysat.keys import encode_key, generate_private_key, parse_key
from keysat.licensing.models import License
from keysat.operator.models import MerchantProfile
from keysat.payments.models import PaymentProvider, SandboxInvoice
from keysat.subscriptions.models import Subscription, SubscriptionCycle, TierChange
from keysat.wire import format_ts, new_id
from support import (
    ADMIN,
    assert_error,
    audit_rows,
    connect_btcpay_row,
    create_policy,
    create_product,
    events,
    fields_of,
    invoice_row,
    issue_license,
    licenses_for_invoice,
    poll,
    purchase,
    sandbox_action,
    self_license_key,
    signing_key,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
EMAIL = "ada@example.com"

NO_CHARGE_BUYER = (
    "bad request: this upgrade has no charge owed; admin must apply it as a comp via "
    "POST /v1/admin/licenses/:id/change-tier"
)
NO_CHARGE_ADMIN = (
    "bad request: this change has no charge owed; use skip_payment=true to apply as a comp"
)
QUOTE_KEYS = {
    "from_policy_id",
    "from_policy_slug",
    "to_policy_id",
    "to_policy_slug",
    "direction",
    "listed_currency",
    "proration_charge_value",
    "effective_at",
    "next_renewal_charge",
    "next_renewal_period_days",
}
UPGRADE_KEYS = {
    "invoice_id",
    "provider_invoice_id",
    "checkout_url",
    "amount_sats",
    "proration_charge_value",
    "listed_currency",
    "tier_change_id",
    "from_policy_slug",
    "to_policy_slug",
}
PAID_CHANGE_KEYS = {
    "ok",
    "applied",
    "license_id",
    "tier_change_id",
    "invoice_id",
    "provider_invoice_id",
    "checkout_url",
    "amount_sats",
    "proration_charge_value",
    "listed_currency",
    "from_policy_slug",
    "to_policy_slug",
    "skip_payment",
}
EVENT_KEYS = {
    "license_id",
    "product_id",
    "from_policy_id",
    "to_policy_id",
    "to_policy_slug",
    "direction",
    "actor",
    "invoice_id",
    "tier_change_id",
    "applied_via",
}

# The ladder of billing.md 12.3, prices in USD cents (SAT products use ten times as many sats).
TIERS: dict[str, dict[str, Any]] = {
    "standard": {"tier_rank": 1, "entitlements": ["standard"], "max_machines": 1},
    "pro": {
        "tier_rank": 2,
        "price_sats_override": 7_500,
        "entitlements": ["standard", "pro"],
        "max_machines": 3,
        "grace_seconds": 3_600,
    },
    "pro-yearly-key": {
        "tier_rank": 2,
        "price_sats_override": 7_500,
        "entitlements": ["standard", "pro"],
        "max_machines": 3,
        "duration_seconds": 365 * 86_400,
    },
    "lifetime": {
        "tier_rank": 4,
        "price_sats_override": 30_000,
        "entitlements": ["standard", "pro", "lifetime"],
        "max_machines": 10,
    },
    "standard-monthly": {
        "tier_rank": 1,
        "is_recurring": True,
        "renewal_period_days": 30,
        "grace_period_days": 7,
        "entitlements": ["standard"],
        "max_machines": 1,
    },
    "pro-monthly": {
        "tier_rank": 2,
        "price_sats_override": 7_500,
        "is_recurring": True,
        "renewal_period_days": 30,
        "grace_period_days": 10,
        "entitlements": ["standard", "pro"],
        "max_machines": 3,
    },
    "pro-annual": {
        "tier_rank": 3,
        "price_sats_override": 75_000,
        "is_recurring": True,
        "renewal_period_days": 365,
        "grace_period_days": 14,
        "entitlements": ["standard", "pro", "annual"],
        "max_machines": 5,
    },
}


# --- helpers --------------------------------------------------------------------------------


@pytest.fixture
async def shop_server(make_server: Callable[..., Any]) -> Any:
    """Sandbox mode, no rate source: USD prices convert through the manual pin only."""
    clock.freeze(T0)
    return await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_SOURCES="none")


async def pin_usd(server: Any, units: str = "50000") -> None:
    response = await server.client.put(
        "/v1/admin/rates/pins/USD", json={"units_per_btc": units}, headers=ADMIN
    )
    assert response.status_code == 200, response.text


async def shop(server: Any, currency: str, *slugs: str) -> dict[str, dict[str, Any]]:
    """Product `acme` (Standard $25 or 25 000 sats) and the named tiers."""
    if currency == "USD":
        product = await create_product(
            server, "acme", price_sats=None, price_currency="USD", price_value=2_500
        )
        await pin_usd(server)
    else:
        product = await create_product(server, "acme", price_sats=25_000)
    made: dict[str, dict[str, Any]] = {"product": product}
    for slug in slugs:
        fields = dict(TIERS[slug])
        if currency == "SAT" and "price_sats_override" in fields:
            fields["price_sats_override"] *= 10
        made[slug] = await create_policy(server, "acme", slug, **fields)
    return made


def sats(currency: str, value: int) -> int:
    """What a listed value costs: cents at the 50 000 USD/BTC pin, or sats as they are."""
    return value * 20 if currency == "USD" else value


def unit(currency: str) -> int:
    return 1 if currency == "USD" else 10


async def buy(server: Any, policy_slug: str, **fields: Any) -> dict[str, Any]:
    """A paid purchase of one tier: the license id, its key and the purchase invoice."""
    bought = await purchase(server, "acme", policy_slug=policy_slug, buyer_email=EMAIL, **fields)
    await sandbox_action(server, bought["invoice_id"])
    polled = await poll(server, bought["invoice_id"])
    assert polled["license_key"], polled
    return {
        "license_id": polled["license_id"],
        "key": polled["license_key"],
        "invoice_id": bought["invoice_id"],
    }


async def quote(server: Any, key: str, slug: str) -> Any:
    return await server.client.post(
        "/v1/upgrade-quote", json={"license_key": key, "target_policy_slug": slug}
    )


async def upgrade(server: Any, key: str, slug: str, **fields: Any) -> Any:
    return await server.client.post(
        "/v1/upgrade", json={"license_key": key, "target_policy_slug": slug, **fields}
    )


async def change_tier(server: Any, license_id: str, slug: str, **fields: Any) -> Any:
    return await server.admin_post(
        f"/v1/admin/licenses/{license_id}/change-tier", {"to_policy_slug": slug, **fields}
    )


async def license_of(server: Any, license_id: str) -> License:
    async with server.state.db.read() as session:
        row = await session.get(License, license_id)
    assert row is not None
    return row


async def subscription_of(server: Any, license_id: str) -> Subscription | None:
    async with server.state.db.read() as session:
        query = sa.select(Subscription).where(Subscription.license_id == license_id)
        return (await session.execute(query)).scalar_one_or_none()


async def changes_of(server: Any, license_id: str) -> list[TierChange]:
    async with server.state.db.read() as session:
        query = (
            sa.select(TierChange)
            .where(TierChange.license_id == license_id)
            .order_by(TierChange.created_at)
        )
        return list((await session.execute(query)).scalars())


async def cycles_of(server: Any, subscription_id: str) -> list[SubscriptionCycle]:
    async with server.state.db.read() as session:
        query = (
            sa.select(SubscriptionCycle)
            .where(SubscriptionCycle.subscription_id == subscription_id)
            .order_by(SubscriptionCycle.cycle_number)
        )
        return list((await session.execute(query)).scalars())


async def sandbox_invoice_of(server: Any, invoice_id: str) -> SandboxInvoice:
    async with server.state.db.read() as session:
        query = sa.select(SandboxInvoice).where(SandboxInvoice.external_order_id == invoice_id)
        row = (await session.execute(query)).scalar_one()
    return row


async def count(server: Any, model: Any) -> int:
    async with server.state.db.read() as session:
        query = sa.select(sa.func.count()).select_from(model)
        return int((await session.execute(query)).scalar_one())


async def renewals_tick(server: Any) -> None:
    await server.state.jobs.job("renewals").tick(clock.now())


async def renewal_invoices(server: Any) -> list[Invoice]:
    async with server.state.db.read() as session:
        query = sa.select(Invoice).where(Invoice.kind == "renewal").order_by(Invoice.created_at)
        return list((await session.execute(query)).scalars())


async def validate(server: Any, key: str) -> dict[str, Any]:
    response = await server.client.post("/v1/validate", json={"key": key})
    assert response.status_code == 200, response.text
    return dict(response.json())


def unix(at: datetime) -> int:
    return int(at.timestamp())


def tier_event(
    made: dict[str, Any],
    license_id: str,
    source: str,
    target: str,
    *,
    direction: str,
    actor: str,
    invoice_id: str | None,
    tier_change_id: str,
    applied_via: str,
) -> dict[str, Any]:
    return {
        "license_id": license_id,
        "product_id": made["product"]["id"],
        "from_policy_id": made[source]["id"],
        "to_policy_id": made[target]["id"],
        "to_policy_slug": target,
        "direction": direction,
        "actor": actor,
        "invoice_id": invoice_id,
        "tier_change_id": tier_change_id,
        "applied_via": applied_via,
    }


# --- E1: perpetual Standard -> Pro, the buyer flow in full --------------------------------


@pytest.mark.parametrize("currency", ["USD", "SAT"])
async def test_e1_buyer_upgrade_from_quote_to_settlement(shop_server: Any, currency: str) -> None:
    server = shop_server
    made = await shop(server, currency, "standard", "pro")
    bought = await buy(server, "standard")
    license_id, key = bought["license_id"], bought["key"]
    charge = 5_000 * unit(currency)

    answer = await quote(server, key, "pro")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "from_policy_id": made["standard"]["id"],
        "from_policy_slug": "standard",
        "to_policy_id": made["pro"]["id"],
        "to_policy_slug": "pro",
        "direction": "upgrade",
        "listed_currency": currency,
        "proration_charge_value": charge,
        "effective_at": "immediate",
        "next_renewal_charge": None,
        "next_renewal_period_days": None,
    }
    # a quote writes nothing
    assert await count(server, TierChange) == 0
    assert await count(server, Invoice) == 1

    clock.advance(timedelta(minutes=3))
    response = await upgrade(server, key, "pro")
    assert response.status_code == 200, response.text
    started = response.json()
    assert set(started) == UPGRADE_KEYS
    invoice_id = started["invoice_id"]
    assert started["amount_sats"] == 100_000 if currency == "USD" else 50_000
    assert (started["proration_charge_value"], started["listed_currency"]) == (charge, currency)
    assert (started["from_policy_slug"], started["to_policy_slug"]) == ("standard", "pro")
    assert started["provider_invoice_id"].startswith("sbx_")
    assert started["checkout_url"] == (
        f"http://keysat.test/sandbox/checkout/{started['provider_invoice_id']}"
    )

    invoice = await invoice_row(server, invoice_id)
    assert (invoice.kind, invoice.status, invoice.provider_kind) == (
        "tier_change",
        "pending",
        "sandbox",
    )
    assert invoice.subject_license_id == license_id
    assert invoice.policy_id == made["pro"]["id"]
    assert invoice.product_id == made["product"]["id"]
    assert invoice.buyer_note == "tier upgrade"
    assert invoice.buyer_email == EMAIL
    assert invoice.amount_sats == started["amount_sats"]
    assert (invoice.base_price_sats, invoice.discount_applied_sats) == (invoice.amount_sats, 0)
    assert (invoice.listed_currency, invoice.listed_value) == (currency, charge)
    if currency == "USD":
        assert (invoice.exchange_rate_centibps, invoice.exchange_rate_source) == (
            500_000_000,
            "manual_pin",
        )
    else:
        assert (invoice.exchange_rate_centibps, invoice.exchange_rate_source) == (None, "identity")
    assert invoice.provider_invoice_id == started["provider_invoice_id"]
    assert invoice.subscription_id is None

    provider_side = await sandbox_invoice_of(server, invoice_id)
    assert (provider_side.amount_currency, provider_side.amount_value) == (
        "SAT",
        invoice.amount_sats,
    )
    assert provider_side.redirect_url == f"http://keysat.test/thank-you?invoice_id={invoice_id}"
    assert provider_side.buyer_email == EMAIL
    assert provider_side.invoice_metadata == {
        "productId": made["product"]["id"],
        "intent": "tier_change",
        "licenseId": license_id,
        "fromPolicyId": made["standard"]["id"],
        "toPolicyId": made["pro"]["id"],
    }

    [change] = await changes_of(server, license_id)
    assert change.id == started["tier_change_id"]
    assert (change.from_policy_id, change.to_policy_id) == (
        made["standard"]["id"],
        made["pro"]["id"],
    )
    assert (change.direction, change.listed_currency, change.proration_charge_value) == (
        "upgrade",
        currency,
        charge,
    )
    assert (change.invoice_id, change.actor, change.reason) == (invoice_id, "buyer", None)
    assert change.effective_at == T0 + timedelta(minutes=3)
    assert change.applied_at is None

    [audit] = await audit_rows(server, "subscription.upgrade.started")
    assert (audit.actor_kind, audit.actor_hash) == ("buyer_license_key", license_id)
    assert (audit.target_kind, audit.target_id) == ("tier_change", change.id)
    assert audit.details == {
        "license_id": license_id,
        "from_policy_id": made["standard"]["id"],
        "to_policy_id": made["pro"]["id"],
        "invoice_id": invoice_id,
        "listed_currency": currency,
        "proration_charge_value": charge,
        "amount_sats": invoice.amount_sats,
    }

    # nothing changes before the money arrives
    assert await events(server, "license.tier_changed") == []
    assert (await license_of(server, license_id)).policy_id == made["standard"]["id"]
    assert await poll(server, invoice_id) == {
        "invoice_id": invoice_id,
        "status": "pending",
        "product_id": made["product"]["id"],
        "amount_sats": invoice.amount_sats,
        "license_key": None,
        "license_id": None,
    }

    clock.advance(timedelta(minutes=2))
    await sandbox_action(server, invoice_id)
    row = await license_of(server, license_id)
    assert row.policy_id == made["pro"]["id"]
    assert row.entitlements == ["standard", "pro"]
    assert (row.max_machines, row.grace_seconds, row.expires_at) == (3, 3_600, None)
    assert row.status == "active" and row.invoice_id == bought["invoice_id"]
    assert await licenses_for_invoice(server, invoice_id) == []
    assert await count(server, License) == 1

    [change] = await changes_of(server, license_id)
    assert change.applied_at == T0 + timedelta(minutes=5)
    [applied] = await audit_rows(server, "subscription.upgrade.applied")
    assert (applied.actor_kind, applied.target_kind, applied.target_id) == (
        "system",
        "tier_change",
        change.id,
    )
    assert applied.details == {
        "license_id": license_id,
        "from_policy_id": made["standard"]["id"],
        "to_policy_id": made["pro"]["id"],
        "invoice_id": invoice_id,
        "actor": "buyer",
        "direction": "upgrade",
    }
    [event] = await events(server, "license.tier_changed")
    assert set(event["data"]) == EVENT_KEYS
    assert event["data"] == tier_event(
        made,
        license_id,
        "standard",
        "pro",
        direction="upgrade",
        actor="buyer",
        invoice_id=invoice_id,
        tier_change_id=change.id,
        applied_via="settlement",
    )
    assert event["timestamp"] == format_ts(T0 + timedelta(minutes=5))
    assert await events(server, "license.issued") != []  # only the purchase's
    assert len(await events(server, "license.issued")) == 1

    polled = await poll(server, invoice_id)
    assert (polled["status"], polled["license_id"]) == ("settled", license_id)
    upgraded = polled["license_key"]
    assert upgraded and upgraded != key
    fields = parse_key(upgraded)
    assert str(fields.license_id) == license_id
    assert list(fields.entitlements) == ["standard", "pro"]
    assert fields.expires_at == 0
    # the purchase invoice also answers with the current key
    assert (await poll(server, bought["invoice_id"]))["license_key"] == upgraded

    old = await validate(server, key)
    assert old["ok"] is True and old["license_id"] == license_id
    assert old["entitlements"] == ["standard", "pro"]
    assert old["max_machines"] == 3
    assert old["license_key"] == upgraded
    fresh = await validate(server, upgraded)
    assert fresh["ok"] is True and fresh["entitlements"] == ["standard", "pro"]
    assert "license_key" not in fresh

    # redelivery: paying again and the reconciler change nothing and fire nothing
    clock.advance(timedelta(minutes=1))
    again = await sandbox_action(server, invoice_id)
    assert again["status"] == "settled"
    assert await server.state.settlement.confirm(invoice_id) is not None
    run = await server.admin_post("/v1/admin/jobs/reconciler/run")
    assert run.status_code == 200, run.text
    assert len(await events(server, "license.tier_changed")) == 1
    assert len(await audit_rows(server, "subscription.upgrade.applied")) == 1
    [change] = await changes_of(server, license_id)
    assert change.applied_at == T0 + timedelta(minutes=5)
    assert await count(server, License) == 1
    assert (await poll(server, invoice_id))["license_key"] == upgraded


async def test_a_key_from_before_the_upgrade_cannot_upgrade_twice_to_the_same_tier(
    shop_server: Any,
) -> None:
    await shop(shop_server, "USD", "standard", "pro")
    bought = await buy(shop_server, "standard")
    started = (await upgrade(shop_server, bought["key"], "pro")).json()
    await sandbox_action(shop_server, started["invoice_id"])
    # the old key still authenticates (same license), but the license is on Pro now
    assert_error(
        await quote(shop_server, bought["key"], "pro"),
        400,
        "bad_request",
        "bad request: target policy is the same as current — no change to make",
    )


async def test_two_open_upgrade_invoices_apply_once_each_without_a_second_license(
    shop_server: Any,
) -> None:
    made = await shop(shop_server, "USD", "standard", "pro")
    bought = await buy(shop_server, "standard")
    first = (await upgrade(shop_server, bought["key"], "pro")).json()
    second = (await upgrade(shop_server, bought["key"], "pro")).json()
    assert first["invoice_id"] != second["invoice_id"]
    await sandbox_action(shop_server, first["invoice_id"])
    await sandbox_action(shop_server, second["invoice_id"])
    # billing.md 4.6: the second row is only marked applied (the license is on the target)
    changes = await changes_of(shop_server, bought["license_id"])
    assert [c.applied_at is not None for c in changes] == [True, True]
    assert len(await events(shop_server, "license.tier_changed")) == 1
    assert (await license_of(shop_server, bought["license_id"])).policy_id == made["pro"]["id"]
    assert await count(shop_server, License) == 1


async def test_perpetual_target_with_a_duration_resets_the_expiry_from_now(
    shop_server: Any,
) -> None:
    await shop(shop_server, "SAT", "standard", "pro-yearly-key")
    bought = await buy(shop_server, "standard")
    started = (await upgrade(shop_server, bought["key"], "pro-yearly-key")).json()
    clock.advance(timedelta(hours=5))
    await sandbox_action(shop_server, started["invoice_id"])
    row = await license_of(shop_server, bought["license_id"])
    assert row.expires_at == T0 + timedelta(hours=5) + 365 * DAY
    key = (await poll(shop_server, started["invoice_id"]))["license_key"]
    assert parse_key(key).expires_at == unix(T0 + timedelta(hours=5) + 365 * DAY)


# --- E2-E5: monthly subscriptions ----------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "days"),
    [
        pytest.param(15 * DAY, 15, id="E2-15-days-left"),
        pytest.param(15 * DAY + timedelta(minutes=1), 14, id="E3-14d23h59m-left"),
    ],
)
@pytest.mark.parametrize("currency", ["USD", "SAT"])
async def test_e2_e3_monthly_upgrade_is_prorated_by_whole_days(
    shop_server: Any, currency: str, elapsed: timedelta, days: int
) -> None:
    server = shop_server
    made = await shop(server, currency, "standard-monthly", "pro-monthly")
    bought = await buy(server, "standard-monthly")
    license_id = bought["license_id"]
    sub = await subscription_of(server, license_id)
    assert sub is not None and sub.current_period_end == T0 + 30 * DAY
    clock.advance(elapsed)
    # E2: 5 000 x 15 div 30 = 2 500 cents; E3: 5 000 x 14 div 30 = 2 333 cents
    charge = 5_000 * unit(currency) * days // 30
    assert charge == {("USD", 15): 2_500, ("USD", 14): 2_333}.get((currency, days), charge)

    answer = (await quote(server, bought["key"], "pro-monthly")).json()
    assert answer == {
        "from_policy_id": made["standard-monthly"]["id"],
        "from_policy_slug": "standard-monthly",
        "to_policy_id": made["pro-monthly"]["id"],
        "to_policy_slug": "pro-monthly",
        "direction": "upgrade",
        "listed_currency": currency,
        "proration_charge_value": charge,
        "effective_at": "immediate",
        "next_renewal_charge": 7_500 * unit(currency),
        "next_renewal_period_days": 30,
    }
    started = (await upgrade(server, bought["key"], "pro-monthly")).json()
    assert started["proration_charge_value"] == charge
    assert started["amount_sats"] == sats(currency, charge)  # 50 000 / 46 660 at the pin
    await sandbox_action(server, started["invoice_id"])

    row = await license_of(server, license_id)
    assert row.policy_id == made["pro-monthly"]["id"]
    assert (row.entitlements, row.max_machines) == (["standard", "pro"], 3)
    assert row.expires_at == T0 + 30 * DAY  # the paid-through time, unchanged
    assert row.grace_seconds == 10 * 86_400
    after = await subscription_of(server, license_id)
    assert after is not None and after.id == sub.id
    assert (after.status, after.policy_id) == ("active", made["pro-monthly"]["id"])
    assert (after.listed_value, after.period_days, after.listed_currency) == (
        7_500 * unit(currency),
        30,
        currency,
    )
    assert after.current_period_end == T0 + 30 * DAY
    assert after.next_attempt_at == T0 + 30 * DAY
    assert len(await cycles_of(server, sub.id)) == 1
    assert await count(server, Subscription) == 1

    # the next renewal bills the new tier's price
    clock.freeze(T0 + 30 * DAY)
    await renewals_tick(server)
    [renewal] = await renewal_invoices(server)
    assert renewal.amount_sats == sats(currency, 7_500 * unit(currency))
    assert renewal.policy_id == made["pro-monthly"]["id"]
    [pending] = await events(server, "subscription.renewal_pending")
    assert pending["data"]["listed_value"] == 7_500 * unit(currency)
    assert pending["data"]["due_at"] == format_ts(T0 + 40 * DAY)


async def test_e4_past_due_subscription_owes_nothing_and_the_buyer_is_sent_to_the_admin(
    shop_server: Any,
) -> None:
    server = shop_server
    await shop(server, "USD", "standard-monthly", "pro-monthly")
    bought = await buy(server, "standard-monthly")
    clock.freeze(T0 + 31 * DAY)
    await renewals_tick(server)
    sub = await subscription_of(server, bought["license_id"])
    assert sub is not None and sub.status == "past_due"
    answer = (await quote(server, bought["key"], "pro-monthly")).json()
    assert (answer["direction"], answer["proration_charge_value"]) == ("upgrade", 0)
    assert (answer["effective_at"], answer["next_renewal_charge"]) == ("immediate", 7_500)
    assert_error(
        await upgrade(server, bought["key"], "pro-monthly"), 400, "bad_request", NO_CHARGE_BUYER
    )
    assert await count(server, TierChange) == 0


async def test_e5_monthly_downgrade_is_quoted_for_the_period_end_and_refused_to_buyers(
    shop_server: Any,
) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard-monthly", "pro-monthly")
    bought = await buy(server, "pro-monthly")
    clock.advance(10 * DAY)
    answer = (await quote(server, bought["key"], "standard-monthly")).json()
    assert answer == {
        "from_policy_id": made["pro-monthly"]["id"],
        "from_policy_slug": "pro-monthly",
        "to_policy_id": made["standard-monthly"]["id"],
        "to_policy_slug": "standard-monthly",
        "direction": "downgrade",
        "listed_currency": "USD",
        "proration_charge_value": 0,
        "effective_at": format_ts(T0 + 30 * DAY),
        "next_renewal_charge": 2_500,
        "next_renewal_period_days": 30,
    }
    assert_error(
        await upgrade(server, bought["key"], "standard-monthly"), 403, "forbidden", "forbidden"
    )
    assert await count(server, TierChange) == 0


async def test_e6_buyer_perpetual_downgrades_are_admin_only(shop_server: Any) -> None:
    server = shop_server
    await shop(server, "USD", "standard", "pro", "pro-monthly")
    perpetual = await buy(server, "pro")
    message = "bad request: perpetual downgrades are admin-only — they imply a refund decision"
    for call in (quote, upgrade):
        assert_error(await call(server, perpetual["key"], "standard"), 400, "bad_request", message)
    monthly = await buy(server, "pro-monthly")
    message = (
        "bad request: downgrading from a recurring subscription to a perpetual policy is admin-only"
    )
    for call in (quote, upgrade):
        assert_error(await call(server, monthly["key"], "standard"), 400, "bad_request", message)
    assert await count(server, TierChange) == 0


# --- E7: perpetual -> recurring ------------------------------------------------------------


async def test_e7_buyer_upgrade_to_a_recurring_tier_starts_a_subscription(
    shop_server: Any,
) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard", "pro-monthly")
    bought = await buy(server, "standard")
    answer = (await quote(server, bought["key"], "pro-monthly")).json()
    assert (answer["proration_charge_value"], answer["effective_at"]) == (7_500, "immediate")
    assert (answer["next_renewal_charge"], answer["next_renewal_period_days"]) == (7_500, 30)
    started = (await upgrade(server, bought["key"], "pro-monthly")).json()
    assert started["amount_sats"] == 150_000
    assert await subscription_of(server, bought["license_id"]) is None
    clock.advance(DAY)
    await sandbox_action(server, started["invoice_id"])

    paid_at = T0 + DAY
    row = await license_of(server, bought["license_id"])
    assert row.expires_at == paid_at + 30 * DAY
    assert row.grace_seconds == 10 * 86_400
    sub = await subscription_of(server, bought["license_id"])
    assert sub is not None
    assert (sub.status, sub.policy_id, sub.listed_currency, sub.listed_value, sub.period_days) == (
        "active",
        made["pro-monthly"]["id"],
        "USD",
        7_500,
        30,
    )
    assert (sub.current_period_start, sub.current_period_end) == (paid_at, paid_at + 30 * DAY)
    assert sub.next_attempt_at == paid_at + 30 * DAY
    assert sub.provider_kind == "sandbox"
    [cycle] = await cycles_of(server, sub.id)
    assert (cycle.cycle_number, cycle.invoice_id) == (1, started["invoice_id"])
    assert (cycle.cycle_start_at, cycle.cycle_end_at, cycle.paid_at) == (
        paid_at,
        paid_at + 30 * DAY,
        paid_at,
    )
    key = (await poll(server, started["invoice_id"]))["license_key"]
    assert parse_key(key).expires_at == unix(paid_at + 30 * DAY)
    assert (await validate(server, key))["expires_at"] == format_ts(paid_at + 30 * DAY)


async def test_e7_admin_paid_change_to_recurring_creates_a_subscription_and_a_comp_none(
    shop_server: Any,
) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard", "pro-monthly")
    paid = await buy(server, "standard")
    response = await change_tier(server, paid["license_id"], "pro-monthly")
    assert response.status_code == 200, response.text
    assert response.json()["amount_sats"] == 150_000
    await sandbox_action(server, response.json()["invoice_id"])
    sub = await subscription_of(server, paid["license_id"])
    assert sub is not None and sub.current_period_end == T0 + 30 * DAY
    assert (await license_of(server, paid["license_id"])).expires_at == T0 + 30 * DAY

    comp = await buy(server, "standard")
    response = await change_tier(server, comp["license_id"], "pro-monthly", skip_payment=True)
    assert response.status_code == 200, response.text
    assert response.json()["applied"] is True
    row = await license_of(server, comp["license_id"])
    assert row.policy_id == made["pro-monthly"]["id"]
    assert row.expires_at is None  # target duration_seconds 0
    assert row.grace_seconds == 10 * 86_400
    assert await subscription_of(server, comp["license_id"]) is None
    assert await count(server, Subscription) == 1


async def test_a_paid_change_reactivates_a_cancelled_subscription(shop_server: Any) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard-monthly", "pro-monthly")
    bought = await buy(server, "standard-monthly")
    cancelled = await server.client.post(
        "/v1/subscriptions/cancel", json={"license_key": bought["key"], "reason": "too pricey"}
    )
    assert cancelled.status_code == 200, cancelled.text
    clock.advance(10 * DAY)
    answer = (await quote(server, bought["key"], "pro-monthly")).json()
    assert answer["proration_charge_value"] == 7_500  # no live subscription: a full cycle
    started = (await upgrade(server, bought["key"], "pro-monthly")).json()
    await sandbox_action(server, started["invoice_id"])
    sub = await subscription_of(server, bought["license_id"])
    assert sub is not None
    assert (sub.status, sub.policy_id, sub.listed_value) == (
        "active",
        made["pro-monthly"]["id"],
        7_500,
    )
    assert (sub.cancelled_at, sub.cancellation_reason, sub.lapsed_at) == (None, None, None)
    assert sub.current_period_end == T0 + 40 * DAY
    cycles = await cycles_of(server, sub.id)
    assert [(c.cycle_number, c.invoice_id) for c in cycles] == [
        (1, bought["invoice_id"]),
        (2, started["invoice_id"]),
    ]
    assert (await license_of(server, bought["license_id"])).expires_at == T0 + 40 * DAY
    assert await count(server, Subscription) == 1


# --- E8: Standard monthly -> Pro Annual ----------------------------------------------------


@pytest.mark.parametrize("skip_payment", [False, True])
async def test_e8_monthly_to_annual_moves_license_and_subscription(
    shop_server: Any, skip_payment: bool
) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard-monthly", "pro-annual")
    bought = await buy(server, "standard-monthly")
    clock.advance(15 * DAY)
    response = await change_tier(
        server, bought["license_id"], "pro-annual", skip_payment=skip_payment
    )
    assert response.status_code == 200, response.text
    if not skip_payment:
        # (75 000 - 2 500) x 15 div 30 = 36 250 cents = 725 000 sats at the pin
        assert response.json()["proration_charge_value"] == 36_250
        assert response.json()["amount_sats"] == 725_000
        await sandbox_action(server, response.json()["invoice_id"])
    row = await license_of(server, bought["license_id"])
    assert row.policy_id == made["pro-annual"]["id"]
    assert (row.max_machines, row.entitlements) == (5, ["standard", "pro", "annual"])
    assert row.expires_at == T0 + 30 * DAY
    assert row.grace_seconds == 14 * 86_400
    sub = await subscription_of(server, bought["license_id"])
    assert sub is not None
    assert (sub.status, sub.policy_id, sub.listed_value, sub.period_days) == (
        "active",
        made["pro-annual"]["id"],
        75_000,
        365,
    )
    assert (sub.current_period_end, sub.next_attempt_at) == (T0 + 30 * DAY, T0 + 30 * DAY)
    # the new period starts at the next renewal
    clock.freeze(T0 + 30 * DAY)
    await renewals_tick(server)
    [renewal] = await renewal_invoices(server)
    assert renewal.amount_sats == 1_500_000
    [pending] = await events(server, "subscription.renewal_pending")
    assert pending["data"]["cycle_end_at"] == format_ts(T0 + 395 * DAY)


# --- E9, E10 and the admin paths -----------------------------------------------------------


async def test_e9_admin_unranked_price_tie_is_an_upgrade_that_must_be_a_comp(
    shop_server: Any,
) -> None:
    server = shop_server
    await create_product(server, "acme", price_sats=None, price_currency="USD", price_value=2_500)
    await pin_usd(server)
    await create_policy(server, "acme", "basic", entitlements=["basic"])
    await create_policy(server, "acme", "team", entitlements=["team"])
    issued = await issue_license(server, "acme", policy_slug="basic")
    response = await change_tier(server, issued["license_id"], "team")
    assert_error(response, 400, "bad_request", NO_CHARGE_ADMIN)
    assert "skip_payment" in response.json()["message"]
    # the buyer may not even ask: no ladder
    assert_error(
        await quote(server, issued["license_key"], "team"),
        400,
        "bad_request",
        "bad request: current policy is not in any tier ladder — admin must set tier_rank first",
    )
    comp = await change_tier(server, issued["license_id"], "team", skip_payment=True)
    assert comp.status_code == 200, comp.text
    [change] = await changes_of(server, issued["license_id"])
    assert change.direction == "upgrade"


async def test_e10_admin_comp_downgrade_of_a_perpetual_license_applies_at_once(
    shop_server: Any,
) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard", "pro")
    bought = await buy(server, "pro")
    clock.advance(timedelta(hours=1))
    response = await change_tier(
        server, bought["license_id"], "standard", skip_payment=True, reason="  refund agreed  "
    )
    assert response.status_code == 200, response.text
    body = response.json()
    [change] = await changes_of(server, bought["license_id"])
    applied_at = T0 + timedelta(hours=1)
    assert body["license_key"]
    assert body == {
        "ok": True,
        "applied": True,
        "license_id": bought["license_id"],
        "tier_change_id": change.id,
        "skip_payment": True,
        "from_policy_slug": "pro",
        "to_policy_slug": "standard",
        "license_key": body["license_key"],
        "effective_at": format_ts(applied_at),
    }
    assert (change.actor, change.proration_charge_value, change.invoice_id) == ("admin", 0, None)
    assert (change.direction, change.listed_currency) == ("downgrade", "USD")
    assert change.effective_at == change.applied_at == applied_at
    assert change.reason is not None and change.reason.strip() == "refund agreed"
    assert await count(server, Invoice) == 1

    row = await license_of(server, bought["license_id"])
    assert row.policy_id == made["standard"]["id"]
    assert (row.entitlements, row.max_machines, row.grace_seconds) == (["standard"], 1, 0)
    key = parse_key(body["license_key"])
    assert list(key.entitlements) == ["standard"] and str(key.license_id) == bought["license_id"]
    checked = await validate(server, body["license_key"])
    assert checked["ok"] is True and checked["entitlements"] == ["standard"]
    assert "license_key" not in checked

    [audit] = await audit_rows(server, "license.change_tier.comp")
    assert (audit.actor_kind, audit.actor_id) == ("admin_api_key", "master")
    assert (audit.target_kind, audit.target_id) == ("tier_change", change.id)
    expected = {
        "license_id": bought["license_id"],
        "from_policy_id": made["pro"]["id"],
        "to_policy_id": made["standard"]["id"],
        "to_policy_slug": "standard",
        "direction": "downgrade",
        "reason": change.reason,
        "skip_payment": True,
    }
    assert {name: audit.details[name] for name in expected} == expected
    [event] = await events(server, "license.tier_changed")
    assert event["data"] == tier_event(
        made,
        bought["license_id"],
        "pro",
        "standard",
        direction="downgrade",
        actor="admin",
        invoice_id=None,
        tier_change_id=change.id,
        applied_via="admin",
    )
    assert await audit_rows(server, "subscription.upgrade.applied") == []


async def test_admin_paid_path_invoice_and_settlement(shop_server: Any) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard", "pro")
    bought = await buy(server, "standard")
    response = await change_tier(server, bought["license_id"], "pro", reason="sales call")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PAID_CHANGE_KEYS
    [change] = await changes_of(server, bought["license_id"])
    assert body == {
        "ok": True,
        "applied": False,
        "license_id": bought["license_id"],
        "tier_change_id": change.id,
        "invoice_id": body["invoice_id"],
        "provider_invoice_id": body["provider_invoice_id"],
        "checkout_url": f"http://keysat.test/sandbox/checkout/{body['provider_invoice_id']}",
        "amount_sats": 100_000,
        "proration_charge_value": 5_000,
        "listed_currency": "USD",
        "from_policy_slug": "standard",
        "to_policy_slug": "pro",
        "skip_payment": False,
    }
    invoice = await invoice_row(server, body["invoice_id"])
    assert (invoice.kind, invoice.status, invoice.buyer_note) == (
        "tier_change",
        "pending",
        "admin tier-change",
    )
    assert (invoice.policy_id, invoice.subject_license_id) == (
        made["pro"]["id"],
        bought["license_id"],
    )
    assert (invoice.listed_currency, invoice.listed_value, invoice.exchange_rate_centibps) == (
        "USD",
        5_000,
        500_000_000,
    )
    assert invoice.exchange_rate_source == "manual_pin"
    assert invoice.buyer_email == EMAIL
    provider_side = await sandbox_invoice_of(server, body["invoice_id"])
    assert provider_side.invoice_metadata["intent"] == "admin_tier_change"
    assert provider_side.redirect_url == (
        f"http://keysat.test/thank-you?invoice_id={body['invoice_id']}"
    )
    assert (change.actor, change.reason, change.invoice_id) == (
        "admin",
        "sales call",
        body["invoice_id"],
    )
    assert change.proration_charge_value == 5_000 and change.applied_at is None
    [audit] = await audit_rows(server, "license.change_tier.invoice_created")
    assert (audit.actor_kind, audit.target_kind, audit.target_id) == (
        "admin_api_key",
        "tier_change",
        change.id,
    )
    assert audit.details == {
        "license_id": bought["license_id"],
        "from_policy_id": made["standard"]["id"],
        "to_policy_id": made["pro"]["id"],
        "to_policy_slug": "pro",
        "direction": "upgrade",
        "invoice_id": body["invoice_id"],
        "amount_sats": 100_000,
        "listed_currency": "USD",
        "proration_charge_value": 5_000,
        "reason": "sales call",
        "skip_payment": False,
    }
    assert await audit_rows(server, "subscription.upgrade.started") == []
    assert (await license_of(server, bought["license_id"])).policy_id == made["standard"]["id"]

    await sandbox_action(server, body["invoice_id"])
    assert (await license_of(server, bought["license_id"])).policy_id == made["pro"]["id"]
    [applied] = await audit_rows(server, "subscription.upgrade.applied")
    assert applied.actor_kind == "system" and applied.details["actor"] == "admin"
    [event] = await events(server, "license.tier_changed")
    assert event["data"] == tier_event(
        made,
        bought["license_id"],
        "standard",
        "pro",
        direction="upgrade",
        actor="admin",
        invoice_id=body["invoice_id"],
        tier_change_id=change.id,
        applied_via="settlement",
    )
    polled = await poll(server, body["invoice_id"])
    assert list(parse_key(polled["license_key"]).entitlements) == ["standard", "pro"]


async def test_admin_comp_upgrade_of_a_live_subscription_applies_at_once(
    shop_server: Any,
) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard-monthly", "pro-monthly")
    bought = await buy(server, "standard-monthly")
    clock.advance(3 * DAY)
    response = await change_tier(server, bought["license_id"], "pro-monthly", skip_payment=True)
    assert response.status_code == 200, response.text
    assert response.json()["applied"] is True
    assert response.json()["effective_at"] == format_ts(T0 + 3 * DAY)
    sub = await subscription_of(server, bought["license_id"])
    assert sub is not None
    assert (sub.policy_id, sub.listed_value, sub.status) == (
        made["pro-monthly"]["id"],
        7_500,
        "active",
    )
    row = await license_of(server, bought["license_id"])
    assert (row.policy_id, row.expires_at) == (made["pro-monthly"]["id"], T0 + 30 * DAY)
    assert len(await events(server, "license.tier_changed")) == 1


async def test_admin_comp_downgrade_of_a_live_subscription_waits_for_the_renewal_worker(
    shop_server: Any,
) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard-monthly", "pro-monthly")
    bought = await buy(server, "pro-monthly")
    license_id = bought["license_id"]
    clock.advance(10 * DAY)
    response = await change_tier(
        server, license_id, "standard-monthly", skip_payment=True, reason="asked to downgrade"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    [change] = await changes_of(server, license_id)
    boundary = T0 + 30 * DAY
    assert body["applied"] is False
    assert body["effective_at"] == format_ts(boundary)
    assert (body["tier_change_id"], body["skip_payment"]) == (change.id, True)
    assert (body["from_policy_slug"], body["to_policy_slug"]) == ("pro-monthly", "standard-monthly")
    assert (change.invoice_id, change.actor, change.proration_charge_value) == (None, "admin", 0)
    assert (change.effective_at, change.applied_at) == (boundary, None)
    assert change.direction == "downgrade"
    [audit] = await audit_rows(server, "license.change_tier.comp")
    assert audit.details["direction"] == "downgrade"
    assert audit.details["skip_payment"] is True
    # nothing moves yet: the buyer keeps what they paid for
    assert await count(server, Invoice) == 1
    assert await events(server, "license.tier_changed") == []
    row = await license_of(server, license_id)
    assert (row.policy_id, row.entitlements) == (made["pro-monthly"]["id"], ["standard", "pro"])
    assert body["license_key"] == bought["key"] or parse_key(body["license_key"]).entitlements == (
        parse_key(bought["key"]).entitlements
    )
    sub = await subscription_of(server, license_id)
    assert sub is not None and (sub.policy_id, sub.listed_value) == (
        made["pro-monthly"]["id"],
        7_500,
    )

    clock.freeze(boundary - timedelta(seconds=1))
    await renewals_tick(server)
    assert (await license_of(server, license_id)).policy_id == made["pro-monthly"]["id"]
    assert await renewal_invoices(server) == []

    clock.freeze(boundary)
    await renewals_tick(server)
    row = await license_of(server, license_id)
    assert row.policy_id == made["standard-monthly"]["id"]
    assert (row.entitlements, row.max_machines) == (["standard"], 1)
    assert row.grace_seconds == 7 * 86_400
    assert row.expires_at == boundary
    [change] = await changes_of(server, license_id)
    assert change.applied_at == boundary
    [event] = await events(server, "license.tier_changed")
    assert event["data"] == tier_event(
        made,
        license_id,
        "pro-monthly",
        "standard-monthly",
        direction="downgrade",
        actor="system",
        invoice_id=None,
        tier_change_id=change.id,
        applied_via="renewal_worker",
    )
    # ... before billing: the renewal is at the new tier's price
    [renewal] = await renewal_invoices(server)
    assert (renewal.amount_sats, renewal.listed_value) == (50_000, 2_500)
    assert renewal.policy_id == made["standard-monthly"]["id"]
    sub = await subscription_of(server, license_id)
    assert sub is not None
    assert (sub.status, sub.policy_id, sub.listed_value, sub.period_days) == (
        "past_due",
        made["standard-monthly"]["id"],
        2_500,
        30,
    )
    [pending] = await events(server, "subscription.renewal_pending")
    assert (pending["data"]["policy_id"], pending["data"]["listed_value"]) == (
        made["standard-monthly"]["id"],
        2_500,
    )
    # paying it extends the same license on the new tier; nothing is applied twice
    await sandbox_action(server, renewal.id)
    row = await license_of(server, license_id)
    assert (row.policy_id, row.expires_at) == (made["standard-monthly"]["id"], boundary + 30 * DAY)
    clock.freeze(boundary + 30 * DAY)
    await renewals_tick(server)
    assert len(await events(server, "license.tier_changed")) == 1
    assert [r.amount_sats for r in await renewal_invoices(server)] == [50_000, 50_000]


async def test_perpetual_target_cancels_a_live_subscription(shop_server: Any) -> None:
    server = shop_server
    made = await shop(server, "USD", "pro-monthly", "lifetime", "standard")
    paid = await buy(server, "pro-monthly")
    clock.advance(5 * DAY)
    answer = (await quote(server, paid["key"], "lifetime")).json()
    assert answer["proration_charge_value"] == 22_500  # 30 000 - 7 500: no proration
    started = (await upgrade(server, paid["key"], "lifetime")).json()
    await sandbox_action(server, started["invoice_id"])
    sub = await subscription_of(server, paid["license_id"])
    assert sub is not None
    assert (sub.status, sub.cancellation_reason, sub.cancelled_at) == (
        "cancelled",
        "tier change to lifetime",
        T0 + 5 * DAY,
    )
    assert sub.policy_id == made["pro-monthly"]["id"]
    row = await license_of(server, paid["license_id"])
    assert (row.policy_id, row.expires_at, row.grace_seconds) == (made["lifetime"]["id"], None, 0)
    [cancelled] = await events(server, "subscription.cancelled")
    assert cancelled["data"]["reason"] == "tier change to lifetime"
    assert cancelled["data"]["subscription_id"] == sub.id
    # a cancelled subscription is never billed again
    clock.freeze(T0 + 60 * DAY)
    await renewals_tick(server)
    assert await renewal_invoices(server) == []

    comped = await buy(server, "pro-monthly")
    response = await change_tier(server, comped["license_id"], "standard", skip_payment=True)
    assert response.status_code == 200, response.text
    sub = await subscription_of(server, comped["license_id"])
    assert sub is not None
    assert (sub.status, sub.cancellation_reason) == ("cancelled", "tier change to standard")
    cancel_audits = await audit_rows(server, "subscription.cancel")
    assert cancel_audits[-1].actor_kind == "admin_api_key"
    assert cancel_audits[-1].details["actor"] == "admin"
    assert cancel_audits[-1].details["reason"] == "tier change to standard"
    last = (await events(server, "subscription.cancelled"))[-1]["data"]
    assert (last["actor"], last["reason"]) == ("admin", "tier change to standard")
    assert (await license_of(server, comped["license_id"])).expires_at is None


async def test_archived_target_only_with_skip_payment(shop_server: Any) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard", "pro")
    bought = await buy(server, "standard")
    archived = await server.admin_patch(
        f"/v1/admin/policies/{made['pro']['id']}/archived", {"archived": True}
    )
    assert archived.status_code == 200, archived.text
    message = "conflict: target policy is archived"
    assert_error(await change_tier(server, bought["license_id"], "pro"), 409, "conflict", message)
    assert_error(await quote(server, bought["key"], "pro"), 409, "conflict", message)
    assert_error(await upgrade(server, bought["key"], "pro"), 409, "conflict", message)
    comp = await change_tier(server, bought["license_id"], "pro", skip_payment=True)
    assert comp.status_code == 200, comp.text
    assert (await license_of(server, bought["license_id"])).policy_id == made["pro"]["id"]


# --- buyer errors, in the documented order -------------------------------------------------


async def test_buyer_key_failures_are_all_401(shop_server: Any) -> None:
    server = shop_server
    await shop(server, "USD", "standard", "pro")
    bought = await buy(server, "standard")
    key = bought["key"]
    ours = await signing_key(server)
    stranger = generate_private_key()
    unknown_license = encode_key(fields_of(key, license_id=uuid.uuid4()), ours)
    other_product = encode_key(fields_of(key, product_id=uuid.uuid4()), ours)
    bad_signature = encode_key(fields_of(key), stranger)
    for bad in ("", "not-a-key", "LIC1-AAAA-BBBB", bad_signature, unknown_license, other_product):
        for call in (quote, upgrade):
            assert_error(await call(server, bad, "pro"), 401, "unauthorized", "unauthorized")
            # authentication comes before the target lookup
            assert_error(await call(server, bad, "nope"), 401, "unauthorized", "unauthorized")

    suspended = await buy(server, "standard")
    response = await server.admin_post(f"/v1/admin/licenses/{suspended['license_id']}/suspend", {})
    assert response.status_code == 200, response.text
    revoked = await buy(server, "standard")
    response = await server.admin_post(f"/v1/admin/licenses/{revoked['license_id']}/revoke", {})
    assert response.status_code == 200, response.text
    for bought_key in (suspended["key"], revoked["key"]):
        for call in (quote, upgrade):
            assert_error(await call(server, bought_key, "pro"), 401, "unauthorized", "unauthorized")
    assert await count(server, TierChange) == 0


async def test_buyer_quote_checks_in_order(shop_server: Any) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard", "pro")
    other = await create_product(server, "other", price_sats=5_000)
    await create_policy(server, "other", "elite", tier_rank=9)
    bought = await buy(server, "standard")
    key = bought["key"]

    async def refused(slug: str, status: int, error: str, message: str) -> None:
        for call in (quote, upgrade):
            assert_error(await call(server, key, slug), status, error, message)

    await refused("nope", 404, "not_found", "not found: target policy 'nope'")
    # a slug of another product is not found within the license's product
    await refused("elite", 404, "not_found", "not found: target policy 'elite'")
    assert other["id"] != made["product"]["id"]
    await refused(
        "standard",
        400,
        "bad_request",
        "bad request: target policy is the same as current — no change to make",
    )
    # inactive is reported before archived
    pro_id = made["pro"]["id"]
    assert (
        await server.admin_patch(f"/v1/admin/policies/{pro_id}/archived", {"archived": True})
    ).status_code == 200
    assert (
        await server.admin_patch(f"/v1/admin/policies/{pro_id}/active", {"active": False})
    ).status_code == 200
    await refused("pro", 400, "bad_request", "bad request: target policy is inactive")
    assert (
        await server.admin_patch(f"/v1/admin/policies/{pro_id}/active", {"active": True})
    ).status_code == 200
    await refused("pro", 409, "conflict", "conflict: target policy is archived")

    # the ladder rules come after the target checks
    await create_policy(server, "acme", "unranked", price_sats_override=9_000)
    await create_policy(server, "acme", "also-one", tier_rank=1, price_sats_override=9_000)
    await refused(
        "unranked",
        400,
        "bad_request",
        "bad request: target policy is not in any tier ladder — admin must set tier_rank first",
    )
    await refused(
        "also-one",
        400,
        "bad_request",
        "bad request: sideways tier changes (same rank) are admin-only",
    )
    current = await server.admin_patch(
        f"/v1/admin/policies/{made['standard']['id']}", {"tier_rank": None}
    )
    assert current.status_code == 200, current.text
    await refused(
        "also-one",
        400,
        "bad_request",
        "bad request: current policy is not in any tier ladder — admin must set tier_rank first",
    )
    assert await count(server, TierChange) == 0


async def test_license_without_a_policy_cannot_be_quoted(shop_server: Any) -> None:
    server = shop_server
    await create_product(server, "acme", price_sats=25_000)
    issued = await issue_license(server, "acme")
    await create_policy(server, "acme", "pro", tier_rank=2, price_sats_override=75_000)
    async with server.state.db.read() as session:
        row = await session.get(License, issued["license_id"])
    assert row is not None and row.policy_id is None
    message = "bad request: license has no policy attached — admin must assign a tier first"
    for call in (quote, upgrade):
        assert_error(await call(server, issued["license_key"], "pro"), 400, "bad_request", message)
    assert_error(
        await change_tier(server, issued["license_id"], "pro"), 400, "bad_request", message
    )
    assert_error(
        await change_tier(server, issued["license_id"], "pro", skip_payment=True),
        400,
        "bad_request",
        message,
    )
    # the target is looked up first
    assert_error(
        await quote(server, issued["license_key"], "nope"),
        404,
        "not_found",
        "not found: target policy 'nope'",
    )


async def test_a_rank_upgrade_to_a_cheaper_tier_has_no_charge(shop_server: Any) -> None:
    server = shop_server
    await shop(server, "USD", "standard")
    await create_policy(server, "acme", "lite-plus", tier_rank=2, price_sats_override=1_000)
    bought = await buy(server, "standard")
    answer = (await quote(server, bought["key"], "lite-plus")).json()
    assert (answer["direction"], answer["proration_charge_value"]) == ("upgrade", 0)
    assert_error(
        await upgrade(server, bought["key"], "lite-plus"), 400, "bad_request", NO_CHARGE_BUYER
    )


async def test_upgrade_redirect_url_rules(shop_server: Any) -> None:
    server = shop_server
    await shop(server, "USD", "standard", "pro")
    bought = await buy(server, "standard")
    assert_error(
        await upgrade(server, bought["key"], "pro", redirect_url="https://evil.example/phish"),
        400,
        "bad_request",
        "bad request: redirect_url must point to an allowed origin",
    )
    assert await count(server, TierChange) == 0
    ours = "http://keysat.test/welcome-to-pro"
    started = await upgrade(server, bought["key"], "pro", redirect_url=ours)
    assert started.status_code == 200, started.text
    provider_side = await sandbox_invoice_of(server, started.json()["invoice_id"])
    assert provider_side.redirect_url == ours
    blank = await upgrade(server, bought["key"], "pro", redirect_url="  ")
    assert blank.status_code == 200, blank.text
    provider_side = await sandbox_invoice_of(server, blank.json()["invoice_id"])
    invoice_id = blank.json()["invoice_id"]
    assert provider_side.redirect_url == f"http://keysat.test/thank-you?invoice_id={invoice_id}"


async def test_rate_failure_is_502_and_writes_nothing(shop_server: Any) -> None:
    server = shop_server
    await shop(server, "USD", "standard", "pro")
    bought = await buy(server, "standard")
    dropped = await server.client.delete("/v1/admin/rates/pins/USD", headers=ADMIN)
    assert dropped.status_code == 200, dropped.text
    response = await upgrade(server, bought["key"], "pro")
    assert_error(response, 502, "upstream_error")
    assert response.json()["message"].startswith("upstream error: rate conversion failed: ")
    assert_error(await change_tier(server, bought["license_id"], "pro"), 502, "upstream_error")
    assert await count(server, TierChange) == 0
    assert await count(server, Invoice) == 1


# --- admin change-tier: gate and guards ----------------------------------------------------


async def test_change_tier_is_master_only(shop_server: Any) -> None:
    server = shop_server
    await shop(server, "USD", "standard", "pro")
    bought = await buy(server, "standard")
    path = f"/v1/admin/licenses/{bought['license_id']}/change-tier"
    body = {"to_policy_slug": "pro", "skip_payment": True}
    assert (await server.client.post(path, json=body)).status_code == 401
    # access.md 5.5: a well-formed bearer token that is not the master key is 403
    stranger = {"Authorization": "Bearer ks_" + "a" * 43}
    assert_error(await server.client.post(path, json=body, headers=stranger), 403, "forbidden")
    assert await count(server, TierChange) == 0


async def test_self_license_guard_comes_first(make_server: Callable[..., Any]) -> None:
    key = self_license_key("pro")
    server = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_LICENSE=key)
    self_id = str(parse_key(key).license_id)
    for raw in (self_id, self_id.upper()):
        response = await change_tier(server, raw, "pro", skip_payment=True)
        assert_error(response, 400, "bad_request")
        message = response.json()["message"]
        assert "re-issue" in message and "activate" in message
    product = await create_product(server, "acme", price_sats=1_000)
    basic = await create_policy(server, "acme", "basic", tier_rank=1)
    await create_policy(server, "acme", "pro", tier_rank=2)
    # On the instance that issued it, the self-license is an ordinary row of its database;
    # every spelling of its id that the route accepts is refused.
    async with server.state.db.write() as session:
        session.add(
            License(
                id=self_id,
                product_id=product["id"],
                policy_id=basic["id"],
                status="active",
                issued_at=T0,
                updated_at=T0,
            )
        )
    for raw in (self_id.replace("-", ""), f"{{{self_id}}}", f" {self_id} "):
        response = await change_tier(server, raw, "pro", skip_payment=True)
        assert_error(response, 400, "bad_request")
    assert (await license_of(server, self_id)).policy_id == basic["id"]
    assert await count(server, TierChange) == 0
    other = await issue_license(server, "acme")
    response = await change_tier(server, other["license_id"], "nope")
    assert_error(response, 404, "not_found", "not found: target policy 'nope'")


async def test_change_tier_unknown_and_revoked_licenses(shop_server: Any) -> None:
    server = shop_server
    await shop(server, "USD", "standard", "pro")
    missing = new_id()
    assert_error(
        await change_tier(server, missing, "pro"),
        404,
        "not_found",
        f"not found: license '{missing}'",
    )
    assert_error(
        await change_tier(server, "not-a-uuid", "pro"),
        404,
        "not_found",
        "not found: license 'not-a-uuid'",
    )
    bought = await buy(server, "standard")
    response = await server.admin_post(
        f"/v1/admin/licenses/{bought['license_id']}/revoke", {"reason": "chargeback"}
    )
    assert response.status_code == 200, response.text
    for fields in ({}, {"skip_payment": True}):
        # revoked is reported before the target lookup
        for slug in ("pro", "nope"):
            assert_error(
                await change_tier(server, bought["license_id"], slug, **fields), 409, "conflict"
            )
    live = await buy(server, "standard")
    assert_error(
        await change_tier(server, live["license_id"], "nope"),
        404,
        "not_found",
        "not found: target policy 'nope'",
    )
    assert_error(
        await change_tier(server, live["license_id"], "standard", skip_payment=True),
        400,
        "bad_request",
        "bad request: target policy is the same as current — no change to make",
    )
    assert await count(server, TierChange) == 0


async def test_admin_may_move_sideways_and_down_where_buyers_may_not(shop_server: Any) -> None:
    server = shop_server
    made = await shop(server, "SAT", "standard", "pro")
    await create_policy(server, "acme", "pro-eu", tier_rank=2, price_sats_override=90_000)
    bought = await buy(server, "pro")
    response = await change_tier(server, bought["license_id"], "pro-eu")
    assert response.status_code == 200, response.text
    # equal ranks: by price, 90 000 >= 75 000 is an upgrade
    assert (response.json()["proration_charge_value"], response.json()["amount_sats"]) == (
        15_000,
        15_000,
    )
    assert (await changes_of(server, bought["license_id"]))[0].direction == "upgrade"
    assert_error(
        await change_tier(server, bought["license_id"], "standard"),
        400,
        "bad_request",
        NO_CHARGE_ADMIN,
    )
    assert made["pro"]["tier_rank"] == 2


# --- provider choice (billing.md 7.6) ------------------------------------------------------


async def add_profile(server: Any, name: str) -> str:
    profile_id = new_id()
    at = clock.now()
    async with server.state.db.write() as session:
        session.add(
            MerchantProfile(
                id=profile_id, name=name, is_default=False, created_at=at, updated_at=at
            )
        )
    return profile_id


async def settle_btcpay(server: Any, fake: FakeBTCPay, invoice_id: str) -> None:
    """The fake reports our invoice settled and signs the event with the webhook of the
    provider row that created it."""
    invoice = await invoice_row(server, invoice_id)
    async with server.state.db.read() as session:
        provider = await session.get(PaymentProvider, invoice.payment_provider_id)
    assert provider is not None
    fake.set_invoice_status(invoice.provider_invoice_id, "Settled")
    response = await fake.deliver_webhook(
        invoice.provider_invoice_id, webhook_id=provider.webhook_id, client=server.client
    )
    assert response.status_code == 200, response.text


async def test_outside_sandbox_the_subscription_provider_takes_the_upgrade(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    clock.freeze(T0)
    server = await make_server(
        KEYSAT_RATE_SOURCES="none", KEYSAT_LICENSE=self_license_key("recurring_billing")
    )
    first = await connect_btcpay_row(server, fake_btcpay, network="mainnet")
    made = await shop(server, "SAT", "standard", "standard-monthly", "pro-monthly")
    bought = await purchase(server, "acme", policy_slug="standard-monthly", buyer_email=EMAIL)
    await settle_btcpay(server, fake_btcpay, bought["invoice_id"])
    license_id = (await poll(server, bought["invoice_id"]))["license_id"]
    key = (await poll(server, bought["invoice_id"]))["license_key"]
    sub = await subscription_of(server, license_id)
    assert sub is not None and sub.payment_provider_id == first

    # the product moves to another merchant profile with its own store
    other_profile = await add_profile(server, "Side shop")
    second = await connect_btcpay_row(server, fake_btcpay, profile_id=other_profile)
    moved = await server.admin_patch(
        f"/v1/admin/products/{made['product']['id']}", {"merchant_profile_id": other_profile}
    )
    assert moved.status_code == 200, moved.text

    clock.advance(15 * DAY)
    started = await upgrade(server, key, "pro-monthly")
    assert started.status_code == 200, started.text
    invoice = await invoice_row(server, started.json()["invoice_id"])
    assert (invoice.provider_kind, invoice.payment_provider_id) == ("btcpay", first)
    assert started.json()["checkout_url"].startswith(fake_btcpay.url)
    assert started.json()["amount_sats"] == 25_000  # (75 000 - 25 000) x 15 div 30
    assert fake_btcpay.invoices[invoice.provider_invoice_id].amount == "0.00025000"

    # no subscription and no purchase invoice: the product's profile chooses
    issued = await issue_license(server, "acme", policy_slug="standard")
    response = await change_tier(server, issued["license_id"], "pro-monthly")
    assert response.status_code == 200, response.text
    admin_invoice = await invoice_row(server, response.json()["invoice_id"])
    assert (admin_invoice.provider_kind, admin_invoice.payment_provider_id) == ("btcpay", second)

    await settle_btcpay(server, fake_btcpay, invoice.id)
    row = await license_of(server, license_id)
    assert row.policy_id == made["pro-monthly"]["id"]
    [event] = await events(server, "license.tier_changed")
    assert event["data"]["invoice_id"] == invoice.id
    # a redelivered webhook changes nothing
    await settle_btcpay(server, fake_btcpay, invoice.id)
    assert len(await events(server, "license.tier_changed")) == 1

    await settle_btcpay(server, fake_btcpay, admin_invoice.id)
    sub = await subscription_of(server, issued["license_id"])
    assert sub is not None and sub.payment_provider_id == second
    assert sub.current_period_end == T0 + 45 * DAY


async def test_the_original_purchase_provider_comes_before_the_profile(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    clock.freeze(T0)
    server = await make_server(KEYSAT_RATE_SOURCES="none")
    first = await connect_btcpay_row(server, fake_btcpay, network="mainnet")
    made = await shop(server, "SAT", "standard", "pro")
    bought = await purchase(server, "acme", policy_slug="standard")
    await settle_btcpay(server, fake_btcpay, bought["invoice_id"])
    key = (await poll(server, bought["invoice_id"]))["license_key"]
    other_profile = await add_profile(server, "Side shop")
    await connect_btcpay_row(server, fake_btcpay, profile_id=other_profile)
    moved = await server.admin_patch(
        f"/v1/admin/products/{made['product']['id']}", {"merchant_profile_id": other_profile}
    )
    assert moved.status_code == 200, moved.text
    started = await upgrade(server, key, "pro")
    assert started.status_code == 200, started.text
    invoice = await invoice_row(server, started.json()["invoice_id"])
    assert (invoice.provider_kind, invoice.payment_provider_id) == ("btcpay", first)


async def test_no_provider_is_503(make_server: Callable[..., Any]) -> None:
    clock.freeze(T0)
    server = await make_server(KEYSAT_RATE_SOURCES="none")
    await shop(server, "SAT", "standard", "pro")
    issued = await issue_license(server, "acme", policy_slug="standard")
    response = await upgrade(server, issued["license_key"], "pro")
    assert_error(response, 503, "btcpay_not_configured")
    assert_error(
        await change_tier(server, issued["license_id"], "pro"), 503, "btcpay_not_configured"
    )
    assert await count(server, TierChange) == 0
    assert await count(server, Invoice) == 0
    # a comp needs no provider
    comp = await change_tier(server, issued["license_id"], "pro", skip_payment=True)
    assert comp.status_code == 200, comp.text


async def test_in_sandbox_mode_an_admin_issued_license_upgrades_through_the_sandbox(
    shop_server: Any,
) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard", "pro")
    issued = await issue_license(server, "acme", policy_slug="standard")
    started = await upgrade(server, issued["license_key"], "pro")
    assert started.status_code == 200, started.text
    invoice = await invoice_row(server, started.json()["invoice_id"])
    assert (invoice.provider_kind, invoice.payment_provider_id) == ("sandbox", None)
    assert invoice.buyer_email is None
    await sandbox_action(server, invoice.id)
    assert (await license_of(server, issued["license_id"])).policy_id == made["pro"]["id"]
    polled = await poll(server, invoice.id)
    assert polled["license_id"] == issued["license_id"]
    assert list(parse_key(polled["license_key"]).entitlements) == ["standard", "pro"]


async def test_an_expired_upgrade_invoice_changes_nothing_until_a_late_payment(
    shop_server: Any,
) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard", "pro")
    bought = await buy(server, "standard")
    started = (await upgrade(server, bought["key"], "pro")).json()
    await sandbox_action(server, started["invoice_id"], "expire")
    polled = await poll(server, started["invoice_id"])
    assert (polled["status"], polled["license_key"], polled["license_id"]) == (
        "expired",
        None,
        None,
    )
    assert (await license_of(server, bought["license_id"])).policy_id == made["standard"]["id"]
    assert await events(server, "license.tier_changed") == []
    # money received wins (billing.md 4.2)
    async with server.state.db.write() as session:
        row = await session.get(SandboxInvoice, started["provider_invoice_id"])
        assert row is not None
        row.status = "settled"
    await server.state.settlement.confirm(started["invoice_id"])
    assert (await license_of(server, bought["license_id"])).policy_id == made["pro"]["id"]
    assert len(await events(server, "license.tier_changed")) == 1


# --- more application rules (billing.md 7.7-7.8) -------------------------------------------


async def add_scheduled_change(
    server: Any,
    license_id: str,
    from_policy: dict[str, Any],
    to_policy: dict[str, Any],
    effective_at: datetime,
    created_at: datetime,
    direction: str = "downgrade",
) -> str:
    """A scheduled row as an imported Keysat database may hold one (billing.md 7.8)."""
    change_id = new_id()
    async with server.state.db.write() as session:
        session.add(
            TierChange(
                id=change_id,
                license_id=license_id,
                from_policy_id=from_policy["id"],
                to_policy_id=to_policy["id"],
                direction=direction,
                listed_currency="USD",
                proration_charge_value=0,
                invoice_id=None,
                effective_at=effective_at,
                actor="admin",
                reason=None,
                created_at=created_at,
            )
        )
    return change_id


async def test_imported_scheduled_changes_apply_oldest_first_and_a_perpetual_one_stops_billing(
    shop_server: Any,
) -> None:
    server = shop_server
    made = await shop(server, "USD", "pro-monthly", "standard-monthly", "standard")
    bought = await buy(server, "pro-monthly")
    license_id = bought["license_id"]
    boundary = T0 + 30 * DAY
    # created in the opposite order of their effective times; one is not due yet
    later = await add_scheduled_change(
        server, license_id, made["standard-monthly"], made["standard"], boundary, T0
    )
    earlier = await add_scheduled_change(
        server,
        license_id,
        made["pro-monthly"],
        made["standard-monthly"],
        boundary - DAY,
        T0 + timedelta(seconds=1),
    )
    not_yet = await add_scheduled_change(
        server, license_id, made["standard"], made["pro-monthly"], boundary + DAY, T0, "upgrade"
    )
    clock.freeze(boundary)
    await renewals_tick(server)
    tier_events = [e["data"] for e in await events(server, "license.tier_changed")]
    # Both events carry the frozen clock's time, so their rows have no order to read; the
    # license ending on `standard` below is what shows the older change applied first.
    assert sorted((e["tier_change_id"], e["to_policy_slug"]) for e in tier_events) == sorted(
        [(earlier, "standard-monthly"), (later, "standard")]
    )
    assert {(e["actor"], e["applied_via"], e["invoice_id"]) for e in tier_events} == {
        ("system", "renewal_worker", None)
    }
    changes = {c.id: c for c in await changes_of(server, license_id)}
    assert changes[earlier].applied_at == changes[later].applied_at == boundary
    assert changes[not_yet].applied_at is None
    row = await license_of(server, license_id)
    assert (row.policy_id, row.expires_at, row.entitlements) == (
        made["standard"]["id"],
        None,
        ["standard"],
    )
    # the perpetual target cancelled the subscription: the worker stopped before billing
    sub = await subscription_of(server, license_id)
    assert sub is not None
    assert (sub.status, sub.cancellation_reason) == ("cancelled", "tier change to standard")
    [cancelled] = await events(server, "subscription.cancelled")
    assert (cancelled["data"]["actor"], cancelled["data"]["reason"]) == (
        "system",
        "tier change to standard",
    )
    assert await renewal_invoices(server) == []


async def test_two_renewal_ticks_at_once_apply_a_scheduled_downgrade_once(
    shop_server: Any,
) -> None:
    import asyncio

    server = shop_server
    await shop(server, "USD", "standard-monthly", "pro-monthly")
    bought = await buy(server, "pro-monthly")
    response = await change_tier(
        server, bought["license_id"], "standard-monthly", skip_payment=True
    )
    assert response.json()["applied"] is False
    clock.freeze(T0 + 30 * DAY)
    worker = server.state.jobs.job("renewals")
    await asyncio.gather(worker.tick(clock.now()), worker.tick(clock.now()))
    assert len(await events(server, "license.tier_changed")) == 1
    assert [r.amount_sats for r in await renewal_invoices(server)] == [50_000]


async def test_a_trial_upgraded_mid_trial_is_no_longer_a_trial(shop_server: Any) -> None:
    server = shop_server
    made = await shop(server, "USD", "pro-monthly")
    await create_policy(
        server,
        "acme",
        "starter-trial",
        tier_rank=1,
        is_recurring=True,
        renewal_period_days=30,
        trial_days=14,
        grace_period_days=7,
        entitlements=["standard"],
    )
    trial = await purchase(server, "acme", policy_slug="starter-trial", buyer_email=EMAIL)
    key = trial["license_key"]
    row = await license_of(server, trial["license_id"])
    assert row.is_trial is True and row.expires_at == T0 + 14 * DAY
    clock.advance(4 * DAY)
    # 10 whole days left of a 30-day period: 5 000 x 10 div 30
    started = await upgrade(server, key, "pro-monthly")
    assert started.status_code == 200, started.text
    assert started.json()["proration_charge_value"] == 1_666
    await sandbox_action(server, started.json()["invoice_id"])
    row = await license_of(server, trial["license_id"])
    assert (row.policy_id, row.is_trial) == (made["pro-monthly"]["id"], False)
    assert row.trial_started_at == T0  # never cleared
    assert row.expires_at == T0 + 14 * DAY
    upgraded = (await poll(server, started.json()["invoice_id"]))["license_key"]
    checked = await validate(server, upgraded)
    assert checked["ok"] is True and "is_trial" not in checked


async def test_buyer_downgrade_to_a_recurring_tier_without_subscription_is_403(
    shop_server: Any,
) -> None:
    server = shop_server
    await shop(server, "USD", "pro", "standard-monthly")
    bought = await buy(server, "pro")
    answer = (await quote(server, bought["key"], "standard-monthly")).json()
    assert (answer["direction"], answer["proration_charge_value"], answer["effective_at"]) == (
        "downgrade",
        0,
        "immediate",
    )
    assert (answer["next_renewal_charge"], answer["next_renewal_period_days"]) == (2_500, 30)
    assert_error(await upgrade(server, bought["key"], "standard-monthly"), 403, "forbidden")


async def test_a_tiny_charge_is_invoiced_at_one_sat(shop_server: Any) -> None:
    server = shop_server
    await shop(server, "USD", "standard")
    await create_policy(server, "acme", "standard-plus", tier_rank=2, price_sats_override=2_501)
    bought = await buy(server, "standard")
    await pin_usd(server, "1000000000")  # 1 cent = 0.001 sat
    started = await upgrade(server, bought["key"], "standard-plus")
    assert started.status_code == 200, started.text
    assert (started.json()["proration_charge_value"], started.json()["amount_sats"]) == (1, 1)
    invoice = await invoice_row(server, started.json()["invoice_id"])
    assert (invoice.amount_sats, invoice.listed_value) == (1, 1)


async def test_comp_to_a_recurring_tier_with_a_duration_and_no_subscription(
    shop_server: Any,
) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard")
    await create_policy(
        server,
        "acme",
        "pro-monthly-60",
        tier_rank=2,
        is_recurring=True,
        renewal_period_days=30,
        duration_seconds=60 * 86_400,
        entitlements=["pro"],
    )
    issued = await issue_license(server, "acme", policy_slug="standard")
    clock.advance(timedelta(hours=2))
    response = await change_tier(server, issued["license_id"], "pro-monthly-60", skip_payment=True)
    assert response.status_code == 200, response.text
    row = await license_of(server, issued["license_id"])
    assert row.expires_at == T0 + timedelta(hours=2) + 60 * DAY
    assert parse_key(response.json()["license_key"]).expires_at == unix(row.expires_at)
    assert await subscription_of(server, issued["license_id"]) is None
    assert made["standard"]["is_recurring"] is False


async def test_polling_an_applied_upgrade_of_a_revoked_license(shop_server: Any) -> None:
    server = shop_server
    await shop(server, "USD", "standard", "pro")
    bought = await buy(server, "standard")
    started = (await upgrade(server, bought["key"], "pro")).json()
    await sandbox_action(server, started["invoice_id"])
    response = await server.admin_post(f"/v1/admin/licenses/{bought['license_id']}/revoke", {})
    assert response.status_code == 200, response.text
    polled = await poll(server, started["invoice_id"])
    assert (polled["status"], polled["license_id"], polled["license_key"]) == (
        "settled",
        bought["license_id"],
        None,
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"to_policy_slug": 5},
        {"to_policy_slug": "pro", "skip_payment": "yes"},
        {"to_policy_slug": "pro", "reason": "x" * 1001},
    ],
)
async def test_change_tier_body_validation(shop_server: Any, body: dict[str, Any]) -> None:
    server = shop_server
    await shop(server, "USD", "standard", "pro")
    issued = await issue_license(server, "acme", policy_slug="standard")
    response = await server.admin_post(
        f"/v1/admin/licenses/{issued['license_id']}/change-tier", body
    )
    assert_error(response, 400, "bad_request")
    assert await count(server, TierChange) == 0


async def test_a_paid_upgrade_supersedes_a_pending_scheduled_downgrade(shop_server: Any) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard-monthly", "pro-monthly", "pro-annual")
    bought = await buy(server, "pro-monthly")
    clock.advance(5 * DAY)
    scheduled = await change_tier(
        server, bought["license_id"], "standard-monthly", skip_payment=True
    )
    assert scheduled.json()["applied"] is False
    started = await upgrade(server, bought["key"], "pro-annual")
    assert started.status_code == 200, started.text
    await sandbox_action(server, started.json()["invoice_id"])
    assert (await license_of(server, bought["license_id"])).policy_id == made["pro-annual"]["id"]
    clock.freeze(T0 + 30 * DAY)
    await renewals_tick(server)
    assert (await license_of(server, bought["license_id"])).policy_id == made["pro-annual"]["id"]
    [renewal] = await renewal_invoices(server)
    assert renewal.listed_value == 75_000


async def test_a_paid_change_reactivates_a_lapsed_subscription_with_a_new_cycle(
    shop_server: Any,
) -> None:
    server = shop_server
    made = await shop(server, "USD", "standard-monthly", "pro-monthly")
    bought = await buy(server, "standard-monthly")
    clock.freeze(T0 + 30 * DAY)
    await renewals_tick(server)
    clock.freeze(T0 + 37 * DAY)
    await renewals_tick(server)
    sub = await subscription_of(server, bought["license_id"])
    assert sub is not None and sub.status == "lapsed"
    assert (await validate(server, bought["key"]))["reason"] == "expired"
    # an expired license still authenticates for the buyer routes: it is not revoked
    clock.freeze(T0 + 40 * DAY)
    answer = (await quote(server, bought["key"], "pro-monthly")).json()
    assert answer["proration_charge_value"] == 7_500
    started = (await upgrade(server, bought["key"], "pro-monthly")).json()
    await sandbox_action(server, started["invoice_id"])
    sub = await subscription_of(server, bought["license_id"])
    assert sub is not None
    assert (sub.status, sub.policy_id, sub.listed_value, sub.lapsed_at) == (
        "active",
        made["pro-monthly"]["id"],
        7_500,
        None,
    )
    assert (sub.current_period_start, sub.current_period_end) == (T0 + 40 * DAY, T0 + 70 * DAY)
    assert sub.open_invoice_id is None
    cycles = await cycles_of(server, sub.id)
    assert [c.cycle_number for c in cycles] == [1, 2, 3]
    assert (cycles[2].invoice_id, cycles[2].paid_at) == (started["invoice_id"], T0 + 40 * DAY)
    assert cycles[1].paid_at is None
    checked = await validate(server, bought["key"])
    assert checked["ok"] is True and checked["entitlements"] == ["standard", "pro"]
    assert checked["expires_at"] == format_ts(T0 + 70 * DAY)


async def test_concurrent_confirmations_of_one_upgrade_apply_it_once(shop_server: Any) -> None:
    import asyncio

    server = shop_server
    await shop(server, "USD", "standard", "pro")
    bought = await buy(server, "standard")
    started = (await upgrade(server, bought["key"], "pro")).json()
    async with server.state.db.write() as session:
        row = await session.get(SandboxInvoice, started["provider_invoice_id"])
        assert row is not None
        row.status = "settled"
    outcomes = await asyncio.gather(
        *(server.state.settlement.confirm(started["invoice_id"]) for _ in range(4))
    )
    assert sum(1 for outcome in outcomes if outcome is not None and outcome.changed) == 1
    assert len(await events(server, "license.tier_changed")) == 1
    assert len(await audit_rows(server, "subscription.upgrade.applied")) == 1
    assert await count(server, License) == 1
