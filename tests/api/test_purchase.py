"""POST /v1/purchase, GET /v1/purchase/{id} and POST /v1/recover (public-api.md 6, 10;
billing.md 2, 4.4) through the sandbox provider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from keysat.billing.models import Invoice
from keysat.clock import clock
from keysat.keys import parse_key
from keysat.licensing.models import License
from keysat.payments.models import SandboxInvoice
from support import (
    assert_error,
    audit_rows,
    create_policy,
    create_product,
    events,
    invoice_row,
    licenses_for_invoice,
    poll,
    purchase,
    sandbox_action,
    sha,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def count(server: Any, model: Any) -> int:
    async with server.state.db.read() as session:
        return int(
            (await session.execute(sa.select(sa.func.count()).select_from(model))).scalar_one()
        )


# --- the paid path --------------------------------------------------------------------------


async def test_paid_purchase_creates_a_pending_sandbox_invoice_and_no_license(sandbox) -> None:  # type: ignore[no-untyped-def]
    product = await create_product(sandbox, "acme", price_sats=50_000)
    policy = await create_policy(sandbox, "acme", "pro", entitlements=["pro"])
    bought = await purchase(
        sandbox, "acme", policy_slug="pro", buyer_email=" Ada@Example.com ", buyer_note="hi"
    )

    assert set(bought) == {
        "invoice_id",
        "btcpay_invoice_id",
        "checkout_url",
        "amount_sats",
        "base_price_sats",
        "discount_applied_sats",
        "poll_url",
    }
    assert bought["amount_sats"] == bought["base_price_sats"] == 50_000
    assert bought["discount_applied_sats"] == 0
    assert bought["btcpay_invoice_id"].startswith("sbx_") and len(bought["btcpay_invoice_id"]) == 36
    assert (
        bought["checkout_url"]
        == f"http://keysat.test/sandbox/checkout/{bought['btcpay_invoice_id']}"
    )
    assert bought["poll_url"] == f"http://keysat.test/v1/purchase/{bought['invoice_id']}"

    row = await invoice_row(sandbox, bought["invoice_id"])
    assert (row.kind, row.status, row.provider_kind, row.payment_provider_id) == (
        "purchase",
        "pending",
        "sandbox",
        None,
    )
    assert row.product_id == product["id"] and row.policy_id == policy["id"]
    assert row.buyer_email == "Ada@Example.com" and row.buyer_note == "hi"
    assert row.listed_currency is None and row.exchange_rate_source is None
    assert await licenses_for_invoice(sandbox, row.id) == []
    assert await events(sandbox, "license.issued") == []

    async with sandbox.state.db.read() as session:
        sandbox_row = await session.get(SandboxInvoice, bought["btcpay_invoice_id"])
    assert sandbox_row is not None
    assert (sandbox_row.status, sandbox_row.amount_value, sandbox_row.external_order_id) == (
        "new",
        50_000,
        bought["invoice_id"],
    )
    assert sandbox_row.redirect_url == f"http://keysat.test/thank-you?invoice_id={row.id}"


async def test_paying_issues_the_license_the_spec_describes(sandbox) -> None:  # type: ignore[no-untyped-def]
    clock.freeze(T0)
    await create_product(sandbox, "acme", price_sats=50_000)
    policy = await create_policy(
        sandbox,
        "acme",
        "pro",
        entitlements=["pro", "sync"],
        max_machines=3,
        duration_seconds=86_400 * 365,
        grace_seconds=3_600,
    )
    bought = await purchase(sandbox, "acme", policy_slug="pro", buyer_email="ada@example.com")
    clock.advance(timedelta(minutes=3))

    paid = await sandbox_action(sandbox, bought["invoice_id"], "pay")
    assert paid == {
        "ok": True,
        "invoice_id": bought["invoice_id"],
        "provider_invoice_id": bought["btcpay_invoice_id"],
        "status": "settled",
    }

    [row] = await licenses_for_invoice(sandbox, bought["invoice_id"])
    settled_at = T0 + timedelta(minutes=3)
    assert row.status == "active" and row.policy_id == policy["id"]
    assert row.issued_at == settled_at
    assert row.expires_at == settled_at + timedelta(days=365)
    assert (row.grace_seconds, row.max_machines, row.entitlements) == (3_600, 3, ["pro", "sync"])
    assert row.is_trial is False and row.trial_started_at is None
    assert row.buyer_email == "ada@example.com"
    assert row.license_metadata == {
        "source": "purchase",
        "btcpay_invoice_id": bought["btcpay_invoice_id"],
        "sandbox": True,
    }
    invoice = await invoice_row(sandbox, bought["invoice_id"])
    assert invoice.status == "settled" and invoice.settled_at == settled_at

    [issued] = await events(sandbox, "license.issued")
    assert issued["data"] == {
        "license_id": row.id,
        "product_id": row.product_id,
        "invoice_id": bought["invoice_id"],
        "policy_id": policy["id"],
        "is_trial": False,
        "expires_at": "2027-01-01T00:03:00.000000+00:00",
        "entitlements": ["pro", "sync"],
        "source": "purchase",
    }
    [audit] = await audit_rows(sandbox, "sandbox.invoice_pay")
    assert audit.target_id == bought["invoice_id"]
    assert audit.details == {
        "provider_invoice_id": bought["btcpay_invoice_id"],
        "status": "settled",
    }

    polled = await poll(sandbox, bought["invoice_id"])
    assert polled["status"] == "settled" and polled["license_id"] == row.id
    key = parse_key(polled["license_key"])
    assert str(key.license_id) == row.id and key.entitlements == ("pro", "sync")


async def test_paying_twice_and_concurrently_issues_one_license(sandbox) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    await create_product(sandbox, "acme", price_sats=1_000)
    bought = await purchase(sandbox, "acme")
    answers = await asyncio.gather(
        *(
            sandbox.admin_post(f"/v1/admin/sandbox/invoices/{bought['invoice_id']}/pay", {})
            for _ in range(6)
        )
    )
    assert {answer.status_code for answer in answers} == {200}
    assert {answer.json()["status"] for answer in answers} == {"settled"}
    await sandbox_action(sandbox, bought["invoice_id"], "pay")
    assert len(await licenses_for_invoice(sandbox, bought["invoice_id"])) == 1
    assert len(await events(sandbox, "license.issued")) == 1


async def test_poll_of_unknown_or_malformed_invoice_is_404(sandbox) -> None:  # type: ignore[no-untyped-def]
    for invoice_id in ("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", "not-an-id", "sbx_1234"):
        response = await sandbox.client.get(f"/v1/purchase/{invoice_id}")
        assert_error(response, 404, "not_found", f"not found: invoice '{invoice_id}'")


async def test_poll_hides_the_key_of_a_revoked_license(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=1_000)
    bought = await purchase(sandbox, "acme")
    await sandbox_action(sandbox, bought["invoice_id"], "pay")
    license_id = (await poll(sandbox, bought["invoice_id"]))["license_id"]
    assert (
        await sandbox.admin_post(f"/v1/admin/licenses/{license_id}/revoke", {})
    ).status_code == 200
    polled = await poll(sandbox, bought["invoice_id"])
    assert polled["license_key"] is None and polled["license_id"] == license_id


async def test_expire_and_invalidate_then_a_late_payment_settles(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=1_000)
    first = await purchase(sandbox, "acme")
    second = await purchase(sandbox, "acme")
    assert (await sandbox_action(sandbox, first["invoice_id"], "expire"))["status"] == "expired"
    assert (await sandbox_action(sandbox, second["invoice_id"], "invalidate"))[
        "status"
    ] == "invalid"
    assert (await poll(sandbox, first["invoice_id"]))["status"] == "expired"
    assert await events(sandbox, "license.issued") == []

    assert (await sandbox_action(sandbox, first["invoice_id"], "pay"))["status"] == "settled"
    assert len(await licenses_for_invoice(sandbox, first["invoice_id"])) == 1
    # The sandbox refuses to pay an invalid invoice (payments.md 3.2).
    refused = await sandbox.admin_post(f"/v1/admin/sandbox/invoices/{second['invoice_id']}/pay", {})
    assert_error(
        refused, 409, "conflict", "conflict: this sandbox invoice is invalid and cannot be paid"
    )
    assert await licenses_for_invoice(sandbox, second["invoice_id"]) == []


async def test_settled_is_final(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=1_000)
    bought = await purchase(sandbox, "acme")
    await sandbox_action(sandbox, bought["invoice_id"], "pay")
    for action in ("expire", "invalidate"):
        response = await sandbox.admin_post(
            f"/v1/admin/sandbox/invoices/{bought['invoice_id']}/{action}", {}
        )
        assert response.status_code == 409 and response.json()["error"] == "conflict"
    assert (await invoice_row(sandbox, bought["invoice_id"])).status == "settled"


async def test_amount_override_trips_the_mismatch_audit_but_still_issues(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=7_000)
    bought = await purchase(sandbox, "acme")
    await sandbox_action(sandbox, bought["invoice_id"], "pay", amount_sats=1)
    assert len(await licenses_for_invoice(sandbox, bought["invoice_id"])) == 1
    [audit] = await audit_rows(sandbox, "invoice.amount_mismatch")
    assert (audit.actor_kind, audit.target_kind, audit.target_id) == (
        "system",
        "invoice",
        bought["invoice_id"],
    )
    assert audit.details == {
        "provider_invoice_id": bought["btcpay_invoice_id"],
        "expected_amount_sats": 7_000,
        "provider_amount_sats": 1,
    }


async def test_sandbox_admin_calls_check_their_invoice(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=1_000)
    await create_policy(sandbox, "acme", "free", price_sats_override=0)
    free = await purchase(sandbox, "acme", policy_slug="free")
    response = await sandbox.admin_post(f"/v1/admin/sandbox/invoices/{free['invoice_id']}/pay", {})
    assert response.status_code == 409
    unknown = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
    response = await sandbox.admin_post(f"/v1/admin/sandbox/invoices/{unknown}/pay", {})
    assert_error(response, 404, "not_found", f"not found: invoice '{unknown}'")
    response = await sandbox.admin_post(
        f"/v1/admin/sandbox/invoices/{free['invoice_id']}/pay", {"amount_sats": 0}
    )
    assert response.status_code == 400
    assert (
        await sandbox.client.post(f"/v1/admin/sandbox/invoices/{unknown}/pay")
    ).status_code == 401


async def test_sandbox_calls_do_not_exist_outside_sandbox_mode(server) -> None:  # type: ignore[no-untyped-def]
    unknown = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"
    for action in ("pay", "expire", "invalidate"):
        response = await server.admin_post(f"/v1/admin/sandbox/invoices/{unknown}/{action}", {})
        assert_error(response, 404, "not_found")
    assert (await server.client.get("/sandbox/checkout/sbx_0")).status_code == 404


# --- product, policy, redirect and e-mail rules ---------------------------------------------


async def test_product_and_policy_resolution_errors(sandbox) -> None:  # type: ignore[no-untyped-def]
    product = await create_product(sandbox, "acme", price_sats=1_000)
    for slug, flag, value in (
        ("off", "active", False),
        ("hidden", "public", False),
        ("old", "archived", True),
    ):
        policy = await create_policy(sandbox, "acme", slug)
        response = await sandbox.admin_patch(
            f"/v1/admin/policies/{policy['id']}/{flag}", {flag: value}
        )
        assert response.status_code == 200, response.text

    async def buy(**body: Any) -> Any:
        return await sandbox.client.post("/v1/purchase", json={"product": "acme", **body})

    assert_error(
        await sandbox.client.post("/v1/purchase", json={"product": "nope"}),
        404,
        "not_found",
        "not found: product 'nope'",
    )
    assert_error(
        await buy(policy_slug="ghost"),
        404,
        "not_found",
        "not found: policy 'ghost' for product 'acme'",
    )
    assert_error(
        await buy(policy_slug="off"), 400, "bad_request", "bad request: policy 'off' is not active"
    )
    assert_error(
        await buy(policy_slug="hidden"),
        400,
        "bad_request",
        "bad request: policy 'hidden' is not available on the public buy page",
    )
    assert_error(
        await buy(policy_slug="old"),
        409,
        "conflict",
        "conflict: policy 'old' is archived and can no longer be purchased",
    )
    await sandbox.admin_patch(f"/v1/admin/products/{product['id']}/active", {"active": False})
    assert_error(
        await buy(),
        400,
        "bad_request",
        "bad request: product 'acme' is not available for purchase",
    )


async def test_default_policy_is_slug_default_else_first_by_name(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=1_000)
    await create_policy(sandbox, "acme", "zeta", name="Zeta", price_sats_override=300)
    alpha = await create_policy(sandbox, "acme", "alpha", name="Alpha", price_sats_override=200)
    bought = await purchase(sandbox, "acme")
    assert (await invoice_row(sandbox, bought["invoice_id"])).policy_id == alpha["id"]
    assert bought["amount_sats"] == 200
    default = await create_policy(sandbox, "acme", "default", name="Zz", price_sats_override=250)
    bought = await purchase(sandbox, "acme", policy_slug="  ")
    assert (await invoice_row(sandbox, bought["invoice_id"])).policy_id == default["id"]
    assert bought["amount_sats"] == 250


async def test_no_policy_buys_the_product_price_with_one_seat(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=4_000)
    bought = await purchase(sandbox, "acme")
    await sandbox_action(sandbox, bought["invoice_id"], "pay")
    [row] = await licenses_for_invoice(sandbox, bought["invoice_id"])
    assert (row.policy_id, row.max_machines, row.entitlements, row.expires_at) == (
        None,
        1,
        [],
        None,
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/thanks",
        "javascript:alert(1)",
        "http://keysat.test.evil.example/x",
        "ftp://keysat.test/x",
        "keysat.test/x",
        "http://keysat.test:8080/x",
    ],
)
async def test_redirect_url_outside_allowed_origins_is_refused(sandbox, url: str) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=1_000)
    response = await sandbox.client.post(
        "/v1/purchase", json={"product": "acme", "redirect_url": url}
    )
    assert_error(
        response, 400, "bad_request", "bad request: redirect_url must point to an allowed origin"
    )
    assert await count(sandbox, Invoice) == 0


async def test_redirect_url_allowed_origins(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(
        KEYSAT_SANDBOX_MODE="true", KEYSAT_ALLOWED_REDIRECT_ORIGINS="https://shop.example.com"
    )
    await create_product(server, "acme", price_sats=1_000)
    for url in ("http://KEYSAT.test:80/done", "https://shop.example.com:443/thanks?x=1"):
        bought = await purchase(server, "acme", redirect_url=url)
        async with server.state.db.read() as session:
            row = await session.get(SandboxInvoice, bought["btcpay_invoice_id"])
        assert row is not None and row.redirect_url == url


async def test_profile_redirect_template_is_used_and_its_origin_allowed(sandbox) -> None:  # type: ignore[no-untyped-def]
    from keysat.operator.models import MerchantProfile

    async with sandbox.state.db.write() as session:
        profile = (
            await session.execute(sa.select(MerchantProfile).where(MerchantProfile.is_default))
        ).scalar_one()
        profile.post_purchase_redirect_url = "https://app.example.org/thanks/{invoice_id}"
    await create_product(sandbox, "acme", price_sats=1_000)
    bought = await purchase(sandbox, "acme")
    async with sandbox.state.db.read() as session:
        row = await session.get(SandboxInvoice, bought["btcpay_invoice_id"])
    assert row is not None
    assert row.redirect_url == f"https://app.example.org/thanks/{bought['invoice_id']}"
    await purchase(sandbox, "acme", redirect_url="https://app.example.org/other")


@pytest.mark.parametrize("email", ["nobody", "a@b@c", "@example.com", "ada@", "a" * 250 + "@b.co"])
async def test_invalid_buyer_email_is_refused(sandbox, email: str) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=1_000)
    response = await sandbox.client.post(
        "/v1/purchase", json={"product": "acme", "buyer_email": email}
    )
    assert_error(
        response, 400, "bad_request", "bad request: buyer_email is not a valid e-mail address"
    )


async def test_body_rules(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=1_000)
    assert_error(
        await sandbox.client.post("/v1/purchase", json={}),
        400,
        "bad_request",
        "bad request: missing field 'product'",
    )
    assert_error(
        await sandbox.client.post("/v1/purchase", json={"product": 5}),
        400,
        "bad_request",
        "bad request: field 'product' must be a string",
    )
    assert_error(
        await sandbox.client.post(
            "/v1/purchase", json={"product": "acme", "redirect_url": "https://x/" + "a" * 2048}
        ),
        400,
        "bad_request",
    )
    response = await sandbox.client.post(
        "/v1/purchase", content=b"product=acme", headers={"content-type": "text/plain"}
    )
    assert_error(response, 400, "bad_request")


# --- free paths ----------------------------------------------------------------------------


async def test_zero_price_issues_inline_with_a_free_invoice(server) -> None:  # type: ignore[no-untyped-def]
    # No provider and no sandbox: free paths need none.
    await create_product(server, "acme", price_sats=1_000)
    free = await create_policy(
        server, "acme", "free", price_sats_override=0, entitlements=["basic"]
    )
    bought = await purchase(server, "acme", policy_slug="free", buyer_email="ada@example.com")
    invoice_id = bought["invoice_id"]
    assert bought["btcpay_invoice_id"] == f"free-{invoice_id}"
    assert (bought["checkout_url"], bought["amount_sats"], bought["base_price_sats"]) == ("", 0, 0)
    assert bought["discount_applied_sats"] == 0
    row = await invoice_row(server, invoice_id)
    assert (row.status, row.provider_kind, row.amount_sats, row.checkout_url) == (
        "settled",
        "none",
        0,
        "",
    )
    assert row.policy_id == free["id"] and row.rail is None and row.settled_at is not None
    [license_row] = await licenses_for_invoice(server, invoice_id)
    assert bought["license_id"] == license_row.id and license_row.entitlements == ["basic"]
    assert "sandbox" not in license_row.license_metadata
    # The inline key equals the polled key: keys are derived, never stored.
    assert (await poll(server, invoice_id))["license_key"] == bought["license_key"]
    [issued] = await events(server, "license.issued")
    assert issued["data"]["invoice_id"] == invoice_id and issued["data"]["source"] == "purchase"


async def test_trial_shortcut_and_the_one_trial_per_email_rule(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(KEYSAT_SANDBOX_MODE="true")
    clock.freeze(T0)
    await create_product(server, "acme", price_sats=50_000)
    await create_policy(
        server,
        "acme",
        "monthly",
        is_recurring=True,
        renewal_period_days=30,
        trial_days=14,
        grace_period_days=7,
    )
    bought = await purchase(server, "acme", buyer_email="Ada@Example.com", code="IGNORED")
    assert bought["amount_sats"] == 0 and bought["base_price_sats"] == 50_000
    [row] = await licenses_for_invoice(server, bought["invoice_id"])
    assert row.is_trial and row.trial_started_at == T0
    assert row.expires_at == T0 + timedelta(days=14)
    assert row.grace_seconds == 7 * 86_400

    again = await server.client.post(
        "/v1/purchase", json={"product": "acme", "buyer_email": " ada@example.COM"}
    )
    assert_error(
        again,
        409,
        "conflict",
        "conflict: a trial of this product has already been used with this e-mail address",
    )
    # Without an e-mail the rule cannot apply; another address is another buyer.
    await purchase(server, "acme")
    await purchase(server, "acme", buyer_email="grace@example.com")


async def test_allow_repeat_trials_lifts_the_email_rule(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=50_000)
    await create_policy(
        sandbox, "acme", "trial", is_trial=True, price_sats_override=0, allow_repeat_trials=True
    )
    await purchase(sandbox, "acme", buyer_email="ada@example.com")
    await purchase(sandbox, "acme", buyer_email="ada@example.com")
    assert await count(sandbox, License) == 2


async def test_recurring_paid_purchase_runs_one_full_cycle(sandbox) -> None:  # type: ignore[no-untyped-def]
    clock.freeze(T0)
    await create_product(sandbox, "acme", price_sats=2_500)
    await create_policy(
        sandbox,
        "acme",
        "monthly",
        is_recurring=True,
        renewal_period_days=30,
        grace_period_days=7,
        grace_seconds=99,
    )
    bought = await purchase(sandbox, "acme")
    await sandbox_action(sandbox, bought["invoice_id"], "pay")
    [row] = await licenses_for_invoice(sandbox, bought["invoice_id"])
    assert row.expires_at == datetime(2026, 1, 31, tzinfo=UTC)  # F1
    assert row.grace_seconds == 604_800 and row.is_trial is False


# --- outside sandbox mode --------------------------------------------------------------------


async def test_no_provider_outside_sandbox_is_a_clear_503(server) -> None:  # type: ignore[no-untyped-def]
    await create_product(server, "acme", price_sats=1_000)
    response = await server.client.post("/v1/purchase", json={"product": "acme"})
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "btcpay_not_configured"
    assert body["message"] == (
        "payment provider not configured: merchant profile 'Default' has no payment "
        "providers connected — buyers can't pay yet. Connect one in the admin UI."
    )
    assert await count(server, Invoice) == 0


async def test_purchase_rate_limit(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(
        KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_PURCHASE="2/60s"
    )
    await create_product(server, "acme", price_sats=1_000)
    await purchase(server, "acme")
    await purchase(server, "acme")
    response = await server.client.post("/v1/purchase", json={"product": "acme"})
    assert_error(
        response,
        429,
        "rate_limited",
        "too many requests: purchase requests are rate-limited; try again in a minute",
    )
    assert int(response.headers["retry-after"]) >= 1


# --- recovery --------------------------------------------------------------------------------


async def test_recover_returns_the_key_and_audits_without_the_email(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=1_000)
    bought = await purchase(sandbox, "acme", buyer_email="Ada@Example.com")
    await sandbox_action(sandbox, bought["invoice_id"], "pay")

    response = await sandbox.client.post(
        "/v1/recover",
        json={"invoice_id": bought["invoice_id"], "email": "  ada@example.COM "},
        headers={"user-agent": "recover-test"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    polled = await poll(sandbox, bought["invoice_id"])
    assert body["license_key"] == polled["license_key"]
    assert body["license_id"] == polled["license_id"]
    assert body["expires_at"] is None and body["entitlements"] == []
    [audit] = await audit_rows(sandbox, "license.recovered")
    assert (audit.actor_kind, audit.actor_hash) == ("buyer_self_service", sha("ada@example.com"))
    assert audit.details == {"invoice_id": bought["invoice_id"]}
    assert audit.user_agent == "recover-test" and audit.request_ip == "203.0.113.7"


async def test_recover_failures_are_one_generic_404(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=1_000)
    pending = await purchase(sandbox, "acme", buyer_email="ada@example.com")
    no_email = await purchase(sandbox, "acme")
    await sandbox_action(sandbox, no_email["invoice_id"], "pay")
    generic = "not found: recovery failed — invoice id and email did not match any settled purchase"
    for invoice_id, email in [
        (pending["invoice_id"], "ada@example.com"),
        (no_email["invoice_id"], "ada@example.com"),
        ("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d", "ada@example.com"),
        ("garbage", "ada@example.com"),
    ]:
        response = await sandbox.client.post(
            "/v1/recover", json={"invoice_id": invoice_id, "email": email}
        )
        assert_error(response, 404, "not_found", generic)
    await sandbox_action(sandbox, pending["invoice_id"], "pay")
    wrong = await sandbox.client.post(
        "/v1/recover", json={"invoice_id": pending["invoice_id"], "email": "eve@example.com"}
    )
    assert_error(wrong, 404, "not_found", generic)
    blank = await sandbox.client.post("/v1/recover", json={"invoice_id": " ", "email": "x"})
    assert_error(blank, 400, "bad_request", "bad request: both invoice_id and email are required")
    assert await audit_rows(sandbox, "license.recovered") == []


# --- the sandbox checkout page ---------------------------------------------------------------


async def test_checkout_page_shows_the_invoice_and_its_buttons(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", name="Acme <Editor>", price_sats=50_000)
    bought = await purchase(sandbox, "acme", buyer_email="ada@example.com")
    page = await sandbox.client.get(f"/sandbox/checkout/{bought['btcpay_invoice_id']}")
    assert page.status_code == 200
    html = page.text
    assert "SANDBOX — simulated payment, no money moves" in html
    assert "<title>[SANDBOX]" in html
    assert "Acme &lt;Editor&gt;" in html and "Acme <Editor>" not in html
    assert "50,000 sats" in html and "0.00050000 BTC" in html
    assert "Simulate payment" in html and "Let it expire" in html
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["cache-control"] == "no-store"


async def test_checkout_buttons_need_our_origin_and_redirect_like_a_provider(sandbox) -> None:  # type: ignore[no-untyped-def]
    await create_product(sandbox, "acme", price_sats=1_000)
    bought = await purchase(sandbox, "acme")
    path = f"/sandbox/checkout/{bought['btcpay_invoice_id']}"
    refused = await sandbox.client.post(f"{path}/pay", headers={"origin": "https://evil.example"})
    assert refused.status_code == 403
    no_origin = await sandbox.client.post(f"{path}/pay")
    assert no_origin.status_code == 403
    assert (await invoice_row(sandbox, bought["invoice_id"])).status == "pending"

    expired = await sandbox.client.post(f"{path}/expire", headers={"origin": "http://keysat.test"})
    assert expired.status_code == 303 and expired.headers["location"] == path
    page = await sandbox.client.get(path)
    assert "Let it expire" not in page.text and "Simulate payment" in page.text

    paid = await sandbox.client.post(
        f"{path}/pay", headers={"referer": f"http://keysat.test{path}"}
    )
    assert paid.status_code == 303
    assert paid.headers["location"] == (
        f"http://keysat.test/thank-you?invoice_id={bought['invoice_id']}"
    )
    assert len(await licenses_for_invoice(sandbox, bought["invoice_id"])) == 1
    refused_expire = await sandbox.client.post(
        f"{path}/expire", headers={"origin": "http://keysat.test"}
    )
    assert refused_expire.status_code == 409
    assert "Continue" in (await sandbox.client.get(path)).text
    unknown = await sandbox.client.get("/sandbox/checkout/sbx_nothing")
    assert unknown.status_code == 404 and "text/html" in unknown.headers["content-type"]
