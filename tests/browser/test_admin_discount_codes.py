"""The Discount codes screen in a real browser (web.md 11.5.8, 13): each kind created in
normal units and checked in the API in its own units (basis points, cents, sats), the
expiry typed in the browser's zone and sent as UTC, the edit panel in normal units with
cleared fields sent as null, disable and enable, delete with and without redemptions, the
redemptions view, and a create without JavaScript whose expiry is read as UTC."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from e2e.harness import KeysatServer

pytestmark = pytest.mark.browser


def usd_product(keysat: KeysatServer) -> tuple[str, str]:
    slug = f"dc-{uuid.uuid4().hex[:8]}"
    product = keysat.create_product(
        slug, name=f"Codes {slug[-6:]}", price_currency="USD", price_value=2500, price_sats=None
    )
    for tier in ("basic", "team", "studio"):
        keysat.create_policy(slug, tier, name=tier.capitalize())
    return slug, str(product["id"])


def api_code(keysat: KeysatServer, code: str) -> dict[str, Any]:
    codes = keysat.admin.get("/v1/admin/discount-codes", params={"include_inactive": "true"})
    found: dict[str, Any] = next(c for c in codes.json()["codes"] if c["code"] == code)
    return found


def create(page: Page, code: str, kind: str, amount: str | None = None) -> None:
    form = page.locator("form[data-code-form]")
    form.get_by_label("Code", exact=True).fill(code.lower())
    form.get_by_label("Kind").select_option(kind)
    if amount is not None:
        form.get_by_label("Amount").fill(amount)


def test_create_each_kind_edit_toggle_and_delete(
    admin: Page, keysat: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    slug, product_id = usd_product(keysat)
    tag = uuid.uuid4().hex[:6].upper()
    page = admin
    page.goto("/admin/discount-codes")
    form = page.locator("form[data-code-form]")
    if not form.is_visible():
        page.get_by_text("Create a code").click()

    # Percent, restricted to two tiers, with a use cap and an expiry in local time.
    create(page, f"pct-{tag}", "percent", "12.5")
    expect(form.get_by_label("Code", exact=True)).to_have_value(f"PCT-{tag}")
    expect(form.locator("[data-currency-field]")).to_be_hidden()
    form.get_by_label("Restrict to product").select_option(slug)
    form.locator(f".tier-pill-group[data-product='{slug}'] .tier-pill", has_text="Basic").click()
    form.locator(f".tier-pill-group[data-product='{slug}'] .tier-pill", has_text="Team").click()
    form.get_by_label("Limit total uses").check()
    form.get_by_label("Maximum uses").fill("50")
    form.get_by_label("Expires at").fill("2031-06-15T09:30")
    expect(form.locator("[data-utc-line]")).to_contain_text("UTC")
    form.get_by_label("Referrer or campaign label").fill("newsletter")
    form.get_by_label("Featured (launch special)").check()
    shoot(page, "admin-discount-codes-create")
    form.get_by_role("button", name="Create code").click()
    expect(page.locator(".notice")).to_have_text(f"Code PCT-{tag} created: 12.5%.")
    percent = api_code(keysat, f"PCT-{tag}")
    sent_expiry = page.evaluate("() => new Date('2031-06-15T09:30').toISOString()")
    assert percent["amount"] == 1250
    assert percent["max_uses"] == 50
    assert percent["featured"] is True
    assert percent["applies_to_product_id"] == product_id
    assert len(percent["applies_to_policy_ids"]) == 2
    assert percent["expires_at"][:16] == sent_expiry[:16]

    # Fixed amount off and flat price in dollars, sent in cents; a free license.
    page.get_by_text("Create a code").click()
    create(page, f"off-{tag}", "fixed_sats", "10")
    form.get_by_label("Restrict to product").select_option(slug)
    expect(form.locator("[data-amount-hint]")).to_contain_text("in USD")
    form.locator(f".tier-pill-group[data-product='{slug}'] .tier-pill", has_text="Studio").click()
    form.get_by_role("button", name="Create code").click()
    expect(page.locator(".notice")).to_have_text(f"Code OFF-{tag} created: $10 off.")
    fixed = api_code(keysat, f"OFF-{tag}")
    assert (fixed["amount"], fixed["discount_currency"]) == (1000, "USD")
    assert fixed["applies_to_policy_id"] is not None

    page.get_by_text("Create a code").click()
    create(page, f"flat-{tag}", "set_price", "19")
    form.get_by_label("Currency").select_option("USD")
    form.get_by_role("button", name="Create code").click()
    expect(page.locator(".notice")).to_have_text(f"Code FLAT-{tag} created: $19 flat.")
    assert api_code(keysat, f"FLAT-{tag}")["amount"] == 1900

    page.get_by_text("Create a code").click()
    create(page, f"free-{tag}", "free_license")
    expect(form.get_by_label("Amount")).to_be_hidden()
    form.get_by_role("button", name="Create code").click()
    expect(page.locator(".notice")).to_have_text(f"Code FREE-{tag} created: Free.")

    row = page.locator(f"#code-PCT-{tag}")
    expect(row).to_contain_text("12.5%")
    expect(row).to_contain_text("Featured")
    expect(row).to_contain_text("Basic, Team")
    expect(row).to_contain_text("0 / 50")
    expect(page.locator(f"#code-OFF-{tag}")).to_contain_text("$10 off")
    expect(page.locator(f"#code-FLAT-{tag}")).to_contain_text("$19 flat")
    expect(page.locator(f"#code-FREE-{tag}")).to_contain_text("Free")
    expect(page.locator(f"#code-FREE-{tag}")).to_contain_text("0 / ∞")
    shoot(page, "admin-discount-codes-list")

    # Edit: amounts in normal units; cleared fields are sent as null and clear.
    page.locator(f"#code-OFF-{tag}").get_by_role("link", name="Edit").click()
    panel = page.locator(".edit-panel")
    expect(panel.get_by_label("Amount")).to_have_value("10")
    panel.get_by_label("Amount").fill("7.50")
    panel.get_by_label("Maximum uses").fill("5")
    shoot(page, "admin-discount-codes-edit")
    panel.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice")).to_have_text(f"Code OFF-{tag} saved.")
    expect(page.locator(f"#code-OFF-{tag}")).to_contain_text("$7.50 off")
    assert api_code(keysat, f"OFF-{tag}")["amount"] == 750
    page.locator(f"#code-PCT-{tag}").get_by_role("link", name="Edit").click()
    expect(panel.get_by_label("Amount")).to_have_value("12.5")
    expect(panel.locator("[data-utc-line]")).to_contain_text("UTC")
    panel.get_by_label("Maximum uses").fill("")
    panel.get_by_label("Referrer or campaign label").fill("")
    panel.get_by_label("Expires at").fill("")
    panel.locator(".tier-pill", has_text="Team").click()
    panel.get_by_role("button", name="Save changes").click()
    expect(page.locator(".notice")).to_have_text(f"Code PCT-{tag} saved.")
    edited = api_code(keysat, f"PCT-{tag}")
    assert edited["max_uses"] is None
    assert edited["referrer_label"] is None
    assert edited["expires_at"] is None
    assert len(edited["applies_to_policy_ids"]) == 1
    assert edited["amount"] == 1250

    # Disable and enable.
    page.locator(f"#code-FLAT-{tag}").get_by_role("button", name="Disable").click()
    expect(page.locator(".notice")).to_have_text(f"FLAT-{tag} disabled.")
    expect(page.locator(f"#code-FLAT-{tag} .pill")).to_have_text("Disabled")
    assert api_code(keysat, f"FLAT-{tag}")["active"] is False
    page.locator(f"#code-FLAT-{tag}").get_by_role("button", name="Enable").click()
    expect(page.locator(f"#code-FLAT-{tag} .pill")).to_have_text("Active")

    # Delete an unused code.
    page.locator(f"#code-FREE-{tag}").get_by_role("button", name="Delete").click()
    dialog = page.locator("dialog[open]")
    expect(dialog).to_contain_text("disable it instead")
    dialog.get_by_role("button", name="Delete").click()
    expect(page.locator(".notice")).to_have_text(f"Code FREE-{tag} deleted.")
    expect(page.locator(f"#code-FREE-{tag}")).to_have_count(0)

    # A code with a redemption cannot be deleted: the page says so and offers Disable.
    sats_slug = f"dcs-{uuid.uuid4().hex[:8]}"
    keysat.create_product(sats_slug, price_sats=20_000)
    keysat.create_policy(sats_slug, "one", name="One")
    used = f"USED-{tag}"
    keysat.admin_post(
        "/v1/admin/discount-codes",
        {"code": used, "kind": "fixed_sats", "amount": 1000, "product_slug": sats_slug},
    )
    bought = keysat.admin.post("/v1/purchase", json={"product": sats_slug, "code": used})
    assert bought.status_code == 200, bought.text
    page.goto("/admin/discount-codes")
    page.locator(f"#code-{used}").get_by_role("button", name="Delete").click()
    page.locator("dialog[open]").get_by_role("button", name="Delete").click()
    expect(page.locator("[data-problem]")).to_contain_text("disable")
    refused = page.get_by_role("note").filter(has_text="has redemptions")
    refused.get_by_role("button", name=f"Disable {used}").click()
    expect(page.locator(f"#code-{used} .pill")).to_have_text("Disabled")

    page.locator(f"#code-{used}").get_by_role("link", name="Redemptions").click()
    expect(page.locator("h1")).to_have_text(f"Redemptions of {used}")
    redemption = page.locator("tbody tr")
    expect(redemption).to_have_count(1)
    expect(redemption.locator(".pill")).to_have_text("Pending")
    expect(redemption).to_contain_text("1,000 sats")
    invoice_link = f"a[href='/admin/invoices/{bought.json()['invoice_id']}']"
    expect(redemption.locator(invoice_link)).to_be_visible()
    shoot(page, "admin-discount-codes-redemptions")

    # Filters: the product pill keeps only this product's codes, "Any product" the global.
    page.goto(f"/admin/discount-codes?product={product_id}")
    expect(page.locator("tbody tr")).to_have_count(2)
    page.goto("/admin/discount-codes?status=disabled")
    expect(page.locator(f"#code-{used}")).to_be_visible()
    expect(page.locator(f"#code-PCT-{tag}")).to_have_count(0)


def test_create_a_code_without_javascript_reads_the_expiry_as_utc(
    admin_nojs: Page, keysat: KeysatServer
) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    page = admin_nojs
    page.goto("/admin/discount-codes")
    form = page.locator("form[data-code-form]")
    if not form.is_visible():
        page.get_by_text("Create a code").click()
    expect(form.get_by_text("Expires at (UTC)")).to_be_visible()
    form.get_by_label("Code", exact=True).fill(f"NOJS-{tag}")
    form.get_by_label("Kind").select_option("fixed_sats")
    form.get_by_label("Amount").fill("5,000")
    form.get_by_label("Maximum uses").fill("3")
    form.get_by_label("Expires at (UTC)").fill("2030-01-02T03:04")
    form.get_by_role("button", name="Create code").click()
    expect(page.locator(".notice")).to_have_text(f"Code NOJS-{tag} created: 5,000 sats off.")
    code = api_code(keysat, f"NOJS-{tag}")
    assert (code["amount"], code["discount_currency"], code["max_uses"]) == (5000, "SAT", 3)
    assert code["expires_at"].startswith("2030-01-02T03:04:00")
    expect(page.locator(f"#code-NOJS-{tag}")).to_contain_text("5,000 sats off")

    # A bad amount comes back next to its field with what was typed kept.
    page.get_by_text("Create a code").click()
    form.get_by_label("Code", exact=True).fill(f"BAD-{tag}")
    form.get_by_label("Kind").select_option("percent")
    form.get_by_label("Amount").fill("12.345")
    form.get_by_role("button", name="Create code").click()
    expect(page.locator("#f-amount-hint")).to_have_text("A percentage has at most two decimals.")
    expect(page.locator("form[data-code-form]").get_by_label("Code", exact=True)).to_have_value(
        f"BAD-{tag}"
    )
