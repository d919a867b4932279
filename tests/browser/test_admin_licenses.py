"""The Licenses screen in a real browser (web.md 11.5.4, 13): issuing by hand with and
without JavaScript, searching by e-mail, suspend, unsuspend, revoke (twice), and changing
tier as a comp and by charging the difference. Every change is checked through the admin
API, and the audit rows must carry the reason typed into the dialog."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from e2e.harness import KeysatServer

pytestmark = pytest.mark.browser

Shoot = Callable[[Page, str], None]


def _catalog(keysat: KeysatServer) -> tuple[str, str]:
    """A product with a basic and a pro tier; returns the product slug and its suffix."""
    tag = uuid.uuid4().hex[:8]
    slug = f"app-{tag}"
    keysat.create_product(
        slug,
        name=f"App {tag}",
        price_sats=1000,
        entitlements_catalog=[
            {"slug": "export", "name": "Export"},
            {"slug": "sync", "name": "Cloud sync"},
        ],
    )
    keysat.create_policy(
        slug, "basic", name="Basic", tier_rank=1, entitlements=["export"], max_machines=2
    )
    keysat.create_policy(
        slug,
        "pro",
        name="Pro",
        tier_rank=2,
        entitlements=["export", "sync"],
        price_sats_override=5000,
        max_machines=5,
    )
    return slug, tag


def _license(keysat: KeysatServer, license_id: str) -> dict[str, Any]:
    found = keysat.admin.get("/v1/admin/licenses/search").json()["licenses"]
    return next(row for row in found if row["id"] == license_id)


def _audit(keysat: KeysatServer, action: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = keysat.admin.get(
        "/v1/admin/audit", params={"action": action}
    ).json()["entries"]
    return entries


def test_issue_with_javascript_shows_the_key_once_and_search_finds_it(
    admin: Page, keysat: KeysatServer, shoot: Shoot
) -> None:
    slug, tag = _catalog(keysat)
    email = f"buyer-{tag}@example.com"
    admin.goto("/admin/licenses")
    admin.get_by_text("Issue a license manually").click()
    admin.get_by_label("Product", exact=True).select_option(slug)
    admin.get_by_label("Tier", exact=True).select_option(f"{slug}/pro")
    admin.get_by_label("Buyer e-mail (optional)").fill(email)
    admin.get_by_label("Internal note (optional)").fill("conference giveaway")
    admin.get_by_role("button", name="Issue license").click()

    expect(admin.locator("h2")).to_have_text("License issued")
    key = admin.locator("#secret-value").inner_text()
    assert key.startswith("LIC1-")
    expect(admin.get_by_text("It will not be shown again.")).to_be_visible()
    expect(admin.get_by_role("button", name="Copy")).to_be_visible()
    shoot(admin, "admin-licenses-issued-secret")

    issued = keysat.admin.get("/v1/admin/licenses/search", params={"buyer_email": email}).json()
    (row,) = issued["licenses"]
    assert row["policy_slug"] == "pro"
    assert row["metadata"] == {"source": "admin_issue", "note": "conference giveaway"}

    admin.goto("/admin/licenses")
    admin.get_by_label("Search by").select_option("email")
    admin.get_by_label("Search for").fill(email.upper())
    admin.get_by_label("Search for").press("Enter")
    table_row = admin.locator(f"tr[data-license='{row['id']}']")
    expect(table_row).to_contain_text("Pro")
    expect(table_row).to_contain_text("Export, Cloud sync")
    expect(table_row).to_contain_text("0 / 5")
    expect(table_row.locator(".pill").first).to_have_text("Active")
    expect(admin.locator("tbody tr")).to_have_count(1)
    shoot(admin, "admin-licenses-list")


def test_issue_without_javascript_with_overrides(admin_nojs: Page, keysat: KeysatServer) -> None:
    slug, tag = _catalog(keysat)
    email = f"nojs-{tag}@example.com"
    page = admin_nojs
    page.goto("/admin/licenses")
    page.get_by_text("Issue a license manually").click()
    page.get_by_label("Product", exact=True).select_option(slug)
    page.get_by_label("Tier", exact=True).select_option(f"{slug}/basic")
    page.get_by_label("Buyer e-mail (optional)").fill(email)
    page.get_by_text("Advanced: override the tier").click()
    page.get_by_label("Expiry date (UTC, 00:00)").fill("2031-05-04")
    page.get_by_label("Max devices").fill("0")
    page.get_by_label("Trial", exact=True).select_option("yes")
    page.get_by_role("button", name="Issue license").click()

    expect(page.locator("#secret-value")).to_contain_text("LIC1-")
    (row,) = keysat.admin.get("/v1/admin/licenses/search", params={"buyer_email": email}).json()[
        "licenses"
    ]
    assert row["policy_slug"] == "basic"
    assert row["max_machines"] == 0
    assert row["is_trial"] is True
    assert row["expires_at"].startswith("2031-05-04T00:00:00")
    page.get_by_role("link", name="I've saved it — close").click()
    expect(page.locator("h1")).to_have_text(re.compile(r"License [0-9a-f]{8}…"))
    expect(page.get_by_text("Its key was shown once, when it was issued.")).to_be_visible()


def test_suspend_unsuspend_and_revoke_twice_record_their_reasons(
    admin: Page, keysat: KeysatServer, shoot: Shoot
) -> None:
    slug, tag = _catalog(keysat)
    license_id = keysat.issue_license(slug, policy_slug="basic", buyer_email=f"s-{tag}@x.io")[
        "license_id"
    ]
    admin.goto(f"/admin/licenses/{license_id}")
    head = admin.locator(".license-head")

    head.get_by_role("button", name="Suspend").click()
    dialog = admin.locator("dialog[open]")
    dialog.get_by_label("Reason (optional, recorded in the audit log)").fill(f"chargeback {tag}")
    dialog.get_by_role("button", name="Suspend").click()
    expect(admin.locator(".notice")).to_contain_text("suspended")
    expect(head.locator(".pill").first).to_have_text("Suspended")
    assert _license(keysat, license_id)["status"] == "suspended"
    (entry,) = [e for e in _audit(keysat, "license.suspend") if e["target_id"] == license_id]
    assert entry["details"]["reason"] == f"chargeback {tag}"

    head.get_by_role("button", name="Unsuspend").click()
    admin.locator("dialog[open]").get_by_role("button", name="Unsuspend").click()
    expect(head.locator(".pill").first).to_have_text("Active")
    assert _license(keysat, license_id)["status"] == "active"

    stale = admin.context.new_page()
    stale.goto(f"/admin/licenses/{license_id}")

    head.get_by_role("button", name="Revoke").click()
    dialog = admin.locator("dialog[open]")
    expect(dialog).to_contain_text("This cannot be undone. The key stops validating online.")
    dialog.get_by_label("Reason (optional, recorded in the audit log)").fill(f"refunded {tag}")
    dialog.get_by_role("button", name="Revoke").click()
    expect(head.locator(".pill").first).to_have_text("Revoked")
    expect(head.get_by_role("button", name="Revoke")).to_have_count(0)
    expect(head.get_by_role("link", name="Change tier")).to_have_count(0)
    revoked = _license(keysat, license_id)
    assert revoked["status"] == "revoked"
    assert revoked["revocation_reason"] == f"refunded {tag}"
    shoot(admin, "admin-licenses-detail")

    stale.locator(".license-head").get_by_role("button", name="Revoke").click()
    stale.locator("dialog[open]").get_by_role("button", name="Revoke").click()
    expect(stale.locator(".notice")).to_have_text(f"License {license_id[:8]}… was already revoked.")
    expect(stale.locator(".notice")).to_have_class(re.compile("notice-ok"))
    stale.goto(f"/admin/licenses?field=license&q={license_id[:8]}")
    expect(stale.locator(f"tr[data-license='{license_id}']")).to_contain_text("Revoked")
    stale.get_by_role("link", name="Hide revoked").click()
    expect(stale.get_by_text("No licenses match")).to_be_visible()
    stale.get_by_role("link", name="Revoked", exact=True).click()
    expect(stale).to_have_url(re.compile("status=revoked"))
    expect(stale.locator("tbody tr")).to_have_count(0)
    stale.get_by_role("link", name="✓ Hide revoked").click()
    expect(stale.locator(f"tr[data-license='{license_id}']")).to_be_visible()
    audit = admin.locator("section", has=admin.get_by_role("heading", name="Audit log"))
    admin.reload()
    expect(audit).to_contain_text(f"refunded {tag}")
    expect(audit).to_contain_text(f"chargeback {tag}")


def test_change_tier_as_a_comp_shows_the_resigned_key(
    admin: Page, keysat: KeysatServer, shoot: Shoot
) -> None:
    slug, tag = _catalog(keysat)
    license_id = keysat.issue_license(slug, policy_slug="basic")["license_id"]
    admin.goto(f"/admin/licenses/{license_id}")
    admin.locator(".license-head").get_by_role("link", name="Change tier").click()
    dialog = admin.locator("#change-tier-dialog")
    expect(dialog).to_be_visible()
    select = dialog.get_by_label("New tier")
    expect(select.locator("option", has_text="current")).to_be_disabled()
    expect(select.locator("option", has_text="Pro (rank 2)")).to_have_count(1)
    select.select_option("pro")
    expect(dialog.locator("[data-downgrade-warning]")).to_be_hidden()
    dialog.get_by_label("Reason (optional, recorded in the audit log)").fill(f"goodwill {tag}")
    shoot(admin, "admin-licenses-change-tier-dialog")
    dialog.get_by_role("button", name="Change tier").click()

    expect(admin.locator("h2")).to_have_text(re.compile("Now on Pro"))
    key = admin.locator("#resigned-key").inner_text()
    assert key.startswith("LIC1-")
    expect(admin.get_by_role("button", name="Copy key")).to_be_visible()
    shoot(admin, "admin-licenses-tier-changed")
    changed = _license(keysat, license_id)
    assert changed["policy_slug"] == "pro"
    assert changed["entitlements"] == ["export", "sync"]
    (entry,) = [
        e
        for e in _audit(keysat, "license.change_tier.comp")
        if e["details"]["license_id"] == license_id
    ]
    assert entry["details"]["reason"] == f"goodwill {tag}"
    validated = keysat.admin.post("/v1/validate", json={"key": key}).json()
    assert (validated["ok"], validated["entitlements"]) == (True, ["export", "sync"])

    admin.get_by_role("link", name="Back to the license").click()
    admin.locator(".license-head").get_by_role("link", name="Change tier").click()
    dialog.get_by_label("New tier").select_option("basic")
    warning = dialog.locator("[data-downgrade-warning]")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("The buyer loses: Cloud sync")
    expect(warning).to_contain_text("no automatic refund")
    dialog.get_by_role("button", name="Change tier").click()
    expect(dialog).to_be_visible()
    assert _license(keysat, license_id)["policy_slug"] == "pro"
    dialog.get_by_label("I understand, downgrade this license").check()
    dialog.get_by_role("button", name="Change tier").click()
    expect(admin.locator("h2")).to_have_text(re.compile("Now on Basic"))
    assert _license(keysat, license_id)["policy_slug"] == "basic"


def test_downgrade_without_javascript_asks_a_second_time(
    admin_nojs: Page, keysat: KeysatServer
) -> None:
    slug, _ = _catalog(keysat)
    license_id = keysat.issue_license(slug, policy_slug="pro")["license_id"]
    page = admin_nojs
    page.goto(f"/admin/licenses/{license_id}")
    page.locator(".license-head").get_by_role("link", name="Change tier").click()
    page.get_by_label("New tier").select_option("basic")
    page.get_by_role("button", name="Change tier").click()
    expect(page.get_by_role("heading", name="Confirm the downgrade")).to_be_visible()
    expect(page.locator(".warning-card")).to_contain_text("Cloud sync")
    assert _license(keysat, license_id)["policy_slug"] == "pro"
    page.get_by_role("button", name="Downgrade").click()
    expect(page.locator("h2")).to_have_text(re.compile("Now on Basic"))
    assert _license(keysat, license_id)["policy_slug"] == "basic"


def test_charging_the_difference_shows_the_checkout_url(
    admin: Page, keysat: KeysatServer, shoot: Shoot
) -> None:
    slug, _ = _catalog(keysat)
    license_id = keysat.issue_license(slug, policy_slug="basic")["license_id"]
    admin.goto(f"/admin/licenses/{license_id}/change-tier")
    admin.get_by_label("New tier").select_option("pro")
    admin.get_by_label("Charge the buyer the difference").check()
    admin.get_by_role("button", name="Change tier").click()

    expect(admin.locator("h2")).to_have_text(re.compile("Invoice created for Pro"))
    url = admin.locator("#checkout-url").inner_text()
    assert url.startswith(keysat.base_url)
    expect(admin.get_by_text("4,000 sats")).to_be_visible()
    expect(admin.get_by_role("button", name="Copy link")).to_be_visible()
    shoot(admin, "admin-licenses-charge-difference")
    (entry,) = [
        e
        for e in _audit(keysat, "license.change_tier.invoice_created")
        if e["details"]["license_id"] == license_id
    ]
    invoice = keysat.admin.get(f"/v1/admin/invoices/{entry['details']['invoice_id']}").json()
    assert invoice["invoice"]["kind"] == "tier_change"
    assert (invoice["invoice"]["status"], invoice["invoice"]["checkout_url"]) == ("pending", url)
    assert _license(keysat, license_id)["policy_slug"] == "basic"


def test_a_purchased_license_has_a_receipt_link_and_a_cancellable_subscription(
    admin: Page, keysat: KeysatServer
) -> None:
    slug, tag = _catalog(keysat)
    keysat.create_policy(slug, "monthly", name="Monthly", is_recurring=True, renewal_period_days=30)
    bought = keysat.admin.post(
        "/v1/purchase",
        json={"product": slug, "policy_slug": "monthly", "buyer_email": f"p-{tag}@example.com"},
    ).json()
    keysat.admin_post(f"/v1/admin/sandbox/invoices/{bought['invoice_id']}/pay")
    (row,) = keysat.admin.get(
        "/v1/admin/licenses/search", params={"invoice_id": bought["invoice_id"]}
    ).json()["licenses"]

    admin.goto(f"/admin/licenses/{row['id']}")
    receipt = f"{keysat.base_url}/thank-you?invoice_id={bought['invoice_id']}"
    admin.get_by_role("button", name="Copy receipt link").click()
    assert admin.evaluate("navigator.clipboard.readText()") == receipt
    invoices = admin.locator("section", has=admin.get_by_role("heading", name="Invoices"))
    expect(invoices.locator(".pill")).to_have_text("Settled")
    subscription = admin.locator("section", has=admin.get_by_role("heading", name="Subscription"))
    expect(subscription).to_contain_text("1,000 sats / mo")

    subscription.get_by_role("button", name="Cancel subscription").click()
    dialog = admin.locator("dialog[open]")
    dialog.get_by_label("Reason (optional, recorded in the audit log)").fill(f"asked {tag}")
    dialog.get_by_role("button", name="Cancel subscription").click()
    expect(admin.locator(".notice")).to_have_text("Subscription cancelled.")
    expect(subscription.locator(".pill")).to_have_text("Cancelled")
    (sub,) = keysat.admin.get("/v1/admin/subscriptions", params={"license_id": row["id"]}).json()[
        "subscriptions"
    ]
    assert (sub["status"], sub["cancellation_reason"]) == ("cancelled", f"asked {tag}")
