"""The web UI password and logging in (access.md 6.1, 6.3).

The password is hashed with Argon2id; hashing and verifying take tens of milliseconds of
CPU, so they run in a worker thread and never stall the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from keysat.access.actor import Actor
from keysat.access.service import MasterKey
from keysat.access.sessions import Sessions
from keysat.db import Database
from keysat.errors import ApiError, bad_request, unauthorized
from keysat.operator.service import get_setting, put_setting, record_audit

PASSWORD_SETTING = "web_ui_password_hash"  # noqa: S105 - a settings key, not a secret
PASSWORD_MIN = 12
PASSWORD_MAX = 1024

# RFC 9106's second recommended option, as Keysat 0.2.0 used: 19 MiB, 2 passes, 1 lane.
HASHER = PasswordHasher(
    time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
)


def check_password_length(password: str) -> None:
    """Counted in code points (Keysat 0.2.0 counted UTF-8 bytes)."""
    if len(password) < PASSWORD_MIN:
        raise bad_request(f"password must be at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise bad_request(f"password must be at most {PASSWORD_MAX} characters")


def password_matches(stored_hash: str, password: str) -> bool:
    """Any Argon2 PHC string verifies with the parameters it carries, so hashes imported
    from Keysat 0.2.0 keep working."""
    try:
        return HASHER.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def no_password() -> ApiError:
    return ApiError(
        503,
        "service_unavailable",
        "service unavailable: no web password is set; set one with POST /v1/admin/web-password "
        "or log in with the admin API key",
    )


def login_credentials(body: dict[str, Any]) -> tuple[str, str]:
    """(method, secret) from a body holding exactly one of `password` and `api_key`."""
    given = [name for name in ("password", "api_key") if name in body]
    if len(given) != 1:
        raise bad_request("send exactly one of 'password' and 'api_key'")
    [method] = given
    secret = body[method]
    if not isinstance(secret, str):
        raise bad_request(f"field '{method}' must be a string")
    return method, secret


async def has_password(db: Database) -> bool:
    async with db.read() as session:
        return await get_setting(session, PASSWORD_SETTING) is not None


async def set_password(db: Database, actor: Actor, password: str) -> None:
    """Store a new hash and end every session, so a leaked session dies with the old
    password."""
    check_password_length(password)
    phc = await asyncio.to_thread(HASHER.hash, password)
    async with db.write() as session:
        await put_setting(session, PASSWORD_SETTING, phc)
        await Sessions.delete_all(session)
        record_audit(
            session, actor, "web_ui.set_password", "settings", PASSWORD_SETTING, {"ok": True}
        )


async def login(
    db: Database, sessions: Sessions, master: MasterKey, actor: Actor, method: str, secret: str
) -> str:
    """Check the password or the master key and open a session; the raw token is returned
    for the cookie and written nowhere else. `actor` carries the client's address."""
    if method == "password":
        async with db.read() as session:
            stored = await get_setting(session, PASSWORD_SETTING)
        if stored is None:
            raise no_password()
        accepted = await asyncio.to_thread(password_matches, stored, secret)
    else:
        # Only the master key: scoped keys are for scripts, never for a browser session.
        accepted = master.matches(secret)
    if not accepted:
        async with db.write() as session:
            record_audit(
                session,
                actor,
                "web_ui.login_failed",
                "settings",
                PASSWORD_SETTING,
                {"method": method},
            )
        raise unauthorized()
    row, token = sessions.new(method, actor.request_ip, actor.user_agent)
    async with db.write() as session:
        session.add(row)
        record_audit(
            session,
            replace(actor, id=row.id),
            "web_ui.login_ok",
            "session",
            row.id,
            {"method": method},
        )
    return token
