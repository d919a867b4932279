"""Deleting products and policies that carry sales: codes, redemptions, subscriptions,
cycles and tier changes go with them, and nothing ever answers 500 (admin-api.md 2.5,
4.8; DECISIONS 22)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from keysat.billing.models import DiscountCode, DiscountRedemption, Invoice
from keysat.clock import clock
from keysat.licensing.models import License
from keysat.subscriptions.models import Subscription, SubscriptionCycle, TierChange
from support import create_policy, create_product, purchase, sandbox_action

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def rows(server: Any, model: Any) -> int:
    async with server.state.db.read() as session:
        query = sa.select(sa.func.count()).select_from(model)
        return int((await session.execute(query)).scalar_one())


async def create_code(server: Any, **body: Any) -> dict[str, Any]:
    response = await server.admin_post("/v1/admin/discount-codes", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def sell_everything(server: Any) -> dict[str, Any]:
    """A product with a coded sale, a renewed subscription and a paid upgrade."""
    clock.freeze(T0)
    product = await create_product(server, "acme", price_sats=10_000)
    monthly = await create_policy(
        server, "acme", "monthly", is_recurring=True, renewal_period_days=30, tier_rank=1
    )
    pro = await create_policy(
        server,
        "acme",
        "pro",
        is_recurring=True,
        renewal_period_days=30,
        tier_rank=2,
        price_sats_override=40_000,
    )
    await create_code(
        server,
        code="HALF",
        kind="percent",
        amount=5_000,
        product_slug="acme",
        policy_slugs=["monthly", "pro"],
    )
    await create_code(
        server,
        code="PROONLY",
        kind="percent",
        amount=1_000,
        product_slug="acme",
        policy_slug="pro",
    )
    bought = await purchase(server, "acme", policy_slug="monthly", code="HALF")
    await sandbox_action(server, bought["invoice_id"])
    clock.advance(timedelta(days=30))
    await server.admin_post("/v1/admin/jobs/renewals/run")
    renewal = (await server.admin_get("/v1/admin/invoices", kind="renewal")).json()["invoices"]
    await sandbox_action(server, renewal[0]["id"])
    key = (await server.client.get(f"/v1/purchase/{bought['invoice_id']}")).json()["license_key"]
    upgrade = await server.client.post(
        "/v1/upgrade", json={"license_key": key, "target_policy_slug": "pro"}
    )
    assert upgrade.status_code == 200, upgrade.text
    await sandbox_action(server, upgrade.json()["invoice_id"])
    return {"product": product, "monthly": monthly, "pro": pro}


async def test_force_deleting_a_product_with_sales_removes_everything(sandbox) -> None:  # type: ignore[no-untyped-def]
    sold = await sell_everything(sandbox)
    assert await rows(sandbox, SubscriptionCycle) == 2
    assert await rows(sandbox, TierChange) == 1
    safe = await sandbox.admin_delete(f"/v1/admin/products/{sold['product']['id']}")
    assert safe.status_code == 409

    response = await sandbox.admin_delete(
        f"/v1/admin/products/{sold['product']['id']}", force="true"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cascaded_licenses"] == 1 and body["cascaded_invoices"] == 3
    assert body["cascaded_redemptions"] == 1 and body["cascaded_subscriptions"] == 1
    assert body["cascaded_codes"] == 2 and body["cascaded_policies"] == 2
    for model in (
        License,
        Invoice,
        Subscription,
        SubscriptionCycle,
        TierChange,
        DiscountCode,
        DiscountRedemption,
    ):
        assert await rows(sandbox, model) == 0, model.__name__


async def test_deleting_a_policy_with_a_live_subscription(sandbox) -> None:  # type: ignore[no-untyped-def]
    sold = await sell_everything(sandbox)
    safe = await sandbox.admin_delete(f"/v1/admin/policies/{sold['pro']['id']}")
    assert safe.status_code == 409
    assert "1 active subscription(s)" in safe.json()["message"]

    response = await sandbox.admin_delete(f"/v1/admin/policies/{sold['pro']['id']}", force="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cascaded_subscriptions"] == 1 and body["cascaded_licenses"] == 1
    assert body["disabled_codes"] == 1
    async with sandbox.state.db.read() as session:
        codes = {
            code.code: code for code in (await session.execute(sa.select(DiscountCode))).scalars()
        }
    # Narrowed, never widened: HALF keeps the monthly tier; PROONLY had only pro.
    assert codes["HALF"].applies_to_policy_ids == [sold["monthly"]["id"]]
    assert codes["HALF"].active is True
    assert codes["PROONLY"].applies_to_policy_ids == [] and codes["PROONLY"].active is False
    assert await rows(sandbox, TierChange) == 0
    assert await rows(sandbox, Subscription) == 0
