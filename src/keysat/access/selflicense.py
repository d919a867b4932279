"""The server's own license (access.md 9.5-9.7): where it comes from, how it is verified
against the embedded trust root, and the refresh pass that decides the tier."""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key

from keysat.clock import clock
from keysat.db import Database
from keysat.keys import KeyFormatError, KeySignatureError, unix_seconds, verify_key
from keysat.licensing.models import License
from keysat.operator.service import get_setting
from keysat.settings import Settings

log = logging.getLogger(__name__)

# The Keysat trust root: genuine Keysat self-licenses verify against it.
TRUST_ROOT_SPKI = "MCowBQYDK2VwAyEAgsromMy4osMJplX1rY0fd4ouS6wfkm/vfeY2gXEQHkA="
STORED_KEY_SETTING = "self_license_key"
NO_LICENSE = "no license configured; running Creator (free) tier"


def trust_root() -> Ed25519PublicKey:
    key = load_der_public_key(base64.b64decode(TRUST_ROOT_SPKI))
    assert isinstance(key, Ed25519PublicKey)
    return key


@dataclass(frozen=True)
class SelfLicense:
    """`licensed` with its facts, or unlicensed with the reason."""

    licensed: bool
    reason: str | None = None
    license_id: str | None = None
    product_id: str | None = None
    expires_at: int = 0
    entitlements: tuple[str, ...] = field(default_factory=tuple)
    source: str | None = None


UNLICENSED = SelfLicense(licensed=False, reason=NO_LICENSE)


def verify_self_license(
    text: str, root: Ed25519PublicKey, now_unix: int, source: str
) -> SelfLicense:
    """access.md 9.6: signature against the trust root, expiry without grace, any product."""
    try:
        parsed = verify_key(text.strip(), root)
    except (KeyFormatError, KeySignatureError) as exc:
        return SelfLicense(licensed=False, reason=f"verification failed: {exc}")
    if parsed.expires_at != 0 and now_unix >= parsed.expires_at:
        return SelfLicense(licensed=False, reason="verification failed: the license has expired")
    return SelfLicense(
        licensed=True,
        license_id=str(parsed.license_id),
        product_id=str(parsed.product_id),
        expires_at=parsed.expires_at,
        entitlements=parsed.entitlements,
        source=source,
    )


def narrowed_by_row(state: SelfLicense, row: License, now_unix: int) -> SelfLicense:
    """On the instance that issued the key, its row may revoke, expire or narrow it."""
    if row.status in ("revoked", "suspended"):
        return SelfLicense(licensed=False, reason=f"license {row.status}")
    if row.expires_at is not None and unix_seconds(row.expires_at) + row.grace_seconds <= now_unix:
        return SelfLicense(licensed=False, reason="license expired")
    granted = set(row.entitlements)
    return SelfLicense(
        licensed=True,
        license_id=state.license_id,
        product_id=state.product_id,
        expires_at=unix_seconds(row.expires_at) if row.expires_at is not None else 0,
        entitlements=tuple(e for e in state.entitlements if e in granted),
        source=state.source,
    )


def _read_license_file(path: Path) -> str | None:
    if not path.is_file():
        return None
    return path.read_text(errors="replace").strip() or None


class SelfLicensing:
    """Holds this process's view of the self-license; `refresh` re-evaluates it."""

    def __init__(self, db: Database, settings: Settings, root: Ed25519PublicKey) -> None:
        self._db = db
        self._settings = settings
        self._root = root
        self.current = UNLICENSED

    async def _source(self) -> tuple[str, str] | None:
        if self._settings.self_license:
            return self._settings.self_license, "env"
        async with self._db.read() as session:
            stored = await get_setting(session, STORED_KEY_SETTING)
        if stored and stored.strip():
            return stored, "stored"
        text = await asyncio.to_thread(_read_license_file, self._settings.license_file)
        return (text, "file") if text else None

    async def refresh(self) -> SelfLicense:
        try:
            self.current = await self._evaluate()
        except Exception:
            log.exception("self-license refresh failed; keeping the previous state")
        return self.current

    async def _evaluate(self) -> SelfLicense:
        source = await self._source()
        if source is None:
            return UNLICENSED
        now_unix = unix_seconds(clock.real_now())
        state = verify_self_license(source[0], self._root, now_unix, source[1])
        if not state.licensed or state.license_id is None:
            return state
        async with self._db.read() as session:
            row = await session.get(License, state.license_id)
        return narrowed_by_row(state, row, now_unix) if row is not None else state
