"""No credential reaches the server's log, even at debug level with the access log on
(access.md 7; DECISIONS.md 2.16): a real `keysat serve` is driven through a password login,
a master-key login, session calls with their CSRF token, a scoped key and a logout, and the
whole log is then searched for every raw secret it saw."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from e2e.harness import ADMIN_KEY, launch_server

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple"
CALLBACK_SECRET = "btcpay-api-key-in-a-query-string-0123456789"


def login(client: httpx.Client, body: dict[str, str]) -> tuple[str, str]:
    """Log the client in: (raw session token, CSRF token)."""
    response = client.post("/admin/login", json=body, headers={"Origin": str(client.base_url)})
    assert response.status_code == 204, response.text
    token = client.cookies["keysat_session"]
    status = client.get("/admin/login/status").json()
    assert status["logged_in"] is True
    return token, status["csrf_token"]


def test_no_token_or_key_appears_in_a_debug_log(tmp_path: Path) -> None:
    secrets: list[str] = [ADMIN_KEY, PASSWORD, CALLBACK_SECRET]
    with launch_server(tmp_path, {"KEYSAT_LOG_LEVEL": "debug"}) as server:
        base = server.base_url
        assert server.admin.post("/v1/admin/web-password", json={"password": PASSWORD}).is_success
        created = server.admin.post(
            "/v1/admin/api-keys", json={"label": "support desk", "role": "support"}
        ).json()
        secrets.append(created["token"])

        with httpx.Client(base_url=base, timeout=15.0) as scoped:
            headers = {"Authorization": f"Bearer {created['token']}"}
            assert scoped.get("/v1/admin/licenses/summary", headers=headers).status_code == 200
            assert scoped.post("/v1/admin/api-keys", headers=headers, json={}).status_code == 403

        with httpx.Client(base_url=base, timeout=15.0) as by_password:
            token, csrf = login(by_password, {"password": PASSWORD})
            secrets += [token, csrf]
            response = by_password.post(
                "/v1/admin/products",
                json={"slug": "logged", "name": "Logged", "price_sats": 1000},
                headers={"X-CSRF-Token": csrf},
            )
            assert response.status_code == 200, response.text
            assert by_password.post("/admin/logout", headers={"Origin": base}).status_code == 204

        with httpx.Client(base_url=base, timeout=15.0) as by_key:
            token, csrf = login(by_key, {"api_key": ADMIN_KEY})
            secrets += [token, csrf]
            assert by_key.get("/v1/admin/api-keys").status_code == 200
            assert by_key.get("/v1/admin/audit", params={"limit": "5"}).status_code == 200

        with httpx.Client(base_url=base, timeout=15.0) as anonymous:
            failed = anonymous.post("/admin/login", json={"api_key": created["token"]})
            assert failed.status_code == 401
            # A secret in a query string: the access log keeps the path only.
            anonymous.get(
                "/v1/btcpay/authorize/callback",
                params={"state": "unknown", "apiKey": CALLBACK_SECRET},
            )

    log = server.log_path.read_text()
    # The access log was really on: the requests above are in it.
    assert '"POST /admin/login HTTP/1.1" 204' in log
    assert '"GET /v1/admin/audit HTTP/1.1" 200' in log
    assert '"GET /v1/btcpay/authorize/callback HTTP/1.1"' in log
    leaked = [secret[:6] + "…" for secret in secrets if secret in log]
    assert leaked == []
