"""Discount codes on POST /v1/purchase (billing.md 2.3-2.7, 12.2, 12.5 J1-J2, 12.6 K2;
public-api.md 1.11, 4.3, 6.1): the worked examples, featured precedence, the tier list's
featured_discount, code checks in order, slot reservation and the redemption lifecycle."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from fakes.btcpay import FakeBTCPay
from keysat.billing import discounts
from keysat.billing.models import DiscountCode, DiscountRedemption, Invoice
from keysat.clock import clock
from keysat.payments.provider import Snapshot, SnapshotStatus
from support import (
    ADMIN,
    assert_error,
    audit_rows,
    connect_btcpay_row,
    create_policy,
    create_product,
    events,
    invoice_row,
    licenses_for_invoice,
    poll,
    purchase,
    sandbox_action,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CODES = "/v1/admin/discount-codes"
RESERVATION_FAILED = "bad request: discount code is invalid, expired, or has no remaining uses"
PAID_KEYS = {
    "invoice_id",
    "btcpay_invoice_id",
    "checkout_url",
    "amount_sats",
    "base_price_sats",
    "discount_applied_sats",
    "poll_url",
}
FREE_KEYS = PAID_KEYS | {"license_key", "license_id"}
FEATURED_KEYS = {
    "code",
    "kind",
    "amount",
    "description",
    "expires_at",
    "max_uses",
    "used_count",
    "remaining_uses",
    "discount_applied_sats",
    "discounted_price_sats",
}


async def create_code(
    server: Any, code: str, kind: str = "percent", amount: int = 1000, **fields: Any
) -> dict[str, Any]:
    response = await server.admin_post(
        CODES, {"code": code, "kind": kind, "amount": amount, **fields}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def set_active(server: Any, code_id: str, active: bool) -> None:
    response = await server.admin_patch(f"{CODES}/{code_id}/active", {"active": active})
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


async def redemptions(server: Any) -> list[DiscountRedemption]:
    async with server.state.db.read() as session:
        query = sa.select(DiscountRedemption).order_by(DiscountRedemption.created_at)
        return list((await session.execute(query)).scalars())


async def redemption_of(server: Any, invoice_id: str) -> DiscountRedemption:
    async with server.state.db.read() as session:
        query = sa.select(DiscountRedemption).where(DiscountRedemption.invoice_id == invoice_id)
        row = (await session.execute(query)).scalar_one_or_none()
    assert row is not None
    return row


async def invoice_count(server: Any) -> int:
    async with server.state.db.read() as session:
        query = sa.select(sa.func.count()).select_from(Invoice)
        return int((await session.execute(query)).scalar_one())


async def buy(server: Any, product: str = "acme", **fields: Any) -> Any:
    return await server.client.post("/v1/purchase", json={"product": product, **fields})


async def pin_usd(server: Any, units: str = "50000") -> None:
    response = await server.client.put(
        "/v1/admin/rates/pins/USD", json={"units_per_btc": units}, headers=ADMIN
    )
    assert response.status_code == 200, response.text


async def run_reaper(server: Any) -> dict[str, Any]:
    response = await server.admin_post("/v1/admin/jobs/redemption_reaper/run")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["name"] == "redemption_reaper"
    assert body["last_status"] == "ok"
    return body


def assert_paid(answer: dict[str, Any], base: int, discount: int) -> None:
    assert set(answer) == PAID_KEYS
    assert answer["amount_sats"] == base - discount
    assert answer["base_price_sats"] == base
    assert answer["discount_applied_sats"] == discount
    assert answer["btcpay_invoice_id"].startswith("sbx_")
    assert answer["checkout_url"].endswith(f"/sandbox/checkout/{answer['btcpay_invoice_id']}")
    assert answer["poll_url"] == f"http://keysat.test/v1/purchase/{answer['invoice_id']}"


def assert_free(answer: dict[str, Any], base: int, discount: int) -> None:
    assert set(answer) == FREE_KEYS
    assert answer["amount_sats"] == 0
    assert answer["base_price_sats"] == base
    assert answer["discount_applied_sats"] == discount
    assert answer["checkout_url"] == ""
    assert answer["btcpay_invoice_id"] == f"free-{answer['invoice_id']}"
    assert answer["poll_url"] == f"http://keysat.test/v1/purchase/{answer['invoice_id']}"
    assert answer["license_key"] and answer["license_id"]


# --- worked examples C1-C10 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "kind", "amount", "discount"),
    [
        pytest.param(50_000, "percent", 2_500, 12_500, id="C1"),
        pytest.param(10_001, "percent", 3_333, 3_333, id="C2"),
        pytest.param(50_000, "fixed_sats", 20_000, 20_000, id="C4"),
        pytest.param(50_000, "set_price", 30_000, 20_000, id="C6"),
        pytest.param(50_000, "set_price", 60_000, 0, id="C7"),
    ],
)
async def test_paid_examples(
    sandbox: Any, base: int, kind: str, amount: int, discount: int
) -> None:
    product = await create_product(sandbox, price_sats=base)
    code = await create_code(sandbox, "EXAMPLE", kind, amount)
    answer = await purchase(sandbox, code="example")
    assert_paid(answer, base, discount)
    invoice = await invoice_row(sandbox, answer["invoice_id"])
    assert (invoice.status, invoice.kind, invoice.provider_kind) == (
        "pending",
        "purchase",
        "sandbox",
    )
    assert (invoice.amount_sats, invoice.base_price_sats, invoice.discount_applied_sats) == (
        base - discount,
        base,
        discount,
    )
    assert invoice.provider_invoice_id == answer["btcpay_invoice_id"]
    assert invoice.listed_currency is None and invoice.exchange_rate_centibps is None
    # the code is consumed even when it lowers nothing (C7)
    pending = await redemption_of(sandbox, answer["invoice_id"])
    assert (pending.status, pending.code_id, pending.license_id) == ("pending", code["id"], None)
    assert (pending.base_price_sats, pending.discount_applied_sats, pending.final_price_sats) == (
        base,
        discount,
        base - discount,
    )
    assert await used(sandbox, code["id"]) == 1
    assert await licenses_for_invoice(sandbox, answer["invoice_id"]) == []
    # no event and no audit row when a purchase starts
    assert await events(sandbox, "code.redeemed") == []
    assert await audit_rows(sandbox, "code.redeemed") == []
    await sandbox_action(sandbox, answer["invoice_id"], "pay")
    [issued] = await licenses_for_invoice(sandbox, answer["invoice_id"])
    redeemed = await redemption_of(sandbox, answer["invoice_id"])
    assert (redeemed.status, redeemed.license_id) == ("redeemed", issued.id)
    assert await used(sandbox, code["id"]) == 1
    [event] = await events(sandbox, "code.redeemed")
    assert event["data"] == {
        "redemption_id": redeemed.id,
        "code_id": code["id"],
        "code": "EXAMPLE",
        "license_id": issued.id,
        "product_id": product["id"],
        "invoice_id": answer["invoice_id"],
        "discount_applied_sats": discount,
        "base_price_sats": base,
        "final_price_sats": base - discount,
    }
    [audit] = await audit_rows(sandbox, "code.redeemed")
    assert (audit.actor_kind, audit.target_kind, audit.target_id) == (
        "system",
        "discount_code",
        code["id"],
    )
    assert audit.details == {
        "redemption_id": redeemed.id,
        "invoice_id": answer["invoice_id"],
        "license_id": issued.id,
        "discount_applied_sats": discount,
        "base_price_sats": base,
        "final_price_sats": base - discount,
    }
    polled = await poll(sandbox, answer["invoice_id"])
    assert polled["status"] == "settled" and polled["license_id"] == issued.id
    assert polled["amount_sats"] == base - discount


@pytest.mark.parametrize(
    ("kind", "amount"),
    [pytest.param("percent", 10_000, id="C3"), pytest.param("fixed_sats", 60_000, id="C5")],
)
async def test_discount_to_zero_examples(sandbox: Any, kind: str, amount: int) -> None:
    product = await create_product(sandbox, price_sats=50_000)
    code = await create_code(sandbox, "ALLOFF", kind, amount)
    answer = await purchase(sandbox, code="AllOff", buyer_email="buyer@example.com")
    assert_free(answer, 50_000, 50_000)
    invoice = await invoice_row(sandbox, answer["invoice_id"])
    assert (invoice.status, invoice.provider_kind, invoice.amount_sats) == ("settled", "none", 0)
    assert (invoice.base_price_sats, invoice.discount_applied_sats) == (50_000, 50_000)
    assert invoice.provider_invoice_id == f"free-{invoice.id}"
    assert invoice.checkout_url == "" and invoice.payment_provider_id is None
    assert invoice.settled_at is not None
    [issued] = await licenses_for_invoice(sandbox, answer["invoice_id"])
    assert issued.id == answer["license_id"]
    assert issued.buyer_email == "buyer@example.com"
    row = await redemption_of(sandbox, answer["invoice_id"])
    assert (row.status, row.license_id) == ("redeemed", issued.id)
    assert (row.base_price_sats, row.discount_applied_sats, row.final_price_sats) == (
        50_000,
        50_000,
        0,
    )
    assert await used(sandbox, code["id"]) == 1
    [event] = await events(sandbox, "code.redeemed")
    assert event["data"]["redemption_id"] == row.id
    assert event["data"]["product_id"] == product["id"]
    assert (event["data"]["discount_applied_sats"], event["data"]["final_price_sats"]) == (
        50_000,
        0,
    )
    [issued_event] = await events(sandbox, "license.issued")
    assert issued_event["data"]["source"] == "purchase"
    assert issued_event["data"]["invoice_id"] == answer["invoice_id"]
    assert len(await audit_rows(sandbox, "code.redeemed")) == 1
    assert (await poll(sandbox, answer["invoice_id"]))["license_key"] == answer["license_key"]


async def test_c8_fixed_amount_in_usd_is_converted_at_the_same_rate(sandbox: Any) -> None:
    await pin_usd(sandbox)
    await create_product(sandbox, price_sats=None, price_currency="USD", price_value=2_500)
    code = await create_code(sandbox, "FIVEUSD", "fixed_sats", 500, discount_currency="USD")
    answer = await purchase(sandbox, code="FIVEUSD")
    assert_paid(answer, 50_000, 10_000)
    assert answer["amount_sats"] == 40_000
    invoice = await invoice_row(sandbox, answer["invoice_id"])
    assert (invoice.listed_currency, invoice.listed_value) == ("USD", 2_500)
    assert (invoice.exchange_rate_centibps, invoice.exchange_rate_source) == (
        500_000_000,
        "manual_pin",
    )
    row = await redemption_of(sandbox, answer["invoice_id"])
    assert (row.base_price_sats, row.discount_applied_sats, row.final_price_sats) == (
        50_000,
        10_000,
        40_000,
    )
    assert await used(sandbox, code["id"]) == 1


async def test_c9_percent_on_a_usd_product(sandbox: Any) -> None:
    await pin_usd(sandbox)
    await create_product(sandbox, price_sats=None, price_currency="USD", price_value=4_900)
    await create_code(sandbox, "LAUNCH50", "percent", 5_000)
    answer = await purchase(sandbox, code="launch50")
    assert_paid(answer, 98_000, 49_000)
    assert answer["amount_sats"] == 49_000


async def test_fiat_set_price_in_usd(sandbox: Any) -> None:
    await pin_usd(sandbox)
    await create_product(sandbox, price_sats=None, price_currency="USD", price_value=4_900)
    await create_code(sandbox, "FLAT25", "set_price", 2_500, discount_currency="USD")
    answer = await purchase(sandbox, code="FLAT25")
    assert_paid(answer, 98_000, 48_000)


@pytest.mark.parametrize(
    "typed",
    [None, "TYPED", "typed", "UNKNOWN-CODE", "DISABLED", "EXPIRED", "OTHERTIER"],
)
async def test_c10_free_tier_ignores_codes(sandbox: Any, typed: str | None) -> None:
    clock.freeze(T0)
    await create_product(sandbox, price_sats=50_000)
    free = await create_policy(sandbox, slug="free", price_sats_override=0)
    await create_policy(sandbox, slug="pro")
    codes = [
        await create_code(sandbox, "FEATURED", featured=True),
        await create_code(sandbox, "TYPED", "fixed_sats", 100, max_uses=1),
        await create_code(sandbox, "DISABLED"),
        await create_code(sandbox, "EXPIRED", expires_at="2026-03-01T11:00:00Z"),
        await create_code(sandbox, "OTHERTIER", product_slug="acme", policy_slug="pro"),
    ]
    await set_active(sandbox, codes[2]["id"], False)
    fields = {"code": typed} if typed is not None else {}
    answer = await purchase(sandbox, policy_slug="free", **fields)
    assert_free(answer, 0, 0)
    invoice = await invoice_row(sandbox, answer["invoice_id"])
    assert (invoice.status, invoice.policy_id, invoice.amount_sats) == ("settled", free["id"], 0)
    for code in codes:
        assert await used(sandbox, code["id"]) == 0
    assert await redemptions(sandbox) == []
    assert await events(sandbox, "code.redeemed") == []
    assert len(await events(sandbox, "license.issued")) == 1


# --- featured precedence (billing.md 2.5, 12.2) -----------------------------------------------


@pytest.fixture
async def shop(sandbox: Any) -> dict[str, Any]:
    """Product P (`suite`, 10 000 sats) with tiers basic, pro, team and featured codes
    created in the order G, R, S, B."""
    clock.freeze(T0)
    product = await create_product(sandbox, "suite", price_sats=10_000)
    tiers = {slug: await create_policy(sandbox, "suite", slug) for slug in ("basic", "pro", "team")}
    codes = {}
    for name, amount, scope in (
        ("G", 1_000, {}),
        ("R", 2_000, {"product_slug": "suite"}),
        ("S", 3_000, {"product_slug": "suite", "policy_slugs": ["pro"]}),
        ("B", 4_000, {"product_slug": "suite", "policy_slugs": ["basic"]}),
    ):
        codes[name] = await create_code(sandbox, name, "percent", amount, featured=True, **scope)
        clock.advance(timedelta(seconds=1))
    return {"server": sandbox, "product": product, "tiers": tiers, "codes": codes}


async def featured_code_of(server: Any, answer: dict[str, Any]) -> str | None:
    async with server.state.db.read() as session:
        query = (
            sa.select(DiscountCode.code)
            .join(DiscountRedemption, DiscountRedemption.code_id == DiscountCode.id)
            .where(DiscountRedemption.invoice_id == answer["invoice_id"])
        )
        return (await session.execute(query)).scalar_one_or_none()


async def tier_featured(server: Any, slug: str = "suite") -> dict[str, Any]:
    response = await server.client.get(f"/v1/products/{slug}/policies")
    assert response.status_code == 200, response.text
    return {tier["slug"]: tier["featured_discount"] for tier in response.json()["policies"]}


async def test_featured_precedence_example(shop: dict[str, Any]) -> None:
    server, codes = shop["server"], shop["codes"]
    expected = {"pro": ("S", 3_000), "basic": ("B", 4_000), "team": ("R", 2_000)}
    for tier, (name, discount) in expected.items():
        answer = await purchase(server, "suite", policy_slug=tier)
        assert_paid(answer, 10_000, discount)
        assert await featured_code_of(server, answer) == name
    # no policy_slug: the default policy (basic, first by name) resolves, so B applies
    default = await purchase(server, "suite")
    assert default["discount_applied_sats"] == 4_000
    assert await featured_code_of(server, default) == "B"
    assert (await invoice_row(server, default["invoice_id"])).policy_id == shop["tiers"]["basic"][
        "id"
    ]
    await set_active(server, codes["R"]["id"], False)
    fallback = await purchase(server, "suite", policy_slug="team")
    assert fallback["discount_applied_sats"] == 1_000
    assert await featured_code_of(server, fallback) == "G"
    assert {name: await used(server, code["id"]) for name, code in codes.items()} == {
        "G": 1,
        "R": 1,
        "S": 1,
        "B": 2,
    }


async def test_featured_precedence_on_the_tier_list(shop: dict[str, Any]) -> None:
    server, codes = shop["server"], shop["codes"]
    listed = await tier_featured(server)
    assert {slug: entry["code"] for slug, entry in listed.items()} == {
        "basic": "B",
        "pro": "S",
        "team": "R",
    }
    await set_active(server, codes["R"]["id"], False)
    assert (await tier_featured(server))["team"]["code"] == "G"
    await set_active(server, codes["G"]["id"], False)
    assert (await tier_featured(server))["team"] is None
    assert (await purchase(server, "suite", policy_slug="team"))["discount_applied_sats"] == 0


async def test_typed_code_beats_featured(shop: dict[str, Any]) -> None:
    server = shop["server"]
    typed = await create_code(server, "TYPED", "fixed_sats", 123)
    answer = await purchase(server, "suite", policy_slug="pro", code=" typed ")
    assert_paid(answer, 10_000, 123)
    assert await featured_code_of(server, answer) == "TYPED"
    assert await used(server, shop["codes"]["S"]["id"]) == 0
    assert await used(server, typed["id"]) == 1
    # another featured code typed by hand also beats the tier's featured code
    g = await purchase(server, "suite", policy_slug="pro", code="g")
    assert g["discount_applied_sats"] == 1_000
    # a blank code is no code: the featured code applies
    blank = await purchase(server, "suite", policy_slug="pro", code="   ")
    assert blank["discount_applied_sats"] == 3_000


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("NOPE", "bad request: unknown discount code"),
        ("OFF", "bad request: discount code is disabled"),
        ("OLD", "bad request: discount code has expired"),
        ("ELSEWHERE", "bad request: discount code does not apply to this product"),
        ("B", "bad request: discount code does not apply to the selected tier"),
        ("USEDUP", RESERVATION_FAILED),
    ],
)
async def test_invalid_typed_code_never_falls_back_to_featured(
    shop: dict[str, Any], typed: str, message: str
) -> None:
    server = shop["server"]
    await create_product(server, "elsewhere")
    await set_active(server, (await create_code(server, "OFF"))["id"], False)
    await create_code(server, "OLD", expires_at="2026-03-01T11:59:59Z")
    await create_code(server, "ELSEWHERE", product_slug="elsewhere")
    exhausted = await create_code(server, "USEDUP", max_uses=1)
    await set_used_count(server, exhausted["id"], 1)
    response = await buy(server, "suite", policy_slug="pro", code=typed)
    assert_error(response, 400, "bad_request", message)
    assert await invoice_count(server) == 0
    assert await used(server, shop["codes"]["S"]["id"]) == 0
    assert await redemptions(server) == []


async def test_featured_ties_go_to_the_earliest_then_the_smallest_id(sandbox: Any) -> None:
    clock.freeze(T0)
    await create_product(sandbox, price_sats=10_000)
    first = await create_code(
        sandbox, "FIRST", "fixed_sats", 100, featured=True, product_slug="acme"
    )
    clock.advance(timedelta(seconds=1))
    await create_code(sandbox, "SECOND", "fixed_sats", 200, featured=True, product_slug="acme")
    assert (await purchase(sandbox))["discount_applied_sats"] == 100
    await set_active(sandbox, first["id"], False)
    assert (await purchase(sandbox))["discount_applied_sats"] == 200
    await set_active(sandbox, first["id"], True)
    # equal created_at: the smallest id wins
    async with sandbox.state.db.write() as session:
        await session.execute(sa.update(DiscountCode).values(created_at=T0))
        rows = list((await session.execute(sa.select(DiscountCode))).scalars())
    winner = min(rows, key=lambda row: row.id)
    answer = await purchase(sandbox)
    assert answer["discount_applied_sats"] == winner.amount
    assert await featured_code_of(sandbox, answer) == winner.code


async def test_unusable_or_foreign_codes_are_never_featured(sandbox: Any) -> None:
    clock.freeze(T0)
    await create_product(sandbox, price_sats=10_000)
    await create_product(sandbox, "other")
    await create_code(sandbox, "NOTFEATURED", "fixed_sats", 900)
    await create_code(sandbox, "FOREIGN", "fixed_sats", 800, featured=True, product_slug="other")
    await create_code(
        sandbox, "SOONGONE", "fixed_sats", 700, featured=True, expires_at="2026-03-01T12:00:01Z"
    )
    exhausted = await create_code(sandbox, "FULL", "fixed_sats", 600, featured=True, max_uses=2)
    await set_used_count(sandbox, exhausted["id"], 2)
    off = await create_code(sandbox, "OFF", "fixed_sats", 500, featured=True)
    await set_active(sandbox, off["id"], False)
    clock.advance(timedelta(seconds=1))  # SOONGONE expires exactly now
    answer = await purchase(sandbox)
    assert answer["discount_applied_sats"] == 0
    assert await redemptions(sandbox) == []
    assert (await tier_featured(sandbox, "acme")) == {}
    response = await sandbox.client.get("/v1/products/acme/policies")
    assert response.json()["policies"] == []


async def test_policy_scoped_featured_code_needs_a_resolved_policy(sandbox: Any) -> None:
    await create_product(sandbox, price_sats=10_000)
    other = await create_product(sandbox, "other", price_sats=10_000)
    await create_policy(sandbox, "other", "pro")
    await create_code(
        sandbox, "TIER", "fixed_sats", 100, featured=True, product_slug="other", policy_slug="pro"
    )
    # acme has no policies at all: nothing resolves, the tier-scoped code never applies
    assert (await purchase(sandbox))["discount_applied_sats"] == 0
    assert (await purchase(sandbox, "other"))["discount_applied_sats"] == 100
    assert other["id"]


# --- featured_discount on the tier list (public-api.md 4.3) -------------------------------------


async def test_featured_discount_fields(sandbox: Any) -> None:
    clock.freeze(T0)
    await create_product(sandbox, price_sats=10_000)
    await create_policy(sandbox, slug="cheap", price_sats_override=4_000)
    await create_policy(sandbox, slug="plain")
    await create_code(
        sandbox,
        "LAUNCH",
        "percent",
        2_500,
        featured=True,
        max_uses=3,
        expires_at="2026-04-01T00:00:00Z",
        description="Launch week",
    )
    listed = await tier_featured(sandbox, "acme")
    assert set(listed["plain"]) == FEATURED_KEYS
    assert listed["plain"] == {
        "code": "LAUNCH",
        "kind": "percent",
        "amount": 2_500,
        "description": "Launch week",
        "expires_at": "2026-04-01T00:00:00.000000+00:00",
        "max_uses": 3,
        "used_count": 0,
        "remaining_uses": 3,
        "discount_applied_sats": 2_500,
        "discounted_price_sats": 7_500,
    }
    assert (listed["cheap"]["discount_applied_sats"], listed["cheap"]["discounted_price_sats"]) == (
        1_000,
        3_000,
    )
    # a pending redemption holds a use
    answer = await purchase(sandbox, policy_slug="plain")
    assert answer["amount_sats"] == 7_500
    after = (await tier_featured(sandbox, "acme"))["plain"]
    assert (after["used_count"], after["remaining_uses"]) == (1, 2)
    await sandbox_action(sandbox, answer["invoice_id"], "expire")
    assert (await tier_featured(sandbox, "acme"))["plain"]["remaining_uses"] == 3


@pytest.mark.parametrize(
    ("kind", "amount", "discount"),
    [("fixed_sats", 15_000, 10_000), ("set_price", 2_500, 7_500), ("set_price", 20_000, 0)],
)
async def test_featured_discount_never_below_zero(
    sandbox: Any, kind: str, amount: int, discount: int
) -> None:
    await create_product(sandbox, price_sats=10_000)
    await create_policy(sandbox, slug="plain")
    await create_code(sandbox, "FEAT", kind, amount, featured=True)
    entry = (await tier_featured(sandbox, "acme"))["plain"]
    assert (entry["max_uses"], entry["remaining_uses"], entry["description"]) == (None, None, None)
    assert entry["discount_applied_sats"] == discount
    assert entry["discounted_price_sats"] == 10_000 - discount


async def test_featured_discount_on_a_usd_product_is_in_cents(sandbox: Any) -> None:
    await pin_usd(sandbox)
    await create_product(sandbox, price_sats=None, price_currency="USD", price_value=2_500)
    await create_policy(sandbox, slug="plain")
    code = await create_code(sandbox, "SATSOFF", "fixed_sats", 10_000, featured=True)
    entry = (await tier_featured(sandbox, "acme"))["plain"]
    # 10 000 sats at 50 000 USD/BTC = 500 cents
    assert (entry["discount_applied_sats"], entry["discounted_price_sats"]) == (500, 2_000)
    assert entry["amount"] == 10_000
    await set_active(sandbox, code["id"], False)
    await create_code(
        sandbox, "USDFLAT", "set_price", 1_000, discount_currency="USD", featured=True
    )
    entry = (await tier_featured(sandbox, "acme"))["plain"]
    assert (entry["discount_applied_sats"], entry["discounted_price_sats"]) == (1_500, 1_000)
    # the purchase charges the same thing in sats: 1 000 cents = 20 000 sats
    answer = await purchase(sandbox, policy_slug="plain")
    assert_paid(answer, 50_000, 30_000)


async def test_featured_discount_without_a_rate_is_null(make_server: Callable[..., Any]) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_SOURCES="none")
    await create_product(server, price_sats=None, price_currency="USD", price_value=2_500)
    await create_policy(server, slug="plain")
    code = await create_code(server, "SATSOFF", "fixed_sats", 10_000, featured=True)
    response = await server.client.get("/v1/products/acme/policies")
    assert response.status_code == 200
    [tier] = response.json()["policies"]
    assert tier["featured_discount"] is None
    assert tier["price_sats"] == 2_500
    # a percent code needs no rate
    await set_active(server, code["id"], False)
    await create_code(server, "PCT", "percent", 1_000, featured=True)
    entry = (await tier_featured(server, "acme"))["plain"]
    assert (entry["discount_applied_sats"], entry["discounted_price_sats"]) == (250, 2_250)


# --- code checks on /v1/purchase ----------------------------------------------------------------


@pytest.fixture
async def checks(sandbox: Any) -> dict[str, Any]:
    clock.freeze(T0)
    await create_product(sandbox, price_sats=10_000)
    basic = await create_policy(sandbox, slug="basic")
    pro = await create_policy(sandbox, slug="pro")
    await create_product(sandbox, "other")
    await create_policy(sandbox, "other", "gold")
    return {"server": sandbox, "basic": basic, "pro": pro}


async def test_code_checks_run_in_the_documented_order(checks: dict[str, Any]) -> None:
    server = checks["server"]
    past = "2026-03-01T11:00:00Z"
    # each code fails every later check too
    everything = await create_code(
        server, "ALLBAD", product_slug="other", policy_slug="gold", expires_at=past, max_uses=1
    )
    await set_used_count(server, everything["id"], 1)
    await set_active(server, everything["id"], False)
    expired = await create_code(
        server, "EXPIREDBAD", product_slug="other", policy_slug="gold", expires_at=past, max_uses=1
    )
    await set_used_count(server, expired["id"], 1)
    product = await create_code(
        server, "PRODBAD", product_slug="other", policy_slug="gold", max_uses=1
    )
    await set_used_count(server, product["id"], 1)
    tier = await create_code(server, "TIERBAD", product_slug="acme", policy_slug="pro", max_uses=1)
    await set_used_count(server, tier["id"], 1)
    exhausted = await create_code(
        server, "FULLBAD", product_slug="acme", policy_slug="basic", max_uses=1
    )
    await set_used_count(server, exhausted["id"], 1)
    cases = [
        ("UNKNOWNBAD", "bad request: unknown discount code"),
        ("allbad", "bad request: discount code is disabled"),
        ("ExpiredBad", "bad request: discount code has expired"),
        ("PRODBAD", "bad request: discount code does not apply to this product"),
        ("TIERBAD", "bad request: discount code does not apply to the selected tier"),
        ("FULLBAD", RESERVATION_FAILED),
    ]
    for typed, message in cases:
        response = await buy(server, code=f"  {typed} ")
        assert_error(response, 400, "bad_request", message)
    # the tier check applies to the default policy (basic) too, and to an explicit one
    assert_error(
        await buy(server, policy_slug="basic", code="TIERBAD"),
        400,
        "bad_request",
        "bad request: discount code does not apply to the selected tier",
    )
    assert await invoice_count(server) == 0
    assert await redemptions(server) == []
    for code in (everything, expired, product, tier, exhausted):
        assert await used(server, code["id"]) == 1


async def test_expiry_boundary(checks: dict[str, Any]) -> None:
    server = checks["server"]
    code = await create_code(server, "EDGE", expires_at="2026-03-01T12:10:00Z")
    clock.advance(timedelta(minutes=10) - timedelta(microseconds=1))
    answer = await purchase(server, code="EDGE")
    assert answer["discount_applied_sats"] == 1_000
    clock.advance(timedelta(microseconds=1))
    assert_error(
        await buy(server, code="EDGE"), 400, "bad_request", "bad request: discount code has expired"
    )
    assert await used(server, code["id"]) == 1


async def test_fiat_code_without_a_rate_is_502_before_reservation(
    make_server: Callable[..., Any],
) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true", KEYSAT_RATE_SOURCES="none")
    await create_product(server, price_sats=10_000)
    await create_product(server, "other")
    usd = await create_code(
        server, "USDOFF", "fixed_sats", 100, discount_currency="USD", max_uses=1
    )
    await set_used_count(server, usd["id"], 1)  # reservation would fail too: 502 comes first
    response = await buy(server, code="USDOFF")
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["error"] == "upstream_error"
    assert body["message"].startswith("upstream error: rate fetch failed: ")
    # scope checks come before the rate
    await create_code(
        server, "USDOTHER", "set_price", 100, discount_currency="USD", product_slug="other"
    )
    assert_error(
        await buy(server, code="USDOTHER"),
        400,
        "bad_request",
        "bad request: discount code does not apply to this product",
    )
    # a USD percent code needs no rate
    await create_code(server, "USDPCT", "percent", 1_000, discount_currency="USD")
    assert (await purchase(server, code="USDPCT"))["discount_applied_sats"] == 1_000
    assert await used(server, usd["id"]) == 1


# --- reservation and the redemption lifecycle ----------------------------------------------------


async def test_k2_two_buyers_race_for_the_last_use(sandbox: Any) -> None:
    await create_product(sandbox, price_sats=10_000)
    code = await create_code(sandbox, "LAST", max_uses=1)
    responses = await asyncio.gather(
        buy(sandbox, code="LAST", buyer_email="a@example.com"),
        buy(sandbox, code="LAST", buyer_email="b@example.com"),
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200, 400], [r.text for r in responses]
    [loser] = [r for r in responses if r.status_code == 400]
    assert_error(loser, 400, "bad_request", RESERVATION_FAILED)
    [winner] = [r for r in responses if r.status_code == 200]
    assert winner.json()["discount_applied_sats"] == 1_000
    assert await used(sandbox, code["id"]) == 1
    assert await invoice_count(sandbox) == 1
    [row] = await redemptions(sandbox)
    assert row.invoice_id == winner.json()["invoice_id"]


async def test_k2_race_on_the_free_path(sandbox: Any) -> None:
    await create_product(sandbox, price_sats=10_000)
    code = await create_code(sandbox, "GRATIS", "percent", 10_000, max_uses=1)
    responses = await asyncio.gather(*(buy(sandbox, code="GRATIS") for _ in range(3)))
    assert sorted(r.status_code for r in responses) == [200, 400, 400]
    for response in responses:
        if response.status_code == 400:
            assert_error(response, 400, "bad_request", RESERVATION_FAILED)
    assert await used(sandbox, code["id"]) == 1
    assert len(await events(sandbox, "license.issued")) == 1
    assert len(await events(sandbox, "code.redeemed")) == 1
    assert await invoice_count(sandbox) == 1


@pytest.mark.parametrize("action", ["expire", "invalidate"])
async def test_expired_or_invalid_invoice_gives_the_slot_back(sandbox: Any, action: str) -> None:
    await create_product(sandbox, price_sats=10_000)
    code = await create_code(sandbox, "ONCE", max_uses=1)
    answer = await purchase(sandbox, code="ONCE")
    assert await used(sandbox, code["id"]) == 1
    assert_error(await buy(sandbox, code="ONCE"), 400, "bad_request", RESERVATION_FAILED)
    await sandbox_action(sandbox, answer["invoice_id"], action)
    row = await redemption_of(sandbox, answer["invoice_id"])
    assert (row.status, row.license_id) == ("cancelled", None)
    assert await used(sandbox, code["id"]) == 0
    assert await events(sandbox, "code.redeemed") == []
    assert await audit_rows(sandbox, "code.redeemed") == []
    # the slot is free again
    again = await purchase(sandbox, code="ONCE")
    assert again["discount_applied_sats"] == 1_000
    assert await used(sandbox, code["id"]) == 1


async def test_late_settlement_after_cancel_counts_the_use_again(sandbox: Any) -> None:
    await create_product(sandbox, price_sats=10_000)
    code = await create_code(sandbox, "LATE", max_uses=1)
    answer = await purchase(sandbox, code="LATE")
    await sandbox_action(sandbox, answer["invoice_id"], "expire")
    assert await used(sandbox, code["id"]) == 0
    # another buyer takes the freed use meanwhile
    other = await purchase(sandbox, code="LATE")
    assert await used(sandbox, code["id"]) == 1
    await sandbox_action(sandbox, answer["invoice_id"], "pay")
    [issued] = await licenses_for_invoice(sandbox, answer["invoice_id"])
    row = await redemption_of(sandbox, answer["invoice_id"])
    assert (row.status, row.license_id) == ("redeemed", issued.id)
    # billing.md 2.6: incremented again without the cap check (the buyer paid)
    assert await used(sandbox, code["id"]) == 2
    [event] = await events(sandbox, "code.redeemed")
    assert event["data"]["invoice_id"] == answer["invoice_id"]
    assert (await redemption_of(sandbox, other["invoice_id"])).status == "pending"


async def test_settling_twice_redeems_once(sandbox: Any) -> None:
    await create_product(sandbox, price_sats=10_000)
    code = await create_code(sandbox, "TWICE")
    answer = await purchase(sandbox, code="TWICE")
    await sandbox_action(sandbox, answer["invoice_id"], "pay")
    await sandbox_action(sandbox, answer["invoice_id"], "pay")  # a no-op repeat
    outcome = await sandbox.state.settlement.confirm(answer["invoice_id"])
    assert outcome is not None and (outcome.status, outcome.changed) == ("settled", False)
    assert len(await licenses_for_invoice(sandbox, answer["invoice_id"])) == 1
    assert len(await events(sandbox, "code.redeemed")) == 1
    assert len(await audit_rows(sandbox, "code.redeemed")) == 1
    assert await used(sandbox, code["id"]) == 1


async def test_no_provider_releases_the_slot(server: Any) -> None:
    await create_product(server, price_sats=10_000)
    typed = await create_code(server, "TYPED", max_uses=1)
    featured = await create_code(server, "FEAT", "fixed_sats", 10, featured=True, max_uses=1)
    for fields in ({"code": "TYPED"}, {}):
        response = await buy(server, **fields)
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "btcpay_not_configured"
    assert await used(server, typed["id"]) == 0
    assert await used(server, featured["id"]) == 0
    assert await invoice_count(server) == 0
    assert await redemptions(server) == []


async def test_create_invoice_failure_releases_the_slot(
    make_server: Callable[..., Any], fake_btcpay: FakeBTCPay
) -> None:
    server = await make_server()
    await connect_btcpay_row(server, fake_btcpay, network="mainnet")
    await create_product(server, price_sats=10_000)
    code = await create_code(server, "FLAKY", max_uses=1)
    fake_btcpay.fail_next("POST", r"^/api/v1/stores/[^/]+/invoices$", status=500)
    response = await buy(server, code="FLAKY")
    assert response.status_code == 502, response.text
    assert response.json()["error"] == "upstream_error"
    assert response.json()["message"].startswith(
        "upstream error: payment provider create-invoice failed"
    )
    assert await used(server, code["id"]) == 0
    assert await invoice_count(server) == 0
    # the slot is usable again
    answer = await purchase(server, code="FLAKY")
    assert answer["discount_applied_sats"] == 1_000
    assert await used(server, code["id"]) == 1
    assert (await redemption_of(server, answer["invoice_id"])).status == "pending"


# --- the reaper (J1, J2) --------------------------------------------------------------------------


async def test_j1_j2_reaper_then_late_settlement(sandbox: Any) -> None:
    clock.freeze(T0)
    await create_product(sandbox, price_sats=10_000)
    code = await create_code(sandbox, "REAP")
    await set_used_count(sandbox, code["id"], 2)
    answer = await purchase(sandbox, code="REAP")
    assert await used(sandbox, code["id"]) == 3
    row = await redemption_of(sandbox, answer["invoice_id"])
    assert row.created_at == T0
    clock.advance(timedelta(minutes=29, seconds=59))
    await run_reaper(sandbox)
    assert (await redemption_of(sandbox, answer["invoice_id"])).status == "pending"
    assert await used(sandbox, code["id"]) == 3
    clock.advance(timedelta(seconds=1))  # 12:30:00
    await run_reaper(sandbox)
    cancelled = await redemption_of(sandbox, answer["invoice_id"])
    assert cancelled.status == "cancelled"
    assert await used(sandbox, code["id"]) == 2
    assert (await invoice_row(sandbox, answer["invoice_id"])).status == "pending"
    # a second tick changes nothing
    await run_reaper(sandbox)
    assert await used(sandbox, code["id"]) == 2
    # J2: the invoice is confirmed settled at 12:40
    clock.advance(timedelta(minutes=10))
    await sandbox_action(sandbox, answer["invoice_id"], "pay")
    [issued] = await licenses_for_invoice(sandbox, answer["invoice_id"])
    redeemed = await redemption_of(sandbox, answer["invoice_id"])
    assert (redeemed.status, redeemed.license_id) == ("redeemed", issued.id)
    assert await used(sandbox, code["id"]) == 3
    [event] = await events(sandbox, "code.redeemed")
    assert event["data"]["redemption_id"] == redeemed.id
    assert event["timestamp"] == "2026-03-01T12:40:00.000000+00:00"
    assert len(await audit_rows(sandbox, "code.redeemed")) == 1
    await run_reaper(sandbox)
    assert (await redemption_of(sandbox, answer["invoice_id"])).status == "redeemed"
    assert await used(sandbox, code["id"]) == 3
    assert len(await audit_rows(sandbox, "job.run")) == 4


async def test_reaper_cancels_pending_redemptions_of_dead_invoices_at_once(sandbox: Any) -> None:
    clock.freeze(T0)
    await create_product(sandbox, price_sats=10_000)
    code = await create_code(sandbox, "DEAD")
    expired = await purchase(sandbox, code="DEAD")
    invalid = await purchase(sandbox, code="DEAD")
    alive = await purchase(sandbox, code="DEAD")
    settled = await purchase(sandbox, code="DEAD")
    await sandbox_action(sandbox, settled["invoice_id"], "pay")
    # invoices that died without their redemption being cancelled (e.g. an older process)
    async with sandbox.state.db.write() as session:
        for answer, status in ((expired, "expired"), (invalid, "invalid")):
            await session.execute(
                sa.update(Invoice).where(Invoice.id == answer["invoice_id"]).values(status=status)
            )
    assert await used(sandbox, code["id"]) == 4
    clock.advance(timedelta(minutes=1))
    await run_reaper(sandbox)
    statuses = {
        name: (await redemption_of(sandbox, answer["invoice_id"])).status
        for name, answer in (
            ("expired", expired),
            ("invalid", invalid),
            ("alive", alive),
            ("settled", settled),
        )
    }
    assert statuses == {
        "expired": "cancelled",
        "invalid": "cancelled",
        "alive": "pending",
        "settled": "redeemed",
    }
    assert await used(sandbox, code["id"]) == 2


# --- races on PostgreSQL (SQLite serialises every writer, so they cannot happen there) ----------

ON_POSTGRES = bool(os.environ.get("KEYSAT_TEST_DATABASE_URL"))


async def lock_waiters(server: Any) -> int:
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    async with server.state.db.read() as session:
        return int((await session.execute(query)).scalar_one())


async def while_a_transaction_holds(
    server: Any,
    hold: Callable[[AsyncSession], Awaitable[Any]],
    contender: Callable[[], Awaitable[Any]],
) -> Any:
    """Run `hold` in a write transaction and keep it open until `contender` waits for one of
    its row locks; then commit it and let the contender finish."""
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with server.state.db.write() as session:
            await hold(session)
            held.set()
            await release.wait()

    holding = asyncio.create_task(holder())
    await held.wait()
    contending = asyncio.create_task(contender())
    while not contending.done() and await lock_waiters(server) == 0:
        pass
    release.set()
    await holding
    return await contending


def settle(server: Any, invoice_id: str) -> Callable[[], Awaitable[Any]]:
    snapshot = Snapshot(status=SnapshotStatus.SETTLED, amount=None)
    return lambda: server.state.settlement.apply(invoice_id, snapshot)


@pytest.mark.skipif(not ON_POSTGRES, reason="needs concurrent writers (PostgreSQL)")
async def test_late_settlement_never_loses_a_concurrent_reservation(sandbox: Any) -> None:
    await create_product(sandbox, price_sats=10_000)
    code = await create_code(sandbox, "RACE")
    late = await purchase(sandbox, code="RACE")
    await sandbox_action(sandbox, late["invoice_id"], "expire")
    assert await used(sandbox, code["id"]) == 0

    async def reserve(session: AsyncSession) -> None:
        assert await discounts.reserve(session, code["id"])

    outcome = await while_a_transaction_holds(sandbox, reserve, settle(sandbox, late["invoice_id"]))
    assert outcome.changed and outcome.status == "settled"
    assert (await redemption_of(sandbox, late["invoice_id"])).status == "redeemed"
    # one use for the concurrent reservation, one taken back by the late settlement
    assert await used(sandbox, code["id"]) == 2


@pytest.mark.skipif(not ON_POSTGRES, reason="needs concurrent writers (PostgreSQL)")
async def test_settlement_racing_the_reaper_keeps_the_use(sandbox: Any) -> None:
    await create_product(sandbox, price_sats=10_000)
    code = await create_code(sandbox, "REAPRACE")
    answer = await purchase(sandbox, code="REAPRACE")
    assert await used(sandbox, code["id"]) == 1

    async def reap(session: AsyncSession) -> None:
        assert await discounts.cancel_pending(session, answer["invoice_id"])

    outcome = await while_a_transaction_holds(sandbox, reap, settle(sandbox, answer["invoice_id"]))
    assert outcome.changed
    [issued] = await licenses_for_invoice(sandbox, answer["invoice_id"])
    row = await redemption_of(sandbox, answer["invoice_id"])
    assert (row.status, row.license_id) == ("redeemed", issued.id)
    # the reaper gave the use back, the settlement took it again: the paid use counts
    assert await used(sandbox, code["id"]) == 1
    assert len(await events(sandbox, "code.redeemed")) == 1
