"""The Payments screen in a real browser (web.md 11.5.10, 13): merchant profiles created,
edited, made default and deleted; the cap pre-check and the upgrade dialog; the one-click
BTCPay connect polling until the store is connected (the fake BTCPay's consent posts the
key to our callback, as BTCPay does); Zaprite's webhook URL; rail preferences; disconnect;
and the same main actions without JavaScript.

Most tests run on a licensed server of their own (tests/browser/licensed_server.py): it is
not in sandbox mode, so Zaprite can be connected, and default-profile changes stay away
from the shared server.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from browser.conftest import Browse, admin_login
from browser.licensed_server import licensed_server
from e2e.harness import KeysatServer
from fakes.btcpay import KEYSAT_PERMISSIONS, FakeBTCPay
from fakes.zaprite import FakeZaprite
from support import self_license_key

pytestmark = pytest.mark.browser

PRO = ("zaprite_payments", "unlimited_merchant_profiles", "unlimited_products")


@pytest.fixture(scope="module")
def btcpay() -> Iterator[FakeBTCPay]:
    with FakeBTCPay() as fake:
        yield fake


@pytest.fixture(scope="module")
def zaprite() -> Iterator[FakeZaprite]:
    with FakeZaprite() as fake:
        yield fake


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory, btcpay: FakeBTCPay) -> Iterator[KeysatServer]:
    with licensed_server(tmp_path_factory.mktemp("payments"), {"BTCPAY_URL": btcpay.url}) as server:
        yield server


@pytest.fixture
def own_browse(chromium: Browser, own: KeysatServer) -> Iterator[Browse]:
    session = Browse(chromium, own.base_url)
    yield session
    session.close()
    assert session.watch.problems == []


def make_pro(server: KeysatServer) -> None:
    server.admin_post("/v1/admin/self-license", {"license_key": self_license_key(*PRO)})


def unique(name: str) -> str:
    return f"{name} {uuid.uuid4().hex[:6]}"


def profile_named(server: KeysatServer, name: str) -> dict[str, Any]:
    for profile in server.admin.get("/v1/admin/merchant-profiles").json()["profiles"]:
        if profile["name"] == name:
            detail: dict[str, Any] = server.admin.get(
                f"/v1/admin/merchant-profiles/{profile['id']}"
            ).json()
            return detail
    raise AssertionError(f"no profile named {name!r}")


def add_profile(server: KeysatServer, name: str) -> dict[str, Any]:
    return server.admin_post("/v1/admin/merchant-profiles", {"name": name})


def card(page: Page, name: str) -> Any:
    return page.locator(".profile-card", has=page.get_by_role("heading", name=name))


def approve_in_btcpay(btcpay: FakeBTCPay, server: KeysatServer, authorize_url: str) -> str:
    """What BTCPay's consent page does when the operator approves: post the new key to the
    redirect URL the authorize link carries."""
    callback = httpx.URL(authorize_url).params["redirect"]
    fields = btcpay.authorize(KEYSAT_PERMISSIONS, [btcpay.store_id])
    answer = httpx.post(callback, data=fields, timeout=15.0)
    assert answer.status_code == 200 and "BTCPay connected" in answer.text, answer.text
    return answer.text


def fake_consent_tab(page: Page, btcpay: FakeBTCPay) -> list[str]:
    opened: list[str] = []

    def consent_page(route: Route) -> None:
        opened.append(route.request.url)
        route.fulfill(status=200, content_type="text/plain", body="BTCPay consent (fake)")

    page.context.route(f"{btcpay.url}/**", consent_page)
    return opened


def test_the_cap_pre_check_and_the_upgrade_dialog_before_pro(
    own_browse: Browse, own: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    own.admin_post("/v1/admin/self-license/refresh")
    if own.admin.get("/v1/admin/tier").json()["tier"] != "creator":
        pytest.skip("the module's server is already Pro")
    page = admin_login(own_browse.page(), "/admin/payments")
    expect(page.locator(".cap-card")).to_contain_text("Cap reached")
    expect(page.get_by_role("button", name="Connect Zaprite")).to_be_disabled()
    page.click("#add-profile summary")
    page.fill("#f-name", "Second shop")
    page.get_by_role("button", name="Create profile").click()
    dialog = page.locator("dialog.upgrade-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("merchant profile")
    shoot(page, "admin-payments-upgrade")
    make_pro(own)


def test_create_edit_default_and_delete_profiles(
    own_browse: Browse, own: KeysatServer, shoot: Callable[[Page, str], None]
) -> None:
    make_pro(own)
    original = own.admin.get("/v1/admin/payment-provider/status").json()["merchant_profile_id"]
    page = admin_login(own_browse.page(), "/admin/payments")
    name = unique("Acme Tools")
    page.click("#add-profile summary")
    page.fill("#f-name", name)
    page.fill("#f-legal_name", "Acme Tools Ltd")
    page.fill("#f-support_url", "https://acme.example/help")
    page.fill("#f-support_email", "help@acme.example")
    page.fill("#f-smtp_host", "smtp.acme.example")
    page.fill("#f-smtp_port", "587")
    page.fill("#f-smtp_password", "s3cret-smtp")
    page.get_by_role("button", name="Create profile").click()
    expect(page.locator(".notice")).to_have_text(f"Merchant profile '{name}' created.")
    profile = profile_named(own, name)
    assert profile["smtp_port"] == 587 and profile["smtp_configured"] is True
    assert "smtp_password" not in profile
    box = card(page, name)
    expect(box).to_contain_text("Built-in receipt page")
    expect(box).to_contain_text("#1E3A5F")
    expect(box.locator(".pill", has_text="Set up")).to_be_visible()

    box.get_by_role("link", name=f"Edit {name}").click()
    expect(page.locator("h1")).to_have_text(f"Edit {name}")
    page.wait_for_load_state()
    expect(page.locator("#f-smtp_password")).to_have_value("")
    page.fill("#f-brand_color", "#0A7B5C")
    expect(page.locator("[data-preview-fill]")).to_have_attribute("fill", "#0A7B5C")
    page.fill("#f-post_purchase_redirect_url", "https://acme.example/thanks/{invoice_id}")
    shoot(page, "admin-payments-edit")
    page.get_by_role("button", name="Save profile").click()
    expect(page.locator(".notice")).to_have_text(f"Merchant profile '{name}' saved.")
    expect(box).to_contain_text("#0A7B5C")
    expect(box.locator("rect[fill='#0A7B5C']")).to_have_count(1)
    expect(box).to_contain_text("https://acme.example/thanks/{invoice_id}")
    saved = profile_named(own, name)
    assert saved["brand_color"] == "#0A7B5C" and saved["smtp_configured"] is True

    box.get_by_role("button", name="Set as default").click()
    expect(page.locator(".notice")).to_have_text("Default merchant profile changed.")
    expect(box.locator(".pill", has_text="Default")).to_be_visible()
    expect(box.get_by_role("button", name="Delete profile")).to_have_count(0)
    assert profile_named(own, name)["is_default"] is True
    own.admin_post(f"/v1/admin/merchant-profiles/{original}/set-default")

    # A profile with a product attached is refused with the server's reason.
    own.create_product(f"p-{uuid.uuid4().hex[:8]}", merchant_profile_id=saved["id"])
    page.reload()
    box.get_by_role("button", name="Delete profile").click()
    dialog = box.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Delete merchant profile '{name}'?")
    dialog.get_by_role("button", name="Delete profile").click()
    expect(page.locator("[data-problem]")).to_contain_text("product")

    empty = unique("Empty shop")
    add_profile(own, empty)
    page.goto("/admin/payments")
    card(page, empty).get_by_role("button", name="Delete profile").click()
    card(page, empty).get_by_role("dialog").get_by_role("button", name="Delete profile").click()
    expect(page.locator(".notice")).to_have_text("Merchant profile deleted.")
    expect(card(page, empty)).to_have_count(0)
    shoot(page, "admin-payments")


def test_btcpay_connects_in_one_click_and_the_dialog_notices(
    own_browse: Browse,
    own: KeysatServer,
    btcpay: FakeBTCPay,
    shoot: Callable[[Page, str], None],
) -> None:
    make_pro(own)
    name = unique("Lightning shop")
    add_profile(own, name)
    page = admin_login(own_browse.page(), "/admin/payments")
    # The fake has no consent page: the tab shows a stand-in, and the test approves once
    # it has seen the waiting dialog, as the operator would in BTCPay.
    opened = fake_consent_tab(page, btcpay)
    with page.context.expect_page() as tab:
        card(page, name).get_by_role("button", name="Connect BTCPay").click()
    dialog = page.locator("#btcpay-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Waiting for BTCPay…")
    expect(dialog.locator("#btcpay-authorize-url")).to_contain_text("/api-keys/authorize?")
    dialog.get_by_text("Permissions Keysat asks for").click()
    expect(dialog).to_contain_text("btcpay.store.cancreateinvoice")
    shoot(page, "admin-payments-btcpay-dialog")
    assert tab.value.url == opened[0]
    approve_in_btcpay(btcpay, own, opened[0])
    tab.value.close()
    expect(page.locator(".notice")).to_have_text(
        f"BTCPay store {btcpay.store_id} connected to '{name}'."
    )
    expect(dialog).to_be_hidden()
    row = card(page, name).locator("table.providers tbody tr")
    expect(row).to_contain_text("BTCPay")
    expect(row).to_contain_text("Lightning, On-chain")
    assert profile_named(own, name)["providers"][0]["store_id"] == btcpay.store_id


def test_an_expired_connect_link_offers_start_again(
    own_browse: Browse, own: KeysatServer, btcpay: FakeBTCPay
) -> None:
    name = unique("Slow shop")
    add_profile(own, name)
    page = admin_login(own_browse.page(), "/admin/payments")
    page.clock.install()
    page.reload()
    fake_consent_tab(page, btcpay)
    with page.context.expect_page():
        card(page, name).get_by_role("button", name="Connect BTCPay").click()
    dialog = page.locator("#btcpay-dialog")
    expect(dialog).to_contain_text("Waiting for BTCPay…")
    page.clock.run_for("30:05")
    expect(dialog.get_by_role("alert")).to_contain_text("The authorize link expired")
    expect(dialog.get_by_role("button", name="Start again")).to_be_visible()


def test_zaprite_shows_its_webhook_url_and_rails_get_a_preference(
    own_browse: Browse,
    own: KeysatServer,
    btcpay: FakeBTCPay,
    zaprite: FakeZaprite,
    shoot: Callable[[Page, str], None],
) -> None:
    make_pro(own)
    name = unique("Card shop")
    profile = add_profile(own, name)
    page = admin_login(own_browse.page(), "/admin/payments")
    card(page, name).get_by_role("button", name="Connect Zaprite").click()
    form = page.get_by_role("dialog").locator(".zaprite-form")
    expect(form).to_be_visible()
    form.get_by_label("Zaprite API key").fill(zaprite.api_key)
    form.get_by_label("Base URL (optional)").fill(zaprite.url)
    form.get_by_role("button", name="Connect Zaprite").click()
    done = page.get_by_role("dialog").locator(".zaprite-done")
    expect(done).to_be_visible()
    provider = profile_named(own, name)["providers"][0]
    hook = f"{own.base_url}/v1/zaprite/webhook/{provider['id']}"
    expect(done.locator("code")).to_have_text(hook)
    expect(done).to_contain_text("confirms the order with Zaprite's API")
    expect(done.get_by_role("button", name="Copy")).to_be_visible()
    shoot(page, "admin-payments-zaprite-done")
    done.get_by_role("button", name="Copy").click()
    assert page.evaluate("navigator.clipboard.readText()") == hook
    done.get_by_role("link", name="Done").click()
    expect(done).to_be_hidden()

    started = own.admin_post("/v1/admin/btcpay/connect", {"merchant_profile_id": profile["id"]})
    approve_in_btcpay(btcpay, own, started["authorize_url"])
    page.goto("/admin/payments")
    box = card(page, name)
    lightning = box.get_by_label("Lightning payments go to")
    expect(lightning).to_have_value("")
    expect(box.get_by_role("button", name="Save")).to_have_count(0)
    lightning.select_option(label=provider["label"])
    expect(page.locator(".notice")).to_have_text(
        "Lightning payments now go to the chosen provider."
    )
    rails = profile_named(own, name)["rail_preferences"]
    assert rails == [{"rail": "lightning", "payment_provider_id": provider["id"]}]
    expect(box.get_by_label("Lightning payments go to")).to_have_value(provider["id"])
    shoot(page, "admin-payments-providers")

    zaprite_row = box.locator("table.providers tbody tr", has_text="Zaprite")
    zaprite_row.get_by_role("button", name="Disconnect").click()
    confirm = zaprite_row.get_by_role("dialog")
    expect(confirm).to_contain_text("New purchases on this profile's Card, Lightning, On-chain")
    expect(confirm).to_contain_text("Renewals of subscriptions that use it")
    confirm.get_by_role("button", name="Disconnect").click()
    expect(page.locator(".notice")).to_contain_text("Zaprite disconnected.")
    expect(box.locator("table.providers tbody tr")).to_have_count(1)
    assert profile_named(own, name)["rail_preferences"] == []


def test_without_javascript_profiles_and_btcpay_connect_work(
    own_browse: Browse, own: KeysatServer, btcpay: FakeBTCPay
) -> None:
    make_pro(own)
    page = admin_login(own_browse.page(javascript=False), "/admin/payments")
    name = unique("Plain shop")
    page.click("#add-profile summary")
    page.fill("#f-name", name)
    page.fill("#f-brand_color", "#C0FFEE")
    page.get_by_role("button", name="Create profile").click()
    expect(page.locator(".notice")).to_have_text(f"Merchant profile '{name}' created.")
    assert profile_named(own, name)["brand_color"] == "#C0FFEE"

    card(page, name).get_by_role("button", name="Connect BTCPay").click()
    expect(page.locator("h1")).to_have_text("Connect BTCPay")
    link = page.get_by_role("link", name="Open BTCPay to approve")
    authorize_url = link.get_attribute("href")
    assert authorize_url is not None and authorize_url.startswith(btcpay.url)
    expect(page.locator("#authorize-url")).to_have_text(authorize_url)
    page.get_by_role("link", name="Check connection").click()
    expect(page.get_by_role("heading", name="Not connected yet")).to_be_visible()
    approve_in_btcpay(btcpay, own, authorize_url)
    page.get_by_role("link", name="Check connection").click()
    expect(page.locator(".notice")).to_have_text(
        f"BTCPay store {btcpay.store_id} connected to '{name}'."
    )
    row = card(page, name).locator("table.providers tbody tr")
    row.get_by_role("button", name="Disconnect").click()
    expect(page.locator("h1")).to_have_text(f"Disconnect BTCPay — {name}?")
    page.get_by_role("button", name="Disconnect").click()
    expect(page.locator(".notice")).to_contain_text("BTCPay disconnected.")
    assert profile_named(own, name)["providers"] == []


def test_sandbox_profiles_show_the_sandbox_row(
    admin: Page, shoot: Callable[[Page, str], None]
) -> None:
    admin.goto("/admin/payments")
    expect(admin.locator(".sandbox-row").first).to_contain_text("Sandbox (simulated payments)")
    default = admin.locator(".profile-card", has=admin.locator(".pill", has_text="Default"))
    expect(default.get_by_role("button", name="Connect Zaprite")).to_be_disabled()
    expect(default).to_contain_text("Zaprite takes real payments: not in sandbox mode")
    shoot(admin, "admin-payments-sandbox")
    # The shared server has no BTCPAY_URL: the refusal is the server's own message.
    default.get_by_role("button", name="Connect BTCPay").click()
    expect(admin.locator("[data-problem]")).to_contain_text("BTCPAY_URL")
    expect(admin.locator("#btcpay-dialog")).to_be_hidden()


def test_hostile_profile_text_stays_text(own_browse: Browse, own: KeysatServer) -> None:
    make_pro(own)
    hostile = "</script><script>alert(1)</script>\"' <img src=x onerror=alert(2)>"
    profile = own.admin_post(
        "/v1/admin/merchant-profiles",
        {"name": hostile[:200], "legal_name": hostile, "support_email": "a@b.example"},
    )
    page = admin_login(own_browse.page(), "/admin/payments")
    box = page.locator(f"#profile-{profile['id']}")
    expect(box.locator("h2").first).to_contain_text("</script><script>alert(1)</script>")
    expect(box).to_contain_text("<img src=x onerror=alert(2)>")
    expect(page.locator("img[src=x]")).to_have_count(0)
    own.admin.delete(f"/v1/admin/merchant-profiles/{profile['id']}")
