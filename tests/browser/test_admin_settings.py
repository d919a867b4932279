"""The Settings screen in a real browser (web.md 11.5.13, 13): the operator name in the
layout, the signing key's show-once export, activating this server's license (a Pro key
signed by the test trust root, on an in-process server that trusts it), the sandbox test
clock, a rate pin, the analytics opt-in, and the web password, which ends every session.

Each test runs on a server of its own module, never the shared one: the name, the clock,
the pins and the password are server-wide.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Page, expect

from browser.conftest import Browse, admin_login
from browser.licensed_server import licensed_server
from e2e.harness import KeysatServer, launch_server
from keysat.keys import generate_private_key
from support import self_license_key

pytestmark = pytest.mark.browser

PRO = ("zaprite_payments", "unlimited_merchant_profiles", "unlimited_products")
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeysatServer]:
    with launch_server(
        tmp_path_factory.mktemp("settings"), {"KEYSAT_ENV": "development"}
    ) as server:
        yield server


@pytest.fixture(scope="module")
def licensed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeysatServer]:
    with licensed_server(tmp_path_factory.mktemp("settings-licensed")) as server:
        yield server


def browse_on(chromium: Browser, server: KeysatServer) -> Iterator[Browse]:
    session = Browse(chromium, server.base_url)
    yield session
    session.close()
    assert session.watch.problems == []


@pytest.fixture
def sandbox_browse(chromium: Browser, sandboxed: KeysatServer) -> Iterator[Browse]:
    yield from browse_on(chromium, sandboxed)


@pytest.fixture
def licensed_browse(chromium: Browser, licensed: KeysatServer) -> Iterator[Browse]:
    yield from browse_on(chromium, licensed)


def test_operator_name_reaches_the_layout_and_the_screen_is_complete(
    sandbox_browse: Browse, sandboxed: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    page = admin_login(sandbox_browse.page(), "/admin/settings")
    expect(page.locator("[data-effective-name]")).to_have_text("Keysat")
    page.fill("#f-name", "Ada's Apps")
    page.get_by_role("button", name="Save", exact=True).first.click()
    expect(page.locator(".notice")).to_have_text("Operator name set to 'Ada's Apps'.")
    expect(page.locator("[data-effective-name]")).to_have_text("Ada's Apps")
    expect(page.locator(".sidebar-brand")).to_contain_text("Ada's Apps")
    assert sandboxed.admin.get("/v1/admin/settings/operator-name").json()["stored"] == "Ada's Apps"
    public = sandboxed.admin.get("/v1/issuer/public-key").json()["public_key_pem"]
    expect(page.locator("#public-pem")).to_have_text(public.strip())
    expect(page.locator(".fingerprint")).to_have_text(
        re.compile(r"^([0-9A-F]{2}:){31}[0-9A-F]{2}$")
    )
    expect(page.get_by_role("link", name="Download .pem")).to_have_attribute(
        "href", re.compile(r"^data:application/x-pem-file;base64,")
    )
    expect(page.locator("#email")).to_contain_text("Not configured")
    expect(page.locator("#database")).to_contain_text("SQLite")
    expect(page.get_by_text("Danger zone: import an existing signing key")).to_be_visible()
    shoot(page, "admin-settings")


def test_without_javascript_the_operator_name_saves(
    sandbox_browse: Browse, sandboxed: KeysatServer
) -> None:
    page = admin_login(sandbox_browse.page(javascript=False), "/admin/settings")
    page.fill("#f-name", "")
    page.get_by_role("button", name="Save", exact=True).first.click()
    expect(page.locator(".notice")).to_have_text("Operator name cleared.")
    expect(page.locator("[data-effective-name]")).to_have_text("Keysat")
    assert sandboxed.admin.get("/v1/admin/settings/operator-name").json()["stored"] is None


def test_exporting_the_signing_key_shows_it_once(
    sandbox_browse: Browse, sandboxed: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    page = admin_login(sandbox_browse.page(), "/admin/settings")
    page.get_by_role("button", name="Export signing key").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Anyone holding this key can issue license keys")
    dialog.get_by_role("button", name="Export signing key").click()
    expect(page.locator("h1")).to_have_text("Signing key backup")
    expect(page.locator("#secret-value")).to_contain_text("-----BEGIN PRIVATE KEY-----")
    shoot(page, "admin-settings-export")
    page.get_by_role("button", name="Copy").click()
    copied = str(page.evaluate("navigator.clipboard.readText()"))
    exported = sandboxed.admin_post("/v1/admin/export-issuer-key")["private_key_pem"]
    assert copied.strip() == exported.strip()
    audit = sandboxed.admin.get("/v1/admin/audit", params={"action": "issuer_key.export"}).json()
    assert any(row["action"] == "issuer_key.export" for row in audit["entries"])


def test_the_sandbox_clock_moves_forward_and_back(
    sandbox_browse: Browse, sandboxed: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    page = admin_login(sandbox_browse.page(), "/admin/settings")
    page.fill("#f-days", "30")
    page.get_by_role("button", name="Advance clock").click()
    expect(page.locator(".notice")).to_have_text("Sandbox clock moved: jobs now see 30 days ahead.")
    expect(page.locator("#sandbox")).to_contain_text("30 days ahead of the real time")
    assert sandboxed.admin.get("/v1/admin/sandbox/clock").json()["offset_seconds"] == 30 * 86400
    shoot(page, "admin-settings-clock")
    page.get_by_role("button", name="Reset to real time").click()
    expect(page.locator(".notice")).to_have_text("Sandbox clock reset to the real time.")
    assert sandboxed.admin.get("/v1/admin/sandbox/clock").json()["offset_seconds"] == 0


def test_a_rate_pin_is_set_and_cleared(sandbox_browse: Browse, sandboxed: KeysatServer) -> None:
    page = admin_login(sandbox_browse.page(), "/admin/settings")
    row = page.locator("table.rates tbody tr", has_text="USD")
    expect(row).to_contain_text("Not fetched yet")
    page.get_by_label("Pin a rate for").select_option("USD")
    page.get_by_label("Units per BTC").fill("97,000.50")
    page.get_by_role("button", name="Pin rate").click()
    expect(page.locator(".notice")).to_have_text("USD pinned at 97000.50 per BTC.")
    expect(row).to_contain_text("97,000.50")
    expect(row.locator(".pill")).to_have_text("Pinned")
    rates = {r["currency"]: r for r in sandboxed.admin.get("/v1/admin/rates").json()["rates"]}
    assert rates["USD"]["source"] == "manual_pin" and rates["USD"]["units_per_btc"] == 97000.5
    row.get_by_role("button", name="Clear pin USD").click()
    expect(page.locator(".notice")).to_contain_text("USD pin cleared")
    expect(row.locator(".pill")).to_have_count(0)


def test_community_analytics_opt_in_saves_on_change(
    sandbox_browse: Browse, sandboxed: KeysatServer
) -> None:
    page = admin_login(sandbox_browse.page(), "/admin/settings")
    expect(page.locator("#community [data-save-button]")).to_be_hidden()
    page.get_by_label("Send the anonymous heartbeat").check()
    expect(page.locator(".notice")).to_have_text("Community analytics on.")
    state = sandboxed.admin.get("/v1/admin/community-analytics").json()
    assert state["enabled"] is True and state["install_uuid"]
    expect(page.locator("#community")).to_contain_text(state["install_uuid"])
    page.get_by_label("Send the anonymous heartbeat").uncheck()
    expect(page.locator(".notice")).to_have_text("Community analytics off.")


def test_a_signing_key_is_imported_while_no_license_exists(
    sandbox_browse: Browse, sandboxed: KeysatServer
) -> None:
    key = generate_private_key()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    page = admin_login(sandbox_browse.page(), "/admin/settings")
    page.get_by_text("Danger zone: import an existing signing key").click()
    page.fill("#f-pem", "not a key")
    page.get_by_role("button", name="Import signing key").click()
    expect(page.locator("[data-problem]")).to_contain_text("PRIVATE KEY")
    page.get_by_text("Danger zone: import an existing signing key").click()
    page.fill("#f-pem", pem)
    page.get_by_role("button", name="Import signing key").click()
    expect(page.locator(".notice")).to_have_text(
        "Signing key imported; new keys are signed with it."
    )
    expect(page.locator("#public-pem")).to_have_text(public.strip())
    assert sandboxed.admin.get("/v1/issuer/public-key").json()["public_key_pem"] == public


def test_activating_this_servers_license(
    licensed_browse: Browse, licensed: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    page = admin_login(licensed_browse.page(), "/admin/settings")
    expect(page.locator("[data-tier]")).to_have_text("Creator (free)")
    page.fill("#f-license_key", "LIC1-not-a-real-key")
    page.get_by_role("button", name="Activate").click()
    expect(page.locator("#f-license_key-hint")).to_contain_text("license invalid")
    expect(page.locator("#f-license_key")).to_have_value("LIC1-not-a-real-key")

    key = self_license_key(*PRO)
    wrapped = "\n".join(key[i : i + 60] for i in range(0, len(key), 60))
    page.fill("#f-license_key", f"  {wrapped}  ")
    page.get_by_role("button", name="Activate").click()
    expect(page.locator(".notice")).to_contain_text("activated (perpetual). Entitlements: zaprite")
    expect(page.locator("[data-tier]")).to_have_text("Pro")
    expect(page.locator(".tier-banner")).to_contain_text("Pro")
    expect(page.locator("#license")).to_contain_text("the key activated here")
    assert licensed.admin.get("/v1/admin/tier").json()["tier"] == "pro"
    shoot(page, "admin-settings-license")
    page.get_by_role("button", name="Refresh now").click()
    expect(page.locator(".notice")).to_contain_text("re-checked")


def test_setting_the_web_password_signs_everyone_out(
    licensed_browse: Browse, licensed: KeysatServer
) -> None:
    page = admin_login(licensed_browse.page(), "/admin/settings")
    other = admin_login(licensed_browse.page(), "/admin/jobs")
    page.fill("#f-password", PASSWORD)
    page.fill("#f-password_confirm", PASSWORD + " typo")
    page.get_by_role("button", name="Set web password").click()
    expect(page.locator("[data-problem]")).to_have_text("The two passwords do not match.")
    page.fill("#f-password", PASSWORD)
    page.fill("#f-password_confirm", PASSWORD)
    page.get_by_role("button", name="Set web password").click()
    expect(page).to_have_url(re.compile(r"/admin/login\?"))
    expect(page.get_by_role("status")).to_have_text("You're signed out.")
    other.reload()
    expect(other).to_have_url(re.compile(r"/admin/login\?next=/admin/jobs"))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").first.click()
    expect(page.locator("h1")).to_have_text("Settings")
    expect(page.locator(".who-chip")).to_have_text("Signed in with password")
    expect(page.get_by_role("button", name="Change web password")).to_be_visible()
