"""Products in a real browser (web.md 11.5.2): create with a fiat price and a catalog, the
table with inactive products, edit with a read-only slug, deactivate and activate, delete
safe-then-force with type-the-slug, and create without JavaScript."""

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


def _product(keysat: KeysatServer, slug: str) -> dict[str, Any]:
    products = keysat.admin.get("/v1/admin/products").json()["products"]
    return next(p for p in products if p["slug"] == slug)


def test_create_edit_deactivate_and_force_delete_a_product(
    admin: Page, keysat: KeysatServer, shoot: Shoot
) -> None:
    suffix = uuid.uuid4().hex[:6]
    page = admin
    page.goto("/admin/products")
    page.locator("details#create summary").click()
    page.fill("#f-name", f"Quiet Editor {suffix}")
    slug = page.input_value("#f-slug")
    assert slug == f"quiet-editor-{suffix}"
    page.fill("#f-description", "A text editor.")
    page.select_option("#f-price_currency", "USD")
    expect(page.locator("#f-price_value")).to_have_value("49.00")
    page.fill("#f-price_value", "24.99")
    page.get_by_role("button", name="+ Add entitlement").click()
    page.get_by_role("button", name="+ Add entitlement").click()
    rows = page.locator("[data-catalog-rows] [data-catalog-row]")
    rows.nth(0).locator("input[name=ent_slug]").fill("sync")
    rows.nth(0).locator("input[name=ent_name]").fill("Cloud sync")
    rows.nth(1).locator("input[name=ent_slug]").fill("themes")
    rows.nth(1).locator("input[name=ent_name]").fill("Themes")
    shoot(page, "admin-products-create")
    page.locator("form[data-product-form] .actions").get_by_role(
        "button", name="Create product"
    ).click()
    expect(page.locator(".notice")).to_contain_text(f"Quiet Editor {suffix} created")
    row = page.locator(f"tr[data-product='{slug}']")
    expect(row).to_contain_text("$24.99")
    expect(row).to_contain_text("Active")
    stored = _product(keysat, slug)
    assert (stored["price_currency"], stored["price_value"]) == ("USD", 2499)
    assert [e["slug"] for e in stored["entitlements_catalog"]] == ["sync", "themes"]

    row.get_by_role("link", name=re.compile("^Edit")).click()
    expect(page.locator("#f-slug")).to_have_attribute("readonly", "")
    expect(page.locator("#f-price_value")).to_have_value("24.99")
    page.locator("[data-catalog-row]").nth(1).get_by_role(
        "button", name=re.compile("Remove")
    ).click()
    page.fill("#f-name", f"Quiet Editor Pro {suffix}")
    page.locator(".edit-card .actions").get_by_role("button", name="Save product").click()
    expect(page.locator(".notice")).to_contain_text("saved")
    stored = _product(keysat, slug)
    assert stored["name"] == f"Quiet Editor Pro {suffix}"
    assert [e["slug"] for e in stored["entitlements_catalog"]] == ["sync"]

    row = page.locator(f"tr[data-product='{slug}']")
    row.get_by_role("button", name="Deactivate").first.click()
    dialog = page.locator("dialog[open]")
    expect(dialog).to_contain_text("its buy page answers 404")
    dialog.get_by_role("button", name="Deactivate").click()
    expect(row).to_contain_text("Inactive")
    assert _product(keysat, slug)["active"] is False
    shoot(page, "admin-products-table")
    row.get_by_role("button", name=re.compile("^Activate")).click()
    expect(row).to_contain_text("Active")

    keysat.create_policy(slug, "basic")
    keysat.issue_license(slug, policy_slug="basic")
    row.get_by_role("button", name="Delete product").first.click()
    page.locator("dialog[open]").get_by_role("button", name="Delete product").click()
    expect(page.locator("h1")).to_have_text(re.compile("and everything sold with it"))
    go = page.get_by_role("button", name="Delete everything")
    expect(go).to_be_disabled()
    page.fill("#confirm-typed", slug)
    shoot(page, "admin-products-force-delete")
    go.click()
    expect(page.locator(".notice")).to_contain_text("also removed 1 tier and 1 license")
    expect(page.locator(f"tr[data-product='{slug}']")).to_have_count(0)


def test_create_a_product_without_javascript(admin_nojs: Page, keysat: KeysatServer) -> None:
    page = admin_nojs
    slug = f"nojs-{uuid.uuid4().hex[:6]}"
    taken = f"taken-{uuid.uuid4().hex[:6]}"
    keysat.create_product(taken)
    page.goto("/admin/products")
    page.locator("details#create summary").click()
    page.fill("#f-name", "No Script")
    page.fill("#f-slug", taken)
    page.fill("#f-price_value", "1,500")
    page.get_by_role("button", name="+ Add entitlement").click()
    page.locator("[data-catalog-row] input[name=ent_slug]").fill("pro")
    create = page.locator("form[data-product-form] .actions").get_by_role(
        "button", name="Create product"
    )
    create.click()
    expect(page.locator("[data-problem]")).to_contain_text("already exists")
    expect(page.locator("#f-price_value")).to_have_value("1,500")
    expect(page.locator("[data-catalog-row] input[name=ent_slug]")).to_have_value("pro")
    page.fill("#f-slug", slug)
    create.click()
    expect(page.locator(f"tr[data-product='{slug}']")).to_contain_text("1,500 sats")
    stored = _product(keysat, slug)
    assert stored["price_value"] == 1500
    assert stored["entitlements_catalog"][0]["slug"] == "pro"
