"""The buyer pages over HTTP (web.md 3-9; public-api.md 15): every route's status, content
and security headers, the no-JavaScript form posts, and hostile operator text and request
parameters rendered inert."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

from keysat.billing.models import DiscountCode
from keysat.clock import clock, now
from keysat.operator.models import MerchantProfile
from keysat.payments.models import PaymentProvider
from keysat.web.pages import ASSETS, CSP
from keysat.wire import new_id
from support import create_policy, create_product, purchase, sandbox_action

DEFAULT_PROFILE = "00000000-0000-4000-8000-000000000001"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
HOSTILE = "</script><script>alert(1)</script>\"'><img src=x onerror=alert(2)>\u2028"
HOSTILE_URL = "javascript:alert(3)"
PRIVATE = {"referrer-policy": "no-referrer", "cache-control": "no-store"}
PUBLIC = {"referrer-policy": "strict-origin-when-cross-origin", "cache-control": "no-cache"}


def assert_page_headers(response: Any, expected: dict[str, str]) -> None:
    """web.md 3.5, exactly."""
    headers = response.headers
    assert headers["content-type"].startswith("text/html")
    assert headers["content-security-policy"] == CSP
    assert CSP == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    )
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cross-origin-opener-policy"] == "same-origin"
    for name, value in expected.items():
        assert headers[name] == value, name


def assert_inert(html: str, payload: str = HOSTILE) -> None:
    """The raw payload never appears; no markup of it survives."""
    assert payload not in html
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert 'href="javascript:' not in html


def page_data(html: str) -> str:
    match = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', html, re.S)
    assert match is not None
    return match.group(1)


async def set_profile(server: Any, profile_id: str = DEFAULT_PROFILE, **fields: Any) -> None:
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(MerchantProfile).where(MerchantProfile.id == profile_id).values(**fields)
        )


async def add_profile(server: Any, **fields: Any) -> str:
    profile_id = new_id()
    async with server.state.db.write() as session:
        session.add(
            MerchantProfile(
                id=profile_id, is_default=False, created_at=now(), updated_at=now(), **fields
            )
        )
    return profile_id


async def add_provider(server: Any, kind: str, network: str | None = None) -> None:
    async with server.state.db.write() as session:
        session.add(
            PaymentProvider(
                id=new_id(),
                merchant_profile_id=DEFAULT_PROFILE,
                kind=kind,
                label=kind,
                api_key="key",
                base_url="http://127.0.0.1:9",
                store_id="store" if kind == "btcpay" else None,
                network=network,
                connected_at=now(),
                updated_at=now(),
            )
        )


async def shop(server: Any, slug: str = "acme") -> None:
    """Free, highlighted paid with a launch special, and a monthly plan with a trial."""
    await create_product(
        server,
        slug,
        name="Acme Editor",
        price_sats=50_000,
        entitlements_catalog=[{"slug": "sync", "name": "Cloud sync", "description": "Anywhere"}],
    )
    await create_policy(server, slug, "starter", name="Starter", price_sats_override=0)
    await create_policy(
        server,
        slug,
        "pro",
        name="Pro",
        entitlements=["sync"],
        metadata={"highlight": True, "marketing_bullets": ["Priority support"]},
    )
    await create_policy(
        server,
        slug,
        "team",
        name="Team",
        price_sats_override=200_000,
        is_recurring=True,
        renewal_period_days=30,
        trial_days=14,
    )


async def add_code(server: Any, code: str, **fields: Any) -> dict[str, Any]:
    body = {"code": code, "kind": "percent", "amount": 2500, **fields}
    response = await server.admin_post("/v1/admin/discount-codes", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def used(server: Any, code: str) -> int:
    async with server.state.db.read() as session:
        row = (
            await session.execute(sa.select(DiscountCode).where(DiscountCode.code == code))
        ).scalar_one()
    return row.used_count


# --- home ------------------------------------------------------------------------------------


async def test_home_is_html_for_browsers_and_json_for_everyone_else(server: Any) -> None:
    page = await server.client.get("/", headers={"accept": BROWSER_ACCEPT})
    assert page.status_code == 200
    assert_page_headers(page, PUBLIC)
    assert page.headers["vary"] == "Accept"
    assert "Nothing is for sale here yet." in page.text
    assert "Software licenses, paid in Bitcoin" in page.text
    assert 'href="/recover"' in page.text and "/v1/openapi.json" in page.text
    assert "/admin" not in page.text
    for accept in (None, "*/*", "application/json"):
        headers = {"accept": accept} if accept else {}
        answer = await server.client.get("/", headers=headers)
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["vary"] == "Accept"
        assert answer.json()["service"] == "keysat"


async def test_home_lists_products_with_a_public_tier_by_name(sandbox: Any) -> None:
    server = sandbox
    await shop(server, "zeta")
    await create_product(server, "alpha", name="Alpha", price_sats=9_000)
    await create_policy(server, "alpha", "one", name="One", price_sats_override=12_000)
    await create_policy(server, "alpha", "two", name="Two")
    await create_product(server, "bare", name="Bare", price_sats=1_000)
    page = (await server.client.get("/", headers={"accept": "text/html"})).text
    names = re.findall(r"<h2>([^<]+)</h2>", page)
    assert names == ["Acme Editor", "Alpha"]
    assert "From 9,000 sats" in page and "Bare" not in page
    assert 'href="/buy/alpha"' in page and 'href="/buy/zeta"' in page


# --- buy page ------------------------------------------------------------------------------


async def test_buy_page_shows_tiers_in_listing_order_with_the_highlight(sandbox: Any) -> None:
    await shop(sandbox)
    await add_code(sandbox, "LAUNCH", featured=True, product_slug="acme", policy_slugs=["pro"])
    page = await sandbox.client.get("/buy/acme")
    assert page.status_code == 200
    assert_page_headers(page, PUBLIC)
    html = page.text
    assert [m for m in re.findall(r'class="tier-name">([^<]+)<', html)] == [
        "Starter",
        "Pro",
        "Team",
    ]
    assert html.count("Most popular") == 1
    assert re.search(r'id="tier-1" name="policy_slug" value="pro" checked', html)
    assert "20% OFF" not in html and "25% OFF" in html
    assert "Limited discount" not in html
    assert (
        "37,500 sats" in html and '<s><span class="visually-hidden">Was </span>50,000 sats' in html
    )
    assert "Start 14-day free trial" in html and "Get free license" in html
    assert "Continue to sandbox checkout" in html
    assert "SANDBOX — test mode: payments are simulated or on a test network" in html
    assert "Cloud sync" in html and 'title="Anywhere"' in html
    deep = (await sandbox.client.get("/buy/acme?policy=team")).text
    assert re.search(r'value="team" checked', deep)
    ignored = (await sandbox.client.get("/buy/acme?policy=archived-or-unknown")).text
    assert re.search(r'value="pro" checked', ignored)


async def test_buy_page_of_a_missing_product_is_a_404_page(server: Any) -> None:
    page = await server.client.get("/buy/%3Cb%3Enope")
    assert page.status_code == 404
    assert_page_headers(page, PUBLIC)
    assert "Product not found" in page.text and "<code>&lt;b&gt;nope</code>" in page.text
    off = await create_product(server, "off", price_sats=1)
    await server.admin_patch(f"/v1/admin/products/{off['id']}/active", {"active": False})
    assert (await server.client.get("/buy/off")).status_code == 404


async def test_buy_page_is_light(sandbox: Any) -> None:
    await shop(sandbox)
    html = (await sandbox.client.get("/buy/acme")).text
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', html)
    sizes = [len((await sandbox.client.get(path)).content) for path in assets]
    assert len(assets) == 3
    assert len(html.encode()) + sum(sizes) < 150_000


async def test_static_assets_are_hashed_and_immutable(server: Any) -> None:
    css = ASSETS["keysat.css"]
    answer = await server.client.get(f"/static/{css.url_name}")
    assert answer.status_code == 200 and answer.content == css.body
    assert re.fullmatch(r"keysat\.[0-9a-f]{12}\.css", css.url_name)
    assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert answer.headers["content-type"] == "text/css; charset=utf-8"
    assert (await server.client.get("/static/keysat.css")).status_code == 404
    assert (await server.client.get("/static/..%2Fpages.py")).status_code == 404


async def test_rail_picker_only_when_providers_split_the_rails(server: Any) -> None:
    await create_product(server, "app", price_sats=10_000)
    await create_policy(server, "app", "pro", name="Pro")
    none = (await server.client.get("/buy/app")).text
    assert "Payments aren't set up yet" in none
    assert "This seller hasn&#39;t finished setting up payments. Please try again later." in none
    await add_provider(server, "btcpay", "mainnet")
    btcpay = (await server.client.get("/buy/app")).text
    assert "Pay with Lightning or on-chain bitcoin" in btcpay and "Pay with Bitcoin" in btcpay
    assert 'name="rail"' not in btcpay
    await add_provider(server, "zaprite")
    both = (await server.client.get("/buy/app")).text
    assert "<legend>Pay with</legend>" in both
    assert re.findall(r'name="rail" value="(\w+)"', both) == ["lightning", "onchain", "card"]
    assert re.search(r'name="rail" value="lightning" checked', both)
    assert "Pay by card" in both


async def test_brand_colour_and_support_links_from_the_merchant_profile(sandbox: Any) -> None:
    await shop(sandbox)
    await set_profile(
        sandbox,
        brand_color="#ffd700",
        support_url="https://help.example.com/acme",
        support_email="help@example.com",
        legal_name="Acme Software GmbH",
    )
    page = await sandbox.client.get("/buy/acme")
    nonce = re.search(
        r"style-src 'self' 'nonce-([A-Za-z0-9_-]+)'", page.headers["content-security-policy"]
    )
    assert nonce is not None
    style = f'<style nonce="{nonce.group(1)}">:root {{ --brand: #FFD700; --on-brand: #000000; }}'
    assert f"{style}</style>" in page.text
    assert 'href="https://help.example.com/acme" rel="noopener noreferrer"' in page.text
    assert 'href="mailto:help@example.com"' in page.text and "Acme Software GmbH" in page.text
    assert " style=" not in page.text
    await set_profile(sandbox, brand_color="red;}body{display:none", support_url=HOSTILE_URL)
    plain = await sandbox.client.get("/buy/acme")
    assert plain.headers["content-security-policy"] == CSP
    assert "<style" not in plain.text and HOSTILE_URL not in plain.text


# --- the buy form without JavaScript ---------------------------------------------------------


async def test_apply_without_javascript_previews_and_reserves_nothing(sandbox: Any) -> None:
    await shop(sandbox)
    await add_code(sandbox, "SAVE25", max_uses=2)
    form = {
        "policy_slug": "pro",
        "buyer_email": "ada@example.com",
        "buyer_note": "hi",
        "code": "save25",
        "action": "apply",
    }
    page = await sandbox.client.post("/buy/acme", data=form)
    assert page.status_code == 200
    assert_page_headers(page, PRIVATE)
    html = page.text
    assert "25% off applied." in html and "37,500 sats" in html
    assert 'value="ada@example.com"' in html and ">hi</textarea>" in html
    assert 'value="save25"' in html and re.search(r'value="pro" checked', html)
    assert await used(sandbox, "SAVE25") == 0
    await add_code(sandbox, "ALLFREE", kind="free_license", amount=0)
    free = (await sandbox.client.post("/buy/acme", data={**form, "code": "allfree"})).text
    assert "Free license — no payment required." in free
    assert re.search(r'class="cta-label for-1">Get free license<', free)
    unknown = await sandbox.client.post("/buy/acme", data={**form, "code": "NOPE"})
    assert unknown.status_code == 200 and "Code not found." in unknown.text
    assert 'aria-invalid="true"' in unknown.text
    trial = await sandbox.client.post("/buy/acme", data={**form, "policy_slug": "team"})
    assert "Codes don&#39;t apply to free trials." in trial.text
    assert "Free for 14 days" in trial.text and "25% off applied." not in trial.text
    blank = await sandbox.client.post("/buy/acme", data={**form, "code": " "})
    assert blank.status_code == 400 and "Enter a code to apply it." in blank.text


async def test_buy_without_javascript_issues_free_tiers_and_hands_over_paid_ones(
    sandbox: Any,
) -> None:
    await shop(sandbox)
    free = await sandbox.client.post("/buy/acme", data={"policy_slug": "starter", "action": "buy"})
    assert free.status_code == 303
    receipt = await sandbox.client.get(free.headers["location"])
    assert "Your license is ready." in receipt.text and "LIC1-" in receipt.text

    paid = await sandbox.client.post(
        "/buy/acme", data={"policy_slug": "pro", "buyer_email": "ada@example.com", "action": "buy"}
    )
    assert paid.status_code == 200
    assert_page_headers(paid, PRIVATE)
    checkout = re.search(
        r'href="(http://keysat.test/sandbox/checkout/sbx_[0-9a-f]{32})"', paid.text
    )
    assert checkout is not None
    assert f'<meta http-equiv="refresh" content="0; url={checkout.group(1)}">' in paid.text
    assert "50,000 sats" in paid.text and "Continue to payment" in paid.text


async def test_buy_errors_keep_the_inputs_and_the_status(sandbox: Any) -> None:
    await shop(sandbox)
    bad_email = await sandbox.client.post(
        "/buy/acme",
        data={
            "policy_slug": "pro",
            "buyer_email": "not-an-address",
            "buyer_note": "n",
            "action": "buy",
        },
    )
    assert bad_email.status_code == 400
    assert "That e-mail address doesn&#39;t look right." in bad_email.text
    assert 'value="not-an-address"' in bad_email.text
    bad_code = await sandbox.client.post(
        "/buy/acme", data={"policy_slug": "pro", "code": "NOPE", "action": "buy"}
    )
    assert bad_code.status_code == 400 and "Unknown discount code" in bad_code.text
    await sandbox.client.post(
        "/buy/acme",
        data={"policy_slug": "team", "buyer_email": "t@example.com", "action": "buy"},
    )
    again = await sandbox.client.post(
        "/buy/acme",
        data={"policy_slug": "team", "buyer_email": "t@example.com", "action": "buy"},
    )
    assert again.status_code == 409
    assert "A trial of this product has already been used with this e-mail address" in again.text


async def test_buy_form_posts_share_the_purchase_and_preview_limits(make_server: Any) -> None:
    server = await make_server(
        KEYSAT_SANDBOX_MODE="true",
        KEYSAT_RATE_LIMITS="on",
        KEYSAT_RATE_LIMIT_PURCHASE="1/1h",
        KEYSAT_RATE_LIMIT_PREVIEW="1/1h",
    )
    await shop(server)
    form = {"policy_slug": "starter", "action": "buy"}
    assert (await server.client.post("/buy/acme", data=form)).status_code == 303
    limited = await server.client.post("/buy/acme", data=form)
    assert limited.status_code == 429 and "Purchase requests are rate-limited" in limited.text
    apply = {"policy_slug": "pro", "code": "X", "action": "apply"}
    assert (await server.client.post("/buy/acme", data=apply)).status_code == 200
    assert (await server.client.post("/buy/acme", data=apply)).status_code == 429


# --- thank-you page ------------------------------------------------------------------------


async def test_thank_you_states(sandbox: Any) -> None:
    await shop(sandbox)
    missing = await sandbox.client.get("/thank-you")
    assert missing.status_code == 200
    assert_page_headers(missing, PRIVATE)
    assert "This link is missing its invoice reference." in missing.text
    unknown = await sandbox.client.get("/thank-you?invoice_id=9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d")
    assert "We couldn't find this invoice." in unknown.text
    assert "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d" in unknown.text

    bought = await purchase(sandbox, "acme", policy_slug="pro")
    pending = (await sandbox.client.get(f"/thank-you?invoice_id={bought['invoice_id']}")).text
    assert "Awaiting payment" in pending and "Issuing your license…" in pending
    assert "use the sandbox checkout" in pending
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in pending
    assert f"Reference for support: <code>{bought['invoice_id']}</code>" in pending
    clock.advance(timedelta(minutes=5))
    later = (await sandbox.client.get(f"/thank-you?invoice_id={bought['invoice_id']}")).text
    assert 'content="10"' in later and "Still waiting." in later
    clock.advance(timedelta(minutes=30))
    stale = (await sandbox.client.get(f"/thank-you?invoice_id={bought['invoice_id']}")).text
    assert "http-equiv" not in stale and "Refresh this page to check again." in stale

    await sandbox_action(sandbox, bought["invoice_id"], "pay")
    ready = (await sandbox.client.get(f"/thank-you?invoice_id={bought['invoice_id']}")).text
    key = (await sandbox.client.get(f"/v1/purchase/{bought['invoice_id']}")).json()["license_key"]
    assert "Your license is ready." in ready and key in ready
    assert "It works offline in Acme Editor." in ready and "Perpetual" in ready
    assert "http-equiv" not in ready

    lapsed = await purchase(sandbox, "acme", policy_slug="pro")
    await sandbox_action(sandbox, lapsed["invoice_id"], "expire")
    failed = (await sandbox.client.get(f"/thank-you?invoice_id={lapsed['invoice_id']}")).text
    assert "This payment was not completed." in failed
    assert 'href="/buy/acme?policy=pro">Try again' in failed


async def test_thank_you_for_a_trial_and_for_a_revoked_license(sandbox: Any) -> None:
    await shop(sandbox)
    trial = await purchase(sandbox, "acme", policy_slug="team")
    page = (await sandbox.client.get(f"/thank-you?invoice_id={trial['invoice_id']}")).text
    assert "Free trial until" in page and "200,000 sats / mo" in page
    await sandbox.admin_post(f"/v1/admin/licenses/{trial['license_id']}/revoke", {})
    revoked = (await sandbox.client.get(f"/thank-you?invoice_id={trial['invoice_id']}")).text
    assert "this license is not active" in revoked and "LIC1-" not in revoked


# --- recover page -----------------------------------------------------------------------------


async def test_recover_without_javascript(sandbox: Any) -> None:
    await shop(sandbox)
    bought = await purchase(sandbox, "acme", policy_slug="pro", buyer_email="ada@example.com")
    await sandbox_action(sandbox, bought["invoice_id"], "pay")
    form = await sandbox.client.get("/recover")
    assert form.status_code == 200
    assert_page_headers(form, PRIVATE)
    assert "Recover your license key" in form.text and 'action="/thank-you"' in form.text
    found = await sandbox.client.post(
        "/recover", data={"invoice_id": bought["invoice_id"], "email": "ADA@example.com "}
    )
    assert found.status_code == 200
    assert_page_headers(found, PRIVATE)
    key = (await sandbox.client.get(f"/v1/purchase/{bought['invoice_id']}")).json()["license_key"]
    assert key in found.text and "Acme Editor" in found.text and "Cloud sync" in found.text
    wrong = await sandbox.client.post(
        "/recover", data={"invoice_id": bought["invoice_id"], "email": "eve@example.com"}
    )
    assert wrong.status_code == 404
    assert "We couldn&#39;t match that invoice reference and e-mail" in wrong.text
    assert key not in wrong.text
    empty = await sandbox.client.post("/recover", data={"invoice_id": "", "email": "x@y.z"})
    assert (
        empty.status_code == 400
        and "Enter both the invoice reference and the e-mail." in empty.text
    )


# --- sandbox checkout -------------------------------------------------------------------------


async def test_sandbox_checkout_shows_seller_discount_and_listed_price(sandbox: Any) -> None:
    await shop(sandbox)
    await add_code(sandbox, "TENOFF", kind="fixed_sats", amount=10_000)
    bought = await purchase(sandbox, "acme", policy_slug="pro", code="tenoff")
    page = await sandbox.client.get(f"/sandbox/checkout/{bought['btcpay_invoice_id']}")
    assert_page_headers(page, {"referrer-policy": "same-origin", "cache-control": "no-store"})
    assert "Acme Editor — Pro" in page.text and "40,000 sats" in page.text
    assert "Discount: 10,000 sats off with code TENOFF" in page.text
    assert "Sold by <strong>Keysat</strong>" in page.text


# --- hostile text -----------------------------------------------------------------------------


async def test_hostile_operator_text_and_parameters_are_inert(make_server: Any) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_OPERATOR_NAME=f"Op {HOSTILE}")
    profile = await add_profile(
        server,
        name=f"Merchant {HOSTILE}",
        legal_name=f"Legal {HOSTILE}",
        support_url=HOSTILE_URL,
        support_email=f"{HOSTILE}@example.com",
        brand_color=HOSTILE,
    )
    await set_profile(server, legal_name=f"Legal {HOSTILE}", support_url=HOSTILE_URL)
    await create_product(
        server,
        "evil",
        name=f"Product {HOSTILE}",
        description=f"Description {HOSTILE}",
        price_sats=10_000,
        merchant_profile_id=profile,
        entitlements_catalog=[
            {"slug": "ent", "name": f"Ent {HOSTILE}", "description": f"Desc {HOSTILE}"}
        ],
    )
    await create_policy(
        server,
        "evil",
        "tier",
        name=f"Tier {HOSTILE}",
        entitlements=["ent"],
        metadata={
            "description": f"About {HOSTILE}",
            "marketing_bullets": [f"Bullet {HOSTILE}"],
            "highlight": True,
        },
    )
    await create_policy(server, "evil", "free", name=f"Free {HOSTILE}", price_sats_override=0)
    await add_code(
        server,
        "EVIL",
        featured=True,
        product_slug="evil",
        description=f"Label {HOSTILE}",
        referrer_label=f"Ref {HOSTILE}",
    )
    bought = await purchase(server, "evil", policy_slug="tier", buyer_email="a@example.com")
    free = await purchase(server, "evil", policy_slug="free")
    hostile_query = quote(HOSTILE + HOSTILE_URL)
    pages = [
        await server.client.get("/", headers={"accept": "text/html"}),
        await server.client.get(f"/buy/evil?policy={hostile_query}"),
        await server.client.post(
            "/buy/evil",
            data={
                "policy_slug": HOSTILE,
                "code": HOSTILE,
                "buyer_email": HOSTILE,
                "buyer_note": HOSTILE,
                "rail": HOSTILE,
                "action": "apply",
            },
        ),
        await server.client.post(
            "/buy/evil",
            data={
                "policy_slug": "tier",
                "buyer_email": HOSTILE,
                "buyer_note": HOSTILE,
                "action": "buy",
            },
        ),
        await server.client.get(f"/buy/{quote(HOSTILE.replace('/', ''), safe='')}"),
        await server.client.get(f"/thank-you?invoice_id={hostile_query}"),
        await server.client.get(f"/thank-you?invoice_id={bought['invoice_id']}"),
        await server.client.get(f"/thank-you?invoice_id={free['invoice_id']}"),
        await server.client.get(f"/sandbox/checkout/{bought['btcpay_invoice_id']}"),
        await server.client.post("/recover", data={"invoice_id": HOSTILE, "email": HOSTILE}),
        await server.client.get(f"/recover?next={hostile_query}"),
    ]
    for page in pages:
        assert page.headers["content-type"].startswith("text/html")
        assert_inert(page.text)
        assert "<style" not in page.text
    buy = pages[1].text
    assert "Product &lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&gt;" in buy
    assert "Merchant &lt;/script&gt;" in buy and "Legal &lt;/script&gt;" in buy
    assert "mailto:" not in buy
    data = page_data(buy)
    assert "\u2028" not in data and "<" not in data and "\\u003c/script\\u003e" in data
    assert "Op &lt;/script&gt;" in pages[0].text
    assert "Ref " not in buy and "Label " not in buy
