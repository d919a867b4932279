"""The renewal worker against real provider protocols and in several processes: failure
backoff with BTCPay down (billing.md 6.5, 12.4 F8), rate failures, Zaprite saved cards and
auto-charge (payments.md 5.6, billing.md 6.4 step 9), the sandbox test clock (billing.md
9.3, admin-api.md 9.3, 12.4 F11) and two processes ticking at once (12.6 K3)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fakes.btcpay import FakeBTCPay
from fakes.zaprite import FakeZaprite
from keysat.clock import clock
from keysat.operator.service import default_profile
from keysat.payments.models import PaymentProvider
from keysat.wire import new_id
from subscription_support import (
    CENTS,
    SATS,
    T0,
    Subscribed,
    at,
    cycles,
    data_of,
    license_row,
    monthly_shop,
    renewal_invoices,
    start_trial,
    subscribe,
    subscription_of,
    subscription_row,
    tick,
    ts,
    validate,
)
from support import (
    ADMIN,
    assert_error,
    audit_rows,
    connect_btcpay_row,
    connect_zaprite_row,
    events,
    invoice_row,
    poll,
    purchase,
    self_license_key,
)

INVOICE_CREATE = r"^/api/v1/stores/[^/]+/invoices$"
CANCEL = "/v1/subscriptions/cancel"
MINUTE = timedelta(minutes=1)


# --- F8: the provider is down at every attempt ----------------------------------------------


async def btcpay_subscriber(make_server: Any, fake: FakeBTCPay) -> tuple[Any, str, str]:
    """Outside sandbox mode: a BTCPay store, a SAT monthly policy, one paid subscription.
    Returns the server, the license id and the subscription id."""
    server = await make_server(KEYSAT_LICENSE=self_license_key("recurring_billing"))
    clock.freeze(T0)
    await connect_btcpay_row(server, fake, network="mainnet")
    await monthly_shop(server, usd=False)
    bought = await purchase(server, "acme", policy_slug="monthly", buyer_email="ada@example.com")
    fake.set_invoice_status(bought["btcpay_invoice_id"], "Settled")
    response = await fake.deliver_webhook(bought["btcpay_invoice_id"], client=server.client)
    assert response.status_code == 200, response.text
    license_id = (await poll(server, bought["invoice_id"]))["license_id"]
    sub = await subscription_of(server, license_id)
    assert sub.provider_kind == "btcpay" and sub.payment_provider_id is not None
    return server, license_id, sub.id


def creates(fake: FakeBTCPay) -> int:
    return len(fake.api_requests("POST", INVOICE_CREATE))


async def test_f8_backoff_with_the_provider_down_at_every_attempt(
    make_server: Any, fake_btcpay: FakeBTCPay
) -> None:
    server, license_id, sub_id = await btcpay_subscriber(make_server, fake_btcpay)
    before = creates(fake_btcpay)
    fake_btcpay.fail_next("POST", INVOICE_CREATE, count=1_000, status=503)
    t = at(1, 31)
    attempts = [t, t + 5 * MINUTE, t + 35 * MINUTE, t + timedelta(hours=2, minutes=35)]
    attempts.append(t + timedelta(hours=8, minutes=35))
    waits = [5 * MINUTE, 30 * MINUTE, timedelta(hours=2), timedelta(hours=6), timedelta(hours=12)]
    for number, (attempt, wait) in enumerate(zip(attempts, waits, strict=True), start=1):
        if number > 1:
            # A tick one second early does nothing.
            await tick(server, attempt - timedelta(seconds=1))
            assert creates(fake_btcpay) - before == number - 1
        await tick(server, attempt)
        assert creates(fake_btcpay) - before == number
        row = await subscription_row(server, sub_id)
        assert (row.status, row.consecutive_failures) == ("past_due", number)
        assert row.last_renewal_attempt_at == attempt
        assert row.next_attempt_at == attempt + wait
        assert row.open_invoice_id is None
    assert (await subscription_row(server, sub_id)).next_attempt_at == t + timedelta(
        hours=20, minutes=35
    )

    # After the fifth failure: no more attempts, however long we wait...
    for moment in (t + timedelta(hours=20, minutes=35), at(2, 3), at(2, 6, 23, 59, 59)):
        await tick(server, moment)
    assert creates(fake_btcpay) - before == 5
    assert await renewal_invoices(server) == []
    assert await events(server, "subscription.renewal_pending") == []
    assert (await subscription_row(server, sub_id)).status == "past_due"
    # ...and the lapse at the grace deadline.
    await tick(server, at(2, 7))
    row = await subscription_row(server, sub_id)
    assert (row.status, row.lapsed_at, row.consecutive_failures) == ("lapsed", at(2, 7), 5)
    assert len(await events(server, "subscription.lapsed")) == 1
    assert (await license_row(server, license_id)).expires_at == at(1, 31)


async def test_provider_back_after_failures_invoices_and_payment_resets_the_count(
    make_server: Any, fake_btcpay: FakeBTCPay
) -> None:
    server, license_id, sub_id = await btcpay_subscriber(make_server, fake_btcpay)
    fake_btcpay.fail_next("POST", INVOICE_CREATE, count=2, status=500)
    t = at(1, 31)
    await tick(server, t)
    await tick(server, t + 5 * MINUTE)
    await tick(server, t + 35 * MINUTE)
    [invoice] = await renewal_invoices(server)
    assert (invoice.provider_kind, invoice.cycle_number) == ("btcpay", 2)
    assert invoice.expires_at == at(2, 7) and invoice.amount_sats == SATS
    assert invoice.payment_provider_id is not None
    # BTCPay gets the grace deadline as expirationMinutes, counted from now.
    request = fake_btcpay.api_requests("POST", INVOICE_CREATE)[-1].json()
    assert request["checkout"]["expirationMinutes"] == 7 * 24 * 60 - 35
    assert (request["amount"], request["currency"]) == ("0.00050000", "BTC")
    assert request["metadata"]["orderId"] == invoice.id
    row = await subscription_row(server, sub_id)
    assert (row.status, row.open_invoice_id, row.consecutive_failures) == (
        "past_due",
        invoice.id,
        2,
    )
    [pending] = data_of(await events(server, "subscription.renewal_pending"))
    assert pending["due_at"] == ts(at(2, 7)) and pending["cycle_start_at"] == ts(t)

    fake_btcpay.set_invoice_status(invoice.provider_invoice_id, "Settled")
    clock.freeze(at(2, 1))
    response = await fake_btcpay.deliver_webhook(invoice.provider_invoice_id, client=server.client)
    assert response.status_code == 200
    row = await subscription_row(server, sub_id)
    assert (row.status, row.consecutive_failures) == ("active", 0)
    assert (await license_row(server, license_id)).expires_at == at(3, 2)


async def test_reconciler_settles_a_renewal_days_after_it_was_created(
    make_server: Any, fake_btcpay: FakeBTCPay
) -> None:
    """billing.md 5: renewal invoices stay covered by their expiry, past the 72-hour
    creation window; the webhook was lost, the reconciler reads BTCPay."""
    server, license_id, sub_id = await btcpay_subscriber(make_server, fake_btcpay)
    await tick(server, at(1, 31))
    [invoice] = await renewal_invoices(server)
    fake_btcpay.set_invoice_status(invoice.provider_invoice_id, "Settled")
    clock.freeze(at(2, 5))
    response = await server.admin_post("/v1/admin/jobs/reconciler/run")
    assert response.status_code == 200, response.text
    assert (await invoice_row(server, invoice.id)).settled_at == at(2, 5)
    assert (await license_row(server, license_id)).expires_at == at(3, 2)
    assert (await subscription_row(server, sub_id)).status == "active"
    assert len(await events(server, "subscription.renewed")) == 1


async def test_rate_failure_counts_as_a_failed_attempt(make_server: Any) -> None:
    """billing.md 6.4 step 3: no rate, no invoice; the subscription backs off."""
    server = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_SOURCES="none")
    clock.freeze(T0)
    await monthly_shop(server)
    sub = await subscribe(server)
    response = await server.client.delete("/v1/admin/rates/pins/USD", headers=ADMIN)
    assert response.status_code == 200, response.text
    await tick(server, at(1, 31))
    assert await renewal_invoices(server) == []
    row = await subscription_row(server, sub.subscription_id)
    assert (row.status, row.consecutive_failures) == ("past_due", 1)
    assert row.next_attempt_at == at(1, 31) + 5 * MINUTE


async def test_no_provider_at_renewal_counts_as_a_failed_attempt(make_server: Any) -> None:
    """A trial started with no provider at all; at its end none can be resolved."""
    server = await make_server(KEYSAT_LICENSE=self_license_key("recurring_billing"))
    clock.freeze(T0)
    await monthly_shop(server, usd=False, trial_days=14)
    trial = await start_trial(server)
    await tick(server, at(1, 15))
    assert await renewal_invoices(server) == []
    row = await subscription_row(server, trial.subscription_id)
    assert (row.status, row.consecutive_failures, row.provider_kind) == ("past_due", 1, None)
    assert row.next_attempt_at == at(1, 15) + 5 * MINUTE


# --- Zaprite: saved card and auto-charge ------------------------------------------------------


async def zaprite_subscriber(
    make_server: Any,
    fake: FakeZaprite,
    *,
    card_expires: datetime | None = None,
    usd: bool = False,
    save_card: bool = True,
) -> tuple[Any, str, str]:
    """Outside sandbox mode: a recurring purchase paid through Zaprite with a card saved at
    checkout. Returns the server, the license id and the subscription id."""
    server = await make_server(
        KEYSAT_LICENSE=self_license_key("zaprite_payments", "recurring_billing"),
        KEYSAT_RATE_SOURCES="none",
    )
    clock.freeze(T0)
    provider_id = await connect_zaprite_row(server, fake)
    await monthly_shop(server, usd=usd)
    bought = await purchase(server, "acme", policy_slug="monthly", buyer_email="ada@example.com")
    order_id = bought["btcpay_invoice_id"]
    if save_card:
        fake.attach_payment_profile_to_order(order_id, "pp_card_1", "card", card_expires)
    fake.set_order_status(order_id, "PAID")
    response = await fake.post_webhook(
        f"/v1/zaprite/webhook/{provider_id}", order_id=order_id, client=server.client
    )
    assert response.status_code == 200, response.text
    license_id = (await poll(server, bought["invoice_id"]))["license_id"]
    sub = await subscription_of(server, license_id)
    return server, license_id, sub.id


def charges(fake: FakeZaprite) -> list[dict[str, Any]]:
    return [r.json() for r in fake.requests if r.method == "POST" and r.path == "/v1/orders/charge"]


async def test_saved_card_is_captured_after_the_first_settlement(
    make_server: Any, fake_zaprite: FakeZaprite
) -> None:
    expiry = datetime(2028, 5, 31, tzinfo=UTC)
    server, license_id, sub_id = await zaprite_subscriber(
        make_server, fake_zaprite, card_expires=expiry
    )
    row = await subscription_row(server, sub_id)
    assert row.provider_kind == "zaprite" and row.payment_provider_id is not None
    response = await server.admin_get("/v1/admin/subscriptions", license_id=license_id)
    [listed] = response.json()["subscriptions"]
    assert (listed["provider_kind"], listed["payment_provider_id"]) == (
        "zaprite",
        row.payment_provider_id,
    )
    [contact_id] = list(fake_zaprite.contacts)
    assert row.zaprite_contact_id == contact_id
    assert row.zaprite_payment_profile_id == "pp_card_1"
    assert row.zaprite_payment_profile_method == "card"
    assert row.zaprite_payment_profile_expires_at == expiry


@pytest.mark.parametrize("usd", [False, True])
async def test_renewal_with_a_saved_card_is_auto_charged(
    make_server: Any, fake_zaprite: FakeZaprite, usd: bool
) -> None:
    server, license_id, sub_id = await zaprite_subscriber(make_server, fake_zaprite, usd=usd)
    await tick(server, at(1, 31))
    [invoice] = await renewal_invoices(server)
    order = fake_zaprite.order(invoice.id)
    # Zaprite is asked for the listed price, so the card pays exactly that (6.4 step 7).
    assert (order["amount"], order["currency"]) == ((CENTS, "USD") if usd else (SATS, "BTC"))
    assert invoice.amount_sats == SATS
    assert charges(fake_zaprite) == [
        {"orderId": invoice.provider_invoice_id, "paymentProfileId": "pp_card_1"}
    ]
    assert (await invoice_row(server, invoice.id)).status == "settled"
    row = await subscription_row(server, sub_id)
    assert (row.status, row.open_invoice_id, row.current_period_end) == ("active", None, at(3, 2))
    assert (await license_row(server, license_id)).expires_at == at(3, 2)
    [initiated] = data_of(await events(server, "subscription.auto_charge_initiated"))
    assert initiated == {
        "subscription_id": sub_id,
        "license_id": license_id,
        "product_id": row.product_id,
        "policy_id": row.policy_id,
        "invoice_id": invoice.id,
        "amount_sats": SATS,
        "listed_currency": "USD" if usd else "SAT",
        "listed_value": CENTS if usd else SATS,
        "cycle_number": 2,
        "cycle_start_at": ts(at(1, 31)),
        "cycle_end_at": ts(at(3, 2)),
    }
    [renewed] = data_of(await events(server, "subscription.renewed"))
    assert renewed["invoice_id"] == invoice.id and renewed["expires_at"] == ts(at(3, 2))
    assert await events(server, "subscription.renewal_pending") == []
    assert await events(server, "subscription.auto_charge_failed") == []


async def test_failing_charge_is_recorded_then_the_manual_path(
    make_server: Any, fake_zaprite: FakeZaprite
) -> None:
    server, license_id, sub_id = await zaprite_subscriber(make_server, fake_zaprite)
    fake_zaprite.set_next_charge(fail_status=402)
    await tick(server, at(1, 31))
    [invoice] = await renewal_invoices(server)
    assert (await invoice_row(server, invoice.id)).status == "pending"
    [audit] = await audit_rows(server, "subscription.auto_charge_failed")
    assert audit.actor_kind == "renewal_worker"
    assert (audit.target_kind, audit.target_id) == ("subscription", sub_id)
    assert set(audit.details) == {"invoice_id", "provider_invoice_id", "error"}
    assert audit.details["invoice_id"] == invoice.id
    assert audit.details["provider_invoice_id"] == invoice.provider_invoice_id
    assert "402" in audit.details["error"]
    [failed] = data_of(await events(server, "subscription.auto_charge_failed"))
    assert failed == {
        "subscription_id": sub_id,
        "license_id": license_id,
        "invoice_id": invoice.id,
        "reason": audit.details["error"],
    }
    [pending] = data_of(await events(server, "subscription.renewal_pending"))
    assert pending["invoice_id"] == invoice.id and pending["due_at"] == ts(at(2, 7))
    row = await subscription_row(server, sub_id)
    assert (row.status, row.open_invoice_id) == ("past_due", invoice.id)
    assert await events(server, "subscription.auto_charge_initiated") == []


async def test_unsettled_charge_falls_back_to_the_manual_path(
    make_server: Any, fake_zaprite: FakeZaprite
) -> None:
    server, _, sub_id = await zaprite_subscriber(make_server, fake_zaprite)
    fake_zaprite.set_next_charge(status="PROCESSING")
    await tick(server, at(1, 31))
    assert len(charges(fake_zaprite)) == 1
    assert await audit_rows(server, "subscription.auto_charge_failed") == []
    assert len(await events(server, "subscription.renewal_pending")) == 1
    assert await events(server, "subscription.auto_charge_initiated") == []
    assert (await subscription_row(server, sub_id)).status == "past_due"


async def test_an_expired_saved_card_is_not_charged(
    make_server: Any, fake_zaprite: FakeZaprite
) -> None:
    server, _, _ = await zaprite_subscriber(
        make_server, fake_zaprite, card_expires=datetime(2026, 1, 20, tzinfo=UTC)
    )
    await tick(server, at(1, 31))
    assert charges(fake_zaprite) == []
    assert len(await events(server, "subscription.renewal_pending")) == 1


async def test_without_a_saved_card_the_renewal_is_manual(
    make_server: Any, fake_zaprite: FakeZaprite
) -> None:
    server, _, sub_id = await zaprite_subscriber(make_server, fake_zaprite, save_card=False)
    assert (await subscription_row(server, sub_id)).zaprite_payment_profile_id is None
    await tick(server, at(1, 31))
    assert charges(fake_zaprite) == []
    [pending] = data_of(await events(server, "subscription.renewal_pending"))
    [invoice] = await renewal_invoices(server)
    assert (
        pending["checkout_url"]
        == invoice.checkout_url
        == fake_zaprite.order(invoice.id)["checkoutUrl"]
    )


# --- F11 and the sandbox test clock ------------------------------------------------------------

ADVANCE = "/v1/admin/sandbox/clock/advance"
RAN = ["renewals", "reconciler", "redemption_reaper"]


@pytest.fixture
async def sandbox_shop(make_server: Any) -> Any:
    server = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_SOURCES="none")
    clock.freeze(T0)
    await monthly_shop(server, trial_days=14)
    return server


async def test_f11_trial_through_the_sandbox_clock(sandbox_shop: Any) -> None:
    server = sandbox_shop
    trial = await start_trial(server)
    response = await server.admin_post(ADVANCE, {"days": 14})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"now", "real_now", "offset_seconds", "ran"}
    assert (body["now"], body["offset_seconds"], body["ran"]) == (ts(at(1, 15)), 14 * 86_400, RAN)

    [invoice] = await renewal_invoices(server)
    assert (invoice.cycle_number, invoice.provider_kind, invoice.amount_sats) == (
        2,
        "sandbox",
        SATS,
    )
    assert invoice.created_at == at(1, 15) and invoice.expires_at == at(1, 22)
    [pending] = await events(server, "subscription.renewal_pending")
    assert pending["timestamp"] == ts(at(1, 15))
    assert pending["data"]["is_first_paid_cycle"] is True
    assert (await subscription_row(server, trial.subscription_id)).status == "past_due"
    answer = await validate(server, trial.license_key)
    assert answer["ok"] is True and answer["in_grace_period"] is True

    response = await server.admin_post(ADVANCE, {"days": 7})
    assert response.status_code == 200
    assert response.json()["now"] == ts(at(1, 22))
    row = await subscription_row(server, trial.subscription_id)
    assert (row.status, row.lapsed_at) == ("lapsed", at(1, 22))
    assert len(await events(server, "subscription.lapsed")) == 1
    # The reconciler tick of the same call saw the sandbox invoice expire.
    assert (await invoice_row(server, invoice.id)).status == "expired"
    answer = await validate(server, trial.license_key)
    assert (answer["ok"], answer["reason"]) == (False, "expired")
    assert len(await renewal_invoices(server)) == 1

    [first, second] = await audit_rows(server, "sandbox.clock_advance")
    for audit in (first, second):
        assert (audit.target_kind, audit.target_id) == ("setting", "sandbox_clock_offset_seconds")
        assert audit.actor_kind == "admin_api_key"
    assert first.details == {"seconds": 14 * 86_400, "offset_seconds": 14 * 86_400}
    assert second.details == {"seconds": 7 * 86_400, "offset_seconds": 21 * 86_400}


async def test_sandbox_clock_get_advance_by_seconds_and_reset(sandbox_shop: Any) -> None:
    server = sandbox_shop
    response = await server.admin_get("/v1/admin/sandbox/clock")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"now", "real_now", "offset_seconds"}
    assert (body["now"], body["offset_seconds"]) == (ts(T0), 0)
    real = datetime.fromisoformat(body["real_now"])
    assert abs(real - datetime.now(UTC)) < timedelta(minutes=1)

    response = await server.admin_post(ADVANCE, {"seconds": 90})
    assert response.status_code == 200
    assert response.json()["offset_seconds"] == 90
    response = await server.admin_post(ADVANCE, {"seconds": 31_622_400})
    assert response.status_code == 200
    assert response.json()["offset_seconds"] == 31_622_490
    response = await server.admin_post(ADVANCE, {"days": 366})
    assert response.status_code == 200
    assert response.json()["offset_seconds"] == 31_622_490 + 366 * 86_400
    assert clock.now() == T0 + timedelta(seconds=31_622_490 + 366 * 86_400)

    response = await server.admin_post("/v1/admin/sandbox/clock/reset")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"now", "real_now", "offset_seconds"}
    assert (body["now"], body["offset_seconds"]) == (ts(T0), 0)
    assert (await server.admin_get("/v1/admin/sandbox/clock")).json()["offset_seconds"] == 0
    [reset] = await audit_rows(server, "sandbox.clock_reset")
    assert (reset.target_kind, reset.target_id, reset.details) == (
        "setting",
        "sandbox_clock_offset_seconds",
        {},
    )
    assert len(await audit_rows(server, "sandbox.clock_advance")) == 3


BAD_ADVANCES: list[Any] = [
    {},
    {"seconds": 60, "days": 1},
    {"seconds": 0},
    {"seconds": -5},
    {"seconds": 31_622_401},
    {"days": 0},
    {"days": 367},
    {"days": "one"},
    {"hours": 3},
    [1],
]


async def test_sandbox_clock_advance_refuses_bad_bodies(sandbox_shop: Any) -> None:
    for body in BAD_ADVANCES:
        response = await sandbox_shop.admin_post(ADVANCE, body)
        assert response.status_code == 400, (body, response.text)
        assert_error(response, 400, "bad_request")
    response = await sandbox_shop.client.post(
        ADVANCE, content=b"{", headers={**ADMIN, "content-type": "application/json"}
    )
    assert_error(response, 400, "bad_request")
    assert (await sandbox_shop.admin_get("/v1/admin/sandbox/clock")).json()["offset_seconds"] == 0
    assert await audit_rows(sandbox_shop, "sandbox.clock_advance") == []
    # Without admin credentials: 401.
    assert (await sandbox_shop.client.post(ADVANCE, json={"days": 1})).status_code == 401
    assert (await sandbox_shop.client.get("/v1/admin/sandbox/clock")).status_code == 401


async def test_sandbox_clock_is_404_outside_sandbox_mode(server: Any) -> None:
    for method, path, body in (
        ("GET", "/v1/admin/sandbox/clock", None),
        ("POST", ADVANCE, {"days": 1}),
        ("POST", "/v1/admin/sandbox/clock/reset", None),
    ):
        response = await server.client.request(method, path, json=body, headers=ADMIN)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"] == "not_found"
    assert await audit_rows(server, "sandbox.clock_advance") == []
    assert clock.now() - clock.real_now() < timedelta(seconds=1)


# --- K3: two processes tick at once ------------------------------------------------------------

SUBSCRIBERS = 6


async def test_k3_two_processes_ticking_at_once_invoice_and_lapse_each_once(
    make_server: Any,
) -> None:
    first = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_SOURCES="none")
    second = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_SOURCES="none")
    clock.freeze(T0)
    await monthly_shop(first)
    subs = [await subscribe(first, f"buyer{index}@example.com") for index in range(SUBSCRIBERS)]
    assert len(await renewal_invoices(second)) == 0

    for round_at in (at(1, 31), at(1, 31, 0, 0, 1)):
        clock.freeze(round_at)
        await asyncio.gather(
            first.state.jobs.job("renewals").tick(round_at),
            second.state.jobs.job("renewals").tick(round_at),
        )
    invoices = await renewal_invoices(first)
    assert sorted(i.subscription_id for i in invoices) == sorted(s.subscription_id for s in subs)
    assert {i.cycle_number for i in invoices} == {2}
    assert len(await events(first, "subscription.renewal_pending")) == SUBSCRIBERS
    for sub in subs:
        row = await subscription_row(first, sub.subscription_id)
        assert row.status == "past_due" and row.open_invoice_id is not None
        assert [c.cycle_number for c in await cycles(first, sub.subscription_id)] == [1, 2]

    clock.freeze(at(2, 7))
    await asyncio.gather(
        first.state.jobs.job("renewals").tick(at(2, 7)),
        second.state.jobs.job("renewals").tick(at(2, 7)),
    )
    lapsed = data_of(await events(second, "subscription.lapsed"))
    assert sorted(e["subscription_id"] for e in lapsed) == sorted(s.subscription_id for s in subs)
    for sub in subs:
        assert (await subscription_row(first, sub.subscription_id)).status == "lapsed"
    assert len(await renewal_invoices(first)) == SUBSCRIBERS
    # A day later nothing more happens in either process.
    clock.freeze(at(2, 8))
    await asyncio.gather(
        first.state.jobs.job("renewals").tick(at(2, 8)),
        second.state.jobs.job("renewals").tick(at(2, 8)),
    )
    assert len(await events(first, "subscription.lapsed")) == SUBSCRIBERS
    assert len(await renewal_invoices(first)) == SUBSCRIBERS


# --- a subscription ended while its renewal attempt is in flight ----------------------------


class GatedBTCPay:
    """A stand-in BTCPay create-invoice endpoint served by the test's own event loop. While
    `hold` is set, a request is parked until `release()`: the renewal worker can be caught
    between its claim and its record step, deterministically and without sleeping."""

    def __init__(self) -> None:
        self.hold = False
        self.status = 200
        self.paths: list[str] = []
        self.arrived = asyncio.Event()
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def release(self, status: int) -> None:
        self.status = status
        self._release.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        await reader.readexactly(length)
        self.paths.append(head.split(" ")[1])
        if self.hold:
            self.arrived.set()
            await self._release.wait()
        number = len(self.paths)
        if self.status == 200:
            answer = {"id": f"gated{number}", "checkoutLink": f"{self.url}/i/gated{number}"}
        else:
            answer = {"code": "down", "message": "store unavailable"}
        body = json.dumps(answer).encode()
        writer.write(
            f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def gate() -> AsyncIterator[GatedBTCPay]:
    gated = GatedBTCPay()
    await gated.start()
    yield gated
    await gated.stop()


async def gated_trial(make_server: Any, gate: GatedBTCPay) -> tuple[Any, Subscribed]:
    """Outside sandbox mode: a 14-day trial, then the gated store as the only provider."""
    server = await make_server(KEYSAT_LICENSE=self_license_key("recurring_billing"))
    clock.freeze(T0)
    await monthly_shop(server, usd=False, trial_days=14)
    trial = await start_trial(server)
    async with server.state.db.write() as session:
        profile = await default_profile(session)
        session.add(
            PaymentProvider(
                id=new_id(),
                merchant_profile_id=profile.id,
                kind="btcpay",
                label="gated",
                api_key="gated-key",
                base_url=gate.url,
                store_id="gatedstore",
                network="mainnet",
                connected_at=T0,
                updated_at=T0,
            )
        )
    return server, trial


@pytest.mark.parametrize("status", [200, 500])
async def test_cancel_during_a_renewal_attempt_stays_cancelled(
    make_server: Any, gate: GatedBTCPay, status: int
) -> None:
    """billing.md 6.2: cancelled is never picked up (nor invoiced) by the worker, even when
    the cancel lands while the provider is being asked for the renewal invoice."""
    server, trial = await gated_trial(make_server, gate)
    gate.hold = True
    clock.freeze(at(1, 15))
    attempt = asyncio.create_task(server.state.jobs.job("renewals").tick(at(1, 15)))
    await gate.arrived.wait()
    response = await server.client.post(CANCEL, json={"license_key": trial.license_key})
    assert response.json()["status"] == "cancelled"
    gate.release(status)
    await attempt

    row = await subscription_row(server, trial.subscription_id)
    assert (row.status, row.cancelled_at, row.next_attempt_at) == ("cancelled", at(1, 15), None)
    assert (row.open_invoice_id, row.consecutive_failures) == (None, 0)
    assert await renewal_invoices(server) == []
    assert await events(server, "subscription.renewal_pending") == []
    gate.hold = False
    await tick(server, at(1, 16))
    assert len(gate.paths) == 1


async def test_lapse_during_a_late_renewal_attempt_lapses_once(
    make_server: Any, gate: GatedBTCPay
) -> None:
    """Another process lapses the subscription while this one's attempt is in flight: one
    `subscription.lapsed`, and the subscription stays lapsed (billing.md 6.6, 12.6 K3)."""
    server, trial = await gated_trial(make_server, gate)
    other = await make_server(KEYSAT_LICENSE=self_license_key("recurring_billing"))
    gate.status = 500
    await tick(server, at(1, 15))  # the first attempt fails: past_due, retry at 00:05
    assert (await subscription_row(server, trial.subscription_id)).consecutive_failures == 1

    gate.hold = True
    clock.freeze(at(1, 22))  # the grace deadline
    attempt = asyncio.create_task(server.state.jobs.job("renewals").tick(at(1, 22)))
    await gate.arrived.wait()
    await other.state.jobs.job("renewals").tick(at(1, 22))
    assert len(await events(server, "subscription.lapsed")) == 1
    gate.release(200)
    await attempt

    row = await subscription_row(server, trial.subscription_id)
    assert (row.status, row.lapsed_at) == ("lapsed", at(1, 22))
    assert len(await events(server, "subscription.lapsed")) == 1
    assert await events(server, "subscription.renewal_pending") == []
