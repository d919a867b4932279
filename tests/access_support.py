"""Helpers for tests of scoped API keys and web sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import sqlalchemy as sa

from keysat.access.models import ScopedApiKey, WebSession

ORIGIN = "http://keysat.test"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def cookie(token: str) -> dict[str, str]:
    return {"Cookie": f"keysat_session={token}"}


async def create_key(
    server: Any, role: str, scopes: list[str] | None = None, label: str | None = None
) -> dict[str, Any]:
    """POST /v1/admin/api-keys with the master key; the response, token included."""
    body: dict[str, Any] = {"label": label or f"{role} key", "role": role}
    if scopes is not None:
        body["scopes"] = scopes
    response = await server.admin_post("/v1/admin/api-keys", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def set_password(server: Any, password: str) -> None:
    response = await server.admin_post("/v1/admin/web-password", {"password": password})
    assert response.status_code == 200, response.text


def session_token(response: httpx.Response) -> str:
    """The raw token of a login's Set-Cookie header."""
    header = response.headers["set-cookie"]
    name, _, rest = header.partition("=")
    assert name == "keysat_session"
    return rest.split(";", 1)[0]


async def login(server: Any, headers: dict[str, str] | None = None, **body: str) -> str:
    """Log in and return the session token; the client's own cookie jar is left empty so
    every test sends the cookie it means to send."""
    response = await server.client.post(
        "/admin/login", json=body, headers={"Origin": ORIGIN, **(headers or {})}
    )
    assert response.status_code == 204, response.text
    server.client.cookies.clear()
    return session_token(response)


async def csrf_token(server: Any, token: str) -> str:
    response = await server.client.get("/admin/login/status", headers=cookie(token))
    assert response.json()["logged_in"] is True
    return str(response.json()["csrf_token"])


async def key_row(server: Any, key_id: str) -> ScopedApiKey:
    async with server.state.db.read() as session:
        row = await session.get(ScopedApiKey, key_id)
    assert row is not None
    return row


async def session_rows(server: Any) -> list[WebSession]:
    async with server.state.db.read() as session:
        query = sa.select(WebSession).order_by(WebSession.created_at)
        return list((await session.execute(query)).scalars())


async def set_session_times(server: Any, session_id: str, **times: datetime) -> None:
    """Move a session's stored timestamps, as if it had been used or created earlier."""
    async with server.state.db.write() as session:
        await session.execute(
            sa.update(WebSession).where(WebSession.id == session_id).values(**times)
        )
