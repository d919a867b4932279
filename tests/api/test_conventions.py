"""Serving conventions: envelope, routing errors, CORS, caching, OpenAPI, service info."""

from __future__ import annotations

import sqlalchemy as sa

from keysat.keys import generate_private_key, private_key_to_pem, public_key_to_pem
from keysat.operator.models import AuditEntry
from support import ADMIN, create_product, issue_license


async def test_unknown_route_wrong_method_and_trailing_slash(server) -> None:  # type: ignore[no-untyped-def]
    response = await server.client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json() == {
        "ok": False,
        "error": "not_found",
        "message": "not found: no such endpoint",
    }
    response = await server.client.get("/v1/validate")
    assert response.status_code == 405
    assert response.json() == {
        "ok": False,
        "error": "method_not_allowed",
        "message": "method not allowed: GET /v1/validate",
    }
    response = await server.client.post("/v1/validate/", json={"key": "x"})
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_body_problems_get_the_envelope(server) -> None:  # type: ignore[no-untyped-def]
    cases = [
        (
            {"content": b"{}", "headers": {}},
            "bad request: expected a JSON body (Content-Type: application/json)",
        ),
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            "bad request: invalid JSON body",
        ),
        (
            {"content": b"[1]", "headers": {"content-type": "application/json"}},
            "bad request: invalid JSON body",
        ),
        (
            {"content": b"{}", "headers": {"content-type": "application/json; charset=utf-8"}},
            "bad request: missing field 'key'",
        ),
        (
            {"content": b'{"key": 5}', "headers": {"content-type": "application/vnd.api+json"}},
            "bad request: field 'key' must be a string",
        ),
    ]
    for request, message in cases:
        response = await server.client.post("/v1/validate", **request)
        assert response.status_code == 400, message
        assert response.json() == {"ok": False, "error": "bad_request", "message": message}
    big = b'{"key": "' + b"A" * (2 * 1024 * 1024) + b'"}'
    response = await server.client.post(
        "/v1/validate", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["message"] == "bad request: request body exceeds 2 MiB"


async def test_admin_credentials_are_checked_before_the_body(server) -> None:  # type: ignore[no-untyped-def]
    response = await server.client.post(
        "/v1/admin/licenses", content=b"{broken", headers={"content-type": "application/json"}
    )
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error": "unauthorized", "message": "unauthorized"}
    for header in ("Basic abc", "Bearer ", "bearer " + "x" * 40):
        response = await server.client.get("/v1/admin/audit", headers={"Authorization": header})
        assert response.status_code == 401, header
    response = await server.client.get(
        "/v1/admin/audit", headers={"Authorization": "Bearer " + "w" * 40}
    )
    assert response.status_code == 403
    assert response.json() == {"ok": False, "error": "forbidden", "message": "forbidden"}
    response = await server.client.post(
        "/v1/admin/licenses",
        content=b"{broken",
        headers={"content-type": "application/json", **ADMIN},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


async def test_cors_and_no_store(server) -> None:  # type: ignore[no-untyped-def]
    preflight = await server.client.options(
        "/v1/admin/licenses",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.content == b""
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
    assert preflight.headers["access-control-max-age"] == "600"
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in preflight.headers

    simple = await server.client.get("/v1/pubkey", headers={"Origin": "https://app.example"})
    assert simple.headers["access-control-allow-origin"] == "*"
    assert "cache-control" not in simple.headers
    admin = await server.client.get("/v1/admin/audit", headers=ADMIN)
    assert admin.headers["cache-control"] == "no-store"
    denied = await server.client.get("/v1/admin/audit")
    assert denied.headers["cache-control"] == "no-store"


async def test_service_info_and_public_keys_agree(make_server) -> None:  # type: ignore[no-untyped-def]
    server = await make_server(KEYSAT_OPERATOR_NAME="Acme Software")
    info = (await server.client.get("/")).json()
    assert info["service"] == "keysat"
    assert info["version"] == "1.0.0"
    assert info["operator"] == "Acme Software"
    assert info["key_algorithm"] == "ed25519"
    assert info["key_format_version"] == 2
    assert info["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA")
    pubkey = (await server.client.get("/v1/pubkey")).json()
    assert pubkey == {"algorithm": "ed25519", "public_key_pem": info["public_key_pem"]}
    issuer = (await server.client.get("/v1/issuer/public-key")).json()
    assert issuer == {
        "public_key_pem": info["public_key_pem"],
        "key_algorithm": "ed25519",
        "key_format_version": 2,
    }
    response = await server.client.get("/")
    assert response.headers["vary"] == "Accept"
    assert (await server.client.get("/healthz")).json() == {"ok": True}


async def test_openapi_document(server) -> None:  # type: ignore[no-untyped-def]
    document = (await server.client.get("/v1/openapi.json")).json()
    assert document["openapi"] == "3.1.0"
    paths = document["paths"]
    assert len(paths) > 5
    for path in ("/v1/validate", "/v1/admin/licenses", "/v1/machines/activate"):
        assert path in paths
    assert paths["/v1/validate"]["post"]["security"] == []
    assert paths["/v1/admin/licenses"]["post"]["security"] == [
        {"bearerAuth": []},
        {"sessionCookie": []},
    ]
    body = paths["/v1/validate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ValidateRequest"}
    assert "key" in document["components"]["schemas"]["ValidateRequest"]["properties"]
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert (await server.client.get(path)).status_code == 404


async def test_issuer_key_export_and_import(server) -> None:  # type: ignore[no-untyped-def]
    exported = await server.admin_post("/v1/admin/export-issuer-key")
    assert exported.status_code == 200
    body = exported.json()
    assert body["ok"] is True and body["key_algorithm"] == "ed25519"
    assert body["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI")
    current = (await server.client.get("/v1/issuer/public-key")).json()["public_key_pem"]
    assert body["public_key_pem"] == current

    replacement = generate_private_key()
    pem = private_key_to_pem(replacement)
    response = await server.client.post(
        "/v1/admin/import-issuer-key", content=pem, headers={**ADMIN, "content-type": "text/plain"}
    )
    assert response.status_code == 200
    assert response.json()["restart_required"] is False
    new_public = public_key_to_pem(replacement.public_key())
    assert response.json()["public_key_pem"] == new_public
    assert (await server.client.get("/v1/pubkey")).json()["public_key_pem"] == new_public

    for bad in (
        b"",
        b"hello",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        b"\xff\xfe",
    ):
        response = await server.client.post(
            "/v1/admin/import-issuer-key", content=bad, headers=ADMIN
        )
        assert response.status_code == 400, bad
        assert response.json()["error"] == "bad_request"

    await create_product(server)
    await issue_license(server)
    response = await server.client.post(
        "/v1/admin/import-issuer-key",
        content=private_key_to_pem(generate_private_key()),
        headers=ADMIN,
    )
    assert response.status_code == 409
    assert (await server.client.get("/v1/pubkey")).json()["public_key_pem"] == new_public

    async with server.state.db.read() as session:
        actions = (
            await session.execute(
                sa.select(AuditEntry.action, AuditEntry.details).order_by(AuditEntry.id)
            )
        ).all()
    issuer_actions = [(a, d) for a, d in actions if a.startswith("issuer_key.")]
    assert [a for a, _ in issuer_actions] == ["issuer_key.export", "issuer_key.import"]
    assert issuer_actions[1][1] == {"public_key_pem": new_public, "note": "master-bootstrap import"}
    for _, details in actions:
        assert "PRIVATE" not in str(details)


async def test_issuer_routes_are_master_only(server) -> None:  # type: ignore[no-untyped-def]
    assert (await server.client.post("/v1/admin/export-issuer-key")).status_code == 401
    response = await server.client.post(
        "/v1/admin/export-issuer-key", headers={"Authorization": "Bearer " + "z" * 40}
    )
    assert response.status_code == 403


async def test_audit_list_limits_and_filters(server) -> None:  # type: ignore[no-untyped-def]
    for slug in ("a1", "a2", "a3"):
        await create_product(server, slug)
    entries = (await server.admin_get("/v1/admin/audit", limit="1")).json()["entries"]
    assert len(entries) == 1
    assert entries[0]["action"] == "product.create"
    assert entries[0]["details"]["slug"] == "a3"
    assert entries[0]["actor_kind"] == "admin_api_key"
    assert entries[0]["actor_id"] == "master"
    assert entries[0]["request_ip"] == "203.0.113.7"
    newest = entries[0]["id"]
    older = (await server.admin_get("/v1/admin/audit", before_id=str(newest))).json()["entries"]
    assert [e["details"]["slug"] for e in older] == ["a2", "a1"]
    assert (await server.admin_get("/v1/admin/audit", limit="5000")).status_code == 200
    assert (await server.admin_get("/v1/admin/audit", limit="abc")).status_code == 400
    filtered = (await server.admin_get("/v1/admin/audit", action="nope")).json()["entries"]
    assert filtered == []
