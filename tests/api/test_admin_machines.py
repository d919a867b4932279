"""Admin machine routes (admin-api.md 6, 21.6 MachineRow, 22-24)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keysat.clock import clock
from keysat.licensing.models import Machine
from support import (
    ADMIN,
    ADMIN_KEY,
    assert_error,
    audit_rows,
    create_product,
    events,
    issue_license,
)

T0 = datetime(2031, 11, 2, 3, 4, 5, 600700, tzinfo=UTC)
MACHINE_ROW_FIELDS = {
    "id",
    "license_id",
    "product_id",
    "product_slug",
    "product_name",
    "buyer_email",
    "license_status",
    "hostname",
    "platform",
    "ip_last_seen",
    "activated_at",
    "last_heartbeat_at",
    "deactivated_at",
    "deactivation_reason",
    "active",
}


def ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


async def activate(server: Any, key: str, fingerprint: str, **fields: Any) -> str:
    response = await server.client.post(
        "/v1/machines/activate", json={"key": key, "fingerprint": fingerprint, **fields}
    )
    body = response.json()
    assert body["ok"] is True, body
    return str(body["machine_id"])


async def list_machines(server: Any, **params: Any) -> list[dict[str, Any]]:
    response = await server.admin_get("/v1/admin/machines", **params)
    assert response.status_code == 200, response.text
    return list(response.json()["machines"])


async def load_machine(server: Any, machine_id: str) -> Machine:
    async with server.state.db.read() as session:
        row = await session.get(Machine, machine_id)
        assert row is not None
        return row


@pytest.fixture
async def fleet(server: Any) -> dict[str, Any]:
    """Two products; three machines on acme (one deactivated), one on zeta."""
    clock.freeze(T0)
    acme = await create_product(server, "acme", name="Acme App")
    zeta = await create_product(server, "zeta", name="Zeta Tool")
    first = await issue_license(server, "acme", max_machines=5, buyer_email="ann@example.com")
    second = await issue_license(server, "acme", max_machines=5)
    other = await issue_license(server, "zeta", max_machines=5)
    m1 = await activate(server, first["license_key"], "m1", hostname="h1", platform="linux")
    clock.advance(timedelta(minutes=1))
    m2 = await activate(server, first["license_key"], "m2")
    clock.advance(timedelta(minutes=1))
    m3 = await activate(server, second["license_key"], "m3")
    clock.advance(timedelta(minutes=1))
    m4 = await activate(server, other["license_key"], "m4")
    clock.advance(timedelta(minutes=1))
    # m1 is seen again last: it sorts first
    await server.client.post(
        "/v1/machines/heartbeat", json={"key": first["license_key"], "fingerprint": "m1"}
    )
    clock.advance(timedelta(minutes=1))
    await server.client.post(
        "/v1/machines/deactivate",
        json={"key": first["license_key"], "fingerprint": "m2", "reason": "sold"},
    )
    return {
        "acme": acme,
        "zeta": zeta,
        "first": first,
        "second": second,
        "other": other,
        "m1": m1,
        "m2": m2,
        "m3": m3,
        "m4": m4,
    }


# --- list -----------------------------------------------------------------------------


async def test_list_active_machines_newest_heartbeat_first(
    server: Any, fleet: dict[str, Any]
) -> None:
    rows = await list_machines(server)
    assert [row["id"] for row in rows] == [fleet["m1"], fleet["m4"], fleet["m3"]]
    for row in rows:
        assert set(row) == MACHINE_ROW_FIELDS
    assert rows[0] == {
        "id": fleet["m1"],
        "license_id": fleet["first"]["license_id"],
        "product_id": fleet["acme"]["id"],
        "product_slug": "acme",
        "product_name": "Acme App",
        "buyer_email": "ann@example.com",
        "license_status": "active",
        "hostname": "h1",
        "platform": "linux",
        "ip_last_seen": "203.0.113.7",
        "activated_at": ts(T0),
        "last_heartbeat_at": ts(T0 + timedelta(minutes=4)),
        "deactivated_at": None,
        "deactivation_reason": None,
        "active": True,
    }
    assert rows[1]["product_name"] == "Zeta Tool"
    assert rows[2]["buyer_email"] is None
    assert rows[2]["hostname"] is None


async def test_include_inactive(server: Any, fleet: dict[str, Any]) -> None:
    everything = [fleet["m1"], fleet["m4"], fleet["m3"], fleet["m2"]]
    for flag in ("true", "1", "TRUE", "True"):
        rows = await list_machines(server, include_inactive=flag)
        assert [row["id"] for row in rows] == everything, flag
    gone = rows[-1]
    assert gone["active"] is False
    assert gone["deactivated_at"] == ts(T0 + timedelta(minutes=5))
    assert gone["deactivation_reason"] == "sold"
    assert gone["last_heartbeat_at"] == ts(T0 + timedelta(minutes=1))
    for flag in ("false", "0", "FALSE"):
        rows = await list_machines(server, include_inactive=flag)
        assert [row["id"] for row in rows] == everything[:3], flag


async def test_include_inactive_bad_value(server: Any, fleet: dict[str, Any]) -> None:
    assert_error(
        await server.admin_get("/v1/admin/machines", include_inactive="maybe"), 400, "bad_request"
    )


async def test_filter_by_license(server: Any, fleet: dict[str, Any]) -> None:
    rows = await list_machines(server, license_id=fleet["first"]["license_id"])
    assert [row["id"] for row in rows] == [fleet["m1"]]
    rows = await list_machines(
        server, license_id=fleet["first"]["license_id"], include_inactive="true"
    )
    assert [row["id"] for row in rows] == [fleet["m1"], fleet["m2"]]
    assert await list_machines(server, license_id=str(uuid.uuid4())) == []
    assert await list_machines(server, license_id="garbage") == []


async def test_filter_by_product_id_and_slug(server: Any, fleet: dict[str, Any]) -> None:
    by_id = await list_machines(server, product_id=fleet["zeta"]["id"])
    assert [row["id"] for row in by_id] == [fleet["m4"]]
    by_slug = await list_machines(server, product_slug="acme")
    assert [row["id"] for row in by_slug] == [fleet["m1"], fleet["m3"]]
    # product_id wins over product_slug, even over an unknown slug
    both = await list_machines(server, product_id=fleet["zeta"]["id"], product_slug="nope")
    assert [row["id"] for row in both] == [fleet["m4"]]
    both = await list_machines(server, product_id=fleet["zeta"]["id"], product_slug="acme")
    assert [row["id"] for row in both] == [fleet["m4"]]
    assert await list_machines(server, product_id=str(uuid.uuid4())) == []


async def test_filters_combine(server: Any, fleet: dict[str, Any]) -> None:
    rows = await list_machines(server, product_slug="zeta", license_id=fleet["first"]["license_id"])
    assert rows == []


async def test_unknown_product_slug_is_404(server: Any, fleet: dict[str, Any]) -> None:
    assert_error(
        await server.admin_get("/v1/admin/machines", product_slug="nope"),
        404,
        "not_found",
        "not found: product 'nope'",
    )


async def test_limit_is_clamped(server: Any, fleet: dict[str, Any]) -> None:
    for limit, count in (("1", 1), ("0", 1), ("-5", 1), ("2", 2), ("99999", 3), (" 2 ", 2)):
        rows = await list_machines(server, limit=limit)
        assert len(rows) == count, limit
        assert rows[0]["id"] == fleet["m1"]


async def test_limit_must_be_an_integer(server: Any, fleet: dict[str, Any]) -> None:
    assert_error(await server.admin_get("/v1/admin/machines", limit="ten"), 400, "bad_request")


async def test_default_limit_is_500(server: Any) -> None:
    await create_product(server, "acme")
    lic = await issue_license(server, max_machines=0)
    async with server.state.db.write() as session:
        for i in range(505):
            session.add(
                Machine(
                    id=str(uuid.uuid4()),
                    license_id=lic["license_id"],
                    fingerprint=f"fp{i}",
                    fingerprint_hash=hashlib.sha256(f"fp{i}".encode()).hexdigest(),
                    activated_at=T0,
                    last_heartbeat_at=T0 + timedelta(seconds=i),
                )
            )
    rows = await list_machines(server)
    assert len(rows) == 500
    assert rows[0]["last_heartbeat_at"] == ts(T0 + timedelta(seconds=504))
    assert len(await list_machines(server, limit="5000")) == 505


async def test_license_status_is_reported(server: Any, fleet: dict[str, Any]) -> None:
    await server.admin_post(f"/v1/admin/licenses/{fleet['second']['license_id']}/suspend")
    (row,) = await list_machines(server, license_id=fleet["second"]["license_id"])
    assert row["license_status"] == "suspended"
    assert row["active"] is True


async def test_empty_list(server: Any) -> None:
    response = await server.admin_get("/v1/admin/machines")
    assert response.status_code == 200
    assert response.json() == {"machines": []}
    assert response.headers["cache-control"] == "no-store"


# --- deactivate -----------------------------------------------------------------------


async def test_admin_deactivate(server: Any, fleet: dict[str, Any]) -> None:
    clock.freeze(T0 + timedelta(hours=1))
    path = f"/v1/admin/machines/{fleet['m3']}/deactivate"
    response = await server.client.post(
        path, json={"reason": "stolen laptop"}, headers={**ADMIN, "User-Agent": "ops/1"}
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    machine = await load_machine(server, fleet["m3"])
    assert machine.deactivated_at == T0 + timedelta(hours=1)
    assert machine.deactivation_reason == "stolen laptop"
    (entry,) = await audit_rows(server, "machine.deactivate")
    assert (entry.target_kind, entry.target_id) == ("machine", fleet["m3"])
    assert entry.details == {
        "license_id": fleet["second"]["license_id"],
        "reason": "stolen laptop",
    }
    assert entry.actor_kind == "admin_api_key"
    assert entry.actor_id == "master"
    assert entry.actor_hash == hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    assert (entry.request_ip, entry.user_agent) == ("203.0.113.7", "ops/1")
    admin_events = [
        e
        for e in await events(server, "machine.deactivated")
        if e["data"]["machine_id"] == fleet["m3"]
    ]
    assert len(admin_events) == 1
    assert admin_events[0]["data"] == {
        "license_id": fleet["second"]["license_id"],
        "machine_id": fleet["m3"],
        "reason": "stolen laptop",
    }
    assert admin_events[0]["timestamp"] == ts(T0 + timedelta(hours=1))
    again = await server.admin_post(path, {})
    assert_error(again, 404, "not_found", f"not found: active machine {fleet['m3']}")
    assert len(await audit_rows(server, "machine.deactivate")) == 1
    rows = await list_machines(server, license_id=fleet["second"]["license_id"])
    assert rows == []


async def test_admin_deactivate_default_reason(server: Any) -> None:
    await create_product(server, "acme")
    lic = await issue_license(server, max_machines=0)
    bodies: list[dict[str, Any] | None] = [None, {}, {"reason": ""}, {"reason": None}]
    for index, body in enumerate(bodies):
        machine_id = await activate(server, lic["license_key"], f"fp{index}")
        path = f"/v1/admin/machines/{machine_id}/deactivate"
        if body is None:
            response = await server.client.post(path, headers=ADMIN)
        else:
            response = await server.client.post(path, json=body, headers=ADMIN)
        assert response.status_code == 200, response.text
        assert (await load_machine(server, machine_id)).deactivation_reason == "admin deactivate"
        assert (await audit_rows(server, "machine.deactivate"))[-1].details == {
            "license_id": lic["license_id"],
            "reason": "admin deactivate",
        }
        assert (await events(server, "machine.deactivated"))[-1]["data"] == {
            "license_id": lic["license_id"],
            "machine_id": machine_id,
            "reason": "admin deactivate",
        }


async def test_admin_deactivate_client_deactivated_machine(
    server: Any, fleet: dict[str, Any]
) -> None:
    assert_error(
        await server.admin_post(f"/v1/admin/machines/{fleet['m2']}/deactivate"),
        404,
        "not_found",
        f"not found: active machine {fleet['m2']}",
    )
    assert (await load_machine(server, fleet["m2"])).deactivation_reason == "sold"


async def test_admin_deactivate_unknown_machine(server: Any) -> None:
    ghost = str(uuid.uuid4())
    assert_error(
        await server.admin_post(f"/v1/admin/machines/{ghost}/deactivate"),
        404,
        "not_found",
        f"not found: machine {ghost}",
    )
    assert_error(
        await server.admin_post("/v1/admin/machines/abc/deactivate"),
        404,
        "not_found",
        "not found: machine abc",
    )
    assert await audit_rows(server, "machine.deactivate") == []


async def test_admin_deactivate_reason_too_long(server: Any, fleet: dict[str, Any]) -> None:
    path = f"/v1/admin/machines/{fleet['m1']}/deactivate"
    assert_error(await server.admin_post(path, {"reason": "x" * 1001}), 400, "bad_request")
    assert (await load_machine(server, fleet["m1"])).deactivated_at is None


async def test_admin_deactivate_frees_the_seat(server: Any) -> None:
    await create_product(server, "acme")
    lic = await issue_license(server, max_machines=1)
    machine_id = await activate(server, lic["license_key"], "A")
    blocked = await server.client.post(
        "/v1/validate", json={"key": lic["license_key"], "fingerprint": "B"}
    )
    assert blocked.json() == {"ok": False, "reason": "fingerprint_mismatch"}
    response = await server.admin_post(f"/v1/admin/machines/{machine_id}/deactivate")
    assert response.status_code == 200
    freed = await server.client.post(
        "/v1/validate", json={"key": lic["license_key"], "fingerprint": "B"}
    )
    assert freed.json()["ok"] is True
    heartbeat = await server.client.post(
        "/v1/machines/heartbeat", json={"key": lic["license_key"], "fingerprint": "A"}
    )
    assert heartbeat.json() == {"ok": False, "reason": "not_activated"}


# --- credentials ----------------------------------------------------------------------


async def test_credentials_required(server: Any, fleet: dict[str, Any]) -> None:
    for method, template in (
        ("GET", "/v1/admin/machines"),
        ("GET", "/v1/admin/machines?product_slug=nope&limit=abc"),
        ("POST", "/v1/admin/machines/{id}/deactivate"),
        ("POST", "/v1/admin/machines/unknown/deactivate"),
    ):
        path = template.replace("{id}", fleet["m1"])
        body = {"reason": "x"} if method == "POST" else None
        none = await server.client.request(method, path, json=body)
        assert none.status_code == 401, path
        assert none.json() == {"ok": False, "error": "unauthorized", "message": "unauthorized"}
        malformed = await server.client.request(
            method, path, json=body, headers={"Authorization": f"Token {ADMIN_KEY}"}
        )
        assert malformed.status_code == 401, path
        wrong = await server.client.request(
            method,
            path,
            json=body,
            headers={"Authorization": "Bearer wrong-token-0123456789abcdefghij"},
        )
        assert wrong.status_code == 403, path
        assert wrong.json() == {"ok": False, "error": "forbidden", "message": "forbidden"}
    assert (await load_machine(server, fleet["m1"])).deactivated_at is None
    assert await audit_rows(server, "machine.deactivate") == []


async def test_malformed_body_without_credentials_is_401(
    server: Any, fleet: dict[str, Any]
) -> None:
    path = f"/v1/admin/machines/{fleet['m1']}/deactivate"
    response = await server.client.post(
        path, content=b"[1,", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    with_key = await server.client.post(
        path, content=b"[1,", headers={"Content-Type": "application/json", **ADMIN}
    )
    assert_error(with_key, 400, "bad_request", "bad request: invalid JSON body")
