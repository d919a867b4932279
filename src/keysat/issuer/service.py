"""The installation's Ed25519 signing key: created on first start, exported, imported."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import Actor
from keysat.clock import now
from keysat.db import Database
from keysat.errors import bad_request, conflict, service_unavailable
from keysat.issuer.models import ServerKey
from keysat.keys.signing import (
    KeyFileError,
    check_key_pair,
    generate_private_key,
    load_private_key_pem,
    private_key_to_pem,
    public_key_to_pem,
)
from keysat.licensing.models import License
from keysat.operator.service import record_audit


@dataclass(frozen=True)
class IssuerKey:
    private_key: Ed25519PrivateKey
    public_key: Ed25519PublicKey
    private_key_pem: str
    public_key_pem: str


class IssuerKeys:
    """Loaded key pairs by stored PEM text.

    Callers read the stored PEM with every use, so an imported key takes effect at once in
    every process, while the PEM parsing and the pair check happen once per key.
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, str], IssuerKey] = {}

    def load(self, private_key_pem: str, public_key_pem: str) -> IssuerKey:
        cache_key = (private_key_pem, public_key_pem)
        key = self._loaded.get(cache_key)
        if key is None:
            private_key = check_key_pair(private_key_pem, public_key_pem)
            key = IssuerKey(
                private_key=private_key,
                public_key=private_key.public_key(),
                private_key_pem=private_key_pem,
                public_key_pem=public_key_pem,
            )
            self._loaded = {cache_key: key}
        return key

    async def current(self, session: AsyncSession) -> IssuerKey:
        row = await session.get(ServerKey, 1, populate_existing=True)
        if row is None:
            raise service_unavailable("the signing key has not been created yet")
        return self.load(row.private_key_pem, row.public_key_pem)


async def ensure_signing_key(db: Database, keys: IssuerKeys) -> IssuerKey:
    """Create the key pair on first start; refuse to start on a mismatched stored pair."""
    async with db.write() as session:
        row = await session.get(ServerKey, 1)
        if row is None:
            private_key = generate_private_key()
            row = ServerKey(
                id=1,
                algorithm="ed25519",
                public_key_pem=public_key_to_pem(private_key.public_key()),
                private_key_pem=private_key_to_pem(private_key),
                created_at=now(),
            )
            session.add(row)
        return keys.load(row.private_key_pem, row.public_key_pem)


async def import_issuer_key(
    session: AsyncSession, keys: IssuerKeys, actor: Actor, pem_text: str
) -> IssuerKey:
    if not pem_text.strip():
        raise bad_request("the body must be a PEM private key")
    if "-----BEGIN" not in pem_text or "PRIVATE KEY-----" not in pem_text:
        raise bad_request("the body must be a PEM private key (-----BEGIN PRIVATE KEY-----)")
    try:
        private_key = load_private_key_pem(pem_text)
    except KeyFileError as exc:
        raise bad_request(f"not an Ed25519 PKCS#8 private key: {exc}") from None
    has_license = (await session.execute(sa.select(License.id).limit(1))).first() is not None
    if has_license:
        raise conflict(
            "licenses already exist; importing another signing key would invalidate every "
            "key already issued"
        )
    private_pem = private_key_to_pem(private_key)
    public_pem = public_key_to_pem(private_key.public_key())
    row = await session.get(ServerKey, 1)
    if row is None:
        session.add(
            ServerKey(
                id=1,
                algorithm="ed25519",
                public_key_pem=public_pem,
                private_key_pem=private_pem,
                created_at=now(),
            )
        )
    else:
        row.private_key_pem = private_pem
        row.public_key_pem = public_pem
        row.created_at = now()
    record_audit(
        session,
        actor,
        "issuer_key.import",
        "server_key",
        None,
        {"public_key_pem": public_pem, "note": "master-bootstrap import"},
    )
    return keys.load(private_pem, public_pem)


async def export_issuer_key(session: AsyncSession, keys: IssuerKeys, actor: Actor) -> IssuerKey:
    key = await keys.current(session)
    record_audit(
        session,
        actor,
        "issuer_key.export",
        "server_key",
        None,
        {"public_key_pem": key.public_key_pem},
    )
    return key
