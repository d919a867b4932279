"""POST /v1/redeem (public-api.md 7, billing.md 2.8), free_license codes on POST /v1/purchase
(billing.md 2.3 step 1), GET /v1/discount-codes/preview (public-api.md 5) and the rate limits
of those three routes (public-api.md 1.9)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from keysat.billing.models import DiscountCode, DiscountRedemption, Invoice
from keysat.clock import clock
from keysat.licensing.models import License
from support import (
    ADMIN,
    assert_error,
    audit_rows,
    create_policy,
    create_product,
    events,
    invoice_row,
    licenses_for_invoice,
    poll,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CODES = "/v1/admin/discount-codes"
RESERVATION_FAILED = "bad request: discount code is invalid, expired, or has no remaining uses"
REQUIRES_PAYMENT = (
    "bad request: this code requires payment — use the standard purchase flow with the code applied"
)
TRIAL_USED = "conflict: a trial of this product has already been used with this e-mail address"
FREE_MESSAGE = "Free license — no payment required."


async def create_code(
    server: Any, code: str, kind: str = "free_license", amount: int = 0, **fields: Any
) -> dict[str, Any]:
    response = await server.admin_post(
        CODES, {"code": code, "kind": kind, "amount": amount, **fields}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def set_flag(server: Any, path: str, body: dict[str, Any]) -> None:
    response = await server.admin_patch(path, body)
    assert response.status_code == 200, response.text


async def code_row(server: Any, code_id: str) -> DiscountCode:
    async with server.state.db.read() as session:
        row = await session.get(DiscountCode, code_id)
    assert row is not None
    return row


async def used(server: Any, code_id: str) -> int:
    return (await code_row(server, code_id)).used_count


async def set_used_count(server: Any, code_id: str, count: int) -> None:
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(DiscountCode).where(DiscountCode.id == code_id).values(used_count=count)
        )


async def count(server: Any, model: Any) -> int:
    async with server.state.db.read() as session:
        query = sa.select(sa.func.count()).select_from(model)
        return int((await session.execute(query)).scalar_one())


async def redeem(server: Any, product: str = "acme", **fields: Any) -> Any:
    return await server.client.post("/v1/redeem", json={"product": product, **fields})


async def preview(server: Any, **params: Any) -> Any:
    return await server.client.get("/v1/discount-codes/preview", params=params)


async def redemption_row(server: Any, redemption_id: str) -> DiscountRedemption:
    async with server.state.db.read() as session:
        row = await session.get(DiscountRedemption, redemption_id)
    assert row is not None
    return row


async def license_row(server: Any, license_id: str) -> License:
    async with server.state.db.read() as session:
        row = await session.get(License, license_id)
    assert row is not None
    return row


# --- POST /v1/redeem ------------------------------------------------------------------------------


@pytest.fixture
async def shop(server: Any) -> dict[str, Any]:
    """Outside sandbox mode with no payment provider: free paths need none."""
    clock.freeze(T0)
    product = await create_product(server, price_sats=10_000)
    basic = await create_policy(server, slug="basic", entitlements=["core"])
    pro = await create_policy(server, slug="pro")
    team = await create_policy(server, slug="team")
    return {"server": server, "product": product, "basic": basic, "pro": pro, "team": team}


async def test_redeem_issues_a_license_in_one_transaction(shop: dict[str, Any]) -> None:
    server, product = shop["server"], shop["product"]
    code = await create_code(server, "GIFT-1", max_uses=5)
    response = await redeem(
        server, code=" gift-1 ", buyer_email=" Buyer@Example.com ", buyer_note="thanks"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"license_id", "license_key", "invoice_id", "redemption_id"}
    invoice = await invoice_row(server, body["invoice_id"])
    assert (invoice.kind, invoice.status, invoice.provider_kind) == ("purchase", "settled", "none")
    assert invoice.provider_invoice_id == f"free-{body['invoice_id']}"
    assert (invoice.amount_sats, invoice.base_price_sats, invoice.discount_applied_sats) == (
        0,
        0,
        0,
    )
    assert invoice.checkout_url == "" and invoice.payment_provider_id is None
    assert invoice.policy_id == shop["basic"]["id"]  # the default policy, first by name
    assert (invoice.buyer_email, invoice.buyer_note) == ("Buyer@Example.com", "thanks")
    assert invoice.settled_at == T0 and invoice.rail is None
    assert invoice.listed_currency is None
    row = await redemption_row(server, body["redemption_id"])
    assert (row.status, row.code_id, row.invoice_id, row.license_id) == (
        "redeemed",
        code["id"],
        body["invoice_id"],
        body["license_id"],
    )
    assert (row.discount_applied_sats, row.base_price_sats, row.final_price_sats) == (0, 0, 0)
    issued = await license_row(server, body["license_id"])
    assert (issued.invoice_id, issued.policy_id, issued.status) == (
        body["invoice_id"],
        shop["basic"]["id"],
        "active",
    )
    assert issued.entitlements == ["core"]
    assert issued.license_metadata == {
        "source": "purchase",
        "btcpay_invoice_id": f"free-{body['invoice_id']}",
    }
    assert await used(server, code["id"]) == 1
    [issued_event] = await events(server, "license.issued")
    assert issued_event["data"] == {
        "license_id": body["license_id"],
        "product_id": product["id"],
        "invoice_id": body["invoice_id"],
        "policy_id": shop["basic"]["id"],
        "is_trial": False,
        "expires_at": None,
        "entitlements": ["core"],
        "source": "purchase",
    }
    [redeemed_event] = await events(server, "code.redeemed")
    assert redeemed_event["data"] == {
        "redemption_id": body["redemption_id"],
        "code_id": code["id"],
        "code": "GIFT-1",
        "license_id": body["license_id"],
        "product_id": product["id"],
        "invoice_id": body["invoice_id"],
        "discount_applied_sats": 0,
        "base_price_sats": 0,
        "final_price_sats": 0,
    }
    [audit] = await audit_rows(server, "code.redeemed")
    assert (audit.actor_kind, audit.target_kind, audit.target_id) == (
        "system",
        "discount_code",
        code["id"],
    )
    assert audit.details == {
        "redemption_id": body["redemption_id"],
        "invoice_id": body["invoice_id"],
        "license_id": body["license_id"],
        "discount_applied_sats": 0,
        "base_price_sats": 0,
        "final_price_sats": 0,
    }
    polled = await poll(server, body["invoice_id"])
    assert polled == {
        "invoice_id": body["invoice_id"],
        "status": "settled",
        "product_id": product["id"],
        "amount_sats": 0,
        "license_key": body["license_key"],
        "license_id": body["license_id"],
    }
    # the admin view of the code lists the redemption
    detail = (await server.admin_get(f"{CODES}/{code['id']}")).json()
    assert [r["id"] for r in detail["redemptions"]] == [body["redemption_id"]]
    assert detail["code"]["used_count"] == 1


async def test_redeem_with_an_explicit_policy_and_a_multi_policy_scope(
    shop: dict[str, Any],
) -> None:
    server = shop["server"]
    code = await create_code(server, "TWOTIERS", product_slug="acme", policy_slugs=["pro", "team"])
    assert_error(
        await redeem(server, code="TWOTIERS"),
        400,
        "bad_request",
        "bad request: code does not apply to the selected tier",
    )
    assert_error(
        await redeem(server, code="TWOTIERS", policy_slug="basic"),
        400,
        "bad_request",
        "bad request: code does not apply to the selected tier",
    )
    for tier in ("team", "pro"):
        response = await redeem(server, code="twotiers", policy_slug=tier)
        assert response.status_code == 200, response.text
        invoice = await invoice_row(server, response.json()["invoice_id"])
        assert invoice.policy_id == shop[tier]["id"]
    assert await used(server, code["id"]) == 2


async def test_redeem_checks_run_in_the_documented_order(shop: dict[str, Any]) -> None:
    server = shop["server"]
    await create_product(server, "other")
    await create_policy(server, "other", "gold")
    past = "2026-03-01T11:00:00Z"
    off = await create_code(
        server, "OFF", "percent", 100, product_slug="other", expires_at=past, max_uses=1
    )
    await set_flag(server, f"{CODES}/{off['id']}/active", {"active": False})
    await create_code(server, "PAID", "percent", 100, product_slug="other", expires_at=past)
    await create_code(server, "OLD", product_slug="other", policy_slug="gold", expires_at=past)
    await create_code(server, "ELSEWHERE", product_slug="other", policy_slug="gold", max_uses=1)
    tier = await create_code(server, "PROONLY", product_slug="acme", policy_slug="pro", max_uses=1)
    await set_used_count(server, tier["id"], 1)
    full = await create_code(server, "FULL", max_uses=2)
    await set_used_count(server, full["id"], 2)
    cases = [
        ("OFF", "bad request: code is disabled"),
        ("PAID", REQUIRES_PAYMENT),
        ("OLD", "bad request: code has expired"),
        ("ELSEWHERE", "bad request: code does not apply to this product"),
        ("PROONLY", "bad request: code does not apply to the selected tier"),
        ("FULL", RESERVATION_FAILED),
        ("NOSUCHCODE", "bad request: unknown code"),
    ]
    for typed, message in cases:
        assert_error(await redeem(server, code=typed.lower()), 400, "bad_request", message)
    assert "requires payment" in REQUIRES_PAYMENT
    assert await count(server, Invoice) == 0
    assert await count(server, DiscountRedemption) == 0
    assert await count(server, License) == 0
    assert await used(server, full["id"]) == 2
    assert await used(server, tier["id"]) == 1
    assert await events(server, "license.issued") == []


async def test_redeem_product_and_policy_come_before_the_code(shop: dict[str, Any]) -> None:
    server = shop["server"]
    await create_code(server, "GOOD")
    assert_error(
        await redeem(server, "nope", code=""), 404, "not_found", "not found: product 'nope'"
    )
    assert_error(
        await redeem(server, policy_slug="gold", code=" "),
        404,
        "not_found",
        "not found: policy 'gold' for product 'acme'",
    )
    assert_error(
        await redeem(server, code="  "), 400, "bad_request", "bad request: code is required"
    )
    assert_error(await redeem(server, code=""), 400, "bad_request", "bad request: code is required")
    assert_error(await redeem(server), 400, "bad_request", "bad request: missing field 'code'")
    # policy states, each before the (blank) code
    await set_flag(server, f"/v1/admin/policies/{shop['pro']['id']}/active", {"active": False})
    assert_error(
        await redeem(server, policy_slug="pro", code=""),
        400,
        "bad_request",
        "bad request: policy 'pro' is not active",
    )
    await set_flag(server, f"/v1/admin/policies/{shop['team']['id']}/public", {"public": False})
    assert_error(
        await redeem(server, policy_slug="team", code="GOOD"),
        400,
        "bad_request",
        "bad request: policy 'team' is not available on the public buy page",
    )
    archived = await server.admin_patch(
        f"/v1/admin/policies/{shop['basic']['id']}/archived", {"archived": True}
    )
    assert archived.status_code == 200
    assert_error(
        await redeem(server, policy_slug="basic", code=""),
        409,
        "conflict",
        "conflict: policy 'basic' is archived and can no longer be purchased",
    )
    await set_flag(server, f"/v1/admin/products/{shop['product']['id']}/active", {"active": False})
    assert_error(
        await redeem(server, policy_slug="gold", code=""),
        400,
        "bad_request",
        "bad request: product 'acme' is not available for redemption",
    )
    assert await count(server, Invoice) == 0


async def test_redeem_expiry_boundary(shop: dict[str, Any]) -> None:
    server = shop["server"]
    await create_code(server, "EDGE", expires_at="2026-03-01T12:00:01Z")
    clock.advance(timedelta(seconds=1))
    assert_error(
        await redeem(server, code="EDGE"), 400, "bad_request", "bad request: code has expired"
    )
    clock.advance(timedelta(seconds=-1, microseconds=-1))
    assert (await redeem(server, code="EDGE")).status_code == 200


async def test_redeem_trial_limit_by_email_releases_the_slot(shop: dict[str, Any]) -> None:
    server = shop["server"]
    trial = await create_policy(server, slug="trial", is_trial=True, duration_seconds=86_400)
    code = await create_code(server, "TRY", max_uses=3)
    first = await redeem(server, code="TRY", policy_slug="trial", buyer_email="Ann@Example.com")
    assert first.status_code == 200, first.text
    issued = await license_row(server, first.json()["license_id"])
    assert (issued.is_trial, issued.trial_started_at) == (True, T0)
    assert issued.expires_at == T0 + timedelta(days=1)
    for email in ("ann@example.com", "  ANN@example.COM "):
        again = await redeem(server, code="TRY", policy_slug="trial", buyer_email=email)
        assert_error(again, 409, "conflict", TRIAL_USED)
    assert await used(server, code["id"]) == 1
    assert await count(server, Invoice) == 1
    assert await count(server, DiscountRedemption) == 1
    # another address, or no address, is fine
    other = await redeem(server, code="TRY", policy_slug="trial", buyer_email="bob@example.com")
    assert other.status_code == 200
    anonymous = await redeem(server, code="TRY", policy_slug="trial")
    assert anonymous.status_code == 200
    assert await used(server, code["id"]) == 3
    assert trial["is_trial"] is True


async def test_redeem_reservation_is_checked_before_the_trial_limit(shop: dict[str, Any]) -> None:
    server = shop["server"]
    await create_policy(server, slug="trial", is_trial=True, duration_seconds=86_400)
    code = await create_code(server, "TRYONCE", max_uses=1)
    first = await redeem(server, code="TRYONCE", policy_slug="trial", buyer_email="ann@example.com")
    assert first.status_code == 200
    # step 11 (reservation) comes before step 12 (trial limit)
    again = await redeem(server, code="TRYONCE", policy_slug="trial", buyer_email="ann@example.com")
    assert_error(again, 400, "bad_request", RESERVATION_FAILED)
    assert await used(server, code["id"]) == 1


async def test_redeem_repeat_trials_allowed_by_policy(shop: dict[str, Any]) -> None:
    server = shop["server"]
    await create_policy(
        server, slug="trial", is_trial=True, duration_seconds=86_400, allow_repeat_trials=True
    )
    await create_code(server, "AGAIN")
    for _ in range(2):
        response = await redeem(
            server, code="AGAIN", policy_slug="trial", buyer_email="ann@example.com"
        )
        assert response.status_code == 200, response.text


async def test_redeem_bad_email_is_400(shop: dict[str, Any]) -> None:
    server = shop["server"]
    code = await create_code(server, "MAIL")
    for email in ("nobody", "@example.com", "a@", "a@b@c"):
        assert_error(
            await redeem(server, code="MAIL", buyer_email=email),
            400,
            "bad_request",
            "bad request: buyer_email is not a valid e-mail address",
        )
    assert await used(server, code["id"]) == 0


async def test_redeem_race_for_the_last_use(shop: dict[str, Any]) -> None:
    server = shop["server"]
    code = await create_code(server, "LASTONE", max_uses=1)
    responses = await asyncio.gather(*(redeem(server, code="LASTONE") for _ in range(3)))
    assert sorted(r.status_code for r in responses) == [200, 400, 400]
    for response in responses:
        if response.status_code == 400:
            assert_error(response, 400, "bad_request", RESERVATION_FAILED)
    assert await used(server, code["id"]) == 1
    assert await count(server, License) == 1
    assert len(await events(server, "code.redeemed")) == 1


# --- a free_license code sent to POST /v1/purchase ------------------------------------------------


async def test_free_license_code_on_purchase_answers_in_the_purchase_shape(
    shop: dict[str, Any],
) -> None:
    server = shop["server"]
    code = await create_code(server, "FREEBIE")
    response = await server.client.post(
        "/v1/purchase", json={"product": "acme", "policy_slug": "pro", "code": " freebie "}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "invoice_id": body["invoice_id"],
        "btcpay_invoice_id": f"free-{body['invoice_id']}",
        "checkout_url": "",
        "amount_sats": 0,
        "base_price_sats": 0,
        "discount_applied_sats": 0,
        "poll_url": f"http://keysat.test/v1/purchase/{body['invoice_id']}",
        "license_key": body["license_key"],
        "license_id": body["license_id"],
    }
    invoice = await invoice_row(server, body["invoice_id"])
    assert (invoice.status, invoice.provider_kind, invoice.policy_id) == (
        "settled",
        "none",
        shop["pro"]["id"],
    )
    assert (invoice.amount_sats, invoice.base_price_sats, invoice.discount_applied_sats) == (
        0,
        0,
        0,
    )
    [issued] = await licenses_for_invoice(server, body["invoice_id"])
    assert issued.id == body["license_id"]
    polled = await poll(server, body["invoice_id"])
    assert polled["license_key"] == body["license_key"]
    assert polled["license_id"] == body["license_id"]
    assert await used(server, code["id"]) == 1
    async with server.state.db.read() as session:
        [row] = (await session.execute(sa.select(DiscountRedemption))).scalars().all()
    assert (row.status, row.license_id, row.final_price_sats) == ("redeemed", issued.id, 0)
    assert len(await events(server, "code.redeemed")) == 1
    assert len(await audit_rows(server, "code.redeemed")) == 1
    [issued_event] = await events(server, "license.issued")
    assert issued_event["data"]["source"] == "purchase"
    assert issued_event["data"]["invoice_id"] == body["invoice_id"]


async def test_free_license_code_on_purchase_uses_the_redeem_checks(shop: dict[str, Any]) -> None:
    server = shop["server"]
    await create_code(server, "STALE", expires_at="2026-03-01T11:00:00Z")
    await create_code(server, "PROFREE", product_slug="acme", policy_slug="pro")
    full = await create_code(server, "GONE", max_uses=1)
    await set_used_count(server, full["id"], 1)
    cases = [
        ({"code": "STALE"}, "bad request: code has expired"),
        (
            {"code": "PROFREE", "policy_slug": "team"},
            "bad request: code does not apply to the selected tier",
        ),
        ({"code": "GONE"}, RESERVATION_FAILED),
    ]
    for fields, message in cases:
        response = await server.client.post("/v1/purchase", json={"product": "acme", **fields})
        assert_error(response, 400, "bad_request", message)
    assert await count(server, Invoice) == 0


async def test_free_license_code_on_purchase_checks_the_trial_limit_first(
    shop: dict[str, Any],
) -> None:
    server = shop["server"]
    await create_policy(server, slug="trial", is_trial=True, duration_seconds=86_400)
    code = await create_code(server, "TRIALGIFT", max_uses=1)
    body = {"product": "acme", "policy_slug": "trial", "code": "TRIALGIFT"}
    first = await server.client.post("/v1/purchase", json={**body, "buyer_email": "a@example.com"})
    assert first.status_code == 200, first.text
    # purchase step 4 (trial limit) comes before step 5 (the free_license code)
    again = await server.client.post("/v1/purchase", json={**body, "buyer_email": "A@example.com"})
    assert_error(again, 409, "conflict", TRIAL_USED)
    assert await used(server, code["id"]) == 1


async def test_trial_shortcut_ignores_discount_codes(sandbox: Any) -> None:
    await create_product(sandbox, price_sats=10_000)
    await create_policy(
        sandbox,
        slug="monthly",
        is_recurring=True,
        renewal_period_days=30,
        grace_period_days=7,
        trial_days=14,
    )
    code = await create_code(sandbox, "PCT", "percent", 5_000, featured=True)
    for fields in ({}, {"code": "PCT"}, {"code": "UNKNOWN"}):
        response = await sandbox.client.post(
            "/v1/purchase", json={"product": "acme", "policy_slug": "monthly", **fields}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["amount_sats"], body["base_price_sats"], body["discount_applied_sats"]) == (
            0,
            10_000,
            0,
        )
        assert body["license_key"]
    assert await used(sandbox, code["id"]) == 0
    assert await count(sandbox, DiscountRedemption) == 0


# --- GET /v1/discount-codes/preview ---------------------------------------------------------------


async def test_preview_parameters(shop: dict[str, Any]) -> None:
    server = shop["server"]
    assert_error(
        await preview(server, product="acme"),
        400,
        "bad_request",
        "bad request: missing query parameter 'code'",
    )
    assert_error(
        await preview(server, code="X"),
        400,
        "bad_request",
        "bad request: missing query parameter 'product'",
    )
    # a blank code is refused before the product is looked up
    for blank in ("", "   "):
        assert_error(
            await preview(server, code=blank, product="nope"),
            400,
            "bad_request",
            "bad request: code is required",
        )
    assert_error(
        await preview(server, code="X", product="nope"),
        404,
        "not_found",
        "not found: product 'nope'",
    )
    await set_flag(server, f"/v1/admin/products/{shop['product']['id']}/active", {"active": False})
    assert_error(
        await preview(server, code="X", product="acme"),
        404,
        "not_found",
        "not found: product 'acme'",
    )


async def test_preview_soft_failures_in_order(shop: dict[str, Any]) -> None:
    server = shop["server"]
    await create_product(server, "other")
    await create_policy(server, "other", "gold")
    past = "2026-03-01T11:00:00Z"
    off = await create_code(
        server, "OFF", "percent", 100, product_slug="other", expires_at=past, max_uses=1
    )
    await set_flag(server, f"{CODES}/{off['id']}/active", {"active": False})
    await create_code(server, "OLD", "percent", 100, product_slug="other", expires_at=past)
    await create_code(
        server, "ELSEWHERE", "percent", 100, product_slug="other", policy_slug="gold", max_uses=1
    )
    tier = await create_code(
        server, "PROONLY", "percent", 100, product_slug="acme", policy_slug="pro", max_uses=1
    )
    full = await create_code(server, "FULL", "percent", 100, max_uses=1)
    for code in (off, tier, full):
        await set_used_count(server, code["id"], 1)
    cases = [
        ("NOSUCH", "unknown_code", "Code not found."),
        ("off", "disabled", "This code has been disabled."),
        ("OLD", "expired", "This code has expired."),
        ("ELSEWHERE", "wrong_product", "This code does not apply to this product."),
        ("PROONLY", "wrong_tier", "This code does not apply to the selected tier."),
        ("FULL", "exhausted", "This code has reached its use limit."),
    ]
    for typed, reason, message in cases:
        response = await preview(server, code=f" {typed} ", product="acme")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "valid": False,
            "reason": reason,
            "message": message,
            "base_price_sats": 10_000,
        }


async def test_preview_policy_resolution_errors_fall_back_to_the_default(
    shop: dict[str, Any],
) -> None:
    server = shop["server"]
    await create_policy(server, slug="cheap", price_sats_override=2_000)
    await create_code(server, "PCT", "percent", 1_000)
    await create_code(server, "PROONLY", "percent", 1_000, product_slug="acme", policy_slug="pro")
    explicit = (await preview(server, code="PCT", product="acme", policy_slug="cheap")).json()
    assert (explicit["base_price_sats"], explicit["discount_applied_sats"]) == (2_000, 200)
    for slug in ("gold", "", " "):
        fallback = (await preview(server, code="PCT", product="acme", policy_slug=slug)).json()
        assert fallback["base_price_sats"] == 10_000  # basic, the default policy
    await set_flag(server, f"/v1/admin/policies/{shop['pro']['id']}/public", {"public": False})
    hidden = (await preview(server, code="PROONLY", product="acme", policy_slug="pro")).json()
    assert (hidden["valid"], hidden["reason"]) == (False, "wrong_tier")


async def test_preview_wrong_tier_when_no_policy_resolves(server: Any) -> None:
    await create_product(server, price_sats=10_000)
    only = await create_policy(server, slug="only")
    await create_code(server, "ONLY", "percent", 1_000, product_slug="acme", policy_slug="only")
    assert (await preview(server, code="ONLY", product="acme")).json()["valid"] is True
    await set_flag(server, f"/v1/admin/policies/{only['id']}/active", {"active": False})
    body = (await preview(server, code="ONLY", product="acme")).json()
    assert body == {
        "valid": False,
        "reason": "wrong_tier",
        "message": "This code does not apply to the selected tier.",
        "base_price_sats": 10_000,
    }


@pytest.mark.parametrize(
    ("kind", "amount", "discount", "pct", "message"),
    [
        ("percent", 2_500, 2_500, 25.0, "25% off applied."),
        ("percent", 1_250, 1_250, 12.5, "12.5% off applied."),
        ("percent", 3_333, 3_333, 33.33, "33.33% off applied."),
        ("percent", 5, 5, 0.05, "0.05% off applied."),
        ("percent", 10, 10, 0.1, "0.1% off applied."),
        ("percent", 0, 0, 0.0, "0% off applied."),
        ("percent", 10_000, 10_000, 100.0, FREE_MESSAGE),
        ("fixed_sats", 1_500, 1_500, None, "1500 sats off applied."),
        ("fixed_sats", 20_000, 10_000, None, FREE_MESSAGE),
        ("set_price", 4_000, 6_000, None, "Flat price applied: 4000 sats."),
        (
            "set_price",
            10_000,
            0,
            None,
            "Code applied — but it doesn't lower the price for this product.",
        ),
        (
            "set_price",
            15_000,
            0,
            None,
            "Code applied — but it doesn't lower the price for this product.",
        ),
        ("free_license", 0, 10_000, None, FREE_MESSAGE),
    ],
)
async def test_preview_valid_answers(
    shop: dict[str, Any],
    kind: str,
    amount: int,
    discount: int,
    pct: float | None,
    message: str,
) -> None:
    server = shop["server"]
    code = await create_code(server, "Promo", kind, amount, max_uses=1)
    response = await preview(server, code=" promo ", product="acme")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "valid": True,
        "code": "PROMO",
        "kind": kind,
        "is_free": discount == 10_000,
        "base_price_sats": 10_000,
        "discount_applied_sats": discount,
        "final_price_sats": 10_000 - discount,
        "amount_pct": pct,
        "message": message,
    }
    raw = json.loads(response.text, parse_float=lambda text: ("float", text))
    if pct is not None:
        assert raw["amount_pct"][0] == "float"  # a JSON float, e.g. 25.0, never 25
    # preview never reserves a use, even of the last one
    assert await used(server, code["id"]) == 0
    assert await count(server, DiscountRedemption) == 0


async def test_preview_fiat_product_in_sats(server: Any) -> None:
    response = await server.client.put(
        "/v1/admin/rates/pins/USD", json={"units_per_btc": "50000"}, headers=ADMIN
    )
    assert response.status_code == 200
    await create_product(server, price_sats=None, price_currency="USD", price_value=4_900)
    await create_code(server, "FIVEUSD", "fixed_sats", 500, discount_currency="USD")
    await create_code(server, "FLAT", "set_price", 40_000)
    fixed = (await preview(server, code="FIVEUSD", product="acme")).json()
    assert (
        fixed["base_price_sats"],
        fixed["discount_applied_sats"],
        fixed["final_price_sats"],
    ) == (
        98_000,
        10_000,
        88_000,
    )
    assert fixed["message"] == "10000 sats off applied."
    flat = (await preview(server, code="FLAT", product="acme")).json()
    assert flat["message"] == "Flat price applied: 40000 sats."
    assert flat["discount_applied_sats"] == 58_000


async def test_preview_rate_failure_is_502_before_the_code_checks(
    make_server: Callable[..., Any],
) -> None:
    server = await make_server(KEYSAT_RATE_SOURCES="none")
    await create_product(server, price_sats=None, price_currency="USD", price_value=4_900)
    for code in ("NOSUCH", "  x  "):
        response = await preview(server, code=code, product="acme")
        assert response.status_code == 502, response.text
        body = response.json()
        assert set(body) == {"ok", "error", "message"}
        assert body["error"] == "upstream_error"
        assert body["message"].startswith("upstream error: rate fetch failed: ")


async def test_preview_refuses_nul_characters(shop: dict[str, Any]) -> None:
    server = shop["server"]
    for params in (
        {"code": "A\x00B", "product": "acme"},
        {"code": "AB", "product": "ac\x00me"},
        {"code": "AB", "product": "acme", "policy_slug": "p\x00"},
    ):
        assert_error(
            await preview(server, **params),
            400,
            "bad_request",
            "bad request: strings must not contain NUL characters",
        )


async def test_preview_never_changes_used_count(shop: dict[str, Any]) -> None:
    server = shop["server"]
    code = await create_code(server, "LASTUSE", "percent", 1_000, max_uses=1)
    for _ in range(5):
        body = (await preview(server, code="LASTUSE", product="acme")).json()
        assert body["valid"] is True
    row = await code_row(server, code["id"])
    assert (row.used_count, row.updated_at) == (0, T0)
    await set_used_count(server, code["id"], 1)
    assert (await preview(server, code="LASTUSE", product="acme")).json()["reason"] == "exhausted"
    assert await used(server, code["id"]) == 1


# --- rate limits (public-api.md 1.9) -------------------------------------------------------------


def assert_rate_limited(response: Any, message: str) -> None:
    assert_error(response, 429, "rate_limited", f"too many requests: {message}")
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 30


async def test_preview_rate_limit(make_server: Callable[..., Any]) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_PREVIEW="2/60s")
    await create_product(server)
    await create_code(server, "PCT", "percent", 1_000)
    # failing requests spend tokens too: the limit comes before any other check
    assert (await preview(server, code="PCT", product="nope")).status_code == 404
    assert (await preview(server, product="acme")).status_code == 400
    for params in ({"code": "PCT", "product": "acme"}, {}):
        assert_rate_limited(
            await preview(server, **params), "code previews are rate-limited; try again in a minute"
        )
    # other routes keep their own buckets
    assert (await redeem(server, code="PCT")).status_code == 400


async def test_redeem_rate_limit(make_server: Callable[..., Any]) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_REDEEM="2/60s")
    await create_product(server)
    code = await create_code(server, "GIFT")
    assert (await redeem(server, "nope", code="GIFT")).status_code == 404
    assert (await redeem(server, code="GIFT")).status_code == 200
    for _ in range(2):
        response = await redeem(server, code="GIFT")
        assert_rate_limited(response, "redeem attempts are rate-limited; try again in a minute")
    not_json = await server.client.post("/v1/redeem", content=b"nope")
    assert_rate_limited(not_json, "redeem attempts are rate-limited; try again in a minute")
    assert await used(server, code["id"]) == 1
    assert (await preview(server, code="GIFT", product="acme")).status_code == 200


async def test_purchase_rate_limit(make_server: Callable[..., Any]) -> None:
    server = await make_server(
        KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_PURCHASE="2/60s"
    )
    await create_product(server)
    code = await create_code(server, "PCT", "percent", 1_000)
    purchase = {"product": "acme", "code": "PCT"}
    assert (await server.client.post("/v1/purchase", json={"product": "nope"})).status_code == 404
    assert (await server.client.post("/v1/purchase", json=purchase)).status_code == 200
    for body in (purchase, {}):
        response = await server.client.post("/v1/purchase", json=body)
        assert_rate_limited(response, "purchase requests are rate-limited; try again in a minute")
    assert await used(server, code["id"]) == 1
    assert await count(server, Invoice) == 1
