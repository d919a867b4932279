"""Policies in a real browser (web.md 11.5.3): tier cards in ladder order with their admin
details, create and edit with every field (the recurring section included), metadata kept
across edits, hide, disable, archive, reorder, delete safe-then-force, and creating a tier
without JavaScript."""

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


def _tiers(keysat: KeysatServer, slug: str) -> dict[str, dict[str, Any]]:
    answer = keysat.admin.get(
        "/v1/admin/policies",
        params={"product_slug": slug, "include_inactive": "true", "include_archived": "true"},
    )
    return {p["slug"]: p for p in answer.json()["policies"]}


def _shop(keysat: KeysatServer) -> str:
    slug = f"ladder-{uuid.uuid4().hex[:6]}"
    keysat.create_product(
        slug,
        name="Ladder Editor",
        price_sats=None,
        price_currency="USD",
        price_value=2500,
        entitlements_catalog=[
            {"slug": "sync", "name": "Cloud sync"},
            {"slug": "themes", "name": "Premium themes"},
        ],
    )
    return slug


def test_tiers_are_created_edited_and_managed_as_cards(
    admin: Page, keysat: KeysatServer, shoot: Shoot
) -> None:
    slug = _shop(keysat)
    keysat.create_policy(slug, "basic", name="Basic", tier_rank=1, metadata={"campaign": "spring"})
    page = admin
    page.goto(f"/admin/policies#product-{slug}")
    section = page.locator(f"#product-{slug}")
    section.get_by_role("link", name=re.compile(r"\+ Add tier")).click()
    expect(page.locator("label[for=f-price]")).to_have_text("Price (USD)")
    page.wait_for_load_state("load")
    page.fill("#f-name", "Team Plan")
    expect(page.locator("#f-slug")).to_have_value("team-plan")
    page.fill("#f-description", "For small teams.")
    page.fill("#f-price", "19.99")
    page.fill("#f-max_machines", "5")
    page.locator(".bubble", has_text="Cloud sync").locator("input.grant").check()
    page.locator(".bubble", has_text="Premium themes").locator("input.grant").check()
    page.locator(".bubble", has_text="Premium themes").locator("input[name=hide_ent]").check()
    page.fill("#f-bullets", "Priority support\nShared seats")
    page.check("input[name=highlight]")
    page.check("input[name=is_recurring]")
    expect(page.locator("[data-recurring-only]")).to_be_visible()
    expect(page.locator("[data-one-off-only]")).to_be_hidden()
    page.select_option("#f-renewal", "365")
    page.fill("#f-trial_days", "14")
    page.fill("#f-tier_rank", "2")
    shoot(page, "admin-policies-recurring-form")
    page.locator(".edit-card .actions").get_by_role("button", name="Create tier").click()
    expect(page.locator(".notice")).to_contain_text("Tier Team Plan created")

    team = _tiers(keysat, slug)["team-plan"]
    assert team["price_sats_override"] == 1999
    assert team["is_recurring"] and team["renewal_period_days"] == 365
    assert team["trial_days"] == 14 and team["allow_repeat_trials"] is False
    assert team["entitlements"] == ["sync", "themes"]
    assert team["metadata"]["hidden_entitlements"] == ["themes"]
    assert team["metadata"]["marketing_bullets"] == ["Priority support", "Shared seats"]
    assert team["max_machines"] == 5 and team["tier_rank"] == 2

    card = section.locator("li[data-tier='team-plan']")
    expect(card).to_contain_text("$19.99 / yr")
    expect(card).to_contain_text("14-day free trial")
    expect(card.locator("li.is-hidden")).to_have_text("Premium themes")
    expect(card).to_contain_text("Most popular")
    expect(section.locator("li[data-tier] h3")).to_have_text(["Basic", "Team Plan"])
    shoot(page, "admin-policies-cards")

    # Editing keeps the metadata keys the form does not know about.
    section.locator("li[data-tier='basic']").get_by_role("link", name=re.compile("^Edit")).click()
    expect(page.locator("#f-slug")).to_have_attribute("readonly", "")
    page.fill("#f-price", "5")
    page.get_by_text("Revenue share (advanced)").click()
    page.fill("#f-tip_recipient", "ada@example.com")
    page.fill("#f-tip_pct", "2.5")
    page.locator(".edit-card .actions").get_by_role("button", name="Save tier").click()
    expect(page.locator(".notice")).to_contain_text("Basic saved")
    basic = _tiers(keysat, slug)["basic"]
    assert basic["metadata"] == {"campaign": "spring"}
    assert basic["price_sats_override"] == 500
    assert (basic["tip_recipient"], basic["tip_pct_bps"]) == ("ada@example.com", 250)

    # Move Basic up the ladder: ranks become 1..N in the new order.
    section.locator("li[data-tier='basic']").get_by_role(
        "button", name="Move up the ladder"
    ).click()
    expect(section.locator("li[data-tier] h3")).to_have_text(["Team Plan", "Basic"])
    tiers = _tiers(keysat, slug)
    assert (tiers["team-plan"]["tier_rank"], tiers["basic"]["tier_rank"]) == (1, 2)

    basic_card = section.locator("li[data-tier='basic']")
    basic_card.get_by_role("button", name="Hide from buy page").click()
    expect(basic_card).to_contain_text("Private")
    basic_card.get_by_role("button", name="Archive", exact=True).first.click()
    page.locator("dialog[open]").get_by_role("button", name="Archive").click()
    expect(section.locator("li[data-tier='basic']")).to_have_count(0)
    assert _tiers(keysat, slug)["basic"]["archived_at"] is not None
    page.get_by_role("link", name="Show archived").click()
    expect(section.locator("li[data-tier='basic'] .admin-tier")).to_have_class(
        re.compile("is-archived")
    )
    shoot(page, "admin-policies-archived")

    keysat.issue_license(slug, policy_slug="basic")
    section.locator("li[data-tier='basic']").get_by_role(
        "button", name=re.compile("^Delete")
    ).click()
    expect(page.locator(".confirm-page")).to_contain_text("Licenses: 1")
    page.get_by_role("button", name="Delete tier").click()
    expect(page.locator("h1")).to_have_text(re.compile("and everything sold with it"))
    page.fill("#confirm-typed", "basic")
    page.get_by_role("button", name="Delete everything").click()
    expect(page.locator(".notice")).to_contain_text("Deleted Basic; also removed 1 license")
    assert "basic" not in _tiers(keysat, slug)


def test_add_a_tier_without_javascript(admin_nojs: Page, keysat: KeysatServer) -> None:
    slug = f"plain-{uuid.uuid4().hex[:6]}"
    keysat.create_product(slug, name="Plain Tool", price_sats=21_000)
    page = admin_nojs
    page.goto("/admin/policies")
    page.locator(f"#product-{slug}").get_by_role("link", name=re.compile(r"\+ Add tier")).click()
    expect(page.locator("label[for=f-price]")).to_have_text("Price (SAT)")
    page.fill("#f-name", "Lifetime")
    page.fill("#f-slug", "lifetime")
    page.fill("#f-entitlements_text", "pro, export")
    page.select_option("#f-duration", "365")
    page.fill("#f-price", "1.5")
    page.locator(".edit-card .actions").get_by_role("button", name="Create tier").click()
    expect(page.locator("[data-problem]")).to_contain_text("Sats are whole numbers")
    expect(page.locator("#f-entitlements_text")).to_have_value("pro, export")
    page.fill("#f-price", "")
    page.locator(".edit-card .actions").get_by_role("button", name="Create tier").click()
    card = page.locator(f"#product-{slug} li[data-tier='lifetime']")
    expect(card).to_contain_text("21,000 sats")
    expect(card).to_contain_text("365 days")
    tier = _tiers(keysat, slug)["lifetime"]
    assert tier["entitlements"] == ["pro", "export"]
    assert tier["duration_seconds"] == 365 * 86_400 and tier["price_sats_override"] is None
