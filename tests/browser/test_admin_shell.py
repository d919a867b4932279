"""The admin UI's shell in a real browser (web.md 11.1, 11.2, 13): signing in with the admin
key, with and without JavaScript, the layout on every screen, the jobs screen's "Run now",
an ended session returning to the same screen, the 404 inside the layout, and signing out.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page, expect

from browser.conftest import Browse, admin_login
from e2e.harness import KeysatServer

pytestmark = pytest.mark.browser


def _storage(page: Page) -> str:
    return str(
        page.evaluate(
            "() => JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
        )
    )


def test_first_login_with_the_admin_key_keeps_nothing_in_the_browser(
    browse: Browse, keysat: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    page = browse.page()
    page.goto("/admin/jobs")
    expect(page).to_have_url(f"{keysat.base_url}/admin/login?next=/admin/jobs")
    expect(page.locator(".sandbox-banner")).to_contain_text("SANDBOX MODE")
    expect(page.get_by_text("then set a password in Settings")).to_be_visible()
    shoot(page, "admin-login")
    admin_login(page, "/admin/jobs")
    expect(page.locator("h1")).to_have_text("Jobs")
    expect(page.locator(".who-chip")).to_have_text("Signed in with admin key")
    assert _storage(page) == "[[],[]]"
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["keysat_session"]["httpOnly"] is True
    assert cookies["keysat_session"]["sameSite"] == "Strict"
    assert "e2e-admin-key" not in page.content()


def test_a_wrong_key_and_a_scoped_key_are_refused_with_their_message(
    browse: Browse, keysat: KeysatServer
) -> None:
    scoped = keysat.admin_post("/v1/admin/api-keys", {"label": "script", "role": "read-only"})
    page = browse.page()
    for key in ("not-the-key", scoped["token"]):
        page.goto("/admin/login")
        page.fill("#api_key", key)
        page.click("#key-form button[type=submit]")
        expect(page.get_by_role("alert")).to_have_text(
            "That key isn't valid. Use the admin API key."
        )
        assert key not in page.url


def test_jobs_run_now_reports_and_refreshes_the_row(
    admin: Page, shoot: Callable[[Page, str], None]
) -> None:
    admin.goto("/admin/jobs")
    row = admin.locator("tr", has=admin.locator("code", has_text="redemption_reaper"))
    expect(row.locator("td").nth(2)).to_contain_text("Not yet")
    row.get_by_role("button", name="Run now").click()
    expect(admin.locator(".notice")).to_have_text("redemption_reaper ran: ok.")
    expect(row.locator("td").nth(2)).to_contain_text(re.compile("just now|ago"))
    expect(row.locator(".pill")).to_have_text("Ok")
    shoot(admin, "admin-jobs")


def test_without_javascript_login_and_run_now_still_work(browse: Browse) -> None:
    page = admin_login(browse.page(javascript=False), "/admin/jobs")
    row = page.locator("tr", has=page.locator("code", has_text="session_reaper"))
    row.get_by_role("button", name="Run now").click()
    expect(page.locator(".notice")).to_have_text("session_reaper ran: ok.")
    expect(row.locator("td").nth(2)).to_contain_text("(UTC)")


def test_an_ended_session_signs_in_again_and_returns_to_the_same_screen(
    admin: Page, keysat: KeysatServer
) -> None:
    admin.context.add_cookies(
        [{"name": "keysat_session", "value": "ended-session", "url": keysat.base_url}]
    )
    admin.goto("/admin/jobs?view=1")
    expect(admin.get_by_role("alert")).to_have_text(
        "Your session has expired. Sign in again to continue."
    )
    admin_login(admin, "/admin/jobs?view=1")
    expect(admin.locator("h1")).to_have_text("Jobs")


def test_unknown_admin_paths_show_a_404_inside_the_layout(admin: Page) -> None:
    response = admin.goto("/admin/no-such-screen")
    assert response is not None and response.status == 404
    expect(admin.locator("h2")).to_have_text("Not found")
    expect(admin.locator(".sidebar")).to_be_visible()


def test_sign_out_ends_the_session(admin: Page, keysat: KeysatServer) -> None:
    admin.goto("/admin/jobs")
    admin.get_by_role("button", name="Sign out").click()
    expect(admin.get_by_role("status")).to_have_text("You're signed out.")
    admin.goto("/admin/jobs")
    expect(admin).to_have_url(f"{keysat.base_url}/admin/login?next=/admin/jobs")


def test_a_form_from_another_site_is_refused_with_a_page(keysat: KeysatServer) -> None:
    response = httpx.post(
        f"{keysat.base_url}/admin/jobs/reconciler/run",
        headers={"Origin": "https://evil.example"},
        cookies={"keysat_session": "whatever"},
        data={"csrf_token": "x"},
    )
    assert response.status_code in (303, 403)
