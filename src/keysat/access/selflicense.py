"""The server's own license (access.md 9.5-9.7): where it comes from, how it is verified
against the embedded trust root, and the refresh pass that decides the tier."""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.background import Repeating
from keysat.clock import clock
from keysat.db import Database
from keysat.keys import KeyFormatError, KeySignatureError, ParsedKey, unix_seconds, verify_key
from keysat.licensing.models import License
from keysat.operator.models import Setting
from keysat.settings import Settings

log = logging.getLogger(__name__)

# The Keysat trust root: genuine Keysat self-licenses verify against it.
TRUST_ROOT_SPKI = "MCowBQYDK2VwAyEAgsromMy4osMJplX1rY0fd4ouS6wfkm/vfeY2gXEQHkA="
STORED_KEY_SETTING = "self_license_key"
NO_LICENSE = "no license configured; running Creator (free) tier"
REFRESH_INTERVAL = timedelta(hours=1)
NOTICE_SECONDS = 30.0


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


class InvalidSelfLicense(Exception):
    """A key the trust root does not vouch for, or one that has expired."""


def check_self_license(text: str, root: Ed25519PublicKey, now_unix: int) -> ParsedKey:
    """access.md 9.6: signature against the trust root, expiry without grace, any product."""
    try:
        parsed = verify_key(text.strip(), root)
    except (KeyFormatError, KeySignatureError) as exc:
        raise InvalidSelfLicense(str(exc)) from None
    if parsed.expires_at != 0 and now_unix >= parsed.expires_at:
        raise InvalidSelfLicense("the license has expired")
    return parsed


def verify_self_license(
    text: str, root: Ed25519PublicKey, now_unix: int, source: str
) -> SelfLicense:
    try:
        parsed = check_self_license(text, root, now_unix)
    except InvalidSelfLicense as exc:
        return SelfLicense(licensed=False, reason=f"verification failed: {exc}")
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
    """Holds this process's view of the self-license; `refresh` re-evaluates it.

    Other processes activate keys through the shared settings table. `notice(at)` is the
    cheap check that lets this process follow them: it reads only the stored key's
    `updated_at` and refreshes when that differs from what the last refresh saw, or when the
    last refresh is an hour old (the lease-holding job may be ticking in another process).
    `start()` runs it every 30 s in every process, workers or not.
    """

    def __init__(self, db: Database, settings: Settings, root: Ed25519PublicKey) -> None:
        self._db = db
        self._settings = settings
        self.root = root
        self.current = UNLICENSED
        self._seen_stamp: datetime | None = None
        self._refreshed_at: datetime | None = None
        self._lock = asyncio.Lock()
        self.follower = Repeating("self-license-notice", NOTICE_SECONDS, self.notice_now)

    async def refresh(self) -> SelfLicense:
        async with self._lock:
            try:
                self.current, self._seen_stamp = await self._evaluate()
            except Exception:
                log.exception("self-license refresh failed; keeping the previous state")
            # A failed pass counts too: the next hourly attempt is an hour away, not 30 s.
            self._refreshed_at = clock.real_now()
        return self.current

    async def notice(self, at: datetime) -> bool:
        """Refresh when the stored key changed or the state is an hour old; True if it did."""
        async with self._db.read() as session:
            stamp = await self._stored_stamp(session)
        stale = self._refreshed_at is None or at - self._refreshed_at >= REFRESH_INTERVAL
        if stamp == self._seen_stamp and not stale:
            return False
        await self.refresh()
        return True

    async def notice_now(self) -> bool:
        return await self.notice(clock.real_now())

    @staticmethod
    async def _stored_stamp(session: AsyncSession) -> datetime | None:
        query = sa.select(Setting.updated_at).where(Setting.key == STORED_KEY_SETTING)
        return (await session.execute(query)).scalar_one_or_none()

    async def _evaluate(self) -> tuple[SelfLicense, datetime | None]:
        """The state from the sources of access.md 9.5, and the stored key's stamp."""
        async with self._db.read() as session:
            stored = await session.get(Setting, STORED_KEY_SETTING)
        stamp = stored.updated_at if stored is not None else None
        if self._settings.self_license:
            source: tuple[str, str] | None = (self._settings.self_license, "env")
        elif stored is not None and stored.value and stored.value.strip():
            source = (stored.value, "stored")
        else:
            text = await asyncio.to_thread(_read_license_file, self._settings.license_file)
            source = (text, "file") if text else None
        if source is None:
            return UNLICENSED, stamp
        now_unix = unix_seconds(clock.real_now())
        state = verify_self_license(source[0], self.root, now_unix, source[1])
        if not state.licensed or state.license_id is None:
            return state, stamp
        async with self._db.read() as session:
            row = await session.get(License, state.license_id)
        return (narrowed_by_row(state, row, now_unix) if row is not None else state), stamp
