"""Discount-code administration (admin-api.md 7, 21.4) and the active-code cap (access.md
9.2-9.3): create, list, get, patch, the active toggle, delete, audit rows and credentials."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from keysat.billing.models import DiscountCode
from keysat.clock import clock
from support import (
    ADMIN,
    ADMIN_KEY,
    assert_error,
    audit_rows,
    create_policy,
    create_product,
    purchase,
    sandbox_action,
)

CODE_KEYS = {
    "id",
    "code",
    "kind",
    "amount",
    "discount_currency",
    "max_uses",
    "used_count",
    "expires_at",
    "applies_to_product_id",
    "applies_to_policy_id",
    "applies_to_policy_ids",
    "referrer_label",
    "description",
    "active",
    "featured",
    "created_at",
    "updated_at",
}
REDEMPTION_KEYS = {
    "id",
    "code_id",
    "invoice_id",
    "license_id",
    "status",
    "discount_applied_sats",
    "base_price_sats",
    "final_price_sats",
    "created_at",
    "updated_at",
}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T0_TEXT = "2026-03-01T12:00:00.000000+00:00"
UPGRADE_URL = "https://licensing.keysat.xyz/buy/keysat?policy=pro"
CODES = "/v1/admin/discount-codes"


async def post_code(server: Any, code: str = "SAVE10", **fields: Any) -> Any:
    body = {"code": code, "kind": fields.pop("kind", "percent"), "amount": 1000, **fields}
    return await server.admin_post(CODES, body)


async def create_code(server: Any, code: str = "SAVE10", **fields: Any) -> dict[str, Any]:
    response = await post_code(server, code, **fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def code_row(server: Any, code_id: str) -> DiscountCode | None:
    async with server.state.db.read() as session:
        return await session.get(DiscountCode, code_id)


async def code_count(server: Any) -> int:
    async with server.state.db.read() as session:
        query = sa.select(sa.func.count()).select_from(DiscountCode)
        return int((await session.execute(query)).scalar_one())


async def set_used_count(server: Any, code_id: str, used: int) -> None:
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(DiscountCode).where(DiscountCode.id == code_id).values(used_count=used)
        )


@pytest.fixture
async def acme(server: Any) -> dict[str, Any]:
    product = await create_product(server)
    basic = await create_policy(server, slug="basic")
    pro = await create_policy(server, slug="pro")
    return {"product": product, "basic": basic, "pro": pro}


# --- create ---------------------------------------------------------------------------------


async def test_create_with_every_field_returns_the_code_json_and_audits(
    server: Any, acme: dict[str, Any]
) -> None:
    clock.freeze(T0)
    response = await post_code(
        server,
        "  launch-50_x ",
        kind="fixed_sats",
        amount=500,
        discount_currency=" usd ",
        max_uses=5,
        expires_at="2030-01-02T03:04:05+02:00",
        product_slug="acme",
        policy_slugs=["pro", "basic", "pro"],
        referrer_label="newsletter",
        description="spring launch",
        featured=True,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == CODE_KEYS
    assert body == {
        "id": body["id"],
        "code": "LAUNCH-50_X",
        "kind": "fixed_sats",
        "amount": 500,
        "discount_currency": "USD",
        "max_uses": 5,
        "used_count": 0,
        "expires_at": "2030-01-02T01:04:05.000000+00:00",
        "applies_to_product_id": acme["product"]["id"],
        "applies_to_policy_id": None,
        "applies_to_policy_ids": [acme["pro"]["id"], acme["basic"]["id"]],
        "referrer_label": "newsletter",
        "description": "spring launch",
        "active": True,
        "featured": True,
        "created_at": T0_TEXT,
        "updated_at": T0_TEXT,
    }
    row = await code_row(server, body["id"])
    assert row is not None
    assert (row.code, row.used_count, row.active) == ("LAUNCH-50_X", 0, True)
    [audit] = await audit_rows(server, "discount_code.create")
    assert (audit.actor_kind, audit.target_kind, audit.target_id) == (
        "admin_api_key",
        "discount_code",
        body["id"],
    )
    assert audit.details == {
        "code": "LAUNCH-50_X",
        "kind": "fixed_sats",
        "amount": 500,
        "max_uses": 5,
        "expires_at": "2030-01-02T01:04:05.000000+00:00",
        "product_id": acme["product"]["id"],
        "policy_id": None,
        "referrer_label": "newsletter",
    }
    # GET answers the same JSON
    fetched = await server.admin_get(f"{CODES}/{body['id']}")
    assert fetched.json() == {"code": body, "redemptions": []}


async def test_create_applies_defaults(server: Any) -> None:
    clock.freeze(T0)
    body = await create_code(server, "plain", kind="set_price", amount=700)
    assert body == {
        "id": body["id"],
        "code": "PLAIN",
        "kind": "set_price",
        "amount": 700,
        "discount_currency": "SAT",
        "max_uses": None,
        "used_count": 0,
        "expires_at": None,
        "applies_to_product_id": None,
        "applies_to_policy_id": None,
        "applies_to_policy_ids": [],
        "referrer_label": None,
        "description": "",
        "active": True,
        "featured": False,
        "created_at": T0_TEXT,
        "updated_at": T0_TEXT,
    }
    [audit] = await audit_rows(server, "discount_code.create")
    assert audit.details == {
        "code": "PLAIN",
        "kind": "set_price",
        "amount": 700,
        "max_uses": None,
        "expires_at": None,
        "product_id": None,
        "policy_id": None,
        "referrer_label": None,
    }


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        ({"policy_slug": "pro"}, ["pro"]),
        ({"policy_slugs": ["pro"]}, ["pro"]),
        ({"policy_slugs": ["pro", "pro"]}, ["pro"]),
        ({"policy_slug": "basic", "policy_slugs": ["pro"]}, ["pro"]),
        ({"policy_slug": "basic", "policy_slugs": []}, []),
        ({"policy_slugs": []}, []),
        ({}, []),
        ({"policy_slugs": ["basic", "pro"]}, ["basic", "pro"]),
    ],
)
async def test_policy_scope_is_normalized(
    server: Any, acme: dict[str, Any], scope: dict[str, Any], expected: list[str]
) -> None:
    body = await create_code(server, product_slug="acme", **scope)
    ids = [acme[slug]["id"] for slug in expected]
    assert body["applies_to_product_id"] == acme["product"]["id"]
    assert body["applies_to_policy_ids"] == ids
    assert body["applies_to_policy_id"] == (ids[0] if len(ids) == 1 else None)
    [audit] = await audit_rows(server, "discount_code.create")
    assert audit.details["policy_id"] == (ids[0] if len(ids) == 1 else None)
    listed = (await server.admin_get(CODES)).json()["codes"]
    assert listed == [body]


@pytest.mark.parametrize(
    ("fields", "status", "error", "message"),
    [
        # 404 unknown product comes before every body check
        (
            {
                "product_slug": "nope",
                "policy_slugs": ["x"],
                "discount_currency": "GBP",
                "code": "bad code",
                "kind": "bogus",
                "amount": -1,
                "max_uses": 0,
                "expires_at": "soon",
            },
            404,
            "not_found",
            "not found: product 'nope'",
        ),
        (
            {"policy_slugs": ["pro"], "discount_currency": "GBP", "code": "bad code"},
            400,
            "bad_request",
            "bad request: policy_slugs requires product_slug",
        ),
        (
            {"policy_slug": "pro", "discount_currency": "GBP", "code": "bad code"},
            400,
            "bad_request",
            "bad request: policy_slug requires product_slug",
        ),
        (
            {
                "product_slug": "acme",
                "policy_slugs": ["pro", "gold"],
                "discount_currency": "GBP",
                "code": "bad code",
            },
            404,
            "not_found",
            "not found: policy 'gold' for product 'acme'",
        ),
        (
            {"product_slug": "acme", "policy_slug": "gold", "code": "bad code"},
            404,
            "not_found",
            "not found: policy 'gold' for product 'acme'",
        ),
    ],
)
async def test_create_checks_product_and_scope_first(
    server: Any,
    acme: dict[str, Any],
    fields: dict[str, Any],
    status: int,
    error: str,
    message: str,
) -> None:
    body = {"code": "OK1", "kind": "percent", "amount": 100, **fields}
    response = await server.admin_post(CODES, body)
    assert_error(response, status, error, message)
    assert await code_count(server) == 0
    assert await audit_rows(server, "discount_code.create") == []


async def test_currency_is_checked_before_the_code_and_defaults_to_sat(server: Any) -> None:
    bad = await post_code(server, "bad code", kind="bogus", discount_currency="GBP")
    assert_error(bad, 400, "bad_request")
    assert "discount_currency" in bad.json()["message"]
    assert (await create_code(server, "C1", discount_currency="")).get("discount_currency") == "SAT"
    assert (await create_code(server, "C2", discount_currency=None))["discount_currency"] == "SAT"
    assert (await create_code(server, "C3", discount_currency="eur"))["discount_currency"] == "EUR"
    assert (await create_code(server, "C4", discount_currency="Sat"))["discount_currency"] == "SAT"
    assert_error(await post_code(server, "C5", discount_currency="BTC"), 400, "bad_request")
    assert await code_count(server) == 4


@pytest.mark.parametrize("text", ["", "   ", "A" * 65, "bad code", "SAVE!", "ÄPFEL", "a.b"])
async def test_code_text_is_validated(server: Any, text: str) -> None:
    response = await post_code(server, text)
    assert_error(response, 400, "bad_request")
    assert await code_count(server) == 0


async def test_code_text_is_trimmed_and_upper_cased(server: Any) -> None:
    assert (await create_code(server, " ab-c_9 "))["code"] == "AB-C_9"
    assert (await create_code(server, "z" * 64))["code"] == "Z" * 64


async def test_code_is_checked_before_kind_and_kind_before_amount(server: Any) -> None:
    first = await post_code(server, "bad code", kind="bogus", amount=-5)
    assert_error(first, 400, "bad_request")
    assert "code" in first.json()["message"] and "kind" not in first.json()["message"]
    second = await post_code(server, "GOOD", kind="bogus", amount=-5)
    assert_error(second, 400, "bad_request")
    assert "kind" in second.json()["message"]
    third = await post_code(server, "GOOD", kind="percent", amount=-5)
    assert_error(third, 400, "bad_request")
    assert "amount" in third.json()["message"]


@pytest.mark.parametrize(
    ("kind", "amount", "stored"),
    [
        ("percent", 0, 0),
        ("percent", 10_000, 10_000),
        ("percent", 10_001, None),
        ("percent", -1, None),
        ("fixed_sats", 1, 1),
        ("fixed_sats", 0, None),
        ("fixed_sats", -10, None),
        ("set_price", 1, 1),
        ("set_price", 0, None),
        ("free_license", 500, 0),
        ("free_license", 0, 0),
        ("free_license", -3, 0),
    ],
)
async def test_amount_rule_per_kind(
    server: Any, kind: str, amount: int, stored: int | None
) -> None:
    response = await post_code(server, "AMT", kind=kind, amount=amount)
    if stored is None:
        assert_error(response, 400, "bad_request")
        assert await code_count(server) == 0
        return
    assert response.status_code == 200, response.text
    assert response.json()["amount"] == stored
    row = await code_row(server, response.json()["id"])
    assert row is not None and row.amount == stored
    [audit] = await audit_rows(server, "discount_code.create")
    assert audit.details["amount"] == stored


@pytest.mark.parametrize("kind", ["PERCENT", "percentage", "", "free"])
async def test_unknown_kind_is_refused(server: Any, kind: str) -> None:
    assert_error(await post_code(server, kind=kind), 400, "bad_request")


@pytest.mark.parametrize("max_uses", [0, -1, 2**31, 2**63 - 1])
async def test_max_uses_must_be_positive_and_fit_the_column(server: Any, max_uses: int) -> None:
    assert_error(await post_code(server, max_uses=max_uses), 400, "bad_request")
    assert await code_count(server) == 0
    assert (await create_code(server, "ONE", max_uses=1))["max_uses"] == 1
    assert (await create_code(server, "MAX", max_uses=2**31 - 1))["max_uses"] == 2**31 - 1


@pytest.mark.parametrize(
    "text",
    [
        "tomorrow",
        "2030-01-01",
        "2030-01-01T00:00:00",
        "2030-13-01T00:00:00Z",
        "1700000000",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00+01:00",
    ],
)
async def test_expires_at_must_be_rfc3339(server: Any, text: str) -> None:
    assert_error(await post_code(server, expires_at=text), 400, "bad_request")
    assert await code_count(server) == 0


async def test_expires_at_forms(server: Any) -> None:
    zulu = await create_code(server, "Z1", expires_at="2030-01-01T00:00:00Z")
    assert zulu["expires_at"] == "2030-01-01T00:00:00.000000+00:00"
    offset = await create_code(server, "Z2", expires_at="2030-01-01T00:00:00.5-05:00")
    assert offset["expires_at"] == "2030-01-01T05:00:00.500000+00:00"
    empty = await create_code(server, "Z3", expires_at=None)
    assert empty["expires_at"] is None


async def test_text_field_limits(server: Any) -> None:
    assert_error(await post_code(server, "L1", referrer_label="r" * 201), 400, "bad_request")
    assert_error(await post_code(server, "L2", description="d" * 1001), 400, "bad_request")
    ok = await create_code(server, "L3", referrer_label="r" * 200, description="d" * 1000)
    assert (len(ok["referrer_label"]), len(ok["description"])) == (200, 1000)


async def test_duplicate_code_is_a_conflict_case_insensitively(server: Any) -> None:
    first = await create_code(server, "Summer")
    for text in ("SUMMER", "summer", "  sUmMeR "):
        response = await post_code(server, text, kind="fixed_sats", amount=5)
        assert_error(response, 409, "conflict", "conflict: discount code 'SUMMER' already exists")
    assert await code_count(server) == 1
    assert len(await audit_rows(server, "discount_code.create")) == 1
    row = await code_row(server, first["id"])
    assert row is not None and row.kind == "percent"


async def test_malformed_bodies_are_400(server: Any) -> None:
    for content in (b"", b"not json", b"[]"):
        response = await server.client.post(
            CODES, content=content, headers={**ADMIN, "Content-Type": "application/json"}
        )
        assert_error(response, 400, "bad_request")
    assert_error(
        await server.admin_post(CODES, {"code": "X", "kind": "percent"}), 400, "bad_request"
    )
    assert await code_count(server) == 0


# --- list and get ---------------------------------------------------------------------------


async def test_list_is_newest_first_and_active_only_by_default(server: Any) -> None:
    clock.freeze(T0)
    first = await create_code(server, "FIRST")
    clock.advance(timedelta(seconds=1))
    second = await create_code(server, "SECOND")
    clock.advance(timedelta(seconds=1))
    third = await create_code(server, "THIRD")
    off = await server.admin_patch(f"{CODES}/{second['id']}/active", {"active": False})
    assert off.status_code == 200
    listed = await server.admin_get(CODES)
    assert listed.status_code == 200
    assert [c["code"] for c in listed.json()["codes"]] == ["THIRD", "FIRST"]
    assert listed.json()["codes"][0] == third
    assert listed.json()["codes"][1] == first
    for flag in ("true", "1"):
        everything = await server.admin_get(CODES, include_inactive=flag)
        assert [c["code"] for c in everything.json()["codes"]] == ["THIRD", "SECOND", "FIRST"]
    explicit = await server.admin_get(CODES, include_inactive="false")
    assert [c["code"] for c in explicit.json()["codes"]] == ["THIRD", "FIRST"]
    assert_error(await server.admin_get(CODES, include_inactive="maybe"), 400, "bad_request")


async def test_list_is_empty_without_codes(server: Any) -> None:
    response = await server.admin_get(CODES)
    assert response.json() == {"codes": []}


async def test_get_unknown_code_is_404(server: Any) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    assert_error(
        await server.admin_get(f"{CODES}/{missing}"),
        404,
        "not_found",
        f"not found: discount code {missing}",
    )
    assert_error(
        await server.admin_get(f"{CODES}/not-an-id"),
        404,
        "not_found",
        "not found: discount code not-an-id",
    )


async def test_get_lists_redemptions_newest_first(sandbox: Any) -> None:
    await create_product(sandbox, price_sats=1000)
    clock.freeze(T0)
    code = await create_code(sandbox, "TENOFF", kind="percent", amount=1000)
    first = await purchase(sandbox, code="tenoff")
    clock.advance(timedelta(seconds=5))
    second = await purchase(sandbox, code="TENOFF")
    await sandbox_action(sandbox, first["invoice_id"], "expire")
    response = await sandbox.admin_get(f"{CODES}/{code['id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["code"]["used_count"] == 1
    assert [r["invoice_id"] for r in body["redemptions"]] == [
        second["invoice_id"],
        first["invoice_id"],
    ]
    newest, oldest = body["redemptions"]
    assert set(newest) == REDEMPTION_KEYS
    assert newest == {
        "id": newest["id"],
        "code_id": code["id"],
        "invoice_id": second["invoice_id"],
        "license_id": None,
        "status": "pending",
        "discount_applied_sats": 100,
        "base_price_sats": 1000,
        "final_price_sats": 900,
        "created_at": "2026-03-01T12:00:05.000000+00:00",
        "updated_at": "2026-03-01T12:00:05.000000+00:00",
    }
    assert oldest["status"] == "cancelled"
    assert oldest["created_at"] == T0_TEXT
    assert oldest["updated_at"] == "2026-03-01T12:00:05.000000+00:00"


# --- patch ----------------------------------------------------------------------------------


async def test_patch_every_field_and_audit(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    code = await create_code(server, "EDIT", product_slug="acme", policy_slug="basic")
    clock.advance(timedelta(minutes=1))
    patch = {
        "amount": 2500,
        "max_uses": 7,
        "expires_at": "2031-05-05T05:05:05Z",
        "description": "changed",
        "referrer_label": "podcast",
        "featured": True,
        "policy_slugs": ["pro", "basic", "pro"],
    }
    response = await server.admin_patch(f"{CODES}/{code['id']}", patch)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        **code,
        "amount": 2500,
        "max_uses": 7,
        "expires_at": "2031-05-05T05:05:05.000000+00:00",
        "description": "changed",
        "referrer_label": "podcast",
        "featured": True,
        "applies_to_policy_id": None,
        "applies_to_policy_ids": [acme["pro"]["id"], acme["basic"]["id"]],
        "updated_at": "2026-03-01T12:01:00.000000+00:00",
    }
    [audit] = await audit_rows(server, "discount_code.update")
    assert (audit.target_kind, audit.target_id, audit.actor_kind) == (
        "discount_code",
        code["id"],
        "admin_api_key",
    )
    assert audit.details == {
        "amount": 2500,
        "max_uses": 7,
        "expires_at": "2031-05-05T05:05:05Z",
        "description": "changed",
        "referrer_label": "podcast",
    }
    assert (await server.admin_get(f"{CODES}/{code['id']}")).json()["code"] == body


async def test_patch_null_semantics(server: Any, acme: dict[str, Any]) -> None:
    code = await create_code(
        server,
        "NULLS",
        amount=3000,
        max_uses=4,
        expires_at="2030-01-01T00:00:00Z",
        description="note",
        referrer_label="ref",
        featured=True,
        product_slug="acme",
        policy_slug="pro",
    )
    nulls = {
        "amount": None,
        "max_uses": None,
        "expires_at": None,
        "description": None,
        "referrer_label": None,
        "featured": None,
        "policy_slugs": None,
    }
    response = await server.admin_patch(f"{CODES}/{code['id']}", nulls)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["amount"] == 3000  # null ignored
    assert body["max_uses"] is None  # cleared: unlimited
    assert body["expires_at"] is None  # cleared: never
    assert body["description"] == ""
    assert body["referrer_label"] is None
    assert body["featured"] is True  # null ignored
    assert body["applies_to_policy_ids"] == [] and body["applies_to_policy_id"] is None
    assert body["applies_to_product_id"] == acme["product"]["id"]
    [audit] = await audit_rows(server, "discount_code.update")
    assert audit.details == {
        "amount": None,
        "max_uses": None,
        "expires_at": None,
        "description": None,
        "referrer_label": None,
    }


async def test_patch_with_empty_body_changes_nothing_but_audits(server: Any) -> None:
    code = await create_code(server, "SAME", max_uses=3)
    response = await server.admin_patch(f"{CODES}/{code['id']}", {})
    assert response.status_code == 200
    body = response.json()
    assert {k: v for k, v in body.items() if k != "updated_at"} == {
        k: v for k, v in code.items() if k != "updated_at"
    }
    [audit] = await audit_rows(server, "discount_code.update")
    assert audit.details == {}


async def test_patch_ignores_immutable_fields(server: Any, acme: dict[str, Any]) -> None:
    code = await create_code(server, "FIXED", kind="fixed_sats", amount=50)
    other = await create_product(server, "other")
    response = await server.admin_patch(
        f"{CODES}/{code['id']}",
        {
            "code": "RENAMED",
            "kind": "percent",
            "discount_currency": "USD",
            "product_slug": other["slug"],
            "applies_to_product_id": other["id"],
            "active": False,
            "used_count": 9,
            "id": "x",
            "description": "only this",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["code"], body["kind"], body["discount_currency"]) == ("FIXED", "fixed_sats", "SAT")
    assert body["applies_to_product_id"] is None
    assert (body["active"], body["used_count"], body["id"]) == (True, 0, code["id"])
    assert body["description"] == "only this"


@pytest.mark.parametrize(
    ("kind", "amount", "patch", "ok"),
    [
        ("percent", 1000, 10_000, True),
        ("percent", 1000, 0, True),
        ("percent", 1000, 10_001, False),
        ("percent", 1000, -1, False),
        ("fixed_sats", 10, 0, False),
        ("set_price", 10, 0, False),
        ("set_price", 10, 99, True),
        ("free_license", 0, 0, True),
        ("free_license", 0, 5, False),
    ],
)
async def test_patch_amount_is_validated_against_the_kind(
    server: Any, kind: str, amount: int, patch: int, ok: bool
) -> None:
    code = await create_code(server, "AMT", kind=kind, amount=amount)
    response = await server.admin_patch(f"{CODES}/{code['id']}", {"amount": patch})
    row = await code_row(server, code["id"])
    assert row is not None
    if ok:
        assert response.status_code == 200, response.text
        assert response.json()["amount"] == patch == row.amount
    else:
        assert_error(response, 400, "bad_request")
        assert row.amount == (0 if kind == "free_license" else amount)
        assert await audit_rows(server, "discount_code.update") == []


async def test_patch_max_uses_below_used_count_is_refused(server: Any) -> None:
    code = await create_code(server, "USED", max_uses=10)
    await set_used_count(server, code["id"], 3)
    for value in (2, 0, -1, 2**31):
        response = await server.admin_patch(f"{CODES}/{code['id']}", {"max_uses": value})
        assert_error(response, 400, "bad_request")
    row = await code_row(server, code["id"])
    assert row is not None and row.max_uses == 10
    equal = await server.admin_patch(f"{CODES}/{code['id']}", {"max_uses": 3})
    assert equal.status_code == 200 and equal.json()["max_uses"] == 3
    assert equal.json()["used_count"] == 3


async def test_a_failed_patch_changes_nothing(server: Any) -> None:
    code = await create_code(server, "ATOMIC", amount=1000, max_uses=5)
    response = await server.admin_patch(
        f"{CODES}/{code['id']}", {"amount": 2000, "description": "x", "max_uses": 0}
    )
    assert_error(response, 400, "bad_request")
    after = (await server.admin_get(f"{CODES}/{code['id']}")).json()["code"]
    assert after == code
    assert await audit_rows(server, "discount_code.update") == []


async def test_patch_policy_scope_rules(server: Any, acme: dict[str, Any]) -> None:
    global_code = await create_code(server, "GLOBAL")
    for value in (["pro"], []):
        response = await server.admin_patch(f"{CODES}/{global_code['id']}", {"policy_slugs": value})
        assert_error(
            response,
            400,
            "bad_request",
            "bad request: this code is not scoped to a product, so policy scope cannot be set",
        )
    scoped = await create_code(server, "SCOPED", product_slug="acme")
    unknown = await server.admin_patch(f"{CODES}/{scoped['id']}", {"policy_slugs": ["gold"]})
    assert_error(unknown, 404, "not_found", "not found: policy 'gold' for product 'acme'")
    single = await server.admin_patch(f"{CODES}/{scoped['id']}", {"policy_slugs": ["pro"]})
    assert single.json()["applies_to_policy_id"] == acme["pro"]["id"]
    assert single.json()["applies_to_policy_ids"] == [acme["pro"]["id"]]
    cleared = await server.admin_patch(f"{CODES}/{scoped['id']}", {"policy_slugs": []})
    assert cleared.json()["applies_to_policy_id"] is None
    assert cleared.json()["applies_to_policy_ids"] == []


async def test_patch_expires_at_and_text_limits(server: Any) -> None:
    code = await create_code(server, "TEXTS")
    path = f"{CODES}/{code['id']}"
    assert_error(await server.admin_patch(path, {"expires_at": "later"}), 400, "bad_request")
    assert_error(
        await server.admin_patch(path, {"expires_at": "2030-01-01T00:00:00"}), 400, "bad_request"
    )
    assert_error(await server.admin_patch(path, {"description": "d" * 1001}), 400, "bad_request")
    assert_error(await server.admin_patch(path, {"referrer_label": "r" * 201}), 400, "bad_request")
    ok = await server.admin_patch(path, {"expires_at": "2030-01-01T01:00:00+01:00"})
    assert ok.json()["expires_at"] == "2030-01-01T00:00:00.000000+00:00"


async def test_patch_unknown_code_is_404(server: Any) -> None:
    missing = "00000000-0000-4000-8000-000000000001"
    response = await server.admin_patch(f"{CODES}/{missing}", {"description": "x"})
    assert_error(response, 404, "not_found", f"not found: discount code {missing}")
    assert await audit_rows(server, "discount_code.update") == []


# --- active toggle --------------------------------------------------------------------------


async def test_active_toggle_audits_every_call(server: Any) -> None:
    code = await create_code(server, "TOGGLE")
    path = f"{CODES}/{code['id']}/active"
    for value in (False, False, True, True):
        response = await server.admin_patch(path, {"active": value})
        assert response.status_code == 200, response.text
        assert response.json() == {"ok": True}
        row = await code_row(server, code["id"])
        assert row is not None and row.active is value
    disables = await audit_rows(server, "discount_code.disable")
    enables = await audit_rows(server, "discount_code.enable")
    assert [a.details for a in disables] == [{"active": False}, {"active": False}]
    assert [a.details for a in enables] == [{"active": True}, {"active": True}]
    for audit in disables + enables:
        assert (audit.target_kind, audit.target_id) == ("discount_code", code["id"])


async def test_active_toggle_unknown_code_and_bad_body(server: Any) -> None:
    missing = "00000000-0000-4000-8000-000000000002"
    response = await server.admin_patch(f"{CODES}/{missing}/active", {"active": False})
    assert_error(response, 404, "not_found", f"not found: discount code {missing}")
    code = await create_code(server, "BODY")
    for body in ({}, {"active": "no"}, {"active": None}):
        bad = await server.admin_patch(f"{CODES}/{code['id']}/active", body)
        assert_error(bad, 400, "bad_request")
    assert await audit_rows(server, "discount_code.disable") == []


# --- delete ---------------------------------------------------------------------------------


async def test_delete_unused_code(server: Any) -> None:
    code = await create_code(server, "GONE", kind="free_license", amount=0)
    response = await server.admin_delete(f"{CODES}/{code['id']}")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "deleted": "GONE"}
    assert await code_row(server, code["id"]) is None
    [audit] = await audit_rows(server, "discount_code.delete")
    assert (audit.target_kind, audit.target_id) == ("discount_code", code["id"])
    assert audit.details == {"code": "GONE", "kind": "free_license"}
    assert_error(await server.admin_get(f"{CODES}/{code['id']}"), 404, "not_found")
    again = await server.admin_delete(f"{CODES}/{code['id']}")
    assert_error(again, 404, "not_found", f"not found: discount code '{code['id']}'")


async def test_delete_unknown_code_is_404(server: Any) -> None:
    response = await server.admin_delete(f"{CODES}/nope")
    assert_error(response, 404, "not_found", "not found: discount code 'nope'")


@pytest.mark.parametrize("action", [None, "expire", "pay"])
async def test_delete_refused_when_any_redemption_exists(sandbox: Any, action: str | None) -> None:
    await create_product(sandbox)
    code = await create_code(sandbox, "KEEP", kind="fixed_sats", amount=100)
    bought = await purchase(sandbox, code="KEEP")
    if action is not None:
        await sandbox_action(sandbox, bought["invoice_id"], action)
    response = await sandbox.admin_delete(f"{CODES}/{code['id']}")
    assert_error(response, 409, "conflict")
    assert "disable" in response.json()["message"]
    assert await code_row(sandbox, code["id"]) is not None
    assert await audit_rows(sandbox, "discount_code.delete") == []


# --- the active-code cap (access.md 9.2) -------------------------------------------------------


async def fill_to_cap(server: Any) -> list[dict[str, Any]]:
    return [await create_code(server, f"CAP{index}") for index in range(10)]


def assert_tier_cap(response: Any) -> None:
    assert response.status_code == 402, response.text
    body = response.json()
    assert set(body) == {"ok", "error", "message", "upgrade_url"}
    assert body["ok"] is False
    assert body["error"] == "tier_cap"
    assert body["upgrade_url"] == UPGRADE_URL
    assert "/buy/keysat" in body["upgrade_url"]
    assert "10" in body["message"]
    assert not body["message"].startswith("bad request")


async def test_code_cap_refuses_the_eleventh_active_code(server: Any) -> None:
    codes = await fill_to_cap(server)
    assert_tier_cap(await post_code(server, "ELEVEN"))
    # before any other check: a malformed or invalid body still gets 402
    assert_tier_cap(await post_code(server, "bad code", kind="bogus", product_slug="nope"))
    assert_tier_cap(await server.admin_post(CODES, {}))
    assert_tier_cap(
        await server.client.post(
            CODES, content=b"not json", headers={**ADMIN, "Content-Type": "application/json"}
        )
    )
    # credentials are still checked first
    anonymous = await server.client.post(CODES, json={"code": "X", "kind": "percent", "amount": 1})
    assert anonymous.status_code == 401
    assert await code_count(server) == 10
    assert len(await audit_rows(server, "discount_code.create")) == 10
    # inactive codes do not count
    off = await server.admin_patch(f"{CODES}/{codes[0]['id']}/active", {"active": False})
    assert off.status_code == 200
    eleventh = await create_code(server, "ELEVEN")
    assert eleventh["active"] is True
    assert await code_count(server) == 11
    # re-enabling the inactive code would make 11 active: refused, nothing changes
    refused = await server.admin_patch(f"{CODES}/{codes[0]['id']}/active", {"active": True})
    assert_tier_cap(refused)
    row = await code_row(server, codes[0]["id"])
    assert row is not None and row.active is False
    assert await audit_rows(server, "discount_code.enable") == []
    # an already active code may be "enabled" again: no cap check, audited
    again = await server.admin_patch(f"{CODES}/{codes[1]['id']}/active", {"active": True})
    assert again.status_code == 200
    assert len(await audit_rows(server, "discount_code.enable")) == 1
    # disabling, patching and deleting still work at the cap
    patched = await server.admin_patch(f"{CODES}/{codes[2]['id']}", {"description": "x"})
    assert patched.status_code == 200
    deleted = await server.admin_delete(f"{CODES}/{codes[3]['id']}")
    assert deleted.status_code == 200
    # now 9 active: the inactive code may come back
    back = await server.admin_patch(f"{CODES}/{codes[0]['id']}/active", {"active": True})
    assert back.status_code == 200
    assert_tier_cap(await post_code(server, "TWELVE"))


async def test_sandbox_mode_has_no_code_cap(sandbox: Any) -> None:
    codes = [await create_code(sandbox, f"SBX{index}") for index in range(12)]
    off = await sandbox.admin_patch(f"{CODES}/{codes[0]['id']}/active", {"active": False})
    assert off.status_code == 200
    await create_code(sandbox, "SBX12")
    on = await sandbox.admin_patch(f"{CODES}/{codes[0]['id']}/active", {"active": True})
    assert on.status_code == 200
    listed = (await sandbox.admin_get(CODES)).json()["codes"]
    assert len(listed) == 13


# --- credentials --------------------------------------------------------------------------


async def test_credentials_required(server: Any) -> None:
    code = await create_code(server, "AUTH")
    routes = [
        ("GET", CODES, None),
        ("POST", CODES, {"code": "NEW", "kind": "percent", "amount": 1}),
        ("GET", f"{CODES}/{code['id']}", None),
        ("PATCH", f"{CODES}/{code['id']}", {"description": "x"}),
        ("PATCH", f"{CODES}/{code['id']}/active", {"active": False}),
        ("DELETE", f"{CODES}/{code['id']}", None),
    ]
    for method, path, body in routes:
        for headers in ({}, {"Authorization": f"Token {ADMIN_KEY}"}, {"Authorization": "Bearer "}):
            response = await server.client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json() == {
                "ok": False,
                "error": "unauthorized",
                "message": "unauthorized",
            }
        wrong = await server.client.request(
            method, path, json=body, headers={"Authorization": "Bearer wrong-key-0123456789abcdef"}
        )
        assert wrong.status_code == 403, (method, path)
        assert wrong.json() == {"ok": False, "error": "forbidden", "message": "forbidden"}
    row = await code_row(server, code["id"])
    assert row is not None and row.active is True and row.description == ""
    assert await code_count(server) == 1
    assert len(await audit_rows(server, "discount_code.create")) == 1
