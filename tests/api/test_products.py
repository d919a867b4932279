"""Admin products (admin-api.md 2, 3, 24 "Products" and "Conventions")."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from keysat.billing.models import Invoice
from keysat.catalog.models import Policy, Product
from keysat.clock import now
from keysat.licensing.models import License, Machine, ValidationLog
from keysat.operator.models import MerchantProfile
from keysat.webhooks.models import WebhookEvent
from keysat.wire import new_id
from support import ADMIN, UNKNOWN_ID, add_invoice, add_license, audit_rows

DEFAULT_PROFILE = "00000000-0000-4000-8000-000000000001"
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
DELETE_COUNTS = (
    "cascaded_policies",
    "cascaded_codes",
    "cascaded_licenses",
    "cascaded_invoices",
    "cascaded_machines",
    "cascaded_redemptions",
    "cascaded_subscriptions",
)


async def create_product(server: Any, **fields: Any) -> dict[str, Any]:
    body = {"slug": "app", "name": "App", "price_sats": 1000, **fields}
    response = await server.admin_post("/v1/admin/products", body)
    assert response.status_code == 200, response.text
    product: dict[str, Any] = response.json()
    return product


async def create_policy(server: Any, product_slug: str, slug: str = "std") -> dict[str, Any]:
    body = {"product_slug": product_slug, "name": slug.title(), "slug": slug}
    response = await server.admin_post("/v1/admin/policies", body)
    assert response.status_code == 200, response.text
    policy: dict[str, Any] = response.json()
    return policy


async def rows(server: Any, model: Any) -> list[Any]:
    async with server.state.db.read() as session:
        return list((await session.execute(sa.select(model))).scalars().all())


async def add_machine(server: Any, license_id: str) -> str:
    at = now()
    machine_id = new_id()
    async with server.state.db.write() as session:
        session.add(
            Machine(
                id=machine_id,
                license_id=license_id,
                fingerprint="fp-1",
                fingerprint_hash=hashlib.sha256(b"fp-1").hexdigest(),
                activated_at=at,
                last_heartbeat_at=at,
            )
        )
    return machine_id


async def add_validation(server: Any, license_id: str, product_id: str) -> None:
    async with server.state.db.write() as session:
        session.add(
            ValidationLog(
                license_id=license_id, product_id=product_id, result="ok", occurred_at=now()
            )
        )


# --- conventions --------------------------------------------------------------------------


async def test_malformed_json_is_a_400_envelope(server: Any) -> None:
    response = await server.client.post(
        "/v1/admin/products",
        content=b"{not json",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json() == {
        "ok": False,
        "error": "bad_request",
        "message": "bad request: invalid JSON body",
    }


async def test_credentials_are_checked_before_the_body(server: Any) -> None:
    malformed = {"content": b"{not json", "headers": {"Content-Type": "application/json"}}
    response = await server.client.post("/v1/admin/products", **malformed)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"

    wrong = {"Authorization": "Bearer not-the-admin-key-at-all-0123456789", **malformed["headers"]}
    response = await server.client.post(
        "/v1/admin/products", content=malformed["content"], headers=wrong
    )
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert await rows(server, Product) == []


async def test_read_and_delete_routes_need_credentials(server: Any) -> None:
    product = await create_product(server)
    assert (await server.client.get("/v1/admin/products")).status_code == 401
    response = await server.client.delete(f"/v1/admin/products/{product['id']}")
    assert response.status_code == 401
    assert len(await rows(server, Product)) == 1


async def test_wrong_content_type_and_non_object_bodies_are_400(server: Any) -> None:
    response = await server.client.post(
        "/v1/admin/products", content=b"slug=a", headers={**ADMIN, "Content-Type": "text/plain"}
    )
    assert response.status_code == 400
    assert response.json()["message"] == (
        "bad request: expected a JSON body (Content-Type: application/json)"
    )
    response = await server.admin_post("/v1/admin/products", [1, 2])
    assert response.status_code == 400
    assert response.json()["message"] == "bad request: invalid JSON body"


async def test_non_uuid_and_unknown_ids_are_404(server: Any) -> None:
    for product_id in ("not-a-uuid", "'; drop table products; --", new_id()):
        response = await server.admin_patch(f"/v1/admin/products/{product_id}", {"name": "X"})
        assert response.status_code == 404
        assert response.json() == {
            "ok": False,
            "error": "not_found",
            "message": f"not found: product '{product_id}'",
        }
        assert (await server.admin_delete(f"/v1/admin/products/{product_id}")).status_code == 404
        response = await server.admin_patch(
            f"/v1/admin/products/{product_id}/active", {"active": False}
        )
        assert response.status_code == 404


async def test_openapi_lists_the_catalog_routes(server: Any) -> None:
    document = (await server.client.get("/v1/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    for path in ("/v1/admin/products", "/v1/admin/policies", "/v1/products/{slug}/policies"):
        assert path in document["paths"]


async def test_routes_that_parse_late_still_name_their_body_model(server: Any) -> None:
    """The product cap and the product lookup answer before body validation, so these
    handlers parse the body themselves; the OpenAPI document must still name the model."""
    paths = (await server.client.get("/v1/openapi.json")).json()["paths"]

    def body_of(path: str, method: str) -> str | None:
        body = paths[path][method].get("requestBody")
        return None if body is None else str(body["content"]["application/json"]["schema"]["$ref"])

    assert body_of("/v1/admin/products", "post") == "#/components/schemas/ProductCreate"
    assert body_of("/v1/admin/policies", "post") == "#/components/schemas/PolicyCreate"
    assert (
        body_of("/v1/admin/products/{product_id}", "patch") == "#/components/schemas/ProductPatch"
    )
    assert body_of("/v1/admin/products", "get") is None


# --- create -------------------------------------------------------------------------------


async def test_create_echoes_the_product_and_writes_audit_and_event(server: Any) -> None:
    response = await server.admin_post(
        "/v1/admin/products",
        {"slug": "  my-app_1.0  ", "name": "  My App  ", "price_sats": 2500},
    )
    assert response.status_code == 200
    product = response.json()
    assert set(product) == PRODUCT_KEYS
    assert product["slug"] == "my-app_1.0"
    assert product["name"] == "My App"
    assert product["price_sats"] == 2500
    assert product["price_currency"] == "SAT"
    assert product["price_value"] == 2500
    assert product["description"] == ""
    assert product["metadata"] == {}
    assert product["entitlements_catalog"] is None
    assert product["merchant_profile_id"] is None
    assert product["active"] is True
    assert product["created_at"] == product["updated_at"]
    assert datetime.fromisoformat(product["created_at"]).utcoffset() is not None
    assert product["created_at"].endswith("+00:00")

    stored = await rows(server, Product)
    assert [row.id for row in stored] == [product["id"]]
    audits = await audit_rows(server, "product.create")
    assert len(audits) == 1
    assert audits[0].target_kind == "product"
    assert audits[0].target_id == product["id"]
    assert audits[0].details == {"slug": "my-app_1.0", "name": "My App", "price_sats": 2500}
    assert audits[0].actor_kind == "admin_api_key"

    events = await rows(server, WebhookEvent)
    assert [event.event_type for event in events] == ["product.created"]
    envelope = json.loads(events[0].payload_json)
    assert envelope["event_type"] == "product.created"
    assert envelope["data"] == {"product": product}


@pytest.mark.parametrize(
    ("body", "currency", "value", "sats"),
    [
        ({"price_sats": 1500}, "SAT", 1500, 1500),
        ({"price_currency": "SAT", "price_value": 700}, "SAT", 700, 700),
        ({"price_currency": "usd", "price_value": 1999}, "USD", 1999, 0),
        ({"price_currency": "EUR", "price_value": 500}, "EUR", 500, 0),
        ({"price_sats": 42, "price_currency": "SAT", "price_value": 42}, "SAT", 42, 42),
    ],
)
async def test_price_resolution(
    server: Any, body: dict[str, Any], currency: str, value: int, sats: int
) -> None:
    response = await server.admin_post("/v1/admin/products", {"slug": "p", "name": "P", **body})
    assert response.status_code == 200, response.text
    product = response.json()
    assert (product["price_currency"], product["price_value"], product["price_sats"]) == (
        currency,
        value,
        sats,
    )
    [row] = await rows(server, Product)
    assert (row.price_currency, row.price_value, row.price_sats) == (currency, value, sats)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"price_currency": "GBP", "price_value": 100}, "unsupported currency 'GBP'"),
        ({"price_sats": 100, "price_currency": "SAT", "price_value": 99}, "disagree"),
        ({"price_sats": 100, "price_currency": "USD", "price_value": 100}, "disagree"),
        ({"price_currency": "USD"}, "price_currency requires price_value"),
        ({"price_value": 100}, "price_value requires price_currency"),
        ({}, "a price is required"),
        ({"price_sats": 0}, "price must be positive"),
        ({"price_currency": "USD", "price_value": -5}, "price must be positive"),
        ({"price_sats": "100"}, "field 'price_sats' must be an? integer"),
        ({"price_sats": 100.0}, "field 'price_sats' must be an? integer"),
        ({"price_sats": True}, "field 'price_sats' must be an? integer"),
        ({"price_sats": 2**64}, "price_sats"),
    ],
)
async def test_bad_prices_are_refused(server: Any, body: dict[str, Any], message: str) -> None:
    response = await server.admin_post("/v1/admin/products", {"slug": "p", "name": "P", **body})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert response.json()["message"].startswith("bad request: ")
    assert re.search(message, response.json()["message"])
    assert await rows(server, Product) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "P"}, "missing field 'slug'"),
        ({"slug": "p"}, "missing field 'name'"),
        ({"slug": "p", "name": "   "}, "name must not be empty"),
        ({"slug": "  ", "name": "P"}, "slug must not be empty"),
        ({"slug": "has space", "name": "P"}, "slug may only contain"),
        ({"slug": "caf\u00e9", "name": "P"}, "slug may only contain"),
        ({"slug": "a/b", "name": "P"}, "slug may only contain"),
        ({"slug": "s" * 129, "name": "P"}, "slug is too long"),
        ({"slug": "p", "name": "n" * 201}, "name is too long"),
        ({"slug": "p", "name": "P", "description": "d" * 10_001}, "description is too long"),
        ({"slug": "p", "name": "P", "metadata": [1]}, "field 'metadata' must be an? object"),
        ({"slug": "p", "name": "P", "metadata": "x"}, "field 'metadata' must be an? object"),
        ({"slug": 5, "name": "P"}, "field 'slug' must be an? string"),
    ],
)
async def test_bad_product_fields_are_refused(
    server: Any, body: dict[str, Any], message: str
) -> None:
    response = await server.admin_post("/v1/admin/products", {"price_sats": 10, **body})
    assert response.status_code == 400
    assert re.search(message, response.json()["message"])
    assert await rows(server, Product) == []


async def test_slug_limits_accept_128_characters_and_null_metadata(server: Any) -> None:
    product = await create_product(
        server, slug="S" * 128, metadata=None, description=None, name="n" * 200
    )
    assert product["slug"] == "S" * 128
    assert product["metadata"] == {}
    assert product["description"] == ""


async def test_duplicate_slug_is_a_conflict(server: Any) -> None:
    await create_product(server, slug="dup")
    response = await server.admin_post(
        "/v1/admin/products", {"slug": "dup", "name": "Again", "price_sats": 5}
    )
    assert response.status_code == 409
    assert response.json()["message"] == "conflict: product slug 'dup' already exists"
    assert len(await rows(server, Product)) == 1


async def test_creator_tier_product_cap(server: Any) -> None:
    for index in range(5):
        await create_product(server, slug=f"p{index}", name=f"P{index}")
    # An inactive product still counts.
    first = (await server.admin_get("/v1/admin/products")).json()["products"][0]
    await server.admin_patch(f"/v1/admin/products/{first['id']}/active", {"active": False})

    response = await server.admin_post(
        "/v1/admin/products", {"slug": "p5", "name": "P5", "price_sats": 1}
    )
    assert response.status_code == 402
    body = response.json()
    assert body["ok"] is False
    assert body["error"] == "tier_cap"
    assert "/buy/keysat" in body["upgrade_url"]
    assert not body["message"].startswith("bad request")
    assert len(await rows(server, Product)) == 5
    assert await audit_rows(server, "product.create") != []
    assert len(await audit_rows(server, "product.create")) == 5

    # The cap answers before any body validation.
    response = await server.client.post(
        "/v1/admin/products",
        content=b"{garbage",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status_code == 402

    # Re-activating never hits the cap.
    response = await server.admin_patch(
        f"/v1/admin/products/{first['id']}/active", {"active": True}
    )
    assert response.status_code == 200


async def test_sandbox_mode_lifts_the_product_cap(make_server: Any) -> None:
    server = await make_server(KEYSAT_SANDBOX_MODE="true")
    for index in range(7):
        await create_product(server, slug=f"p{index}", name=f"P{index}")
    assert len(await rows(server, Product)) == 7


async def test_merchant_profile_is_set_cleared_and_checked(server: Any) -> None:
    product = await create_product(server, merchant_profile_id=DEFAULT_PROFILE)
    assert product["merchant_profile_id"] == DEFAULT_PROFILE

    response = await server.admin_patch(
        f"/v1/admin/products/{product['id']}", {"merchant_profile_id": None}
    )
    assert response.status_code == 200
    assert response.json()["merchant_profile_id"] is None

    other = new_id()
    async with server.state.db.write() as session:
        session.add(
            MerchantProfile(
                id=other, name="Second", is_default=False, created_at=now(), updated_at=now()
            )
        )
    # The 32-hex form names the same id.
    response = await server.admin_patch(
        f"/v1/admin/products/{product['id']}", {"merchant_profile_id": other.replace("-", "")}
    )
    assert response.status_code == 200
    assert response.json()["merchant_profile_id"] == other

    unknown = new_id()
    response = await server.admin_patch(
        f"/v1/admin/products/{product['id']}", {"merchant_profile_id": unknown}
    )
    assert response.status_code == 404
    assert response.json()["message"] == f"not found: merchant profile '{unknown}'"
    [row] = await rows(server, Product)
    assert row.merchant_profile_id == other


@pytest.mark.parametrize("profile_id", [UNKNOWN_ID, "not-a-uuid"])
async def test_create_with_unknown_merchant_profile_leaves_nothing_behind(
    server: Any, profile_id: str
) -> None:
    response = await server.admin_post(
        "/v1/admin/products",
        {"slug": "p", "name": "P", "price_sats": 10, "merchant_profile_id": profile_id},
    )
    assert response.status_code == 404
    assert response.json()["message"] == f"not found: merchant profile '{profile_id}'"
    assert await rows(server, Product) == []
    assert await audit_rows(server, "product.create") == []
    assert await rows(server, WebhookEvent) == []


# --- entitlements catalog -----------------------------------------------------------------


async def test_catalog_round_trips_in_order_and_is_public(server: Any) -> None:
    product = await create_product(server)
    catalog = [
        {"slug": "zeta_export", "name": "Export", "description": "CSV and PDF"},
        {"slug": "alpha2", "name": ""},
    ]
    response = await server.admin_patch(
        f"/v1/admin/products/{product['id']}", {"entitlements_catalog": catalog}
    )
    assert response.status_code == 200
    expected = [
        {"slug": "zeta_export", "name": "Export", "description": "CSV and PDF"},
        {"slug": "alpha2", "name": "", "description": ""},
    ]
    assert response.json()["entitlements_catalog"] == expected

    public = (await server.client.get("/v1/products")).json()["products"]
    assert public[0]["entitlements_catalog"] == expected

    response = await server.admin_patch(
        f"/v1/admin/products/{product['id']}", {"entitlements_catalog": None}
    )
    assert response.json()["entitlements_catalog"] is None
    [row] = await rows(server, Product)
    assert row.entitlements_catalog is None


async def test_empty_catalog_is_stored_as_null(server: Any) -> None:
    product = await create_product(server, entitlements_catalog=[{"slug": "a", "name": "A"}])
    assert product["entitlements_catalog"] == [{"slug": "a", "name": "A", "description": ""}]
    response = await server.admin_patch(
        f"/v1/admin/products/{product['id']}", {"entitlements_catalog": []}
    )
    assert response.json()["entitlements_catalog"] is None
    other = await create_product(server, slug="other", entitlements_catalog=[])
    assert other["entitlements_catalog"] is None


@pytest.mark.parametrize(
    ("catalog", "message"),
    [
        ([{"slug": "Pro", "name": "Pro"}], "may only contain lowercase letters"),
        ([{"slug": "with-dash", "name": "x"}], "may only contain lowercase letters"),
        ([{"slug": "  ", "name": "x"}], "slug must not be blank"),
        ([{"slug": "", "name": "x"}], "slug must not be blank"),
        ([{"slug": "a", "name": "x"}, {"slug": "a", "name": "y"}], "duplicate slug 'a'"),
        ([{"slug": "a"}], "missing field 'name'"),
        ([{"name": "a"}], "missing field 'slug'"),
        ([{"slug": "a", "name": 3}], "field 'name' must be an? string"),
        ([{"slug": "a" * 256, "name": "x"}], "too long"),
        ("pro", "field 'entitlements_catalog' must be an? array"),
    ],
)
async def test_bad_catalogs_are_refused(server: Any, catalog: Any, message: str) -> None:
    product = await create_product(server)
    response = await server.admin_patch(
        f"/v1/admin/products/{product['id']}", {"entitlements_catalog": catalog}
    )
    assert response.status_code == 400
    assert re.search(message, response.json()["message"])
    [row] = await rows(server, Product)
    assert row.entitlements_catalog is None


# --- patch --------------------------------------------------------------------------------


async def test_patch_fields_and_null_semantics(server: Any) -> None:
    product = await create_product(
        server, description="Long text", metadata={"a": 1, "b": {"c": [1, 2]}}
    )
    path = f"/v1/admin/products/{product['id']}"

    response = await server.admin_patch(path, {"name": None, "slug": "app", "unknown": 1})
    assert response.status_code == 200
    assert response.json()["name"] == "App"
    assert response.json()["slug"] == "app"

    response = await server.admin_patch(path, {"name": "  Renamed ", "metadata": {"x": True}})
    patched = response.json()
    assert patched["name"] == "Renamed"
    assert patched["metadata"] == {"x": True}
    assert patched["description"] == "Long text"
    assert patched["updated_at"] > product["updated_at"]
    assert patched["created_at"] == product["created_at"]

    response = await server.admin_patch(path, {"description": None, "metadata": None})
    assert response.json()["description"] == ""
    assert response.json()["metadata"] == {}

    # An empty body changes nothing but is accepted.
    response = await server.client.patch(path, headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["name"] == "Renamed"


async def test_slug_cannot_change(server: Any) -> None:
    product = await create_product(server)
    response = await server.admin_patch(f"/v1/admin/products/{product['id']}", {"slug": "new"})
    assert response.status_code == 400
    assert response.json()["message"] == "bad request: slug cannot be changed"
    [row] = await rows(server, Product)
    assert row.slug == "app"


async def test_patch_price_rewrites_all_three_columns(server: Any) -> None:
    product = await create_product(server, price_sats=1000)
    path = f"/v1/admin/products/{product['id']}"

    response = await server.admin_patch(path, {"price_currency": "usd", "price_value": 1299})
    assert response.status_code == 200
    body = response.json()
    assert (body["price_currency"], body["price_value"], body["price_sats"]) == ("USD", 1299, 0)

    response = await server.admin_patch(path, {"price_sats": 0})
    body = response.json()
    assert (body["price_currency"], body["price_value"], body["price_sats"]) == ("SAT", 0, 0)

    response = await server.admin_patch(path, {"price_sats": None, "price_value": None})
    assert response.status_code == 200
    assert response.json()["price_sats"] == 0

    for bad, message in (
        ({"price_sats": -1}, "price must not be negative"),
        ({"price_currency": "EUR"}, "price_currency requires price_value"),
        ({"price_value": 5}, "price_value requires price_currency"),
        ({"price_currency": "BTC", "price_value": 5}, "unsupported currency"),
    ):
        response = await server.admin_patch(path, bad)
        assert response.status_code == 400
        assert re.search(message, response.json()["message"])


async def test_patch_audit_records_the_sent_fields(server: Any) -> None:
    product = await create_product(server)
    await server.admin_patch(
        f"/v1/admin/products/{product['id']}", {"name": "New", "price_sats": 77}
    )
    [audit] = await audit_rows(server, "product.update")
    assert audit.target_kind == "product"
    assert audit.target_id == product["id"]
    assert audit.details == {"name": "New", "description": None, "price_sats": 77}
    # No event for updates.
    assert [e.event_type for e in await rows(server, WebhookEvent)] == ["product.created"]


async def test_refused_patch_changes_nothing(server: Any) -> None:
    product = await create_product(server)
    response = await server.admin_patch(
        f"/v1/admin/products/{product['id']}", {"name": "Changed", "price_sats": -5}
    )
    assert response.status_code == 400
    [row] = await rows(server, Product)
    assert row.name == "App"
    assert await audit_rows(server, "product.update") == []


# --- list and active ----------------------------------------------------------------------


async def test_admin_list_includes_inactive_products_and_filters(server: Any) -> None:
    beta = await create_product(server, slug="beta", name="Beta")
    await create_product(server, slug="alpha", name="Alpha")
    response = await server.admin_patch(
        f"/v1/admin/products/{beta['id']}/active", {"active": False}
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True}

    listed = (await server.admin_get("/v1/admin/products")).json()["products"]
    assert [p["slug"] for p in listed] == ["alpha", "beta"]
    assert listed[1]["active"] is False

    inactive = (await server.admin_get("/v1/admin/products", active="false")).json()
    assert [p["slug"] for p in inactive["products"]] == ["beta"]
    active = (await server.admin_get("/v1/admin/products", active="1")).json()
    assert [p["slug"] for p in active["products"]] == ["alpha"]
    response = await server.admin_get("/v1/admin/products", active="maybe")
    assert response.status_code == 400

    [audit] = await audit_rows(server, "product.set_active")
    assert audit.target_id == beta["id"]
    assert audit.details == {"active": False}

    public = (await server.client.get("/v1/products")).json()["products"]
    assert [p["slug"] for p in public] == ["alpha"]


async def test_active_toggle_requires_a_boolean(server: Any) -> None:
    product = await create_product(server)
    path = f"/v1/admin/products/{product['id']}/active"
    response = await server.admin_patch(path, {"active": "false"})
    assert response.status_code == 400
    assert re.fullmatch(
        "bad request: field 'active' must be an? boolean", response.json()["message"]
    )
    response = await server.admin_patch(path, {})
    assert response.json()["message"] == "bad request: missing field 'active'"


# --- delete -------------------------------------------------------------------------------


async def test_safe_delete_removes_policies_and_the_product(server: Any) -> None:
    product = await create_product(server)
    await create_policy(server, "app", "std")
    await create_policy(server, "app", "pro")

    response = await server.admin_delete(f"/v1/admin/products/{product['id']}")
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "deleted": "app",
        "force": False,
        "cascaded_policies": 2,
        "cascaded_codes": 0,
        "cascaded_licenses": 0,
        "cascaded_invoices": 0,
        "cascaded_machines": 0,
        "cascaded_redemptions": 0,
        "cascaded_subscriptions": 0,
    }
    assert await rows(server, Product) == []
    assert await rows(server, Policy) == []
    [audit] = await audit_rows(server, "product.delete")
    assert audit.target_id == product["id"]
    assert audit.details == {
        "slug": "app",
        "name": "App",
        "force": False,
        **{key: (2 if key == "cascaded_policies" else 0) for key in DELETE_COUNTS},
    }
    assert (await server.admin_delete(f"/v1/admin/products/{product['id']}")).status_code == 404


@pytest.mark.parametrize("reference", ["license", "invoice"])
async def test_safe_delete_refuses_a_referenced_product(server: Any, reference: str) -> None:
    product = await create_product(server)
    if reference == "license":
        await add_license(server, product["id"], status="revoked")
    else:
        await add_invoice(server, product["id"], status="expired")
    response = await server.admin_delete(f"/v1/admin/products/{product['id']}", force="false")
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert "force=true" in response.json()["message"]
    assert "deactivate" in response.json()["message"]
    assert len(await rows(server, Product)) == 1
    assert await audit_rows(server, "product.delete") == []


async def test_force_delete_cascades_everything_of_the_product(server: Any) -> None:
    product = await create_product(server)
    policy = await create_policy(server, "app")
    invoice_id = await add_invoice(server, product["id"], policy["id"], status="settled")
    bought = await add_license(server, product["id"], policy["id"])
    async with server.state.db.write() as session:
        row = await session.get(License, bought)
        assert row is not None
        row.invoice_id = invoice_id
    manual = await add_license(server, product["id"], None, status="revoked")
    await add_machine(server, bought)
    await add_machine(server, manual)
    await add_validation(server, bought, product["id"])

    other = await create_product(server, slug="other", name="Other")
    kept_license = await add_license(server, other["id"])
    await add_validation(server, kept_license, other["id"])

    response = await server.admin_delete(f"/v1/admin/products/{product['id']}", force="true")
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "deleted": "app",
        "force": True,
        "cascaded_policies": 1,
        "cascaded_codes": 0,
        "cascaded_licenses": 2,
        "cascaded_invoices": 1,
        "cascaded_machines": 2,
        "cascaded_redemptions": 0,
        "cascaded_subscriptions": 0,
    }
    assert [p.slug for p in await rows(server, Product)] == ["other"]
    assert await rows(server, Policy) == []
    assert [lic.id for lic in await rows(server, License)] == [kept_license]
    assert await rows(server, Invoice) == []
    assert await rows(server, Machine) == []
    assert [log.license_id for log in await rows(server, ValidationLog)] == [kept_license]

    [audit] = await audit_rows(server, "product.force_delete")
    assert audit.details["slug"] == "app"
    assert audit.details["force"] is True
    assert audit.details["cascaded_licenses"] == 2
    assert audit.details["cascaded_machines"] == 2


async def test_bad_force_value_is_a_400(server: Any) -> None:
    product = await create_product(server)
    response = await server.admin_delete(f"/v1/admin/products/{product['id']}", force="yes")
    assert response.status_code == 400
    assert len(await rows(server, Product)) == 1
