"""Scoped API keys: create, list and revoke, the key format and storage, what each role may
do, last_used_at, the 401/403 rule and the audit actor (access.md 4, 5, 7; admin-api.md 14)."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from access_support import bearer, create_key, key_row
from fakes.btcpay import FakeBTCPay
from keysat.access.models import ScopedApiKey
from keysat.payments.models import BTCPayAuthorizeState
from keysat.wire import new_id, parse_ts
from support import (
    ADMIN_KEY,
    assert_error,
    audit_rows,
    create_policy,
    create_product,
    issue_license,
)

KEYS = "/v1/admin/api-keys"
TOKEN = re.compile(r"^ks_[A-Za-z0-9_-]{43}$")
ROLES_MESSAGE = (
    "bad request: role must be one of: read-only, license-issuer, support, merchant-onboard, "
    "full-admin"
)


async def test_create_shows_the_token_once_and_stores_only_its_hash(server: Any) -> None:
    response = await server.admin_post(KEYS, {"label": "  CI deploy  ", "role": " support "})
    assert response.status_code == 200, response.text
    created = response.json()
    assert set(created) == {"id", "label", "role", "scopes", "created_at", "token"}
    assert TOKEN.match(created["token"])
    assert (created["label"], created["role"], created["scopes"]) == ("CI deploy", "support", [])
    parse_ts("created_at", created["created_at"])

    row = await key_row(server, created["id"])
    assert row.token_hash == hashlib.sha256(created["token"].encode()).hexdigest()
    assert row.extra_scopes is None
    assert (row.last_used_at, row.revoked_at) == (None, None)
    async with server.state.db.read() as session:
        stored = (await session.execute(sa.text("SELECT * FROM scoped_api_keys"))).all()
    assert created["token"] not in repr(stored)
    assert created["token"][3:] not in repr(stored)

    listed = (await server.admin_get(KEYS)).json()["api_keys"]
    assert listed == [
        {
            "id": created["id"],
            "label": "CI deploy",
            "role": "support",
            "scopes": [],
            "created_at": created["created_at"],
            "last_used_at": None,
            "revoked_at": None,
        }
    ]

    [audit] = await audit_rows(server, "api_key.create")
    assert (audit.target_kind, audit.target_id) == ("api_key", created["id"])
    assert audit.details == {"label": "CI deploy", "role": "support", "scopes": []}
    assert (audit.actor_kind, audit.actor_id) == ("admin_api_key", "master")
    assert audit.actor_hash == hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    assert created["token"] not in repr(audit.details)


async def test_two_keys_never_share_a_token(server: Any) -> None:
    first = await create_key(server, "read-only")
    second = await create_key(server, "read-only")
    assert first["token"] != second["token"]


async def test_the_list_is_newest_first_and_keeps_revoked_keys(server: Any) -> None:
    old = await create_key(server, "read-only", label="old")
    new = await create_key(server, "merchant-onboard", ["payment_providers:write"], label="new")
    # Created a minute apart, whatever the clock's resolution.
    earlier = (await key_row(server, old["id"])).created_at - timedelta(minutes=1)
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(ScopedApiKey).where(ScopedApiKey.id == old["id"]).values(created_at=earlier)
        )
    assert new["scopes"] == ["payment_providers:write"]
    assert (await server.admin_delete(f"{KEYS}/{old['id']}")).status_code == 200
    listed = (await server.admin_get(KEYS)).json()["api_keys"]
    assert [entry["label"] for entry in listed] == ["new", "old"]
    assert listed[0]["scopes"] == ["payment_providers:write"]
    assert listed[0]["revoked_at"] is None and listed[1]["revoked_at"] is not None
    assert all("token" not in entry for entry in listed)


async def test_create_validates_label_role_and_scopes(server: Any) -> None:
    label_message = "bad request: label is required and must be at most 80 characters"
    for label in ("", "   ", "x" * 81):
        response = await server.admin_post(KEYS, {"label": label, "role": "support"})
        assert_error(response, 400, "bad_request", label_message)
    assert (
        await server.admin_post(KEYS, {"label": " " + "x" * 80 + " ", "role": "support"})
    ).is_success
    for role in ("god-mode", "", "Support", "full_admin"):
        response = await server.admin_post(KEYS, {"label": "k", "role": role})
        assert_error(response, 400, "bad_request", ROLES_MESSAGE)
    response = await server.admin_post(
        KEYS, {"label": "k", "role": "support", "scopes": ["billing:nuke"]}
    )
    assert_error(response, 400, "bad_request")
    assert "billing:nuke" in response.json()["message"]
    assert "payment_providers:write" in response.json()["message"]
    for body in (
        {"role": "support"},
        {"label": 5, "role": "support"},
        {"label": "k", "role": "support", "scopes": "payment_providers:write"},
    ):
        assert_error(await server.admin_post(KEYS, body), 400, "bad_request")
    response = await server.admin_post(
        KEYS,
        {
            "label": "k",
            "role": "support",
            "scopes": [" payment_providers:write", "", "payment_providers:write"],
        },
    )
    assert response.json()["scopes"] == ["payment_providers:write"]
    assert (await key_row(server, response.json()["id"])).extra_scopes == [
        "payment_providers:write"
    ]
    empty = await server.admin_post(KEYS, {"label": "k", "role": "support", "scopes": ["  "]})
    assert empty.json()["scopes"] == []
    assert (await key_row(server, empty.json()["id"])).extra_scopes is None
    # Only the valid creations above wrote audit rows.
    assert len(await audit_rows(server, "api_key.create")) == 3


async def test_revocation_is_soft_immediate_and_audited_once(server: Any) -> None:
    key = await create_key(server, "full-admin")
    assert (
        await server.client.get("/v1/admin/products", headers=bearer(key["token"]))
    ).status_code == 200

    response = await server.admin_delete(f"{KEYS}/{key['id']}")
    assert response.status_code == 200
    assert set(response.json()) == {"ok", "revoked_at"}
    revoked_at = parse_ts("revoked_at", response.json()["revoked_at"])
    assert (await key_row(server, key["id"])).revoked_at == revoked_at

    response = await server.client.get("/v1/admin/products", headers=bearer(key["token"]))
    assert_error(response, 403, "forbidden", "forbidden")
    again = await server.admin_delete(f"{KEYS}/{key['id']}")
    assert again.json() == {"ok": True, "already_revoked": True}
    [audit] = await audit_rows(server, "api_key.revoke")
    assert (audit.target_kind, audit.target_id, audit.details) == ("api_key", key["id"], {})

    unknown = new_id()
    assert_error(
        await server.admin_delete(f"{KEYS}/{unknown}"),
        404,
        "not_found",
        f"not found: api_key '{unknown}'",
    )
    assert_error(
        await server.admin_delete(f"{KEYS}/not-an-id"),
        404,
        "not_found",
        "not found: api_key 'not-an-id'",
    )


async def test_a_support_key_suspends_a_license_but_cannot_create_a_key(server: Any) -> None:
    """The issue's "done when": hand a teammate a support key."""
    await create_product(server, "acme")
    license_id = (await issue_license(server, "acme"))["license_id"]
    support = await create_key(server, "support", label="teammate")
    teammate = bearer(support["token"])

    response = await server.client.post(
        f"/v1/admin/licenses/{license_id}/suspend", json={"reason": "chargeback"}, headers=teammate
    )
    assert response.status_code == 200, response.text
    status = (await server.admin_get("/v1/admin/licenses/search", license_id=license_id)).json()
    assert status["licenses"][0]["status"] == "suspended"
    [audit] = await audit_rows(server, "license.suspend")
    assert (audit.actor_kind, audit.actor_id) == ("scoped_api_key", support["id"])
    assert audit.actor_hash == hashlib.sha256(support["token"].encode()).hexdigest()
    assert (audit.request_ip, audit.target_id) == ("203.0.113.7", license_id)

    for method, path in (("POST", KEYS), ("GET", KEYS), ("DELETE", f"{KEYS}/{support['id']}")):
        response = await server.client.request(
            method, path, json={"label": "x", "role": "full-admin"}, headers=teammate
        )
        assert_error(response, 403, "forbidden", "forbidden")
    assert len((await server.admin_get(KEYS)).json()["api_keys"]) == 1
    assert (await key_row(server, support["id"])).revoked_at is None
    # Authorized (404, not 403) on a write it holds; refused on one it does not.
    response = await server.client.post(
        f"/v1/admin/subscriptions/{new_id()}/cancel", headers=teammate, json={}
    )
    assert response.status_code == 404
    response = await server.client.post(
        "/v1/admin/products", json={"slug": "nope", "name": "N", "price_sats": 1}, headers=teammate
    )
    assert_error(response, 403, "forbidden")


async def test_what_each_role_may_do(server: Any) -> None:
    """access.md 10, role by role."""
    keys = {
        role: bearer((await create_key(server, role))["token"])
        for role in ("read-only", "license-issuer", "merchant-onboard", "full-admin")
    }
    await create_product(server, "acme")
    await create_policy(server, "acme", "basic")
    product = {"slug": "made", "name": "Made", "price_sats": 10}

    read_only = keys["read-only"]
    assert (
        await server.client.get("/v1/admin/settings/operator-name", headers=read_only)
    ).status_code == 200
    assert (await server.client.get("/v1/admin/db-info", headers=read_only)).status_code == 403
    assert (
        await server.client.post("/v1/admin/products", json=product, headers=read_only)
    ).status_code == 403

    issuer = keys["license-issuer"]
    response = await server.client.post(
        "/v1/admin/licenses", json={"product_slug": "acme"}, headers=issuer
    )
    assert response.status_code == 200, response.text
    assert (
        await server.client.post("/v1/admin/products", json=product, headers=issuer)
    ).status_code == 403

    onboard = keys["merchant-onboard"]
    assert (
        await server.client.post("/v1/admin/products", json=product, headers=onboard)
    ).status_code == 200
    response = await server.client.post(
        "/v1/admin/policies",
        json={"product_slug": "made", "slug": "std", "name": "Std"},
        headers=onboard,
    )
    assert response.status_code == 200, response.text
    response = await server.client.post(
        "/v1/admin/licenses", json={"product_slug": "made", "policy_slug": "std"}, headers=onboard
    )
    assert response.status_code == 200, response.text
    for method, path in (
        ("GET", "/v1/admin/db-info"),
        ("POST", KEYS),
        ("POST", f"/v1/admin/subscriptions/{new_id()}/cancel"),
    ):
        assert (await server.client.request(method, path, headers=onboard)).status_code == 403

    admin = keys["full-admin"]
    response = await server.client.post(
        "/v1/admin/products", json={**product, "slug": "full"}, headers=admin
    )
    assert response.status_code == 200
    license_id = (await issue_license(server, "acme"))["license_id"]
    for method, path in (
        ("POST", KEYS),
        ("GET", "/v1/admin/db-info"),
        ("POST", f"/v1/admin/licenses/{license_id}/change-tier"),
        ("POST", "/v1/admin/self-license"),
        ("POST", "/v1/admin/jobs/reconciler/run"),
    ):
        response = await server.client.request(method, path, headers=admin, json={})
        assert_error(response, 403, "forbidden", "forbidden")


async def test_last_used_at_is_set_on_success_only(server: Any) -> None:
    key = await create_key(server, "read-only")
    token = bearer(key["token"])
    assert (
        await server.client.post("/v1/admin/products", json={}, headers=token)
    ).status_code == 403
    assert (await key_row(server, key["id"])).last_used_at is None

    assert (await server.client.get("/v1/admin/products", headers=token)).status_code == 200
    first = (await key_row(server, key["id"])).last_used_at
    assert first is not None
    listed = (await server.admin_get(KEYS)).json()["api_keys"][0]
    assert parse_ts("last_used_at", listed["last_used_at"]) == first

    # Rewritten when the stored value is older than a minute.
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(ScopedApiKey)
            .where(ScopedApiKey.id == key["id"])
            .values(last_used_at=first - timedelta(minutes=5))
        )
    assert (await server.client.get("/v1/admin/products", headers=token)).status_code == 200
    assert (await key_row(server, key["id"])).last_used_at >= first  # type: ignore[operator]


async def test_the_401_and_403_rule(server: Any) -> None:
    path = "/v1/admin/products"
    for header in (
        b"Bearer",
        b"Bearer ",
        b"bearer ks_x",
        b"Basic abc",
        b"Bearer\tks_x",
        b"Bearer ks_\xe9",
    ):
        response = await server.client.get(path, headers={"Authorization": header})
        assert_error(response, 401, "unauthorized", "unauthorized")
    assert_error(await server.client.get(path), 401, "unauthorized", "unauthorized")
    key = await create_key(server, "full-admin")
    for token in ("ks_" + "A" * 43, key["token"] + " ", " " + key["token"], key["token"][:-1], "x"):
        assert_error(
            await server.client.get(path, headers=bearer(token)), 403, "forbidden", "forbidden"
        )
    assert (await server.client.get(path, headers=bearer(key["token"]))).status_code == 200


async def test_a_key_with_an_unparsable_stored_role_is_refused(server: Any) -> None:
    key = await create_key(server, "full-admin", ["payment_providers:write"])
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(ScopedApiKey).where(ScopedApiKey.id == key["id"]).values(role="root")
        )
    response = await server.client.get("/v1/admin/products", headers=bearer(key["token"]))
    assert_error(response, 403, "forbidden")
    assert (await key_row(server, key["id"])).last_used_at is None


async def test_a_scoped_key_connects_btcpay_only_in_sandbox_mode(
    make_server: Any, fake_btcpay: FakeBTCPay
) -> None:
    live = await make_server(BTCPAY_URL=fake_btcpay.url)
    holder = await create_key(live, "merchant-onboard", ["payment_providers:write"])
    response = await live.client.post("/v1/admin/btcpay/connect", headers=bearer(holder["token"]))
    assert_error(response, 403, "forbidden")
    assert (await live.admin_post("/v1/admin/btcpay/connect", {})).status_code == 200

    sandbox = await make_server(BTCPAY_URL=fake_btcpay.url, KEYSAT_SANDBOX_MODE="true")
    holder = await create_key(sandbox, "merchant-onboard", ["payment_providers:write"])
    without = await create_key(sandbox, "full-admin")
    response = await sandbox.client.post(
        "/v1/admin/btcpay/connect", headers=bearer(without["token"])
    )
    assert_error(response, 403, "forbidden")
    response = await sandbox.client.post(
        "/v1/admin/btcpay/connect", headers=bearer(holder["token"])
    )
    assert response.status_code == 200, response.text
    async with sandbox.state.db.read() as session:
        state = (
            await session.execute(
                sa.select(BTCPayAuthorizeState).where(
                    BTCPayAuthorizeState.state_token == response.json()["state"]
                )
            )
        ).scalar_one()
    assert state.scoped_initiator is True
    assert (state.initiator_actor_kind, state.initiator_actor_id) == (
        "scoped_api_key",
        holder["id"],
    )
    assert state.initiator_actor_hash == hashlib.sha256(holder["token"].encode()).hexdigest()
    # The scope does not reach disconnect or Zaprite, which stay master-only.
    for path in (
        "/v1/admin/btcpay/disconnect",
        "/v1/admin/zaprite/connect",
        "/v1/admin/zaprite/disconnect",
    ):
        response = await sandbox.client.post(path, headers=bearer(holder["token"]), json={})
        assert_error(response, 403, "forbidden")
