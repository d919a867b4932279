"""License rules: manual issue, listing, search, status changes (admin-api.md 5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import Actor
from keysat.billing.models import Invoice
from keysat.catalog.models import Policy, Product
from keysat.catalog.service import check_entitlements, get_policy_by_slug, get_product_by_slug
from keysat.clock import now
from keysat.errors import bad_request, not_found
from keysat.issuer.service import IssuerKey
from keysat.keys import FLAG_TRIAL, ZERO_FINGERPRINT_HASH, ParsedKey, derive_key, unix_seconds
from keysat.licensing.keyauth import LicenseSnapshot
from keysat.licensing.models import License
from keysat.licensing.schemas import IssueLicenseRequest
from keysat.operator.service import record_audit
from keysat.webhooks.service import record_event
from keysat.wire import format_optional_ts, new_id, normalize_id, parse_ts

INT32_MAX = 2**31 - 1
SECONDS_PER_DAY = 86_400
INT64_MAX = 2**63 - 1
SEARCH_LIMIT = 100


def license_key(license_row: License | LicenseSnapshot, key: IssuerKey) -> str:
    """Keys are never stored: they are derived from the row, deterministically."""
    return derive_key(
        product_id=license_row.product_id,
        license_id=license_row.id,
        issued_at=license_row.issued_at,
        expires_at=license_row.expires_at,
        is_trial=license_row.is_trial,
        entitlements=license_row.entitlements,
        private_key=key.private_key,
    )


def key_is_current(parsed: ParsedKey, row: License | LicenseSnapshot) -> bool:
    """Would deriving the key from this row give back the submitted key?

    Equal fields give equal payload bytes, and Ed25519 signatures are deterministic, so
    this answers without signing anything.
    """
    expected_flags = FLAG_TRIAL if row.is_trial else 0
    return (
        parsed.version == 2
        and parsed.flags == expected_flags
        and parsed.fingerprint_hash == ZERO_FINGERPRINT_HASH
        and str(parsed.license_id) == row.id
        and str(parsed.product_id) == row.product_id
        and parsed.issued_at == unix_seconds(row.issued_at)
        and parsed.expires_at == (0 if row.expires_at is None else unix_seconds(row.expires_at))
        and list(parsed.entitlements) == list(row.entitlements)
    )


def normalize_email(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    email = value.strip()
    local, at, domain = email.partition("@")
    if not at or not local or not domain or "@" in domain:
        raise bad_request("buyer_email must look like name@example.com")
    return email


def blank_to_none(value: str | None) -> str | None:
    return value.strip() if value is not None and value.strip() else None


@dataclass(frozen=True)
class LicenseTerms:
    """What a manual issue grants: request fields over policy values over defaults."""

    expires_at: datetime | None
    grace_seconds: int
    max_machines: int
    is_trial: bool
    entitlements: list[str]


def manual_terms(
    request: IssueLicenseRequest, fields_sent: set[str], policy: Policy | None, at: datetime
) -> LicenseTerms:
    expires_at: datetime | None = None
    if policy is not None and policy.duration_seconds > 0:
        expires_at = at + timedelta(seconds=policy.duration_seconds)
    if "expires_at" in fields_sent:
        expires_at = (
            parse_ts("expires_at", request.expires_at) if request.expires_at is not None else None
        )
    grace = (
        request.grace_seconds
        if request.grace_seconds is not None
        else (policy.grace_seconds if policy else 0)
    )
    machines = (
        request.max_machines
        if request.max_machines is not None
        else (policy.max_machines if policy else 1)
    )
    if not 0 <= grace <= INT64_MAX:
        raise bad_request("grace_seconds must be 0 or more")
    if not 0 <= machines <= INT32_MAX:
        raise bad_request(f"max_machines must be between 0 (unlimited) and {INT32_MAX}")
    is_trial = (
        request.is_trial if request.is_trial is not None else (policy.is_trial if policy else False)
    )
    entitlements = (
        request.entitlements
        if request.entitlements is not None
        else (list(policy.entitlements) if policy else [])
    )
    return LicenseTerms(
        expires_at=expires_at,
        grace_seconds=grace,
        max_machines=machines,
        is_trial=is_trial,
        entitlements=check_entitlements(entitlements, distinct=False),
    )


async def issue_manual(
    session: AsyncSession, actor: Actor, request: IssueLicenseRequest, fields_sent: set[str]
) -> License:
    product = await get_product_by_slug(session, request.product_slug)
    if product is None:
        raise not_found(f"product '{request.product_slug}'")
    policy: Policy | None = None
    if request.policy_slug:
        policy = await get_policy_by_slug(session, product.id, request.policy_slug)
        if policy is None:
            raise not_found(f"policy '{request.policy_slug}' for product '{request.product_slug}'")
    at = now()
    terms = manual_terms(request, fields_sent, policy, at)
    row = License(
        id=new_id(),
        product_id=product.id,
        policy_id=policy.id if policy else None,
        invoice_id=None,
        status="active",
        issued_at=at,
        expires_at=terms.expires_at,
        grace_seconds=terms.grace_seconds,
        max_machines=terms.max_machines,
        entitlements=terms.entitlements,
        is_trial=terms.is_trial,
        trial_started_at=at if terms.is_trial else None,
        buyer_email=normalize_email(request.buyer_email),
        nostr_npub=blank_to_none(request.nostr_npub),
        license_metadata={"source": "admin_issue", "note": request.note},
        updated_at=at,
    )
    session.add(row)
    event = issued_event(row, "admin_issue")
    details = {key: event[key] for key in event if key not in ("license_id", "source")}
    record_audit(session, actor, "license.issue_manual", "license", row.id, details)
    record_event(session, "license.issued", event)
    return row


def first_cycle_days(policy: Policy, free_invoice: bool) -> tuple[int, bool]:
    """The first cycle of a recurring policy, and whether it is a trial (billing.md 4.4)."""
    if free_invoice and policy.trial_days > 0:
        return policy.trial_days, True
    return policy.renewal_period_days, False


def license_grace_seconds(policy: Policy | None) -> int:
    """Recurring licenses stay valid exactly until their subscription lapses."""
    if policy is None:
        return 0
    if policy.is_recurring:
        return policy.grace_period_days * SECONDS_PER_DAY
    return policy.grace_seconds


def purchase_terms(policy: Policy | None, free_invoice: bool, at: datetime) -> LicenseTerms:
    """What a bought (or free, trial or redeemed) license grants (billing.md 4.4)."""
    if policy is None:
        return LicenseTerms(
            expires_at=None, grace_seconds=0, max_machines=1, is_trial=False, entitlements=[]
        )
    is_trial = policy.is_trial
    if policy.is_recurring:
        days, trial_cycle = first_cycle_days(policy, free_invoice)
        expires_at: datetime | None = at + timedelta(days=days)
        is_trial = is_trial or trial_cycle
    elif policy.duration_seconds > 0:
        expires_at = at + timedelta(seconds=policy.duration_seconds)
    else:
        expires_at = None
    return LicenseTerms(
        expires_at=expires_at,
        grace_seconds=license_grace_seconds(policy),
        max_machines=policy.max_machines,
        is_trial=is_trial,
        entitlements=list(policy.entitlements or []),
    )


def issued_event(row: License, source: str) -> dict[str, Any]:
    return {
        "license_id": row.id,
        "product_id": row.product_id,
        "policy_id": row.policy_id,
        "is_trial": row.is_trial,
        "expires_at": format_optional_ts(row.expires_at),
        "entitlements": list(row.entitlements),
        "source": source,
    }


def issue_for_invoice(
    session: AsyncSession, invoice: Invoice, policy: Policy | None, *, sandbox: bool
) -> License:
    """The license a settled purchase invoice buys, with its `license.issued` event.

    The caller holds the invoice's settlement transaction; the unique `invoice_id` makes a
    second license for the same invoice impossible.
    """
    at = now()
    terms = purchase_terms(policy, invoice.provider_kind == "none", at)
    metadata: dict[str, Any] = {
        "source": "purchase",
        "btcpay_invoice_id": invoice.provider_invoice_id,
    }
    if sandbox:
        metadata["sandbox"] = True
    row = License(
        id=new_id(),
        product_id=invoice.product_id,
        policy_id=policy.id if policy else None,
        invoice_id=invoice.id,
        status="active",
        issued_at=at,
        expires_at=terms.expires_at,
        grace_seconds=terms.grace_seconds,
        max_machines=terms.max_machines,
        entitlements=terms.entitlements,
        is_trial=terms.is_trial,
        trial_started_at=at if terms.is_trial else None,
        buyer_email=invoice.buyer_email,
        license_metadata=metadata,
        updated_at=at,
    )
    session.add(row)
    record_event(
        session, "license.issued", {**issued_event(row, "purchase"), "invoice_id": invoice.id}
    )
    return row


async def trial_used_by_email(session: AsyncSession, product_id: str, email: str) -> bool:
    query = (
        sa.select(License.id)
        .where(
            License.product_id == product_id,
            License.trial_started_at.is_not(None),
            sa.func.lower(sa.func.trim(License.buyer_email)) == email.strip().lower(),
        )
        .limit(1)
    )
    return (await session.execute(query)).first() is not None


async def list_for_product(session: AsyncSession, product_id: str) -> Sequence[License]:
    query = (
        sa.select(License)
        .where(License.product_id == product_id)
        .order_by(License.issued_at.desc(), License.id)
    )
    return (await session.execute(query)).scalars().all()


@dataclass(frozen=True)
class SearchRow:
    license: License
    product_slug: str
    policy_slug: str | None
    policy_name: str | None


async def search(
    session: AsyncSession,
    *,
    buyer_email: str | None,
    nostr_npub: str | None,
    invoice_id: str | None,
) -> list[SearchRow]:
    query = (
        sa.select(License, Product.slug, Policy.slug, Policy.name)
        .join(Product, Product.id == License.product_id)
        .outerjoin(Policy, Policy.id == License.policy_id)
        .order_by(License.issued_at.desc(), License.id)
        .limit(SEARCH_LIMIT)
    )
    if buyer_email is not None:
        query = query.where(sa.func.lower(License.buyer_email) == buyer_email.strip().lower())
    if nostr_npub is not None:
        query = query.where(License.nostr_npub == nostr_npub)
    if invoice_id is not None:
        text = invoice_id.strip()
        matching = sa.select(Invoice.id).where(Invoice.provider_invoice_id == text)
        linked = sa.select(Invoice.subject_license_id).where(
            sa.or_(Invoice.provider_invoice_id == text, *_id_match(Invoice.id, text))
        )
        query = query.where(
            sa.or_(
                *_id_match(License.invoice_id, text),
                License.invoice_id.in_(matching),
                License.id.in_(linked),
            )
        )
    rows = (await session.execute(query)).all()
    return [SearchRow(row[0], row[1], row[2], row[3]) for row in rows]


def _id_match(column: Any, text: str) -> list[Any]:
    """Compare a uuid column only with well-formed ids (PostgreSQL refuses others)."""
    canonical = normalize_id(text)
    return [column == canonical] if canonical else []


async def summary(session: AsyncSession) -> dict[str, int]:
    at = now()
    by_status = dict(
        (
            await session.execute(
                sa.select(License.status, sa.func.count()).group_by(License.status)
            )
        ).all()
    )

    async def issued_since(delta: timedelta) -> int:
        query = sa.select(sa.func.count()).where(License.issued_at >= at - delta)
        return int((await session.execute(query)).scalar_one())

    return {
        "total": sum(by_status.values()),
        "active": by_status.get("active", 0),
        "suspended": by_status.get("suspended", 0),
        "revoked": by_status.get("revoked", 0),
        "last_24h": await issued_since(timedelta(hours=24)),
        "last_7d": await issued_since(timedelta(days=7)),
    }


async def counts(session: AsyncSession) -> dict[str, dict[str, int]]:
    by_product = (
        await session.execute(
            sa.select(License.product_id, sa.func.count()).group_by(License.product_id)
        )
    ).all()
    by_policy = (
        await session.execute(
            sa.select(License.policy_id, sa.func.count())
            .where(License.policy_id.is_not(None))
            .group_by(License.policy_id)
        )
    ).all()
    return {
        "by_product": {str(pid): count for pid, count in by_product},
        "by_policy": {str(pid): count for pid, count in by_policy},
    }


async def _locked_license(session: AsyncSession, license_id: str) -> License | None:
    canonical = normalize_id(license_id)
    if canonical is None:
        return None
    query = sa.select(License).where(License.id == canonical).with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def revoke(
    session: AsyncSession, actor: Actor, license_id: str, reason: str | None
) -> License:
    """The caller also stops the license's subscription in the same transaction."""
    row = await _locked_license(session, license_id)
    if row is None or row.status == "revoked":
        raise not_found(f"license {license_id} (already revoked or does not exist)")
    text = blank_to_none(reason) or "admin revoke"
    at = now()
    row.status = "revoked"
    row.revoked_at = at
    row.revocation_reason = text
    row.updated_at = at
    record_audit(session, actor, "license.revoke", "license", row.id, {"reason": text})
    record_event(session, "license.revoked", {"license_id": row.id, "reason": text})
    return row


async def suspend(session: AsyncSession, actor: Actor, license_id: str, reason: str | None) -> None:
    row = await _locked_license(session, license_id)
    if row is None or row.status != "active":
        raise not_found(f"active license {license_id}")
    text = blank_to_none(reason) or "admin suspend"
    at = now()
    row.status = "suspended"
    row.suspended_at = at
    row.suspension_reason = text
    row.updated_at = at
    record_audit(session, actor, "license.suspend", "license", row.id, {"reason": text})
    record_event(session, "license.suspended", {"license_id": row.id, "reason": text})


async def unsuspend(session: AsyncSession, actor: Actor, license_id: str) -> None:
    row = await _locked_license(session, license_id)
    if row is None or row.status != "suspended":
        raise not_found(f"suspended license {license_id}")
    row.status = "active"
    row.suspended_at = None
    row.suspension_reason = None
    row.updated_at = now()
    record_audit(session, actor, "license.unsuspend", "license", row.id, {})
    record_event(session, "license.unsuspended", {"license_id": row.id})
