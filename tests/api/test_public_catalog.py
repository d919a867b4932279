"""Public catalog (public-api.md 4, 17): the product list, one product, the tier list."""

from __future__ import annotations

from typing import Any

import pytest

from keysat.catalog.models import Product
from keysat.clock import now
from keysat.wire import new_id

PRODUCT_KEYS = {
    "id",
    "slug",
    "name",
    "description",
    "price_sats",
    "price_currency",
    "price_value",
    "active",
    "metadata",
    "entitlements_catalog",
    "merchant_profile_id",
    "created_at",
    "updated_at",
}
TIER_PRODUCT_KEYS = {
    "slug",
    "name",
    "description",
    "base_price_sats",
    "price_currency",
    "entitlements_catalog",
}
TIER_KEYS = {
    "slug",
    "name",
    "description",
    "price_sats",
    "price_currency",
    "duration_seconds",
    "max_machines",
    "is_trial",
    "entitlements",
    "marketing_bullets",
    "marketing_bullets_position",
    "hidden_entitlements",
    "highlighted",
    "is_recurring",
    "renewal_period_days",
    "trial_days",
    "featured_discount",
}


async def create_product(server: Any, slug: str = "app", **fields: Any) -> dict[str, Any]:
    price = {} if "price_currency" in fields else {"price_sats": 1000}
    body = {"slug": slug, "name": slug.title(), **price, **fields}
    response = await server.admin_post("/v1/admin/products", body)
    assert response.status_code == 200, response.text
    product: dict[str, Any] = response.json()
    return product


async def create_policy(
    server: Any, slug: str, product_slug: str = "app", **fields: Any
) -> dict[str, Any]:
    body = {"product_slug": product_slug, "name": slug.title(), "slug": slug, **fields}
    response = await server.admin_post("/v1/admin/policies", body)
    assert response.status_code == 200, response.text
    policy: dict[str, Any] = response.json()
    return policy


async def tiers(server: Any, slug: str = "app") -> dict[str, Any]:
    response = await server.client.get(f"/v1/products/{slug}/policies")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- product list and product -------------------------------------------------------------


async def test_product_list_shows_active_products_by_name(server: Any) -> None:
    await create_product(server, "zulu", name="Zulu")
    hidden = await create_product(server, "hidden", name="Hidden")
    await create_product(server, "alpha", name="Alpha", description="First")
    await server.admin_patch(f"/v1/admin/products/{hidden['id']}/active", {"active": False})

    response = await server.client.get("/v1/products")
    assert response.status_code == 200
    products = response.json()["products"]
    assert [p["slug"] for p in products] == ["alpha", "zulu"]
    assert all(set(p) == PRODUCT_KEYS for p in products)
    assert products[0]["description"] == "First"
    assert products[1]["description"] == ""
    assert "Cache-Control" not in response.headers


async def test_empty_catalog(server: Any) -> None:
    response = await server.client.get("/v1/products")
    assert response.json() == {"products": []}


async def test_one_product_is_the_bare_admin_shape(server: Any) -> None:
    product = await create_product(
        server,
        metadata={"tagline": "Fast"},
        entitlements_catalog=[{"slug": "pro", "name": "Pro"}],
        merchant_profile_id="00000000-0000-4000-8000-000000000001",
    )
    response = await server.client.get("/v1/products/app")
    assert response.status_code == 200
    assert response.json() == product


async def test_fiat_product_fields(server: Any) -> None:
    await create_product(server, "fiat", price_currency="EUR", price_value=1299)
    body = (await server.client.get("/v1/products/fiat")).json()
    assert (body["price_currency"], body["price_value"], body["price_sats"]) == ("EUR", 1299, 0)


@pytest.mark.parametrize("path", ["/v1/products/{slug}", "/v1/products/{slug}/policies"])
async def test_inactive_and_unknown_products_are_404(server: Any, path: str) -> None:
    product = await create_product(server)
    await server.admin_patch(f"/v1/admin/products/{product['id']}/active", {"active": False})
    for slug in ("app", "missing"):
        response = await server.client.get(path.format(slug=slug))
        assert response.status_code == 404
        assert response.json() == {
            "ok": False,
            "error": "not_found",
            "message": f"not found: product '{slug}'",
        }


async def test_public_routes_ignore_credentials(server: Any) -> None:
    await create_product(server)
    for headers in (
        {"Authorization": "Bearer wrong-key-wrong-key-wrong-key-wrong"},
        {"Authorization": "Basic garbage"},
        {"Cookie": "keysat_session=forged"},
    ):
        for path in ("/v1/products", "/v1/products/app", "/v1/products/app/policies"):
            response = await server.client.get(path, headers=headers)
            assert response.status_code == 200, (path, headers)


# --- tier list ----------------------------------------------------------------------------


async def test_tier_list_shape_and_defaults(server: Any) -> None:
    await create_product(server)
    await create_policy(server, "std")
    body = await tiers(server)
    assert body["product"] == {
        "slug": "app",
        "name": "App",
        "description": "",
        "base_price_sats": 1000,
        "price_currency": "SAT",
        "entitlements_catalog": [],
    }
    [tier] = body["policies"]
    assert set(tier) == TIER_KEYS
    assert tier == {
        "slug": "std",
        "name": "Std",
        "description": "",
        "price_sats": 1000,
        "price_currency": "SAT",
        "duration_seconds": 0,
        "max_machines": 1,
        "is_trial": False,
        "entitlements": [],
        "marketing_bullets": [],
        "marketing_bullets_position": "above",
        "hidden_entitlements": [],
        "highlighted": False,
        "is_recurring": False,
        "renewal_period_days": 0,
        "trial_days": 0,
        "featured_discount": None,
    }


async def test_product_without_policies_lists_none(server: Any) -> None:
    await create_product(server, description="Desc")
    body = await tiers(server)
    assert body["policies"] == []
    assert body["product"]["description"] == "Desc"
    assert set(body["product"]) == TIER_PRODUCT_KEYS


async def test_catalog_in_tier_list(server: Any) -> None:
    catalog = [
        {"slug": "sync", "name": "Sync", "description": "Across devices"},
        {"slug": "export", "name": "Export"},
    ]
    await create_product(server, entitlements_catalog=catalog)
    assert (await tiers(server))["product"]["entitlements_catalog"] == [
        {"slug": "sync", "name": "Sync", "description": "Across devices"},
        {"slug": "export", "name": "Export", "description": ""},
    ]


async def test_tiers_are_ordered_by_effective_price_then_name_then_slug(make_server: Any) -> None:
    # Six tiers exceed the Creator policy cap; sandbox mode lifts it.
    server = await make_server(KEYSAT_SANDBOX_MODE="true")
    await create_product(server, price_sats=1000)
    await create_policy(server, "expensive", price_sats_override=5000)
    await create_policy(server, "base-b", name="Same")
    await create_policy(server, "base-a", name="Same")
    await create_policy(server, "cheap", price_sats_override=10)
    await create_policy(server, "free", price_sats_override=0)
    await create_policy(server, "also-base", name="Another", price_sats_override=1000)
    policies = (await tiers(server))["policies"]
    assert [(p["slug"], p["price_sats"]) for p in policies] == [
        ("free", 0),
        ("cheap", 10),
        ("also-base", 1000),
        ("base-a", 1000),
        ("base-b", 1000),
        ("expensive", 5000),
    ]


async def test_fiat_tiers_are_priced_in_cents(server: Any) -> None:
    await create_product(server, price_currency="USD", price_value=2000)
    await create_policy(server, "base")
    await create_policy(server, "team", price_sats_override=4900)
    await create_policy(server, "lite", price_sats_override=900)
    body = await tiers(server)
    assert body["product"]["base_price_sats"] == 2000
    assert body["product"]["price_currency"] == "USD"
    assert [(p["slug"], p["price_sats"], p["price_currency"]) for p in body["policies"]] == [
        ("lite", 900, "USD"),
        ("base", 2000, "USD"),
        ("team", 4900, "USD"),
    ]


async def test_only_purchasable_tiers_are_listed(server: Any) -> None:
    await create_product(server)
    await create_policy(server, "visible")
    hidden = await create_policy(server, "hidden")
    inactive = await create_policy(server, "inactive")
    archived = await create_policy(server, "archived")
    await server.admin_patch(f"/v1/admin/policies/{hidden['id']}/public", {"public": False})
    await server.admin_patch(f"/v1/admin/policies/{inactive['id']}/active", {"active": False})
    await server.admin_patch(f"/v1/admin/policies/{archived['id']}/archived", {"archived": True})
    assert [p["slug"] for p in (await tiers(server))["policies"]] == ["visible"]

    await server.admin_patch(f"/v1/admin/policies/{hidden['id']}/public", {"public": True})
    await server.admin_patch(f"/v1/admin/policies/{archived['id']}/archived", {"archived": False})
    assert [p["slug"] for p in (await tiers(server))["policies"]] == [
        "archived",
        "hidden",
        "visible",
    ]


async def test_metadata_drives_the_card_fields(server: Any) -> None:
    await create_product(server)
    await create_policy(
        server,
        "pro",
        entitlements=["sync", "beta"],
        metadata={
            "description": "For teams",
            "highlight": True,
            "marketing_bullets": ["Priority support", 7, None, "SLA"],
            "marketing_bullets_position": "below",
            "hidden_entitlements": ["beta", 3],
        },
        is_trial=True,
        duration_seconds=3600,
        max_machines=0,
    )
    [tier] = (await tiers(server))["policies"]
    assert tier["description"] == "For teams"
    assert tier["highlighted"] is True
    assert tier["marketing_bullets"] == ["Priority support", "SLA"]
    assert tier["marketing_bullets_position"] == "below"
    assert tier["hidden_entitlements"] == ["beta"]
    assert tier["entitlements"] == ["sync", "beta"]
    assert (tier["is_trial"], tier["duration_seconds"], tier["max_machines"]) == (True, 3600, 0)


@pytest.mark.parametrize(
    "metadata",
    [
        {"description": 5, "highlight": "true", "marketing_bullets": "x"},
        {"description": None, "highlight": 1, "marketing_bullets_position": "sideways"},
        {"hidden_entitlements": {"a": 1}, "marketing_bullets_position": "BELOW"},
    ],
)
async def test_odd_metadata_falls_back_to_defaults(server: Any, metadata: dict[str, Any]) -> None:
    await create_product(server)
    await create_policy(server, "std", metadata=metadata)
    [tier] = (await tiers(server))["policies"]
    assert tier["description"] == ""
    assert tier["highlighted"] is False
    assert tier["marketing_bullets"] == []
    assert tier["marketing_bullets_position"] == "above"
    assert tier["hidden_entitlements"] == []


async def test_no_private_policy_data_is_exposed(server: Any) -> None:
    await create_product(server)
    await create_policy(
        server, "std", tier_rank=4, tip_recipient="dev@tips.example", tip_pct_bps=100
    )
    body = await tiers(server)
    text = str(body)
    for private in ("tier_rank", "tip_", "dev@tips.example", "'id'", "product_id"):
        assert private not in text


async def test_recurring_fields_in_sandbox(make_server: Any) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true")
    await create_product(server)
    await create_policy(server, "monthly", is_recurring=True, renewal_period_days=30, trial_days=7)
    # Not recurring: the period is reported as 0 whatever is stored.
    await create_policy(server, "once", renewal_period_days=12, price_sats_override=5)
    policies = (await tiers(server))["policies"]
    assert [(p["slug"], p["is_recurring"], p["renewal_period_days"]) for p in policies] == [
        ("once", False, 0),
        ("monthly", True, 30),
    ]
    assert policies[1]["trial_days"] == 7


async def test_imported_btc_priced_product_reads_as_sat(server: Any) -> None:
    at = now()
    async with server.state.db.write() as session:
        session.add(
            Product(
                id=new_id(),
                slug="legacy",
                name="Legacy",
                description="",
                price_currency="BTC",
                price_value=300,
                price_sats=300,
                active=True,
                product_metadata={},
                entitlements_catalog=None,
                created_at=at,
                updated_at=at,
            )
        )
    product = (await server.client.get("/v1/products/legacy")).json()
    assert (product["price_currency"], product["price_sats"]) == ("SAT", 300)
    body = await tiers(server, "legacy")
    assert (body["product"]["price_currency"], body["product"]["base_price_sats"]) == ("SAT", 300)
