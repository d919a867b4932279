"""Merchant profiles and rail preferences (admin-api.md 12, 21.5; access.md 9.2), and
purchases routed by the product's profile (payments.md 2.5)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from fakes.btcpay import FakeBTCPay
from fakes.zaprite import FakeZaprite
from keysat.clock import clock
from keysat.operator.models import MerchantProfile
from keysat.payments.models import BTCPayAuthorizeState, RailPreference
from keysat.subscriptions.models import Subscription
from keysat.wire import new_id
from support import (
    ADMIN,
    UNKNOWN_ID,
    assert_error,
    audit_rows,
    connect_btcpay_row,
    connect_zaprite_row,
    create_policy,
    create_product,
    invoice_row,
    poll,
    purchase,
    sandbox_action,
    self_license_key,
)

PROFILES = "/v1/admin/merchant-profiles"
PROFILE_FIELDS = {
    "id",
    "name",
    "legal_name",
    "support_url",
    "support_email",
    "brand_color",
    "post_purchase_redirect_url",
    "is_default",
    "smtp_configured",
    "smtp_host",
    "smtp_port",
    "smtp_username",
    "smtp_from_address",
    "smtp_from_name",
    "smtp_use_starttls",
    "created_at",
    "updated_at",
}
FULL = {
    "name": "Side Shop",
    "legal_name": "Side Shop GmbH",
    "support_url": "https://side.example/help",
    "support_email": "help@side.example",
    "brand_color": "#0A7",
    "post_purchase_redirect_url": "https://side.example/thanks/{invoice_id}",
    "smtp_host": "smtp.side.example",
    "smtp_port": 587,
    "smtp_username": "mailer",
    "smtp_password": "s3cret pass ",
    "smtp_from_address": "receipts@side.example",
    "smtp_from_name": "Side Shop receipts",
    "smtp_use_starttls": False,
}


@pytest.fixture
async def pro(make_server: Callable[..., Any]) -> Any:
    """Outside sandbox mode, with a self-license that lifts the profile cap."""
    return await make_server(KEYSAT_LICENSE=self_license_key("unlimited_merchant_profiles"))


async def create(server: Any, **fields: Any) -> dict[str, Any]:
    response = await server.admin_post(PROFILES, {"name": "Side Shop", **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def profile_rows(server: Any) -> list[MerchantProfile]:
    async with server.state.db.read() as session:
        query = sa.select(MerchantProfile).order_by(MerchantProfile.created_at)
        return list((await session.execute(query)).scalars())


async def profile_row(server: Any, profile_id: str) -> MerchantProfile:
    async with server.state.db.read() as session:
        row = await session.get(MerchantProfile, profile_id)
    assert row is not None
    return row


async def default_id(server: Any) -> str:
    [default] = [row for row in await profile_rows(server) if row.is_default]
    return default.id


# --- list and the cap ----------------------------------------------------------------------


async def test_a_fresh_server_lists_its_default_profile(server: Any) -> None:
    response = await server.admin_get(PROFILES)
    assert response.status_code == 200
    [profile] = response.json()["profiles"]
    assert set(profile) == PROFILE_FIELDS | {"providers"}
    assert profile["is_default"] is True
    assert profile["providers"] == []
    assert profile["smtp_configured"] is False and profile["smtp_use_starttls"] is True
    assert response.headers["cache-control"] == "no-store"


async def test_creator_tier_cannot_create_a_second_profile(server: Any) -> None:
    response = await server.admin_post(PROFILES, {"name": "Second"})
    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "tier_cap"
    assert body["upgrade_url"] == "https://licensing.keysat.xyz/buy/keysat?policy=pro"
    assert body["message"] == (
        "Your Creator tier allows 1 merchant profile. You have 1. "
        "Upgrade to Pro for unlimited merchant profiles."
    )
    # The cap is the first check: a broken body still gets the 402.
    garbage = await server.client.post(
        PROFILES, content=b"{nope", headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert garbage.status_code == 402
    assert len(await profile_rows(server)) == 1
    assert await audit_rows(server, "merchant_profile.create") == []


async def test_credentials_come_first(server: Any) -> None:
    assert (await server.client.get(PROFILES)).status_code == 401
    wrong = {"Authorization": "Bearer wrong-key-wrong-key-wrong-key-wrong"}
    response = await server.client.post(PROFILES, content=b"{nope", headers=wrong)
    assert response.status_code == 403


# --- create --------------------------------------------------------------------------------


async def test_create_stores_every_field_and_never_returns_the_password(pro: Any) -> None:
    clock.freeze()
    created = await create(pro, **FULL)
    assert set(created) == PROFILE_FIELDS
    expected = {key: value for key, value in FULL.items() if key != "smtp_password"}
    assert {key: created[key] for key in expected} == expected
    assert created["is_default"] is False
    assert created["smtp_configured"] is True
    assert created["created_at"] == created["updated_at"] == clock.now().isoformat()
    row = await profile_row(pro, created["id"])
    assert row.smtp_password == "s3cret pass "
    [audit] = await audit_rows(pro, "merchant_profile.create")
    assert (audit.target_kind, audit.target_id) == ("merchant_profile", created["id"])
    assert audit.details == {"name": "Side Shop"}

    listed = (await pro.admin_get(PROFILES)).json()["profiles"]
    detail = (await pro.admin_get(f"{PROFILES}/{created['id']}")).json()
    for body in (created, *listed, detail):
        assert "smtp_password" not in body
        assert "s3cret" not in str(body)


async def test_create_defaults_and_empty_strings_become_null(pro: Any) -> None:
    created = await create(
        pro,
        name="  Trimmed  ",
        legal_name="",
        support_url="  ",
        support_email="",
        brand_color="",
        smtp_host="",
        smtp_password="",
    )
    assert created["name"] == "Trimmed"
    for field in ("legal_name", "support_url", "support_email", "brand_color", "smtp_host"):
        assert created[field] is None, field
    assert created["smtp_use_starttls"] is True and created["smtp_configured"] is False
    assert (await profile_row(pro, created["id"])).smtp_password is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("brand_color", "#abc"),
        ("brand_color", "#A1B2C3"),
        ("support_url", "http://localhost:8080/help?x=1"),
        ("post_purchase_redirect_url", "https://shop.example/done?invoice={invoice_id}"),
        ("support_email", "a@b"),
        ("smtp_port", 1),
        ("smtp_port", 65535),
        ("legal_name", "L" * 200),
        ("smtp_host", "h" * 253),
        ("smtp_username", "u" * 256),
        ("smtp_from_name", "n" * 200),
    ],
)
async def test_values_at_the_edge_of_each_rule_are_accepted(
    pro: Any, field: str, value: Any
) -> None:
    assert (await create(pro, **{field: value}))[field] == value


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "   "}, "bad request: merchant profile name required"),
        ({"name": "N" * 201}, None),
        ({"legal_name": "L" * 201}, None),
        ({"support_url": "ftp://side.example"}, None),
        ({"support_url": "side.example/help"}, None),
        ({"support_url": "https://"}, None),
        ({"support_url": "https://side.example/a b"}, None),
        ({"support_url": "http://[::1/help"}, None),
        ({"support_url": "https://x.example/" + "a" * 2040}, None),
        ({"post_purchase_redirect_url": "javascript:alert(1)"}, None),
        ({"support_email": "nobody"}, None),
        ({"support_email": "@side.example"}, None),
        ({"support_email": "help@"}, None),
        ({"support_email": "a@b@c"}, None),
        ({"support_email": "a b@c"}, None),
        ({"support_email": "a@" + "b" * 253}, None),
        ({"brand_color": "red"}, None),
        ({"brand_color": "#12"}, None),
        ({"brand_color": "#1234"}, None),
        ({"brand_color": "#GGG"}, None),
        ({"brand_color": "0A7"}, None),
        ({"smtp_port": 0}, None),
        ({"smtp_port": 65536}, None),
        ({"smtp_port": "587"}, None),
        ({"smtp_port": 587.5}, None),
        ({"smtp_use_starttls": "yes"}, None),
        ({"smtp_host": "h" * 254}, None),
        ({"smtp_username": "u" * 257}, None),
        ({"smtp_password": "p" * 1025}, None),
        ({"smtp_from_address": "receipts"}, None),
        ({"smtp_from_name": "n" * 201}, None),
    ],
)
async def test_invalid_fields_are_400_and_create_nothing(
    pro: Any, body: dict[str, Any], message: str | None
) -> None:
    response = await pro.admin_post(PROFILES, {"name": "Side Shop", **body})
    assert_error(response, 400, "bad_request", message)
    assert len(await profile_rows(pro)) == 1
    assert await audit_rows(pro, "merchant_profile.create") == []


async def test_create_without_a_name_is_400(pro: Any) -> None:
    response = await pro.admin_post(PROFILES, {"legal_name": "x"})
    assert_error(response, 400, "bad_request", "bad request: missing field 'name'")


# --- list and get --------------------------------------------------------------------------


async def test_list_puts_the_default_first_then_the_newest(
    pro: Any, fake_btcpay: FakeBTCPay
) -> None:
    clock.freeze()
    first = await create(pro, name="First")
    clock.advance(timedelta(seconds=1))
    second = await create(pro, name="Second")
    provider_id = await connect_btcpay_row(pro, fake_btcpay, profile_id=first["id"])
    profiles = (await pro.admin_get(PROFILES)).json()["profiles"]
    assert [p["id"] for p in profiles] == [await default_id(pro), second["id"], first["id"]]
    [provider] = profiles[2]["providers"]
    assert provider["id"] == provider_id
    assert provider["kind"] == "btcpay"
    assert provider["served_rails"] == ["lightning", "onchain"]
    assert set(provider) == {
        "id",
        "kind",
        "label",
        "base_url",
        "store_id",
        "webhook_id",
        "connected_at",
        "served_rails",
    }
    assert profiles[1]["providers"] == []


async def test_get_adds_providers_preferences_and_counts(
    pro: Any, fake_btcpay: FakeBTCPay, fake_zaprite: FakeZaprite
) -> None:
    profile = await create(pro)
    btcpay = await connect_btcpay_row(pro, fake_btcpay, profile_id=profile["id"])
    zaprite = await connect_zaprite_row(pro, fake_zaprite, profile_id=profile["id"])
    await create_product(pro, "one", merchant_profile_id=profile["id"])
    await create_product(pro, "two", merchant_profile_id=profile["id"])
    await create_product(pro, "elsewhere")
    path = f"{PROFILES}/{profile['id']}"
    await pro.client.put(
        f"{path}/rail-preferences/onchain", json={"payment_provider_id": zaprite}, headers=ADMIN
    )
    await pro.client.put(
        f"{path}/rail-preferences/lightning", json={"payment_provider_id": btcpay}, headers=ADMIN
    )

    response = await pro.admin_get(path)
    assert response.status_code == 200
    detail = response.json()
    assert set(detail) == PROFILE_FIELDS | {
        "providers",
        "rail_preferences",
        "product_count",
        "active_subscription_count",
    }
    assert [p["id"] for p in detail["providers"]] == [btcpay, zaprite]
    assert detail["rail_preferences"] == [
        {"rail": "lightning", "payment_provider_id": btcpay},
        {"rail": "onchain", "payment_provider_id": zaprite},
    ]
    assert detail["product_count"] == 2
    assert detail["active_subscription_count"] == 0


@pytest.mark.parametrize("unknown", [UNKNOWN_ID, "not-a-uuid", "0" * 32])
async def test_unknown_profiles_are_404_everywhere(pro: Any, unknown: str) -> None:
    path = f"{PROFILES}/{unknown}"
    message = f"not found: merchant profile '{unknown}'"
    assert_error(await pro.admin_get(path), 404, "not_found", message)
    assert_error(await pro.admin_patch(path, {"name": "x"}), 404, "not_found", message)
    assert_error(await pro.admin_delete(path), 404, "not_found", message)
    assert_error(await pro.admin_post(f"{path}/set-default"), 404, "not_found", message)
    put = await pro.client.put(
        f"{path}/rail-preferences/lightning", json={"payment_provider_id": new_id()}, headers=ADMIN
    )
    assert_error(put, 404, "not_found", message)
    assert_error(
        await pro.admin_delete(f"{path}/rail-preferences/lightning"), 404, "not_found", message
    )


# --- patch ---------------------------------------------------------------------------------


async def test_patch_null_clears_clearable_fields_and_ignores_the_rest(pro: Any) -> None:
    clock.freeze()
    profile = await create(pro, **FULL)
    clock.advance(timedelta(minutes=5))
    clears = [key for key in FULL if key not in ("name", "smtp_use_starttls")]
    body = {key: None for key in [*clears, "name", "smtp_use_starttls"]}
    response = await pro.admin_patch(f"{PROFILES}/{profile['id']}", body)
    assert response.status_code == 200, response.text
    patched = response.json()
    assert set(patched) == PROFILE_FIELDS
    for key in clears:
        if key != "smtp_password":
            assert patched[key] is None, key
    assert patched["name"] == "Side Shop"
    assert patched["smtp_use_starttls"] is False
    assert patched["smtp_configured"] is False
    assert patched["created_at"] == profile["created_at"]
    assert patched["updated_at"] == clock.now().isoformat()
    assert (await profile_row(pro, profile["id"])).smtp_password is None
    [audit] = await audit_rows(pro, "merchant_profile.update")
    assert audit.details == {"name": "Side Shop"}


async def test_patch_changes_only_the_fields_sent(pro: Any) -> None:
    profile = await create(pro, **FULL)
    response = await pro.admin_patch(
        f"{PROFILES}/{profile['id']}",
        {"name": " Renamed ", "brand_color": "#123456", "smtp_password": "new", "smtp_port": 465},
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["name"] == "Renamed"
    assert patched["brand_color"] == "#123456"
    assert patched["smtp_port"] == 465
    assert patched["support_url"] == FULL["support_url"]
    assert (await profile_row(pro, profile["id"])).smtp_password == "new"
    [audit] = await audit_rows(pro, "merchant_profile.update")
    assert audit.details == {"name": "Renamed"}
    assert "new" not in str(audit.details)


@pytest.mark.parametrize(
    "body",
    [
        {"name": " ", "legal_name": "Changed"},
        {"legal_name": "Changed", "brand_color": "blue"},
        {"legal_name": "Changed", "support_url": "mailto:x@y"},
        {"legal_name": "Changed", "smtp_port": 70000},
    ],
)
async def test_a_refused_patch_changes_nothing(pro: Any, body: dict[str, Any]) -> None:
    profile = await create(pro, **FULL)
    response = await pro.admin_patch(f"{PROFILES}/{profile['id']}", body)
    assert_error(response, 400, "bad_request")
    row = await profile_row(pro, profile["id"])
    assert (row.legal_name, row.brand_color, row.smtp_port) == ("Side Shop GmbH", "#0A7", 587)
    assert await audit_rows(pro, "merchant_profile.update") == []


async def test_the_default_profile_can_be_patched_on_any_tier(server: Any) -> None:
    profile_id = await default_id(server)
    response = await server.admin_patch(
        f"{PROFILES}/{profile_id}", {"name": "Acme", "support_url": "https://acme.example"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["support_url"] == "https://acme.example"
    cleared = await server.admin_patch(f"{PROFILES}/{profile_id}", {"support_url": None})
    assert cleared.json()["support_url"] is None
    assert (await profile_row(server, profile_id)).support_url is None


# --- delete and set-default ----------------------------------------------------------------


async def test_delete_refuses_the_default_profile(server: Any) -> None:
    response = await server.admin_delete(f"{PROFILES}/{await default_id(server)}")
    assert_error(response, 409, "conflict")
    assert "default" in response.json()["message"]
    assert len(await profile_rows(server)) == 1


async def test_delete_refuses_a_profile_with_products_or_providers(
    pro: Any, fake_btcpay: FakeBTCPay
) -> None:
    profile = await create(pro)
    path = f"{PROFILES}/{profile['id']}"
    product = await create_product(pro, "acme", merchant_profile_id=profile["id"])
    response = await pro.admin_delete(path)
    assert_error(response, 409, "conflict")
    assert "product" in response.json()["message"]

    await pro.admin_patch(f"/v1/admin/products/{product['id']}", {"merchant_profile_id": None})
    await connect_btcpay_row(pro, fake_btcpay, profile_id=profile["id"])
    response = await pro.admin_delete(path)
    assert_error(response, 409, "conflict")
    assert "disconnect" in response.json()["message"]
    assert len(await profile_rows(pro)) == 2
    assert await audit_rows(pro, "merchant_profile.delete") == []


async def subscription_on(server: Any, license_id: str) -> Subscription:
    async with server.state.db.read() as session:
        query = sa.select(Subscription).where(Subscription.license_id == license_id)
        return (await session.execute(query)).scalar_one()


async def test_delete_refuses_open_subscriptions_and_clears_ended_ones(sandbox: Any) -> None:
    profile = await create(sandbox)
    product = await create_product(sandbox, "acme", merchant_profile_id=profile["id"])
    await create_policy(
        sandbox, "acme", "monthly", is_recurring=True, renewal_period_days=30, grace_period_days=7
    )
    bought = await purchase(sandbox, "acme", policy_slug="monthly")
    await sandbox_action(sandbox, bought["invoice_id"], "pay")
    license_id = (await poll(sandbox, bought["invoice_id"]))["license_id"]
    subscription = await subscription_on(sandbox, license_id)
    assert subscription.merchant_profile_id == profile["id"]
    product_path = f"/v1/admin/products/{product['id']}"
    await sandbox.admin_patch(product_path, {"merchant_profile_id": None})
    path = f"{PROFILES}/{profile['id']}"
    detail = (await sandbox.admin_get(path)).json()
    assert (detail["product_count"], detail["active_subscription_count"]) == (0, 1)

    response = await sandbox.admin_delete(path)
    assert_error(response, 409, "conflict")
    assert "subscription" in response.json()["message"]

    cancel = await sandbox.admin_post(f"/v1/admin/subscriptions/{subscription.id}/cancel")
    assert cancel.status_code == 200, cancel.text
    response = await sandbox.admin_delete(path)
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "id": profile["id"]}
    ended = await subscription_on(sandbox, license_id)
    assert (ended.status, ended.merchant_profile_id) == ("cancelled", None)


async def test_delete_removes_preferences_and_authorize_states(pro: Any) -> None:
    profile = await create(pro, name="Doomed")
    at = clock.now()
    async with pro.state.db.write() as session:
        session.add(
            BTCPayAuthorizeState(
                state_token="pending-state",
                created_at=at,
                merchant_profile_id=profile["id"],
                label="BTCPay — Doomed",
                initiator_actor_kind="admin_api_key",
            )
        )
    response = await pro.admin_delete(f"{PROFILES}/{profile['id']}")
    assert response.status_code == 200, response.text
    assert [row.id for row in await profile_rows(pro)] == [await default_id(pro)]
    async with pro.state.db.read() as session:
        assert await session.get(BTCPayAuthorizeState, "pending-state") is None
    [audit] = await audit_rows(pro, "merchant_profile.delete")
    assert (audit.target_id, audit.details) == (profile["id"], {"name": "Doomed"})
    assert (await pro.admin_get(f"{PROFILES}/{profile['id']}")).status_code == 404


async def test_set_default_moves_the_flag_in_one_step(pro: Any) -> None:
    old = await default_id(pro)
    profile = await create(pro)
    response = await pro.admin_post(f"{PROFILES}/{profile['id']}/set-default")
    assert response.status_code == 200, response.text
    assert response.json() == {"ok": True, "id": profile["id"]}
    flags = {row.id: row.is_default for row in await profile_rows(pro)}
    assert flags == {old: False, profile["id"]: True}
    listed = (await pro.admin_get(PROFILES)).json()["profiles"]
    assert [p["id"] for p in listed] == [profile["id"], old]
    [audit] = await audit_rows(pro, "merchant_profile.set_default")
    assert (audit.target_id, audit.details) == (profile["id"], {})

    # Setting it again changes nothing; the former default may now be deleted.
    again = await pro.admin_post(f"{PROFILES}/{profile['id']}/set-default")
    assert again.status_code == 200
    assert (await pro.admin_delete(f"{PROFILES}/{old}")).status_code == 200
    assert [row.id for row in await profile_rows(pro)] == [profile["id"]]


# --- rail preferences ----------------------------------------------------------------------


async def put_preference(server: Any, profile_id: str, rail: str, provider_id: str) -> Any:
    return await server.client.put(
        f"{PROFILES}/{profile_id}/rail-preferences/{rail}",
        json={"payment_provider_id": provider_id},
        headers=ADMIN,
    )


async def preferences(server: Any) -> list[tuple[str, str, str]]:
    async with server.state.db.read() as session:
        rows = (await session.execute(sa.select(RailPreference))).scalars()
        return sorted((r.merchant_profile_id, r.rail, r.payment_provider_id) for r in rows)


@pytest.mark.parametrize("spelling", ["onchain", "on-chain", "on_chain"])
async def test_a_preference_is_stored_under_its_canonical_rail(
    pro: Any, fake_btcpay: FakeBTCPay, spelling: str
) -> None:
    profile_id = await default_id(pro)
    provider_id = await connect_btcpay_row(pro, fake_btcpay)
    response = await put_preference(pro, profile_id, spelling, provider_id)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "ok": True,
        "merchant_profile_id": profile_id,
        "rail": "onchain",
        "payment_provider_id": provider_id,
    }
    assert await preferences(pro) == [(profile_id, "onchain", provider_id)]
    [audit] = await audit_rows(pro, "merchant_profile.rail_preference.set")
    assert (audit.target_kind, audit.target_id) == ("merchant_profile", profile_id)
    assert audit.details == {"rail": "onchain", "payment_provider_id": provider_id}


async def test_the_three_validations_of_a_preference(
    pro: Any, fake_btcpay: FakeBTCPay, fake_zaprite: FakeZaprite
) -> None:
    home = await default_id(pro)
    other = await create(pro)
    btcpay = await connect_btcpay_row(pro, fake_btcpay)
    elsewhere = await connect_zaprite_row(pro, fake_zaprite, profile_id=other["id"])
    missing = new_id()
    cases = [
        (missing, f"bad request: payment provider '{missing}' does not exist"),
        ("junk", "bad request: payment provider 'junk' does not exist"),
        (elsewhere, None),
        (btcpay, "bad request: a btcpay provider does not serve the 'card' rail"),
    ]
    for provider_id, message in cases:
        response = await put_preference(pro, home, "card", provider_id)
        assert_error(response, 400, "bad_request", message)
    attached = await put_preference(pro, home, "lightning", elsewhere)
    assert_error(attached, 400, "bad_request")
    assert "not attached" in attached.json()["message"]
    assert await preferences(pro) == []
    assert await audit_rows(pro, "merchant_profile.rail_preference.set") == []


async def test_rail_and_body_are_checked(pro: Any) -> None:
    home = await default_id(pro)
    for verb in ("put", "delete"):
        response = await pro.client.request(
            verb.upper(),
            f"{PROFILES}/{home}/rail-preferences/bitcoin",
            json={"payment_provider_id": new_id()},
            headers=ADMIN,
        )
        assert_error(
            response,
            400,
            "bad_request",
            "bad request: unknown rail 'bitcoin'; accepted: lightning, onchain, card",
        )
    response = await pro.client.put(
        f"{PROFILES}/{home}/rail-preferences/lightning", json={}, headers=ADMIN
    )
    assert_error(response, 400, "bad_request", "bad request: missing field 'payment_provider_id'")


async def test_put_replaces_and_delete_is_idempotent(
    pro: Any, fake_btcpay: FakeBTCPay, fake_zaprite: FakeZaprite
) -> None:
    home = await default_id(pro)
    btcpay = await connect_btcpay_row(pro, fake_btcpay)
    zaprite = await connect_zaprite_row(pro, fake_zaprite)
    assert (await put_preference(pro, home, "lightning", btcpay)).status_code == 200
    assert (await put_preference(pro, home, "lightning", zaprite)).status_code == 200
    assert await preferences(pro) == [(home, "lightning", zaprite)]
    for _ in range(2):
        response = await pro.admin_delete(f"{PROFILES}/{home}/rail-preferences/lightning")
        assert response.status_code == 200
        assert response.json() == {"ok": True, "merchant_profile_id": home, "rail": "lightning"}
    assert await preferences(pro) == []
    audits = await audit_rows(pro, "merchant_profile.rail_preference.clear")
    assert [a.details for a in audits] == [{"rail": "lightning"}, {"rail": "lightning"}]


# --- purchases route by the product's profile ----------------------------------------------


async def test_a_purchase_uses_its_products_profile(
    pro: Any, fake_btcpay: FakeBTCPay, fake_zaprite: FakeZaprite
) -> None:
    side = await create(pro, post_purchase_redirect_url="https://side.example/t/{invoice_id}")
    home_zaprite = await connect_zaprite_row(pro, fake_zaprite)
    side_btcpay = await connect_btcpay_row(pro, fake_btcpay, profile_id=side["id"])
    await create_product(pro, "home-app")
    await create_product(pro, "side-app", merchant_profile_id=side["id"])

    side_buy = await purchase(pro, "side-app")
    invoice = await invoice_row(pro, side_buy["invoice_id"])
    assert (invoice.provider_kind, invoice.payment_provider_id) == ("btcpay", side_btcpay)
    [created] = [
        r for r in fake_btcpay.requests if r.method == "POST" and r.path.endswith("/invoices")
    ]
    assert created.json()["checkout"]["redirectURL"] == (
        f"https://side.example/t/{side_buy['invoice_id']}"
    )

    home_buy = await purchase(pro, "home-app")
    invoice = await invoice_row(pro, home_buy["invoice_id"])
    assert (invoice.provider_kind, invoice.payment_provider_id) == ("zaprite", home_zaprite)
    [order] = [r.json() for r in fake_zaprite.requests if r.path == "/v1/orders"]
    assert order["redirectUrl"] == (
        f"http://keysat.test/thank-you?invoice_id={home_buy['invoice_id']}"
    )


async def test_a_rail_preference_set_through_the_api_decides_the_provider(
    pro: Any, fake_btcpay: FakeBTCPay, fake_zaprite: FakeZaprite
) -> None:
    side = await create(pro)
    btcpay = await connect_btcpay_row(pro, fake_btcpay, profile_id=side["id"])
    zaprite = await connect_zaprite_row(pro, fake_zaprite, profile_id=side["id"])
    await create_product(pro, "side-app", merchant_profile_id=side["id"])

    async def provider_for(rail: str) -> str | None:
        bought = await purchase(pro, "side-app", rail=rail)
        return (await invoice_row(pro, bought["invoice_id"])).payment_provider_id

    # Both serve Lightning: the earliest connected wins until a preference says otherwise.
    assert await provider_for("lightning") == btcpay
    assert (await put_preference(pro, side["id"], "lightning", zaprite)).status_code == 200
    assert await provider_for("lightning") == zaprite
    assert await provider_for("onchain") == btcpay
    await pro.admin_delete(f"{PROFILES}/{side['id']}/rail-preferences/lightning")
    assert await provider_for("lightning") == btcpay
