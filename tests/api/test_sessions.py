"""Web login: the password, login, sessions, logout and status, CSRF and the login rate
limit (access.md 6; admin-api.md 15.3; public-api.md 1.7, 14)."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher, Type
from sqlalchemy.exc import IntegrityError

from access_support import (
    ORIGIN,
    bearer,
    cookie,
    create_key,
    csrf_token,
    login,
    session_rows,
    session_token,
    set_password,
    set_session_times,
)
from keysat.access.models import RateBucket, WebSession
from keysat.access.sessions import Sessions
from keysat.app import build_state, create_app, prepare
from keysat.clock import clock
from keysat.operator.models import Setting
from support import ADMIN_KEY, TRUST_KEY, assert_error, audit_rows

PASSWORD = "correct horse battery"
PRODUCT = {"slug": "acme", "name": "Acme", "price_sats": 1000}
PHC = re.compile(r"^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$")
SET_COOKIE = re.compile(
    r"^keysat_session=([A-Za-z0-9_-]{43}); Path=/; HttpOnly; SameSite=Strict; Max-Age=86400$"
)
CLEARING = "keysat_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"


async def stored_hash(server: Any) -> str | None:
    async with server.state.db.read() as session:
        row = await session.get(Setting, "web_ui_password_hash")
    return None if row is None else row.value


async def the_session(server: Any, token: str) -> WebSession:
    digest = hashlib.sha256(token.encode()).hexdigest()
    [row] = [row for row in await session_rows(server) if row.token_hash == digest]
    return row


# --- the web password ------------------------------------------------------------------------


async def test_the_password_is_stored_as_an_argon2id_hash(server: Any) -> None:
    for short in ("x" * 11, "é" * 11):
        response = await server.admin_post("/v1/admin/web-password", {"password": short})
        assert_error(
            response, 400, "bad_request", "bad request: password must be at least 12 characters"
        )
    response = await server.admin_post("/v1/admin/web-password", {"password": "x" * 1025})
    assert_error(
        response, 400, "bad_request", "bad request: password must be at most 1024 characters"
    )
    assert await stored_hash(server) is None

    # Twelve code points (24 UTF-8 bytes) are enough.
    response = await server.admin_post("/v1/admin/web-password", {"password": "é" * 12})
    assert response.status_code == 200 and response.json() == {"ok": True}
    assert "set-cookie" not in response.headers
    phc = await stored_hash(server)
    assert phc is not None and PHC.match(phc)
    assert PasswordHasher().verify(phc, "é" * 12)
    [audit] = await audit_rows(server, "web_ui.set_password")
    assert (audit.target_kind, audit.target_id, audit.details) == (
        "settings",
        "web_ui_password_hash",
        {"ok": True},
    )
    assert "é" not in repr(audit.details)
    assert (await login(server, password="é" * 12)) != ""


async def test_a_hash_made_elsewhere_verifies_with_its_own_parameters(server: Any) -> None:
    """Keysat 0.2.0's hashes carry their parameters; verification takes them from there."""
    for hasher in (
        PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4, type=Type.ID),
        PasswordHasher(time_cost=2, memory_cost=8192, parallelism=1, type=Type.I),
    ):
        async with server.state.db.write() as session:
            await session.merge(
                Setting(
                    key="web_ui_password_hash", value=hasher.hash(PASSWORD), updated_at=clock.now()
                )
            )
        await login(server, password=PASSWORD)


async def test_setting_the_password_ends_every_session(server: Any) -> None:
    await set_password(server, PASSWORD)
    first = await login(server, password=PASSWORD)
    second = await login(server, api_key=ADMIN_KEY)
    assert len(await session_rows(server)) == 2
    csrf = await csrf_token(server, first)
    response = await server.client.post(
        "/v1/admin/web-password",
        json={"password": PASSWORD + "!"},
        headers={**cookie(first), "Origin": ORIGIN, "X-CSRF-Token": csrf},
    )
    assert response.status_code == 200, response.text
    assert response.headers["set-cookie"] == CLEARING
    assert await session_rows(server) == []
    for token in (first, second):
        assert (
            await server.client.get("/v1/admin/audit", headers=cookie(token))
        ).status_code == 401
    [_, audit] = await audit_rows(server, "web_ui.set_password")
    assert audit.actor_kind == "web_ui"


# --- logging in ------------------------------------------------------------------------------


async def test_password_login_opens_a_session(server: Any) -> None:
    await set_password(server, PASSWORD)
    response = await server.client.post(
        "/admin/login",
        json={"password": PASSWORD},
        headers={"Origin": ORIGIN, "User-Agent": "probe/" + "u" * 600},
    )
    server.client.cookies.clear()
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["cache-control"] == "no-store"
    match = SET_COOKIE.match(response.headers["set-cookie"])
    assert match is not None
    token = match.group(1)

    row = await the_session(server, token)
    assert row.login_method == "password" and row.master_key_hash is None
    assert row.expires_at - row.created_at == timedelta(hours=24)
    assert row.last_seen_at == row.created_at
    assert (row.ip, row.user_agent) == ("203.0.113.7", ("probe/" + "u" * 600)[:512])
    assert re.match(r"^[A-Za-z0-9_-]{43}$", row.csrf_token) and row.csrf_token != token

    [audit] = await audit_rows(server, "web_ui.login_ok")
    assert (audit.actor_kind, audit.actor_hash, audit.actor_id) == ("web_ui", None, row.id)
    assert (audit.target_kind, audit.target_id, audit.details) == (
        "session",
        row.id,
        {"method": "password"},
    )
    assert audit.request_ip == "203.0.113.7"
    async with server.state.db.read() as session:
        everything = (await session.execute(sa.text("SELECT * FROM audit_log"))).all()
    assert token not in repr(everything) and row.csrf_token not in repr(everything)


async def test_failed_logins_are_401_and_audited_without_the_secret(server: Any) -> None:
    await set_password(server, PASSWORD)
    scoped = await create_key(server, "full-admin")
    attempts = [
        ({"password": PASSWORD + "x"}, "password"),
        ({"api_key": scoped["token"]}, "api_key"),
        ({"api_key": ADMIN_KEY + " "}, "api_key"),
    ]
    for body, _ in attempts:
        response = await server.client.post("/admin/login", json=body)
        assert_error(response, 401, "unauthorized", "unauthorized")
        assert "set-cookie" not in response.headers
    rows = await audit_rows(server, "web_ui.login_failed")
    assert [row.details for row in rows] == [{"method": method} for _, method in attempts]
    for row in rows:
        assert (row.actor_kind, row.actor_hash, row.actor_id) == ("web_ui", None, None)
        assert (row.target_kind, row.target_id) == ("settings", "web_ui_password_hash")
    assert await session_rows(server) == []


async def test_login_with_the_master_key_works_without_a_password(server: Any) -> None:
    response = await server.client.post("/admin/login", json={"password": PASSWORD})
    assert_error(response, 503, "service_unavailable")
    assert "/v1/admin/web-password" in response.json()["message"]
    assert await audit_rows(server, "web_ui.login_failed") == []

    token = await login(server, api_key=ADMIN_KEY)
    row = await the_session(server, token)
    assert row.login_method == "api_key"
    assert row.master_key_hash == hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    assert (await server.client.get("/v1/admin/api-keys", headers=cookie(token))).status_code == 200
    [audit] = await audit_rows(server, "web_ui.login_ok")
    assert audit.details == {"method": "api_key"}


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"password"',
        b"{}",
        b'{"password": "a", "api_key": "b"}',
        b'{"password": 12}',
        b'{"api_key": null}',
        b"{broken",
    ],
)
async def test_login_bodies_that_are_not_one_string_field(server: Any, body: bytes) -> None:
    response = await server.client.post(
        "/admin/login", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "bad_request")


async def test_login_refuses_a_foreign_origin_before_spending_a_token(make_server: Any) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on")
    for origin in ("https://evil.example", "null"):
        response = await server.client.post(
            "/admin/login", json={"api_key": ADMIN_KEY}, headers={"Origin": origin}
        )
        assert_error(response, 403, "forbidden")
    async with server.state.db.read() as session:
        assert (await session.execute(sa.select(RateBucket))).scalars().all() == []
    await login(server, api_key=ADMIN_KEY)


async def test_the_sixth_login_attempt_from_one_address_is_refused(make_server: Any) -> None:
    server = await make_server(KEYSAT_RATE_LIMITS="on", KEYSAT_TRUSTED_PROXIES="203.0.113.7")
    first = {"X-Forwarded-For": "198.51.100.1"}
    await login(server, headers=first, api_key=ADMIN_KEY)
    for _ in range(4):
        response = await server.client.post(
            "/admin/login", json={"api_key": "wrong"}, headers=first
        )
        assert response.status_code == 401
    response = await server.client.post("/admin/login", json={"api_key": ADMIN_KEY}, headers=first)
    assert_error(
        response,
        429,
        "rate_limited",
        "too many requests: too many login attempts; try again in a few minutes",
    )
    # 5/15m: one token back every 180 s.
    assert 1 <= int(response.headers["retry-after"]) <= 180
    assert "set-cookie" not in response.headers
    # Another client address has its own bucket; buckets are named web_login.
    await login(server, headers={"X-Forwarded-For": "198.51.100.2"}, api_key=ADMIN_KEY)
    async with server.state.db.read() as session:
        buckets = (await session.execute(sa.select(RateBucket))).scalars().all()
    assert sorted((b.bucket_kind, b.bucket_key) for b in buckets) == [
        ("web_login", "198.51.100.1"),
        ("web_login", "198.51.100.2"),
    ]


@pytest.mark.parametrize(
    ("env", "secure"),
    [
        ({"KEYSAT_PUBLIC_URL": "http://keysat.test"}, False),
        ({"KEYSAT_PUBLIC_URL": "https://keysat.test"}, True),
        ({"KEYSAT_PUBLIC_URL": "http://keysat.test", "KEYSAT_COOKIE_SECURE": "TRUE"}, True),
        ({"KEYSAT_PUBLIC_URL": "https://keysat.test", "KEYSAT_COOKIE_SECURE": "off"}, False),
        ({"KEYSAT_PUBLIC_URL": "https://keysat.test", "KEYSAT_COOKIE_SECURE": "auto"}, True),
    ],
)
async def test_the_secure_flag_follows_the_public_url(
    make_server: Any, env: dict[str, str], secure: bool
) -> None:
    server = await make_server(**env)
    origin = env["KEYSAT_PUBLIC_URL"]
    response = await server.client.post(
        "/admin/login", json={"api_key": ADMIN_KEY}, headers={"Origin": origin}
    )
    assert response.status_code == 204
    server.client.cookies.clear()
    token = session_token(response)
    flag = "; Secure" if secure else ""
    assert response.headers["set-cookie"] == (
        f"keysat_session={token}; Path=/; HttpOnly{flag}; SameSite=Strict; Max-Age=86400"
    )
    response = await server.client.post(
        "/admin/logout", headers={**cookie(token), "Origin": origin}
    )
    assert response.headers["set-cookie"] == (
        f"keysat_session=; Path=/; HttpOnly{flag}; SameSite=Strict; Max-Age=0"
    )


# --- using a session -------------------------------------------------------------------------


async def test_a_session_acts_as_the_master_key_and_is_audited_as_itself(server: Any) -> None:
    token = await login(server, api_key=ADMIN_KEY)
    row = await the_session(server, token)
    csrf = await csrf_token(server, token)
    as_session = {**cookie(token), "Origin": ORIGIN}
    assert (await server.client.get("/v1/admin/db-info", headers=cookie(token))).status_code == 200
    response = await server.client.post(
        "/v1/admin/api-keys", json={"label": "from the UI", "role": "read-only"}, headers=as_session
    )
    assert response.status_code == 200, response.text
    response = await server.client.post("/v1/admin/products", json=PRODUCT, headers=as_session)
    assert response.status_code == 200
    for action in ("api_key.create", "product.create"):
        [audit] = await audit_rows(server, action)
        assert (audit.actor_kind, audit.actor_hash, audit.actor_id) == ("web_ui", None, row.id)
        assert token not in repr(audit.details) and csrf not in repr(audit.details)


async def test_an_authorization_header_wins_over_the_cookie(server: Any) -> None:
    token = await login(server, api_key=ADMIN_KEY)
    for header, status in (("Basic x", 401), ("Bearer ", 401), ("Bearer unknown", 403)):
        response = await server.client.get(
            "/v1/admin/audit", headers={**cookie(token), "Authorization": header}
        )
        assert response.status_code == status, header
    key = await create_key(server, "read-only")
    response = await server.client.get(
        "/v1/admin/api-keys", headers={**cookie(token), **bearer(key["token"])}
    )
    assert response.status_code == 403


async def test_unknown_and_ended_sessions_are_401(server: Any) -> None:
    for headers in (
        {"Cookie": "keysat_session=" + "A" * 43},
        {"Cookie": "keysat_session="},
        {"Cookie": "other=1"},
    ):
        response = await server.client.get("/v1/admin/audit", headers=headers)
        assert_error(response, 401, "unauthorized", "unauthorized")
        response = await server.client.post(
            "/v1/admin/products", json=PRODUCT, headers={**headers, "Origin": ORIGIN}
        )
        assert_error(response, 401, "unauthorized", "unauthorized")


async def test_a_session_ends_two_hours_after_its_last_use(server: Any) -> None:
    token = await login(server, api_key=ADMIN_KEY)
    row = await the_session(server, token)
    now = clock.real_now()
    await set_session_times(server, row.id, last_seen_at=now - timedelta(hours=1, minutes=59))
    assert (await server.client.get("/v1/admin/audit", headers=cookie(token))).status_code == 200
    # That use counted as activity.
    seen = (await the_session(server, token)).last_seen_at
    assert seen >= now

    await set_session_times(server, row.id, last_seen_at=now - timedelta(hours=2))
    response = await server.client.get("/v1/admin/audit", headers=cookie(token))
    assert_error(response, 401, "unauthorized")
    status = (await server.client.get("/admin/login/status", headers=cookie(token))).json()
    assert status == {"has_password": False, "logged_in": False}


async def test_a_session_ends_24_hours_after_login_even_when_in_use(server: Any) -> None:
    token = await login(server, api_key=ADMIN_KEY)
    row = await the_session(server, token)
    now = clock.real_now()
    login_time = now - timedelta(hours=23, minutes=59)
    await set_session_times(
        server,
        row.id,
        created_at=login_time,
        expires_at=login_time + timedelta(hours=24),
        last_seen_at=now - timedelta(minutes=1),
    )
    assert (await server.client.get("/v1/admin/audit", headers=cookie(token))).status_code == 200
    # Activity never moves the absolute deadline.
    assert (await the_session(server, token)).expires_at == login_time + timedelta(hours=24)

    login_time = now - timedelta(hours=24)
    await set_session_times(
        server,
        row.id,
        created_at=login_time,
        expires_at=login_time + timedelta(hours=24),
        last_seen_at=now - timedelta(minutes=1),
    )
    assert_error(
        await server.client.get("/v1/admin/audit", headers=cookie(token)), 401, "unauthorized"
    )


async def test_the_business_clock_does_not_age_sessions(sandbox: Any) -> None:
    token = await login(sandbox, api_key=ADMIN_KEY)
    clock.advance(timedelta(days=30))
    assert (await sandbox.client.get("/v1/admin/audit", headers=cookie(token))).status_code == 200


async def test_rotating_the_master_key_ends_master_key_sessions_only(
    server: Any, make_settings: Any
) -> None:
    await set_password(server, PASSWORD)
    by_key = await login(server, api_key=ADMIN_KEY)
    by_password = await login(server, password=PASSWORD)
    key = await create_key(server, "read-only")

    rotated = build_state(
        make_settings(), "rotated-admin-key-" + "r" * 32, trust_root=TRUST_KEY.public_key()
    )
    await prepare(rotated)
    transport = httpx.ASGITransport(app=create_app(rotated), client=("203.0.113.7", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://keysat.test") as client:
        assert (await client.get("/v1/admin/audit", headers=cookie(by_key))).status_code == 401
        assert (await client.get("/v1/admin/audit", headers=cookie(by_password))).status_code == 200
        assert (
            await client.get("/v1/admin/audit", headers=bearer(key["token"]))
        ).status_code == 200
        assert (await client.get("/v1/admin/audit", headers=bearer(ADMIN_KEY))).status_code == 403
    await rotated.http.aclose()
    rotated.key_reader.close()
    await rotated.db.dispose()


# --- CSRF ------------------------------------------------------------------------------------


async def csrf_case(server: Any, token: str, headers: dict[str, str], **request: Any) -> int:
    response = await server.client.post(
        "/v1/admin/products", headers={**cookie(token), **headers}, **request
    )
    return response.status_code


async def test_cookie_writes_need_an_allowed_origin_and_for_forms_the_token(
    make_server: Any,
) -> None:
    server = await make_server(KEYSAT_PUBLIC_URL="https://licensing.example.com")
    response = await server.client.post(
        "/admin/login",
        json={"api_key": ADMIN_KEY},
        headers={"Origin": "https://licensing.example.com"},
    )
    server.client.cookies.clear()
    token = session_token(response)
    csrf = await csrf_token(server, token)
    public = "https://licensing.example.com"
    form = {"content-type": "application/x-www-form-urlencoded"}
    slugs = iter(f"p{n}" for n in range(100))

    def product() -> dict[str, Any]:
        return {"json": {**PRODUCT, "slug": next(slugs)}}

    cases: list[tuple[dict[str, str], dict[str, Any], int]] = [
        ({"Origin": public}, product(), 200),
        ({"Origin": "https://evil.example"}, product(), 403),
        ({"Origin": "null"}, product(), 403),
        ({"Origin": "https://licensing.example.com.evil.example"}, product(), 403),
        ({"Referer": public + "/admin/products"}, product(), 200),
        ({"Referer": "https://evil.example/x"}, product(), 403),
        ({"Origin": "https://evil.example", "Referer": public + "/admin/"}, product(), 403),
        # Neither header: the token is required.
        ({}, product(), 403),
        ({"X-CSRF-Token": csrf}, product(), 200),
        ({"X-CSRF-Token": csrf[:-1] + "x"}, product(), 403),
        # The operator's LAN address: the origin is the Host the request went to.
        ({"Origin": "http://192.168.1.5:8080", "Host": "192.168.1.5:8080"}, product(), 200),
        ({"Origin": "http://192.168.1.5:8080", "Host": "192.168.1.6:8080"}, product(), 403),
        # Form bodies need the token even from an allowed origin. Passing the check leads to
        # the JSON endpoint's own 400, never a 403.
        ({"Origin": public, **form}, {"content": b"slug=x"}, 403),
        ({"Origin": public, **form}, {"content": f"slug=x&csrf_token={csrf}".encode()}, 400),
        ({"Origin": public, **form}, {"content": b"csrf_token=wrong"}, 403),
        ({"Origin": public, **form, "X-CSRF-Token": csrf}, {"content": b"slug=x"}, 400),
        ({"Origin": public, "content-type": "text/plain"}, {"content": b"{}"}, 403),
        (
            {"Origin": public, "content-type": "text/plain", "X-CSRF-Token": csrf},
            {"content": b"{}"},
            400,
        ),
        (
            {"Origin": public, "content-type": "multipart/form-data; boundary=B"},
            {
                "content": (
                    b'--B\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
                    + csrf.encode()
                    + b"\r\n--B--\r\n"
                )
            },
            400,
        ),
        (
            {"Origin": public, "content-type": "multipart/form-data; boundary=B"},
            {"content": b'--B\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--B--\r\n'},
            403,
        ),
    ]
    for headers, request, expected in cases:
        assert await csrf_case(server, token, headers, **request) == expected, headers
    # Reads are not checked; bearer requests are exempt.
    response = await server.client.get(
        "/v1/admin/products", headers={**cookie(token), "Origin": "https://evil.example"}
    )
    assert response.status_code == 200
    response = await server.client.post(
        "/v1/admin/products",
        json={**PRODUCT, "slug": "bearer"},
        headers={**bearer(ADMIN_KEY), "Origin": "https://evil.example"},
    )
    assert response.status_code == 200
    # A refused request did nothing, and did not count as activity.
    listed = (await server.admin_get("/v1/admin/products")).json()["products"]
    assert sorted(p["slug"] for p in listed) == ["bearer", "p0", "p10", "p4", "p8"]


async def test_a_failed_csrf_check_does_not_keep_a_session_alive(server: Any) -> None:
    token = await login(server, api_key=ADMIN_KEY)
    row = await the_session(server, token)
    earlier = clock.real_now() - timedelta(minutes=30)
    await set_session_times(server, row.id, last_seen_at=earlier)
    response = await server.client.post(
        "/v1/admin/products",
        json=PRODUCT,
        headers={**cookie(token), "Origin": "https://evil.example"},
    )
    assert_error(response, 403, "forbidden", "forbidden")
    assert (await the_session(server, token)).last_seen_at == earlier


async def test_forwarded_host_is_believed_from_a_trusted_proxy_only(make_server: Any) -> None:
    headers = {
        "Origin": "https://admin.example",
        "Host": "10.0.0.2:8080",
        "X-Forwarded-Host": "admin.example",
    }
    for proxies, expected in (("203.0.113.7", 200), ("", 403)):
        server = await make_server(KEYSAT_TRUSTED_PROXIES=proxies)
        token = await login(server, api_key=ADMIN_KEY)
        assert (
            await csrf_case(server, token, headers, json={**PRODUCT, "slug": f"p{expected}"})
            == expected
        )


# --- logout and status -----------------------------------------------------------------------


async def test_logout_ends_the_session_after_the_csrf_check(server: Any) -> None:
    token = await login(server, api_key=ADMIN_KEY)
    response = await server.client.post(
        "/admin/logout", headers={**cookie(token), "Origin": "https://evil.example"}
    )
    assert_error(response, 403, "forbidden")
    assert len(await session_rows(server)) == 1
    response = await server.client.post(
        "/admin/logout",
        headers={**cookie(token), "content-type": "application/x-www-form-urlencoded"},
        content=b"",
    )
    assert_error(response, 403, "forbidden")

    csrf = await csrf_token(server, token)
    response = await server.client.post(
        "/admin/logout",
        headers={**cookie(token), "content-type": "application/x-www-form-urlencoded"},
        content=f"csrf_token={csrf}".encode(),
    )
    # The sign-out button's form post lands on the login page (web.md 11.1).
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login?signed_out=1"
    assert response.headers["set-cookie"] == CLEARING
    assert await session_rows(server) == []
    assert (await server.client.get("/v1/admin/audit", headers=cookie(token))).status_code == 401

    # Idempotent: no cookie, or a session that is gone, still answers 204 and clears.
    for headers in ({}, cookie(token), {"Cookie": "keysat_session=unknown"}):
        response = await server.client.post("/admin/logout", headers=headers)
        assert response.status_code == 204
        assert response.headers["set-cookie"] == CLEARING


async def test_logout_of_an_expired_session_still_checks_csrf(server: Any) -> None:
    token = await login(server, api_key=ADMIN_KEY)
    row = await the_session(server, token)
    await set_session_times(server, row.id, last_seen_at=clock.real_now() - timedelta(hours=3))
    response = await server.client.post(
        "/admin/logout", headers={**cookie(token), "Origin": "https://evil.example"}
    )
    assert_error(response, 403, "forbidden")
    response = await server.client.post(
        "/admin/logout", headers={**cookie(token), "Origin": ORIGIN}
    )
    assert response.status_code == 204
    assert await session_rows(server) == []


async def test_status_reports_the_password_and_the_session(server: Any) -> None:
    response = await server.client.get("/admin/login/status")
    assert response.status_code == 200
    assert response.json() == {"has_password": False, "logged_in": False}
    assert response.headers["cache-control"] == "no-store"
    await set_password(server, PASSWORD)
    token = await login(server, password=PASSWORD)
    row = await the_session(server, token)
    earlier = clock.real_now() - timedelta(minutes=10)
    await set_session_times(server, row.id, last_seen_at=earlier)
    status = (await server.client.get("/admin/login/status", headers=cookie(token))).json()
    assert status == {"has_password": True, "logged_in": True, "csrf_token": row.csrf_token}
    # Status counts as activity.
    assert (await the_session(server, token)).last_seen_at > earlier
    # A bearer header does not log the status in.
    assert (await server.client.get("/admin/login/status", headers=bearer(ADMIN_KEY))).json() == {
        "has_password": True,
        "logged_in": False,
    }


# --- public routes and the reaper ------------------------------------------------------------


async def test_public_routes_ignore_credentials(server: Any) -> None:
    token = await login(server, api_key=ADMIN_KEY)
    plain_catalog = await server.client.get("/v1/products")
    plain_validate = await server.client.post("/v1/validate", json={"key": "LIC1-x"})
    assert plain_catalog.status_code == 200 and plain_validate.status_code == 200
    for headers in (
        {"Authorization": "Basic garbage"},
        {"Authorization": "Bearer unknown"},
        {"Cookie": "keysat_session=unknown"},
        cookie(token),
    ):
        catalog = await server.client.get("/v1/products", headers=headers)
        assert (catalog.status_code, catalog.json()) == (200, plain_catalog.json())
        validate = await server.client.post("/v1/validate", json={"key": "LIC1-x"}, headers=headers)
        assert (validate.status_code, validate.json()) == (200, plain_validate.json())


async def test_the_reaper_deletes_sessions_past_either_limit(server: Any) -> None:
    live = await login(server, api_key=ADMIN_KEY)
    idle = await login(server, api_key=ADMIN_KEY)
    old = await login(server, api_key=ADMIN_KEY)
    now = clock.real_now()
    await set_session_times(
        server,
        (await the_session(server, idle)).id,
        last_seen_at=now - timedelta(hours=2, seconds=1),
    )
    await set_session_times(
        server, (await the_session(server, old)).id, expires_at=now - timedelta(seconds=1)
    )
    response = await server.admin_post("/v1/admin/jobs/session_reaper/run")
    assert response.status_code == 200 and response.json()["last_status"] == "ok"
    assert [row.token_hash for row in await session_rows(server)] == [
        hashlib.sha256(live.encode()).hexdigest()
    ]


async def test_the_reaper_reads_the_clock_the_store_was_given(server: Any) -> None:
    await login(server, api_key=ADMIN_KEY)
    [row] = await session_rows(server)
    settings, master = server.state.settings, server.state.master_key.hash
    just_before = Sessions(
        server.state.db,
        settings,
        master,
        now=lambda: row.last_seen_at + timedelta(hours=2) - timedelta(microseconds=1),
    )
    assert await just_before.reap() == 0
    at_idle_limit = Sessions(
        server.state.db, settings, master, now=lambda: row.last_seen_at + timedelta(hours=2)
    )
    assert await at_idle_limit.reap() == 1
    assert await session_rows(server) == []


async def test_a_database_error_never_carries_the_statement_values(server: Any) -> None:
    """Logged errors must not leak secrets (access.md 7): the engine hides parameters."""
    token = await login(server, api_key=ADMIN_KEY)
    row = await the_session(server, token)
    duplicate = WebSession(
        id="00000000-0000-4000-8000-000000000001",
        token_hash=row.token_hash,
        csrf_token="secret-csrf-value-that-must-not-leak",
        login_method="password",
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_seen_at=row.last_seen_at,
    )
    with pytest.raises(IntegrityError) as failed:
        async with server.state.db.write() as session:
            session.add(duplicate)
    assert "secret-csrf-value-that-must-not-leak" not in str(failed.value)


FORM = {"Origin": ORIGIN, "content-type": "application/x-www-form-urlencoded"}


@pytest.mark.parametrize(
    ("fields", "location"),
    [
        ({"next": "/admin/licenses?status=active"}, "/admin/licenses?status=active"),
        ({}, "/admin/"),
        ({"next": "https://evil.example/admin/"}, "/admin/"),
        ({"next": "//evil.example/admin/"}, "/admin/"),
        ({"next": "/v1/admin/api-keys"}, "/admin/"),
    ],
)
async def test_the_login_page_form_post_answers_303_to_a_safe_next_path(
    server: Any, fields: dict[str, str], location: str
) -> None:
    response = await server.client.post(
        "/admin/login", headers=FORM, data={"api_key": ADMIN_KEY, **fields}
    )
    assert response.status_code == 303
    assert response.headers["location"] == location
    token = session_token(response)
    server.client.cookies.clear()
    assert (await server.client.get("/v1/admin/audit", headers=cookie(token))).status_code == 200


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"api_key": "wrong"}, "method=api_key&error=wrong"),
        ({"password": "no password is set yet"}, "method=password&error=no_password"),
        ({}, "method=password&error=bad_request"),
    ],
)
async def test_a_refused_login_form_goes_back_to_the_login_page_naming_the_failure(
    server: Any, fields: dict[str, str], error: str
) -> None:
    response = await server.client.post(
        "/admin/login", headers=FORM, data={"next": "/admin/jobs", **fields}
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/login?next=%2Fadmin%2Fjobs&{error}"
    assert "set-cookie" not in response.headers
    assert await session_rows(server) == []
