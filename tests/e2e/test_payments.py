"""Buying a tier end to end: real `keysat serve` processes, the official SDK, and fake
providers that speak BTCPay's and Zaprite's protocols over HTTP (payments.md 7.5)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from keysat_licensing_client import (
    Client,
    LicensingError,
    PublicKey,
    StartPurchaseOptions,
    Verifier,
)

from e2e.harness import KeysatServer, launch_server
from fakes.btcpay import FakeBTCPay
from fakes.zaprite import FakeZaprite

pytestmark = pytest.mark.e2e


def form_post(url: str, fields: dict[str, Any]) -> httpx.Response:
    """What BTCPay's consent page does: a form post of the new key to our callback."""
    return httpx.post(url, data=fields, timeout=15.0)


def count_rows(server: KeysatServer, table: str, where: str = "") -> int:
    query = f"SELECT count(*) FROM {table} {where}"  # noqa: S608 - test-only, fixed strings
    url = server.database_url
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            return int(connection.execute(query).fetchone()[0])

    async def read() -> int:
        connection = await asyncpg.connect(url)
        try:
            return int(await connection.fetchval(query))
        finally:
            await connection.close()

    return asyncio.run(read())


def execute(server: KeysatServer, statement: str, *params: Any) -> None:
    """Direct setup writes (allowed for state the API cannot create in a test)."""
    url = server.database_url
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            connection.execute(statement.replace("$", "?"), params)
        return

    async def write() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(statement, *params)
        finally:
            await connection.close()

    asyncio.run(write())


def assert_key_validates(sdk: Client, key: str, product: str, entitlement: str) -> None:
    offline = Verifier(PublicKey.from_pem(sdk.fetch_pubkey_pem())).verify(key)
    assert entitlement in offline.entitlements
    online = sdk.validate(key, product_slug=product, fingerprint="e2e-laptop")
    assert online.ok, online.reason
    assert entitlement in (online.entitlements or [])


# --- the sandbox -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeysatServer]:
    """`make run`'s mode: development, so sandbox mode with the sandbox provider."""
    with launch_server(
        tmp_path_factory.mktemp("sandbox"), {"KEYSAT_ENV": "development"}
    ) as running:
        running.create_product("sbx-app", name="Sandbox App", price_sats=21_000)
        running.create_policy("sbx-app", "pro", entitlements=["pro"], max_machines=2)
        running.create_policy("sbx-app", "free", price_sats_override=0, entitlements=["basic"])
        yield running


def test_sdk_buys_a_tier_through_the_sandbox(sandbox_server: KeysatServer) -> None:
    sdk = sandbox_server.sdk()
    tiers = sdk.list_public_policies("sbx-app")
    assert [tier.slug for tier in tiers.policies] == ["free", "pro"]

    session = sdk.start_purchase(
        "sbx-app", StartPurchaseOptions(policy_slug="pro", buyer_email="ada@example.com")
    )
    assert session.amount_sats == 21_000 and session.checkout_url.startswith(
        f"{sandbox_server.base_url}/sandbox/checkout/sbx_"
    )
    assert sdk.poll_purchase(session.invoice_id).license_key is None

    paid = sandbox_server.admin_post(f"/v1/admin/sandbox/invoices/{session.invoice_id}/pay")
    assert paid["status"] == "settled"
    key = sdk.wait_for_license(session.invoice_id, interval_s=0.05, timeout_s=10)
    assert_key_validates(sdk, key, "sbx-app", "pro")


def test_sdk_buys_through_the_checkout_page_buttons(sandbox_server: KeysatServer) -> None:
    sdk = sandbox_server.sdk()
    session = sdk.start_purchase("sbx-app", StartPurchaseOptions(policy_slug="pro"))
    with httpx.Client(timeout=15.0) as browser:
        page = browser.get(session.checkout_url)
        assert page.status_code == 200 and "Simulate payment" in page.text
        answer = browser.post(
            f"{session.checkout_url}/pay", headers={"Origin": sandbox_server.base_url}
        )
    assert answer.status_code == 303
    assert answer.headers["location"].endswith(f"/thank-you?invoice_id={session.invoice_id}")
    key = sdk.wait_for_license(session.invoice_id, interval_s=0.05, timeout_s=10)
    assert_key_validates(sdk, key, "sbx-app", "pro")


def test_sdk_free_tier_is_issued_inline_and_polls_to_the_same_key(
    sandbox_server: KeysatServer,
) -> None:
    sdk = sandbox_server.sdk()
    session = sdk.start_purchase("sbx-app", StartPurchaseOptions(policy_slug="free"))
    assert session.amount_sats == 0 and session.checkout_url == ""
    assert session.btcpay_invoice_id == f"free-{session.invoice_id}"
    key = sdk.wait_for_license(session.invoice_id, interval_s=0.05, timeout_s=5)
    assert_key_validates(sdk, key, "sbx-app", "basic")


def test_sdk_gives_up_on_an_expired_invoice(sandbox_server: KeysatServer) -> None:
    sdk = sandbox_server.sdk()
    session = sdk.start_purchase("sbx-app", StartPurchaseOptions(policy_slug="pro"))
    sandbox_server.admin_post(f"/v1/admin/sandbox/invoices/{session.invoice_id}/expire")
    with pytest.raises(LicensingError, match="expired"):
        sdk.wait_for_license(session.invoice_id, interval_s=0.05, timeout_s=5)


def test_sdk_sees_purchase_errors_as_server_errors(sandbox_server: KeysatServer) -> None:
    sdk = sandbox_server.sdk()
    with pytest.raises(LicensingError) as raised:
        sdk.start_purchase("no-such-product")
    assert raised.value.kind == "server_error" and "404" in str(raised.value)
    with pytest.raises(LicensingError, match="400"):
        sdk.start_purchase(
            "sbx-app", StartPurchaseOptions(redirect_url="https://evil.example/phish")
        )


# --- BTCPay Server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def btcpay() -> Iterator[FakeBTCPay]:
    with FakeBTCPay() as fake:
        yield fake


@pytest.fixture(scope="module")
def btcpay_server(
    tmp_path_factory: pytest.TempPathFactory, btcpay: FakeBTCPay
) -> Iterator[KeysatServer]:
    """Production mode with a BTCPay store connected through the one-click flow."""
    with launch_server(
        tmp_path_factory.mktemp("btcpay"), {"BTCPAY_URL": btcpay.url, "KEYSAT_WORKERS": "false"}
    ) as running:
        started = running.admin_post("/v1/admin/btcpay/connect", {"label": "Main store"})
        assert started["authorize_url"].startswith(f"{btcpay.url}/api-keys/authorize?")
        callback = f"{running.base_url}/v1/btcpay/authorize/callback?state={started['state']}"
        answer = form_post(callback, btcpay.authorize(btcpay_permissions(), [btcpay.store_id]))
        assert answer.status_code == 200 and "BTCPay connected" in answer.text
        running.create_product("ln-app", name="Lightning App", price_sats=7_000)
        running.create_policy("ln-app", "pro", entitlements=["pro"])
        yield running


def deliver_together(
    fake: FakeBTCPay,
    invoice_id: str,
    webhook_id: str,
    barrier: threading.Barrier,
    answers: list[int],
) -> None:
    barrier.wait()
    answers.append(fake.deliver_webhook_sync(invoice_id, webhook_id=webhook_id).status_code)


def btcpay_permissions() -> list[str]:
    from fakes.btcpay import KEYSAT_PERMISSIONS

    return list(KEYSAT_PERMISSIONS)


def test_connect_registered_a_webhook_to_our_server(
    btcpay: FakeBTCPay, btcpay_server: KeysatServer
) -> None:
    status = btcpay_server.admin.get("/v1/admin/btcpay/status").json()
    assert status["connected"] is True and status["store_id"] == btcpay.store_id
    assert status["label"] == "Main store"
    [hook] = [h for h in btcpay.webhooks if h.url.startswith(btcpay_server.base_url)]
    assert hook.url == f"{btcpay_server.base_url}/v1/btcpay/webhook/{status['provider_id']}"


def test_sdk_buys_through_btcpay_and_a_signed_webhook(
    btcpay: FakeBTCPay, btcpay_server: KeysatServer
) -> None:
    sdk = btcpay_server.sdk()
    session = sdk.start_purchase("ln-app", StartPurchaseOptions(policy_slug="pro"))
    assert session.checkout_url.startswith(btcpay.url)
    assert btcpay.invoices[session.btcpay_invoice_id].amount == "0.00007000"

    forged = btcpay.deliver_webhook_sync(session.btcpay_invoice_id, bad_signature=True)
    assert forged.status_code == 401
    assert sdk.poll_purchase(session.invoice_id).status == "pending"

    btcpay.set_invoice_status(session.btcpay_invoice_id, "Settled")
    assert btcpay.deliver_webhook_sync(session.btcpay_invoice_id).status_code == 200
    key = sdk.wait_for_license(session.invoice_id, interval_s=0.05, timeout_s=10)
    assert_key_validates(sdk, key, "ln-app", "pro")

    late_expiry = btcpay.deliver_webhook_sync(session.btcpay_invoice_id, "InvoiceExpired")
    assert late_expiry.status_code == 200
    assert sdk.poll_purchase(session.invoice_id).status == "settled"


def test_provider_down_gives_502_then_reconcile_catches_up(
    btcpay: FakeBTCPay, btcpay_server: KeysatServer
) -> None:
    sdk = btcpay_server.sdk()
    btcpay.fail_next("POST", r"/api/v1/stores/[^/]+/invoices", status=503)
    raw = httpx.post(
        f"{btcpay_server.base_url}/v1/purchase", json={"product": "ln-app"}, timeout=15.0
    )
    assert raw.status_code == 502
    assert raw.json()["error"] == "upstream_error"
    assert raw.json()["message"].startswith(
        "upstream error: payment provider create-invoice failed:"
    )

    session = sdk.start_purchase("ln-app", StartPurchaseOptions(policy_slug="pro"))
    btcpay.set_invoice_status(session.btcpay_invoice_id, "Settled")
    # The webhook arrives while BTCPay cannot be read: nothing changes, the sender gets 200.
    btcpay.fail_next("GET", r"/api/v1/stores/[^/]+/invoices/.*", status=500)
    assert btcpay.deliver_webhook_sync(session.btcpay_invoice_id).status_code == 200
    assert sdk.poll_purchase(session.invoice_id).status == "pending"

    job = btcpay_server.admin_post("/v1/admin/jobs/reconciler/run")
    assert job["last_status"] == "ok"
    key = sdk.wait_for_license(session.invoice_id, interval_s=0.05, timeout_s=10)
    assert_key_validates(sdk, key, "ln-app", "pro")


def test_two_processes_on_one_database_issue_one_license_for_one_settle(
    tmp_path: Path, btcpay: FakeBTCPay, btcpay_server: KeysatServer
) -> None:
    """K1: the same settle, at the same moment, to two server processes: one license."""
    env = {"BTCPAY_URL": btcpay.url, "KEYSAT_WORKERS": "false"}
    with launch_server(tmp_path / "second", env, database_url=btcpay_server.database_url) as twin:
        provider_id = btcpay_server.admin.get("/v1/admin/btcpay/status").json()["provider_id"]
        [hook] = [h for h in btcpay.webhooks if h.url.startswith(btcpay_server.base_url)]
        twin_hook = httpx.post(
            f"{btcpay.url}/api/v1/stores/{btcpay.store_id}/webhooks",
            headers={"Authorization": f"token {btcpay.api_key}"},
            json={
                "url": f"{twin.base_url}/v1/btcpay/webhook/{provider_id}",
                "secret": hook.secret,
                "enabled": True,
                "automaticRedelivery": True,
                "authorizedEvents": {"everything": True},
            },
            timeout=15.0,
        ).json()["id"]

        for _ in range(3):
            session = btcpay_server.sdk().start_purchase("ln-app")
            btcpay.set_invoice_status(session.btcpay_invoice_id, "Settled")
            barrier = threading.Barrier(4)
            answers: list[int] = []
            threads = [
                threading.Thread(
                    target=deliver_together,
                    args=(btcpay, session.btcpay_invoice_id, webhook_id, barrier, answers),
                )
                for webhook_id in (hook.id, twin_hook, hook.id, twin_hook)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert answers == [200, 200, 200, 200]
            where = f"WHERE invoice_id = '{session.invoice_id}'"
            assert count_rows(btcpay_server, "licenses", where) == 1
            issued = count_rows(
                btcpay_server,
                "webhook_events",
                f"WHERE event_type = 'license.issued' AND payload_json LIKE "
                f"'%{session.invoice_id}%'",
            )
            assert issued == 1
            assert twin.sdk().poll_purchase(session.invoice_id).license_key


# --- Zaprite -------------------------------------------------------------------------------


def test_sdk_buys_through_zaprite_and_unsigned_hints(tmp_path: Path) -> None:
    with (
        FakeZaprite() as zaprite,
        launch_server(tmp_path / "zaprite", {"KEYSAT_WORKERS": "false"}) as server,
    ):
        status = server.admin.get("/v1/admin/zaprite/status").json()
        # Connecting Zaprite needs a Pro self-license, which only the real trust root
        # signs; the provider row is set up directly instead.
        provider_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        stamp: Any = (
            now
            if not server.database_url.startswith("sqlite")
            else now.isoformat(timespec="microseconds")
        )
        profile: Any = status["merchant_profile_id"]
        if not server.database_url.startswith("sqlite"):
            profile = uuid.UUID(profile)
        execute(
            server,
            "INSERT INTO payment_providers (id, merchant_profile_id, kind, label, api_key, "
            "base_url, connected_at, updated_at) VALUES ($1, $2, 'zaprite', 'Cards', $3, $4, "
            "$5, $6)",
            provider_id if server.database_url.startswith("sqlite") else uuid.UUID(provider_id),
            profile,
            zaprite.api_key,
            zaprite.url,
            stamp,
            stamp,
        )
        server.create_product("card-app", price_sats=9_000)
        sdk = server.sdk()
        session = sdk.start_purchase("card-app", StartPurchaseOptions(buyer_email="ada@x.io"))
        order = zaprite.order(session.btcpay_invoice_id)
        assert (order["amount"], order["currency"]) == (9_000, "BTC")
        hook_url = f"{server.base_url}/v1/zaprite/webhook/{provider_id}"

        # A forged "paid" hint while the order is unpaid changes nothing.
        assert zaprite.post_webhook_sync(hook_url, order_id=order["id"]).status_code == 200
        assert sdk.poll_purchase(session.invoice_id).status == "pending"

        zaprite.set_order_status(order["id"], "PAID")
        assert (
            zaprite.post_webhook_sync(
                hook_url, order_id=order["id"], event="order.change", shape="data.object.id"
            ).status_code
            == 200
        )
        key = sdk.wait_for_license(session.invoice_id, interval_s=0.05, timeout_s=10)
        assert json.loads(httpx.get(f"{server.base_url}/v1/pubkey").text)["public_key_pem"]
        online = sdk.validate(key, product_slug="card-app")
        assert online.ok, online.reason
