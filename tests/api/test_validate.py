"""POST /v1/validate: decision order, response shapes, machine binding and the
validation log (public-api.md 1.2, 1.9, 8; license-keys.md 2.2, 5; DECISIONS 10-14)."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from keysat.app import create_app
from keysat.clock import clock
from keysat.keys import (
    FLAG_FINGERPRINT_BOUND,
    FLAG_TRIAL,
    derive_key,
    encode_key,
    fingerprint_hash,
    generate_private_key,
    load_public_key_pem,
    parse_key,
    verify_key,
)
from keysat.licensing.models import License, ValidationLog
from support import (
    create_policy,
    create_product,
    events,
    fields_of,
    issue_license,
    machines_of,
    sha,
    signing_key,
)

CLIENT_IP = "203.0.113.7"
T0 = datetime(2031, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
SUCCESS_BASE = {
    "ok",
    "license_id",
    "product_id",
    "product_slug",
    "issued_at",
    "status",
    "max_machines",
}


def ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


async def validate(server: Any, key: str, **fields: Any) -> dict[str, Any]:
    response = await server.client.post("/v1/validate", json={"key": key, **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def log_rows(server: Any) -> list[ValidationLog]:
    await server.flush_logs()
    async with server.state.db.read() as session:
        query = sa.select(ValidationLog).order_by(ValidationLog.id)
        return list((await session.execute(query)).scalars())


async def update_license(server: Any, license_id: str, **values: Any) -> None:
    async with server.state.db.write() as session:
        await session.execute(sa.update(License).where(License.id == license_id).values(**values))


async def load_license(server: Any, license_id: str) -> License:
    async with server.state.db.read() as session:
        row = await session.get(License, license_id)
        assert row is not None
        return row


def other_client(server: Any, client: tuple[str, int] | None) -> httpx.AsyncClient:
    """A second client on the same state, seen from another (or no) client address."""
    transport = httpx.ASGITransport(app=create_app(server.state), client=client)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://keysat.test")


@pytest.fixture
async def acme(server: Any) -> dict[str, Any]:
    return await create_product(server, "acme")


# --- success bodies ------------------------------------------------------------------


async def test_minimal_success_body_has_exactly_the_required_fields(
    server: Any, acme: dict[str, Any]
) -> None:
    clock.freeze(T0)
    lic = await issue_license(server)
    body = await validate(server, lic["license_key"])
    assert body == {
        "ok": True,
        "license_id": lic["license_id"],
        "product_id": acme["id"],
        "product_slug": "acme",
        "issued_at": ts(T0),
        "status": "active",
        "max_machines": 1,
    }


async def test_full_success_body_with_expiry_trial_entitlements_and_machine(
    server: Any, acme: dict[str, Any]
) -> None:
    clock.freeze(T0)
    expires = T0 + timedelta(days=30)
    lic = await issue_license(
        server,
        expires_at=ts(expires),
        is_trial=True,
        entitlements=["pro", "multi-device"],
        max_machines=3,
    )
    body = await validate(server, lic["license_key"], fingerprint="fp-1", product_slug="acme")
    machine_id = body.pop("machine_id")
    assert isinstance(machine_id, str)
    uuid.UUID(machine_id)
    assert body == {
        "ok": True,
        "license_id": lic["license_id"],
        "product_id": acme["id"],
        "product_slug": "acme",
        "issued_at": ts(T0),
        "expires_at": ts(expires),
        "is_trial": True,
        "entitlements": ["pro", "multi-device"],
        "status": "active",
        "max_machines": 3,
    }


async def test_is_trial_and_entitlements_and_expiry_omitted_when_not_applicable(
    server: Any, acme: dict[str, Any]
) -> None:
    lic = await issue_license(server, is_trial=False, entitlements=[], max_machines=0)
    body = await validate(server, lic["license_key"], fingerprint="fp")
    for absent in ("is_trial", "entitlements", "expires_at", "grace_until", "in_grace_period"):
        assert absent not in body
    assert "license_key" not in body
    assert body["max_machines"] == 0
    assert set(body) == SUCCESS_BASE | {"machine_id"}


async def test_machine_id_only_when_fingerprint_sent(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    assert "machine_id" not in await validate(server, lic["license_key"])
    assert "machine_id" in await validate(server, lic["license_key"], fingerprint="x")
    assert len(await machines_of(server, lic["license_id"])) == 1


async def test_success_is_logged_with_machine_and_caller(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    response = await server.client.post(
        "/v1/validate",
        json={"key": lic["license_key"], "fingerprint": "raw fp"},
        headers={"User-Agent": "acme-app/1.2"},
    )
    body = response.json()
    rows = await log_rows(server)
    assert len(rows) == 1
    row = rows[0]
    assert row.result == "ok"
    assert row.license_id == lic["license_id"]
    assert row.product_id == acme["id"]
    assert row.machine_id == body["machine_id"]
    assert row.fingerprint == "raw fp"
    assert row.reason_detail is None
    assert row.client_ip == CLIENT_IP
    assert row.user_agent == "acme-app/1.2"


async def test_validate_without_fingerprint_logs_no_machine(
    server: Any, acme: dict[str, Any]
) -> None:
    lic = await issue_license(server)
    await validate(server, lic["license_key"])
    (row,) = await log_rows(server)
    assert (row.result, row.machine_id, row.fingerprint) == ("ok", None, None)


# --- key spelling and license_key refresh ----------------------------------------------


def lower_sections(key: str) -> str:
    prefix, payload, signature = key.split("-", 2)
    return f"{prefix}-{payload.lower()}-{signature.lower()}"


async def test_lower_case_sections_and_whitespace_are_accepted_without_refresh(
    server: Any, acme: dict[str, Any]
) -> None:
    lic = await issue_license(server, entitlements=["pro"])
    key = lic["license_key"]
    for variant in (key, lower_sections(key), f"  {key}\n", f"\t{lower_sections(key)} "):
        body = await validate(server, variant)
        assert body["ok"] is True, variant
        assert "license_key" not in body, variant


async def test_whole_key_lower_case_is_bad_format(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    assert await validate(server, lic["license_key"].lower()) == {
        "ok": False,
        "reason": "bad_format",
    }


async def test_license_key_returned_after_entitlements_change(
    server: Any, acme: dict[str, Any]
) -> None:
    lic = await issue_license(server, entitlements=["basic"])
    old_key = lic["license_key"]
    await update_license(server, lic["license_id"], entitlements=["basic", "pro"])
    body = await validate(server, old_key)
    assert body["ok"] is True
    assert body["entitlements"] == ["basic", "pro"]
    refreshed = body["license_key"]
    assert refreshed != old_key
    row = await load_license(server, lic["license_id"])
    assert refreshed == derive_key(
        product_id=row.product_id,
        license_id=row.id,
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        is_trial=row.is_trial,
        entitlements=row.entitlements,
        private_key=await signing_key(server),
    )
    public = load_public_key_pem((await server.client.get("/v1/pubkey")).json()["public_key_pem"])
    assert verify_key(refreshed, public).entitlements == ("basic", "pro")
    # the refreshed key is current: no further refresh, also in lower case
    assert "license_key" not in await validate(server, refreshed)
    lower = await validate(server, lower_sections(refreshed))
    assert lower["ok"] is True
    assert "license_key" not in lower
    # the old key keeps working, and keeps being offered the refresh
    assert (await validate(server, lower_sections(old_key)))["license_key"] == refreshed


async def test_license_key_returned_after_expiry_moves(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    lic = await issue_license(server, expires_at=ts(T0 + timedelta(days=10)))
    new_expiry = T0 + timedelta(days=40)
    await update_license(server, lic["license_id"], expires_at=new_expiry)
    body = await validate(server, lic["license_key"])
    assert body["expires_at"] == ts(new_expiry)
    assert parse_key(body["license_key"]).expires_at == int(new_expiry.timestamp())
    assert "license_key" not in await validate(server, body["license_key"])


async def test_row_is_the_truth_not_the_signed_payload(server: Any, acme: dict[str, Any]) -> None:
    """A key signed with an expiry in the past validates when the row is perpetual."""
    clock.freeze(T0)
    lic = await issue_license(server)
    private_key = await signing_key(server)
    stale = encode_key(
        fields_of(lic["license_key"], expires_at=int(T0.timestamp()) - 86400, entitlements=("x",)),
        private_key,
    )
    body = await validate(server, stale)
    assert body["ok"] is True
    assert "expires_at" not in body
    assert "entitlements" not in body
    assert body["license_key"] == lic["license_key"]


# --- bad_format / bad_signature / not_found / invalid_state -----------------------------


BAD_FORMAT_CASES = [
    ("garbage", "expected LIC1-<payload>-<signature>"),
    ("", "expected LIC1-<payload>-<signature>"),
    ("LIC9-AAAAAAAA-AAAAAAAA", "expected LIC1-<payload>-<signature>"),
    ("LIC1-AAAAAAAA", "expected LIC1-<payload>-<signature>"),
    ("LIC1-!!-AAAA", "payload section is not valid base32"),
    ("LIC1-\u00c4\u00c4-AAAA", "payload section is not valid base32"),
    ("LIC1-AE======-AAAA", "payload section is not valid base32"),
    ("LIC1-AB-AAAA", "payload section is not valid base32"),  # non-zero trailing bits
    ("LIC1-AE-AAAA-", "signature section is not valid base32"),
    ("LIC1-AE-AAAA", "signature must be 64 bytes, got 2"),
]


async def test_bad_format_is_soft_and_logged_without_ids(server: Any) -> None:
    for key, _detail in BAD_FORMAT_CASES:
        assert await validate(server, key, fingerprint="fp") == {
            "ok": False,
            "reason": "bad_format",
        }, key
    rows = await log_rows(server)
    assert [(r.result, r.reason_detail) for r in rows] == [
        ("bad_format", detail) for _key, detail in BAD_FORMAT_CASES
    ]
    for row in rows:
        assert (row.license_id, row.product_id, row.machine_id) == (None, None, None)
        assert row.client_ip == CLIENT_IP
        assert row.fingerprint == "fp"


async def test_unsupported_version_is_bad_format(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    prefix, payload, signature = lic["license_key"].split("-")
    # the first character carries the top five bits of the version byte: 0x02 -> 0x0A
    tampered = f"{prefix}-B{payload[1:]}-{signature}"
    body = await validate(server, tampered)
    assert body == {"ok": False, "reason": "bad_format"}
    (row,) = await log_rows(server)
    assert row.reason_detail is not None
    assert row.reason_detail.startswith("unsupported key version")


async def test_bad_signature_is_logged_with_unverified_ids(
    server: Any, acme: dict[str, Any]
) -> None:
    lic = await issue_license(server)
    forged_license = uuid.uuid4()
    forged_product = uuid.uuid4()
    forged = encode_key(
        fields_of(lic["license_key"], license_id=forged_license, product_id=forged_product),
        generate_private_key(),
    )
    assert await validate(server, forged) == {"ok": False, "reason": "bad_signature"}
    # the genuine ids signed by another key are also refused
    resigned = encode_key(fields_of(lic["license_key"]), generate_private_key())
    assert await validate(server, resigned) == {"ok": False, "reason": "bad_signature"}
    first, second = await log_rows(server)
    assert first.result == "bad_signature"
    assert (first.license_id, first.product_id) == (str(forged_license), str(forged_product))
    assert second.result == "bad_signature"
    assert (second.license_id, second.product_id) == (lic["license_id"], acme["id"])


async def test_tampered_payload_is_bad_signature(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, entitlements=["basic"])
    tampered = encode_key(
        fields_of(lic["license_key"], entitlements=("pro",)), generate_private_key()
    )
    payload = tampered.split("-")[1]
    original = lic["license_key"].split("-")
    spliced = f"{original[0]}-{payload}-{original[2]}"
    assert await validate(server, spliced) == {"ok": False, "reason": "bad_signature"}


async def test_unknown_license_is_not_found(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    ghost = uuid.uuid4()
    key = encode_key(fields_of(lic["license_key"], license_id=ghost), await signing_key(server))
    assert await validate(server, key) == {"ok": False, "reason": "not_found"}
    (row,) = await log_rows(server)
    assert (row.result, row.license_id) == ("not_found", str(ghost))


async def test_product_id_mismatch_in_signed_key_is_invalid_state(
    server: Any, acme: dict[str, Any]
) -> None:
    other = await create_product(server, "other")
    lic = await issue_license(server)
    key = encode_key(
        fields_of(lic["license_key"], product_id=uuid.UUID(other["id"])),
        await signing_key(server),
    )
    assert await validate(server, key, fingerprint="fp") == {
        "ok": False,
        "reason": "invalid_state",
    }
    (row,) = await log_rows(server)
    assert row.result == "invalid_state"
    assert row.license_id == lic["license_id"]
    assert row.reason_detail == "product id in key does not match license"
    assert await machines_of(server, lic["license_id"]) == []


# --- status, product, expiry ---------------------------------------------------------


async def test_revoked_license(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    response = await server.admin_post(
        f"/v1/admin/licenses/{lic['license_id']}/revoke", {"reason": "chargeback"}
    )
    assert response.status_code == 200
    assert await validate(server, lic["license_key"], fingerprint="fp") == {
        "ok": False,
        "reason": "revoked",
    }
    (row,) = await log_rows(server)
    assert (row.result, row.reason_detail) == ("revoked", "chargeback")
    assert (row.license_id, row.product_id) == (lic["license_id"], acme["id"])
    assert await machines_of(server, lic["license_id"]) == []


async def test_suspended_license_and_unsuspend(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    await server.admin_post(
        f"/v1/admin/licenses/{lic['license_id']}/suspend", {"reason": "unpaid invoice"}
    )
    assert await validate(server, lic["license_key"]) == {"ok": False, "reason": "suspended"}
    (row,) = await log_rows(server)
    assert (row.result, row.reason_detail) == ("suspended", "unpaid invoice")
    await server.admin_post(f"/v1/admin/licenses/{lic['license_id']}/unsuspend")
    assert (await validate(server, lic["license_key"]))["ok"] is True


async def test_revoked_wins_over_product_mismatch_and_expiry(
    server: Any, acme: dict[str, Any]
) -> None:
    clock.freeze(T0)
    lic = await issue_license(server, expires_at=ts(T0 - timedelta(days=1)))
    await server.admin_post(f"/v1/admin/licenses/{lic['license_id']}/revoke")
    body = await validate(server, lic["license_key"], product_slug="other")
    assert body == {"ok": False, "reason": "revoked"}


async def test_product_slug_mismatch(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    for slug in ("other", "ACME", "acme "):
        assert await validate(server, lic["license_key"], product_slug=slug, fingerprint="fp") == {
            "ok": False,
            "reason": "product_mismatch",
        }, slug
    rows = await log_rows(server)
    assert [(r.result, r.license_id) for r in rows] == [("product_mismatch", lic["license_id"])] * 3
    assert await machines_of(server, lic["license_id"]) == []
    assert (await validate(server, lic["license_key"], product_slug="acme"))["ok"] is True


async def test_product_mismatch_wins_over_expiry(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    lic = await issue_license(server, expires_at=ts(T0 - timedelta(days=1)))
    body = await validate(server, lic["license_key"], product_slug="other")
    assert body == {"ok": False, "reason": "product_mismatch"}


async def test_expired_license_body_and_log(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    expires = T0 - timedelta(days=2)
    lic = await issue_license(server, expires_at=ts(expires))
    body = await validate(server, lic["license_key"], fingerprint="fp")
    assert body == {
        "ok": False,
        "reason": "expired",
        "license_id": lic["license_id"],
        "product_id": acme["id"],
        "expires_at": ts(expires),
    }
    (row,) = await log_rows(server)
    assert row.result == "expired"
    assert row.reason_detail == f"expired at {ts(expires)}"
    assert await machines_of(server, lic["license_id"]) == []


async def test_expiry_and_grace_boundaries(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    expires = T0 + timedelta(days=1)
    cutoff = expires + timedelta(seconds=3600)
    lic = await issue_license(server, expires_at=ts(expires), grace_seconds=3600)
    key = lic["license_key"]

    clock.freeze(expires - timedelta(microseconds=1))
    before = await validate(server, key)
    assert before["ok"] is True
    assert "in_grace_period" not in before
    assert "grace_until" not in before
    assert before["expires_at"] == ts(expires)

    clock.freeze(expires)
    at_expiry = await validate(server, key)
    assert at_expiry["ok"] is True
    assert at_expiry["in_grace_period"] is True
    assert at_expiry["grace_until"] == ts(cutoff)

    clock.freeze(cutoff - timedelta(microseconds=1))
    last = await validate(server, key)
    assert last["ok"] is True
    assert last["in_grace_period"] is True
    assert last["grace_until"] == ts(cutoff)
    assert last["expires_at"] == ts(expires)

    clock.freeze(cutoff)
    assert (await validate(server, key))["reason"] == "expired"

    rows = await log_rows(server)
    assert [(r.result, r.reason_detail) for r in rows] == [
        ("ok", None),
        ("ok", "in_grace_period"),
        ("ok", "in_grace_period"),
        ("expired", f"expired at {ts(expires)}"),
    ]


async def test_expiry_without_grace_is_inclusive(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    expires = T0 + timedelta(hours=1)
    lic = await issue_license(server, expires_at=ts(expires))
    clock.freeze(expires - timedelta(seconds=1))
    assert (await validate(server, lic["license_key"]))["ok"] is True
    clock.freeze(expires)
    assert (await validate(server, lic["license_key"]))["reason"] == "expired"


async def test_grace_from_policy(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    await create_policy(server, slug="monthly", duration_seconds=86400, grace_seconds=7200)
    lic = await issue_license(server, policy_slug="monthly")
    clock.advance(timedelta(days=1, hours=1))
    body = await validate(server, lic["license_key"], fingerprint="fp")
    assert body["in_grace_period"] is True
    assert body["grace_until"] == ts(T0 + timedelta(days=1, hours=2))
    assert "machine_id" in body
    clock.advance(timedelta(hours=1))
    assert (await validate(server, lic["license_key"]))["reason"] == "expired"


# --- fingerprint binding --------------------------------------------------------------


async def test_fingerprint_bound_key(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=5)
    bound = encode_key(
        fields_of(
            lic["license_key"],
            flags=FLAG_FINGERPRINT_BOUND,
            fingerprint_hash=fingerprint_hash("machine-a"),
        ),
        await signing_key(server),
    )
    assert await validate(server, bound, fingerprint="machine-b") == {
        "ok": False,
        "reason": "fingerprint_mismatch",
    }
    assert await machines_of(server, lic["license_id"]) == []
    # no fingerprint: no bound-key check
    assert (await validate(server, bound))["ok"] is True
    good = await validate(server, bound, fingerprint="machine-a")
    assert good["ok"] is True
    assert "machine_id" in good
    # the derived key never carries the flag, so the client is handed the canonical key
    assert good["license_key"] == lic["license_key"]
    rows = await log_rows(server)
    assert [r.result for r in rows] == ["fingerprint_mismatch", "ok", "ok"]
    assert rows[0].fingerprint == "machine-b"


async def test_trial_flag_in_key_does_not_matter(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    flagged = encode_key(fields_of(lic["license_key"], flags=FLAG_TRIAL), await signing_key(server))
    body = await validate(server, flagged)
    assert body["ok"] is True
    assert "is_trial" not in body
    assert body["license_key"] == lic["license_key"]


async def test_single_seat_taken_by_another_machine(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=1)
    first = await validate(server, lic["license_key"], fingerprint="A")
    assert first["ok"] is True
    assert await validate(server, lic["license_key"], fingerprint="B") == {
        "ok": False,
        "reason": "fingerprint_mismatch",
    }
    again = await validate(server, lic["license_key"], fingerprint="A")
    assert again["machine_id"] == first["machine_id"]
    machines = await machines_of(server, lic["license_id"])
    assert [m.fingerprint for m in machines] == ["A"]
    rows = await log_rows(server)
    assert [r.result for r in rows] == ["ok", "fingerprint_mismatch", "ok"]
    assert rows[1].machine_id is None


async def test_too_many_machines(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=2)
    key = lic["license_key"]
    assert (await validate(server, key, fingerprint="A"))["ok"] is True
    assert (await validate(server, key, fingerprint="B"))["ok"] is True
    assert await validate(server, key, fingerprint="C") == {
        "ok": False,
        "reason": "too_many_machines",
        "license_id": lic["license_id"],
        "product_id": acme["id"],
        "max_machines": 2,
    }
    # known machines keep working at the cap
    assert (await validate(server, key, fingerprint="B"))["ok"] is True
    assert len(await machines_of(server, lic["license_id"])) == 2
    rows = await log_rows(server)
    assert [r.result for r in rows] == ["ok", "ok", "too_many_machines", "ok"]
    assert rows[2].reason_detail == "cap 2 already reached"


async def test_unlimited_machines(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=0)
    ids = {
        (await validate(server, lic["license_key"], fingerprint=f"m{i}"))["machine_id"]
        for i in range(6)
    }
    assert len(ids) == 6


async def test_new_machine_row_and_event(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    lic = await issue_license(server, max_machines=2)
    body = await validate(
        server,
        lic["license_key"],
        fingerprint="Raw Fingerprint ",
        hostname="build-box",
        platform="linux-x86_64",
    )
    (machine,) = await machines_of(server, lic["license_id"])
    assert machine.id == body["machine_id"]
    assert machine.fingerprint == "Raw Fingerprint "
    assert machine.fingerprint_hash == sha("Raw Fingerprint ")
    assert (machine.hostname, machine.platform) == ("build-box", "linux-x86_64")
    assert machine.ip_last_seen == CLIENT_IP
    assert machine.activated_at == T0
    assert machine.last_heartbeat_at == T0
    assert machine.deactivated_at is None
    (event,) = await events(server, "machine.activated")
    assert event["data"] == {
        "license_id": lic["license_id"],
        "machine_id": machine.id,
        "fingerprint_hash": sha("Raw Fingerprint "),
    }
    # refresh: no new row, no new event, heartbeat moves
    clock.advance(timedelta(minutes=5))
    again = await validate(server, lic["license_key"], fingerprint="Raw Fingerprint ")
    assert again["machine_id"] == machine.id
    # The refresh of a known machine is written behind: visible once the buffer flushes.
    (pending,) = await machines_of(server, lic["license_id"])
    assert pending.last_heartbeat_at == T0
    await server.flush_logs()
    (refreshed,) = await machines_of(server, lic["license_id"])
    assert refreshed.last_heartbeat_at == T0 + timedelta(minutes=5)
    assert refreshed.activated_at == T0
    assert len(await events(server, "machine.activated")) == 1


async def test_fingerprint_is_not_trimmed(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=0)
    one = await validate(server, lic["license_key"], fingerprint="fp")
    two = await validate(server, lic["license_key"], fingerprint=" fp")
    assert one["machine_id"] != two["machine_id"]


async def test_deactivated_machine_frees_the_single_seat(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=1)
    await validate(server, lic["license_key"], fingerprint="A")
    response = await server.client.post(
        "/v1/machines/deactivate", json={"key": lic["license_key"], "fingerprint": "A"}
    )
    assert response.json() == {"ok": True}
    body = await validate(server, lic["license_key"], fingerprint="B")
    assert body["ok"] is True
    # the old machine comes back as a new row only if a seat is free
    assert (await validate(server, lic["license_key"], fingerprint="A"))[
        "reason"
    ] == "fingerprint_mismatch"


# --- trial limit by machine -----------------------------------------------------------


async def test_trial_already_used_on_another_trial_license(
    server: Any, acme: dict[str, Any]
) -> None:
    first = await issue_license(server, is_trial=True)
    second = await issue_license(server, is_trial=True)
    assert (await validate(server, first["license_key"], fingerprint="laptop"))["ok"] is True
    assert await validate(server, second["license_key"], fingerprint="laptop") == {
        "ok": False,
        "reason": "trial_already_used",
    }
    assert await machines_of(server, second["license_id"]) == []
    # another machine is fine
    assert (await validate(server, second["license_key"], fingerprint="desktop"))["ok"] is True
    rows = await log_rows(server)
    assert [r.result for r in rows] == ["ok", "trial_already_used", "ok"]
    assert rows[1].license_id == second["license_id"]


async def test_trial_limit_counts_deactivated_machines(server: Any, acme: dict[str, Any]) -> None:
    first = await issue_license(server, is_trial=True)
    second = await issue_license(server, is_trial=True)
    await validate(server, first["license_key"], fingerprint="laptop")
    await server.client.post(
        "/v1/machines/deactivate", json={"key": first["license_key"], "fingerprint": "laptop"}
    )
    body = await validate(server, second["license_key"], fingerprint="laptop")
    assert body == {"ok": False, "reason": "trial_already_used"}


async def test_trial_limit_counts_a_trial_converted_to_paid(
    server: Any, acme: dict[str, Any]
) -> None:
    first = await issue_license(server, is_trial=True)
    await validate(server, first["license_key"], fingerprint="laptop")
    await update_license(server, first["license_id"], is_trial=False)
    second = await issue_license(server, is_trial=True)
    body = await validate(server, second["license_key"], fingerprint="laptop")
    assert body == {"ok": False, "reason": "trial_already_used"}


async def test_trial_limit_does_not_apply_to_paid_or_other_products(
    server: Any, acme: dict[str, Any]
) -> None:
    await create_product(server, "zeta")
    trial = await issue_license(server, is_trial=True)
    await validate(server, trial["license_key"], fingerprint="laptop")
    paid = await issue_license(server, is_trial=False)
    assert (await validate(server, paid["license_key"], fingerprint="laptop"))["ok"] is True
    other_trial = await issue_license(server, "zeta", is_trial=True)
    assert (await validate(server, other_trial["license_key"], fingerprint="laptop"))["ok"] is True


async def test_trial_limit_does_not_count_a_paid_license_on_the_machine(
    server: Any, acme: dict[str, Any]
) -> None:
    paid = await issue_license(server)
    await validate(server, paid["license_key"], fingerprint="laptop")
    trial = await issue_license(server, is_trial=True)
    assert (await validate(server, trial["license_key"], fingerprint="laptop"))["ok"] is True


async def test_repeat_trials_allowed_by_policy(server: Any, acme: dict[str, Any]) -> None:
    await create_policy(server, slug="trial", is_trial=True, allow_repeat_trials=True)
    first = await issue_license(server, policy_slug="trial")
    second = await issue_license(server, policy_slug="trial")
    assert first["is_trial"] is True
    assert (await validate(server, first["license_key"], fingerprint="laptop"))["ok"] is True
    body = await validate(server, second["license_key"], fingerprint="laptop")
    assert body["ok"] is True
    assert body["is_trial"] is True


async def test_repeat_trial_policy_off_refuses(server: Any, acme: dict[str, Any]) -> None:
    await create_policy(server, slug="trial", is_trial=True, allow_repeat_trials=False)
    first = await issue_license(server, policy_slug="trial")
    second = await issue_license(server, policy_slug="trial")
    await validate(server, first["license_key"], fingerprint="laptop")
    body = await validate(server, second["license_key"], fingerprint="laptop")
    assert body == {"ok": False, "reason": "trial_already_used"}


async def test_trial_check_skipped_for_an_already_bound_machine(
    server: Any, acme: dict[str, Any]
) -> None:
    """Re-validating a machine already bound to the second trial stays ok (8.3 step 1)."""
    first = await issue_license(server, is_trial=True)
    second = await issue_license(server, is_trial=True)
    assert (await validate(server, second["license_key"], fingerprint="laptop"))["ok"] is True
    assert (await validate(server, first["license_key"], fingerprint="laptop"))[
        "reason"
    ] == "trial_already_used"
    assert (await validate(server, second["license_key"], fingerprint="laptop"))["ok"] is True


# --- rate limits ----------------------------------------------------------------------


async def test_validate_rate_limit_by_client_address_before_parsing(make_server: Any) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_VALIDATE="2/1h")
    await create_product(server, "acme")
    lic = await issue_license(server)
    assert (await validate(server, "garbage"))["reason"] == "bad_format"
    assert (await validate(server, lic["license_key"]))["ok"] is True
    # the bucket is empty: even garbage is refused before it is parsed
    assert await validate(server, "garbage") == {"ok": False, "reason": "rate_limited"}
    assert await validate(server, lic["license_key"]) == {"ok": False, "reason": "rate_limited"}
    # other client addresses have their own bucket
    async with other_client(server, ("198.51.100.4", 4000)) as client:
        response = await client.post("/v1/validate", json={"key": lic["license_key"]})
        assert response.status_code == 200
        assert response.json()["ok"] is True
    rows = await log_rows(server)
    assert [(r.result, r.client_ip) for r in rows] == [
        ("bad_format", CLIENT_IP),
        ("ok", CLIENT_IP),
        ("ok", "198.51.100.4"),
    ]


async def test_validate_rate_limit_refills_with_time(make_server: Any) -> None:
    clock.freeze(T0)
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_VALIDATE="2/1h")
    await create_product(server, "acme")
    lic = await issue_license(server)
    for _ in range(2):
        assert (await validate(server, lic["license_key"]))["ok"] is True
    assert (await validate(server, lic["license_key"]))["reason"] == "rate_limited"
    clock.advance(timedelta(minutes=29))
    assert (await validate(server, lic["license_key"]))["reason"] == "rate_limited"
    clock.advance(timedelta(minutes=1))
    assert (await validate(server, lic["license_key"]))["ok"] is True
    assert (await validate(server, lic["license_key"]))["reason"] == "rate_limited"


async def test_validate_rate_limit_honours_forwarded_for_from_trusted_proxy(
    make_server: Any,
) -> None:
    server = await make_server(
        KEYSAT_RATE_LIMITS="on",
        KEYSAT_RATE_LIMIT_VALIDATE="1/1h",
        KEYSAT_TRUSTED_PROXIES=CLIENT_IP,
    )

    async def call(forwarded: str) -> dict[str, Any]:
        response = await server.client.post(
            "/v1/validate", json={"key": "garbage"}, headers={"X-Forwarded-For": forwarded}
        )
        return dict(response.json())

    assert (await call("198.51.100.1"))["reason"] == "bad_format"
    assert (await call("198.51.100.1"))["reason"] == "rate_limited"
    assert (await call("198.51.100.2"))["reason"] == "bad_format"
    # IPv4-mapped IPv6 is the same client as its IPv4 form
    assert (await call("::ffff:198.51.100.2"))["reason"] == "rate_limited"
    rows = await log_rows(server)
    assert [r.client_ip for r in rows] == ["198.51.100.1", "198.51.100.2"]


async def test_validate_without_client_address_limits_per_license(make_server: Any) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_VALIDATE="1/1h")
    await create_product(server, "acme")
    first = await issue_license(server)
    second = await issue_license(server)
    async with other_client(server, None) as client:

        async def call(key: str) -> dict[str, Any]:
            return dict((await client.post("/v1/validate", json={"key": key})).json())

        assert (await call(first["license_key"]))["ok"] is True
        assert await call(first["license_key"]) == {"ok": False, "reason": "rate_limited"}
        # not one bucket per product: the second license of the same product is fine
        assert (await call(second["license_key"]))["ok"] is True
        # unparseable keys are answered before the per-license limit applies
        assert (await call("garbage"))["reason"] == "bad_format"
        assert (await call("garbage"))["reason"] == "bad_format"
    rows = await log_rows(server)
    assert [r.result for r in rows] == ["ok", "ok", "bad_format", "bad_format"]
    assert all(r.client_ip is None for r in rows)


async def test_activation_rate_limit_on_validate(make_server: Any) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_ACTIVATE="2/1h")
    await create_product(server, "acme")
    lic = await issue_license(server, max_machines=0)
    other = await issue_license(server, max_machines=0)
    key = lic["license_key"]
    assert (await validate(server, key, fingerprint="A"))["ok"] is True
    assert (await validate(server, key, fingerprint="B"))["ok"] is True
    # re-validating active machines spends no token
    for _ in range(3):
        assert (await validate(server, key, fingerprint="A"))["ok"] is True
    assert await validate(server, key, fingerprint="C") == {"ok": False, "reason": "rate_limited"}
    # plain validation without a fingerprint is unaffected
    assert (await validate(server, key))["ok"] is True
    # the bucket is per license
    assert (await validate(server, other["license_key"], fingerprint="C"))["ok"] is True
    assert len(await machines_of(server, lic["license_id"])) == 2
    rows = await log_rows(server)
    assert "rate_limited" not in [r.result for r in rows]
    assert len(rows) == 7


# --- body-level problems (step 0) -----------------------------------------------------


NO_JSON = "bad request: expected a JSON body (Content-Type: application/json)"
INVALID = "bad request: invalid JSON body"
JSON_TYPE = {"Content-Type": "application/json"}
BODY_PROBLEMS: list[tuple[bytes, dict[str, str], str]] = [
    (b'{"key": "x"}', {}, NO_JSON),
    (b'{"key": "x"}', {"Content-Type": "text/plain"}, NO_JSON),
    (b'{"key": "x"}', {"Content-Type": "application/x-www-form-urlencoded"}, NO_JSON),
    (b'{"key": ', JSON_TYPE, INVALID),
    (b"", JSON_TYPE, INVALID),
    (b"\xff\xfe", JSON_TYPE, INVALID),
    (b"[]", JSON_TYPE, INVALID),
    (b'"LIC1-x-y"', JSON_TYPE, INVALID),
    (b"null", JSON_TYPE, INVALID),
    (b"{}", JSON_TYPE, "bad request: missing field 'key'"),
    (b'{"fingerprint": "fp"}', JSON_TYPE, "bad request: missing field 'key'"),
    (b'{"key": 123}', JSON_TYPE, "bad request: field 'key' must be a string"),
    (b'{"key": ["LIC1"]}', JSON_TYPE, "bad request: field 'key' must be a string"),
    (
        b'{"key": "x", "fingerprint": 5}',
        JSON_TYPE,
        "bad request: field 'fingerprint' must be a string",
    ),
    (
        b'{"key": "x", "product_slug": true}',
        JSON_TYPE,
        "bad request: field 'product_slug' must be a string",
    ),
]


async def test_body_problems_are_400_envelopes_and_not_logged(server: Any) -> None:
    for content, headers, message in BODY_PROBLEMS:
        response = await server.client.post("/v1/validate", content=content, headers=headers)
        assert response.status_code == 400, content
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == {"ok": False, "error": "bad_request", "message": message}, content
    assert await log_rows(server) == []


async def test_body_over_2_mib_is_400(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    response = await server.client.post(
        "/v1/validate", json={"key": lic["license_key"], "padding": "x" * (2 * 1024 * 1024)}
    )
    assert response.status_code == 400
    assert response.json() == {
        "ok": False,
        "error": "bad_request",
        "message": "bad request: request body exceeds 2 MiB",
    }
    assert await log_rows(server) == []


async def test_too_long_fields(server: Any) -> None:
    for field, limit in (
        ("key", 131072),
        ("fingerprint", 1024),
        ("product_slug", 1024),
        ("hostname", 1024),
        ("platform", 1024),
    ):
        response = await server.client.post(
            "/v1/validate", json={"key": "x", field: "A" * (limit + 1)}
        )
        assert response.status_code == 400
        assert response.json() == {
            "ok": False,
            "error": "bad_request",
            "message": f"bad request: field '{field}' is too long (max {limit} characters)",
        }
        at_limit = await server.client.post("/v1/validate", json={"key": "x", field: "A" * limit})
        assert at_limit.status_code == 200
        assert at_limit.json() == {"ok": False, "reason": "bad_format"}


async def test_wrong_method_and_trailing_slash(server: Any) -> None:
    response = await server.client.get("/v1/validate")
    assert response.status_code == 405
    assert response.json() == {
        "ok": False,
        "error": "method_not_allowed",
        "message": "method not allowed: GET /v1/validate",
    }
    slash = await server.client.post("/v1/validate/", json={"key": "x"})
    assert slash.status_code == 404
    assert slash.json() == {
        "ok": False,
        "error": "not_found",
        "message": "not found: no such endpoint",
    }


async def test_json_content_type_variants(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    for content_type in (
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/vnd.keysat+json",
    ):
        response = await server.client.post(
            "/v1/validate",
            content=json.dumps({"key": lic["license_key"]}).encode(),
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 200, content_type
        assert response.json()["ok"] is True


async def test_unknown_fields_are_ignored(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    body = await validate(
        server, lic["license_key"], product="acme", policy_slug="nope", extra={"a": [1, 2]}
    )
    assert body["ok"] is True
    assert set(body) == SUCCESS_BASE


async def test_empty_or_null_optional_fields_mean_absent(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    for blank in ("", None):
        body = await validate(
            server,
            lic["license_key"],
            product_slug=blank,
            fingerprint=blank,
            hostname=blank,
            platform=blank,
        )
        assert body["ok"] is True
        assert set(body) == SUCCESS_BASE
    assert await machines_of(server, lic["license_id"]) == []
    rows = await log_rows(server)
    assert [(r.result, r.fingerprint, r.machine_id) for r in rows] == [("ok", None, None)] * 2


async def test_empty_hostname_and_platform_stored_as_null(
    server: Any, acme: dict[str, Any]
) -> None:
    lic = await issue_license(server)
    await validate(server, lic["license_key"], fingerprint="fp", hostname="", platform="")
    (machine,) = await machines_of(server, lic["license_id"])
    assert (machine.hostname, machine.platform) == (None, None)


async def test_validate_ignores_admin_credentials(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    response = await server.client.post(
        "/v1/validate",
        json={"key": lic["license_key"]},
        headers={"Authorization": "Bearer nonsense"},
    )
    assert response.status_code == 200
    assert response.json()["ok"] is True


def v1_key(
    license_id: str, product_id: str, issued_at: int, private_key: Any, flags: int = 0
) -> str:
    """A Keysat 0.2.0 version-1 key (license-keys.md 4): parsed and honoured, never emitted."""
    payload = struct.pack(
        ">BB16s16sQ32s",
        1,
        flags,
        uuid.UUID(product_id).bytes,
        uuid.UUID(license_id).bytes,
        issued_at,
        bytes(32),
    )
    signature = private_key.sign(payload)
    return f"LIC1-{b32(payload)}-{b32(signature)}"


def b32(data: bytes) -> str:
    return base64.b32encode(data).decode().rstrip("=")


async def test_version_1_key_validates_and_is_refreshed(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, entitlements=["pro"])
    parsed = parse_key(lic["license_key"])
    old = v1_key(lic["license_id"], acme["id"], parsed.issued_at, await signing_key(server))
    body = await validate(server, old, fingerprint="fp")
    assert body["ok"] is True
    assert body["entitlements"] == ["pro"]
    assert body["license_key"] == lic["license_key"]
    forged = v1_key(lic["license_id"], acme["id"], parsed.issued_at, generate_private_key())
    assert await validate(server, forged) == {"ok": False, "reason": "bad_signature"}


async def test_ipv4_mapped_peer_is_reported_as_ipv4(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=0)
    for peer, shown in (("::ffff:198.51.100.9", "198.51.100.9"), ("2001:db8::1", "2001:db8::1")):
        async with other_client(server, (peer, 1234)) as client:
            response = await client.post(
                "/v1/validate", json={"key": lic["license_key"], "fingerprint": peer}
            )
            assert response.json()["ok"] is True
        machine = next(
            m for m in await machines_of(server, lic["license_id"]) if m.fingerprint == peer
        )
        assert machine.ip_last_seen == shown
    rows = await log_rows(server)
    assert [r.client_ip for r in rows] == ["198.51.100.9", "2001:db8::1"]


async def test_body_errors_spend_no_validate_token(make_server: Any) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_VALIDATE="1/1h")
    for _ in range(3):
        response = await server.client.post("/v1/validate", json={"fingerprint": "x"})
        assert response.status_code == 400
    assert (await validate(server, "garbage"))["reason"] == "bad_format"
    assert (await validate(server, "garbage"))["reason"] == "rate_limited"


async def test_concurrent_validations_share_one_bucket(make_server: Any) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_VALIDATE="5/1h")
    await create_product(server, "acme")
    lic = await issue_license(server)
    responses = await asyncio.gather(
        *(server.client.post("/v1/validate", json={"key": lic["license_key"]}) for _ in range(20))
    )
    bodies = [r.json() for r in responses]
    assert sum(1 for b in bodies if b["ok"]) == 5
    assert [b for b in bodies if not b["ok"]] == [{"ok": False, "reason": "rate_limited"}] * 15
    assert len(await log_rows(server)) == 5


async def test_seat_cap_and_trial_limit_come_before_the_activation_limit(
    make_server: Any,
) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_ACTIVATE="1/1h")
    await create_product(server, "acme")
    single = await issue_license(server, max_machines=1)
    pair = await issue_license(server, max_machines=2)
    trial_one = await issue_license(server, is_trial=True, max_machines=5)
    trial_two = await issue_license(server, is_trial=True, max_machines=5)
    assert (await validate(server, single["license_key"], fingerprint="A"))["ok"] is True
    assert (await validate(server, single["license_key"], fingerprint="B"))[
        "reason"
    ] == "fingerprint_mismatch"
    assert (await validate(server, pair["license_key"], fingerprint="A"))["ok"] is True
    assert (await validate(server, pair["license_key"], fingerprint="B"))[
        "reason"
    ] == "rate_limited"
    assert (await validate(server, trial_one["license_key"], fingerprint="T"))["ok"] is True
    assert (await validate(server, trial_two["license_key"], fingerprint="U"))["ok"] is True
    assert (await validate(server, trial_two["license_key"], fingerprint="T"))[
        "reason"
    ] == "trial_already_used"
