"""The Subscriptions screen in a real browser (web.md 11.5.6, 13): a recurring tier bought
and paid in the sandbox shows up under its product and state, its detail view lists the
paid cycle, and cancelling it with a reason (with and without JavaScript) leaves the
license valid and the subscription cancelled in the API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from e2e.harness import KeysatServer

pytestmark = pytest.mark.browser


def paid_subscription(keysat: KeysatServer, product_slug: str) -> dict[str, Any]:
    """A monthly tier bought through the public purchase call and paid in the sandbox."""
    keysat.create_product(product_slug, name=f"Cloud {product_slug[-6:]}", price_sats=21_000)
    keysat.create_policy(
        product_slug, "monthly", name="Monthly", is_recurring=True, renewal_period_days=30
    )
    response = keysat.admin.post(
        "/v1/purchase",
        json={"product": product_slug, "policy_slug": "monthly", "buyer_email": "sub@example.com"},
    )
    assert response.status_code == 200, response.text
    invoice_id = response.json()["invoice_id"]
    keysat.admin_post(f"/v1/admin/sandbox/invoices/{invoice_id}/pay")
    product = next(
        p
        for p in keysat.admin.get("/v1/admin/products").json()["products"]
        if p["slug"] == product_slug
    )
    subs = keysat.admin.get("/v1/admin/subscriptions", params={"product_id": product["id"]})
    (sub,) = subs.json()["subscriptions"]
    return {**sub, "invoice_id": invoice_id}


def test_cancel_a_subscription_with_a_reason(
    admin: Page, keysat: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    slug = f"subs-{uuid.uuid4().hex[:8]}"
    sub = paid_subscription(keysat, slug)
    admin.goto(f"/admin/subscriptions?product={sub['product_id']}")
    row = admin.locator("tr", has=admin.locator(f"[data-copy='{sub['license_id']}']"))
    expect(row).to_contain_text("Monthly")
    expect(row).to_contain_text("21,000 sats / mo")
    expect(row.locator(".pill")).to_have_text("Active")
    admin.get_by_role("button", name="?").first.click()
    expect(admin.get_by_role("note").filter(has_text="Past due: a renewal")).to_be_visible()
    admin.keyboard.press("Escape")
    shoot(admin, "admin-subscriptions-list")

    row.get_by_role("link", name="View").click()
    expect(admin.locator("h1")).to_have_text("Subscription")
    cycle = admin.locator("tr", has=admin.locator(f"a[href='/admin/invoices/{sub['invoice_id']}']"))
    expect(cycle).to_contain_text("Settled")
    expect(cycle).to_contain_text("21,000 sats")
    shoot(admin, "admin-subscriptions-detail")

    admin.goto(f"/admin/subscriptions?product={sub['product_id']}")
    row.get_by_role("button", name="Cancel subscription").click()
    dialog = admin.locator("dialog[open]")
    expect(dialog).to_contain_text("The license stays valid until the end of its paid cycle")
    dialog.get_by_label("Reason").fill("Buyer asked by e-mail")
    shoot(admin, "admin-subscriptions-cancel-dialog")
    dialog.get_by_role("button", name="Cancel subscription").click()
    expect(admin.locator(".notice")).to_contain_text("Subscription cancelled")
    expect(row.locator(".pill")).to_have_text("Cancelled")
    expect(row.get_by_role("button", name="Cancel subscription")).to_have_count(0)
    after = keysat.admin.get("/v1/admin/subscriptions", params={"product_id": sub["product_id"]})
    (cancelled,) = after.json()["subscriptions"]
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancellation_reason"] == "Buyer asked by e-mail"
    license_row = keysat.admin.get(
        "/v1/admin/licenses/search", params={"license_id": sub["license_id"]}
    )
    assert license_row.status_code == 200

    admin.goto("/admin/subscriptions?status=cancelled")
    expect(admin.locator("[aria-label=Status] [aria-current=true]")).to_have_text("Cancelled")
    expect(admin.locator(f"[data-copy='{sub['license_id']}']")).to_be_visible()
    admin.goto("/admin/subscriptions?status=active")
    expect(admin.locator(f"[data-copy='{sub['license_id']}']")).to_have_count(0)


def test_cancel_without_javascript_goes_through_the_confirmation_page(
    admin_nojs: Page, keysat: KeysatServer
) -> None:
    sub = paid_subscription(keysat, f"subs-{uuid.uuid4().hex[:8]}")
    page = admin_nojs
    page.goto(f"/admin/subscriptions/{sub['id']}")
    page.get_by_role("button", name="Cancel subscription").click()
    expect(page.locator("h1")).to_have_text("Cancel this subscription?")
    page.get_by_label("Reason").fill("No JS reason")
    page.get_by_role("button", name="Cancel subscription").click()
    expect(page.locator(".notice")).to_contain_text("Subscription cancelled")
    expect(page.locator(".detail-head .pill")).to_have_text("Cancelled")
    expect(page.locator(".bill-facts")).to_contain_text("No JS reason")
