"""Credentials and gates for `/v1/admin/*` (access.md 3, 5).

Only the master key exists so far. Scoped API keys and web sessions plug in as further
credential kinds in `authenticate`; the gates already name the scope each route needs.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from starlette.requests import Request

from keysat.access.actor import Actor
from keysat.access.client import client_address
from keysat.errors import forbidden, unauthorized
from keysat.settings import Settings

USER_AGENT_MAX = 512


@dataclass(frozen=True)
class Credential:
    actor: Actor
    is_master: bool
    scopes: frozenset[str]

    def allows(self, scope: str | None) -> bool:
        return self.is_master or (scope is not None and scope in self.scopes)


class MasterKey:
    def __init__(self, key: str) -> None:
        self._key = key.encode()
        self.hash = hashlib.sha256(self._key).hexdigest()

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(self._key, token.encode())


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    if not header.isascii() or not header.startswith("Bearer ") or len(header) == len("Bearer "):
        raise unauthorized()
    return header[len("Bearer ") :]


def request_actor(request: Request, settings: Settings, kind: str, **identity: str | None) -> Actor:
    agent = request.headers.get("user-agent")
    return Actor(
        kind=kind,
        hash=identity.get("hash"),
        id=identity.get("id"),
        request_ip=client_address(request, settings.trusted_proxies),
        user_agent=agent[:USER_AGENT_MAX] if agent else None,
    )


def authenticate(request: Request, settings: Settings, master: MasterKey) -> Credential:
    token = bearer_token(request)
    if token is None:
        raise unauthorized()
    if master.matches(token):
        actor = request_actor(request, settings, "admin_api_key", hash=master.hash, id="master")
        return Credential(actor=actor, is_master=True, scopes=frozenset())
    raise forbidden()


def authorize(credential: Credential, scope: str | None) -> Actor:
    """`scope=None` is the master gate."""
    if not credential.allows(scope):
        raise forbidden()
    return credential.actor
