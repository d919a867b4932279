"""The buyer pages in a real Chromium against a real `keysat serve` in sandbox mode:
choosing a tier, previewing a code, paying through the sandbox checkout, the receipt and
its key, the free tier, recovery, the same flows without JavaScript, and hostile names.
Every page state is photographed at phone and desktop size (test-artifacts/browser/)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from keysat_licensing_client import Client
from playwright.sync_api import Page, expect

from browser.conftest import Browse
from e2e.harness import KeysatServer

pytestmark = pytest.mark.browser

Shoot = Callable[[Page, str], None]
KEY = re.compile(r"^LIC1-[A-Z2-7]+-[A-Z2-7]+$")
HOSTILE = "</script><script>alert(1)</script>\"'><img src=x onerror=alert(2)>\u2028"


def shop(keysat: KeysatServer, **product: Any) -> str:
    """A SAT product with the three tiers of a typical shop: free, highlighted paid with a
    launch special, and a monthly plan with a trial. Returns its slug."""
    slug = f"acme-{uuid.uuid4().hex[:6]}"
    keysat.create_product(
        slug,
        name=product.pop("name", "Acme Editor"),
        price_sats=50_000,
        description=product.pop(
            "description", "A fast, quiet text editor for people who write code all day."
        ),
        entitlements_catalog=[
            {"slug": "sync", "name": "Cloud sync", "description": "Settings on every machine"},
            {"slug": "themes", "name": "Premium themes"},
            {"slug": "beta", "name": "Beta channel"},
        ],
        **product,
    )
    keysat.create_policy(
        slug,
        "starter",
        name="Starter",
        price_sats_override=0,
        metadata={"marketing_bullets": ["Core editor", "Community support"]},
    )
    keysat.create_policy(
        slug,
        "pro",
        name="Pro",
        duration_seconds=365 * 86_400,
        max_machines=3,
        entitlements=["sync", "themes", "beta"],
        metadata={
            "highlight": True,
            "description": "For professionals.",
            "marketing_bullets": ["Everything in Starter", "Priority e-mail support"],
            "hidden_entitlements": ["beta"],
        },
    )
    keysat.create_policy(
        slug,
        "team",
        name="Team",
        price_sats_override=200_000,
        max_machines=0,
        entitlements=["sync", "themes"],
        is_recurring=True,
        renewal_period_days=30,
        trial_days=14,
    )
    keysat.admin_post(
        "/v1/admin/discount-codes",
        {
            "code": f"L{uuid.uuid4().hex[:7]}".upper(),
            "kind": "percent",
            "amount": 2000,
            "featured": True,
            "max_uses": 50,
            "product_slug": slug,
            "policy_slugs": ["pro"],
        },
    )
    return slug


def start(keysat: KeysatServer, slug: str, **fields: Any) -> dict[str, Any]:
    """POST /v1/purchase as the SDKs send it."""
    response = keysat.admin.post("/v1/purchase", json={"product": slug, **fields})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def used_count(keysat: KeysatServer, code: str) -> int:
    codes = keysat.admin.get("/v1/admin/discount-codes").json()["codes"]
    return int(next(item["used_count"] for item in codes if item["code"] == code))


def price_card(page: Page) -> str:
    """The visible price block's text, as written (not as styled)."""
    text = page.locator(".price-card .price-block:visible").text_content() or ""
    return " ".join(text.split())


def key_on(page: Page) -> str:
    key = page.locator("code.key:visible").inner_text().strip()
    assert KEY.match(key), key
    return key


# --- choosing a tier ----------------------------------------------------------------------------


def test_tier_cards_default_to_the_highlighted_tier_and_follow_the_selection(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    slug = shop(keysat)
    page = browse.page()
    page.goto(f"/buy/{slug}")
    cards = page.locator("[data-tier-card] .tier-name")
    expect(cards).to_have_text(["Starter", "Pro", "Team"])
    expect(page.locator(".tier.is-highlighted .pill")).to_have_text("Most popular")
    expect(page.locator("#tier-1")).to_be_checked()
    expect(page.locator(".tier.has-ribbon .ribbon")).to_have_text("20% OFF")
    pro = page.locator(".tier").nth(1)
    expect(pro.locator(".tier-was")).to_have_text("Was 50,000 sats")
    expect(pro.locator(".tier-price")).to_have_text("40,000 sats")
    expect(pro.locator(".features li")).to_have_text(
        [
            "Everything in Starter",
            "Priority e-mail support",
            re.compile("^Cloud sync"),
            "Premium themes",
        ]
    )
    assert "Price · Pro" in price_card(page) and "40,000 sats" in price_card(page)
    expect(page.locator("#code-status")).to_have_text("Launch special applied")
    expect(page.locator("[data-cta]")).to_have_text(
        "Continue to sandbox checkout", use_inner_text=True
    )
    shoot(page, "buy-default")

    page.locator(".tier").nth(2).click()
    expect(page.locator("#tier-2")).to_be_checked()
    assert "Free for 14 days" in price_card(page) and "then 200,000 sats / mo" in price_card(page)
    expect(page.locator("[data-cta]")).to_have_text("Start 14-day free trial", use_inner_text=True)
    expect(page.locator(".trial-hint")).to_be_visible()
    expect(page.locator("#code")).to_have_value("")
    shoot(page, "buy-trial-selected")
    page.fill("#code", "ANYCODE")
    page.click("[data-apply]")
    expect(page.locator("#code-status")).to_have_text("Codes don't apply to free trials.")
    assert "Free for 14 days" in price_card(page)

    page.goto(f"/buy/{slug}?policy=starter")
    expect(page.locator("#tier-0")).to_be_checked()
    expect(page.locator("[data-cta]")).to_have_text("Get free license", use_inner_text=True)
    expect(page.locator(".methods")).to_be_hidden()
    page.goto(f"/buy/{slug}?policy=no-such-tier")
    expect(page.locator("#tier-1")).to_be_checked()


def test_fiat_tiers_show_currency_and_cadence(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    slug = f"studio-{uuid.uuid4().hex[:6]}"
    keysat.create_product(
        slug,
        name="Studio Mixer",
        price_sats=None,
        price_currency="USD",
        price_value=2500,
        description="Mix, master and publish from one window.",
    )
    keysat.create_policy(slug, "monthly", name="Monthly", is_recurring=True, renewal_period_days=30)
    keysat.create_policy(
        slug,
        "yearly",
        name="Yearly",
        price_sats_override=25_000,
        is_recurring=True,
        renewal_period_days=365,
        metadata={"highlight": True, "marketing_bullets": ["Two months free"]},
    )
    keysat.create_policy(slug, "lifetime", name="Lifetime", price_sats_override=39_999)
    keysat.create_policy(
        slug, "week", name="Weekly pass", price_sats_override=499, duration_seconds=7 * 86_400
    )
    page = browse.page()
    page.goto(f"/buy/{slug}")
    expect(page.locator(".tier-price")).to_have_text(["$4.99", "$25 / mo", "$250 / yr", "$399.99"])
    expect(page.locator(".tier-meta").first).to_contain_text("7 days")
    expect(page.locator("#tier-2")).to_be_checked()
    shoot(page, "buy-fiat-four-tiers")


# --- discount codes --------------------------------------------------------------------------


def test_apply_previews_a_code_without_reserving_it(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    slug = f"kit-{uuid.uuid4().hex[:6]}"
    keysat.create_product(slug, name="Render Kit", price_sats=80_000)
    keysat.create_policy(slug, "standard", name="Standard")
    code = f"SAVE{uuid.uuid4().hex[:6]}".upper()
    keysat.admin_post(
        "/v1/admin/discount-codes",
        {"code": code, "kind": "percent", "amount": 2500, "max_uses": 3, "product_slug": slug},
    )
    page = browse.page()
    page.goto(f"/buy/{slug}")
    page.fill("#code", code.lower())
    page.click("[data-apply]")
    expect(page.locator("#code-status")).to_have_text("25% off applied.")
    assert "60,000 sats" in price_card(page) and "80,000 sats" in price_card(page)
    expect(page.locator(".price-tag:visible")).to_have_text("25% off")
    shoot(page, "buy-code-applied")
    page.click("[data-apply]")
    expect(page.locator("#code-status")).to_have_text("25% off applied.")
    assert used_count(keysat, code) == 0

    page.fill("#code", "NOPE-NOT-A-CODE")
    expect(page.locator("#code-status")).to_have_text("")
    page.press("#code", "Enter")
    expect(page.locator("#code-status")).to_have_text("Code not found.")
    assert "80,000 sats" in price_card(page) and "60,000" not in price_card(page)
    shoot(page, "buy-code-invalid")


# --- paying in the sandbox ---------------------------------------------------------------------


def test_paying_in_the_sandbox_shows_a_key_that_validates_and_copies(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    slug = shop(keysat)
    page = browse.page()
    page.goto(f"/buy/{slug}")
    page.fill("#buyer_email", "ada@example.com")
    page.click("[data-cta]")
    page.wait_for_url(re.compile(r"/sandbox/checkout/sbx_[0-9a-f]{32}$"))
    expect(page).to_have_title(re.compile(r"^\[SANDBOX\]"))
    expect(page.locator(".amount .sats")).to_have_text("40,000 sats")
    expect(page.locator(".amount .btc")).to_have_text("0.00040000 BTC")
    expect(page.locator(".sandbox-note")).to_have_text(
        "SANDBOX — simulated payment, no money moves"
    )
    shoot(page, "sandbox-checkout")

    page.get_by_role("button", name="Simulate payment").click()
    page.wait_for_url(re.compile(r"/thank-you\?invoice_id="))
    expect(page.locator("h1")).to_have_text("Your license is ready.")
    key = key_on(page)
    expect(page.locator(".facts")).to_contain_text("Pro")
    copy = page.get_by_role("button", name="Copy")
    copy.click()
    expect(page.locator(".copy-status")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key
    shoot(page, "thank-you-ready")
    result = Client(keysat.base_url).validate(key, product_slug=slug)
    assert result.ok, result.reason


def test_the_receipt_polls_until_the_payment_arrives(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    slug = shop(keysat)
    bought = start(keysat, slug, policy_slug="pro")
    page = browse.page()
    page.goto(f"/thank-you?invoice_id={bought['invoice_id']}")
    expect(page.locator(".stamp")).to_have_text("Awaiting payment")
    expect(page.locator("[data-status]")).to_have_text("Waiting for your payment…")
    expect(page.locator(".reference")).to_contain_text(bought["invoice_id"])
    shoot(page, "thank-you-pending")
    keysat.admin_post(f"/v1/admin/sandbox/invoices/{bought['invoice_id']}/pay")
    expect(page.locator("h1")).to_have_text("Your license is ready.", timeout=15_000)
    key_on(page)


def test_letting_the_invoice_expire_shows_the_failure_and_a_way_back(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    slug = shop(keysat)
    bought = start(keysat, slug, policy_slug="pro")
    page = browse.page()
    page.goto(bought["checkout_url"])
    page.get_by_role("button", name="Let it expire").click()
    expect(page.locator(".badge")).to_have_text("Expired")
    expect(page.get_by_role("button", name="Let it expire")).to_have_count(0)
    shoot(page, "sandbox-checkout-expired")
    page.goto(f"/thank-you?invoice_id={bought['invoice_id']}")
    expect(page.locator("h1")).to_have_text("This payment was not completed.")
    shoot(page, "thank-you-failed")
    page.get_by_role("link", name="Try again").click()
    expect(page.locator("#tier-1")).to_be_checked()


# --- free tier and recovery ------------------------------------------------------------------


def test_a_free_tier_is_issued_on_the_page(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    slug = shop(keysat)
    page = browse.page(viewport={"width": 390, "height": 844})
    page.goto(f"/buy/{slug}?policy=starter")
    page.click("[data-cta]")
    expect(page.locator(".success-card h2")).to_have_text("You're licensed.")
    key = key_on(page)
    expect(page.locator(".success-card .facts")).to_contain_text("Perpetual")
    page.get_by_role("button", name="Copy").click()
    expect(page.locator(".copy-status")).to_have_text("Copied")
    shoot(page, "buy-free-issued")
    page.get_by_role("link", name="Bookmark your receipt").click()
    assert key_on(page) == key


def test_recover_finds_the_key_by_invoice_and_email(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    slug = shop(keysat)
    bought = start(keysat, slug, policy_slug="pro", buyer_email="grace@example.com")
    keysat.admin_post(f"/v1/admin/sandbox/invoices/{bought['invoice_id']}/pay")
    page = browse.page()
    page.goto("/recover")
    shoot(page, "recover")
    page.fill("#invoice_id", bought["invoice_id"])
    page.fill("#email", "someone@example.com")
    page.click("[data-recover-submit]")
    expect(page.locator("[data-recover-error]")).to_have_text(
        "We couldn't match that invoice reference and e-mail to a completed purchase."
    )
    shoot(page, "recover-failed")
    page.fill("#email", "GRACE@example.com")
    page.click("[data-recover-submit]")
    expect(page.locator("[data-slot=product]")).to_have_text("Acme Editor")
    expect(page.locator("[data-slot=entitlements]")).to_have_text(
        "Cloud sync, Premium themes, Beta channel"
    )
    key_on(page)
    shoot(page, "recover-found")


# --- without JavaScript -----------------------------------------------------------------------


def test_every_buyer_task_works_without_javascript(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    slug = shop(keysat)
    page = browse.page(javascript=False)
    page.goto(f"/buy/{slug}")
    expect(page.get_by_role("button", name="Copy")).to_have_count(0)
    page.locator(".tier").nth(2).locator(".select-button").click()
    expect(page.locator("#tier-2")).to_be_checked()
    assert "Free for 14 days" in price_card(page)
    page.locator(".tier").nth(1).locator(".select-button").click()
    page.fill("#code", "NOT-A-CODE")
    page.click("[data-apply]")
    expect(page.locator("#code-status")).to_have_text("Code not found.")
    expect(page.locator("#tier-1")).to_be_checked()
    expect(page.locator("#code")).to_have_value("NOT-A-CODE")
    shoot(page, "nojs-buy-code-invalid")
    page.fill("#code", "")
    page.fill("#buyer_email", "lin@example.com")
    page.click("[data-cta]")
    page.wait_for_url(re.compile(r"/sandbox/checkout/sbx_"))
    page.get_by_role("button", name="Simulate payment").click()
    page.wait_for_url(re.compile(r"/thank-you\?invoice_id="))
    expect(page.locator("h1")).to_have_text("Your license is ready.")
    key = key_on(page)
    invoice_id = page.url.split("invoice_id=")[1]
    shoot(page, "nojs-thank-you-ready")

    page.goto(f"/buy/{slug}")
    page.locator(".tier").first.locator(".select-button").click()
    page.click("[data-cta]")
    page.wait_for_url(re.compile(r"/thank-you\?invoice_id="))
    key_on(page)

    page.goto("/recover")
    page.fill("#invoice_id", invoice_id)
    page.fill("#email", "lin@example.com")
    page.click("[data-recover-submit]")
    assert key_on(page) == key
    shoot(page, "nojs-recover-found")


def test_the_no_javascript_purchase_passes_through_a_continue_page(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    """The interim page refreshes to the checkout at once; shown here with the refresh
    taken out, to look at it."""
    slug = shop(keysat)
    answer = keysat.admin.post(f"/buy/{slug}", data={"policy_slug": "pro", "action": "buy"})
    assert answer.status_code == 200
    held = answer.text.replace('<meta http-equiv="refresh"', '<meta name="held-refresh"')
    page = browse.page(javascript=False)
    page.route(
        "**/continue-preview",
        lambda route: route.fulfill(status=200, content_type="text/html", body=held),
    )
    page.goto("/continue-preview")
    expect(page.locator("h1")).to_have_text("Continue to payment")
    expect(page.locator(".amount-big")).to_have_text("40,000 sats")
    expect(page.get_by_role("link", name="Continue to payment")).to_have_attribute(
        "href", re.compile(r"/sandbox/checkout/sbx_")
    )
    shoot(page, "nojs-continue")


# --- hostile operator text --------------------------------------------------------------------


def test_hostile_names_and_parameters_stay_text(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    slug = shop(keysat, name=f"Evil {HOSTILE}", description=f"Description {HOSTILE}")
    keysat.create_policy(
        slug,
        f"evil-{uuid.uuid4().hex[:4]}",
        name=f"Tier {HOSTILE}",
        metadata={"marketing_bullets": [f"Bullet {HOSTILE}"], "description": HOSTILE},
    )
    page = browse.page()
    page.goto(f"/buy/{slug}?policy=%3C/script%3E%3Cscript%3Ealert(3)%3C/script%3E")
    expect(page.locator("h1")).to_have_text(f"Evil {HOSTILE}")
    expect(page.locator(".tier-name").filter(has_text="Tier </script>")).to_have_count(1)
    expect(page.locator(".features li").filter(has_text="Bullet </script>")).to_have_count(1)
    assert page.locator("img").count() == 0
    shoot(page, "buy-hostile")
    for path in (
        "/thank-you?invoice_id=%3C/script%3E%3Cscript%3Ealert(4)%3C/script%3E",
        "/thank-you?invoice_id=%22%3E%3Cimg%20src=x%20onerror=alert(5)%3E",
        "/thank-you?invoice_id=javascript:alert(6)",
    ):
        page.goto(path)
        expect(page.locator("h1")).to_have_text("This link is missing its invoice reference.")
    shoot(page, "thank-you-missing")
    page.goto("/")
    expect(page.get_by_role("heading", name=re.compile("^Evil"))).to_have_count(1)
    shoot(page, "home")


# --- subscriptions ------------------------------------------------------------------------------


def test_an_upgrade_paid_in_the_sandbox_shows_its_own_receipt(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    slug = f"plans-{uuid.uuid4().hex[:6]}"
    keysat.create_product(slug, name="Plans App", price_sats=10_000)
    keysat.create_policy(
        slug, "basic", name="Basic", is_recurring=True, renewal_period_days=30, tier_rank=1
    )
    keysat.create_policy(
        slug,
        "plus",
        name="Plus",
        is_recurring=True,
        renewal_period_days=30,
        tier_rank=2,
        price_sats_override=30_000,
        entitlements=["priority"],
    )
    bought = start(keysat, slug, policy_slug="basic")
    keysat.admin_post(f"/v1/admin/sandbox/invoices/{bought['invoice_id']}/pay")
    page = browse.page()
    page.goto(f"/thank-you?invoice_id={bought['invoice_id']}")
    expect(page.locator(".note-line")).to_contain_text("Renews monthly; next renewal")
    shoot(page, "thank-you-subscription")
    old_key = key_on(page)
    upgrade = keysat.admin.post(
        "/v1/upgrade", json={"license_key": old_key, "target_policy_slug": "plus"}
    )
    assert upgrade.status_code == 200, upgrade.text
    page.goto(upgrade.json()["checkout_url"])
    expect(page.locator("h1")).to_have_text("Upgrade to Plans App — Plus")
    page.get_by_role("button", name="Simulate payment").click()
    page.wait_for_url(re.compile(r"/thank-you\?invoice_id="))
    expect(page.locator("h1")).to_have_text("Upgrade applied: you're now on Plus.")
    expect(page.locator(".note-line").first).to_contain_text("replace your old key")
    assert key_on(page) != old_key
    shoot(page, "thank-you-upgrade")


def test_the_receipt_slows_down_then_stops_and_can_start_again(
    keysat: KeysatServer, browse: Browse, shoot: Shoot
) -> None:
    """web.md 7.2-7.3 on the page's own clock: 3 s, then 10 s, then 30 s, then a cutoff."""
    slug = shop(keysat)
    bought = start(keysat, slug, policy_slug="pro")
    page = browse.page()
    page.clock.install()
    polls: list[str] = []
    page.on(
        "request",
        lambda request: polls.append(request.url) if "/v1/purchase/" in request.url else None,
    )
    page.goto(f"/thank-you?invoice_id={bought['invoice_id']}")
    status = page.locator("[data-status]")
    expect(status).to_have_text("Waiting for your payment…")
    with page.expect_request(re.compile(r"/v1/purchase/")):
        page.clock.run_for(4_000)
    page.clock.fast_forward("02:00")
    page.clock.run_for(10_000)
    expect(status).to_have_text(re.compile("^Still waiting. If you paid on-chain"))
    page.clock.fast_forward("10:00")
    page.clock.run_for(30_000)
    expect(status).to_have_text(re.compile("^This is taking longer than usual."))
    page.clock.fast_forward("20:00")
    page.clock.run_for(60_000)
    expect(status).to_have_text("Still waiting. Bookmark this page and refresh it later.")
    again = page.get_by_role("button", name="Check again")
    expect(again).to_be_visible()
    shoot(page, "thank-you-cutoff")
    stopped = len(polls)
    page.clock.run_for(120_000)
    assert len(polls) == stopped
    keysat.admin_post(f"/v1/admin/sandbox/invoices/{bought['invoice_id']}/pay")
    again.click()
    expect(page.locator("h1")).to_have_text("Your license is ready.")
