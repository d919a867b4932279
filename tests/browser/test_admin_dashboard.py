"""The dashboard in a real browser (web.md 11.5.1): the first-run checklist on a fresh
server, the stat tiles, revenue card and charts with their "Show data" tables, the period
switch as a link, hover and focus readouts, and the checklist dismissed without JavaScript."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from playwright.sync_api import Browser, Page, expect

from browser.conftest import Browse, admin_login
from e2e.harness import KeysatServer, launch_server

pytestmark = pytest.mark.browser

Shoot = Callable[[Page, str], None]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory, chromium: Browser) -> Iterator[KeysatServer]:
    """A server of its own, so the dashboard is seen as on first run."""
    with launch_server(
        tmp_path_factory.mktemp("keysat-dashboard"), {"KEYSAT_ENV": "development"}
    ) as server:
        yield server


def test_first_run_shows_the_checklist_and_empty_charts(
    chromium: Browser, fresh: KeysatServer, shoot: Shoot
) -> None:
    browse = Browse(chromium, fresh.base_url)
    try:
        page = admin_login(browse.page())
        expect(page.locator("h1")).to_have_text("Dashboard")
        checklist = page.locator(".checklist")
        expect(checklist.locator("li")).to_have_count(7)
        expect(checklist.locator("li.is-todo")).to_contain_text(
            ["Set a web password", "Set the operator name", "Create a product", "Add a tier"]
        )
        # Sandbox mode counts as a way to take (simulated) payments.
        expect(checklist.locator("li.is-done")).to_contain_text(["payment provider"])
        expect(page.locator(".stat").first).to_contain_text("0 sats")
        expect(page.locator(".chart")).to_have_count(3)
        expect(page.locator("#chart-revenue .bar")).to_have_count(30)
        expect(page.locator("#chart-revenue [data-readout]")).to_have_text(
            "Nothing yet in this period."
        )
        expect(page.locator("#public-key .key-preview")).to_contain_text("BEGIN PUBLIC KEY")
        shoot(page, "admin-dashboard-empty")

        page.get_by_role("link", name="7 days").click()
        expect(page).to_have_url(f"{fresh.base_url}/admin/?days=7")
        expect(page.locator("#chart-validations .bar")).to_have_count(7)
        expect(page.get_by_role("link", name="7 days")).to_have_attribute("aria-current", "true")

        page.get_by_role("button", name="Hide checklist").click()
        expect(page.locator(".checklist")).to_have_count(0)
    finally:
        browse.close()
    assert browse.watch.problems == []


def _revenue_today(page: Page) -> int:
    page.goto("/admin/?days=7")
    today = datetime.now(UTC).date().isoformat()
    cell = page.locator(f"#chart-revenue tr[data-day='{today}'] td").first
    return int((cell.text_content() or "").replace(",", ""))


def _add_tier(page: Page, product: str, name: str, price: str, *, popular: bool = False) -> None:
    page.goto("/admin/policies")
    page.locator(f"#product-{product}").get_by_role("link", name=re.compile(r"\+ Add tier")).click()
    # The slug follows the name through the page's script, which runs by the load event.
    page.wait_for_load_state("load")
    page.fill("#f-name", name)
    page.fill("#f-price", price)
    if popular:
        page.check("input[name=highlight]")
    page.locator(".edit-card .actions").get_by_role("button", name="Create tier").click()
    expect(page.locator(".notice")).to_contain_text(f"Tier {name} created")


def test_done_when_a_new_operator_sets_up_three_tiers_sells_one_and_sees_it_on_the_chart(
    admin: Page, browse: Browse, keysat: KeysatServer, shoot: Shoot
) -> None:
    """The issue's "Done when": log in, set up a product with three tiers, sell one through
    the sandbox, and watch it appear on the dashboard chart."""
    page = admin
    before = _revenue_today(page)
    product = f"journey-{uuid.uuid4().hex[:6]}"
    page.goto("/admin/products")
    page.locator("details#create summary").click()
    page.fill("#f-name", "Journey App")
    page.fill("#f-slug", product)
    page.fill("#f-price_value", "30000")
    page.locator("form[data-product-form] .actions").get_by_role(
        "button", name="Create product"
    ).click()
    expect(page.locator(f"tr[data-product='{product}']")).to_contain_text("30,000 sats")
    _add_tier(page, product, "Free", "0")
    _add_tier(page, product, "Pro", "", popular=True)
    _add_tier(page, product, "Team", "60000")
    expect(page.locator(f"#product-{product} li[data-tier] h3")).to_have_text(
        ["Free", "Pro", "Team"]
    )

    buyer = browse.page()
    buyer.goto(f"/buy/{product}")
    buyer.locator(".tier").nth(1).locator(".select-button").click()
    buyer.click("[data-cta]")
    buyer.wait_for_url(re.compile(r"/sandbox/checkout/sbx_[0-9a-f]{32}$"))
    expect(buyer.locator(".amount .sats")).to_have_text("30,000 sats")
    buyer.get_by_role("button", name="Simulate payment").click()
    buyer.wait_for_url(re.compile(r"/thank-you\?invoice_id="))
    expect(buyer.locator("h1")).to_have_text("Your license is ready.")

    assert _revenue_today(page) == before + 30_000
    today = page.locator("#chart-revenue .bar").last
    expect(today).to_have_attribute("data-value", re.compile(r"sats$"))
    today.hover()
    expect(page.locator("#chart-revenue [data-readout]")).to_have_text(
        f"{today.get_attribute('data-value')}"
    )
    page.locator("#chart-revenue summary").click()
    shoot(page, "admin-dashboard-with-sale")
