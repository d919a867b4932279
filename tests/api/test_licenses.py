"""Admin license routes (admin-api.md 5.1-5.8, 20, 21.3, 22-24; webhooks.md 3-4).

Change-tier (5.9) is not covered here."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from keysat.billing.models import Invoice
from keysat.clock import clock
from keysat.keys import FLAG_TRIAL, load_public_key_pem, verify_key
from keysat.licensing.models import License
from keysat.operator.models import AuditEntry
from keysat.subscriptions.models import Subscription
from support import (
    ADMIN,
    ADMIN_KEY,
    assert_error,
    audit_rows,
    create_policy,
    create_product,
    event_rows,
    events,
    issue_license,
)

T0 = datetime(2031, 9, 10, 11, 12, 13, 456789, tzinfo=UTC)
CLIENT_IP = "203.0.113.7"
LICENSE_FIELDS = {
    "id",
    "product_id",
    "invoice_id",
    "status",
    "fingerprint",
    "bound_identity",
    "issued_at",
    "revoked_at",
    "revocation_reason",
    "metadata",
    "policy_id",
    "expires_at",
    "grace_seconds",
    "max_machines",
    "suspended_at",
    "suspension_reason",
    "entitlements",
    "is_trial",
    "trial_started_at",
    "nostr_npub",
    "buyer_email",
}
ISSUE_FIELDS = {
    "license_id",
    "product_id",
    "license_key",
    "issued_at",
    "expires_at",
    "entitlements",
    "is_trial",
    "max_machines",
}


def ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


async def issue(server: Any, **fields: Any) -> Any:
    body = {"product_slug": "acme", **fields}
    return await server.admin_post("/v1/admin/licenses", body)


async def load_license(server: Any, license_id: str) -> License:
    async with server.state.db.read() as session:
        row = await session.get(License, license_id)
        assert row is not None
        return row


def assert_master_actor(entry: AuditEntry) -> None:
    assert entry.actor_kind == "admin_api_key"
    assert entry.actor_id == "master"
    assert entry.actor_hash == hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    assert entry.request_ip == CLIENT_IP


@pytest.fixture
async def acme(server: Any) -> dict[str, Any]:
    return await create_product(server, "acme")


# --- manual issue: terms --------------------------------------------------------------


async def test_issue_defaults_without_policy(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    response = await issue(server)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == ISSUE_FIELDS
    uuid.UUID(body["license_id"])
    assert body["product_id"] == acme["id"]
    assert body["issued_at"] == ts(T0)
    assert body["expires_at"] is None
    assert body["entitlements"] == []
    assert body["is_trial"] is False
    assert body["max_machines"] == 1
    assert body["license_key"].startswith("LIC1-")
    row = await load_license(server, body["license_id"])
    assert row.status == "active"
    assert row.invoice_id is None
    assert row.policy_id is None
    assert row.issued_at == T0
    assert row.expires_at is None
    assert row.grace_seconds == 0
    assert row.max_machines == 1
    assert row.is_trial is False
    assert row.trial_started_at is None
    assert row.license_metadata == {"source": "admin_issue", "note": None}
    assert (row.buyer_email, row.nostr_npub) == (None, None)
    assert (row.revoked_at, row.suspended_at) == (None, None)


async def test_issue_takes_terms_from_the_policy(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    policy = await create_policy(
        server,
        slug="pro",
        duration_seconds=86400,
        grace_seconds=600,
        max_machines=3,
        is_trial=True,
        entitlements=["pro", "sync"],
    )
    response = await issue(server, policy_slug="pro")
    assert response.status_code == 200
    body = response.json()
    assert body["expires_at"] == ts(T0 + timedelta(days=1))
    assert body["max_machines"] == 3
    assert body["is_trial"] is True
    assert body["entitlements"] == ["pro", "sync"]
    row = await load_license(server, body["license_id"])
    assert row.policy_id == policy["id"]
    assert row.grace_seconds == 600
    assert row.trial_started_at == T0
    assert row.expires_at == T0 + timedelta(days=1)


async def test_request_fields_win_over_the_policy(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    await create_policy(
        server,
        slug="pro",
        duration_seconds=86400,
        grace_seconds=600,
        max_machines=3,
        is_trial=True,
        entitlements=["pro"],
    )
    response = await issue(
        server,
        policy_slug="pro",
        expires_at="2032-01-01T14:00:00+02:00",
        grace_seconds=0,
        max_machines=0,
        is_trial=False,
        entitlements=[],
    )
    assert response.status_code == 200
    body = response.json()
    assert body["expires_at"] == "2032-01-01T12:00:00.000000+00:00"
    assert body["max_machines"] == 0
    assert body["is_trial"] is False
    assert body["entitlements"] == []
    row = await load_license(server, body["license_id"])
    assert row.grace_seconds == 0
    assert row.trial_started_at is None
    assert row.expires_at == datetime(2032, 1, 1, 12, tzinfo=UTC)


async def test_explicit_null_expiry_is_perpetual_over_policy_duration(
    server: Any, acme: dict[str, Any]
) -> None:
    await create_policy(server, slug="pro", duration_seconds=86400)
    response = await issue(server, policy_slug="pro", expires_at=None)
    assert response.status_code == 200
    assert response.json()["expires_at"] is None
    assert (await load_license(server, response.json()["license_id"])).expires_at is None


async def test_policy_with_zero_duration_is_perpetual(server: Any, acme: dict[str, Any]) -> None:
    await create_policy(server, slug="forever", duration_seconds=0, max_machines=2)
    body = (await issue(server, policy_slug="forever")).json()
    assert body["expires_at"] is None
    assert body["max_machines"] == 2


async def test_expires_at_formats(server: Any, acme: dict[str, Any]) -> None:
    zulu = await issue(server, expires_at="2033-02-03T04:05:06.789Z")
    assert zulu.status_code == 200
    assert zulu.json()["expires_at"] == "2033-02-03T04:05:06.789000+00:00"
    past = await issue(server, expires_at="2001-01-01T00:00:00+00:00")
    assert past.status_code == 200
    assert past.json()["expires_at"] == "2001-01-01T00:00:00.000000+00:00"


async def test_unparsable_expires_at_is_400(server: Any, acme: dict[str, Any]) -> None:
    for value in ("tomorrow", "2032-13-01T00:00:00Z", "not a date", "12345", ""):
        response = await issue(server, expires_at=value)
        assert_error(response, 400, "bad_request")
        assert response.json()["message"].startswith("bad request: ")
    async with server.state.db.read() as session:
        assert (await session.execute(sa.select(sa.func.count(License.id)))).scalar_one() == 0


async def test_expires_at_of_wrong_type_is_400(server: Any, acme: dict[str, Any]) -> None:
    assert_error(await issue(server, expires_at=1893456000), 400, "bad_request")


async def test_unknown_product_and_policy(server: Any, acme: dict[str, Any]) -> None:
    assert_error(
        await server.admin_post("/v1/admin/licenses", {"product_slug": "nope"}),
        404,
        "not_found",
        "not found: product 'nope'",
    )
    assert_error(
        await issue(server, policy_slug="gold"),
        404,
        "not_found",
        "not found: policy 'gold' for product 'acme'",
    )
    # a policy of another product is not found either
    await create_product(server, "zeta")
    await create_policy(server, "zeta", slug="zeta-pro")
    assert_error(
        await issue(server, policy_slug="zeta-pro"),
        404,
        "not_found",
        "not found: policy 'zeta-pro' for product 'acme'",
    )


async def test_missing_product_slug_is_400(server: Any) -> None:
    assert_error(
        await server.admin_post("/v1/admin/licenses", {}),
        400,
        "bad_request",
        "bad request: missing field 'product_slug'",
    )


async def test_issue_ignores_product_and_policy_availability(
    server: Any, acme: dict[str, Any]
) -> None:
    policy = await create_policy(server, slug="old")
    for path, body in (
        (f"/v1/admin/products/{acme['id']}/active", {"active": False}),
        (f"/v1/admin/policies/{policy['id']}/active", {"active": False}),
        (f"/v1/admin/policies/{policy['id']}/public", {"public": False}),
        (f"/v1/admin/policies/{policy['id']}/archived", {"archived": True}),
    ):
        response = await server.admin_patch(path, body)
        assert response.status_code == 200, response.text
    response = await issue(server, policy_slug="old", entitlements=["not-in-any-catalog"])
    assert response.status_code == 200
    assert (await load_license(server, response.json()["license_id"])).policy_id == policy["id"]


async def test_no_one_trial_rule_for_manual_issue(server: Any, acme: dict[str, Any]) -> None:
    for _ in range(2):
        response = await issue(server, is_trial=True, buyer_email="t@example.com")
        assert response.status_code == 200
        assert response.json()["is_trial"] is True


async def test_invalid_field_values(server: Any, acme: dict[str, Any]) -> None:
    for field, value in (
        ("max_machines", -1),
        ("grace_seconds", -1),
        ("grace_seconds", 2**63),
        ("max_machines", "3"),
        ("max_machines", 1.5),
        ("grace_seconds", True),
        ("is_trial", "true"),
        ("is_trial", 1),
        ("entitlements", "pro"),
        ("entitlements", [1]),
        ("entitlements", ["ok", None]),
        ("note", "n" * 1001),
        ("product_slug", 5),
        ("buyer_email", 5),
    ):
        assert_error(await issue(server, **{field: value}), 400, "bad_request")
    async with server.state.db.read() as session:
        assert (await session.execute(sa.select(sa.func.count(License.id)))).scalar_one() == 0


async def test_note_is_stored_in_metadata(server: Any, acme: dict[str, Any]) -> None:
    note = "comp seat for a conference speaker " + "x" * 965
    assert len(note) == 1000
    response = await issue(server, note=note)
    assert response.status_code == 200
    row = await load_license(server, response.json()["license_id"])
    assert row.license_metadata == {"source": "admin_issue", "note": note}


# --- entitlements ---------------------------------------------------------------------


async def test_entitlements_outside_key_limits_are_400(server: Any, acme: dict[str, Any]) -> None:
    for entitlements in (
        [""],
        ["ok", ""],
        ["x" * 256],
        ["é" * 128],  # 128 characters, 256 bytes
        [f"e{i}" for i in range(256)],
    ):
        assert_error(await issue(server, entitlements=entitlements), 400, "bad_request")
    async with server.state.db.read() as session:
        assert (await session.execute(sa.select(sa.func.count(License.id)))).scalar_one() == 0
    assert await audit_rows(server, "license.issue_manual") == []
    assert await events(server, "license.issued") == []


async def test_entitlements_at_key_limits_are_accepted(server: Any, acme: dict[str, Any]) -> None:
    big = [f"{i:03d}" + "é" * 126 for i in range(255)]  # 3 + 252 = 255 bytes each
    assert all(len(e.encode()) == 255 for e in big)
    response = await issue(server, entitlements=big)
    assert response.status_code == 200
    assert response.json()["entitlements"] == big
    public = load_public_key_pem(
        (await server.client.get("/v1/issuer/public-key")).json()["public_key_pem"]
    )
    assert verify_key(response.json()["license_key"], public).entitlements == tuple(big)


# --- buyer e-mail and npub ------------------------------------------------------------


async def test_buyer_email_and_npub_are_trimmed(server: Any, acme: dict[str, Any]) -> None:
    response = await issue(server, buyer_email="  Ann@Example.com ", nostr_npub=" npub1xyz ")
    assert response.status_code == 200
    row = await load_license(server, response.json()["license_id"])
    assert row.buyer_email == "Ann@Example.com"
    assert row.nostr_npub == "npub1xyz"


async def test_invalid_buyer_email(server: Any, acme: dict[str, Any]) -> None:
    for email in ("ann", "@example.com", "ann@", "a@b@c", "  @  ", "ann at example.com"):
        assert_error(await issue(server, buyer_email=email), 400, "bad_request")
    async with server.state.db.read() as session:
        assert (await session.execute(sa.select(sa.func.count(License.id)))).scalar_one() == 0


# --- the key --------------------------------------------------------------------------


async def test_issued_key_verifies_with_the_public_key(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    expires = T0 + timedelta(days=365, microseconds=500)
    response = await issue(
        server, expires_at=ts(expires), is_trial=True, entitlements=["pro", "multi-device"]
    )
    body = response.json()
    key = body["license_key"]
    prefix, payload, signature = key.split("-")
    assert prefix == "LIC1"
    assert payload == payload.upper()
    assert signature == signature.upper()
    assert "=" not in key
    assert len(signature) == 103
    info = (await server.client.get("/v1/issuer/public-key")).json()
    parsed = verify_key(key, load_public_key_pem(info["public_key_pem"]))
    assert parsed.version == 2
    assert parsed.flags == FLAG_TRIAL
    assert str(parsed.license_id) == body["license_id"]
    assert str(parsed.product_id) == acme["id"]
    assert parsed.issued_at == int(T0.timestamp())
    assert parsed.expires_at == int(expires.timestamp())
    assert parsed.fingerprint_hash == bytes(32)
    assert parsed.entitlements == ("pro", "multi-device")


async def test_perpetual_non_trial_key(server: Any, acme: dict[str, Any]) -> None:
    body = (await issue(server)).json()
    info = (await server.client.get("/v1/issuer/public-key")).json()
    parsed = verify_key(body["license_key"], load_public_key_pem(info["public_key_pem"]))
    assert (parsed.flags, parsed.expires_at, parsed.entitlements) == (0, 0, ())


async def test_issued_key_validates(server: Any, acme: dict[str, Any]) -> None:
    body = (await issue(server, entitlements=["pro"])).json()
    response = await server.client.post("/v1/validate", json={"key": body["license_key"]})
    result = response.json()
    assert result["ok"] is True
    assert result["license_id"] == body["license_id"]
    assert "license_key" not in result


# --- audit and event ------------------------------------------------------------------


async def test_issue_writes_audit_and_event(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    policy = await create_policy(server, slug="pro", entitlements=["pro"], duration_seconds=3600)
    response = await server.client.post(
        "/v1/admin/licenses",
        json={"product_slug": "acme", "policy_slug": "pro", "buyer_email": "a@b.c"},
        headers={**ADMIN, "User-Agent": "ops-console/2"},
    )
    body = response.json()
    expected = {
        "product_id": acme["id"],
        "policy_id": policy["id"],
        "is_trial": False,
        "expires_at": ts(T0 + timedelta(hours=1)),
        "entitlements": ["pro"],
    }
    (entry,) = await audit_rows(server, "license.issue_manual")
    assert_master_actor(entry)
    assert entry.user_agent == "ops-console/2"
    assert entry.target_kind == "license"
    assert entry.target_id == body["license_id"]
    assert entry.details == expected
    (row,) = await event_rows(server, "license.issued")
    envelope = json.loads(row.payload_json)
    assert envelope == {
        "event_type": "license.issued",
        "timestamp": ts(T0),
        "data": {"license_id": body["license_id"], **expected, "source": "admin_issue"},
    }
    assert "invoice_id" not in envelope["data"]
    assert row.payload_json == json.dumps(
        envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


async def test_issue_event_without_policy_keeps_non_ascii(
    server: Any, acme: dict[str, Any]
) -> None:
    response = await server.client.post(
        "/v1/admin/licenses",
        json={"product_slug": "acme", "entitlements": ["café", "b"], "is_trial": True},
        headers={**ADMIN, "User-Agent": "u" * 600},
    )
    body = response.json()
    (row,) = await event_rows(server, "license.issued")
    assert json.loads(row.payload_json)["data"] == {
        "license_id": body["license_id"],
        "product_id": acme["id"],
        "policy_id": None,
        "is_trial": True,
        "expires_at": None,
        "entitlements": ["café", "b"],
        "source": "admin_issue",
    }
    assert '"entitlements":["café","b"]' in row.payload_json
    (entry,) = await audit_rows(server, "license.issue_manual")
    assert entry.user_agent == "u" * 512
    assert entry.details["entitlements"] == ["café", "b"]


# --- revoke / suspend / unsuspend -----------------------------------------------------


async def test_revoke(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    lic = await issue_license(server)
    response = await server.admin_post(
        f"/v1/admin/licenses/{lic['license_id']}/revoke", {"reason": "refund"}
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    row = await load_license(server, lic["license_id"])
    assert (row.status, row.revoked_at, row.revocation_reason) == ("revoked", T0, "refund")
    (entry,) = await audit_rows(server, "license.revoke")
    assert_master_actor(entry)
    assert (entry.target_kind, entry.target_id) == ("license", lic["license_id"])
    assert entry.details == {"reason": "refund"}
    (event,) = await events(server, "license.revoked")
    assert event["data"] == {"license_id": lic["license_id"], "reason": "refund"}
    again = await server.admin_post(f"/v1/admin/licenses/{lic['license_id']}/revoke")
    assert_error(
        again,
        404,
        "not_found",
        f"not found: license {lic['license_id']} (already revoked or does not exist)",
    )
    assert len(await audit_rows(server, "license.revoke")) == 1
    assert len(await events(server, "license.revoked")) == 1


async def test_revoke_default_reason(server: Any, acme: dict[str, Any]) -> None:
    for body in (None, {}, {"reason": ""}, {"reason": None}):
        lic = await issue_license(server)
        path = f"/v1/admin/licenses/{lic['license_id']}/revoke"
        if body is None:
            response = await server.client.post(path, headers=ADMIN)
        else:
            response = await server.client.post(path, json=body, headers=ADMIN)
        assert response.status_code == 200, response.text
        row = await load_license(server, lic["license_id"])
        assert row.revocation_reason == "admin revoke"
        assert (await audit_rows(server, "license.revoke"))[-1].details == {
            "reason": "admin revoke"
        }
        assert (await events(server, "license.revoked"))[-1]["data"] == {
            "license_id": lic["license_id"],
            "reason": "admin revoke",
        }


async def test_revoke_unknown_license(server: Any) -> None:
    ghost = str(uuid.uuid4())
    assert_error(
        await server.admin_post(f"/v1/admin/licenses/{ghost}/revoke"),
        404,
        "not_found",
        f"not found: license {ghost} (already revoked or does not exist)",
    )
    assert_error(await server.admin_post("/v1/admin/licenses/not-an-id/revoke"), 404, "not_found")


async def test_revoke_reason_too_long(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    path = f"/v1/admin/licenses/{lic['license_id']}/revoke"
    assert_error(await server.admin_post(path, {"reason": "r" * 1001}), 400, "bad_request")
    assert (await load_license(server, lic["license_id"])).status == "active"
    assert (await server.admin_post(path, {"reason": "r" * 1000})).status_code == 200


async def test_revoke_a_suspended_license_keeps_suspended_at(
    server: Any, acme: dict[str, Any]
) -> None:
    clock.freeze(T0)
    lic = await issue_license(server)
    await server.admin_post(f"/v1/admin/licenses/{lic['license_id']}/suspend", {"reason": "s"})
    clock.advance(timedelta(hours=2))
    response = await server.admin_post(f"/v1/admin/licenses/{lic['license_id']}/revoke")
    assert response.status_code == 200
    row = await load_license(server, lic["license_id"])
    assert row.status == "revoked"
    assert row.suspended_at == T0
    assert row.suspension_reason == "s"
    assert row.revoked_at == T0 + timedelta(hours=2)


async def test_suspend_and_unsuspend(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    lic = await issue_license(server)
    path = f"/v1/admin/licenses/{lic['license_id']}"
    response = await server.admin_post(f"{path}/suspend", {"reason": "fraud check"})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    row = await load_license(server, lic["license_id"])
    assert (row.status, row.suspended_at, row.suspension_reason) == (
        "suspended",
        T0,
        "fraud check",
    )
    assert_error(
        await server.admin_post(f"{path}/suspend"),
        404,
        "not_found",
        f"not found: active license {lic['license_id']}",
    )
    clock.advance(timedelta(minutes=1))
    response = await server.admin_post(f"{path}/unsuspend")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    row = await load_license(server, lic["license_id"])
    assert (row.status, row.suspended_at, row.suspension_reason) == ("active", None, None)
    listing = (await server.admin_get("/v1/admin/licenses", product_id=acme["id"])).json()
    (entry,) = listing["licenses"]
    assert (entry["status"], entry["suspended_at"], entry["suspension_reason"]) == (
        "active",
        None,
        None,
    )
    assert_error(
        await server.admin_post(f"{path}/unsuspend"),
        404,
        "not_found",
        f"not found: suspended license {lic['license_id']}",
    )
    (suspend_audit,) = await audit_rows(server, "license.suspend")
    assert suspend_audit.details == {"reason": "fraud check"}
    assert (suspend_audit.target_kind, suspend_audit.target_id) == ("license", lic["license_id"])
    (unsuspend_audit,) = await audit_rows(server, "license.unsuspend")
    assert unsuspend_audit.details == {}
    assert_master_actor(unsuspend_audit)
    assert [e["data"] for e in await events(server, "license.suspended")] == [
        {"license_id": lic["license_id"], "reason": "fraud check"}
    ]
    assert [e["data"] for e in await events(server, "license.unsuspended")] == [
        {"license_id": lic["license_id"]}
    ]


async def test_suspend_default_reason(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    response = await server.admin_post(
        f"/v1/admin/licenses/{lic['license_id']}/suspend", {"reason": ""}
    )
    assert response.status_code == 200
    assert (await load_license(server, lic["license_id"])).suspension_reason == "admin suspend"
    (event,) = await events(server, "license.suspended")
    assert event["data"] == {"license_id": lic["license_id"], "reason": "admin suspend"}


async def test_status_changes_on_revoked_and_unknown_licenses(
    server: Any, acme: dict[str, Any]
) -> None:
    lic = await issue_license(server)
    await server.admin_post(f"/v1/admin/licenses/{lic['license_id']}/revoke")
    assert_error(
        await server.admin_post(f"/v1/admin/licenses/{lic['license_id']}/suspend"),
        404,
        "not_found",
    )
    assert_error(
        await server.admin_post(f"/v1/admin/licenses/{lic['license_id']}/unsuspend"),
        404,
        "not_found",
    )
    ghost = str(uuid.uuid4())
    assert_error(
        await server.admin_post(f"/v1/admin/licenses/{ghost}/suspend"),
        404,
        "not_found",
        f"not found: active license {ghost}",
    )
    assert (await load_license(server, lic["license_id"])).status == "revoked"


# --- list by product ------------------------------------------------------------------


async def test_list_requires_product_id(server: Any) -> None:
    assert_error(
        await server.admin_get("/v1/admin/licenses"),
        400,
        "bad_request",
        "bad request: missing query parameter 'product_id'",
    )


async def test_list_by_product_newest_first(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    zeta = await create_product(server, "zeta")
    first = await issue_license(server, buyer_email="x@y.z")
    clock.advance(timedelta(seconds=5))
    second = await issue_license(server, entitlements=["pro"])
    await issue_license(server, "zeta")
    response = await server.admin_get("/v1/admin/licenses", product_id=acme["id"])
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    listed = response.json()["licenses"]
    assert [entry["id"] for entry in listed] == [second["license_id"], first["license_id"]]
    for entry in listed:
        assert set(entry) == LICENSE_FIELDS
    newest = listed[0]
    assert newest == {
        "id": second["license_id"],
        "product_id": acme["id"],
        "invoice_id": None,
        "status": "active",
        "fingerprint": None,
        "bound_identity": None,
        "issued_at": ts(T0 + timedelta(seconds=5)),
        "revoked_at": None,
        "revocation_reason": None,
        "metadata": {"source": "admin_issue", "note": None},
        "policy_id": None,
        "expires_at": None,
        "grace_seconds": 0,
        "max_machines": 1,
        "suspended_at": None,
        "suspension_reason": None,
        "entitlements": ["pro"],
        "is_trial": False,
        "trial_started_at": None,
        "nostr_npub": None,
        "buyer_email": None,
    }
    assert listed[1]["buyer_email"] == "x@y.z"
    zeta_list = (await server.admin_get("/v1/admin/licenses", product_id=zeta["id"])).json()
    assert len(zeta_list["licenses"]) == 1


async def test_list_unknown_product_is_empty(server: Any, acme: dict[str, Any]) -> None:
    await issue_license(server)
    for wanted in (str(uuid.uuid4()), "acme"):
        response = await server.admin_get("/v1/admin/licenses", product_id=wanted)
        assert response.status_code == 200
        assert response.json() == {"licenses": []}


async def test_list_shows_revoked_licenses(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    lic = await issue_license(server)
    await server.admin_post(f"/v1/admin/licenses/{lic['license_id']}/revoke", {"reason": "r"})
    (entry,) = (await server.admin_get("/v1/admin/licenses", product_id=acme["id"])).json()[
        "licenses"
    ]
    assert (entry["status"], entry["revoked_at"], entry["revocation_reason"]) == (
        "revoked",
        ts(T0),
        "r",
    )


# --- search ---------------------------------------------------------------------------


async def test_search_by_buyer_email_is_case_insensitive(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    a = await issue_license(server, buyer_email="Alice@Example.COM")
    clock.advance(timedelta(seconds=1))
    b = await issue_license(server, buyer_email="alice@example.com")
    await issue_license(server, buyer_email="bob@example.com")
    await issue_license(server)
    response = await server.admin_get("/v1/admin/licenses/search", buyer_email="ALICE@example.com")
    assert response.status_code == 200
    found = response.json()["licenses"]
    assert [entry["id"] for entry in found] == [b["license_id"], a["license_id"]]
    partial = await server.admin_get("/v1/admin/licenses/search", buyer_email="alice@example")
    assert partial.json() == {"licenses": []}


async def test_search_by_npub_is_exact_and_filters_combine(
    server: Any, acme: dict[str, Any]
) -> None:
    one = await issue_license(server, nostr_npub="npub1abc", buyer_email="a@x.io")
    await issue_license(server, nostr_npub="NPUB1ABC", buyer_email="a@x.io")
    await issue_license(server, nostr_npub="npub1abc", buyer_email="b@x.io")
    exact = (await server.admin_get("/v1/admin/licenses/search", nostr_npub="npub1abc")).json()
    assert len(exact["licenses"]) == 2
    both = (
        await server.admin_get(
            "/v1/admin/licenses/search", nostr_npub="npub1abc", buyer_email="A@X.IO"
        )
    ).json()
    assert [entry["id"] for entry in both["licenses"]] == [one["license_id"]]


async def test_search_rows_carry_product_and_policy(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    await create_policy(server, slug="pro", name="Pro Plan")
    with_policy = await issue_license(server, policy_slug="pro", buyer_email="p@x.io")
    clock.advance(timedelta(seconds=1))
    without = await issue_license(server, buyer_email="p@x.io")
    found = (await server.admin_get("/v1/admin/licenses/search", buyer_email="p@x.io")).json()[
        "licenses"
    ]
    assert [entry["id"] for entry in found] == [without["license_id"], with_policy["license_id"]]
    assert set(found[0]) == LICENSE_FIELDS | {"product_slug"}
    assert found[0]["product_slug"] == "acme"
    assert set(found[1]) == LICENSE_FIELDS | {"product_slug", "policy_slug", "policy_name"}
    assert (found[1]["policy_slug"], found[1]["policy_name"]) == ("pro", "Pro Plan")
    assert "license_key" not in found[0]


async def test_search_without_filter_caps_at_100_newest_first(
    server: Any, acme: dict[str, Any]
) -> None:
    clock.freeze(T0)
    ids = []
    for _ in range(103):
        ids.append((await issue_license(server))["license_id"])
        clock.advance(timedelta(seconds=1))
    found = (await server.admin_get("/v1/admin/licenses/search")).json()["licenses"]
    assert [entry["id"] for entry in found] == list(reversed(ids))[:100]
    matching = (await server.admin_get("/v1/admin/licenses/search", nostr_npub="nobody")).json()
    assert matching == {"licenses": []}


async def test_search_by_invoice_id(server: Any, acme: dict[str, Any]) -> None:
    first = await issue_license(server)
    second = await issue_license(server)
    await issue_license(server)

    def invoice(kind: str, provider_id: str, subject: str | None, **extra: Any) -> Invoice:
        return Invoice(
            id=str(uuid.uuid4()),
            kind=kind,
            status="settled",
            product_id=acme["id"],
            amount_sats=1000,
            base_price_sats=1000,
            provider_kind="sandbox",
            provider_invoice_id=provider_id,
            subject_license_id=subject,
            created_at=T0,
            updated_at=T0,
            **extra,
        )

    purchase = invoice("purchase", "sbx_purchase_1", None)
    policy = await create_policy(server, "acme", "monthly")
    subscription = Subscription(
        id=str(uuid.uuid4()),
        license_id=first["license_id"],
        policy_id=policy["id"],
        product_id=acme["id"],
        status="active",
        period_days=30,
        listed_currency="SAT",
        listed_value=1000,
        started_at=T0,
        current_period_start=T0,
        current_period_end=T0,
        created_at=T0,
        updated_at=T0,
    )
    renewal = invoice(
        "renewal",
        "btc-renewal-2",
        first["license_id"],
        subscription_id=subscription.id,
        cycle_number=2,
    )
    tier_change = invoice("tier_change", "zap-order-9", second["license_id"])
    async with server.state.db.write() as session:
        session.add(subscription)
        await session.flush()
        session.add_all([purchase, renewal, tier_change])
        await session.flush()
        await session.execute(
            sa.update(License)
            .where(License.id == first["license_id"])
            .values(invoice_id=purchase.id)
        )
    cases = {
        purchase.id: [first["license_id"]],
        "sbx_purchase_1": [first["license_id"]],
        renewal.id: [first["license_id"]],
        "btc-renewal-2": [first["license_id"]],
        tier_change.id: [second["license_id"]],
        "zap-order-9": [second["license_id"]],
        "SBX_PURCHASE_1": [],
        str(uuid.uuid4()): [],
        "nothing": [],
    }
    for wanted, expected in cases.items():
        response = await server.admin_get("/v1/admin/licenses/search", invoice_id=wanted)
        assert response.status_code == 200
        assert [entry["id"] for entry in response.json()["licenses"]] == expected, wanted
    (entry,) = (
        await server.admin_get("/v1/admin/licenses/search", invoice_id="sbx_purchase_1")
    ).json()["licenses"]
    assert entry["invoice_id"] == purchase.id


# --- summary and counts ---------------------------------------------------------------


async def test_summary_counts_and_windows(server: Any, acme: dict[str, Any]) -> None:
    empty = await server.admin_get("/v1/admin/licenses/summary")
    assert empty.json() == {
        "total": 0,
        "active": 0,
        "suspended": 0,
        "revoked": 0,
        "last_24h": 0,
        "last_7d": 0,
    }
    ids = []
    for age in (
        timedelta(days=8),
        timedelta(days=7),
        timedelta(days=2),
        timedelta(hours=24),
        timedelta(hours=1),
    ):
        clock.freeze(T0 - age)
        ids.append((await issue_license(server))["license_id"])
    clock.freeze(T0)
    await server.admin_post(f"/v1/admin/licenses/{ids[0]}/revoke")
    await server.admin_post(f"/v1/admin/licenses/{ids[1]}/suspend")
    await server.admin_post(f"/v1/admin/licenses/{ids[2]}/suspend")
    await server.admin_post(f"/v1/admin/licenses/{ids[2]}/revoke")
    summary = (await server.admin_get("/v1/admin/licenses/summary")).json()
    assert summary == {
        "total": 5,
        "active": 2,
        "suspended": 1,
        "revoked": 2,
        "last_24h": 2,
        "last_7d": 4,
    }
    clock.advance(timedelta(microseconds=1))
    later = (await server.admin_get("/v1/admin/licenses/summary")).json()
    assert (later["last_24h"], later["last_7d"]) == (1, 3)


async def test_counts_by_product_and_policy(server: Any, acme: dict[str, Any]) -> None:
    zeta = await create_product(server, "zeta")
    pro = await create_policy(server, slug="pro")
    basic = await create_policy(server, slug="basic")
    await create_policy(server, slug="unused")
    a = await issue_license(server, policy_slug="pro")
    await issue_license(server, policy_slug="pro")
    await issue_license(server, policy_slug="basic")
    await issue_license(server)
    await issue_license(server, "zeta")
    await server.admin_post(f"/v1/admin/licenses/{a['license_id']}/revoke")
    response = await server.admin_get("/v1/admin/licenses/counts")
    assert response.status_code == 200
    assert response.json() == {
        "by_product": {acme["id"]: 4, zeta["id"]: 1},
        "by_policy": {pro["id"]: 2, basic["id"]: 1},
    }


async def test_counts_empty(server: Any) -> None:
    response = await server.admin_get("/v1/admin/licenses/counts")
    assert response.json() == {"by_product": {}, "by_policy": {}}


# --- credentials ----------------------------------------------------------------------

LICENSE_ROUTES = [
    ("GET", "/v1/admin/licenses?product_id=x"),
    ("GET", "/v1/admin/licenses/search"),
    ("GET", "/v1/admin/licenses/summary"),
    ("GET", "/v1/admin/licenses/counts"),
    ("POST", "/v1/admin/licenses"),
    ("POST", "/v1/admin/licenses/{id}/revoke"),
    ("POST", "/v1/admin/licenses/{id}/suspend"),
    ("POST", "/v1/admin/licenses/{id}/unsuspend"),
]


async def _call(server: Any, method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
    return await server.client.request(method, path, headers=headers, **kw)


async def test_credentials_required(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    refused = [
        {},
        {"Authorization": "Basic Zm9vOmJhcg=="},
        {"Authorization": "Bearer "},
        {"Authorization": f"bearer {ADMIN_KEY}"},
        {"Authorization": ADMIN_KEY},
    ]
    for method, template in LICENSE_ROUTES:
        path = template.replace("{id}", lic["license_id"])
        body = {"product_slug": "acme", "reason": "x"} if method == "POST" else None
        for headers in refused:
            response = await server.client.request(method, path, headers=headers, json=body)
            assert response.status_code == 401, (path, headers, response.text)
            assert response.json() == {
                "ok": False,
                "error": "unauthorized",
                "message": "unauthorized",
            }
        for token in ("not-the-admin-key-0123456789abcdef", "ks_" + "A" * 43):
            wrong = await server.client.request(
                method, path, headers={"Authorization": f"Bearer {token}"}, json=body
            )
            assert wrong.status_code == 403, (path, token)
            assert wrong.json() == {"ok": False, "error": "forbidden", "message": "forbidden"}
    # nothing changed
    assert (await load_license(server, lic["license_id"])).status == "active"
    async with server.state.db.read() as session:
        assert (await session.execute(sa.select(sa.func.count(License.id)))).scalar_one() == 1
    assert await audit_rows(server, "license.revoke") == []


async def test_malformed_body_without_credentials_is_401(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    for path in ("/v1/admin/licenses", f"/v1/admin/licenses/{lic['license_id']}/revoke"):
        response = await server.client.post(
            path, content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
        wrong_type = await server.client.post(path, content=b"{not json")
        assert wrong_type.status_code == 401
        with_key = await server.client.post(
            path, content=b"{not json", headers={"Content-Type": "application/json", **ADMIN}
        )
        assert_error(with_key, 400, "bad_request", "bad request: invalid JSON body")


async def test_missing_query_without_credentials_is_401(server: Any) -> None:
    response = await server.client.get("/v1/admin/licenses")
    assert response.status_code == 401
