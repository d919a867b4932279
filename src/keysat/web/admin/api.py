"""The admin UI's only way to read or change anything: the admin JSON API, called in-process
with the operator's own session (web.md 11.1: the UI has no powers of its own).

Every screen goes through the same routes, validation, gates and audit rows as a script
would, so the UI and the API cannot drift. The call carries the session cookie, the
session's CSRF token and our own origin, and the browser's address and user agent, so the
audit log names the web session and the operator's address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import Request

from keysat.access.client import client_address
from keysat.access.models import WebSession
from keysat.access.sessions import CSRF_HEADER, SESSION_COOKIE, cookie_token
from keysat.state import app_state


@dataclass(frozen=True)
class Answer:
    """One admin API answer: its status and its decoded JSON body (`{}` when empty)."""

    status: int
    body: Any = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        if isinstance(self.body, dict) and isinstance(self.body.get("message"), str):
            return str(self.body["message"])
        return f"The server answered {self.status}."

    @property
    def error(self) -> str | None:
        return str(self.body.get("error")) if isinstance(self.body, dict) else None

    @property
    def upgrade_url(self) -> str | None:
        """Set on a `402` that an upgrade lifts (web.md 11.4)."""
        if self.status == 402 and isinstance(self.body, dict):
            url = self.body.get("upgrade_url")
            return url if isinstance(url, str) else None
        return None


class ApiFailure(Exception):
    """A read the page cannot do without failed; the page shows the server's message."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.message)
        self.answer = answer


class AdminApi:
    def __init__(self, request: Request, session: WebSession) -> None:
        state = app_state(request)
        self._app = request.app
        self._origin = state.sessions.public_origin
        address = client_address(request, state.settings.trusted_proxies) or "127.0.0.1"
        self._client = (address, 0)
        headers = {"Origin": self._origin, CSRF_HEADER: session.csrf_token}
        token = cookie_token(request)
        if token is not None:
            headers["Cookie"] = f"{SESSION_COOKIE}={token}"
        agent = request.headers.get("user-agent")
        if agent is not None:
            headers["User-Agent"] = agent
        self._headers = headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        text: str | None = None,
    ) -> Answer:
        query = {name: value for name, value in (params or {}).items() if value is not None}
        headers = dict(self._headers)
        if text is not None:
            # The few endpoints whose body is not JSON (a PEM key) take plain text.
            headers["Content-Type"] = "text/plain; charset=utf-8"
        transport = httpx.ASGITransport(app=self._app, client=self._client)
        async with httpx.AsyncClient(transport=transport, base_url=self._origin) as client:
            response = await client.request(
                method,
                path,
                json=json,
                content=text.encode("utf-8") if text is not None else None,
                params=query,
                headers=headers,
            )
        if not response.content:
            return Answer(response.status_code)
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text}
        return Answer(response.status_code, body)

    async def get(self, path: str, **params: Any) -> Any:
        """A read the page needs; any failure ends the page with the server's message."""
        answer = await self.call("GET", path, params=params)
        if not answer.ok:
            raise ApiFailure(answer)
        return answer.body

    async def send(self, method: str, path: str, body: Any = None, **params: Any) -> Answer:
        return await self.call(method, path, json=body, params=params)
