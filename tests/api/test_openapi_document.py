"""`GET /v1/openapi.json` tells the truth (public-api.md 3; integration.md 15.1): every API
route is in it and nothing else is, each admin operation names its credential and gate,
errors are the envelope, and the document is valid OpenAPI 3.1.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from fastapi.routing import APIRoute, iter_route_contexts
from schemathesis.specs.openapi.definitions import OPENAPI_31

from keysat.access.routes import declared_gate
from keysat.app import create_app

METHODS = {"get", "post", "put", "patch", "delete"}
# The JSON routes that live outside /v1: the service document, liveness and web login.
API_OUTSIDE_V1 = {
    ("GET", "/"),
    ("GET", "/healthz"),
    ("POST", "/admin/login"),
    ("POST", "/admin/logout"),
    ("GET", "/admin/login/status"),
}


def app_routes(server: Any) -> list[APIRoute]:
    app = create_app(server.state)
    return [
        context.original_route
        for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
    ]


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


async def document_of(server: Any) -> dict[str, Any]:
    response = await server.client.get("/v1/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_the_document_is_valid_openapi_3_1(server: Any) -> None:
    document = await document_of(server)
    assert document["openapi"] == "3.1.0"
    jsonschema.Draft202012Validator(OPENAPI_31).validate(document)


async def test_every_api_route_is_documented_and_nothing_else(server: Any) -> None:
    documented = operations(await document_of(server))
    routes = app_routes(server)
    served = {(method, route.path_format) for route in routes for method in route.methods or ()}
    assert set(documented) <= served, "documented but not served"
    for route in routes:
        for method in route.methods or ():
            if (
                route.path_format.startswith("/v1/")
                or (method, route.path_format) in API_OUTSIDE_V1
            ):
                assert (method, route.path_format) in documented, f"{method} {route.path}"
            else:
                # A page for people, not part of the API.
                assert (method, route.path_format) not in documented, route.path


async def test_every_admin_operation_names_its_credential_and_gate(server: Any) -> None:
    documented = operations(await document_of(server))
    gates = {
        (method, route.path_format): declared_gate(route)
        for route in app_routes(server)
        for method in route.methods or ()
    }
    for key, operation in documented.items():
        gate = gates[key]
        if key[1].startswith("/v1/admin/"):
            assert gate is not None, key
        if gate is None:
            assert operation["security"] == [], key
            assert "x-keysat-gate" not in operation, key
        else:
            assert operation["security"] == [{"bearerAuth": []}, {"sessionCookie": []}], key
            assert operation["x-keysat-gate"] == gate, key
            assert {"401", "403"} <= set(operation["responses"]), key


async def test_errors_are_the_envelope_never_the_framework_422(server: Any) -> None:
    document = await document_of(server)
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for key, operation in operations(document).items():
        assert "422" not in operation["responses"], key
        if "requestBody" in operation:
            assert "400" in operation["responses"], key
        if any(parameter["in"] == "path" for parameter in operation.get("parameters", ())):
            assert "404" in operation["responses"], key
    assert schemas["Error404"]["properties"]["error"]["enum"] == ["not_found"]
    assert set(schemas["Error404"]["required"]) == {"ok", "error", "message"}
    create = document["paths"]["/v1/admin/products"]["post"]["responses"]
    assert create["402"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TierCapBody"
    }
    assert "upgrade_url" in schemas["TierCapBody"]["required"]


async def test_bodies_that_are_not_json_name_their_media_type(server: Any) -> None:
    paths = (await document_of(server))["paths"]
    pem = paths["/v1/admin/import-issuer-key"]["post"]["requestBody"]
    assert set(pem["content"]) == {"text/plain"}
    form = paths["/v1/btcpay/authorize/callback"]["post"]["requestBody"]
    assert set(form["content"]) == {"application/x-www-form-urlencoded"}
    page = paths["/v1/btcpay/authorize/callback"]["get"]["responses"]["200"]
    assert set(page["content"]) == {"text/html"}
    optional = paths["/v1/admin/btcpay/connect"]["post"]["requestBody"]
    assert optional["required"] is False
