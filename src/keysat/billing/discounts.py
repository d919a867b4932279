"""Discount codes: administration, the checks a purchase makes, featured precedence, slot
reservation and the redemption lifecycle (admin-api.md 7, 21.4; billing.md 2.4-2.6)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import SYSTEM, Actor
from keysat.access.tier import Tier, check_code_cap
from keysat.billing.models import DiscountCode, DiscountRedemption, Invoice
from keysat.billing.pricing import BPS_MAX, DISCOUNT_KINDS, SAT_CURRENCIES
from keysat.billing.schemas import DiscountCodeCreate, DiscountCodePatch
from keysat.catalog.models import Policy, Product
from keysat.catalog.service import get_policy_by_slug, get_product_by_slug
from keysat.clock import now
from keysat.errors import bad_request, conflict, not_found
from keysat.operator.service import record_audit
from keysat.webhooks.service import record_event
from keysat.wire import format_optional_ts, format_ts, new_id, normalize_id, parse_ts

CODE_MAX = 64
REFERRER_MAX = 200
DESCRIPTION_MAX = 1000
MAX_USES_MAX = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL
DISCOUNT_CURRENCIES = ("SAT", "USD", "EUR")
_CODE = re.compile(r"[A-Z0-9_-]+")


# --- pure rules ---------------------------------------------------------------------------


def normalize_code(text: str) -> str:
    return text.strip().upper()


def clean_code(text: str) -> str:
    code = normalize_code(text)
    if not code:
        raise bad_request("code must not be empty")
    if len(code) > CODE_MAX:
        raise bad_request(f"code is too long (max {CODE_MAX} characters)")
    if not _CODE.fullmatch(code):
        raise bad_request("code may contain only letters, digits, '-' and '_'")
    return code


def clean_amount(kind: str, amount: int) -> int:
    if kind == "free_license":
        return 0
    if kind == "percent":
        if not 0 <= amount <= BPS_MAX:
            raise bad_request("a percent code's amount is in basis points, 0 to 10000")
        return amount
    if amount <= 0:
        raise bad_request(f"a {kind} code's amount must be positive")
    return amount


def clean_kind(kind: str) -> str:
    if kind not in DISCOUNT_KINDS:
        raise bad_request("kind must be one of percent, fixed_sats, set_price, free_license")
    return kind


def clean_text(name: str, value: str | None, limit: int) -> str | None:
    if value is not None and len(value) > limit:
        raise bad_request(f"{name} is too long (max {limit} characters)")
    return value


def is_expired(code: DiscountCode, at: datetime) -> bool:
    return code.expires_at is not None and at >= code.expires_at


def is_exhausted(code: DiscountCode) -> bool:
    return code.max_uses is not None and code.used_count >= code.max_uses


def is_usable(code: DiscountCode, at: datetime) -> bool:
    return code.active and not is_expired(code, at) and not is_exhausted(code)


def covers_product(code: DiscountCode, product: Product) -> bool:
    return code.applies_to_product_id in (None, product.id)


def covers_policy(code: DiscountCode, policy: Policy | None) -> bool:
    scope = code.applies_to_policy_ids or []
    return not scope or (policy is not None and policy.id in scope)


def featured_score(code: DiscountCode, product: Product, policy: Policy | None) -> int | None:
    """billing.md 2.5: 0 tier-scoped, 1 product-wide, 2 global; None when it cannot apply."""
    if not covers_product(code, product):
        return None
    if code.applies_to_policy_ids:
        return 0 if policy is not None and policy.id in code.applies_to_policy_ids else None
    return 1 if code.applies_to_product_id is not None else 2


def pick_featured(
    codes: Sequence[DiscountCode], product: Product, policy: Policy | None, at: datetime
) -> DiscountCode | None:
    ranked = [
        (score, code.created_at, code.id, code)
        for code in codes
        if code.featured
        and is_usable(code, at)
        and (score := featured_score(code, product, policy)) is not None
    ]
    return min(ranked, key=lambda entry: entry[:3])[3] if ranked else None


def purchase_refusal(
    code: DiscountCode, product: Product, policy: Policy | None, at: datetime
) -> str | None:
    """Why a typed code cannot be used on /v1/purchase, in the documented order."""
    if not code.active:
        return "discount code is disabled"
    if is_expired(code, at):
        return "discount code has expired"
    if not covers_product(code, product):
        return "discount code does not apply to this product"
    if not covers_policy(code, policy):
        return "discount code does not apply to the selected tier"
    return None


def code_json(code: DiscountCode) -> dict[str, Any]:
    scope = list(code.applies_to_policy_ids or [])
    return {
        "id": code.id,
        "code": code.code,
        "kind": code.kind,
        "amount": code.amount,
        "discount_currency": code.discount_currency,
        "max_uses": code.max_uses,
        "used_count": code.used_count,
        "expires_at": format_optional_ts(code.expires_at),
        "applies_to_product_id": code.applies_to_product_id,
        "applies_to_policy_id": scope[0] if len(scope) == 1 else None,
        "applies_to_policy_ids": scope,
        "referrer_label": code.referrer_label,
        "description": code.description or "",
        "active": code.active,
        "featured": code.featured,
        "created_at": format_ts(code.created_at),
        "updated_at": format_ts(code.updated_at),
    }


def redemption_json(row: DiscountRedemption) -> dict[str, Any]:
    return {
        "id": row.id,
        "code_id": row.code_id,
        "invoice_id": row.invoice_id,
        "license_id": row.license_id,
        "status": row.status,
        "discount_applied_sats": row.discount_applied_sats,
        "base_price_sats": row.base_price_sats,
        "final_price_sats": row.final_price_sats,
        "created_at": format_ts(row.created_at),
        "updated_at": format_ts(row.updated_at),
    }


# --- lookups ------------------------------------------------------------------------------


async def find_code(session: AsyncSession, text: str) -> DiscountCode | None:
    query = sa.select(DiscountCode).where(DiscountCode.code == normalize_code(text))
    return (await session.execute(query)).scalar_one_or_none()


async def featured_for(
    session: AsyncSession, product: Product, policy: Policy | None
) -> DiscountCode | None:
    query = sa.select(DiscountCode).where(
        DiscountCode.featured.is_(True),
        DiscountCode.active.is_(True),
        sa.or_(
            DiscountCode.applies_to_product_id.is_(None),
            DiscountCode.applies_to_product_id == product.id,
        ),
    )
    return pick_featured(list((await session.execute(query)).scalars()), product, policy, now())


async def code_by_id(session: AsyncSession, raw_id: str) -> DiscountCode:
    canonical = normalize_id(raw_id)
    code = await session.get(DiscountCode, canonical) if canonical else None
    if code is None:
        raise not_found(f"discount code {raw_id}")
    return code


async def active_code_count(session: AsyncSession) -> int:
    query = sa.select(sa.func.count()).select_from(DiscountCode).where(DiscountCode.active)
    return int((await session.execute(query)).scalar_one())


# --- slots and redemptions ----------------------------------------------------------------


async def reserve(session: AsyncSession, code_id: str) -> bool:
    """Take one use, only if the code is still usable: safe under any concurrency."""
    at = now()
    result = await session.execute(
        sa.update(DiscountCode)
        .where(
            DiscountCode.id == code_id,
            DiscountCode.active.is_(True),
            sa.or_(DiscountCode.expires_at.is_(None), DiscountCode.expires_at > at),
            sa.or_(
                DiscountCode.max_uses.is_(None), DiscountCode.used_count < DiscountCode.max_uses
            ),
        )
        .values(used_count=DiscountCode.used_count + 1, updated_at=at)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def release(session: AsyncSession, code_id: str) -> None:
    await session.execute(
        sa.update(DiscountCode)
        .where(DiscountCode.id == code_id)
        .values(
            used_count=sa.case((DiscountCode.used_count > 0, DiscountCode.used_count - 1), else_=0),
            updated_at=now(),
        )
    )


async def cancel_pending(session: AsyncSession, invoice_id: str) -> bool:
    """Cancel an invoice's pending redemption and give its slot back, at most once."""
    row = (
        await session.execute(
            sa.select(DiscountRedemption).where(DiscountRedemption.invoice_id == invoice_id)
        )
    ).scalar_one_or_none()
    if row is None:
        return False
    result = await session.execute(
        sa.update(DiscountRedemption)
        .where(DiscountRedemption.id == row.id, DiscountRedemption.status == "pending")
        .values(status="cancelled", updated_at=now())
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    await release(session, row.code_id)
    return True


@dataclass(frozen=True)
class Redeemed:
    redemption: DiscountRedemption
    code: DiscountCode


async def redeem_for_invoice(
    session: AsyncSession, invoice: Invoice, license_id: str
) -> Redeemed | None:
    """A settled invoice's redemption becomes `redeemed`, with its audit row and event.

    A redemption the reaper already cancelled takes its use back without the cap check:
    the buyer paid the discounted price (billing.md 2.6, late settlement).
    """
    row = (
        await session.execute(
            sa.select(DiscountRedemption).where(DiscountRedemption.invoice_id == invoice.id)
        )
    ).scalar_one_or_none()
    if row is None or row.status == "redeemed":
        return None
    code = await session.get(DiscountCode, row.code_id)
    assert code is not None
    # Conditional statements, never read-modify-write: the reaper may cancel the redemption
    # and buyers may reserve uses of the code while this transaction runs.
    at = now()
    for previous in ("pending", "cancelled"):
        result = await session.execute(
            sa.update(DiscountRedemption)
            .where(DiscountRedemption.id == row.id, DiscountRedemption.status == previous)
            .values(status="redeemed", license_id=license_id, updated_at=at)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            break
    else:
        return None
    if previous == "cancelled":
        await session.execute(
            sa.update(DiscountCode)
            .where(DiscountCode.id == code.id)
            .values(used_count=DiscountCode.used_count + 1, updated_at=at)
            .execution_options(synchronize_session=False)
        )
    await session.refresh(row)
    record_redemption(session, row, code, invoice)
    return Redeemed(row, code)


def record_redemption(
    session: AsyncSession, row: DiscountRedemption, code: DiscountCode, invoice: Invoice
) -> None:
    """The audit row and the event of a redemption that just became `redeemed`."""
    amounts = {
        "discount_applied_sats": row.discount_applied_sats,
        "base_price_sats": row.base_price_sats,
        "final_price_sats": row.final_price_sats,
    }
    record_audit(
        session,
        SYSTEM,
        "code.redeemed",
        "discount_code",
        code.id,
        {
            "redemption_id": row.id,
            "invoice_id": invoice.id,
            "license_id": row.license_id,
            **amounts,
        },
    )
    record_event(
        session,
        "code.redeemed",
        {
            "redemption_id": row.id,
            "code_id": code.id,
            "code": code.code,
            "license_id": row.license_id,
            "product_id": invoice.product_id,
            "invoice_id": invoice.id,
            **amounts,
        },
    )


def new_redemption(
    code: DiscountCode, invoice_id: str, status: str, base: int, discount: int
) -> DiscountRedemption:
    at = now()
    return DiscountRedemption(
        id=new_id(),
        code_id=code.id,
        invoice_id=invoice_id,
        status=status,
        discount_applied_sats=discount,
        base_price_sats=base,
        final_price_sats=base - discount,
        created_at=at,
        updated_at=at,
    )


# --- administration -----------------------------------------------------------------------


async def list_codes(session: AsyncSession, include_inactive: bool) -> Sequence[DiscountCode]:
    query = sa.select(DiscountCode).order_by(DiscountCode.created_at.desc(), DiscountCode.id)
    if not include_inactive:
        query = query.where(DiscountCode.active.is_(True))
    return (await session.execute(query)).scalars().all()


async def redemptions_of(session: AsyncSession, code_id: str) -> Sequence[DiscountRedemption]:
    query = (
        sa.select(DiscountRedemption)
        .where(DiscountRedemption.code_id == code_id)
        .order_by(DiscountRedemption.created_at.desc(), DiscountRedemption.id)
    )
    return (await session.execute(query)).scalars().all()


async def _policy_scope(session: AsyncSession, product: Product, slugs: Sequence[str]) -> list[str]:
    ids: list[str] = []
    for slug in slugs:
        policy = await get_policy_by_slug(session, product.id, slug)
        if policy is None:
            raise not_found(f"policy '{slug}' for product '{product.slug}'")
        if policy.id not in ids:
            ids.append(policy.id)
    return ids


async def enforce_code_cap(session: AsyncSession, tier: Tier) -> None:
    check_code_cap(tier, await active_code_count(session))


async def create_code(
    session: AsyncSession, tier: Tier, actor: Actor, body: DiscountCodeCreate
) -> DiscountCode:
    await enforce_code_cap(session, tier)
    product: Product | None = None
    if body.product_slug:
        product = await get_product_by_slug(session, body.product_slug)
        if product is None:
            raise not_found(f"product '{body.product_slug}'")
    slugs: list[str] = []
    if body.policy_slugs is not None:
        if product is None:
            raise bad_request("policy_slugs requires product_slug")
        slugs = list(body.policy_slugs)
    elif body.policy_slug:
        if product is None:
            raise bad_request("policy_slug requires product_slug")
        slugs = [body.policy_slug]
    scope = await _policy_scope(session, product, slugs) if product is not None else []
    currency = (body.discount_currency or "").strip().upper() or "SAT"
    if currency not in DISCOUNT_CURRENCIES:
        raise bad_request("discount_currency must be SAT, USD or EUR")
    code_text = clean_code(body.code)
    kind = clean_kind(body.kind)
    amount = clean_amount(kind, body.amount)
    if body.max_uses is not None and not 0 < body.max_uses <= MAX_USES_MAX:
        raise bad_request(f"max_uses must be between 1 and {MAX_USES_MAX}")
    expires_at = parse_ts("expires_at", body.expires_at) if body.expires_at else None
    at = now()
    code = DiscountCode(
        id=new_id(),
        code=code_text,
        kind=kind,
        amount=amount,
        discount_currency=currency,
        max_uses=body.max_uses,
        used_count=0,
        expires_at=expires_at,
        applies_to_product_id=product.id if product is not None else None,
        applies_to_policy_ids=scope,
        referrer_label=clean_text("referrer_label", body.referrer_label, REFERRER_MAX),
        description=clean_text("description", body.description, DESCRIPTION_MAX) or "",
        active=True,
        featured=bool(body.featured),
        created_at=at,
        updated_at=at,
    )
    session.add(code)
    try:
        await session.flush()
    except IntegrityError:
        raise conflict(f"discount code '{code_text}' already exists") from None
    record_audit(
        session,
        actor,
        "discount_code.create",
        "discount_code",
        code.id,
        {
            "code": code.code,
            "kind": code.kind,
            "amount": code.amount,
            "max_uses": code.max_uses,
            "expires_at": format_optional_ts(code.expires_at),
            "product_id": code.applies_to_product_id,
            "policy_id": scope[0] if len(scope) == 1 else None,
            "referrer_label": code.referrer_label,
        },
    )
    return code


async def update_code(
    session: AsyncSession, actor: Actor, raw_id: str, body: DiscountCodePatch
) -> DiscountCode:
    code = await code_by_id(session, raw_id)
    sent = body.model_fields_set
    if "amount" in sent and body.amount is not None:
        if code.kind == "free_license" and body.amount != 0:
            raise bad_request("a free_license code's amount is always 0")
        code.amount = clean_amount(code.kind, body.amount)
    if "max_uses" in sent:
        if body.max_uses is not None and (
            not 0 < body.max_uses <= MAX_USES_MAX or body.max_uses < code.used_count
        ):
            raise bad_request(
                f"max_uses must be positive and at least the current used_count ({code.used_count})"
            )
        code.max_uses = body.max_uses
    if "expires_at" in sent:
        code.expires_at = parse_ts("expires_at", body.expires_at) if body.expires_at else None
    if "description" in sent:
        code.description = clean_text("description", body.description, DESCRIPTION_MAX) or ""
    if "referrer_label" in sent:
        code.referrer_label = clean_text("referrer_label", body.referrer_label, REFERRER_MAX)
    if "featured" in sent and body.featured is not None:
        code.featured = body.featured
    if "policy_slugs" in sent:
        if code.applies_to_product_id is None:
            raise bad_request("this code is not scoped to a product, so policy scope cannot be set")
        product = await session.get(Product, code.applies_to_product_id)
        assert product is not None
        code.applies_to_policy_ids = await _policy_scope(session, product, body.policy_slugs or [])
    code.updated_at = now()
    details: dict[str, Any] = {
        name: getattr(body, name)
        for name in ("amount", "max_uses", "expires_at", "description", "referrer_label")
        if name in sent
    }
    record_audit(session, actor, "discount_code.update", "discount_code", code.id, details)
    return code


async def set_active(
    session: AsyncSession, tier: Tier, actor: Actor, raw_id: str, active: bool
) -> None:
    code = await code_by_id(session, raw_id)
    if active and not code.active:
        await enforce_code_cap(session, tier)
    code.active = active
    code.updated_at = now()
    action = "discount_code.enable" if active else "discount_code.disable"
    record_audit(session, actor, action, "discount_code", code.id, {"active": active})


async def delete_code(session: AsyncSession, actor: Actor, raw_id: str) -> str:
    canonical = normalize_id(raw_id)
    code = await session.get(DiscountCode, canonical) if canonical else None
    if code is None:
        raise not_found(f"discount code '{raw_id}'")
    used = (
        await session.execute(
            sa.select(sa.func.count())
            .select_from(DiscountRedemption)
            .where(DiscountRedemption.code_id == code.id)
        )
    ).scalar_one()
    if used:
        raise conflict(
            f"discount code '{code.code}' has {used} redemption(s) and is kept for the "
            "record; disable it instead"
        )
    await session.delete(code)
    record_audit(
        session,
        actor,
        "discount_code.delete",
        "discount_code",
        code.id,
        {"code": code.code, "kind": code.kind},
    )
    return code.code


def amount_currency(code: DiscountCode) -> str | None:
    """The fiat currency a code's amount must be converted from, if any."""
    if code.kind in ("fixed_sats", "set_price") and code.discount_currency not in SAT_CURRENCIES:
        return code.discount_currency
    return None
