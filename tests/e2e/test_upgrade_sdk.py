"""A tier upgrade seen through the official SDK: a real `keysat serve` in development mode
(the sandbox takes the payments), Standard bought and validated with the SDK, upgraded
with `POST /v1/upgrade`, and the SDK then sees Pro online and offline (public-api.md 12.3,
6.2, 8.4)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from keysat_licensing_client import PublicKey, StartPurchaseOptions, Verifier

from e2e.harness import KeysatServer, launch_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sandbox_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeysatServer]:
    with launch_server(
        tmp_path_factory.mktemp("upgrade"), {"KEYSAT_ENV": "development"}
    ) as running:
        running.create_product("tiered-app", name="Tiered App", price_sats=25_000)
        running.create_policy(
            "tiered-app", "standard", tier_rank=1, entitlements=["standard"], max_machines=1
        )
        running.create_policy(
            "tiered-app",
            "pro",
            tier_rank=2,
            price_sats_override=75_000,
            entitlements=["standard", "pro"],
            max_machines=3,
        )
        yield running


def test_sdk_sees_pro_after_an_upgrade(sandbox_server: KeysatServer) -> None:
    sdk = sandbox_server.sdk()
    verifier = Verifier(PublicKey.from_pem(sdk.fetch_pubkey_pem()))

    session = sdk.start_purchase(
        "tiered-app", StartPurchaseOptions(policy_slug="standard", buyer_email="ada@example.com")
    )
    assert session.amount_sats == 25_000
    sandbox_server.admin_post(f"/v1/admin/sandbox/invoices/{session.invoice_id}/pay")
    key = sdk.wait_for_license(session.invoice_id, interval_s=0.05, timeout_s=10)
    before = sdk.validate(key, product_slug="tiered-app", fingerprint="e2e-laptop")
    assert before.ok, before.reason
    assert before.entitlements == ["standard"] and before.max_machines == 1
    assert verifier.verify(key).entitlements == ["standard"]

    with httpx.Client(base_url=sandbox_server.base_url, timeout=15.0) as buyer:
        quoted = buyer.post(
            "/v1/upgrade-quote", json={"license_key": key, "target_policy_slug": "pro"}
        )
        assert quoted.status_code == 200, quoted.text
        assert quoted.json()["proration_charge_value"] == 50_000
        started = buyer.post("/v1/upgrade", json={"license_key": key, "target_policy_slug": "pro"})
    assert started.status_code == 200, started.text
    upgrade = started.json()
    assert (upgrade["amount_sats"], upgrade["listed_currency"]) == (50_000, "SAT")
    assert upgrade["checkout_url"].startswith(f"{sandbox_server.base_url}/sandbox/checkout/sbx_")

    # unpaid: the SDK still sees Standard and the upgrade invoice has no key yet
    assert sdk.poll_purchase(upgrade["invoice_id"]).license_key is None
    still = sdk.validate(key, product_slug="tiered-app", fingerprint="e2e-laptop")
    assert still.ok and still.entitlements == ["standard"]

    paid = sandbox_server.admin_post(f"/v1/admin/sandbox/invoices/{upgrade['invoice_id']}/pay")
    assert paid["status"] == "settled"

    after = sdk.validate(key, product_slug="tiered-app", fingerprint="e2e-laptop")
    assert after.ok, after.reason
    assert after.entitlements == ["standard", "pro"]
    assert after.max_machines == 3
    assert after.license_id == before.license_id

    upgraded = sdk.wait_for_license(upgrade["invoice_id"], interval_s=0.05, timeout_s=10)
    assert upgraded != key
    offline = verifier.verify(upgraded)
    assert offline.entitlements == ["standard", "pro"]
    assert str(offline.license_id) == before.license_id
    assert offline.expires_at == 0
    poll = sdk.poll_purchase(upgrade["invoice_id"])
    assert (poll.status, poll.license_id) == ("settled", before.license_id)
    fresh = sdk.validate(upgraded, product_slug="tiered-app", fingerprint="e2e-laptop")
    assert fresh.ok and fresh.entitlements == ["standard", "pro"]
    # the same machine keeps its seat across the upgrade
    assert fresh.machine_id == before.machine_id
