"""Credentials and gates for `/v1/admin/*` (access.md 3, 5, 7) and scoped API keys (4).

A request is authenticated by its `Authorization` header when it has one (the master key
or a `ks_…` key), otherwise by the `keysat_session` cookie. Authorization is then a pure
check of the resulting credential against the route's gate.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request

from keysat.access.actor import Actor
from keysat.access.client import client_address
from keysat.access.models import ScopedApiKey
from keysat.access.scopes import ScopeError, granted_scopes, normalize_extra_scopes, parse_role
from keysat.access.sessions import Sessions
from keysat.access.tokens import new_secret, sha256_hex
from keysat.clock import clock
from keysat.db import Database
from keysat.errors import bad_request, forbidden, not_found, unauthorized
from keysat.operator.service import record_audit
from keysat.settings import Settings
from keysat.wire import format_optional_ts, format_ts, new_id, normalize_id

log = logging.getLogger(__name__)

USER_AGENT_MAX = 512
KEY_PREFIX = "ks_"
LABEL_MAX = 80
# last_used_at is a hint for the operator, not an audit trail: skip rewriting it more often.
LAST_USED_RESOLUTION = timedelta(seconds=60)


def new_api_key_token() -> str:
    """`ks_` and the unpadded URL-safe base64 of 32 random bytes: 46 characters."""
    return KEY_PREFIX + new_secret()


@dataclass(frozen=True)
class Credential:
    actor: Actor
    # The master key and web sessions pass every gate, master-only ones included.
    is_master: bool
    scopes: frozenset[str]
    key_id: str | None = None
    key_last_used_at: datetime | None = None

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


def authorize(credential: Credential, scope: str | None) -> Actor:
    """`scope=None` is the master gate."""
    if not credential.allows(scope):
        raise forbidden()
    return credential.actor


class Access:
    """Resolves the credential of an admin request (access.md 5.2, 5.5)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        master: MasterKey,
        sessions: Sessions,
        now: Callable[[], datetime] = clock.real_now,
    ) -> None:
        self._db = db
        self._settings = settings
        self._master = master
        self._sessions = sessions
        self._now = now

    async def authenticate(self, request: Request) -> Credential:
        token = bearer_token(request)
        if token is not None:
            # A header is the only credential looked at, even when it is not valid.
            return await self._bearer(request, token)
        row = await self._sessions.authenticate(request)
        actor = request_actor(request, self._settings, "web_ui", id=row.id)
        return Credential(actor=actor, is_master=True, scopes=frozenset())

    async def _bearer(self, request: Request, token: str) -> Credential:
        if self._master.matches(token):
            actor = request_actor(
                request, self._settings, "admin_api_key", hash=self._master.hash, id="master"
            )
            return Credential(actor=actor, is_master=True, scopes=frozenset())
        # Looked up by hash on every request, never cached, so a revocation applies at once.
        async with self._db.read() as session:
            row = (
                await session.execute(
                    sa.select(ScopedApiKey).where(ScopedApiKey.token_hash == sha256_hex(token))
                )
            ).scalar_one_or_none()
        if row is None:
            raise forbidden()
        revoked = row.revoked_at is not None
        scopes = frozenset() if revoked else granted_scopes(row.role, row.extra_scopes)
        actor = request_actor(
            request, self._settings, "scoped_api_key", hash=row.token_hash, id=row.id
        )
        return Credential(
            actor=actor,
            is_master=False,
            scopes=scopes,
            key_id=row.id,
            key_last_used_at=row.last_used_at,
        )

    async def record_use(self, credential: Credential) -> None:
        """Stamp a scoped key's last_used_at after it passed a gate; best-effort."""
        if credential.key_id is None:
            return
        at = self._now()
        last = credential.key_last_used_at
        if last is not None and at - last < LAST_USED_RESOLUTION:
            return
        try:
            async with self._db.write() as session:
                await session.execute(
                    sa.update(ScopedApiKey)
                    .where(ScopedApiKey.id == credential.key_id)
                    .values(last_used_at=at)
                )
        except SQLAlchemyError:
            log.warning("could not record the use of API key %s", credential.key_id, exc_info=True)

    # --- key management (admin-api.md 14) ------------------------------------------------

    async def create_key(
        self, actor: Actor, label: str, role: str, scopes: Sequence[str] | None
    ) -> tuple[ScopedApiKey, str]:
        """A new key and its raw token, which the caller shows once and never keeps."""
        label = label.strip()
        if not 1 <= len(label) <= LABEL_MAX:
            raise bad_request(f"label is required and must be at most {LABEL_MAX} characters")
        try:
            role = parse_role(role)
            extra = normalize_extra_scopes(scopes or ())
        except ScopeError as exc:
            raise bad_request(str(exc)) from None
        token = new_api_key_token()
        row = ScopedApiKey(
            id=new_id(),
            label=label,
            token_hash=sha256_hex(token),
            role=role,
            extra_scopes=extra or None,
            created_at=self._now(),
        )
        async with self._db.write() as session:
            session.add(row)
            record_audit(
                session,
                actor,
                "api_key.create",
                "api_key",
                row.id,
                {"label": label, "role": role, "scopes": extra},
            )
        return row, token

    async def list_keys(self) -> Sequence[ScopedApiKey]:
        async with self._db.read() as session:
            query = sa.select(ScopedApiKey).order_by(
                ScopedApiKey.created_at.desc(), ScopedApiKey.id.desc()
            )
            return (await session.execute(query)).scalars().all()

    async def revoke_key(self, actor: Actor, raw_id: str) -> dict[str, Any]:
        key_id = normalize_id(raw_id)
        async with self._db.write() as session:
            row = await session.get(ScopedApiKey, key_id) if key_id is not None else None
            if row is None:
                raise not_found(f"api_key '{raw_id}'")
            at = self._now()
            # Conditional, so two racing revocations audit once.
            result = await session.execute(
                sa.update(ScopedApiKey)
                .where(ScopedApiKey.id == row.id, ScopedApiKey.revoked_at.is_(None))
                .values(revoked_at=at)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return {"ok": True, "already_revoked": True}
            record_audit(session, actor, "api_key.revoke", "api_key", row.id, {})
        return {"ok": True, "revoked_at": format_ts(at)}


def extra_scopes_json(row: ScopedApiKey) -> list[str]:
    """What the key was granted on top of its role, as stored (`[]` for null)."""
    value = row.extra_scopes
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def api_key_json(row: ScopedApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "label": row.label,
        "role": row.role,
        "scopes": extra_scopes_json(row),
        "created_at": format_ts(row.created_at),
        "last_used_at": format_optional_ts(row.last_used_at),
        "revoked_at": format_optional_ts(row.revoked_at),
    }


def created_key_json(row: ScopedApiKey, token: str) -> dict[str, Any]:
    return {
        "id": row.id,
        "label": row.label,
        "role": row.role,
        "scopes": extra_scopes_json(row),
        "created_at": format_ts(row.created_at),
        "token": token,
    }
