"""The API keys screen in a real browser (web.md 11.5.11): an operator generates a `support`
key, copies its token from the show-once page, a script uses it against the admin API with
exactly that role's rights, the list shows its last use, and revoking it in the UI refuses
the script's next request. Without JavaScript the same forms work.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page, expect

from e2e.harness import KeysatServer
from keysat.access.scopes import ROLES
from keysat.web.admin.api_keys import ROLE_DESCRIPTIONS

pytestmark = pytest.mark.browser


def generate(page: Page, label: str, role: str, *, extra_scope: bool = False) -> str:
    """Fill and send the "Generate key" form; returns the token from the show-once page."""
    form = page.locator("#generate-key")
    if form.get_attribute("open") is None:
        form.locator("summary").click()
    page.fill("#f-label", label)
    form.locator(f"input[name=role][value='{role}']").check()
    if extra_scope:
        form.locator("input[name=extra_scope]").check()
    form.get_by_role("button", name="Generate key").click()
    expect(page.locator("h1")).to_have_text(f"API key '{label}' created")
    return page.locator("#secret-value").inner_text().strip()


def test_a_support_key_made_in_the_ui_works_with_its_role_until_revoked(
    admin: Page, keysat: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    admin.goto("/admin/api-keys")
    admin.locator("#generate-key summary").click()
    options = admin.locator(".role-option:has(input[name=role])")
    assert [options.nth(i).inner_text().split("\n", 1)[0].strip() for i in range(5)] == list(ROLES)
    for role in ROLES:
        expect(admin.locator(f".role-option:has(input[value='{role}'])")).to_contain_text(
            ROLE_DESCRIPTIONS[role]
        )
    expect(admin.locator(".master-only")).to_contain_text("license tier changes")
    expect(admin.locator("#generate-key")).to_contain_text(
        "Lets this key connect a BTCPay store while the server runs in sandbox mode, "
        "and only a test-network store."
    )
    shoot(admin, "admin-api-keys-generate")

    # Operator text is escaped everywhere it shows: list, dialog, notice and show-once page.
    label = f"help desk <img src=x onerror=alert(1)> {uuid.uuid4().hex[:6]}"
    token = generate(admin, label, "support")
    assert token.startswith("ks_")
    expect(admin.get_by_role("button", name="Copy token")).to_be_visible()
    shoot(admin, "admin-api-keys-token")
    admin.get_by_role("button", name="Copy token").click()
    admin.get_by_role("link", name="I've saved it — close").click()
    row = admin.locator("tr", has=admin.get_by_text(label, exact=True))
    expect(row).to_contain_text("support")
    expect(row.locator("td").nth(4)).to_have_text("Never")
    expect(row.locator(".pill")).to_have_text("Active")
    assert token not in admin.content()

    slug = f"keys-{uuid.uuid4().hex[:8]}"
    keysat.create_product(slug)
    keysat.create_policy(slug, "std")
    license_id = keysat.issue_license(slug, policy_slug="std")["license_id"]
    script = httpx.Client(
        base_url=keysat.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=15
    )
    with script:
        suspended = script.post(f"/v1/admin/licenses/{license_id}/suspend", json={})
        assert suspended.status_code == 200, suspended.text
        refused = script.post("/v1/admin/api-keys", json={"label": "x", "role": "read-only"})
        assert refused.status_code == 403
        assert script.get("/v1/admin/licenses/summary").status_code == 200

        admin.reload()
        expect(row.locator("td").nth(4)).to_have_text(re.compile("just now|ago"))
        shoot(admin, "admin-api-keys-list")

        row.get_by_role("button", name="Revoke").click()
        dialog = row.locator("dialog")
        expect(dialog).to_contain_text(f"Revoke the key '{label}'?")
        dialog.get_by_role("button", name="Revoke").click()
        expect(admin.locator(".notice")).to_have_text(
            f"Key '{label}' revoked: its next request is refused."
        )
        expect(row).to_have_count(0)
        # access.md 4.6: a revoked key is refused with 403, like an unknown one.
        assert script.get("/v1/admin/licenses/summary").status_code == 403

    admin.locator(".table-head").get_by_role("link", name=re.compile("Show revoked")).click()
    expect(admin).to_have_url(re.compile(r"\?revoked=1$"))
    expect(row.locator(".pill")).to_have_text("Revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    shoot(admin, "admin-api-keys-revoked")
    admin.locator(".table-head").get_by_role("link", name=re.compile("Show revoked")).click()
    expect(admin).to_have_url(re.compile(r"/admin/api-keys$"))
    expect(row).to_have_count(0)


def test_without_javascript_generate_and_revoke_a_key(
    admin_nojs: Page, keysat: KeysatServer
) -> None:
    page = admin_nojs
    page.goto("/admin/api-keys?new=1")
    label = f"onboarding {uuid.uuid4().hex[:6]}"
    token = generate(page, label, "merchant-onboard", extra_scope=True)
    expect(page.locator(".show-once")).to_contain_text("payment_providers:write")
    page.get_by_role("link", name="I've saved it — close").click()
    row = page.locator("tr", has=page.get_by_text(label, exact=True))
    expect(row).to_contain_text("payment_providers:write")

    row.get_by_role("button", name="Revoke").click()
    expect(page.locator("h2")).to_have_text(f"Revoke the key '{label}'?")
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator(".notice")).to_have_text(
        f"Key '{label}' revoked: its next request is refused."
    )
    answer = httpx.get(
        f"{keysat.base_url}/v1/admin/products", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 403


def test_a_refused_label_keeps_the_form_and_shows_the_server_message(admin: Page) -> None:
    admin.goto("/admin/api-keys?new=1")
    admin.fill("#f-label", "   ")
    admin.locator("input[name=role][value='read-only']").check()
    admin.locator("#generate-key").get_by_role("button", name="Generate key").click()
    expect(admin.locator("[data-problem]")).to_contain_text("label")
    expect(admin.locator("#generate-key")).to_have_attribute("open", "")
