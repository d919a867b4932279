"""The Audit log screen in a real browser (web.md 11.5.12): entries made by the master key,
a named API key and this web session, each actor named in words, targets linked to their
screens, details as escaped JSON, filters and paging backwards, and nothing secret on the
page. Without JavaScript the filters work the same.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page, expect

from e2e.harness import ADMIN_KEY, KeysatServer
from keysat.web.admin.audit import ACTION_NAMES, actor_name, target_of

pytestmark = pytest.mark.browser

HOSTILE = "</script><img src=x onerror=alert(1)> 'quoted' \"double\""


def test_every_actor_kind_is_named_by_its_credential() -> None:
    labels = {"k1": "billing bot"}
    methods = {"s1": "password", "s2": "api_key"}

    def name(**entry: object) -> str:
        return actor_name({"action": "product.create", "details": {}, **entry}, labels, methods)

    assert name(actor_kind="admin_api_key", actor_id="master") == "master key"
    assert name(actor_kind="scoped_api_key", actor_id="k1") == "API key 'billing bot'"
    assert name(actor_kind="web_ui", actor_id="s1") == "web session (password)"
    assert name(actor_kind="web_ui", actor_id="s2") == "web session (admin key)"
    assert name(actor_kind="buyer_license_key") == "buyer (license key)"
    assert name(actor_kind="buyer_self_service") == "buyer (recovery)"
    assert name(actor_kind="system") == "system"
    assert name(actor_kind="renewal_worker") == "renewal worker"
    failed = {"action": "web_ui.login_failed", "actor_kind": "web_ui", "actor_id": None}
    assert actor_name({**failed, "details": {"method": "password"}}, {}, {}) == (
        "web session (password)"
    )
    assert target_of({"target_kind": "session", "target_id": "secret-ish"}).full_id is None
    deleted = target_of({"action": "product.delete", "target_kind": "product", "target_id": "p"})
    assert deleted.href is None
    assert {"license.revoke", "api_key.create", "job.run"} <= ACTION_NAMES
    job = target_of({"action": "job.run", "target_kind": "job", "target_id": "renewals"})
    assert (job.short_id, job.href) == ("renewals", "/admin/jobs")


def test_entries_name_their_actor_link_their_target_and_page_backwards(
    admin: Page, keysat: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    slug = f"audit-{uuid.uuid4().hex[:8]}"
    keysat.create_product(slug)
    keysat.create_policy(slug, "std")
    license_id = keysat.issue_license(slug, policy_slug="std")["license_id"]
    label = f"desk {uuid.uuid4().hex[:6]}"
    token = keysat.admin_post("/v1/admin/api-keys", {"label": label, "role": "support"})["token"]
    suspended = httpx.post(
        f"{keysat.base_url}/v1/admin/licenses/{license_id}/suspend",
        json={"reason": HOSTILE},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert suspended.status_code == 200, suspended.text
    # A change made in the UI: the web session acts, not the master key.
    admin.goto("/admin/api-keys?new=1")
    admin.fill("#f-label", f"ui {label}")
    admin.locator("input[name=role][value='read-only']").check()
    admin.locator("#generate-key").get_by_role("button", name="Generate key").click()
    expect(admin.locator(".show-once")).to_be_visible()

    admin.goto("/admin/audit")
    expect(admin.locator("#f-limit")).to_have_value("50")
    made_here = admin.locator(
        "tbody tr", has=admin.locator("code", has_text="api_key.create")
    ).first
    expect(made_here.locator(".actor-cell")).to_have_text("web session (admin key)")
    expect(made_here.locator(".target-cell a")).to_have_attribute(
        "href", re.compile(r"^/admin/api-keys\?revoked=1#key-")
    )
    login_row = admin.locator(
        "tbody tr", has=admin.locator("code", has_text="web_ui.login_ok")
    ).first
    expect(login_row.locator(".actor-cell")).to_have_text("web session (admin key)")
    expect(login_row.locator(".target-cell")).to_have_text("session")
    shoot(admin, "admin-audit")

    admin.fill("#f-target_kind", "license")
    admin.fill("#f-target_id", license_id)
    admin.get_by_role("button", name="Show entries").click()
    expect(admin).to_have_url(re.compile(r"target_kind=license&target_id="))
    rows = admin.locator("tbody tr")
    expect(rows).to_have_count(2)
    suspend = rows.nth(0)
    expect(suspend.locator("td").nth(1)).to_have_text("license.suspend")
    expect(suspend.locator(".actor-cell")).to_have_text(f"API key '{label}'")
    expect(suspend.locator(".target-cell a")).to_have_attribute(
        "href", f"/admin/licenses/{license_id}"
    )
    expect(suspend.locator(".target-cell")).to_contain_text(f"license {license_id[:8]}…")
    expect(suspend.locator("td").nth(4)).to_have_text("127.0.0.1")
    suspend.get_by_text("Show").click()
    expect(suspend.locator(".details-json")).to_contain_text('"reason": ' + '"' + "</script>")
    issue = rows.nth(1)
    expect(issue.locator("td").nth(1)).to_have_text("license.issue_manual")
    expect(issue.locator(".actor-cell")).to_have_text("master key")
    shoot(admin, "admin-audit-filtered")

    admin.goto(f"/admin/audit?target_kind=license&target_id={license_id}&limit=1")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td").nth(1)).to_have_text("license.suspend")
    admin.get_by_role("link", name="Older entries").click()
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td").nth(1)).to_have_text("license.issue_manual")
    expect(admin.get_by_role("link", name="Newest entries")).to_be_visible()

    admin.goto("/admin/audit?limit=1000")
    page = admin.content()
    session_ids = [
        entry["target_id"]
        for entry in keysat.admin.get(
            "/v1/admin/audit", params={"action": "web_ui.login_ok"}
        ).json()["entries"]
    ]
    cookie = next(c["value"] for c in admin.context.cookies() if c["name"] == "keysat_session")
    for secret in (ADMIN_KEY, token, cookie, *session_ids):
        assert secret not in page


def test_without_javascript_the_action_filter_works(admin_nojs: Page, keysat: KeysatServer) -> None:
    keysat.admin_post("/v1/admin/api-keys", {"label": "nojs audit", "role": "read-only"})
    page = admin_nojs
    page.goto("/admin/audit")
    page.select_option("#f-action", "api_key.create")
    page.get_by_role("button", name="Show entries").click()
    expect(page).to_have_url(re.compile(r"action=api_key.create"))
    actions = page.locator("tbody tr td:nth-child(2)")
    expect(actions.first).to_have_text("api_key.create")
    assert set(actions.all_inner_texts()) == {"api_key.create"}
    expect(page.locator("tbody tr").first.locator(".actor-cell")).to_have_text("master key")
    page.fill("#f-action_text", "no.such_action")
    page.get_by_role("button", name="Show entries").click()
    expect(page.locator(".empty-line")).to_have_text("No entries match these filters.")
