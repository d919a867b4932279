"""Zaprite through its wire protocol: connect, status and disconnect (admin-api.md 10.5,
11.4, 11.5; access.md 8, 9.2-9.3), purchases and the order sent (payments.md 5.2-5.3),
unsigned webhooks as hints (payments.md 2.4, 5.5, 7.5), amounts (billing.md 4.3), and
provider choice with rail preferences and sandbox eligibility (payments.md 2.5)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from fakes.btcpay import FakeBTCPay
from fakes.zaprite import FakeZaprite
from keysat.billing.models import DiscountCode, DiscountRedemption, Invoice
from keysat.clock import clock, now
from keysat.operator.models import MerchantProfile
from keysat.payments.models import PaymentProvider, RailPreference
from keysat.wire import new_id
from support import (
    ADMIN,
    assert_error,
    audit_rows,
    connect_btcpay_row,
    connect_zaprite_row,
    create_policy,
    create_product,
    events,
    invoice_row,
    licenses_for_invoice,
    poll,
    purchase,
    self_license_key,
)

PUBLIC = "http://keysat.test"
UPGRADE_URL = "https://licensing.keysat.xyz/buy/keysat?policy=pro"
PRO = ("zaprite_payments", "recurring_billing")
CONNECT = "/v1/admin/zaprite/connect"
DISCONNECT = "/v1/admin/zaprite/disconnect"
STATUS = "/v1/admin/zaprite/status"
CONNECT_FIELDS = {
    "ok",
    "provider",
    "provider_id",
    "merchant_profile_id",
    "merchant_profile_name",
    "label",
    "base_url",
    "webhook_url",
}
SANDBOX_REFUSAL = "conflict: Zaprite takes real payments; it cannot be connected in sandbox mode"
PRICE = 7_000


@pytest.fixture
async def pro(make_server: Callable[..., Any]) -> Any:
    """Outside sandbox mode, on a tier with Zaprite and recurring billing."""
    return await make_server(KEYSAT_LICENSE=self_license_key(*PRO))


@dataclass
class Shop:
    server: Any
    fake: FakeZaprite
    provider_id: str
    product: dict[str, Any]

    @property
    def hook(self) -> str:
        return f"/v1/zaprite/webhook/{self.provider_id}"

    async def buy(self, **fields: Any) -> dict[str, Any]:
        return await purchase(self.server, "acme", **fields)

    async def post(self, order_id: str, **options: Any) -> Any:
        return await self.fake.post_webhook(
            self.hook, order_id=order_id, client=self.server.client, **options
        )

    def reads(self) -> list[str]:
        """Paths of the order reads the fake answered (GET /v1/orders/{id})."""
        return [
            r.path
            for r in self.fake.requests
            if r.method == "GET" and r.path.startswith("/v1/orders/")
        ]


@pytest.fixture
async def shop(pro: Any, fake_zaprite: FakeZaprite) -> Shop:
    """A Zaprite row on the default profile and a 7 000-sat product, outside sandbox mode."""
    provider_id = await connect_zaprite_row(pro, fake_zaprite)
    product = await create_product(pro, "acme", price_sats=PRICE)
    return Shop(pro, fake_zaprite, provider_id, product)


async def provider_rows(server: Any) -> list[PaymentProvider]:
    async with server.state.db.read() as session:
        query = sa.select(PaymentProvider).order_by(PaymentProvider.connected_at)
        return list((await session.execute(query)).scalars())


async def default_profile_row(server: Any) -> MerchantProfile:
    async with server.state.db.read() as session:
        query = sa.select(MerchantProfile).where(MerchantProfile.is_default.is_(True))
        return (await session.execute(query)).scalar_one()


async def add_profile(server: Any, name: str) -> str:
    """A second merchant profile written straight to the database."""
    profile_id = new_id()
    at = now()
    async with server.state.db.write() as session:
        session.add(
            MerchantProfile(
                id=profile_id, name=name, is_default=False, created_at=at, updated_at=at
            )
        )
    return profile_id


async def add_rail_preference(server: Any, profile_id: str, rail: str, provider_id: str) -> None:
    async with server.state.db.write() as session:
        session.add(
            RailPreference(
                merchant_profile_id=profile_id, rail=rail, payment_provider_id=provider_id
            )
        )


def order_posts(fake: FakeZaprite) -> list[dict[str, Any]]:
    return [r.json() for r in fake.requests if r.method == "POST" and r.path == "/v1/orders"]


def contact_posts(fake: FakeZaprite) -> list[dict[str, Any]]:
    return [r.json() for r in fake.requests if r.method == "POST" and r.path == "/v1/contacts"]


# --- connect: gates before the body -------------------------------------------------------


@pytest.mark.parametrize("license_env", [{}, {"KEYSAT_LICENSE": self_license_key(*PRO)}])
async def test_connect_in_sandbox_mode_is_409_before_any_body_check(
    make_server: Callable[..., Any], fake_zaprite: FakeZaprite, license_env: dict[str, str]
) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true", **license_env)
    for content in (b"{not json", b"[]", b"", json.dumps({"api_key": fake_zaprite.api_key})):
        response = await server.client.post(
            CONNECT,
            content=content,
            headers={**ADMIN, "content-type": "application/json"},
        )
        assert_error(response, 409, "conflict", SANDBOX_REFUSAL)
    good = {"api_key": fake_zaprite.api_key, "base_url": fake_zaprite.url}
    assert_error(await server.admin_post(CONNECT, good), 409, "conflict", SANDBOX_REFUSAL)
    assert await provider_rows(server) == []
    assert await audit_rows(server, "payment_provider.connect") == []
    assert fake_zaprite.requests == []


@pytest.mark.parametrize("entitlements", [(), ("unlimited_products", "recurring_billing")])
async def test_connect_without_zaprite_payments_is_402_before_any_body_check(
    make_server: Callable[..., Any], fake_zaprite: FakeZaprite, entitlements: tuple[str, ...]
) -> None:
    env = {"KEYSAT_LICENSE": self_license_key(*entitlements)} if entitlements else {}
    server = await make_server(**env)
    bodies: list[bytes] = [
        b"{not json",
        b"[]",
        b"{}",
        json.dumps({"api_key": ""}).encode(),
        json.dumps({"api_key": fake_zaprite.api_key, "base_url": fake_zaprite.url}).encode(),
    ]
    for content in bodies:
        response = await server.client.post(
            CONNECT, content=content, headers={**ADMIN, "content-type": "application/json"}
        )
        assert response.status_code == 402, response.text
        body = response.json()
        assert set(body) == {"ok", "error", "message", "upgrade_url"}
        assert body["ok"] is False
        assert body["error"] == "tier_cap"
        assert body["upgrade_url"] == UPGRADE_URL
        assert "Zaprite" in body["message"]
    assert await provider_rows(server) == []
    assert await audit_rows(server, "payment_provider.connect") == []
    assert fake_zaprite.requests == []


async def test_connect_needs_the_master_key(pro: Any, fake_zaprite: FakeZaprite) -> None:
    response = await pro.client.post(CONNECT, json={"api_key": fake_zaprite.api_key})
    assert response.status_code == 401
    assert await provider_rows(pro) == []


# --- connect: body rules ------------------------------------------------------------------


async def test_connect_requires_a_non_blank_api_key(pro: Any, fake_zaprite: FakeZaprite) -> None:
    bodies: list[dict[str, Any]] = [
        {},
        {"api_key": ""},
        {"api_key": "   "},
        {"api_key": None},
        {"api_key": 12345},
        {"base_url": fake_zaprite.url},
    ]
    for body in bodies:
        assert_error(await pro.admin_post(CONNECT, body), 400, "bad_request")
    assert await provider_rows(pro) == []
    assert fake_zaprite.requests == []


async def test_connect_refuses_a_base_url_without_http_scheme(
    pro: Any, fake_zaprite: FakeZaprite
) -> None:
    for base_url in ("ftp://zaprite.example", "api.zaprite.com", "  ", "/v1", 5):
        body = {"api_key": fake_zaprite.api_key, "base_url": base_url}
        assert_error(await pro.admin_post(CONNECT, body), 400, "bad_request")
    assert await provider_rows(pro) == []
    assert fake_zaprite.requests == []


async def test_connect_success_shape_row_audit_and_key_check(
    pro: Any, fake_zaprite: FakeZaprite
) -> None:
    profile = await default_profile_row(pro)
    response = await pro.admin_post(
        CONNECT, {"api_key": f"  {fake_zaprite.api_key}  ", "base_url": fake_zaprite.url + "/"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == CONNECT_FIELDS
    provider_id = body["provider_id"]
    assert body == {
        "ok": True,
        "provider": "zaprite",
        "provider_id": provider_id,
        "merchant_profile_id": profile.id,
        "merchant_profile_name": profile.name,
        "label": f"Zaprite — {profile.name}",
        "base_url": fake_zaprite.url,
        "webhook_url": f"{PUBLIC}/v1/zaprite/webhook/{provider_id}",
    }
    assert fake_zaprite.api_key not in response.text

    [ping] = fake_zaprite.requests
    assert (ping.method, ping.path, ping.query) == ("GET", "/v1/orders", "limit=1")
    assert ping.headers["authorization"] == f"Bearer {fake_zaprite.api_key}"
    assert ping.status == 200

    [row] = await provider_rows(pro)
    assert row.id == provider_id
    assert row.kind == "zaprite"
    assert row.merchant_profile_id == profile.id
    assert row.api_key == fake_zaprite.api_key
    assert row.base_url == fake_zaprite.url
    assert row.label == f"Zaprite — {profile.name}"
    assert (row.webhook_id, row.webhook_secret, row.store_id) == (None, None, None)

    [audit] = await audit_rows(pro, "payment_provider.connect")
    assert (audit.actor_kind, audit.actor_id) == ("admin_api_key", "master")
    assert (audit.target_kind, audit.target_id) == ("payment_provider", provider_id)
    assert audit.details == {
        "kind": "zaprite",
        "merchant_profile_id": profile.id,
        "base_url": fake_zaprite.url,
    }
    assert fake_zaprite.api_key not in json.dumps(audit.details)


async def test_connect_label_is_trimmed_and_capped(pro: Any, fake_zaprite: FakeZaprite) -> None:
    too_long = {"api_key": fake_zaprite.api_key, "base_url": fake_zaprite.url, "label": "x" * 81}
    assert_error(await pro.admin_post(CONNECT, too_long), 400, "bad_request")
    assert await provider_rows(pro) == []

    body = {"api_key": fake_zaprite.api_key, "base_url": fake_zaprite.url, "label": "  Cards  "}
    response = await pro.admin_post(CONNECT, body)
    assert response.status_code == 200, response.text
    assert response.json()["label"] == "Cards"
    [row] = await provider_rows(pro)
    assert row.label == "Cards"


@pytest.mark.parametrize("profile_id", ["00000000-0000-4000-8000-000000000000", "nope"])
async def test_connect_to_an_unknown_profile_is_404(
    pro: Any, fake_zaprite: FakeZaprite, profile_id: str
) -> None:
    body = {
        "api_key": fake_zaprite.api_key,
        "base_url": fake_zaprite.url,
        "merchant_profile_id": profile_id,
    }
    assert_error(await pro.admin_post(CONNECT, body), 404, "not_found")
    assert await provider_rows(pro) == []
    assert fake_zaprite.requests == []


async def test_connect_to_a_named_profile(pro: Any, fake_zaprite: FakeZaprite) -> None:
    profile_id = await add_profile(pro, "Second shop")
    body = {
        "api_key": fake_zaprite.api_key,
        "base_url": fake_zaprite.url,
        "merchant_profile_id": profile_id,
    }
    response = await pro.admin_post(CONNECT, body)
    assert response.status_code == 200, response.text
    assert response.json()["merchant_profile_id"] == profile_id
    assert response.json()["merchant_profile_name"] == "Second shop"
    assert response.json()["label"] == "Zaprite — Second shop"
    # The default profile is still free to get its own.
    default = await pro.admin_post(
        CONNECT, {"api_key": fake_zaprite.api_key, "base_url": body["base_url"]}
    )
    assert default.status_code == 200, default.text
    assert len(await provider_rows(pro)) == 2


async def test_a_second_zaprite_on_the_profile_is_409(pro: Any, fake_zaprite: FakeZaprite) -> None:
    body = {"api_key": fake_zaprite.api_key, "base_url": fake_zaprite.url}
    assert (await pro.admin_post(CONNECT, body)).status_code == 200
    pings = len(fake_zaprite.requests)
    assert_error(await pro.admin_post(CONNECT, body), 409, "conflict")
    assert len(await provider_rows(pro)) == 1
    assert len(fake_zaprite.requests) == pings
    assert len(await audit_rows(pro, "payment_provider.connect")) == 1


async def test_body_checks_come_before_the_409(pro: Any, fake_zaprite: FakeZaprite) -> None:
    body = {"api_key": fake_zaprite.api_key, "base_url": fake_zaprite.url}
    assert (await pro.admin_post(CONNECT, body)).status_code == 200
    for bad in ({"api_key": " "}, {"base_url": "ftp://x"}, {"label": "x" * 81}):
        assert_error(await pro.admin_post(CONNECT, {**body, **bad}), 400, "bad_request")
    unknown = {**body, "merchant_profile_id": "00000000-0000-4000-8000-000000000000"}
    assert_error(await pro.admin_post(CONNECT, unknown), 404, "not_found")


@pytest.mark.parametrize("failure", ["http_500", "wrong_key", "unreachable"])
async def test_connect_with_a_failing_key_check_is_502(
    pro: Any, fake_zaprite: FakeZaprite, failure: str
) -> None:
    body = {"api_key": fake_zaprite.api_key, "base_url": fake_zaprite.url}
    if failure == "http_500":
        fake_zaprite.fail_next("GET", "/v1/orders", status=500)
    elif failure == "wrong_key":
        body["api_key"] = "not-the-key"
    else:
        body["base_url"] = "http://127.0.0.1:1"
    response = await pro.admin_post(CONNECT, body)
    assert_error(response, 502, "upstream_error")
    assert response.json()["message"].startswith("upstream error: ")
    assert "not-the-key" not in response.text
    assert await provider_rows(pro) == []
    assert await audit_rows(pro, "payment_provider.connect") == []


# --- status and disconnect ----------------------------------------------------------------


async def test_status_when_not_connected(pro: Any) -> None:
    profile = await default_profile_row(pro)
    response = await pro.admin_get(STATUS)
    assert response.status_code == 200, response.text
    body = response.json()
    explainer = body.pop("webhook_explainer")
    assert body == {
        "connected": False,
        "provider_id": None,
        "base_url": None,
        "label": None,
        "webhook_id": None,
        "merchant_profile_id": profile.id,
        "merchant_profile_name": profile.name,
        "webhook_url": f"{PUBLIC}/v1/zaprite/webhook",
    }
    assert "sign" in explainer and "Zaprite" in explainer


async def test_status_when_connected_and_per_profile(pro: Any, fake_zaprite: FakeZaprite) -> None:
    profile = await default_profile_row(pro)
    connected = (
        await pro.admin_post(
            CONNECT, {"api_key": fake_zaprite.api_key, "base_url": fake_zaprite.url}
        )
    ).json()
    body = (await pro.admin_get(STATUS)).json()
    assert body["connected"] is True
    assert body["provider_id"] == connected["provider_id"]
    assert body["base_url"] == fake_zaprite.url
    assert body["label"] == f"Zaprite — {profile.name}"
    assert body["webhook_id"] is None
    assert body["merchant_profile_id"] == profile.id
    assert body["webhook_url"] == connected["webhook_url"]
    assert "api_key" not in body and fake_zaprite.api_key not in json.dumps(body)

    other = await add_profile(pro, "Other")
    elsewhere = (await pro.admin_get(STATUS, merchant_profile_id=other)).json()
    assert elsewhere["connected"] is False
    assert elsewhere["merchant_profile_id"] == other
    assert elsewhere["merchant_profile_name"] == "Other"
    missing = await pro.admin_get(
        STATUS, merchant_profile_id="00000000-0000-4000-8000-000000000000"
    )
    assert_error(missing, 404, "not_found")


async def test_disconnect_without_a_provider_is_a_noop(pro: Any) -> None:
    response = await pro.admin_post(DISCONNECT, {})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and body["noop"] is True
    assert isinstance(body["message"], str) and body["message"]
    assert await audit_rows(pro, "payment_provider.disconnect") == []


async def test_disconnect_of_an_id_that_is_not_zaprite_is_404(
    pro: Any, fake_zaprite: FakeZaprite, fake_btcpay: FakeBTCPay
) -> None:
    btcpay_id = await connect_btcpay_row(pro, fake_btcpay, network="mainnet")
    zaprite_id = await connect_zaprite_row(pro, fake_zaprite)
    for provider_id in (btcpay_id, "00000000-0000-4000-8000-000000000000", "garbage"):
        response = await pro.admin_post(DISCONNECT, {"provider_id": provider_id})
        assert_error(response, 404, "not_found")
    assert {row.id for row in await provider_rows(pro)} == {btcpay_id, zaprite_id}
    assert await audit_rows(pro, "payment_provider.disconnect") == []


async def test_disconnect_deletes_row_and_preferences_keeps_invoices(shop: Shop) -> None:
    server = shop.server
    profile = await default_profile_row(server)
    await add_rail_preference(server, profile.id, "card", shop.provider_id)
    bought = await shop.buy()

    response = await server.admin_post(DISCONNECT, {"provider_id": shop.provider_id})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True and body["noop"] is False
    assert body["provider_id"] == shop.provider_id
    assert "Zaprite" in body["message"] and "webhook" in body["message"]

    assert await provider_rows(server) == []
    async with server.state.db.read() as session:
        preferences = (await session.execute(sa.select(RailPreference))).scalars().all()
    assert list(preferences) == []
    invoice = await invoice_row(server, bought["invoice_id"])
    assert invoice.payment_provider_id is None
    assert invoice.provider_kind == "zaprite"

    [audit] = await audit_rows(server, "payment_provider.disconnect")
    assert (audit.target_kind, audit.target_id) == ("payment_provider", shop.provider_id)
    assert audit.details == {"kind": "zaprite"}
    # The webhook path of a deleted provider is unknown now.
    assert_error(await shop.post(bought["btcpay_invoice_id"]), 404, "not_found")


async def test_disconnect_without_id_takes_the_default_profiles_zaprite(
    pro: Any, fake_zaprite: FakeZaprite
) -> None:
    other = await add_profile(pro, "Other")
    elsewhere = await connect_zaprite_row(pro, fake_zaprite, profile_id=other)
    ours = await connect_zaprite_row(pro, fake_zaprite)
    response = await pro.admin_post(DISCONNECT)
    assert response.status_code == 200, response.text
    assert response.json()["provider_id"] == ours
    assert [row.id for row in await provider_rows(pro)] == [elsewhere]
    again = (await pro.admin_post(DISCONNECT)).json()
    assert again["noop"] is True


# --- purchases through Zaprite ------------------------------------------------------------


async def test_purchase_sends_the_order_the_spec_describes(shop: Shop) -> None:
    bought = await shop.buy(buyer_email="ada@example.com")
    invoice_id = bought["invoice_id"]
    [body] = order_posts(shop.fake)
    assert body == {
        "amount": PRICE,
        "currency": "BTC",
        "externalUniqId": invoice_id,
        "redirectUrl": f"{PUBLIC}/thank-you?invoice_id={invoice_id}",
        "label": f"Keysat order {invoice_id}",
        "metadata": {"productId": shop.product["id"]},
        "customerData": {"email": "ada@example.com"},
    }
    assert contact_posts(shop.fake) == []
    [create] = [r for r in shop.fake.requests if r.path == "/v1/orders" and r.method == "POST"]
    assert create.headers["authorization"] == f"Bearer {shop.fake.api_key}"
    assert create.headers["content-type"].startswith("application/json")

    order = shop.fake.order(invoice_id)
    assert bought["btcpay_invoice_id"] == order["id"]
    assert bought["checkout_url"] == order["checkoutUrl"]
    assert bought["amount_sats"] == PRICE
    invoice = await invoice_row(shop.server, invoice_id)
    assert invoice.status == "pending"
    assert invoice.provider_kind == "zaprite"
    assert invoice.payment_provider_id == shop.provider_id
    assert invoice.provider_invoice_id == order["id"]
    assert invoice.checkout_url == order["checkoutUrl"]
    assert invoice.rail == "card"
    assert invoice.amount_sats == PRICE
    assert await licenses_for_invoice(shop.server, invoice_id) == []


async def test_order_without_email_and_with_a_redirect_has_no_nulls(shop: Shop) -> None:
    bought = await shop.buy(redirect_url=f"{PUBLIC}/done")
    [body] = order_posts(shop.fake)
    assert "customerData" not in body
    assert "contactId" not in body and "allowSavePaymentProfile" not in body
    assert body["redirectUrl"] == f"{PUBLIC}/done"
    assert body["externalUniqId"] == bought["invoice_id"]
    assert None not in body.values()


async def test_recurring_purchase_with_email_creates_a_contact_and_allows_saving(
    shop: Shop,
) -> None:
    await create_policy(
        shop.server,
        "acme",
        "monthly",
        is_recurring=True,
        renewal_period_days=30,
        grace_period_days=7,
    )
    bought = await shop.buy(policy_slug="monthly", buyer_email="bob@example.com")
    [contact] = contact_posts(shop.fake)
    assert contact == {"email": "bob@example.com", "legalName": "bob@example.com"}
    [contact_id] = list(shop.fake.contacts)
    [body] = order_posts(shop.fake)
    assert body["contactId"] == contact_id
    assert body["allowSavePaymentProfile"] is True
    assert body["customerData"] == {"email": "bob@example.com"}
    assert body["externalUniqId"] == bought["invoice_id"]
    order = shop.fake.order(bought["invoice_id"])
    assert order["contactId"] == contact_id and order["allowSavePaymentProfile"] is True


async def test_recurring_purchase_without_email_is_a_one_off_order(shop: Shop) -> None:
    await create_policy(
        shop.server,
        "acme",
        "monthly",
        is_recurring=True,
        renewal_period_days=30,
        grace_period_days=7,
    )
    await shop.buy(policy_slug="monthly")
    assert contact_posts(shop.fake) == []
    [body] = order_posts(shop.fake)
    assert "allowSavePaymentProfile" not in body
    assert "contactId" not in body and "customerData" not in body


async def test_create_order_failure_is_502_and_leaves_no_invoice(shop: Shop) -> None:
    shop.fake.fail_next("POST", "/v1/orders", status=500)
    response = await shop.server.client.post("/v1/purchase", json={"product": "acme"})
    assert_error(response, 502, "upstream_error")
    assert response.json()["message"].startswith(
        "upstream error: payment provider create-invoice failed: "
    )
    assert shop.fake.api_key not in response.text
    async with shop.server.state.db.read() as session:
        assert (await session.execute(sa.select(Invoice))).scalars().all() == []


# --- unsigned webhooks are hints ----------------------------------------------------------


@pytest.mark.parametrize("shape", ["data.id", "data.object.id", "orderId", "id"])
async def test_each_body_shape_confirms_through_the_api(shop: Shop, shape: str) -> None:
    bought = await shop.buy()
    order_id = bought["btcpay_invoice_id"]
    shop.fake.set_order_status(order_id, "PAID")
    response = await shop.post(order_id, shape=shape)
    assert response.status_code == 200, response.text
    assert response.content == b""
    assert shop.reads() == [f"/v1/orders/{order_id}"]
    assert (await invoice_row(shop.server, bought["invoice_id"])).status == "settled"
    assert len(await licenses_for_invoice(shop.server, bought["invoice_id"])) == 1


@pytest.mark.parametrize("event_key", ["event", "eventType", "type", "name", None])
async def test_the_event_name_and_its_key_change_nothing(shop: Shop, event_key: Any) -> None:
    bought = await shop.buy()
    order_id = bought["btcpay_invoice_id"]
    response = await shop.post(order_id, event="order.paid", event_key=event_key)
    assert response.status_code == 200
    assert (await invoice_row(shop.server, bought["invoice_id"])).status == "pending"


async def test_a_webhook_may_name_our_invoice_id(shop: Shop) -> None:
    bought = await shop.buy()
    shop.fake.set_order_status(bought["btcpay_invoice_id"], "COMPLETE")
    response = await shop.post(bought["invoice_id"], shape="orderId")
    assert response.status_code == 200
    assert (await invoice_row(shop.server, bought["invoice_id"])).status == "settled"


async def test_order_paid_while_the_order_is_still_pending_changes_nothing(shop: Shop) -> None:
    bought = await shop.buy()
    invoice_id, order_id = bought["invoice_id"], bought["btcpay_invoice_id"]
    for status in ("PENDING", "PROCESSING", "UNDERPAID", "SOMETHING_NEW"):
        shop.fake.set_order_status(order_id, status)
        response = await shop.post(order_id, event="order.paid")
        assert response.status_code == 200
        invoice = await invoice_row(shop.server, invoice_id)
        assert invoice.status == "pending"
        assert invoice.settled_at is None
    assert len(shop.reads()) == 4
    assert await licenses_for_invoice(shop.server, invoice_id) == []
    assert await events(shop.server, "license.issued") == []
    assert (await poll(shop.server, invoice_id))["license_key"] is None


async def test_paid_order_settles_once_with_one_license_and_one_event(shop: Shop) -> None:
    bought = await shop.buy(buyer_email="ada@example.com")
    invoice_id, order_id = bought["invoice_id"], bought["btcpay_invoice_id"]
    shop.fake.set_order_status(order_id, "PAID")
    for event in ("order.paid", "order.paid", "order.change"):
        assert (await shop.post(order_id, event=event)).status_code == 200
    invoice = await invoice_row(shop.server, invoice_id)
    assert invoice.status == "settled" and invoice.settled_at is not None
    [license_row] = await licenses_for_invoice(shop.server, invoice_id)
    assert license_row.status == "active"
    assert license_row.buyer_email == "ada@example.com"
    assert license_row.license_metadata == {"source": "purchase", "btcpay_invoice_id": order_id}
    [issued] = await events(shop.server, "license.issued")
    assert issued["data"]["license_id"] == license_row.id
    assert issued["data"]["invoice_id"] == invoice_id
    assert issued["data"]["source"] == "purchase"
    polled = await poll(shop.server, invoice_id)
    assert polled["status"] == "settled"
    assert polled["license_id"] == license_row.id and polled["license_key"]
    # A matching BTC amount is no mismatch.
    assert await audit_rows(shop.server, "invoice.amount_mismatch") == []


async def test_concurrent_deliveries_issue_one_license(shop: Shop) -> None:
    bought = await shop.buy()
    order_id = bought["btcpay_invoice_id"]
    shop.fake.set_order_status(order_id, "PAID")
    shapes: list[Any] = ["data.id", "data.object.id", "orderId", "id", "data.id", "orderId"]
    responses = await asyncio.gather(*(shop.post(order_id, shape=shape) for shape in shapes))
    assert [r.status_code for r in responses] == [200] * len(shapes)
    assert len(await licenses_for_invoice(shop.server, bought["invoice_id"])) == 1
    assert len(await events(shop.server, "license.issued")) == 1


@pytest.mark.parametrize("first", ["EXPIRED", "INVALID"])
async def test_a_late_payment_still_settles(shop: Shop, first: str) -> None:
    bought = await shop.buy()
    invoice_id, order_id = bought["invoice_id"], bought["btcpay_invoice_id"]
    shop.fake.set_order_status(order_id, first)
    await shop.post(order_id, event="order.expired")
    assert (await invoice_row(shop.server, invoice_id)).status == first.lower()
    shop.fake.set_order_status(order_id, "PAID")
    await shop.post(order_id, event="order.paid")
    assert (await invoice_row(shop.server, invoice_id)).status == "settled"
    assert len(await licenses_for_invoice(shop.server, invoice_id)) == 1


@pytest.mark.parametrize(("status", "local"), [("EXPIRED", "expired"), ("CANCELED", "invalid")])
async def test_expiry_and_cancellation_come_from_the_order(
    shop: Shop, status: str, local: str
) -> None:
    bought = await shop.buy()
    shop.fake.set_order_status(bought["btcpay_invoice_id"], status)
    # The claimed event is deliberately the opposite: only the order counts.
    assert (await shop.post(bought["btcpay_invoice_id"], event="order.paid")).status_code == 200
    assert (await invoice_row(shop.server, bought["invoice_id"])).status == local
    assert await licenses_for_invoice(shop.server, bought["invoice_id"]) == []


async def test_refunded_order_changes_nothing(shop: Shop) -> None:
    bought = await shop.buy()
    shop.fake.set_order_status(bought["btcpay_invoice_id"], "PAID")
    await shop.post(bought["btcpay_invoice_id"])
    shop.fake.set_order_status(bought["btcpay_invoice_id"], "REFUNDED")
    await shop.post(bought["btcpay_invoice_id"], event="order.refunded")
    assert (await invoice_row(shop.server, bought["invoice_id"])).status == "settled"
    [license_row] = await licenses_for_invoice(shop.server, bought["invoice_id"])
    assert license_row.status == "active"


async def _percent_code(server: Any, code: str = "HALF") -> str:
    response = await server.admin_post(
        "/v1/admin/discount-codes",
        {"code": code, "kind": "percent", "amount": 5_000, "max_uses": 3},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def _code_state(server: Any, code_id: str, invoice_id: str) -> tuple[int, str]:
    async with server.state.db.read() as session:
        code = await session.get(DiscountCode, code_id, populate_existing=True)
        redemption = (
            await session.execute(
                sa.select(DiscountRedemption).where(DiscountRedemption.invoice_id == invoice_id)
            )
        ).scalar_one()
    assert code is not None
    return code.used_count, redemption.status


async def test_order_expired_hint_for_a_pending_order_keeps_the_slot(shop: Shop) -> None:
    code_id = await _percent_code(shop.server)
    bought = await shop.buy(code="half")
    assert bought["amount_sats"] == PRICE // 2
    assert order_posts(shop.fake)[0]["amount"] == PRICE // 2
    assert await _code_state(shop.server, code_id, bought["invoice_id"]) == (1, "pending")
    response = await shop.post(bought["btcpay_invoice_id"], event="order.expired")
    assert response.status_code == 200
    assert (await invoice_row(shop.server, bought["invoice_id"])).status == "pending"
    assert await _code_state(shop.server, code_id, bought["invoice_id"]) == (1, "pending")


async def test_order_expired_for_a_settled_invoice_keeps_it_settled_and_the_slot(
    shop: Shop,
) -> None:
    code_id = await _percent_code(shop.server)
    bought = await shop.buy(code="HALF")
    invoice_id, order_id = bought["invoice_id"], bought["btcpay_invoice_id"]
    shop.fake.set_order_status(order_id, "PAID")
    await shop.post(order_id)
    assert await _code_state(shop.server, code_id, invoice_id) == (1, "redeemed")
    settled_at = (await invoice_row(shop.server, invoice_id)).settled_at

    shop.fake.set_order_status(order_id, "EXPIRED")
    response = await shop.post(order_id, event="order.expired")
    assert response.status_code == 200
    invoice = await invoice_row(shop.server, invoice_id)
    assert invoice.status == "settled" and invoice.settled_at == settled_at
    assert await _code_state(shop.server, code_id, invoice_id) == (1, "redeemed")
    [license_row] = await licenses_for_invoice(shop.server, invoice_id)
    assert license_row.status == "active"
    assert len(await events(shop.server, "license.issued")) == 1
    assert len(shop.reads()) == 2


async def test_a_post_naming_another_providers_order_makes_no_call(
    pro: Any, fake_zaprite: FakeZaprite
) -> None:
    other_profile = await add_profile(pro, "Other")
    ours = await connect_zaprite_row(pro, fake_zaprite)
    theirs = await connect_zaprite_row(pro, fake_zaprite, profile_id=other_profile)
    await create_product(pro, "elsewhere", price_sats=PRICE, merchant_profile_id=other_profile)
    bought = await purchase(pro, "elsewhere")
    invoice = await invoice_row(pro, bought["invoice_id"])
    assert invoice.payment_provider_id == theirs
    order_id = bought["btcpay_invoice_id"]
    fake_zaprite.set_order_status(order_id, "PAID")
    before = len(fake_zaprite.requests)

    hook = f"/v1/zaprite/webhook/{ours}"
    for named in (order_id, bought["invoice_id"]):
        response = await fake_zaprite.post_webhook(hook, order_id=named, client=pro.client)
        assert response.status_code == 200 and response.content == b""
    assert len(fake_zaprite.requests) == before
    assert (await invoice_row(pro, bought["invoice_id"])).status == "pending"

    # The legacy path is the default profile's Zaprite, not the invoice's.
    legacy = await fake_zaprite.post_webhook(
        "/v1/zaprite/webhook", order_id=order_id, client=pro.client
    )
    assert legacy.status_code == 200
    assert len(fake_zaprite.requests) == before
    assert (await invoice_row(pro, bought["invoice_id"])).status == "pending"

    # Its own provider's path confirms it.
    own = await fake_zaprite.post_webhook(
        f"/v1/zaprite/webhook/{theirs}", order_id=order_id, client=pro.client
    )
    assert own.status_code == 200
    assert (await invoice_row(pro, bought["invoice_id"])).status == "settled"


async def test_a_btcpay_invoice_is_not_reachable_through_zaprite(
    pro: Any, fake_zaprite: FakeZaprite, fake_btcpay: FakeBTCPay
) -> None:
    await connect_btcpay_row(pro, fake_btcpay, network="mainnet")
    clock.advance(timedelta(seconds=1))
    zaprite_id = await connect_zaprite_row(pro, fake_zaprite)
    await create_product(pro, "acme", price_sats=PRICE)
    bought = await purchase(pro, "acme", rail="lightning")
    invoice = await invoice_row(pro, bought["invoice_id"])
    assert invoice.provider_kind == "btcpay"
    hook = f"/v1/zaprite/webhook/{zaprite_id}"
    for named in (bought["btcpay_invoice_id"], bought["invoice_id"]):
        response = await fake_zaprite.post_webhook(hook, order_id=named, client=pro.client)
        assert response.status_code == 200
    assert fake_zaprite.requests == []
    assert (await invoice_row(pro, bought["invoice_id"])).status == "pending"


async def test_a_post_naming_an_unknown_order_makes_no_call(shop: Shop) -> None:
    await shop.buy()
    before = len(shop.fake.requests)
    for named in ("od_unknown", new_id(), "../../v1/orders"):
        response = await shop.post(named, shape="orderId")
        assert response.status_code == 200 and response.content == b""
    assert len(shop.fake.requests) == before


async def test_a_body_without_an_order_id_is_401(shop: Shop) -> None:
    bought = await shop.buy()
    shop.fake.set_order_status(bought["btcpay_invoice_id"], "PAID")
    bodies = [
        b"",
        b"not json",
        b"{",
        b"[]",
        b'"od_1"',
        b"{}",
        b'{"event": "order.paid"}',
        b'{"data": {"id": 5}}',
        b"\xff\xfe",
        b"[" * 100_000,
    ]
    for content in bodies:
        response = await shop.server.client.post(
            shop.hook, content=content, headers={"content-type": "application/json"}
        )
        assert_error(response, 401, "unauthorized")
    assert shop.reads() == []
    assert (await invoice_row(shop.server, bought["invoice_id"])).status == "pending"


async def test_unknown_provider_or_wrong_kind_is_404(shop: Shop, fake_btcpay: FakeBTCPay) -> None:
    bought = await shop.buy()
    btcpay_id = await connect_btcpay_row(shop.server, fake_btcpay, network="mainnet")
    unknown = "00000000-0000-4000-8000-000000000000"
    for provider_id in (unknown, btcpay_id, "not-a-uuid"):
        response = await shop.fake.post_webhook(
            f"/v1/zaprite/webhook/{provider_id}",
            order_id=bought["btcpay_invoice_id"],
            client=shop.server.client,
        )
        assert_error(response, 404, "not_found", f"not found: payment provider {provider_id}")
    # The Zaprite row is not reachable through the BTCPay path either.
    response = await shop.server.client.post(
        f"/v1/btcpay/webhook/{shop.provider_id}", content=b"{}"
    )
    assert_error(response, 404, "not_found")


async def test_legacy_path_without_zaprite_on_the_default_profile_is_503(
    pro: Any, fake_zaprite: FakeZaprite
) -> None:
    other = await add_profile(pro, "Other")
    await connect_zaprite_row(pro, fake_zaprite, profile_id=other)
    response = await fake_zaprite.post_webhook(
        "/v1/zaprite/webhook", order_id="od_1", client=pro.client
    )
    assert_error(response, 503, "btcpay_not_configured")


async def test_legacy_path_uses_the_default_profiles_zaprite(shop: Shop) -> None:
    bought = await shop.buy()
    shop.fake.set_order_status(bought["btcpay_invoice_id"], "OVERPAID")
    response = await shop.fake.post_webhook(
        "/v1/zaprite/webhook", order_id=bought["btcpay_invoice_id"], client=shop.server.client
    )
    assert response.status_code == 200
    assert (await invoice_row(shop.server, bought["invoice_id"])).status == "settled"


async def test_an_order_reporting_another_external_id_is_ignored(shop: Shop) -> None:
    bought = await shop.buy()
    invoice_id = bought["invoice_id"]
    # An order at Zaprite that belongs to someone else, paid...
    async with httpx.AsyncClient() as client:
        foreign = await client.post(
            f"{shop.fake.url}/v1/orders",
            headers={"Authorization": f"Bearer {shop.fake.api_key}"},
            json={"amount": PRICE, "currency": "BTC", "externalUniqId": "someone-else"},
        )
    foreign_id = foreign.json()["id"]
    shop.fake.set_order_status(foreign_id, "PAID")
    # ...that our invoice row (somehow) points at.
    async with shop.server.state.db.write() as session:
        await session.execute(
            sa.update(Invoice)
            .where(Invoice.id == invoice_id)
            .values(provider_invoice_id=foreign_id)
        )
    response = await shop.post(foreign_id)
    assert response.status_code == 200
    assert f"/v1/orders/{foreign_id}" in shop.reads()
    assert (await invoice_row(shop.server, invoice_id)).status == "pending"
    assert await licenses_for_invoice(shop.server, invoice_id) == []
    # The reconciler applies the same rule.
    run = await shop.server.admin_post("/v1/admin/jobs/reconciler/run")
    assert run.status_code == 200, run.text
    assert (await invoice_row(shop.server, invoice_id)).status == "pending"


@pytest.mark.parametrize("failure", [500, 404, 401])
async def test_unreachable_during_confirmation_then_the_reconciler_settles(
    shop: Shop, failure: int
) -> None:
    bought = await shop.buy()
    invoice_id, order_id = bought["invoice_id"], bought["btcpay_invoice_id"]
    shop.fake.set_order_status(order_id, "PAID")
    shop.fake.fail_next("GET", r"/v1/orders/.+", status=failure)
    response = await shop.post(order_id)
    assert response.status_code == 200 and response.content == b""
    assert (await invoice_row(shop.server, invoice_id)).status == "pending"
    assert await licenses_for_invoice(shop.server, invoice_id) == []

    run = await shop.server.admin_post("/v1/admin/jobs/reconciler/run")
    assert run.status_code == 200, run.text
    assert (await invoice_row(shop.server, invoice_id)).status == "settled"
    assert len(await licenses_for_invoice(shop.server, invoice_id)) == 1
    assert len(await events(shop.server, "license.issued")) == 1


async def test_a_provider_that_cannot_be_reached_at_all_answers_200(shop: Shop) -> None:
    bought = await shop.buy()
    async with shop.server.state.db.write() as session:
        await session.execute(
            sa.update(PaymentProvider)
            .where(PaymentProvider.id == shop.provider_id)
            .values(base_url="http://127.0.0.1:1")
        )
    response = await shop.post(bought["btcpay_invoice_id"])
    assert response.status_code == 200 and response.content == b""
    assert (await invoice_row(shop.server, bought["invoice_id"])).status == "pending"


# --- amounts ------------------------------------------------------------------------------


async def test_a_usd_order_amount_is_not_compared(shop: Shop) -> None:
    bought = await shop.buy()
    shop.fake.set_order_amount(bought["btcpay_invoice_id"], 250, "USD")
    shop.fake.set_order_status(bought["btcpay_invoice_id"], "PAID")
    await shop.post(bought["btcpay_invoice_id"])
    assert (await invoice_row(shop.server, bought["invoice_id"])).status == "settled"
    assert await audit_rows(shop.server, "invoice.amount_mismatch") == []


async def test_a_differing_btc_amount_trips_the_mismatch_audit(shop: Shop) -> None:
    bought = await shop.buy()
    order_id = bought["btcpay_invoice_id"]
    shop.fake.set_order_amount(order_id, 1, "BTC")
    shop.fake.set_order_status(order_id, "PAID")
    await shop.post(order_id)
    await shop.post(order_id)
    assert len(await licenses_for_invoice(shop.server, bought["invoice_id"])) == 1
    [audit] = await audit_rows(shop.server, "invoice.amount_mismatch")
    assert audit.actor_kind == "system"
    assert (audit.target_kind, audit.target_id) == ("invoice", bought["invoice_id"])
    assert audit.details == {
        "provider_invoice_id": order_id,
        "expected_amount_sats": PRICE,
        "provider_amount_sats": 1,
    }


# --- sandbox eligibility and rail preferences ---------------------------------------------


async def test_in_sandbox_mode_a_zaprite_only_profile_buys_through_the_sandbox(
    make_server: Callable[..., Any], fake_zaprite: FakeZaprite
) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_LICENSE=self_license_key(*PRO))
    provider_id = await connect_zaprite_row(server, fake_zaprite)
    await create_product(server, "acme", price_sats=PRICE)
    for rail in (None, "card", "lightning"):
        bought = await purchase(server, "acme", **({"rail": rail} if rail else {}))
        invoice = await invoice_row(server, bought["invoice_id"])
        assert invoice.provider_kind == "sandbox"
        assert invoice.payment_provider_id is None
    assert fake_zaprite.requests == []
    # A Zaprite webhook in sandbox mode still only reads what it knows; the sandbox invoice
    # is not Zaprite's, so nothing is read.
    response = await fake_zaprite.post_webhook(
        f"/v1/zaprite/webhook/{provider_id}", order_id=bought["invoice_id"], client=server.client
    )
    assert response.status_code == 200
    assert fake_zaprite.requests == []


async def test_rails_with_btcpay_and_zaprite_on_one_profile(
    pro: Any, fake_zaprite: FakeZaprite, fake_btcpay: FakeBTCPay
) -> None:
    btcpay_id = await connect_btcpay_row(pro, fake_btcpay, network="mainnet")
    clock.advance(timedelta(seconds=1))
    zaprite_id = await connect_zaprite_row(pro, fake_zaprite)
    await create_product(pro, "acme", price_sats=PRICE)

    async def chosen(**fields: Any) -> tuple[str, str | None, str | None]:
        bought = await purchase(pro, "acme", **fields)
        row = await invoice_row(pro, bought["invoice_id"])
        return row.provider_kind, row.payment_provider_id, row.rail

    assert await chosen(rail="card") == ("zaprite", zaprite_id, "card")
    assert await chosen(rail="lightning") == ("btcpay", btcpay_id, "lightning")
    assert await chosen(rail="on-chain") == ("btcpay", btcpay_id, "onchain")
    assert await chosen(rail="ON_CHAIN") == ("btcpay", btcpay_id, "onchain")
    # No rail, or one that does not parse: the earliest provider's first rail.
    assert await chosen() == ("btcpay", btcpay_id, "lightning")
    assert await chosen(rail="carrier-pigeon") == ("btcpay", btcpay_id, "lightning")

    profile = await default_profile_row(pro)
    await add_rail_preference(pro, profile.id, "lightning", zaprite_id)
    assert await chosen(rail="lightning") == ("zaprite", zaprite_id, "lightning")
    assert await chosen(rail="onchain") == ("btcpay", btcpay_id, "onchain")
    assert await chosen() == ("zaprite", zaprite_id, "lightning")


async def test_zaprite_connected_first_takes_lightning_unless_preferred_otherwise(
    pro: Any, fake_zaprite: FakeZaprite, fake_btcpay: FakeBTCPay
) -> None:
    zaprite_id = await connect_zaprite_row(pro, fake_zaprite)
    clock.advance(timedelta(seconds=1))
    btcpay_id = await connect_btcpay_row(pro, fake_btcpay, network="mainnet")
    await create_product(pro, "acme", price_sats=PRICE)

    async def chosen(**fields: Any) -> tuple[str | None, str | None]:
        bought = await purchase(pro, "acme", **fields)
        row = await invoice_row(pro, bought["invoice_id"])
        return row.payment_provider_id, row.rail

    assert await chosen(rail="lightning") == (zaprite_id, "lightning")
    assert await chosen() == (zaprite_id, "card")
    profile = await default_profile_row(pro)
    await add_rail_preference(pro, profile.id, "lightning", btcpay_id)
    assert await chosen(rail="lightning") == (btcpay_id, "lightning")
    assert await chosen(rail="card") == (zaprite_id, "card")


async def test_a_rail_no_provider_serves_is_400(pro: Any, fake_btcpay: FakeBTCPay) -> None:
    await connect_btcpay_row(pro, fake_btcpay, network="mainnet")
    await create_product(pro, "acme", price_sats=PRICE)
    response = await pro.client.post("/v1/purchase", json={"product": "acme", "rail": "card"})
    assert_error(
        response,
        400,
        "bad_request",
        "bad request: no payment provider on merchant profile 'Default' serves the 'card' rail",
    )
    async with pro.state.db.read() as session:
        assert (await session.execute(sa.select(Invoice))).scalars().all() == []


async def test_in_sandbox_mode_zaprite_is_absent_even_beside_a_test_network_btcpay(
    make_server: Callable[..., Any], fake_zaprite: FakeZaprite, fake_btcpay: FakeBTCPay
) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_LICENSE=self_license_key(*PRO))
    zaprite_id = await connect_zaprite_row(server, fake_zaprite)
    clock.advance(timedelta(seconds=1))
    btcpay_id = await connect_btcpay_row(server, fake_btcpay, network="regtest")
    profile = await default_profile_row(server)
    await add_rail_preference(server, profile.id, "card", zaprite_id)
    await add_rail_preference(server, profile.id, "lightning", zaprite_id)
    await create_product(server, "acme", price_sats=PRICE)

    # Zaprite is the earliest row, but it does not count: BTCPay's first rail is used.
    bought = await purchase(server, "acme")
    row = await invoice_row(server, bought["invoice_id"])
    assert (row.provider_kind, row.payment_provider_id, row.rail) == (
        "btcpay",
        btcpay_id,
        "lightning",
    )
    # The card rail has no eligible provider, and the sandbox does not stand in for one.
    response = await server.client.post("/v1/purchase", json={"product": "acme", "rail": "card"})
    assert_error(
        response,
        400,
        "bad_request",
        "bad request: no payment provider on merchant profile 'Default' serves the 'card' rail",
    )
    assert fake_zaprite.requests == []


async def test_a_fiat_product_is_ordered_in_sats(shop: Shop) -> None:
    response = await shop.server.client.put(
        "/v1/admin/rates/pins/USD", json={"units_per_btc": "50000"}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    await create_product(
        shop.server, "usd", price_sats=None, price_currency="USD", price_value=2_500
    )
    bought = await purchase(shop.server, "usd")
    [body] = order_posts(shop.fake)
    assert (body["amount"], body["currency"]) == (50_000, "BTC")
    row = await invoice_row(shop.server, bought["invoice_id"])
    assert (row.amount_sats, row.listed_currency, row.listed_value) == (50_000, "USD", 2_500)
