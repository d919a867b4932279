"""License-key authentication: parse, load the signing key and the license, verify.

One query fetches the current signing key together with the license row, so validate
costs a single read and an imported key is seen by every process at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from cryptography.exceptions import InvalidSignature
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.catalog.models import Policy, Product
from keysat.issuer.models import ServerKey
from keysat.issuer.service import IssuerKey, IssuerKeys
from keysat.keys import ParsedKey
from keysat.licensing.models import License


@dataclass(frozen=True)
class KeyLookup:
    issuer: IssuerKey
    license: License | None
    product_slug: str | None
    allow_repeat_trials: bool


async def lookup_key(
    session: AsyncSession, issuer_keys: IssuerKeys, parsed: ParsedKey
) -> KeyLookup:
    query = (
        sa.select(
            ServerKey.private_key_pem,
            ServerKey.public_key_pem,
            License,
            Product.slug,
            Policy.allow_repeat_trials,
        )
        .select_from(ServerKey)
        .outerjoin(License, License.id == str(parsed.license_id))
        .outerjoin(Product, Product.id == License.product_id)
        .outerjoin(Policy, Policy.id == License.policy_id)
        .where(ServerKey.id == 1)
    )
    row = (await session.execute(query)).one()
    return KeyLookup(
        issuer=issuer_keys.load(row[0], row[1]),
        license=row[2],
        product_slug=row[3],
        allow_repeat_trials=bool(row[4]),
    )


def signature_valid(issuer: IssuerKey, parsed: ParsedKey) -> bool:
    """Ed25519 over the exact payload bytes of the submitted key (license-keys.md 6)."""
    try:
        issuer.public_key.verify(parsed.signature, parsed.payload)
    except InvalidSignature:
        return False
    return True


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
