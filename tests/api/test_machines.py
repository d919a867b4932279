"""POST /v1/machines/activate, /heartbeat, /deactivate (public-api.md 1.10, 8.3, 9, 16)
and the seat cap under concurrency (DECISIONS 10, 11)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from keysat.clock import clock
from keysat.keys import (
    FLAG_FINGERPRINT_BOUND,
    encode_key,
    fingerprint_hash,
    generate_private_key,
)
from keysat.licensing.models import License, Machine, ValidationLog
from keysat.operator.models import AuditEntry
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
T0 = datetime(2031, 6, 1, 8, 0, 0, 250000, tzinfo=UTC)
ROUTES = ["/v1/machines/activate", "/v1/machines/heartbeat", "/v1/machines/deactivate"]


async def post(server: Any, route: str, key: str, fingerprint: str, **fields: Any) -> Any:
    body = {"key": key, "fingerprint": fingerprint, **fields}
    return await server.client.post(f"/v1/machines/{route}", json=body)


async def activate(server: Any, key: str, fingerprint: str, **fields: Any) -> dict[str, Any]:
    response = await post(server, "activate", key, fingerprint, **fields)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def heartbeat(server: Any, key: str, fingerprint: str) -> dict[str, Any]:
    response = await post(server, "heartbeat", key, fingerprint)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def deactivate(server: Any, key: str, fingerprint: str, **fields: Any) -> dict[str, Any]:
    response = await post(server, "deactivate", key, fingerprint, **fields)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def active_machines(server: Any, license_id: str) -> list[Machine]:
    return [m for m in await machines_of(server, license_id) if m.deactivated_at is None]


async def audit_count(server: Any) -> int:
    async with server.state.db.read() as session:
        return int((await session.execute(sa.select(sa.func.count(AuditEntry.id)))).scalar_one())


def activate_body(
    ok: bool, machine_id: Any, active_count: int, max_machines: int, reason: str | None
) -> dict[str, Any]:
    return {
        "ok": ok,
        "machine_id": machine_id,
        "active_count": active_count,
        "max_machines": max_machines,
        "reason": reason,
    }


@pytest.fixture
async def acme(server: Any) -> dict[str, Any]:
    return await create_product(server, "acme")


# --- activate -------------------------------------------------------------------------


async def test_activate_creates_machine_event_and_no_audit(
    server: Any, acme: dict[str, Any]
) -> None:
    clock.freeze(T0)
    lic = await issue_license(server, max_machines=3)
    audits_before = await audit_count(server)
    body = await activate(
        server, lic["license_key"], "fp-one", hostname="host-1", platform="darwin-arm64"
    )
    (machine,) = await machines_of(server, lic["license_id"])
    assert body == activate_body(True, machine.id, 1, 3, None)
    assert machine.fingerprint == "fp-one"
    assert machine.fingerprint_hash == sha("fp-one")
    assert (machine.hostname, machine.platform) == ("host-1", "darwin-arm64")
    assert machine.ip_last_seen == CLIENT_IP
    assert machine.activated_at == T0
    assert machine.last_heartbeat_at == T0
    assert (machine.deactivated_at, machine.deactivation_reason) == (None, None)
    (event,) = await events(server, "machine.activated")
    assert event["event_type"] == "machine.activated"
    assert event["data"] == {
        "license_id": lic["license_id"],
        "machine_id": machine.id,
        "fingerprint_hash": sha("fp-one"),
    }
    assert await audit_count(server) == audits_before


async def test_activate_again_refreshes_the_same_machine(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    lic = await issue_license(server, max_machines=2)
    first = await activate(server, lic["license_key"], "fp")
    clock.advance(timedelta(minutes=3))
    second = await activate(server, lic["license_key"], "fp", hostname="renamed")
    assert second == first
    (machine,) = await machines_of(server, lic["license_id"])
    assert machine.last_heartbeat_at == T0 + timedelta(minutes=3)
    assert machine.activated_at == T0
    assert len(await events(server, "machine.activated")) == 1


async def test_activate_counts_after_each_call(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=0)
    counts = [
        (await activate(server, lic["license_key"], f"m{i}"))["active_count"] for i in range(3)
    ]
    assert counts == [1, 2, 3]
    body = await activate(server, lic["license_key"], "m9")
    assert body["max_machines"] == 0
    assert body["ok"] is True


async def test_activate_too_many_machines(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=2)
    await activate(server, lic["license_key"], "A")
    await activate(server, lic["license_key"], "B")
    body = await activate(server, lic["license_key"], "C")
    assert body == activate_body(False, None, 2, 2, "too_many_machines")
    assert len(await machines_of(server, lic["license_id"])) == 2


async def test_activate_single_seat_second_machine(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=1)
    await activate(server, lic["license_key"], "A")
    body = await activate(server, lic["license_key"], "B")
    assert body == activate_body(False, None, 1, 1, "too_many_machines")


async def test_activate_unknown_license_is_404(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    ghost = uuid.uuid4()
    key = encode_key(fields_of(lic["license_key"], license_id=ghost), await signing_key(server))
    response = await post(server, "activate", key, "fp")
    assert response.status_code == 404
    assert response.json() == {
        "ok": False,
        "error": "not_found",
        "message": f"not found: license {ghost}",
    }


async def test_activate_product_mismatch_is_invalid_state(
    server: Any, acme: dict[str, Any]
) -> None:
    other = await create_product(server, "other")
    lic = await issue_license(server, max_machines=4)
    await activate(server, lic["license_key"], "A")
    key = encode_key(
        fields_of(lic["license_key"], product_id=uuid.UUID(other["id"])),
        await signing_key(server),
    )
    body = await activate(server, key, "B")
    assert body == activate_body(False, None, 0, 4, "invalid_state")
    assert len(await machines_of(server, lic["license_id"])) == 1


@pytest.mark.parametrize("action", ["revoke", "suspend"])
async def test_activate_on_inactive_license(server: Any, acme: dict[str, Any], action: str) -> None:
    lic = await issue_license(server, max_machines=3)
    await activate(server, lic["license_key"], "A")
    response = await server.admin_post(f"/v1/admin/licenses/{lic['license_id']}/{action}")
    assert response.status_code == 200
    reason = {"revoke": "revoked", "suspend": "suspended"}[action]
    assert await activate(server, lic["license_key"], "B") == activate_body(
        False, None, 0, 3, reason
    )
    # also for the machine already bound
    assert await activate(server, lic["license_key"], "A") == activate_body(
        False, None, 0, 3, reason
    )
    assert len(await machines_of(server, lic["license_id"])) == 1


async def test_activate_ignores_expiry(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    lic = await issue_license(server, expires_at="2020-01-01T00:00:00Z")
    body = await activate(server, lic["license_key"], "A")
    assert body["ok"] is True


async def test_activate_fingerprint_bound_key(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=3)
    await activate(server, lic["license_key"], "other")
    bound = encode_key(
        fields_of(
            lic["license_key"],
            flags=FLAG_FINGERPRINT_BOUND,
            fingerprint_hash=fingerprint_hash("machine-a"),
        ),
        await signing_key(server),
    )
    mismatch = await activate(server, bound, "machine-b")
    assert mismatch["ok"] is False
    assert mismatch["reason"] == "fingerprint_mismatch"
    assert mismatch["machine_id"] is None
    assert mismatch["max_machines"] == 3
    assert set(mismatch) == {"ok", "machine_id", "active_count", "max_machines", "reason"}
    ok = await activate(server, bound, "machine-a")
    assert ok["ok"] is True
    assert ok["active_count"] == 2


async def test_activate_trial_already_used(server: Any, acme: dict[str, Any]) -> None:
    first = await issue_license(server, is_trial=True, max_machines=2)
    second = await issue_license(server, is_trial=True, max_machines=2)
    await activate(server, first["license_key"], "laptop")
    body = await activate(server, second["license_key"], "laptop")
    assert body == activate_body(False, None, 0, 2, "trial_already_used")
    assert await machines_of(server, second["license_id"]) == []


async def test_activate_repeat_trials_allowed(server: Any, acme: dict[str, Any]) -> None:
    await create_policy(server, slug="trial", is_trial=True, allow_repeat_trials=True)
    first = await issue_license(server, policy_slug="trial")
    second = await issue_license(server, policy_slug="trial")
    await activate(server, first["license_key"], "laptop")
    assert (await activate(server, second["license_key"], "laptop"))["ok"] is True


async def test_activate_rate_limit_per_license(make_server: Any) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_ACTIVATE="1/1h")
    await create_product(server, "acme")
    lic = await issue_license(server, max_machines=5)
    other = await issue_license(server, max_machines=5)
    first = await activate(server, lic["license_key"], "A")
    assert first["ok"] is True
    # refreshing an active machine spends no token
    assert (await activate(server, lic["license_key"], "A"))["ok"] is True
    assert await activate(server, lic["license_key"], "B") == activate_body(
        False, None, 1, 5, "rate_limited"
    )
    assert (await activate(server, other["license_key"], "B"))["ok"] is True
    assert len(await machines_of(server, lic["license_id"])) == 1


async def test_activate_rate_limit_shared_with_validate(make_server: Any) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_ACTIVATE="1/1h")
    await create_product(server, "acme")
    lic = await issue_license(server, max_machines=5)
    await activate(server, lic["license_key"], "A")
    response = await server.client.post(
        "/v1/validate", json={"key": lic["license_key"], "fingerprint": "B"}
    )
    assert response.json() == {"ok": False, "reason": "rate_limited"}


async def test_activate_stores_null_for_empty_hostname(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    await activate(server, lic["license_key"], "A", hostname="", platform="")
    (machine,) = await machines_of(server, lic["license_id"])
    assert (machine.hostname, machine.platform) == (None, None)


# --- shared request checks ------------------------------------------------------------


async def test_fingerprint_is_required(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    for route in ROUTES:
        for body in (
            {"key": lic["license_key"]},
            {"key": lic["license_key"], "fingerprint": None},
            {"key": lic["license_key"], "fingerprint": ""},
        ):
            response = await server.client.post(route, json=body)
            assert response.status_code == 400, (route, body)
            assert response.json() == {
                "ok": False,
                "error": "bad_request",
                "message": "bad request: fingerprint is required",
            }
    assert await machines_of(server, lic["license_id"]) == []


BAD_KEYS = [
    ("garbage", "expected LIC1-<payload>-<signature>"),
    ("", "expected LIC1-<payload>-<signature>"),
    ("LIC1-!!-AAAA", "payload section is not valid base32"),
    ("LIC1-AE-AAAA", "signature must be 64 bytes, got 2"),
]


async def test_bad_key_is_400(server: Any) -> None:
    for route in ROUTES:
        for key, detail in BAD_KEYS:
            response = await server.client.post(route, json={"key": key, "fingerprint": "fp"})
            assert response.status_code == 400, (route, key)
            assert response.json() == {
                "ok": False,
                "error": "bad_request",
                "message": f"bad request: bad key: {detail}",
            }


async def test_bad_signature_is_400(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    forged = encode_key(fields_of(lic["license_key"]), generate_private_key())
    for route in ROUTES:
        response = await server.client.post(route, json={"key": forged, "fingerprint": "fp"})
        assert response.status_code == 400, route
        assert response.json() == {
            "ok": False,
            "error": "bad_request",
            "message": "bad request: signature verification failed",
        }
    assert await machines_of(server, lic["license_id"]) == []


async def test_lower_case_sections_are_accepted(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    prefix, payload, signature = lic["license_key"].split("-")
    variant = f" {prefix}-{payload.lower()}-{signature.lower()}\n"
    created = await activate(server, variant, "fp")
    assert created["ok"] is True
    assert await heartbeat(server, variant, "fp") == {
        "ok": True,
        "machine_id": created["machine_id"],
    }
    assert await deactivate(server, variant, "fp") == {"ok": True}


async def test_body_problems(server: Any) -> None:
    for route in ROUTES:
        missing = await server.client.post(route, json={"fingerprint": "fp"})
        assert missing.status_code == 400
        assert missing.json()["message"] == "bad request: missing field 'key'"
        wrong = await server.client.post(route, json={"key": "x", "fingerprint": 7})
        assert wrong.status_code == 400
        assert wrong.json()["message"] == "bad request: field 'fingerprint' must be a string"
        too_long = await server.client.post(route, json={"key": "x", "fingerprint": "f" * 1025})
        assert too_long.status_code == 400
        assert too_long.json()["message"] == (
            "bad request: field 'fingerprint' is too long (max 1024 characters)"
        )
        not_json = await server.client.post(
            route, content=b"{", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400
        assert not_json.json() == {
            "ok": False,
            "error": "bad_request",
            "message": "bad request: invalid JSON body",
        }
        no_type = await server.client.post(route, content=b'{"key": "x", "fingerprint": "y"}')
        assert no_type.status_code == 400
        assert no_type.json()["message"] == (
            "bad request: expected a JSON body (Content-Type: application/json)"
        )
    wrong_reason = await server.client.post(
        "/v1/machines/deactivate", json={"key": "x", "fingerprint": "y", "reason": 1}
    )
    assert wrong_reason.json()["message"] == "bad request: field 'reason' must be a string"


async def test_machine_routes_never_write_validation_log(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    for route in ROUTES:
        response = await server.client.post(
            route, json={"key": lic["license_key"], "fingerprint": "fp"}
        )
        assert response.json()["ok"] is True
    await server.flush_logs()
    async with server.state.db.read() as session:
        count = (await session.execute(sa.select(sa.func.count(ValidationLog.id)))).scalar_one()
    assert count == 0


# --- heartbeat ------------------------------------------------------------------------


async def test_heartbeat_updates_machine(make_server: Any) -> None:
    clock.freeze(T0)
    server = await make_server(KEYSAT_TRUSTED_PROXIES=CLIENT_IP)
    await create_product(server, "acme")
    lic = await issue_license(server)
    created = await activate(server, lic["license_key"], "fp")
    clock.advance(timedelta(minutes=10))
    response = await server.client.post(
        "/v1/machines/heartbeat",
        json={"key": lic["license_key"], "fingerprint": "fp"},
        headers={"X-Forwarded-For": "::ffff:198.51.100.23"},
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True, "machine_id": created["machine_id"]}
    (machine,) = await machines_of(server, lic["license_id"])
    assert machine.last_heartbeat_at == T0 + timedelta(minutes=10)
    assert machine.ip_last_seen == "198.51.100.23"
    assert machine.activated_at == T0


async def test_heartbeat_not_activated(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    assert await heartbeat(server, lic["license_key"], "fp") == {
        "ok": False,
        "reason": "not_activated",
    }
    await activate(server, lic["license_key"], "fp")
    await deactivate(server, lic["license_key"], "fp")
    assert await heartbeat(server, lic["license_key"], "fp") == {
        "ok": False,
        "reason": "not_activated",
    }


async def test_heartbeat_does_not_check_license_status(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    created = await activate(server, lic["license_key"], "fp")
    await server.admin_post(f"/v1/admin/licenses/{lic['license_id']}/revoke")
    assert await heartbeat(server, lic["license_key"], "fp") == {
        "ok": True,
        "machine_id": created["machine_id"],
    }


async def test_heartbeat_for_unknown_license_is_not_activated(
    server: Any, acme: dict[str, Any]
) -> None:
    lic = await issue_license(server)
    ghost = encode_key(
        fields_of(lic["license_key"], license_id=uuid.uuid4()), await signing_key(server)
    )
    assert await heartbeat(server, ghost, "fp") == {"ok": False, "reason": "not_activated"}


async def test_heartbeat_rate_limit(make_server: Any) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_HEARTBEAT="2/1h")
    await create_product(server, "acme")
    lic = await issue_license(server)
    other = await issue_license(server)
    await activate(server, lic["license_key"], "fp")
    assert (await heartbeat(server, lic["license_key"], "fp"))["ok"] is True
    assert (await heartbeat(server, lic["license_key"], "fp"))["ok"] is True
    assert await heartbeat(server, lic["license_key"], "fp") == {
        "ok": False,
        "reason": "rate_limited",
    }
    assert (await heartbeat(server, other["license_key"], "fp"))["reason"] == "not_activated"


# --- deactivate -----------------------------------------------------------------------


async def test_deactivate_default_reason_and_event(server: Any, acme: dict[str, Any]) -> None:
    clock.freeze(T0)
    lic = await issue_license(server)
    created = await activate(server, lic["license_key"], "fp")
    audits_before = await audit_count(server)
    clock.advance(timedelta(hours=1))
    assert await deactivate(server, lic["license_key"], "fp") == {"ok": True}
    (machine,) = await machines_of(server, lic["license_id"])
    assert machine.deactivated_at == T0 + timedelta(hours=1)
    assert machine.deactivation_reason == "client_requested"
    (event,) = await events(server, "machine.deactivated")
    assert event["data"] == {
        "license_id": lic["license_id"],
        "machine_id": created["machine_id"],
        "reason": "client_requested",
    }
    assert await audit_count(server) == audits_before
    assert await deactivate(server, lic["license_key"], "fp") == {
        "ok": False,
        "reason": "not_found",
    }
    assert len(await events(server, "machine.deactivated")) == 1


async def test_deactivate_reason(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=0)
    cases = [("reinstalling", "reinstalling"), ("", "client_requested"), (None, "client_requested")]
    for index, (sent, _stored) in enumerate(cases):
        await activate(server, lic["license_key"], f"fp{index}")
        body = await deactivate(server, lic["license_key"], f"fp{index}", reason=sent)
        assert body == {"ok": True}
    machines = await machines_of(server, lic["license_id"])
    assert [m.deactivation_reason for m in machines] == [stored for _sent, stored in cases]
    assert [e["data"]["reason"] for e in await events(server, "machine.deactivated")] == [
        stored for _sent, stored in cases
    ]


async def test_deactivate_is_not_rate_limited(make_server: Any) -> None:
    server = await make_server(
        KEYSAT_RATE_LIMITS="on",
        KEYSAT_RATE_LIMIT_ACTIVATE="100/1h",
        KEYSAT_RATE_LIMIT_HEARTBEAT="1/1h",
        KEYSAT_RATE_LIMIT_VALIDATE="1/1h",
    )
    await create_product(server, "acme")
    lic = await issue_license(server, max_machines=0)
    for i in range(4):
        assert (await activate(server, lic["license_key"], f"fp{i}"))["ok"] is True
    for i in range(4):
        assert await deactivate(server, lic["license_key"], f"fp{i}") == {"ok": True}


async def test_deactivate_unknown_machine(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    assert await deactivate(server, lic["license_key"], "never-seen") == {
        "ok": False,
        "reason": "not_found",
    }
    assert await events(server, "machine.deactivated") == []


async def test_deactivate_frees_the_seat_and_reactivation_creates_a_new_row(
    server: Any, acme: dict[str, Any]
) -> None:
    lic = await issue_license(server, max_machines=1)
    first = await activate(server, lic["license_key"], "A")
    await deactivate(server, lic["license_key"], "A")
    other = await activate(server, lic["license_key"], "B")
    assert other["ok"] is True
    assert other["active_count"] == 1
    await deactivate(server, lic["license_key"], "B")
    back = await activate(server, lic["license_key"], "A")
    assert back["ok"] is True
    assert back["machine_id"] != first["machine_id"]
    assert len(await machines_of(server, lic["license_id"])) == 3
    assert len(await active_machines(server, lic["license_id"])) == 1


# --- activate then validate -----------------------------------------------------------


async def test_activate_then_validate_single_seat(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=1)
    created = await activate(server, lic["license_key"], "A")
    response = await server.client.post(
        "/v1/validate", json={"key": lic["license_key"], "fingerprint": "A"}
    )
    body = response.json()
    assert body["ok"] is True
    assert body["machine_id"] == created["machine_id"]
    other = await server.client.post(
        "/v1/validate", json={"key": lic["license_key"], "fingerprint": "B"}
    )
    assert other.json() == {"ok": False, "reason": "fingerprint_mismatch"}
    await deactivate(server, lic["license_key"], "A")
    freed = await server.client.post(
        "/v1/validate", json={"key": lic["license_key"], "fingerprint": "B"}
    )
    assert freed.json()["ok"] is True
    assert len(await active_machines(server, lic["license_id"])) == 1


async def test_validate_then_heartbeat_and_activate_see_the_same_machine(
    server: Any, acme: dict[str, Any]
) -> None:
    lic = await issue_license(server, max_machines=1)
    response = await server.client.post(
        "/v1/validate", json={"key": lic["license_key"], "fingerprint": "A"}
    )
    machine_id = response.json()["machine_id"]
    assert await heartbeat(server, lic["license_key"], "A") == {
        "ok": True,
        "machine_id": machine_id,
    }
    assert await activate(server, lic["license_key"], "A") == activate_body(
        True, machine_id, 1, 1, None
    )


# --- concurrency ----------------------------------------------------------------------


async def test_concurrent_activations_respect_the_cap(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=3)
    results = await asyncio.gather(
        *(post(server, "activate", lic["license_key"], f"fp-{i}") for i in range(20))
    )
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    bodies = [r.json() for r in results]
    winners = [b for b in bodies if b["ok"]]
    losers = [b for b in bodies if not b["ok"]]
    assert len(winners) == 3
    assert {b["reason"] for b in losers} == {"too_many_machines"}
    assert all(b["active_count"] == 3 for b in losers)
    active = await active_machines(server, lic["license_id"])
    assert len(active) == 3
    assert {m.id for m in active} == {b["machine_id"] for b in winners}
    assert len(await events(server, "machine.activated")) == 3


async def test_concurrent_validations_respect_the_cap(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=3)
    results = await asyncio.gather(
        *(
            server.client.post(
                "/v1/validate", json={"key": lic["license_key"], "fingerprint": f"fp-{i}"}
            )
            for i in range(20)
        )
    )
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    bodies = [r.json() for r in results]
    assert sum(1 for b in bodies if b["ok"]) == 3
    assert {b["reason"] for b in bodies if not b["ok"]} == {"too_many_machines"}
    assert len(await active_machines(server, lic["license_id"])) == 3
    assert len(await events(server, "machine.activated")) == 3


async def test_concurrent_single_seat_validations(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server, max_machines=1)
    results = await asyncio.gather(
        *(
            server.client.post(
                "/v1/validate", json={"key": lic["license_key"], "fingerprint": f"fp-{i}"}
            )
            for i in range(10)
        )
    )
    bodies = [r.json() for r in results]
    assert sum(1 for b in bodies if b["ok"]) == 1
    assert {b["reason"] for b in bodies if not b["ok"]} == {"fingerprint_mismatch"}
    assert len(await active_machines(server, lic["license_id"])) == 1


async def test_concurrent_activations_of_one_machine_make_one_row(
    server: Any, acme: dict[str, Any]
) -> None:
    lic = await issue_license(server, max_machines=3)
    calls = [post(server, "activate", lic["license_key"], "same") for _ in range(6)]
    calls += [
        server.client.post("/v1/validate", json={"key": lic["license_key"], "fingerprint": "same"})
        for _ in range(6)
    ]
    results = await asyncio.gather(*calls)
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    bodies = [r.json() for r in results]
    assert all(b["ok"] for b in bodies)
    (machine,) = await machines_of(server, lic["license_id"])
    assert {b["machine_id"] for b in bodies} == {machine.id}
    assert len(await events(server, "machine.activated")) == 1


async def test_concurrent_activations_across_licenses(server: Any, acme: dict[str, Any]) -> None:
    licenses = [await issue_license(server, max_machines=2) for _ in range(3)]
    calls = [
        post(server, "activate", lic["license_key"], f"fp-{i}")
        for lic in licenses
        for i in range(5)
    ]
    results = await asyncio.gather(*calls)
    assert sum(1 for r in results if r.json()["ok"]) == 6
    for lic in licenses:
        assert len(await active_machines(server, lic["license_id"])) == 2


async def test_machine_rows_belong_to_the_license(server: Any, acme: dict[str, Any]) -> None:
    lic = await issue_license(server)
    await activate(server, lic["license_key"], "fp")
    async with server.state.db.read() as session:
        row = await session.get(License, lic["license_id"])
        assert row is not None
        assert row.fingerprint is None  # the legacy column is never used for binding


async def test_concurrent_activations_respect_the_activation_limit(make_server: Any) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_RATE_LIMIT_ACTIVATE="3/1h")
    await create_product(server, "acme")
    lic = await issue_license(server, max_machines=10)
    results = await asyncio.gather(
        *(post(server, "activate", lic["license_key"], f"fp-{i}") for i in range(20))
    )
    bodies = [r.json() for r in results]
    assert sum(1 for b in bodies if b["ok"]) == 3
    assert {b["reason"] for b in bodies if not b["ok"]} == {"rate_limited"}
    assert len(await active_machines(server, lic["license_id"])) == 3
