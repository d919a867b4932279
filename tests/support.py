"""Constants and small helpers shared by the test modules."""

from __future__ import annotations

from typing import Any

ADMIN_KEY = "test-admin-key-0123456789abcdefghijklmnop"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def create_product(server: Any, slug: str = "acme", **fields: Any) -> dict[str, Any]:
    body = {"slug": slug, "name": fields.pop("name", slug.title()), "price_sats": 1000, **fields}
    response = await server.admin_post("/v1/admin/products", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def create_policy(
    server: Any, product_slug: str = "acme", slug: str = "pro", **fields: Any
) -> dict[str, Any]:
    body = {"product_slug": product_slug, "slug": slug, "name": fields.pop("name", slug), **fields}
    response = await server.admin_post("/v1/admin/policies", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def issue_license(server: Any, product_slug: str = "acme", **fields: Any) -> dict[str, Any]:
    response = await server.admin_post(
        "/v1/admin/licenses", {"product_slug": product_slug, **fields}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())
