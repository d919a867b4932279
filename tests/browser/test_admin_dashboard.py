"""The dashboard in a real browser (web.md 11.5.1): the first-run checklist on a fresh
server, the stat tiles, revenue card and charts with their "Show data" tables, the period
switch as a link, hover and focus readouts, and the checklist dismissed without JavaScript."""

from __future__ import annotations

from collections.abc import Callable, Iterator

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
