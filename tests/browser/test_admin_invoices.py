"""The Invoices screen in a real browser (web.md 11.5.7, 13): filters by status, kind,
product and buyer; the search box opens an invoice by the provider's id; from the detail
view a sandbox invoice is paid (with and without JavaScript) or expired, and the page shows
the new status, the timeline entry and the license it issued."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from e2e.harness import KeysatServer

pytestmark = pytest.mark.browser


def product_with_tier(keysat: KeysatServer) -> tuple[str, str]:
    slug = f"inv-{uuid.uuid4().hex[:8]}"
    product = keysat.create_product(slug, name=f"Invoiced {slug[-6:]}", price_sats=12_345)
    keysat.create_policy(slug, "standard", name="Standard")
    return slug, str(product["id"])


def purchase(keysat: KeysatServer, product_slug: str, email: str) -> dict[str, Any]:
    response = keysat.admin.post(
        "/v1/purchase",
        json={"product": product_slug, "policy_slug": "standard", "buyer_email": email},
    )
    assert response.status_code == 200, response.text
    found = keysat.admin.get(f"/v1/admin/invoices/{response.json()['invoice_id']}")
    invoice: dict[str, Any] = found.json()["invoice"]
    return invoice


def test_simulate_payment_and_expire_from_the_invoice_screen(
    admin: Page, keysat: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    slug, product_id = product_with_tier(keysat)
    email = f"{uuid.uuid4().hex[:6]}@example.com"
    paid = purchase(keysat, slug, email)
    expiring = purchase(keysat, slug, email)

    admin.goto(f"/admin/invoices?product={product_id}&status=pending")
    expect(admin.locator("tbody tr")).to_have_count(2)
    row = admin.locator("tr", has=admin.locator(f"[data-copy='{paid['id']}']"))
    expect(row).to_contain_text("12,345 sats")
    expect(row).to_contain_text("Purchase")
    expect(row).to_contain_text("Sandbox")
    expect(row.locator(".pill")).to_have_text("Pending")
    shoot(admin, "admin-invoices-list")

    row.get_by_role("link", name="Open").click()
    expect(admin.locator("h1")).to_have_text("Invoice")
    expect(admin.locator(".bill-facts").first).to_contain_text(email)
    expect(admin.get_by_role("button", name="Run reconcile now")).to_be_visible()
    expect(admin.locator(".link-facts")).to_contain_text(f"/thank-you?invoice_id={paid['id']}")
    admin.get_by_role("button", name="Run reconcile now").click()
    expect(admin.locator(".notice")).to_contain_text("The reconciler ran")
    admin.get_by_role("button", name="Simulate payment").click()
    expect(admin.locator(".notice")).to_have_text("Payment simulated. The invoice is now Settled.")
    expect(admin.locator(".invoice-status .pill")).to_have_text("Settled")
    license_link = admin.locator("a.license-link")
    expect(license_link).to_be_visible()
    expect(admin.locator(".timeline")).to_contain_text("sandbox.invoice_pay")
    expect(admin.get_by_role("button", name="Simulate payment")).to_have_count(0)
    shoot(admin, "admin-invoices-detail-settled")
    api_invoice = keysat.admin.get(f"/v1/admin/invoices/{paid['id']}").json()["invoice"]
    assert api_invoice["status"] == "settled"
    assert license_link.get_attribute("href") == f"/admin/licenses/{api_invoice['license_id']}"

    admin.goto(f"/admin/invoices/{expiring['id']}")
    admin.get_by_role("button", name="Expire").click()
    expect(admin.locator(".notice")).to_have_text("Invoice expired. The invoice is now Expired.")
    expect(admin.locator(".invoice-status .pill")).to_have_text("Expired")
    expect(admin.get_by_role("button", name="Expire")).to_have_count(0)
    expect(admin.get_by_role("button", name="Simulate payment")).to_be_visible()
    shoot(admin, "admin-invoices-detail-expired")
    api_invoice = keysat.admin.get(f"/v1/admin/invoices/{expiring['id']}").json()["invoice"]
    assert api_invoice["status"] == "expired"

    # Filters: status pills, the buyer e-mail field, and the search box by provider id.
    admin.goto(f"/admin/invoices?product={product_id}")
    admin.locator("[aria-label=Status]").get_by_role("link", name="Settled").click()
    expect(admin.locator("tbody tr")).to_have_count(1)
    expect(admin.locator(f"[data-copy='{paid['id']}']")).to_be_visible()
    admin.locator("[aria-label=Status]").get_by_role("link", name="Expired").click()
    expect(admin.locator(f"[data-copy='{expiring['id']}']")).to_be_visible()
    expect(admin.locator("tbody tr")).to_have_count(1)
    admin.goto("/admin/invoices")
    admin.get_by_label("Buyer e-mail").fill(email.upper())
    admin.get_by_role("button", name="Filter").click()
    expect(admin.locator("tbody tr")).to_have_count(2)
    admin.locator("[aria-label=Kind]").get_by_role("link", name="Renewal").click()
    expect(admin.get_by_text("No invoices match these filters")).to_be_visible()
    admin.get_by_label("Open an invoice by id").fill(paid["provider_invoice_id"])
    admin.get_by_role("button", name="Open", exact=True).click()
    expect(admin).to_have_url(f"{keysat.base_url}/admin/invoices/{paid['id']}")


def test_search_for_an_unknown_id_says_so(admin: Page) -> None:
    admin.goto("/admin/invoices")
    admin.get_by_label("Open an invoice by id").fill("sbx_nothing_here")
    admin.get_by_role("button", name="Open", exact=True).click()
    expect(admin.locator(".notice-error")).to_have_text("No invoice has the id sbx_nothing_here.")


def test_simulate_payment_without_javascript(admin_nojs: Page, keysat: KeysatServer) -> None:
    slug, _ = product_with_tier(keysat)
    invoice = purchase(keysat, slug, "nojs@example.com")
    page = admin_nojs
    page.goto(f"/admin/invoices/{invoice['id']}")
    page.get_by_role("button", name="Simulate payment").click()
    expect(page.locator(".notice")).to_have_text("Payment simulated. The invoice is now Settled.")
    expect(page.locator(".invoice-status .pill")).to_have_text("Settled")
    expect(page.locator("a.license-link")).to_be_visible()
