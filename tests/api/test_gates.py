"""Every admin route against the gate table of admin-api.md 1 (access.md 5).

The routes come from the app itself, so a route added without a gate, or with the wrong
one, fails here. Each route is then called with no credentials, unknown and revoked keys, and
a key of every role: master-only routes refuse every scoped key, scope routes accept exactly
the roles that grant their scope, and refusals come before the body is read."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.routing import APIRoute
from starlette.routing import Match

from access_support import bearer, create_key
from keysat.access.models import ScopedApiKey
from keysat.access.routes import declared_gate
from keysat.access.scopes import ROLE_GRANTS, ROLES
from keysat.app import ROUTERS
from keysat.wire import new_id
from support import assert_error

M, PC = "master", "provider-connect"

# admin-api.md 1, one row per (method, path); `{…}` are path parameters.
GATE_TABLE: list[tuple[str, str, str]] = [
    ("GET", "/v1/admin/products", "products:read"),
    ("POST", "/v1/admin/products", "products:write"),
    ("PATCH", "/v1/admin/products/{id}", "products:write"),
    ("PATCH", "/v1/admin/products/{id}/active", "products:write"),
    ("DELETE", "/v1/admin/products/{id}", "products:write"),
    ("GET", "/v1/admin/policies", "policies:read"),
    ("POST", "/v1/admin/policies", "policies:write"),
    ("PATCH", "/v1/admin/policies/{id}", "policies:write"),
    ("PATCH", "/v1/admin/policies/{id}/active", "policies:write"),
    ("PATCH", "/v1/admin/policies/{id}/public", "policies:write"),
    ("PATCH", "/v1/admin/policies/{id}/archived", "policies:write"),
    ("PATCH", "/v1/admin/policies/{id}/tip", "policies:write"),
    ("DELETE", "/v1/admin/policies/{id}", "policies:write"),
    ("GET", "/v1/admin/tips", "policies:read"),
    ("GET", "/v1/admin/licenses", "licenses:read"),
    ("GET", "/v1/admin/licenses/search", "licenses:read"),
    ("GET", "/v1/admin/licenses/summary", "licenses:read"),
    ("GET", "/v1/admin/licenses/counts", "licenses:read"),
    ("POST", "/v1/admin/licenses", "licenses:write"),
    ("POST", "/v1/admin/licenses/{id}/revoke", "licenses:write"),
    ("POST", "/v1/admin/licenses/{id}/suspend", "licenses:write"),
    ("POST", "/v1/admin/licenses/{id}/unsuspend", "licenses:write"),
    ("POST", "/v1/admin/licenses/{id}/change-tier", M),
    ("GET", "/v1/admin/machines", "machines:read"),
    ("POST", "/v1/admin/machines/{id}/deactivate", "machines:write"),
    ("GET", "/v1/admin/discount-codes", "discount_codes:read"),
    ("POST", "/v1/admin/discount-codes", "discount_codes:write"),
    ("GET", "/v1/admin/discount-codes/{id}", "discount_codes:read"),
    ("PATCH", "/v1/admin/discount-codes/{id}", "discount_codes:write"),
    ("PATCH", "/v1/admin/discount-codes/{id}/active", "discount_codes:write"),
    ("DELETE", "/v1/admin/discount-codes/{id}", "discount_codes:write"),
    ("GET", "/v1/admin/invoices", "licenses:read"),
    ("GET", "/v1/admin/invoices/{id}", "licenses:read"),
    ("GET", "/v1/admin/revenue/summary", "licenses:read"),
    ("POST", "/v1/admin/sandbox/invoices/{id}/pay", "licenses:write"),
    ("POST", "/v1/admin/sandbox/invoices/{id}/expire", "licenses:write"),
    ("POST", "/v1/admin/sandbox/invoices/{id}/invalidate", "licenses:write"),
    ("GET", "/v1/admin/subscriptions", "subscriptions:read"),
    ("POST", "/v1/admin/subscriptions/{id}/cancel", "subscriptions:write"),
    ("GET", "/v1/admin/sandbox/clock", "subscriptions:read"),
    ("POST", "/v1/admin/sandbox/clock/advance", "subscriptions:write"),
    ("POST", "/v1/admin/sandbox/clock/reset", "subscriptions:write"),
    ("GET", "/v1/admin/payment-provider/status", "payment_providers:read"),
    ("GET", "/v1/admin/btcpay/status", "payment_providers:read"),
    ("GET", "/v1/admin/btcpay/payment-methods", "payment_providers:read"),
    ("GET", "/v1/admin/zaprite/status", "payment_providers:read"),
    ("POST", "/v1/admin/btcpay/connect", PC),
    ("POST", "/v1/admin/btcpay/disconnect", M),
    ("POST", "/v1/admin/zaprite/connect", M),
    ("POST", "/v1/admin/zaprite/disconnect", M),
    ("GET", "/v1/admin/merchant-profiles", "merchant_profiles:read"),
    ("POST", "/v1/admin/merchant-profiles", "merchant_profiles:write"),
    ("GET", "/v1/admin/merchant-profiles/{id}", "merchant_profiles:read"),
    ("PATCH", "/v1/admin/merchant-profiles/{id}", "merchant_profiles:write"),
    ("DELETE", "/v1/admin/merchant-profiles/{id}", "merchant_profiles:write"),
    ("POST", "/v1/admin/merchant-profiles/{id}/set-default", "merchant_profiles:write"),
    ("PUT", "/v1/admin/merchant-profiles/{id}/rail-preferences/{rail}", "merchant_profiles:write"),
    (
        "DELETE",
        "/v1/admin/merchant-profiles/{id}/rail-preferences/{rail}",
        "merchant_profiles:write",
    ),
    ("GET", "/v1/admin/webhook-endpoints", "webhooks:read"),
    ("POST", "/v1/admin/webhook-endpoints", "webhooks:write"),
    ("PATCH", "/v1/admin/webhook-endpoints/{id}/active", "webhooks:write"),
    ("DELETE", "/v1/admin/webhook-endpoints/{id}", "webhooks:write"),
    ("GET", "/v1/admin/webhook-deliveries", "webhooks:read"),
    ("POST", "/v1/admin/webhook-deliveries/{id}/retry", "webhooks:write"),
    ("POST", "/v1/admin/api-keys", M),
    ("GET", "/v1/admin/api-keys", M),
    ("DELETE", "/v1/admin/api-keys/{id}", M),
    ("GET", "/v1/admin/settings/operator-name", "settings:read"),
    ("POST", "/v1/admin/settings/operator-name", M),
    ("POST", "/v1/admin/web-password", M),
    ("GET", "/v1/admin/community-analytics", "community:read"),
    ("POST", "/v1/admin/community-analytics", "community:write"),
    ("POST", "/v1/admin/community-analytics/reset", "community:write"),
    ("POST", "/v1/admin/import-issuer-key", M),
    ("POST", "/v1/admin/export-issuer-key", M),
    ("GET", "/v1/admin/rates", "rates:read"),
    ("POST", "/v1/admin/rates/refresh", "rates:write"),
    ("PUT", "/v1/admin/rates/pins/{currency}", "rates:write"),
    ("DELETE", "/v1/admin/rates/pins/{currency}", "rates:write"),
    ("GET", "/v1/admin/tier", "tier:read"),
    ("GET", "/v1/admin/self-license", "tier:read"),
    ("POST", "/v1/admin/self-license", M),
    ("POST", "/v1/admin/self-license/refresh", "tier:read"),
    ("GET", "/v1/admin/db-info", M),
    ("GET", "/v1/admin/jobs", "settings:read"),
    ("POST", "/v1/admin/jobs/{name}/run", M),
    ("GET", "/v1/admin/audit", "audit:read"),
]

PARAMETER_VALUES = {"id": new_id(), "rail": "lightning", "currency": "USD", "name": "reconciler"}
JSON = {"content-type": "application/json"}


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMETER_VALUES[m.group(1)], path)


def admin_routes() -> list[tuple[str, APIRoute]]:
    return [
        (method, route)
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and route.path.startswith("/v1/admin")
        for method in sorted(route.methods or ())
    ]


def served_rows() -> list[tuple[str, str, str, APIRoute]]:
    """The table rows the app serves: (method, concrete path, gate, route)."""
    served = []
    for method, path, gate in GATE_TABLE:
        url = concrete(path)
        scope = {"type": "http", "method": method, "path": url}
        for route_method, route in admin_routes():
            if route_method == method and route.matches(scope)[0] == Match.FULL:
                served.append((method, url, gate, route))
                break
    return served


@pytest.fixture
async def keyed(make_server: Any) -> tuple[Any, dict[str, str], dict[str, str]]:
    """A server without rate sources (a refresh stays local), a key of every role plus a
    merchant-onboard key holding the à-la-carte scope, and keys that grant nothing."""
    server = await make_server(KEYSAT_RATE_SOURCES="none")
    keys = {role: (await create_key(server, role))["token"] for role in ROLES}
    keys["merchant-onboard+payment_providers:write"] = (
        await create_key(server, "merchant-onboard", ["payment_providers:write"])
    )["token"]
    revoked = await create_key(server, "full-admin")
    assert (await server.admin_delete(f"/v1/admin/api-keys/{revoked['id']}")).status_code == 200
    odd = await create_key(server, "full-admin", ["payment_providers:write"])
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(ScopedApiKey).where(ScopedApiKey.id == odd["id"]).values(role="god-mode")
        )
    refused = {
        "unknown": "ks_" + "A" * 43,
        "revoked": revoked["token"],
        "unparsable role": odd["token"],
    }
    return server, keys, refused


def granted(key_name: str) -> frozenset[str]:
    role, _, extra = key_name.partition("+")
    return ROLE_GRANTS[role] | ({extra} if extra else set())


def test_every_admin_route_declares_the_gate_of_the_table() -> None:
    table = {(method, concrete(path)): gate for method, path, gate in GATE_TABLE}
    served = served_rows()
    for method, url, gate, route in served:
        assert declared_gate(route) == gate, f"{method} {url}"
    # Every admin route the app serves is a row of the table: none slipped in ungated.
    matched = {(method, route.path) for method, _, _, route in served}
    unmatched = [
        f"{method} {route.path}"
        for method, route in admin_routes()
        if (method, route.path) not in matched
    ]
    assert unmatched == []
    assert len(served) >= 70
    assert len(table) == len(GATE_TABLE)


async def test_every_admin_route_refuses_before_reading_the_body(keyed: Any) -> None:
    server, keys, refused = keyed
    for method, url, gate, _route in served_rows():
        where = f"{method} {url}"
        response = await server.client.request(method, url, content=b"{broken", headers=JSON)
        assert_error(response, 401, "unauthorized", "unauthorized")
        for why, token in refused.items():
            response = await server.client.request(
                method, url, content=b"{broken", headers={**bearer(token), **JSON}
            )
            assert response.status_code == 403, f"{where} with a key that is {why}"
            assert response.json() == {"ok": False, "error": "forbidden", "message": "forbidden"}
        for key_name, token in keys.items():
            response = await server.client.request(
                method,
                url,
                content=b"{broken",
                headers={**bearer(token), **JSON},
            )
            allowed = gate not in (M, PC) and gate in granted(key_name)
            if allowed:
                assert response.status_code not in (401, 403), f"{where} as {key_name}"
            else:
                assert response.status_code == 403, f"{where} as {key_name}: {response.text}"


async def test_the_provider_connect_gate_opens_to_its_scope_in_sandbox_mode_only(
    make_server: Any,
) -> None:
    for sandbox in (False, True):
        server = await make_server(KEYSAT_SANDBOX_MODE=str(sandbox).lower())
        holder = await create_key(server, "merchant-onboard", ["payment_providers:write"])
        without = await create_key(server, "full-admin")
        # No BTCPAY_URL: a caller that passes the gate gets 503, one that does not 403.
        response = await server.client.post(
            "/v1/admin/btcpay/connect", headers=bearer(holder["token"])
        )
        assert response.status_code == (503 if sandbox else 403), response.text
        response = await server.client.post(
            "/v1/admin/btcpay/connect", headers=bearer(without["token"])
        )
        assert response.status_code == 403
        assert (await server.admin_post("/v1/admin/btcpay/connect")).status_code == 503
