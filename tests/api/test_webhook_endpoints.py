"""Webhook endpoint and delivery administration (admin-api.md 13, 21.6; webhooks.md 2, 5.1,
5.6, 6): create with the show-once secret, list, enable/disable, delete with its deliveries,
the delivery log with its filters, redelivery, and the audit rows of each."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from keysat.clock import clock
from keysat.webhooks.models import WebhookDelivery, WebhookEndpoint
from keysat.webhooks.service import record_event
from support import ADMIN, assert_error, audit_rows, create_product, event_rows, issue_license

ENDPOINTS = "/v1/admin/webhook-endpoints"
DELIVERIES = "/v1/admin/webhook-deliveries"
ENDPOINT_KEYS = {
    "id",
    "url",
    "secret",
    "event_types",
    "active",
    "description",
    "created_at",
    "updated_at",
}
DELIVERY_KEYS = {
    "id",
    "endpoint_id",
    "event_type",
    "payload_json",
    "attempt_count",
    "next_attempt_at",
    "last_status_code",
    "last_error",
    "delivered_at",
    "created_at",
}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
UNKNOWN_ID = "9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"


async def add_endpoint(server: Any, **body: Any) -> dict[str, Any]:
    response = await server.admin_post(ENDPOINTS, {"url": "https://hooks.example/k", **body})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def deliveries(server: Any, **params: Any) -> list[dict[str, Any]]:
    response = await server.admin_get(DELIVERIES, **params)
    assert response.status_code == 200, response.text
    return list(response.json()["deliveries"])


async def delivery_rows(server: Any) -> list[WebhookDelivery]:
    async with server.state.db.read() as session:
        query = sa.select(WebhookDelivery).order_by(WebhookDelivery.created_at)
        return list((await session.execute(query)).scalars())


async def set_delivery(server: Any, delivery_id: str, **values: Any) -> None:
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(**values)
        )


# --- create -------------------------------------------------------------------------------


async def test_create_shows_a_generated_secret_once(server: Any) -> None:
    created = await add_endpoint(server)
    assert set(created) == ENDPOINT_KEYS
    assert re.fullmatch(r"[0-9a-f]{64}", created["secret"])
    assert created["url"] == "https://hooks.example/k"
    assert (created["event_types"], created["active"], created["description"]) == (
        ["*"],
        True,
        "",
    )
    assert TS.match(created["created_at"]) and created["updated_at"] == created["created_at"]
    other = await add_endpoint(server)
    assert other["secret"] != created["secret"]

    listed = (await server.admin_get(ENDPOINTS)).json()["endpoints"]
    assert [e["id"] for e in listed] == [other["id"], created["id"]]  # newest first
    assert all("secret" not in entry for entry in listed)
    assert {key for entry in listed for key in entry} == ENDPOINT_KEYS - {"secret"}

    with_secret = (await server.admin_get(ENDPOINTS, include_secret="true")).json()["endpoints"]
    assert [e["secret"] for e in with_secret] == [other["secret"], created["secret"]]
    for spelled in ("1", "TRUE", "false", "0"):
        response = await server.admin_get(ENDPOINTS, include_secret=spelled)
        assert response.status_code == 200
        shown = "secret" in response.json()["endpoints"][0]
        assert shown is (spelled.lower() in ("1", "true"))
    assert_error(await server.admin_get(ENDPOINTS, include_secret="yes"), 400, "bad_request")

    [audit] = [row for row in await audit_rows(server, "webhook_endpoint.create")][:1]
    assert (audit.target_kind, audit.target_id) == ("webhook_endpoint", created["id"])
    assert audit.details == {"url": "https://hooks.example/k", "event_types": ["*"]}
    assert created["secret"] not in json.dumps(
        [row.details for row in await audit_rows(server, "webhook_endpoint.create")]
    )


async def test_create_with_own_secret_types_and_description(server: Any) -> None:
    created = await add_endpoint(
        server,
        url="http://127.0.0.1:9/receiver?x=1",
        secret="  my shared secret  ",
        event_types=["license.issued", "not.an.event"],
        description="CRM sync",
    )
    assert created["secret"] == "my shared secret"
    assert created["event_types"] == ["license.issued", "not.an.event"]
    assert created["description"] == "CRM sync"
    assert (await add_endpoint(server, secret="x" * 256))["secret"] == "x" * 256
    assert (await add_endpoint(server, event_types=None, description=None))["event_types"] == ["*"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": 5},
        {"url": "ftp://hooks.example/k"},
        {"url": "hooks.example/k"},
        {"url": "/relative"},
        {"url": "http://"},
        {"url": "https://hooks.example/" + "a" * 2030},
        {"url": " https://hooks.example/k"},
        {"url": "https://hooks.example/a b"},
        {"url": "https://hooks.example:0/k"},
        {"url": "https://hooks.example:99999/k"},
        {"url": "https://[::1/k"},
        {"url": "https://hooks.example/k", "secret": ""},
        {"url": "https://hooks.example/k", "secret": "   "},
        {"url": "https://hooks.example/k", "secret": "x" * 257},
        {"url": "https://hooks.example/k", "secret": 7},
        {"url": "https://hooks.example/k", "event_types": []},
        {"url": "https://hooks.example/k", "event_types": [""]},
        {"url": "https://hooks.example/k", "event_types": ["*", 5]},
        {"url": "https://hooks.example/k", "event_types": "*"},
        {"url": "https://hooks.example/k", "description": "d" * 1001},
    ],
)
async def test_create_refuses_bad_bodies(server: Any, body: dict[str, Any]) -> None:
    assert_error(await server.admin_post(ENDPOINTS, body), 400, "bad_request")
    async with server.state.db.read() as session:
        count = (await session.execute(sa.select(sa.func.count(WebhookEndpoint.id)))).scalar()
    assert count == 0
    assert await audit_rows(server, "webhook_endpoint.create") == []


async def test_url_length_limit_is_2048_characters(server: Any) -> None:
    url = "https://hooks.example/" + "a" * (2048 - len("https://hooks.example/"))
    assert (await add_endpoint(server, url=url))["url"] == url
    assert_error(await server.admin_post(ENDPOINTS, {"url": url + "a"}), 400, "bad_request")


async def test_every_route_needs_a_credential(server: Any) -> None:
    calls = [
        ("GET", ENDPOINTS),
        ("POST", ENDPOINTS),
        ("PATCH", f"{ENDPOINTS}/{UNKNOWN_ID}/active"),
        ("DELETE", f"{ENDPOINTS}/{UNKNOWN_ID}"),
        ("GET", DELIVERIES),
        ("POST", f"{DELIVERIES}/{UNKNOWN_ID}/retry"),
    ]
    for method, path in calls:
        response = await server.client.request(method, path, content=b"{bad json")
        assert_error(response, 401, "unauthorized")
        response = await server.client.request(
            method, path, headers={"Authorization": "Bearer wrong"}
        )
        assert_error(response, 403, "forbidden")
        assert response.headers["cache-control"] == "no-store"


# --- active and delete --------------------------------------------------------------------


async def test_disable_and_enable(server: Any) -> None:
    created = await add_endpoint(server)
    clock.advance(timedelta(seconds=1))
    response = await server.admin_patch(f"{ENDPOINTS}/{created['id']}/active", {"active": False})
    assert response.status_code == 200 and response.json() == {"ok": True}
    [listed] = (await server.admin_get(ENDPOINTS)).json()["endpoints"]
    assert listed["active"] is False and listed["updated_at"] >= created["updated_at"]

    # A disabled endpoint gets no new deliveries.
    await create_product(server, "acme")
    assert await delivery_rows(server) == []

    hex_id = created["id"].replace("-", "")
    response = await server.admin_patch(f"{ENDPOINTS}/{hex_id}/active", {"active": True})
    assert response.status_code == 200
    await create_product(server, "other")
    [row] = await delivery_rows(server)
    assert row.event_type == "product.created"

    assert [a.details for a in await audit_rows(server, "webhook_endpoint.set_active")] == [
        {"active": False},
        {"active": True},
    ]
    assert_error(
        await server.admin_patch(f"{ENDPOINTS}/{UNKNOWN_ID}/active", {"active": True}),
        404,
        "not_found",
        f"not found: webhook endpoint {UNKNOWN_ID}",
    )
    assert_error(
        await server.admin_patch(f"{ENDPOINTS}/nope/active", {"active": True}), 404, "not_found"
    )
    for body in ({}, {"active": "true"}, {"active": None}):
        response = await server.admin_patch(f"{ENDPOINTS}/{created['id']}/active", body)
        assert_error(response, 400, "bad_request")


async def test_delete_cascades_to_its_deliveries_only(server: Any) -> None:
    doomed = await add_endpoint(server)
    kept = await add_endpoint(server, url="https://other.example/")
    await create_product(server, "acme")
    await create_product(server, "beta")
    assert len(await delivery_rows(server)) == 4

    response = await server.admin_delete(f"{ENDPOINTS}/{doomed['id']}")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "cascaded_deliveries": 2}
    assert {row.endpoint_id for row in await delivery_rows(server)} == {kept["id"]}
    assert [e["id"] for e in (await server.admin_get(ENDPOINTS)).json()["endpoints"]] == [
        kept["id"]
    ]
    [audit] = await audit_rows(server, "webhook_endpoint.delete")
    assert (audit.target_id, audit.details) == (doomed["id"], {"url": "https://hooks.example/k"})

    assert_error(
        await server.admin_delete(f"{ENDPOINTS}/{doomed['id']}"),
        404,
        "not_found",
        f"not found: webhook endpoint {doomed['id']}",
    )
    response = await server.admin_delete(f"{ENDPOINTS}/{kept['id']}")
    assert response.json() == {"ok": True, "cascaded_deliveries": 2}
    assert await delivery_rows(server) == []
    # The outbox keeps the events themselves.
    assert len(await event_rows(server, "product.created")) == 2


# --- dispatch (webhooks.md 5.1) -----------------------------------------------------------


async def test_each_event_is_queued_once_per_subscribed_active_endpoint(server: Any) -> None:
    clock.freeze(clock.real_now() - timedelta(days=30))  # the business clock, for the envelope
    everything = await add_endpoint(server)
    licenses = await add_endpoint(server, event_types=["license.issued"])
    products = await add_endpoint(server, event_types=["product.created", "license.revoked"])
    await add_endpoint(server, event_types=["no.such.event"])
    before = clock.real_now()
    await create_product(server, "acme")
    await issue_license(server, "acme")
    rows = await delivery_rows(server)
    assert sorted((row.event_type, row.endpoint_id) for row in rows) == sorted(
        [
            ("product.created", everything["id"]),
            ("product.created", products["id"]),
            ("license.issued", everything["id"]),
            ("license.issued", licenses["id"]),
        ]
    )
    events = {row.id: row for row in await event_rows(server, "product.created")}
    events.update({row.id: row for row in await event_rows(server, "license.issued")})
    for row in rows:
        event = events[row.event_id]  # type: ignore[index]
        assert row.payload_json == event.payload_json
        assert row.attempt_count == 0 and row.delivered_at is None
        assert row.last_status_code is None and row.last_error is None
        # Scheduling is on the system clock; the envelope keeps the business time.
        assert row.next_attempt_at == row.created_at and row.created_at >= before
        assert json.loads(row.payload_json)["timestamp"] < before.isoformat()


async def test_no_endpoint_no_delivery_and_the_event_still_records(server: Any) -> None:
    await create_product(server, "acme")
    assert len(await event_rows(server, "product.created")) == 1
    assert await delivery_rows(server) == []


async def test_deliveries_exist_only_if_the_change_commits(server: Any) -> None:
    await add_endpoint(server)
    with pytest.raises(RuntimeError):
        async with server.state.db.write() as session:
            record_event(session, "product.created", {"product": {"id": "x"}})
            await session.flush()
            raise RuntimeError("the change fails after the event was flushed")
    assert await event_rows(server, "product.created") == []
    assert await delivery_rows(server) == []


async def test_the_database_refuses_a_second_delivery_of_one_event(server: Any) -> None:
    await add_endpoint(server)
    await create_product(server, "acme")
    [row] = await delivery_rows(server)
    with pytest.raises(IntegrityError):
        async with server.state.db.write() as session:
            await session.execute(
                sa.insert(WebhookDelivery).values(
                    id=UNKNOWN_ID,
                    endpoint_id=row.endpoint_id,
                    event_id=row.event_id,
                    event_type=row.event_type,
                    payload_json=row.payload_json,
                    attempt_count=0,
                    created_at=row.created_at,
                )
            )


async def test_raced_settlement_queues_one_license_issued_per_endpoint(make_server: Any) -> None:
    from support import purchase

    one = await make_server(KEYSAT_SANDBOX_MODE="true")
    two = await make_server(KEYSAT_SANDBOX_MODE="true")
    first = await add_endpoint(one)
    second = await add_endpoint(two, event_types=["license.issued"])
    await create_product(one, "acme", price_sats=1_000)
    bought = await purchase(two, "acme")
    pay = f"/v1/admin/sandbox/invoices/{bought['invoice_id']}/pay"
    answers = await asyncio.gather(*(server.admin_post(pay, {}) for server in [one, two] * 3))
    assert {answer.status_code for answer in answers} == {200}
    issued = [row for row in await delivery_rows(one) if row.event_type == "license.issued"]
    assert sorted(row.endpoint_id for row in issued) == sorted([first["id"], second["id"]])


# --- the delivery log ---------------------------------------------------------------------


async def test_delivery_list_shape_filters_and_limit(server: Any) -> None:
    one = await add_endpoint(server)
    two = await add_endpoint(server, event_types=["product.created"])
    for slug in ("a1", "a2", "a3"):
        await create_product(server, slug)
        clock.advance(timedelta(seconds=1))
    rows = await delivery_rows(server)
    assert len(rows) == 6
    of_one = [row for row in rows if row.endpoint_id == one["id"]]
    # one of endpoint one's deliveries is delivered, one is a dead letter
    done, dead, waiting = of_one
    at = clock.real_now()
    await set_delivery(server, done.id, attempt_count=1, delivered_at=at, next_attempt_at=None)
    await set_delivery(
        server, dead.id, attempt_count=10, next_attempt_at=None, last_error="non-2xx response: x"
    )

    listed = await deliveries(server)
    assert len(listed) == 6
    assert all(set(entry) == DELIVERY_KEYS for entry in listed)
    assert [entry["created_at"] for entry in listed] == sorted(
        (entry["created_at"] for entry in listed), reverse=True
    )
    entry = next(e for e in listed if e["id"] == waiting.id)
    assert entry == {
        "id": waiting.id,
        "endpoint_id": one["id"],
        "event_type": "product.created",
        "payload_json": waiting.payload_json,
        "attempt_count": 0,
        "next_attempt_at": entry["created_at"],
        "last_status_code": None,
        "last_error": None,
        "delivered_at": None,
        "created_at": entry["created_at"],
    }
    assert isinstance(entry["payload_json"], str)

    assert [e["id"] for e in await deliveries(server, status="delivered")] == [done.id]
    assert [e["id"] for e in await deliveries(server, status="failed")] == [dead.id]
    pending = await deliveries(server, status="pending")
    assert len(pending) == 4 and {done.id, dead.id}.isdisjoint(e["id"] for e in pending)
    assert len(await deliveries(server, status="all")) == 6
    assert {e["endpoint_id"] for e in await deliveries(server, endpoint_id=two["id"])} == {
        two["id"]
    }
    assert len(await deliveries(server, endpoint_id=two["id"].replace("-", ""))) == 3
    assert await deliveries(server, endpoint_id="not-an-id") == []
    assert len(await deliveries(server, endpoint_id=one["id"], status="pending")) == 1
    assert len(await deliveries(server, limit="2")) == 2
    assert len(await deliveries(server, limit="0")) == 1
    assert len(await deliveries(server, limit="-5")) == 1
    assert len(await deliveries(server, limit="100000")) == 6
    for params in ({"status": "garbage"}, {"status": ""}, {"limit": "ten"}, {"limit": "1.5"}):
        assert_error(await server.admin_get(DELIVERIES, **params), 400, "bad_request")


async def test_a_never_attempted_queue_entry_is_not_failed(server: Any) -> None:
    await add_endpoint(server)
    await create_product(server, "acme")
    [row] = await delivery_rows(server)
    # attempt_count 0 with nothing scheduled is neither pending nor a dead letter
    await set_delivery(server, row.id, next_attempt_at=None)
    assert await deliveries(server, status="failed") == []
    assert await deliveries(server, status="pending") == []
    assert len(await deliveries(server)) == 1


async def test_retry_requeues_any_delivery(server: Any) -> None:
    endpoint = await add_endpoint(server)
    await create_product(server, "acme")
    await create_product(server, "beta")
    dead, done = await delivery_rows(server)
    await set_delivery(
        server,
        dead.id,
        attempt_count=10,
        next_attempt_at=None,
        last_status_code=500,
        last_error="non-2xx response: boom",
    )
    await set_delivery(
        server,
        done.id,
        attempt_count=1,
        next_attempt_at=None,
        last_status_code=200,
        delivered_at=clock.real_now(),
    )
    assert [e["id"] for e in await deliveries(server, status="failed")] == [dead.id]

    before = clock.real_now()
    response = await server.admin_post(f"{DELIVERIES}/{dead.id}/retry")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == DELIVERY_KEYS
    assert (body["id"], body["payload_json"], body["attempt_count"]) == (
        dead.id,
        dead.payload_json,
        0,
    )
    assert (body["delivered_at"], body["last_error"], body["last_status_code"]) == (
        None,
        None,
        None,
    )
    assert body["next_attempt_at"] is not None and body["next_attempt_at"] >= before.isoformat()
    assert await deliveries(server, status="failed") == []
    assert dead.id in [e["id"] for e in await deliveries(server, status="pending")]

    response = await server.admin_post(f"{DELIVERIES}/{done.id.replace('-', '')}/retry")
    assert response.status_code == 200 and response.json()["delivered_at"] is None
    assert await deliveries(server, status="delivered") == []

    audits = await audit_rows(server, "webhook_delivery.retry")
    assert [(a.target_kind, a.target_id, a.details) for a in audits] == [
        (
            "webhook_delivery",
            dead.id,
            {"endpoint_id": endpoint["id"], "event_type": "product.created"},
        ),
        (
            "webhook_delivery",
            done.id,
            {"endpoint_id": endpoint["id"], "event_type": "product.created"},
        ),
    ]
    assert_error(
        await server.admin_post(f"{DELIVERIES}/{UNKNOWN_ID}/retry"),
        404,
        "not_found",
        f"not found: webhook delivery '{UNKNOWN_ID}'",
    )
    assert_error(
        await server.admin_post(f"{DELIVERIES}/nope/retry"),
        404,
        "not_found",
        "not found: webhook delivery 'nope'",
    )
    assert len(await audit_rows(server, "webhook_delivery.retry")) == 2


async def test_no_response_ever_carries_a_second_secret(server: Any) -> None:
    created = await add_endpoint(server, secret="only-one")
    listed = (await server.admin_get(ENDPOINTS, include_secret="true")).json()["endpoints"]
    for entry in (created, *listed):
        assert [key for key in entry if "secret" in key] == ["secret"]
        assert entry["secret"] == "only-one"
    raw = await server.client.get(ENDPOINTS, headers=ADMIN)
    assert "only-one" not in raw.text


# --- scopes (access.md 4.2) ---------------------------------------------------------------


async def scoped(server: Any, role: str) -> dict[str, str]:
    response = await server.admin_post("/v1/admin/api-keys", {"label": role, "role": role})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


async def test_read_keys_list_without_secrets_and_only_writers_change_or_reveal(
    server: Any,
) -> None:
    created = await add_endpoint(server)
    await create_product(server, "acme")
    [delivery] = await delivery_rows(server)
    for role in ("read-only", "license-issuer", "support", "merchant-onboard"):
        key = await scoped(server, role)
        response = await server.client.get(ENDPOINTS, headers=key)
        assert response.status_code == 200, role
        assert "secret" not in response.json()["endpoints"][0]
        assert (await server.client.get(DELIVERIES, headers=key)).status_code == 200
        writes = [
            server.client.get(ENDPOINTS, params={"include_secret": "true"}, headers=key),
            server.client.post(ENDPOINTS, json={"url": "https://x.example/"}, headers=key),
            server.client.patch(
                f"{ENDPOINTS}/{created['id']}/active", json={"active": False}, headers=key
            ),
            server.client.delete(f"{ENDPOINTS}/{created['id']}", headers=key),
            server.client.post(f"{DELIVERIES}/{delivery.id}/retry", headers=key),
        ]
        for call in writes:
            assert_error(await call, 403, "forbidden")

    full = await scoped(server, "full-admin")
    response = await server.client.get(ENDPOINTS, params={"include_secret": "1"}, headers=full)
    assert response.json()["endpoints"][0]["secret"] == created["secret"]
    response = await server.client.post(ENDPOINTS, json={"url": "https://x.example/"}, headers=full)
    assert response.status_code == 200 and len(response.json()["secret"]) == 64
    response = await server.client.post(f"{DELIVERIES}/{delivery.id}/retry", headers=full)
    assert response.status_code == 200
    assert len(await audit_rows(server, "webhook_endpoint.create")) == 2
    assert await audit_rows(server, "webhook_endpoint.delete") == []
