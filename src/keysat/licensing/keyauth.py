"""License-key authentication: parse, load the signing key and the license, verify.

One query fetches the current signing key together with the license row (and, when a
fingerprint is given, that machine's active binding), so a validate costs a single read,
and an imported signing key is seen by every process at once.

On SQLite the query runs on a plain `sqlite3` connection, synchronously: a primary-key
read of a WAL database takes tens of microseconds, far less than one hop through the
async driver's thread, and WAL readers never wait for writers.
"""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.catalog.models import Policy, Product
from keysat.db import Database
from keysat.errors import unauthorized
from keysat.issuer.models import ServerKey
from keysat.issuer.service import IssuerKey, IssuerKeys
from keysat.keys import KeyFormatError, ParsedKey, parse_key
from keysat.licensing.models import License, Machine

VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True)
class LicenseSnapshot:
    """The license row as validate reads it."""

    id: str
    product_id: str
    policy_id: str | None
    status: str
    issued_at: datetime
    expires_at: datetime | None
    grace_seconds: int
    max_machines: int
    entitlements: list[str]
    is_trial: bool
    trial_started_at: datetime | None
    revocation_reason: str | None
    suspension_reason: str | None


@dataclass(frozen=True)
class KeyLookup:
    issuer: IssuerKey
    license: LicenseSnapshot | None
    product_slug: str | None
    allow_repeat_trials: bool
    active_machine_id: str | None


_LOOKUP = (
    sa.select(
        ServerKey.private_key_pem,
        ServerKey.public_key_pem,
        License.id,
        License.product_id,
        License.policy_id,
        License.status,
        License.issued_at,
        License.expires_at,
        License.grace_seconds,
        License.max_machines,
        License.entitlements,
        License.is_trial,
        License.trial_started_at,
        License.revocation_reason,
        License.suspension_reason,
        Product.slug,
        Policy.allow_repeat_trials,
        Machine.id,
    )
    .select_from(ServerKey)
    .outerjoin(License, License.id == sa.bindparam("license_id"))
    .outerjoin(Product, Product.id == License.product_id)
    .outerjoin(Policy, Policy.id == License.policy_id)
    .outerjoin(
        Machine,
        sa.and_(
            Machine.license_id == License.id,
            Machine.fingerprint_hash == sa.bindparam("fingerprint_hash", type_=sa.Text),
            Machine.deactivated_at.is_(None),
        ),
    )
    .where(ServerKey.id == 1)
)


def _timestamp(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value).astimezone(UTC)


def _lookup_from_row(row: Any, issuer_keys: IssuerKeys) -> KeyLookup:
    """Build the result from a row of either driver: typed values, or SQLite's raw text."""
    issuer = issuer_keys.load(row[0], row[1])
    if row[2] is None:
        return KeyLookup(issuer, None, None, False, None)
    entitlements = row[10] if isinstance(row[10], list) else json.loads(row[10])
    issued_at = _timestamp(row[6])
    assert issued_at is not None
    snapshot = LicenseSnapshot(
        id=str(row[2]),
        product_id=str(row[3]),
        policy_id=None if row[4] is None else str(row[4]),
        status=row[5],
        issued_at=issued_at,
        expires_at=_timestamp(row[7]),
        grace_seconds=int(row[8]),
        max_machines=int(row[9]),
        entitlements=list(entitlements),
        is_trial=bool(row[11]),
        trial_started_at=_timestamp(row[12]),
        revocation_reason=row[13],
        suspension_reason=row[14],
    )
    return KeyLookup(
        issuer=issuer,
        license=snapshot,
        product_slug=row[15],
        allow_repeat_trials=bool(row[16]),
        active_machine_id=None if row[17] is None else str(row[17]),
    )


async def lookup_key(
    session: AsyncSession,
    issuer_keys: IssuerKeys,
    license_id: str,
    fingerprint_hash: str | None = None,
) -> KeyLookup:
    params = {"license_id": license_id, "fingerprint_hash": fingerprint_hash}
    row = (await session.execute(_LOOKUP, params)).one()
    return _lookup_from_row(row, issuer_keys)


class KeyReader(Protocol):
    async def lookup(self, license_id: str, fingerprint_hash: str | None) -> KeyLookup: ...

    def close(self) -> None: ...


class SessionKeyReader:
    def __init__(self, db: Database, issuer_keys: IssuerKeys) -> None:
        self._db = db
        self._issuer_keys = issuer_keys

    async def lookup(self, license_id: str, fingerprint_hash: str | None) -> KeyLookup:
        async with self._db.read() as session:
            return await lookup_key(session, self._issuer_keys, license_id, fingerprint_hash)

    def close(self) -> None:
        """The session reader holds nothing of its own."""


class SqliteKeyReader:
    def __init__(self, path: str, issuer_keys: IssuerKeys) -> None:
        self._path = path
        self._issuer_keys = issuer_keys
        compiled = _LOOKUP.compile(dialect=sqlite_dialect.dialect())
        self._sql = str(compiled)
        self._order = list(compiled.positiontup or ())
        self._constants = dict(compiled.params)
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA query_only=1")
            connection.execute("PRAGMA busy_timeout=2000")
            self._connection = connection
        return self._connection

    async def lookup(self, license_id: str, fingerprint_hash: str | None) -> KeyLookup:
        values = {**self._constants, "license_id": license_id, "fingerprint_hash": fingerprint_hash}
        row = self._connect().execute(self._sql, [values[name] for name in self._order]).fetchone()
        if row is None:
            raise RuntimeError("the signing key row is missing")
        return _lookup_from_row(row, self._issuer_keys)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def key_reader(db: Database, issuer_keys: IssuerKeys) -> KeyReader:
    if db.sqlite_path is not None:
        return SqliteKeyReader(db.sqlite_path, issuer_keys)
    return SessionKeyReader(db, issuer_keys)


def signature_valid(issuer: IssuerKey, parsed: ParsedKey) -> bool:
    """Ed25519 over the exact payload bytes of the submitted key (license-keys.md 6)."""
    try:
        issuer.public_key.verify(parsed.signature, parsed.payload)
    except InvalidSignature:
        return False
    return True


class KeyCheck:
    """Parsing and signature checks, remembered for recently seen key strings.

    Both are pure functions of the key text (and of the signing key), and an app
    validates the same key over and over.
    """

    def __init__(self, size: int = VERIFIED_CACHE_SIZE) -> None:
        self._size = size
        self._parsed: OrderedDict[str, ParsedKey] = OrderedDict()
        self._verified: OrderedDict[tuple[str, str], bool] = OrderedDict()

    def parse(self, text: str) -> ParsedKey:
        parsed = self._parsed.get(text)
        if parsed is None:
            parsed = parse_key(text)  # raises KeyFormatError, which is never cached
            self._remember(self._parsed, text, parsed)
        else:
            self._parsed.move_to_end(text)
        return parsed

    def verified(self, text: str, parsed: ParsedKey, issuer: IssuerKey) -> bool:
        cache_key = (text, issuer.public_key_pem)
        valid = self._verified.get(cache_key)
        if valid is None:
            valid = signature_valid(issuer, parsed)
            self._remember(self._verified, cache_key, valid)
        else:
            self._verified.move_to_end(cache_key)
        return valid

    def _remember(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        cache[key] = value
        if len(cache) > self._size:
            cache.popitem(last=False)


async def lock_license(session: AsyncSession, license_id: str) -> License:
    """Hold the license row for the rest of the write transaction (a no-op on SQLite,
    whose write transactions already start with BEGIN IMMEDIATE)."""
    query = (
        sa.select(License)
        .where(License.id == license_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar_one()


async def buyer_license(session: AsyncSession, issuer_keys: IssuerKeys, text: str) -> License:
    """public-api.md 1.10 for the buyer routes (cancel, quotes, upgrades): a verified key
    of a license that is neither revoked nor suspended; every failure is the same 401."""
    try:
        parsed = parse_key(text)
    except KeyFormatError:
        raise unauthorized() from None
    if not signature_valid(await issuer_keys.current(session), parsed):
        raise unauthorized()
    row = await session.get(License, str(parsed.license_id))
    if (
        row is None
        or row.product_id != str(parsed.product_id)
        or row.revoked_at is not None
        or row.suspended_at is not None
    ):
        raise unauthorized()
    return row
