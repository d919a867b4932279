"""The tier report and the self-license endpoints (admin-api.md 18; access.md 9.4-9.8):
sources, activation, refresh, and a process noticing a key activated through another."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from keysat.clock import clock, now
from keysat.keys import encode_key, generate_private_key, parse_key
from keysat.licensing.models import License
from keysat.operator.models import AuditEntry
from keysat.operator.service import get_setting
from support import (
    assert_error,
    audit_rows,
    create_product,
    fields_of,
    self_license_key,
)

TIER = "/v1/admin/tier"
SELF = "/v1/admin/self-license"
REFRESH = "/v1/admin/self-license/refresh"
PRO = (
    "self_host",
    "unlimited_products",
    "unlimited_policies",
    "unlimited_codes",
    "recurring_billing",
    "zaprite_payments",
    "unlimited_merchant_profiles",
)
PRO_URL = "https://licensing.keysat.xyz/buy/keysat?policy=pro"
PATRON_URL = "https://licensing.keysat.xyz/buy/keysat?policy=patron"
NO_LICENSE = "no license configured; running Creator (free) tier"
CREATOR_CAPS = {
    "products": 5,
    "policies_per_product": 5,
    "active_codes": 10,
    "merchant_profiles": 1,
}
NO_CAPS = dict.fromkeys(CREATOR_CAPS)


def ids(key: str) -> tuple[str, str]:
    parsed = parse_key(key)
    return str(parsed.license_id), str(parsed.product_id)


def foreign_key(*entitlements: str) -> str:
    """A well-formed key signed by someone other than the trust root."""
    return encode_key(fields_of(self_license_key(*entitlements)), generate_private_key())


def tampered(key: str) -> str:
    prefix, payload, signature = key.split("-")
    flipped = "A" if payload[10] != "A" else "B"
    return f"{prefix}-{payload[:10]}{flipped}{payload[11:]}-{signature}"


async def activate(server: Any, key: Any) -> Any:
    return await server.admin_post(SELF, {"license_key": key})


async def tier_of(server: Any) -> str:
    response = await server.admin_get(TIER)
    assert response.status_code == 200, response.text
    return str(response.json()["tier"])


# --- the tier report -----------------------------------------------------------------------


async def test_a_fresh_server_reports_creator(server: Any) -> None:
    response = await server.admin_get(TIER)
    assert response.status_code == 200
    assert response.json() == {
        "tier": "creator",
        "tier_name": "Creator",
        "sandbox": False,
        "entitlements": [],
        "usage": {"products": 0, "active_codes": 0, "merchant_profiles": 1},
        "caps": CREATOR_CAPS,
        "next_tier": "pro",
        "upgrade_url": PRO_URL,
    }
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("entitlements", "expected"),
    [
        (
            PRO,
            {
                "tier": "pro",
                "tier_name": "Pro",
                "caps": NO_CAPS,
                "next_tier": "patron",
                "upgrade_url": PATRON_URL,
            },
        ),
        (
            (*PRO, "patron"),
            {
                "tier": "patron",
                "tier_name": "Patron",
                "caps": NO_CAPS,
                "next_tier": None,
                "upgrade_url": None,
            },
        ),
        # Each cap follows its own entitlement, whatever the label says.
        (
            ("unlimited_products", "some_future_thing"),
            {
                "tier": "pro",
                "tier_name": "Pro",
                "caps": {**CREATOR_CAPS, "products": None},
                "next_tier": "patron",
                "upgrade_url": PATRON_URL,
            },
        ),
        (
            ("unlimited_codes", "unlimited_merchant_profiles"),
            {
                "tier": "creator",
                "tier_name": "Creator",
                "caps": {**CREATOR_CAPS, "active_codes": None, "merchant_profiles": None},
                "next_tier": "pro",
                "upgrade_url": PRO_URL,
            },
        ),
    ],
)
async def test_the_report_follows_the_entitlements(
    make_server: Callable[..., Any], entitlements: tuple[str, ...], expected: dict[str, Any]
) -> None:
    server = await make_server(KEYSAT_LICENSE=self_license_key(*entitlements))
    report = (await server.admin_get(TIER)).json()
    assert report["sandbox"] is False
    assert report["entitlements"] == sorted(entitlements)
    assert {key: report[key] for key in expected} == expected


@pytest.mark.parametrize("license_env", [{}, {"KEYSAT_LICENSE": self_license_key(*PRO)}])
async def test_sandbox_mode_reports_sandbox_with_no_caps(
    make_server: Callable[..., Any], license_env: dict[str, str]
) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true", **license_env)
    report = (await server.admin_get(TIER)).json()
    assert report == {
        "tier": "sandbox",
        "tier_name": "Sandbox",
        "sandbox": True,
        # Sandbox mode lifts the gates but adds no strings: the license's own are reported.
        "entitlements": sorted(PRO) if license_env else [],
        "usage": {"products": 0, "active_codes": 0, "merchant_profiles": 1},
        "caps": NO_CAPS,
        "next_tier": None,
        "upgrade_url": None,
    }


async def test_development_environment_is_sandbox_mode(make_server: Callable[..., Any]) -> None:
    server = await make_server(KEYSAT_ENV="development")
    assert await tier_of(server) == "sandbox"


async def test_usage_counts_what_the_caps_count(server: Any) -> None:
    await create_product(server, "one")
    two = await create_product(server, "two")
    await server.admin_patch(f"/v1/admin/products/{two['id']}/active", {"active": False})
    for code in ("A1", "B2", "C3"):
        response = await server.admin_post(
            "/v1/admin/discount-codes", {"code": code, "kind": "percent", "amount": 1000}
        )
        assert response.status_code == 200, response.text
    codes = (await server.admin_get("/v1/admin/discount-codes")).json()["codes"]
    await server.admin_patch(f"/v1/admin/discount-codes/{codes[0]['id']}/active", {"active": False})
    usage = (await server.admin_get(TIER)).json()["usage"]
    assert usage == {"products": 2, "active_codes": 2, "merchant_profiles": 1}


# --- GET /v1/admin/self-license and its sources --------------------------------------------


async def test_unlicensed_says_why(server: Any) -> None:
    response = await server.admin_get(SELF)
    assert response.status_code == 200
    assert response.json() == {"tier": "unlicensed", "reason": NO_LICENSE}


async def test_an_environment_key_is_reported_with_unix_expiry(
    make_server: Callable[..., Any],
) -> None:
    expires = int((datetime.now(UTC) + timedelta(days=30)).timestamp())
    key = self_license_key("unlimited_products", "patron", expires_at=expires)
    license_id, product_id = ids(key)
    server = await make_server(KEYSAT_LICENSE=f"  {key}\n")
    assert (await server.admin_get(SELF)).json() == {
        "tier": "licensed",
        "license_id": license_id,
        "product_id": product_id,
        "expires_at": expires,
        "entitlements": ["unlimited_products", "patron"],
        "source": "env",
    }


async def test_the_license_file_is_the_last_source(
    make_server: Callable[..., Any], tmp_path: Path
) -> None:
    key = self_license_key("unlimited_products")
    path = tmp_path / "keysat-license.txt"
    path.write_text(f"\n{key}\n")
    server = await make_server(KEYSAT_LICENSE_FILE=str(path))
    report = (await server.admin_get(SELF)).json()
    assert (report["tier"], report["source"], report["expires_at"]) == ("licensed", "file", 0)
    assert await tier_of(server) == "pro"

    # An activated key wins over the file; the environment wins over both.
    stored = self_license_key(*PRO, "patron")
    assert (await activate(server, stored)).status_code == 200
    report = (await server.admin_get(SELF)).json()
    assert (report["license_id"], report["source"]) == (ids(stored)[0], "stored")
    env = self_license_key("recurring_billing")
    other = await make_server(KEYSAT_LICENSE_FILE=str(path), KEYSAT_LICENSE=env)
    report = (await other.admin_get(SELF)).json()
    assert (report["license_id"], report["source"]) == (ids(env)[0], "env")


@pytest.mark.parametrize(
    ("make_key", "detail"),
    [
        (lambda: foreign_key(*PRO), "verification failed: signature does not verify"),
        (lambda: tampered(self_license_key(*PRO)), None),
        (lambda: "LIC1-garbage", None),
        (
            lambda: self_license_key(*PRO, expires_at=int(datetime.now(UTC).timestamp()) - 1),
            "verification failed: the license has expired",
        ),
    ],
)
async def test_a_bad_environment_key_leaves_the_server_running_as_creator(
    make_server: Callable[..., Any], make_key: Callable[[], str], detail: str | None
) -> None:
    server = await make_server(KEYSAT_LICENSE=make_key())
    report = (await server.admin_get(SELF)).json()
    assert set(report) == {"tier", "reason"}
    assert report["tier"] == "unlicensed"
    assert report["reason"].startswith("verification failed: ")
    if detail is not None:
        assert report["reason"] == detail
    assert await tier_of(server) == "creator"


async def test_self_license_endpoints_need_credentials(server: Any) -> None:
    for method, path in [("GET", SELF), ("POST", SELF), ("POST", REFRESH), ("GET", TIER)]:
        assert (await server.client.request(method, path)).status_code == 401
    wrong = {"Authorization": "Bearer wrong-key-wrong-key-wrong-key-wrong"}
    response = await server.client.post(SELF, json={"license_key": "x"}, headers=wrong)
    assert response.status_code == 403


# --- activation ----------------------------------------------------------------------------


async def test_activation_changes_the_tier_without_a_restart(server: Any) -> None:
    for index in range(5):
        await create_product(server, f"p{index}")
    assert (
        await server.admin_post("/v1/admin/products", {"slug": "p5", "name": "P5", "price_sats": 1})
    ).status_code == 402

    key = self_license_key("unlimited_products", "recurring_billing")
    license_id, product_id = ids(key)
    response = await activate(server, f"  {key}  ")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "ok": True,
        "tier": {
            "tier": "licensed",
            "license_id": license_id,
            "product_id": product_id,
            "expires_at": 0,
            "entitlements": ["unlimited_products", "recurring_billing"],
            "source": "stored",
        },
        "message": f"License {license_id} verified — perpetual, "
        "entitlements=unlimited_products,recurring_billing.",
    }
    assert await tier_of(server) == "pro"
    assert (await server.admin_get(SELF)).json()["source"] == "stored"
    await create_product(server, "p5")

    async with server.state.db.read() as session:
        assert await get_setting(session, "self_license_key") == key
    [audit] = await audit_rows(server, "self_license.activate")
    assert (audit.actor_kind, audit.actor_id) == ("admin_api_key", "master")
    assert (audit.target_kind, audit.target_id) == ("self_license", license_id)
    assert audit.details == {
        "license_id": license_id,
        "product_id": product_id,
        "expires_at": 0,
        "entitlements": ["unlimited_products", "recurring_billing"],
    }


async def test_a_dated_key_without_entitlements_has_its_own_message(server: Any) -> None:
    expires = int((datetime.now(UTC) + timedelta(days=365)).timestamp())
    key = self_license_key(expires_at=expires)
    response = await activate(server, key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == (
        f"License {ids(key)[0]} verified — expires unix={expires}, entitlements=(none)."
    )
    assert body["tier"]["expires_at"] == expires
    assert await tier_of(server) == "creator"


@pytest.mark.parametrize("body", [{}, {"license_key": ""}, {"license_key": "  \n "}])
async def test_a_missing_key_is_400(server: Any, body: dict[str, Any]) -> None:
    response = await server.admin_post(SELF, body)
    assert_error(response, 400, "bad_request", "bad request: license_key is required")


async def test_a_key_of_the_wrong_type_is_400(server: Any) -> None:
    assert_error(await activate(server, 42), 400, "bad_request")


@pytest.mark.parametrize(
    ("make_key", "detail"),
    [
        (lambda: foreign_key(*PRO), "signature does not verify"),
        (lambda: tampered(self_license_key(*PRO)), None),
        (lambda: "not a key", None),
        (
            lambda: self_license_key(*PRO, expires_at=int(datetime.now(UTC).timestamp()) - 1),
            "the license has expired",
        ),
    ],
)
async def test_an_invalid_key_is_license_invalid_and_stores_nothing(
    server: Any, make_key: Callable[[], str], detail: str | None
) -> None:
    response = await activate(server, make_key())
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"ok", "error", "message", "detail"}
    assert (body["ok"], body["error"]) == (False, "license_invalid")
    assert body["message"] == f"license invalid: {body['detail']}"
    if detail is not None:
        assert body["detail"] == detail
    async with server.state.db.read() as session:
        assert await get_setting(session, "self_license_key") is None
    assert await audit_rows(server, "self_license.activate") == []
    assert await tier_of(server) == "creator"


async def test_activation_is_refused_while_the_environment_sets_a_key(
    make_server: Callable[..., Any],
) -> None:
    server = await make_server(KEYSAT_LICENSE=self_license_key("unlimited_products"))
    response = await activate(server, self_license_key(*PRO))
    assert_error(response, 409, "conflict")
    # Order of checks: a blank key is a 400 before the 409.
    assert (await activate(server, " ")).status_code == 400
    assert (await server.admin_get(SELF)).json()["source"] == "env"


async def test_no_audit_row_ever_holds_the_key(server: Any) -> None:
    key = self_license_key(*PRO)
    await activate(server, key)
    await server.admin_post(REFRESH)
    async with server.state.db.read() as session:
        rows = (await session.execute(sa.select(AuditEntry))).scalars().all()
    assert [row.action for row in rows] == ["self_license.activate"]
    assert key not in json.dumps([row.details for row in rows])
    assert key.split("-")[2] not in json.dumps([row.details for row in rows])


# --- refresh -------------------------------------------------------------------------------


async def add_row(server: Any, key: str, **fields: Any) -> None:
    """The key's own license row, as on the instance that issued it."""
    product = await create_product(server, "keysat")
    at = now()
    async with server.state.db.write() as session:
        session.add(
            License(
                id=ids(key)[0],
                product_id=product["id"],
                issued_at=at,
                updated_at=at,
                entitlements=list(fields.pop("entitlements", PRO)),
                **fields,
            )
        )


async def set_row(server: Any, key: str, **values: Any) -> None:
    async with server.state.db.write() as session:
        await session.execute(sa.update(License).where(License.id == ids(key)[0]).values(**values))


async def test_refresh_on_the_issuing_instance_follows_its_row(
    make_server: Callable[..., Any],
) -> None:
    key = self_license_key(*PRO)
    server = await make_server(KEYSAT_LICENSE=key)
    await add_row(server, key, entitlements=["unlimited_products", "not_in_the_key"])
    response = await server.admin_post(REFRESH)
    assert response.status_code == 200
    # The row narrows the signed entitlements, never widens them.
    assert response.json()["entitlements"] == ["unlimited_products"]
    assert (await server.admin_get(TIER)).json()["caps"]["active_codes"] == 10

    await set_row(server, key, status="suspended")
    assert (await server.admin_post(REFRESH)).json() == {
        "tier": "unlicensed",
        "reason": "license suspended",
    }
    await set_row(server, key, status="revoked")
    assert (await server.admin_post(REFRESH)).json()["reason"] == "license revoked"
    await set_row(server, key, status="active", expires_at=now() - timedelta(seconds=1))
    assert (await server.admin_post(REFRESH)).json()["reason"] == "license expired"
    later = now() + timedelta(days=3)
    await set_row(server, key, expires_at=later)
    refreshed = (await server.admin_post(REFRESH)).json()
    assert refreshed["expires_at"] == int(later.timestamp())
    assert await audit_rows(server, "self_license.activate") == []


async def test_a_key_activated_by_another_process_is_noticed(
    make_server: Callable[..., Any],
) -> None:
    first = await make_server()
    second = await make_server()
    licensing = second.state.self_license
    assert await licensing.notice(clock.real_now()) is False

    assert (await activate(first, self_license_key(*PRO))).status_code == 200
    assert await tier_of(first) == "pro"
    assert await tier_of(second) == "creator"
    # The 30-second check reads only the stored key's stamp, and refreshes on a change.
    assert await licensing.notice(clock.real_now()) is True
    assert await tier_of(second) == "pro"
    assert (await second.admin_get(SELF)).json()["source"] == "stored"
    assert await licensing.notice(clock.real_now()) is False

    # A later activation through the first process is noticed the same way.
    patron = self_license_key(*PRO, "patron")
    assert (await activate(first, patron)).status_code == 200
    assert await licensing.notice(clock.real_now()) is True
    assert await tier_of(second) == "patron"


async def test_the_check_refreshes_hourly_without_a_change(
    make_server: Callable[..., Any],
) -> None:
    key = self_license_key(*PRO)
    server = await make_server(KEYSAT_LICENSE=key)
    licensing = server.state.self_license
    started = clock.real_now()
    await add_row(server, key)
    await set_row(server, key, status="revoked")
    assert await licensing.notice(started + timedelta(minutes=59)) is False
    assert await tier_of(server) == "pro"
    assert await licensing.notice(started + timedelta(minutes=61)) is True
    assert await tier_of(server) == "creator"
    assert (await server.admin_get(SELF)).json()["reason"] == "license revoked"
