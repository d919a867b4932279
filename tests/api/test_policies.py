"""Admin policies (admin-api.md 4.1-4.8, 21.2, 24 "Policies").

"Pro tier" checks run in sandbox mode, which unlocks every tier gate the way a Pro
self-license will (access.md 8); self-license activation is not built yet.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa

from keysat.billing.models import Invoice
from keysat.catalog.models import Policy
from keysat.licensing.models import License
from keysat.operator.models import AuditEntry
from keysat.webhooks.models import WebhookEvent
from support import ADMIN, UNKNOWN_ID, add_invoice, add_license, audit_rows

POLICY_KEYS = {
    "id",
    "product_id",
    "name",
    "slug",
    "duration_seconds",
    "grace_seconds",
    "max_machines",
    "is_trial",
    "price_sats_override",
    "entitlements",
    "metadata",
    "active",
    "public",
    "tip_recipient",
    "tip_pct_bps",
    "tip_label",
    "is_recurring",
    "renewal_period_days",
    "grace_period_days",
    "trial_days",
    "tier_rank",
    "allow_repeat_trials",
    "archived_at",
    "created_at",
    "updated_at",
}
RECURRING = {"is_recurring": True, "renewal_period_days": 30, "grace_period_days": 7}


async def create_product(server: Any, slug: str = "app", **fields: Any) -> dict[str, Any]:
    body = {"slug": slug, "name": slug.title(), "price_sats": 1000, **fields}
    response = await server.admin_post("/v1/admin/products", body)
    assert response.status_code == 200, response.text
    product: dict[str, Any] = response.json()
    return product


async def post_policy(server: Any, slug: str = "std", **fields: Any) -> Any:
    body = {"product_slug": "app", "name": slug.title(), "slug": slug, **fields}
    return await server.admin_post("/v1/admin/policies", body)


async def create_policy(server: Any, slug: str = "std", **fields: Any) -> dict[str, Any]:
    response = await post_policy(server, slug, **fields)
    assert response.status_code == 200, response.text
    policy: dict[str, Any] = response.json()
    return policy


async def policy_rows(server: Any) -> list[Policy]:
    async with server.state.db.read() as session:
        return list((await session.execute(sa.select(Policy))).scalars().all())


async def license_ids(server: Any) -> set[str]:
    async with server.state.db.read() as session:
        return set((await session.execute(sa.select(License.id))).scalars().all())


# --- create -------------------------------------------------------------------------------


async def test_create_applies_defaults_and_audits(server: Any) -> None:
    product = await create_product(server)
    response = await post_policy(server, "std", name="  Standard  ")
    assert response.status_code == 200
    policy = response.json()
    assert set(policy) == POLICY_KEYS
    assert {key: policy[key] for key in POLICY_KEYS - {"id", "created_at", "updated_at"}} == {
        "product_id": product["id"],
        "name": "Standard",
        "slug": "std",
        "duration_seconds": 0,
        "grace_seconds": 0,
        "max_machines": 1,
        "is_trial": False,
        "price_sats_override": None,
        "entitlements": [],
        "metadata": {},
        "active": True,
        "public": True,
        "tip_recipient": None,
        "tip_pct_bps": 0,
        "tip_label": None,
        "is_recurring": False,
        "renewal_period_days": 0,
        "grace_period_days": 7,
        "trial_days": 0,
        "tier_rank": None,
        "allow_repeat_trials": False,
        "archived_at": None,
    }
    assert policy["created_at"].endswith("+00:00")
    [row] = await policy_rows(server)
    assert row.id == policy["id"]
    [audit] = await audit_rows(server, "policy.create")
    assert (audit.target_kind, audit.target_id) == ("policy", policy["id"])
    assert audit.details == {"product_id": product["id"], "slug": "std"}
    # No event for policy changes.
    assert [e.event_type for e in await _events(server)] == ["product.created"]


async def _events(server: Any) -> list[WebhookEvent]:
    async with server.state.db.read() as session:
        return list((await session.execute(sa.select(WebhookEvent))).scalars().all())


async def test_create_stores_every_field(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(
        server,
        "pro",
        duration_seconds=86_400,
        grace_seconds=3_600,
        max_machines=0,
        is_trial=True,
        price_sats_override=0,
        entitlements=["Multi Device", "\u00e9t\u00e9"],
        metadata={"highlight": True, "marketing_bullets": ["Fast"]},
        tip_recipient="dev_1@tips.example.com",
        tip_pct_bps=250,
        tip_label="   ",
        grace_period_days=90,
        trial_days=3,
        tier_rank=1000,
        allow_repeat_trials=True,
    )
    assert policy["duration_seconds"] == 86_400
    assert policy["grace_seconds"] == 3_600
    assert policy["max_machines"] == 0
    assert policy["is_trial"] is True
    assert policy["price_sats_override"] == 0
    assert policy["entitlements"] == ["Multi Device", "\u00e9t\u00e9"]
    assert policy["metadata"] == {"highlight": True, "marketing_bullets": ["Fast"]}
    assert policy["tip_recipient"] == "dev_1@tips.example.com"
    assert policy["tip_pct_bps"] == 250
    assert policy["tip_label"] is None
    assert policy["grace_period_days"] == 90
    assert policy["trial_days"] == 3
    assert policy["tier_rank"] == 1000
    assert policy["allow_repeat_trials"] is True


async def test_create_order_of_checks(server: Any) -> None:
    # Unknown product first, even with other bad fields.
    response = await server.admin_post(
        "/v1/admin/policies",
        {"product_slug": "ghost", "name": "X", "slug": "x", "max_machines": -1},
    )
    assert response.status_code == 404
    assert response.json()["message"] == "not found: product 'ghost'"

    response = await server.admin_post("/v1/admin/policies", {"name": "X", "slug": "x"})
    assert response.status_code == 400
    assert response.json()["message"] == "bad request: missing field 'product_slug'"

    await create_product(server)
    # Field validation comes before the recurring gate...
    response = await post_policy(server, is_recurring=True, renewal_period_days=0)
    assert response.status_code == 400
    # ...and the recurring gate before the tier_rank range.
    response = await post_policy(server, tier_rank=5000, **RECURRING)
    assert response.status_code == 402
    response = await post_policy(server, tier_rank=5000)
    assert response.status_code == 400
    assert "tier_rank" in response.json()["message"]
    assert await policy_rows(server) == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"duration_seconds": -1}, "duration_seconds must be at least 0"),
        ({"grace_seconds": -1}, "grace_seconds must be at least 0"),
        ({"max_machines": -1}, "max_machines must be at least 0"),
        ({"max_machines": 2**31}, "max_machines must be at most"),
        ({"price_sats_override": -1}, "price_sats_override must be at least 0"),
        ({"grace_period_days": 91}, "grace_period_days must be at most 90"),
        ({"grace_period_days": -1}, "grace_period_days must be at least 0"),
        ({"renewal_period_days": 1831}, "unreasonably large"),
        ({"trial_days": -1}, "trial_days must be at least 0"),
        ({"tier_rank": -1}, "tier_rank must be at least 0"),
        ({"tier_rank": 1001}, "tier_rank must be at most 1000"),
        ({"entitlements": ["a", "a"]}, "duplicate entitlement 'a'"),
        ({"entitlements": [""]}, "non-empty"),
        ({"entitlements": ["x" * 256]}, "255 bytes"),
        ({"entitlements": ["\u00e9" * 127 + "e"]}, None),
        ({"entitlements": ["\u00e9" * 128]}, "255 bytes"),
        ({"entitlements": [f"e{i}" for i in range(256)]}, "at most 255 entitlements"),
        ({"entitlements": "pro"}, "field 'entitlements' must be an? array"),
        ({"entitlements": [1]}, "field 'entitlements' must be an? string"),
        ({"metadata": []}, "field 'metadata' must be an? object"),
        ({"is_trial": "yes"}, "field 'is_trial' must be an? boolean"),
        ({"duration_seconds": 1.5}, "field 'duration_seconds' must be an? integer"),
        ({"duration_seconds": 2**63}, "duration_seconds"),
        ({"slug": "bad slug"}, "slug may only contain"),
        ({"name": ""}, "name must not be empty"),
    ],
)
async def test_field_validation(server: Any, fields: dict[str, Any], message: str | None) -> None:
    await create_product(server)
    response = await post_policy(server, **fields)
    if message is None:
        assert response.status_code == 200
        return
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert re.search(message, response.json()["message"])
    assert await policy_rows(server) == []


async def test_duplicate_slug_is_a_conflict_per_product(server: Any) -> None:
    await create_product(server)
    await create_product(server, "other")
    await create_policy(server, "std")
    response = await post_policy(server, "std")
    assert response.status_code == 409
    assert response.json()["message"] == (
        "conflict: policy slug 'std' already exists for this product"
    )
    response = await server.admin_post(
        "/v1/admin/policies", {"product_slug": "other", "name": "Std", "slug": "std"}
    )
    assert response.status_code == 200


async def test_creator_tier_policy_cap_counts_archived_and_inactive(server: Any) -> None:
    await create_product(server)
    policies = [await create_policy(server, f"p{index}") for index in range(5)]
    await server.admin_patch(f"/v1/admin/policies/{policies[0]['id']}/archived", {"archived": True})
    await server.admin_patch(f"/v1/admin/policies/{policies[1]['id']}/active", {"active": False})

    response = await post_policy(server, "p5")
    assert response.status_code == 402
    assert response.json()["error"] == "tier_cap"
    assert "/buy/keysat" in response.json()["upgrade_url"]
    # The cap comes before field validation.
    response = await post_policy(server, "p5", max_machines=-1)
    assert response.status_code == 402
    assert len(await policy_rows(server)) == 5

    # The cap is per product.
    await create_product(server, "other")
    response = await server.admin_post(
        "/v1/admin/policies", {"product_slug": "other", "name": "X", "slug": "x"}
    )
    assert response.status_code == 200


async def test_sandbox_lifts_the_policy_cap(make_server: Any) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true")
    await create_product(server)
    for index in range(6):
        await create_policy(server, f"p{index}")
    assert len(await policy_rows(server)) == 6


# --- recurring ----------------------------------------------------------------------------


async def test_creator_tier_cannot_create_a_recurring_policy(server: Any) -> None:
    await create_product(server)
    response = await post_policy(server, **RECURRING)
    assert response.status_code == 402
    body = response.json()
    assert body["error"] == "tier_cap"
    assert "buy/keysat" in body["upgrade_url"]
    assert await policy_rows(server) == []
    assert await audit_rows(server, "policy.create") == []


async def test_pro_tier_recurring_policy_is_created_and_public(make_server: Any) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true")
    await create_product(server)
    policy = await create_policy(server, "monthly", **RECURRING, trial_days=14)
    assert policy["is_recurring"] is True
    assert policy["renewal_period_days"] == 30
    assert policy["grace_period_days"] == 7
    assert policy["trial_days"] == 14

    tiers = (await server.client.get("/v1/products/app/policies")).json()["policies"]
    assert len(tiers) == 1
    assert tiers[0]["is_recurring"] is True
    assert tiers[0]["renewal_period_days"] == 30
    assert tiers[0]["trial_days"] == 14


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"renewal_period_days": 0}, "renewal_period_days of at least 1"),
        ({"renewal_period_days": 1831}, "unreasonably large"),
        ({"renewal_period_days": 30, "trial_days": 31}, "trial_days cannot exceed"),
    ],
)
async def test_bad_recurring_terms(make_server: Any, fields: dict[str, Any], message: str) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true")
    await create_product(server)
    response = await post_policy(server, is_recurring=True, **fields)
    assert response.status_code == 400
    assert re.search(message, response.json()["message"])
    assert await policy_rows(server) == []


async def test_recurring_bounds_are_inclusive(make_server: Any) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true")
    await create_product(server)
    await create_policy(server, "a", is_recurring=True, renewal_period_days=1, trial_days=1)
    await create_policy(server, "b", is_recurring=True, renewal_period_days=1830)


async def test_patch_to_recurring_is_gated_then_grandfathered(make_server: Any) -> None:
    creator = await make_server()
    await create_product(creator)
    policy = await create_policy(creator, "std")
    path = f"/v1/admin/policies/{policy['id']}"

    response = await creator.admin_patch(path, RECURRING)
    assert response.status_code == 402
    assert "/buy/keysat" in response.json()["upgrade_url"]
    [row] = await policy_rows(creator)
    assert row.is_recurring is False

    pro = await make_server(KEYSAT_SANDBOX_MODE="true")
    response = await pro.admin_patch(path, RECURRING)
    assert response.status_code == 200
    assert response.json()["is_recurring"] is True

    # Back on Creator (same database): the policy stays recurring and can be edited.
    response = await creator.admin_patch(path, {"name": "Monthly"})
    assert response.status_code == 200
    assert response.json()["name"] == "Monthly"
    response = await creator.admin_patch(path, {"is_recurring": True, "renewal_period_days": 60})
    assert response.status_code == 200
    assert response.json()["renewal_period_days"] == 60


async def test_patch_validates_the_post_patch_recurring_combination(make_server: Any) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true")
    await create_product(server)
    policy = await create_policy(server, "m", **RECURRING, trial_days=10)
    path = f"/v1/admin/policies/{policy['id']}"

    response = await server.admin_patch(path, {"renewal_period_days": 5})
    assert response.status_code == 400
    assert "trial_days cannot exceed" in response.json()["message"]
    response = await server.admin_patch(path, {"trial_days": 31})
    assert response.status_code == 400
    response = await server.admin_patch(path, {"renewal_period_days": 0})
    assert response.status_code == 400

    # Switching recurring off lifts the combination rule.
    response = await server.admin_patch(path, {"is_recurring": False, "renewal_period_days": 0})
    assert response.status_code == 200
    assert response.json()["is_recurring"] is False

    # Switching it on again is checked against the stored period (now 0).
    response = await server.admin_patch(path, {"is_recurring": True})
    assert response.status_code == 400
    [row] = await policy_rows(server)
    assert (row.is_recurring, row.renewal_period_days, row.trial_days) == (False, 0, 10)


async def test_null_recurring_fields_do_not_recheck_stored_terms(make_server: Any) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true")
    await create_product(server)
    policy = await create_policy(server, "m", **RECURRING)
    # Terms no longer valid today (for example imported) stay editable.
    async with server.state.db.write() as session:
        row = await session.get(Policy, policy["id"])
        assert row is not None
        row.trial_days = 45
    path = f"/v1/admin/policies/{policy['id']}"
    response = await server.admin_patch(path, {"name": "Renamed", "trial_days": None})
    assert response.status_code == 200
    assert response.json()["trial_days"] == 45
    response = await server.admin_patch(path, {"grace_period_days": 3})
    assert response.status_code == 400
    assert "trial_days cannot exceed" in response.json()["message"]


# --- patch --------------------------------------------------------------------------------


async def test_patch_null_clears_override_and_rank(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(server, price_sats_override=500, tier_rank=3)
    path = f"/v1/admin/policies/{policy['id']}"

    response = await server.admin_patch(path, {"price_sats_override": None, "tier_rank": None})
    assert response.status_code == 200
    assert response.json()["price_sats_override"] is None
    assert response.json()["tier_rank"] is None
    [row] = await policy_rows(server)
    assert (row.price_sats_override, row.tier_rank) == (None, None)


async def test_patch_null_on_other_fields(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(
        server, max_machines=3, entitlements=["a"], metadata={"k": 1}, is_trial=True
    )
    path = f"/v1/admin/policies/{policy['id']}"
    response = await server.admin_patch(
        path,
        {
            "name": None,
            "max_machines": None,
            "is_trial": None,
            "is_recurring": None,
            "allow_repeat_trials": None,
            "entitlements": None,
            "metadata": None,
        },
    )
    assert response.status_code == 200
    patched = response.json()
    assert patched["name"] == "Std"
    assert patched["max_machines"] == 3
    assert patched["is_trial"] is True
    assert patched["is_recurring"] is False
    assert patched["entitlements"] == []
    assert patched["metadata"] == {}


async def test_patch_ignores_fields_with_their_own_endpoints(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(server)
    response = await server.admin_patch(
        f"/v1/admin/policies/{policy['id']}",
        {
            "slug": "renamed",
            "product_slug": "elsewhere",
            "active": False,
            "public": False,
            "archived": True,
            "tip_recipient": "a@b.c",
            "tip_pct_bps": 100,
            "duration_seconds": 60,
        },
    )
    assert response.status_code == 200
    patched = response.json()
    assert patched["duration_seconds"] == 60
    assert (patched["slug"], patched["active"], patched["public"]) == ("std", True, True)
    assert (patched["archived_at"], patched["tip_recipient"], patched["tip_pct_bps"]) == (
        None,
        None,
        0,
    )


async def test_allow_repeat_trials_round_trip(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(server, is_trial=True)
    assert policy["allow_repeat_trials"] is False
    response = await server.admin_patch(
        f"/v1/admin/policies/{policy['id']}", {"allow_repeat_trials": True}
    )
    assert response.json()["allow_repeat_trials"] is True
    listed = (await server.admin_get("/v1/admin/policies", product_slug="app")).json()
    assert listed["policies"][0]["allow_repeat_trials"] is True


async def test_patch_audit_records_sent_fields(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(server)
    await server.admin_patch(
        f"/v1/admin/policies/{policy['id']}",
        {"name": "Renamed", "entitlements": ["x"], "price_sats_override": None, "tier_rank": 2},
    )
    [audit] = await audit_rows(server, "policy.update")
    assert audit.target_id == policy["id"]
    assert audit.details == {
        "name": "Renamed",
        "duration_seconds": None,
        "max_machines": None,
        "price_sats_override": None,
        "entitlements": ["x"],
        "is_recurring": None,
        "renewal_period_days": None,
        "grace_period_days": None,
        "trial_days": None,
        "allow_repeat_trials": None,
    }


async def test_refused_patch_changes_nothing(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(server)
    response = await server.admin_patch(
        f"/v1/admin/policies/{policy['id']}", {"name": "New", "max_machines": -2}
    )
    assert response.status_code == 400
    [row] = await policy_rows(server)
    assert row.name == "Std"
    assert await audit_rows(server, "policy.update") == []


@pytest.mark.parametrize("policy_id", ["nope", "1234", UNKNOWN_ID])
async def test_unknown_policy_ids_are_404(server: Any, policy_id: str) -> None:
    response = await server.admin_patch(f"/v1/admin/policies/{policy_id}", {"name": "X"})
    assert response.status_code == 404
    assert response.json()["message"] == f"not found: policy '{policy_id}'"
    for suffix, body in (
        ("active", {"active": True}),
        ("public", {"public": True}),
        ("archived", {"archived": True}),
        ("tip", {"tip_pct_bps": 0}),
    ):
        response = await server.admin_patch(f"/v1/admin/policies/{policy_id}/{suffix}", body)
        assert response.status_code == 404
    assert (await server.admin_delete(f"/v1/admin/policies/{policy_id}")).status_code == 404


async def test_policy_routes_need_credentials(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(server)
    response = await server.client.patch(
        f"/v1/admin/policies/{policy['id']}",
        content=b"{oops",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 401
    response = await server.client.get(
        "/v1/admin/policies", params={"product_slug": "app"}, headers={"Authorization": "Bearer x"}
    )
    assert response.status_code == 403


# --- entitlements catalog -----------------------------------------------------------------


async def test_entitlements_are_checked_against_a_catalog(server: Any) -> None:
    await create_product(
        server,
        entitlements_catalog=[{"slug": "export", "name": "Export"}, {"slug": "sync", "name": ""}],
    )
    response = await post_policy(server, entitlements=["export", "teleport", "x"])
    assert response.status_code == 400
    assert "teleport, x" in response.json()["message"]

    policy = await create_policy(server, entitlements=["sync", "export"])
    assert policy["entitlements"] == ["sync", "export"]

    response = await server.admin_patch(
        f"/v1/admin/policies/{policy['id']}", {"entitlements": ["sync", "Export"]}
    )
    assert response.status_code == 400
    [row] = await policy_rows(server)
    assert row.entitlements == ["sync", "export"]


async def test_free_text_mode_accepts_any_entitlement(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(server, entitlements=["Anything Goes", "\u2603"])
    assert policy["entitlements"] == ["Anything Goes", "\u2603"]


async def test_shrinking_the_catalog_keeps_policies(server: Any) -> None:
    product = await create_product(server, entitlements_catalog=[{"slug": "a", "name": "A"}])
    await create_policy(server, entitlements=["a"])
    response = await server.admin_patch(
        f"/v1/admin/products/{product['id']}",
        {"entitlements_catalog": [{"slug": "b", "name": "B"}]},
    )
    assert response.status_code == 200
    [row] = await policy_rows(server)
    assert row.entitlements == ["a"]


# --- tips ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tip_recipient": "dev@example.com", "tip_pct_bps": 0}, "requires tip_pct_bps"),
        ({"tip_recipient": "dev@example.com"}, "requires tip_pct_bps"),
        ({"tip_pct_bps": 500}, "requires a tip_recipient"),
        ({"tip_recipient": "  ", "tip_pct_bps": 500}, "requires a tip_recipient"),
        ({"tip_recipient": "dev@example.com", "tip_pct_bps": 10_001}, "at most 10000"),
        ({"tip_recipient": "dev@example.com", "tip_pct_bps": -1}, "at least 0"),
        ({"tip_recipient": "not-an-address", "tip_pct_bps": 500}, "Lightning Address"),
        ({"tip_recipient": "@example.com", "tip_pct_bps": 500}, "Lightning Address"),
        ({"tip_recipient": "dev@", "tip_pct_bps": 500}, "Lightning Address"),
        ({"tip_recipient": "d+v@example.com", "tip_pct_bps": 500}, "Lightning Address"),
        ({"tip_recipient": "a@b@c", "tip_pct_bps": 500}, "Lightning Address"),
    ],
)
async def test_tip_rules_on_create(server: Any, fields: dict[str, Any], message: str) -> None:
    await create_product(server)
    response = await post_policy(server, **fields)
    assert response.status_code == 400
    assert re.search(message, response.json()["message"])


async def test_tip_endpoint_writes_the_three_fields(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(server)
    path = f"/v1/admin/policies/{policy['id']}/tip"

    response = await server.admin_patch(
        path, {"tip_recipient": "Dev.Team@tips.example", "tip_pct_bps": 10_000, "tip_label": "Dev"}
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body) == POLICY_KEYS
    assert (body["tip_recipient"], body["tip_pct_bps"], body["tip_label"]) == (
        "Dev.Team@tips.example",
        10_000,
        "Dev",
    )
    [audit] = await audit_rows(server, "policy.set_tip")
    assert audit.details == {
        "tip_recipient": "Dev.Team@tips.example",
        "tip_pct_bps": 10_000,
        "tip_label": "Dev",
    }

    # Absent fields are null: the three are written as a whole.
    response = await server.admin_patch(path, {"tip_pct_bps": 0})
    assert response.status_code == 200
    body = response.json()
    assert (body["tip_recipient"], body["tip_pct_bps"], body["tip_label"]) == (None, 0, None)

    response = await server.admin_patch(path, {"tip_recipient": "x@y.z"})
    assert response.status_code == 400
    assert response.json()["message"] == "bad request: missing field 'tip_pct_bps'"
    response = await server.admin_patch(path, {"tip_recipient": "x@y.z", "tip_pct_bps": 0})
    assert response.status_code == 400


# --- toggles and list ---------------------------------------------------------------------


async def test_list_filters_and_orders(server: Any) -> None:
    await create_product(server)
    await create_product(server, "other")
    zed = await create_policy(server, "zed", name="Zed")
    await create_policy(server, "alpha", name="Alpha")
    off = await create_policy(server, "off", name="Middle")
    gone = await create_policy(server, "gone", name="Gone")
    both = await create_policy(server, "both", name="Both")
    await server.admin_post(
        "/v1/admin/policies", {"product_slug": "other", "name": "Elsewhere", "slug": "e"}
    )

    response = await server.admin_patch(f"/v1/admin/policies/{off['id']}/active", {"active": False})
    assert response.json() == {"ok": True}
    response = await server.admin_patch(
        f"/v1/admin/policies/{gone['id']}/archived", {"archived": True}
    )
    assert response.json() == {"ok": True, "archived": True}
    await server.admin_patch(f"/v1/admin/policies/{both['id']}/active", {"active": False})
    await server.admin_patch(f"/v1/admin/policies/{both['id']}/archived", {"archived": True})

    async def slugs(**params: str) -> list[str]:
        response = await server.admin_get("/v1/admin/policies", product_slug="app", **params)
        assert response.status_code == 200
        return [policy["slug"] for policy in response.json()["policies"]]

    assert await slugs() == ["alpha", "zed"]
    assert await slugs(include_inactive="true") == ["alpha", "off", "zed"]
    assert await slugs(include_archived="TRUE") == ["alpha", "gone", "zed"]
    assert await slugs(include_inactive="1", include_archived="1") == [
        "alpha",
        "both",
        "gone",
        "off",
        "zed",
    ]
    assert zed["slug"] == "zed"

    response = await server.admin_get("/v1/admin/policies")
    assert response.status_code == 400
    assert response.json()["message"] == "bad request: missing query parameter 'product_slug'"
    response = await server.admin_get("/v1/admin/policies", product_slug="nope")
    assert response.status_code == 404
    assert response.json()["message"] == "not found: product 'nope'"
    response = await server.admin_get(
        "/v1/admin/policies", product_slug="app", include_inactive="sometimes"
    )
    assert response.status_code == 400


async def test_archive_and_unarchive(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(server)
    path = f"/v1/admin/policies/{policy['id']}/archived"

    response = await server.admin_patch(path, {"archived": True})
    assert response.json() == {"ok": True, "archived": True}
    [row] = await policy_rows(server)
    first_stamp = row.archived_at
    assert first_stamp is not None
    listed = (await server.admin_get("/v1/admin/policies", product_slug="app")).json()
    assert listed["policies"] == []
    tiers = (await server.client.get("/v1/products/app/policies")).json()["policies"]
    assert tiers == []

    await server.admin_patch(path, {"archived": True})
    [row] = await policy_rows(server)
    assert row.archived_at is not None
    assert row.archived_at >= first_stamp

    response = await server.admin_patch(path, {"archived": False})
    assert response.json() == {"ok": True, "archived": False}
    [row] = await policy_rows(server)
    assert row.archived_at is None

    actions = [a.action for a in await _all_audits(server) if a.target_id == policy["id"]]
    assert actions == ["policy.create", "policy.archive", "policy.archive", "policy.unarchive"]
    [unarchive] = await audit_rows(server, "policy.unarchive")
    assert unarchive.details == {"archived": False}


async def _all_audits(server: Any) -> list[AuditEntry]:
    async with server.state.db.read() as session:
        query = sa.select(AuditEntry).order_by(AuditEntry.id)
        return list((await session.execute(query)).scalars().all())


async def test_public_and_active_toggles_are_audited(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(server)
    response = await server.admin_patch(
        f"/v1/admin/policies/{policy['id']}/public", {"public": False}
    )
    assert response.json() == {"ok": True}
    [row] = await policy_rows(server)
    assert row.public is False
    [audit] = await audit_rows(server, "policy.set_public")
    assert audit.details == {"public": False}
    # A hidden tier is still listed for admins.
    listed = (await server.admin_get("/v1/admin/policies", product_slug="app")).json()
    assert [p["public"] for p in listed["policies"]] == [False]

    await server.admin_patch(f"/v1/admin/policies/{policy['id']}/active", {"active": False})
    [audit] = await audit_rows(server, "policy.set_active")
    assert (audit.target_kind, audit.details) == ("policy", {"active": False})

    response = await server.admin_patch(f"/v1/admin/policies/{policy['id']}/public", {})
    assert response.status_code == 400
    assert response.json()["message"] == "bad request: missing field 'public'"


# --- delete -------------------------------------------------------------------------------


async def test_delete_refuses_live_licenses_then_force_cascades(server: Any) -> None:
    product = await create_product(server)
    policy = await create_policy(server)
    live = await add_license(server, product["id"], policy["id"])
    path = f"/v1/admin/policies/{policy['id']}"

    response = await server.admin_delete(path)
    assert response.status_code == 409
    message = response.json()["message"]
    assert message.startswith("conflict: ")
    assert "1 unrevoked license" in message
    assert "0 settled invoice" in message
    assert "force=true" in message
    assert len(await policy_rows(server)) == 1

    response = await server.admin_delete(path, force="true")
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "deleted": "std",
        "force": True,
        "cascaded_licenses": 1,
        "cascaded_invoices": 0,
        "cascaded_machines": 0,
        "cascaded_redemptions": 0,
        "cascaded_subscriptions": 0,
        "disabled_codes": 0,
    }
    assert live not in await license_ids(server)
    [audit] = await audit_rows(server, "policy.force_delete")
    assert audit.details == {
        "slug": "std",
        "product_id": product["id"],
        "force": True,
        "cascaded_licenses": 1,
        "cascaded_invoices": 0,
        "cascaded_machines": 0,
        "cascaded_redemptions": 0,
        "cascaded_subscriptions": 0,
        "disabled_codes": 0,
    }


async def test_safe_delete_sweeps_revoked_licenses_and_unsettled_invoices(server: Any) -> None:
    product = await create_product(server)
    policy = await create_policy(server)
    other = await create_policy(server, "other")
    revoked = await add_license(server, product["id"], policy["id"], status="revoked")
    await add_invoice(server, product["id"], policy["id"], "expired")
    # A license now on another tier, first bought through an invoice of the deleted tier.
    original_invoice = await add_invoice(server, product["id"], policy["id"], "pending")
    moved = await add_license(server, product["id"], other["id"])
    async with server.state.db.write() as session:
        row = await session.get(License, moved)
        assert row is not None
        row.invoice_id = original_invoice

    response = await server.admin_delete(f"/v1/admin/policies/{policy['id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["force"] is False
    assert (body["cascaded_licenses"], body["cascaded_invoices"]) == (1, 2)
    assert await license_ids(server) == {moved}
    async with server.state.db.read() as session:
        kept = await session.get(License, moved)
        assert kept is not None
        assert kept.invoice_id is None
        assert kept.policy_id == other["id"]
        invoices = (await session.execute(sa.select(Invoice))).scalars().all()
    assert invoices == []
    assert revoked not in await license_ids(server)
    assert [p.slug for p in await policy_rows(server)] == ["other"]
    [audit] = await audit_rows(server, "policy.delete")
    assert audit.details["cascaded_invoices"] == 2


async def test_safe_delete_refuses_settled_invoices(server: Any) -> None:
    product = await create_product(server)
    policy = await create_policy(server)
    await add_invoice(server, product["id"], policy["id"], "settled")
    response = await server.admin_delete(f"/v1/admin/policies/{policy['id']}", force="0")
    assert response.status_code == 409
    assert "1 settled invoice" in response.json()["message"]
    response = await server.admin_delete(f"/v1/admin/policies/{policy['id']}", force="1")
    assert response.status_code == 200
    assert response.json()["cascaded_invoices"] == 1


async def test_delete_of_an_unused_policy(server: Any) -> None:
    await create_product(server)
    policy = await create_policy(server)
    response = await server.client.delete(f"/v1/admin/policies/{policy['id']}", headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["deleted"] == "std"
    assert response.json()["cascaded_licenses"] == 0
    assert await policy_rows(server) == []
