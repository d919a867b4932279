"""Purchases paid through BTCPay Server and its inbound webhooks, against the fake BTCPay
(payments.md 2, 4, 7.5; billing.md 4; public-api.md 6.1, 13)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from fakes.btcpay import FakeBTCPay
from fakes.openapi_check import validate_exchange
from fakes.zaprite import FakeZaprite
from keysat.billing.models import Invoice
from keysat.clock import clock
from keysat.operator.models import MerchantProfile
from keysat.outbound import UpstreamError
from keysat.payments.btcpay import BTCPayClient, BTCPayProvider, detect_network
from keysat.payments.models import PaymentProvider, SandboxInvoice
from keysat.payments.provider import InvoiceRequest, Money, Snapshot, SnapshotStatus
from keysat.webhooks.models import WebhookDelivery
from keysat.wire import new_id
from support import (
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
)

PRICE = 7000
T0 = datetime(2031, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
INVOICE_READ = r"^/api/v1/stores/[^/]+/invoices/[^/]+$"
INVOICE_CREATE = r"^/api/v1/stores/[^/]+/invoices$"


async def shop(
    make_server: Callable[..., Any],
    fake: FakeBTCPay,
    *,
    network: str = "mainnet",
    price: int = PRICE,
    **env: str,
) -> tuple[Any, str, dict[str, Any]]:
    """A server with one BTCPay row for the fake's store and a product `acme`."""
    server = await make_server(**env)
    provider_id = await connect_btcpay_row(server, fake, network=network)
    product = await create_product(server, "acme", price_sats=price)
    return server, provider_id, product


async def paid(server: Any, fake: FakeBTCPay, **fields: Any) -> dict[str, Any]:
    """A BTCPay purchase whose invoice the fake already reports Settled."""
    answer = await purchase(server, "acme", **fields)
    fake.set_invoice_status(answer["btcpay_invoice_id"], "Settled")
    return answer


async def deliver(
    server: Any, fake: FakeBTCPay, btcpay_id: str, event_type: str = "InvoiceSettled", **kw: Any
) -> httpx.Response:
    return await fake.deliver_webhook(btcpay_id, event_type, client=server.client, **kw)


def reads(fake: FakeBTCPay) -> int:
    return len(fake.api_requests("GET", INVOICE_READ))


async def invoice_count(server: Any) -> int:
    async with server.state.db.read() as session:
        return int((await session.execute(sa.select(sa.func.count(Invoice.id)))).scalar_one())


async def provider_row(server: Any, provider_id: str) -> PaymentProvider:
    async with server.state.db.read() as session:
        row = await session.get(PaymentProvider, provider_id)
    assert row is not None
    return row


async def add_profile(server: Any, name: str) -> str:
    """A second merchant profile, written straight to the database (setup only)."""
    profile_id = new_id()
    at = clock.now()
    async with server.state.db.write() as session:
        session.add(
            MerchantProfile(
                id=profile_id, name=name, is_default=False, created_at=at, updated_at=at
            )
        )
    return profile_id


def assert_ok_empty(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.content == b""


# --- creating the invoice ------------------------------------------------------------------


async def test_purchase_outside_sandbox_creates_a_btcpay_invoice(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    price, amount = PRICE, "0.00007000"
    server, provider_id, product = await shop(make_server, fake_btcpay, price=price)
    answer = await purchase(server, "acme", buyer_email="buyer@example.com")
    invoice_id = answer["invoice_id"]
    btcpay_id = answer["btcpay_invoice_id"]
    assert answer == {
        "invoice_id": invoice_id,
        "btcpay_invoice_id": btcpay_id,
        "checkout_url": f"{fake_btcpay.url}/i/{btcpay_id}",
        "amount_sats": price,
        "base_price_sats": price,
        "discount_applied_sats": 0,
        "poll_url": f"http://keysat.test/v1/purchase/{invoice_id}",
    }
    assert btcpay_id in fake_btcpay.invoices

    [create] = fake_btcpay.api_requests("POST", INVOICE_CREATE)
    assert create.path == f"/api/v1/stores/{fake_btcpay.store_id}/invoices"
    assert create.headers["authorization"] == f"token {fake_btcpay.api_key}"
    assert create.headers["content-type"].startswith("application/json")
    assert create.json() == {
        "amount": amount,
        "currency": "BTC",
        "metadata": {"productId": product["id"], "orderId": invoice_id, "source": "keysat"},
        "checkout": {
            "redirectURL": f"http://keysat.test/thank-you?invoice_id={invoice_id}",
            "redirectAutomatically": True,
        },
    }

    row = await invoice_row(server, invoice_id)
    assert (row.kind, row.status, row.provider_kind) == ("purchase", "pending", "btcpay")
    assert row.payment_provider_id == provider_id
    assert row.provider_invoice_id == btcpay_id
    assert row.checkout_url == answer["checkout_url"]
    assert row.rail == "lightning"
    assert row.amount_sats == price
    assert row.buyer_email == "buyer@example.com"
    assert await licenses_for_invoice(server, invoice_id) == []
    assert await events(server, "license.issued") == []
    assert (await poll(server, invoice_id))["status"] == "pending"


async def test_amount_is_sent_as_btc_with_eight_decimals(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    for slug, price, amount in [
        ("one-sat", 1, "0.00000001"),
        ("round", 50_000, "0.00050000"),
        ("big", 123_456_789, "1.23456789"),
        ("whole", 200_000_000, "2.00000000"),
    ]:
        await create_product(server, slug, price_sats=price)
        answer = await purchase(server, slug)
        assert answer["amount_sats"] == price
        sent = fake_btcpay.api_requests("POST", INVOICE_CREATE)[-1].json()
        assert (sent["amount"], sent["currency"]) == (amount, "BTC")
        assert fake_btcpay.invoices[answer["btcpay_invoice_id"]].amount == amount


async def test_purchase_sends_the_buyers_redirect_and_rail(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await purchase(
        server, "acme", redirect_url="http://keysat.test/done?x=1", rail="On-Chain"
    )
    [create] = fake_btcpay.api_requests("POST", INVOICE_CREATE)
    assert create.json()["checkout"] == {
        "redirectURL": "http://keysat.test/done?x=1",
        "redirectAutomatically": True,
    }
    assert (await invoice_row(server, answer["invoice_id"])).rail == "onchain"


async def test_sandbox_mode_uses_a_regtest_store(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, provider_id, _ = await shop(
        make_server, fake_btcpay, network="regtest", KEYSAT_SANDBOX_MODE="true"
    )
    answer = await purchase(server, "acme")
    assert answer["btcpay_invoice_id"] in fake_btcpay.invoices
    row = await invoice_row(server, answer["invoice_id"])
    assert (row.provider_kind, row.payment_provider_id) == ("btcpay", provider_id)
    async with server.state.db.read() as session:
        assert (await session.execute(sa.select(SandboxInvoice))).first() is None
    # A regtest store with a known network is not probed again.
    assert fake_btcpay.api_requests("GET", "payment-methods") == []

    fake_btcpay.set_invoice_status(answer["btcpay_invoice_id"], "Settled")
    assert_ok_empty(await deliver(server, fake_btcpay, answer["btcpay_invoice_id"]))
    [lic] = await licenses_for_invoice(server, answer["invoice_id"])
    assert "sandbox" not in lic.license_metadata


async def test_sandbox_mode_never_uses_a_mainnet_store(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(
        make_server, fake_btcpay, network="mainnet", KEYSAT_SANDBOX_MODE="true"
    )
    answer = await purchase(server, "acme")
    assert answer["btcpay_invoice_id"].startswith("sbx_")
    assert (
        answer["checkout_url"]
        == f"http://keysat.test/sandbox/checkout/{answer['btcpay_invoice_id']}"
    )
    row = await invoice_row(server, answer["invoice_id"])
    assert (row.provider_kind, row.payment_provider_id) == ("sandbox", None)
    assert fake_btcpay.api_requests() == [
        r for r in fake_btcpay.api_requests() if r.path.endswith("/webhooks")
    ]


async def test_sandbox_mode_probes_an_unknown_network_again(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, provider_id, _ = await shop(
        make_server, fake_btcpay, network="unknown", KEYSAT_SANDBOX_MODE="true"
    )
    store = f"/api/v1/stores/{fake_btcpay.store_id}"
    for address, network, kind in [
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "mainnet", "sandbox"),
        ("garbage", "unknown", "sandbox"),
        ("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "testnet", "btcpay"),
        ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "regtest", "btcpay"),
    ]:
        async with server.state.db.write() as session:
            await session.execute(
                sa.update(PaymentProvider)
                .where(PaymentProvider.id == provider_id)
                .values(network="unknown")
            )
        before = len(fake_btcpay.api_requests("GET", "payment-methods"))
        fake_btcpay.set_receive_address(address)
        answer = await purchase(server, "acme")
        assert (await invoice_row(server, answer["invoice_id"])).provider_kind == kind, address
        assert (await provider_row(server, provider_id)).network == network
        probe = [r.path for r in fake_btcpay.api_requests("GET", "payment-methods")][before:]
        assert probe == [
            f"{store}/payment-methods",
            f"{store}/payment-methods/BTC-CHAIN/wallet/address",
        ]
    # Once known to be a test network, the store is not probed again.
    probes = len(fake_btcpay.api_requests("GET", "payment-methods"))
    await purchase(server, "acme")
    assert len(fake_btcpay.api_requests("GET", "payment-methods")) == probes


async def test_sandbox_mode_probe_failure_falls_back_to_the_sandbox(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, provider_id, _ = await shop(
        make_server, fake_btcpay, network="unknown", KEYSAT_SANDBOX_MODE="true"
    )
    fake_btcpay.fail_next("GET", "/payment-methods$", status=503)
    answer = await purchase(server, "acme")
    assert (await invoice_row(server, answer["invoice_id"])).provider_kind == "sandbox"
    assert (await provider_row(server, provider_id)).network == "unknown"
    assert fake_btcpay.api_requests("POST", INVOICE_CREATE) == []


@pytest.mark.parametrize(
    ("env", "base"),
    [
        ({"BTCPAY_PUBLIC_URL": "https://pay.example.com"}, "https://pay.example.com"),
        (
            {"BTCPAY_BROWSER_URL": "https://browser.example.com:8443"},
            "https://browser.example.com:8443",
        ),
        (
            {
                "BTCPAY_PUBLIC_URL": "https://pay.example.com",
                "BTCPAY_BROWSER_URL": "https://browser.example.com",
            },
            "https://pay.example.com",
        ),
    ],
)
async def test_checkout_link_is_rewritten_for_buyers(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay, env: dict[str, str], base: str
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay, **env)
    answer = await purchase(server, "acme")
    assert answer["checkout_url"] == f"{base}/i/{answer['btcpay_invoice_id']}"
    row = await invoice_row(server, answer["invoice_id"])
    assert row.checkout_url == answer["checkout_url"]


async def test_provider_down_on_purchase_is_502_and_no_invoice(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    fake_btcpay.fail_next("POST", INVOICE_CREATE, status=500)
    response = await server.client.post("/v1/purchase", json={"product": "acme"})
    assert_error(response, 502, "upstream_error")
    message = response.json()["message"]
    assert message.startswith("upstream error: payment provider create-invoice failed: ")
    assert "HTTP 500" in message
    assert fake_btcpay.api_key not in message
    assert await invoice_count(server) == 0


async def test_provider_refusing_the_key_is_502_without_the_key(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, provider_id, _ = await shop(make_server, fake_btcpay)
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(PaymentProvider)
            .where(PaymentProvider.id == provider_id)
            .values(api_key="revoked-key-0123456789")
        )
    response = await server.client.post("/v1/purchase", json={"product": "acme"})
    assert_error(response, 502, "upstream_error")
    assert "HTTP 401" in response.json()["message"]
    assert "revoked-key-0123456789" not in response.json()["message"]
    assert await invoice_count(server) == 0


async def test_no_provider_outside_sandbox_tells_the_operator_to_connect_one(
    server: Any,
) -> None:
    await create_product(server, "acme", price_sats=PRICE)
    response = await server.client.post("/v1/purchase", json={"product": "acme"})
    assert_error(response, 503, "btcpay_not_configured")
    message = response.json()["message"]
    assert "has no payment providers connected" in message
    assert message.endswith("Connect one in the admin UI.")
    assert await invoice_count(server) == 0


# --- the settle webhook ---------------------------------------------------------------------


async def test_settle_webhook_issues_one_license(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    clock.freeze(T0)
    server, _, product = await shop(make_server, fake_btcpay)
    policy = await create_policy(
        server,
        "acme",
        "pro",
        duration_seconds=30 * 86_400,
        grace_seconds=3_600,
        max_machines=3,
        entitlements=["export", "sync"],
    )
    answer = await paid(server, fake_btcpay, policy_slug="pro", buyer_email="b@example.com")
    invoice_id, btcpay_id = answer["invoice_id"], answer["btcpay_invoice_id"]
    clock.advance(timedelta(minutes=5))
    settled_at = clock.now()

    assert_ok_empty(await deliver(server, fake_btcpay, btcpay_id))

    row = await invoice_row(server, invoice_id)
    assert row.status == "settled"
    assert row.settled_at == settled_at
    [lic] = await licenses_for_invoice(server, invoice_id)
    assert lic.product_id == product["id"]
    assert lic.policy_id == policy["id"]
    assert lic.status == "active"
    assert lic.issued_at == settled_at
    assert lic.expires_at == settled_at + timedelta(days=30)
    assert lic.grace_seconds == 3_600
    assert lic.max_machines == 3
    assert lic.entitlements == ["export", "sync"]
    assert lic.is_trial is False
    assert lic.trial_started_at is None
    assert lic.buyer_email == "b@example.com"
    assert lic.license_metadata == {"source": "purchase", "btcpay_invoice_id": btcpay_id}

    [event] = await events(server, "license.issued")
    assert event["event_type"] == "license.issued"
    assert event["data"]["license_id"] == lic.id
    assert event["data"]["invoice_id"] == invoice_id
    assert event["data"]["source"] == "purchase"
    assert await audit_rows(server, "invoice.amount_mismatch") == []

    polled = await poll(server, invoice_id)
    assert polled["status"] == "settled"
    assert polled["license_id"] == lic.id
    assert polled["license_key"]
    # The event was a hint: the state came from one authenticated read.
    [read] = fake_btcpay.api_requests("GET", INVOICE_READ)
    assert read.path == f"/api/v1/stores/{fake_btcpay.store_id}/invoices/{btcpay_id}"
    assert read.headers["authorization"] == f"token {fake_btcpay.api_key}"


async def test_default_policy_license_without_policy_fields(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    assert_ok_empty(await deliver(server, fake_btcpay, answer["btcpay_invoice_id"]))
    [lic] = await licenses_for_invoice(server, answer["invoice_id"])
    assert lic.license_metadata == {
        "source": "purchase",
        "btcpay_invoice_id": answer["btcpay_invoice_id"],
    }
    assert lic.status == "active"


async def test_payment_settled_event_also_confirms(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    response = await deliver(
        server, fake_btcpay, answer["btcpay_invoice_id"], "InvoicePaymentSettled"
    )
    assert_ok_empty(response)
    assert (await invoice_row(server, answer["invoice_id"])).status == "settled"
    assert len(await licenses_for_invoice(server, answer["invoice_id"])) == 1


async def test_settle_webhook_twice_gives_one_license_and_one_event(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    for _ in range(2):
        assert_ok_empty(await deliver(server, fake_btcpay, answer["btcpay_invoice_id"]))
    assert len(await licenses_for_invoice(server, answer["invoice_id"])) == 1
    assert len(await events(server, "license.issued")) == 1
    assert (await invoice_row(server, answer["invoice_id"])).status == "settled"


async def test_concurrent_settle_webhooks_give_one_license_and_one_event(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    endpoint_ids = []
    for event_types in (["license.issued"], ["*"]):
        created = await server.admin_post(
            "/v1/admin/webhook-endpoints",
            {"url": "https://hooks.example.com/keysat", "event_types": event_types},
        )
        assert created.status_code == 200, created.text
        endpoint_ids.append(created.json()["id"])
    answer = await paid(server, fake_btcpay)
    btcpay_id = answer["btcpay_invoice_id"]
    responses = await asyncio.gather(
        *(deliver(server, fake_btcpay, btcpay_id) for _ in range(6)),
        deliver(server, fake_btcpay, btcpay_id, "InvoicePaymentSettled"),
    )
    for response in responses:
        assert_ok_empty(response)
    assert len(await licenses_for_invoice(server, answer["invoice_id"])) == 1
    assert len(await events(server, "license.issued")) == 1
    # One license.issued delivery per endpoint.
    async with server.state.db.read() as session:
        deliveries = (
            await session.execute(
                sa.select(WebhookDelivery.endpoint_id).where(
                    WebhookDelivery.event_type == "license.issued"
                )
            )
        ).scalars()
        assert sorted(deliveries) == sorted(endpoint_ids)
    assert (await invoice_row(server, answer["invoice_id"])).status == "settled"


async def test_unverified_webhook_is_401_and_changes_nothing(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    for how in ({"bad_signature": True}, {"omit_signature": True}):
        response = await deliver(server, fake_btcpay, answer["btcpay_invoice_id"], **how)
        assert_error(response, 401, "unauthorized", "unauthorized")
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"
    assert await licenses_for_invoice(server, answer["invoice_id"]) == []
    assert await events(server, "license.issued") == []
    assert reads(fake_btcpay) == 0


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_signature_header_forms(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, provider_id, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    secret = (await provider_row(server, provider_id)).webhook_secret
    assert secret is not None
    body = json.dumps(
        {"type": "InvoiceSettled", "invoiceId": answer["btcpay_invoice_id"], "note": "é ✓"},
        indent=2,
        ensure_ascii=False,
    ).encode()
    good = sign(secret, body)
    refused = [
        good.replace("sha256=", "SHA256="),
        good[:-1],
        good[:-1] + "z",
        good.removeprefix("sha256="),
        good + "00",
        sign(secret, json.dumps(json.loads(body)).encode()),
    ]
    for header in refused:
        response = await server.client.post(
            f"/v1/btcpay/webhook/{provider_id}",
            content=body,
            headers={"btcpay-sig": header, "content-type": "application/json"},
        )
        assert_error(response, 401, "unauthorized")
    assert reads(fake_btcpay) == 0
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"
    # Upper-case hex is the same signature; the header name is case-insensitive.
    response = await server.client.post(
        f"/v1/btcpay/webhook/{provider_id}",
        content=body,
        headers={"BTCPAY-SIG": "sha256=" + good[7:].upper()},
    )
    assert_ok_empty(response)
    assert (await invoice_row(server, answer["invoice_id"])).status == "settled"


async def test_signed_but_unusable_body_is_401(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    for overrides in ({"type": None}, {"invoiceId": 12}, {"type": ["InvoiceSettled"]}):
        response = await deliver(
            server, fake_btcpay, answer["btcpay_invoice_id"], body_overrides=overrides
        )
        assert_error(response, 401, "unauthorized")
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"
    assert reads(fake_btcpay) == 0


async def test_settle_webhook_while_btcpay_says_new_leaves_it_pending(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await purchase(server, "acme")
    for status in ("New", "Processing"):
        fake_btcpay.set_invoice_status(answer["btcpay_invoice_id"], status)
        assert_ok_empty(await deliver(server, fake_btcpay, answer["btcpay_invoice_id"]))
        assert (await invoice_row(server, answer["invoice_id"])).status == "pending"
    assert reads(fake_btcpay) == 2
    assert await licenses_for_invoice(server, answer["invoice_id"]) == []
    assert await events(server, "license.issued") == []


async def test_unreachable_btcpay_leaves_it_pending_until_the_reconciler(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    fake_btcpay.fail_next("GET", INVOICE_READ, status=500)
    assert_ok_empty(await deliver(server, fake_btcpay, answer["btcpay_invoice_id"]))
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"
    assert await licenses_for_invoice(server, answer["invoice_id"]) == []
    assert reads(fake_btcpay) == 1

    run = await server.admin_post("/v1/admin/jobs/reconciler/run")
    assert run.status_code == 200, run.text
    assert run.json()["name"] == "reconciler"
    assert (await invoice_row(server, answer["invoice_id"])).status == "settled"
    assert len(await licenses_for_invoice(server, answer["invoice_id"])) == 1
    assert len(await events(server, "license.issued")) == 1


async def test_reconciler_leaves_a_still_unreachable_invoice_pending(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    fake_btcpay.fail_next("GET", INVOICE_READ, status=502)
    run = await server.admin_post("/v1/admin/jobs/reconciler/run")
    assert run.status_code == 200, run.text
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"
    run = await server.admin_post("/v1/admin/jobs/reconciler/run")
    assert (await invoice_row(server, answer["invoice_id"])).status == "settled"


async def test_amount_mismatch_issues_and_records_one_audit_row(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    btcpay_id = answer["btcpay_invoice_id"]
    fake_btcpay.set_invoice_amount(btcpay_id, "0.00000001")
    assert_ok_empty(await deliver(server, fake_btcpay, btcpay_id))
    assert_ok_empty(await deliver(server, fake_btcpay, btcpay_id))

    assert (await invoice_row(server, answer["invoice_id"])).status == "settled"
    assert len(await licenses_for_invoice(server, answer["invoice_id"])) == 1
    [row] = await audit_rows(server, "invoice.amount_mismatch")
    assert row.actor_kind == "system"
    assert (row.target_kind, row.target_id) == ("invoice", answer["invoice_id"])
    assert row.details == {
        "provider_invoice_id": btcpay_id,
        "expected_amount_sats": PRICE,
        "provider_amount_sats": 1,
    }


async def test_amount_tripwire_compares_sats_only(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    for amount, currency, recorded in [
        ("7001", "SATS", 7001),
        ("7000", "SATS", None),
        ("0.000070004", "BTC", None),
        ("0.000070005", "BTC", 7001),
        ("25.00", "USD", None),
        ("0", "BTC", None),
        ("garbage", "BTC", None),
    ]:
        answer = await paid(server, fake_btcpay)
        fake_btcpay.set_invoice_amount(answer["btcpay_invoice_id"], amount, currency)
        assert_ok_empty(await deliver(server, fake_btcpay, answer["btcpay_invoice_id"]))
        assert (await invoice_row(server, answer["invoice_id"])).status == "settled"
        rows = [
            r
            for r in await audit_rows(server, "invoice.amount_mismatch")
            if r.target_id == answer["invoice_id"]
        ]
        assert [r.details["provider_amount_sats"] for r in rows] == (
            [] if recorded is None else [recorded]
        ), (amount, currency)


# --- expiry, invalidation and late payments --------------------------------------------------


async def test_expired_event_after_settlement_keeps_it_settled(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    btcpay_id = answer["btcpay_invoice_id"]
    assert_ok_empty(await deliver(server, fake_btcpay, btcpay_id))
    settled = await invoice_row(server, answer["invoice_id"])

    for status, event_type in (("Expired", "InvoiceExpired"), ("Invalid", "InvoiceInvalid")):
        fake_btcpay.set_invoice_status(btcpay_id, status)
        assert_ok_empty(await deliver(server, fake_btcpay, btcpay_id, event_type))
    row = await invoice_row(server, answer["invoice_id"])
    assert (row.status, row.settled_at, row.updated_at) == (
        "settled",
        settled.settled_at,
        settled.updated_at,
    )
    [lic] = await licenses_for_invoice(server, answer["invoice_id"])
    assert lic.status == "active"
    assert len(await events(server, "license.issued")) == 1


async def test_expired_event_while_pending_expires_it(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await purchase(server, "acme")
    btcpay_id = answer["btcpay_invoice_id"]
    # The claim alone changes nothing: BTCPay still says New.
    assert_ok_empty(await deliver(server, fake_btcpay, btcpay_id, "InvoiceExpired"))
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"

    fake_btcpay.set_invoice_status(btcpay_id, "Expired")
    assert_ok_empty(await deliver(server, fake_btcpay, btcpay_id, "InvoiceExpired"))
    row = await invoice_row(server, answer["invoice_id"])
    assert (row.status, row.settled_at) == ("expired", None)
    assert (await poll(server, answer["invoice_id"]))["status"] == "expired"
    assert await licenses_for_invoice(server, answer["invoice_id"]) == []


async def test_invalid_event_while_pending_invalidates_it(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await purchase(server, "acme")
    fake_btcpay.set_invoice_status(answer["btcpay_invoice_id"], "Invalid")
    assert_ok_empty(
        await deliver(server, fake_btcpay, answer["btcpay_invoice_id"], "InvoiceInvalid")
    )
    assert (await invoice_row(server, answer["invoice_id"])).status == "invalid"
    # Invalid never turns into expired.
    fake_btcpay.set_invoice_status(answer["btcpay_invoice_id"], "Expired")
    assert_ok_empty(
        await deliver(server, fake_btcpay, answer["btcpay_invoice_id"], "InvoiceExpired")
    )
    assert (await invoice_row(server, answer["invoice_id"])).status == "invalid"


@pytest.mark.parametrize(
    ("first", "event_type"), [("Expired", "InvoiceExpired"), ("Invalid", "InvoiceInvalid")]
)
async def test_late_payment_after_expiry_settles_and_issues(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay, first: str, event_type: str
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await purchase(server, "acme")
    btcpay_id = answer["btcpay_invoice_id"]
    fake_btcpay.set_invoice_status(btcpay_id, first)
    assert_ok_empty(await deliver(server, fake_btcpay, btcpay_id, event_type))
    assert (await invoice_row(server, answer["invoice_id"])).status == first.lower()

    fake_btcpay.set_invoice_status(btcpay_id, "Settled")
    assert_ok_empty(await deliver(server, fake_btcpay, btcpay_id))
    row = await invoice_row(server, answer["invoice_id"])
    assert row.status == "settled"
    assert row.settled_at is not None
    assert len(await licenses_for_invoice(server, answer["invoice_id"])) == 1
    assert len(await events(server, "license.issued")) == 1


# --- events that are ignored -------------------------------------------------------------------


async def test_mismatched_store_or_order_is_ignored(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    for overrides in (
        {"storeId": "AnotherStoreIdAnotherStoreIdAnotherStoreId12"},
        {"metadata": {"orderId": "00000000-0000-4000-8000-000000000000"}},
        {"metadata": {"orderId": "not-our-id"}},
    ):
        response = await deliver(
            server, fake_btcpay, answer["btcpay_invoice_id"], body_overrides=overrides
        )
        assert_ok_empty(response)
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"
    assert await licenses_for_invoice(server, answer["invoice_id"]) == []
    assert reads(fake_btcpay) == 0


async def test_event_without_store_or_metadata_is_still_confirmed(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    response = await deliver(
        server,
        fake_btcpay,
        answer["btcpay_invoice_id"],
        body_overrides={"storeId": None, "metadata": None},
    )
    assert_ok_empty(response)
    assert (await invoice_row(server, answer["invoice_id"])).status == "settled"


async def test_btcpay_reporting_another_order_id_is_ignored(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    """The confirmation read itself names another order: nothing is applied."""
    server, _, _ = await shop(make_server, fake_btcpay)
    first = await paid(server, fake_btcpay)
    second = await paid(server, fake_btcpay)
    # Point our first invoice at BTCPay's second invoice (whose orderId is the second).
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(Invoice)
            .where(Invoice.id == second["invoice_id"])
            .values(provider_invoice_id="moved-" + second["btcpay_invoice_id"])
        )
        await session.execute(
            sa.update(Invoice)
            .where(Invoice.id == first["invoice_id"])
            .values(provider_invoice_id=second["btcpay_invoice_id"])
        )
    response = await deliver(
        server, fake_btcpay, second["btcpay_invoice_id"], body_overrides={"metadata": None}
    )
    assert_ok_empty(response)
    assert reads(fake_btcpay) == 1
    assert (await invoice_row(server, first["invoice_id"])).status == "pending"
    assert await licenses_for_invoice(server, first["invoice_id"]) == []


async def test_event_types_we_do_not_act_on_are_acknowledged(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    for event_type in (
        "InvoiceCreated",
        "InvoiceReceivedPayment",
        "InvoiceProcessing",
        "PaymentRequestUpdated",
        "invoicesettled",
        "",
    ):
        response = await deliver(server, fake_btcpay, answer["btcpay_invoice_id"], event_type)
        assert_ok_empty(response)
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"
    assert reads(fake_btcpay) == 0


async def test_unknown_invoice_is_acknowledged_without_a_read(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    response = await deliver(
        server, fake_btcpay, answer["btcpay_invoice_id"], body_overrides={"invoiceId": "NoSuch"}
    )
    assert_ok_empty(response)
    assert reads(fake_btcpay) == 0
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"


# --- which provider a webhook speaks for -------------------------------------------------------


async def test_unknown_provider_id_is_404(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    for path_id in ("00000000-0000-4000-8000-000000000000", "not-a-uuid"):
        response = await server.client.post(
            f"/v1/btcpay/webhook/{path_id}",
            content=b'{"type": "InvoiceSettled", "invoiceId": "x"}',
            headers={"btcpay-sig": "sha256=" + "0" * 64},
        )
        assert_error(response, 404, "not_found", f"not found: payment provider {path_id}")
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"


async def test_zaprite_row_on_the_btcpay_path_is_404(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay, fake_zaprite: FakeZaprite
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    zaprite_id = await connect_zaprite_row(server, fake_zaprite)
    response = await server.client.post(
        f"/v1/btcpay/webhook/{zaprite_id}",
        content=b'{"type": "InvoiceSettled", "invoiceId": "x"}',
    )
    assert_error(response, 404, "not_found", f"not found: payment provider {zaprite_id}")


async def test_btcpay_row_on_the_zaprite_path_is_404(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, provider_id, _ = await shop(make_server, fake_btcpay)
    response = await server.client.post(
        f"/v1/zaprite/webhook/{provider_id}", json={"data": {"id": "x"}}
    )
    assert_error(response, 404, "not_found", f"not found: payment provider {provider_id}")


async def legacy_webhook(fake: FakeBTCPay, secret: str) -> str:
    """A webhook registered at the fake for the legacy URL (as Keysat 0.2.0 set up)."""
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{fake.url}/api/v1/stores/{fake.store_id}/webhooks",
            headers={"Authorization": f"token {fake.api_key}"},
            json={"url": "http://keysat.test/v1/btcpay/webhook", "secret": secret},
        )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def test_legacy_webhook_uses_the_default_profiles_provider(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, provider_id, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    secret = (await provider_row(server, provider_id)).webhook_secret
    assert secret is not None
    webhook_id = await legacy_webhook(fake_btcpay, secret)

    bad = await deliver(
        server, fake_btcpay, answer["btcpay_invoice_id"], webhook_id=webhook_id, bad_signature=True
    )
    assert_error(bad, 401, "unauthorized")
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"

    good = await deliver(server, fake_btcpay, answer["btcpay_invoice_id"], webhook_id=webhook_id)
    assert_ok_empty(good)
    assert (await invoice_row(server, answer["invoice_id"])).status == "settled"
    assert len(await licenses_for_invoice(server, answer["invoice_id"])) == 1


async def test_legacy_webhook_without_a_default_btcpay_provider_is_503(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await make_server()
    response = await server.client.post(
        "/v1/btcpay/webhook", content=b'{"type": "InvoiceSettled", "invoiceId": "x"}'
    )
    assert_error(response, 503, "btcpay_not_configured")
    assert response.json()["message"].startswith("payment provider not configured: ")

    # A BTCPay provider on another profile does not make the legacy path work.
    other = await add_profile(server, "Other shop")
    await connect_btcpay_row(server, fake_btcpay, profile_id=other)
    response = await server.client.post(
        "/v1/btcpay/webhook", content=b'{"type": "InvoiceSettled", "invoiceId": "x"}'
    )
    assert_error(response, 503, "btcpay_not_configured")


async def test_webhook_for_an_invoice_of_another_provider_changes_nothing(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    other = await add_profile(server, "Other shop")
    other_provider = await connect_btcpay_row(server, fake_btcpay, profile_id=other)
    other_webhook = (await provider_row(server, other_provider)).webhook_id
    assert other_webhook is not None

    response = await deliver(
        server, fake_btcpay, answer["btcpay_invoice_id"], webhook_id=other_webhook
    )
    assert_ok_empty(response)
    assert reads(fake_btcpay) == 0
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"
    assert await licenses_for_invoice(server, answer["invoice_id"]) == []


async def test_btcpay_webhook_cannot_touch_a_sandbox_invoice(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, provider_id, _ = await shop(
        make_server, fake_btcpay, network="mainnet", KEYSAT_SANDBOX_MODE="true"
    )
    answer = await purchase(server, "acme")
    assert answer["btcpay_invoice_id"].startswith("sbx_")
    secret = (await provider_row(server, provider_id)).webhook_secret
    assert secret is not None
    body = json.dumps({"type": "InvoiceSettled", "invoiceId": answer["btcpay_invoice_id"]}).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    response = await server.client.post(
        f"/v1/btcpay/webhook/{provider_id}", content=body, headers={"BTCPay-Sig": signature}
    )
    assert_ok_empty(response)
    assert (await invoice_row(server, answer["invoice_id"])).status == "pending"
    assert reads(fake_btcpay) == 0


# --- our client against BTCPay's OpenAPI document ----------------------------------------------


async def test_client_and_provider_exchanges_match_the_openapi_document(
    fake_btcpay: FakeBTCPay,
) -> None:
    clock.freeze(T0)
    fake_btcpay.set_receive_address("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx")
    row = PaymentProvider(
        id=new_id(),
        merchant_profile_id=new_id(),
        kind="btcpay",
        label="BTCPay",
        api_key=fake_btcpay.api_key,
        base_url=fake_btcpay.url + "/",
        store_id=fake_btcpay.store_id,
    )
    async with httpx.AsyncClient() as http:
        provider = BTCPayProvider(row, http, "https://pay.example.com")
        created = await provider.create_invoice(
            InvoiceRequest(
                amount=Money("SAT", 50_000),
                external_order_id="order-1",
                redirect_url="https://shop.example.com/thanks",
                metadata={
                    "productId": "p1",
                    "subscriptionId": "s1",
                    "cycleStartAt": "2031-03-04T05:06:07.123456+00:00",
                },
                buyer_email="buyer@example.com",
                expires_at=T0 + timedelta(days=3),
            )
        )
        assert created.checkout_url == f"https://pay.example.com/i/{created.provider_invoice_id}"
        assert await provider.get_invoice_status(created.provider_invoice_id) == Snapshot(
            status=SnapshotStatus.PENDING,
            amount=Money("SAT", 50_000),
            external_order_id="order-1",
        )
        fake_btcpay.set_invoice_status(created.provider_invoice_id, "Settled")
        assert (await provider.get_invoice_status(created.provider_invoice_id)).status is (
            SnapshotStatus.SETTLED
        )
        # Short expiry: omitted, the store default applies.
        await provider.create_invoice(
            InvoiceRequest(
                amount=Money("BTC", 1),
                external_order_id="order-2",
                redirect_url="https://shop.example.com/thanks",
                metadata={"orderId": "caller-order", "source": "caller"},
                expires_at=T0 + timedelta(minutes=14),
            )
        )
        client = BTCPayClient(http, fake_btcpay.url, fake_btcpay.api_key)
        stores = await client.list_stores()
        assert [s["id"] for s in stores] == [fake_btcpay.store_id]
        hook = await client.register_webhook(
            fake_btcpay.store_id, "https://keysat.example.com/v1/btcpay/webhook/x", "SECRET"
        )
        assert hook["secret"] == "SECRET"
        methods = await client.payment_methods(fake_btcpay.store_id)
        assert {m["paymentMethodId"] for m in methods} == {"BTC-CHAIN", "BTC-LN"}
        assert await detect_network(client, fake_btcpay.store_id) == "testnet"
        payment_hash = await client.pay_lightning_invoice(
            fake_btcpay.store_id, "lnbcrt500u1pjfakeinvoicefortipsxyz"
        )
        assert payment_hash is not None and len(payment_hash) == 64
        await client.delete_webhook(fake_btcpay.store_id, hook["id"])
        await client.delete_webhook(fake_btcpay.store_id, hook["id"])  # 404 counts as done
        await client.revoke_api_key()
        with pytest.raises(UpstreamError) as gone:
            await client.revoke_api_key()
        assert gone.value.status == 401

    recorded = fake_btcpay.api_requests()
    creates = [r for r in recorded if r.method == "POST" and r.path.endswith("/invoices")]
    assert creates[0].json() == {
        "amount": "0.00050000",
        "currency": "BTC",
        "metadata": {
            "productId": "p1",
            "subscriptionId": "s1",
            "cycleStartAt": "2031-03-04T05:06:07.123456+00:00",
            "orderId": "order-1",
            "source": "keysat",
        },
        "checkout": {
            "redirectURL": "https://shop.example.com/thanks",
            "redirectAutomatically": True,
            "expirationMinutes": 4320,
        },
    }
    assert creates[1].json() == {
        "amount": "0.00000001",
        "currency": "BTC",
        "metadata": {"orderId": "caller-order", "source": "caller"},
        "checkout": {
            "redirectURL": "https://shop.example.com/thanks",
            "redirectAutomatically": True,
        },
    }
    for exchange in recorded:
        assert exchange.headers["authorization"] == f"token {fake_btcpay.api_key}"
        if exchange.body:
            assert exchange.headers["content-type"].startswith("application/json")
        assert validate_exchange(exchange) == [], exchange.path
    assert {(r.method, r.path.replace(fake_btcpay.store_id, "{store}")) for r in recorded} >= {
        ("POST", "/api/v1/stores/{store}/invoices"),
        ("GET", "/api/v1/stores/{store}/invoices/" + created.provider_invoice_id),
        ("GET", "/api/v1/stores"),
        ("POST", "/api/v1/stores/{store}/webhooks"),
        ("DELETE", "/api/v1/stores/{store}/webhooks/" + hook["id"]),
        ("DELETE", "/api/v1/api-keys/current"),
        ("GET", "/api/v1/stores/{store}/payment-methods"),
        ("GET", "/api/v1/stores/{store}/payment-methods/BTC-CHAIN/wallet/address"),
        ("POST", "/api/v1/stores/{store}/lightning/BTC/invoices/pay"),
    }
    assert fake_btcpay.api_key not in fake_btcpay.api_keys
    assert fake_btcpay.lightning_payments == ["lnbcrt500u1pjfakeinvoicefortipsxyz"]


async def test_client_errors_carry_status_and_body_but_never_the_key(
    fake_btcpay: FakeBTCPay,
) -> None:
    async with httpx.AsyncClient() as http:
        client = BTCPayClient(http, fake_btcpay.url, fake_btcpay.api_key)
        fake_btcpay.fail_next("GET", INVOICE_READ, status=500)
        with pytest.raises(UpstreamError) as failure:
            await client.get_invoice(fake_btcpay.store_id, "Nope")
        assert failure.value.status == 500
        assert "injected-failure" in failure.value.body
        with pytest.raises(UpstreamError) as missing:
            await client.get_invoice(fake_btcpay.store_id, "Nope")
        assert missing.value.status == 404
        wrong = BTCPayClient(http, fake_btcpay.url, "wrong-key-abcdef")
        with pytest.raises(UpstreamError) as refused:
            await wrong.list_stores()
        assert refused.value.status == 401
        assert "wrong-key-abcdef" not in str(refused.value)
    for exchange in fake_btcpay.api_requests():
        assert validate_exchange(exchange) == [], exchange.path


# --- more paths through the pipeline ----------------------------------------------------------


async def test_btcpay_read_errors_leave_it_pending(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    for status in (404, 401, 503):
        fake_btcpay.fail_next("GET", INVOICE_READ, status=status)
        assert_ok_empty(await deliver(server, fake_btcpay, answer["btcpay_invoice_id"]))
        assert (await invoice_row(server, answer["invoice_id"])).status == "pending"
    assert await licenses_for_invoice(server, answer["invoice_id"]) == []
    assert reads(fake_btcpay) == 3


async def test_reconciler_applies_expiry_reported_by_btcpay(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    expired = await purchase(server, "acme")
    still_new = await purchase(server, "acme")
    fake_btcpay.set_invoice_status(expired["btcpay_invoice_id"], "Expired")
    run = await server.admin_post("/v1/admin/jobs/reconciler/run")
    assert run.status_code == 200, run.text
    assert (await invoice_row(server, expired["invoice_id"])).status == "expired"
    assert (await invoice_row(server, still_new["invoice_id"])).status == "pending"


@pytest.mark.parametrize("sandbox_mode", ["false", "true"])
async def test_rail_no_btcpay_serves_is_400_never_the_sandbox(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay, sandbox_mode: str
) -> None:
    server, _, _ = await shop(
        make_server, fake_btcpay, network="regtest", KEYSAT_SANDBOX_MODE=sandbox_mode
    )
    async with server.state.db.read() as session:
        profile = (
            await session.execute(sa.select(MerchantProfile).where(MerchantProfile.is_default))
        ).scalar_one()
    response = await server.client.post("/v1/purchase", json={"product": "acme", "rail": "card"})
    assert_error(
        response,
        400,
        "bad_request",
        f"bad request: no payment provider on merchant profile '{profile.name}' serves the "
        "'card' rail",
    )
    assert await invoice_count(server) == 0
    assert fake_btcpay.api_requests("POST", INVOICE_CREATE) == []


async def test_two_processes_settle_one_invoice_once(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    first, _, _ = await shop(make_server, fake_btcpay)
    second = await make_server()
    answer = await paid(first, fake_btcpay)
    btcpay_id = answer["btcpay_invoice_id"]
    responses = await asyncio.gather(
        *(deliver(server, fake_btcpay, btcpay_id) for server in (first, second, first, second))
    )
    for response in responses:
        assert_ok_empty(response)
    assert len(await licenses_for_invoice(first, answer["invoice_id"])) == 1
    assert len(await events(first, "license.issued")) == 1


FAIL_LICENSES = {
    "sqlite": [
        "CREATE TRIGGER fail_licenses BEFORE INSERT ON licenses "
        "BEGIN SELECT RAISE(ABORT, 'licenses are read-only today'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION fail_licenses() RETURNS trigger AS $$ BEGIN "
        "RAISE EXCEPTION 'licenses are read-only today'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER fail_licenses BEFORE INSERT ON licenses "
        "FOR EACH ROW EXECUTE FUNCTION fail_licenses()",
    ],
}


async def test_failure_while_applying_is_500_and_rolls_back(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    """billing.md 4.2 step 6: the provider gets a 500 and redelivers; nothing half-done."""
    from keysat.app import create_app

    server, _, _ = await shop(make_server, fake_btcpay)
    answer = await paid(server, fake_btcpay)
    fake_btcpay.set_invoice_amount(answer["btcpay_invoice_id"], "0.00000001")
    async with server.state.db.write() as session:
        dialect = session.bind.dialect.name
        for statement in FAIL_LICENSES[dialect]:
            await session.execute(sa.text(statement))
    transport = httpx.ASGITransport(app=create_app(server.state), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://keysat.test") as client:
        response = await fake_btcpay.deliver_webhook(answer["btcpay_invoice_id"], client=client)
    assert_error(response, 500, "internal_error")
    assert "read-only" not in response.text
    row = await invoice_row(server, answer["invoice_id"])
    assert (row.status, row.settled_at) == ("pending", None)
    assert await events(server, "license.issued") == []
    assert await audit_rows(server, "invoice.amount_mismatch") == []

    async with server.state.db.write() as session:
        await session.execute(
            sa.text(
                "DROP TRIGGER fail_licenses" + (" ON licenses" if dialect == "postgresql" else "")
            )
        )
    assert_ok_empty(await deliver(server, fake_btcpay, answer["btcpay_invoice_id"]))
    assert (await invoice_row(server, answer["invoice_id"])).status == "settled"
    assert len(await licenses_for_invoice(server, answer["invoice_id"])) == 1
    assert len(await events(server, "license.issued")) == 1
    assert len(await audit_rows(server, "invoice.amount_mismatch")) == 1


async def code_uses(server: Any, code_id: str) -> int:
    response = await server.admin_get(f"/v1/admin/discount-codes/{code_id}")
    assert response.status_code == 200, response.text
    return int(response.json()["code"]["used_count"])


async def test_discount_slot_follows_the_btcpay_invoice(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, _, _ = await shop(make_server, fake_btcpay)
    created = await server.admin_post(
        "/v1/admin/discount-codes",
        {"code": "ONCE", "kind": "fixed_sats", "amount": 1000, "max_uses": 1},
    )
    assert created.status_code == 200, created.text
    code_id = created.json()["id"]

    # BTCPay down: 502, and the reserved slot is given back.
    fake_btcpay.fail_next("POST", INVOICE_CREATE, status=500)
    failed = await server.client.post("/v1/purchase", json={"product": "acme", "code": "once"})
    assert_error(failed, 502, "upstream_error")
    assert await code_uses(server, code_id) == 0
    assert await invoice_count(server) == 0

    # The discounted invoice is sent to BTCPay at the final price.
    first = await purchase(server, "acme", code="ONCE")
    assert (first["amount_sats"], first["discount_applied_sats"]) == (PRICE - 1000, 1000)
    assert fake_btcpay.api_requests("POST", INVOICE_CREATE)[-1].json()["amount"] == "0.00006000"
    assert await code_uses(server, code_id) == 1
    exhausted = await server.client.post("/v1/purchase", json={"product": "acme", "code": "ONCE"})
    assert_error(exhausted, 400, "bad_request")

    # BTCPay expires it: the slot comes back.
    fake_btcpay.set_invoice_status(first["btcpay_invoice_id"], "Expired")
    assert_ok_empty(
        await deliver(server, fake_btcpay, first["btcpay_invoice_id"], "InvoiceExpired")
    )
    assert (await invoice_row(server, first["invoice_id"])).status == "expired"
    assert await code_uses(server, code_id) == 0

    # Paid: the slot is consumed for good and the code is recorded as redeemed.
    second = await purchase(server, "acme", code="ONCE")
    fake_btcpay.set_invoice_status(second["btcpay_invoice_id"], "Settled")
    assert_ok_empty(await deliver(server, fake_btcpay, second["btcpay_invoice_id"]))
    assert (await invoice_row(server, second["invoice_id"])).status == "settled"
    assert await code_uses(server, code_id) == 1
    [redeemed] = await audit_rows(server, "code.redeemed")
    assert redeemed.details["invoice_id"] == second["invoice_id"]
    assert len(await events(server, "code.redeemed")) == 1


class ChattyBTCPay(FakeBTCPay):
    """A BTCPay whose invoice creation fails with a very long error page."""

    async def _create_invoice(self, request: Any) -> Any:
        from starlette.responses import PlainTextResponse

        return PlainTextResponse("E" * 600 + "TAIL" + "x" * 1400, status_code=500)


async def test_provider_error_body_is_cut_to_500_characters(
    make_server: Callable[..., Any],
) -> None:
    with ChattyBTCPay() as fake:
        server, _, _ = await shop(make_server, fake)
        response = await server.client.post("/v1/purchase", json={"product": "acme"})
    assert_error(response, 502, "upstream_error")
    message = response.json()["message"]
    assert message.endswith("E" * 500)
    assert "TAIL" not in message
    assert "E" * 501 not in message


async def test_provider_unreachable_on_purchase_is_502(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server, provider_id, _ = await shop(make_server, fake_btcpay)
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(PaymentProvider)
            .where(PaymentProvider.id == provider_id)
            .values(base_url="http://127.0.0.1:9")
        )
    response = await server.client.post("/v1/purchase", json={"product": "acme"})
    assert_error(response, 502, "upstream_error")
    assert response.json()["message"].startswith(
        "upstream error: payment provider create-invoice failed: "
    )
    assert await invoice_count(server) == 0
