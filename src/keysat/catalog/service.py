"""Catalog rules: products, policies, the entitlements catalog and the public tier list.

Every state change writes its audit row (and event, where there is one) in the caller's
transaction. Field rules are plain functions so they can be tested without a database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import Actor
from keysat.access.tier import Tier, check_policy_cap, check_product_cap, check_recurring_billing
from keysat.billing.models import DiscountCode, DiscountRedemption, Invoice
from keysat.catalog.models import Policy, Product
from keysat.catalog.schemas import (
    CatalogEntryIn,
    PolicyCreate,
    PolicyPatch,
    ProductCreate,
    ProductPatch,
    TipBody,
)
from keysat.clock import now
from keysat.errors import bad_request, conflict, not_found
from keysat.keys.codec import MAX_ENTITLEMENT_BYTES, MAX_ENTITLEMENTS
from keysat.licensing.models import License, Machine, ValidationLog
from keysat.operator.models import MerchantProfile
from keysat.operator.service import record_audit
from keysat.subscriptions.models import Subscription, SubscriptionCycle, TierChange
from keysat.webhooks.service import record_event
from keysat.wire import format_optional_ts, format_ts, new_id, normalize_id

SUPPORTED_CURRENCIES = ("SAT", "USD", "EUR")
# Keysat 0.2.0 databases may carry `BTC`, which is priced exactly like `SAT`.
SAT_PRICED = ("SAT", "BTC")

SLUG_MAX = 128
NAME_MAX = 200
DESCRIPTION_MAX = 10_000
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
RENEWAL_PERIOD_MAX_DAYS = 1830
LIVE_SUBSCRIPTION = ("active", "past_due")

_SLUG = re.compile(r"[A-Za-z0-9._-]+")
_CATALOG_SLUG = re.compile(r"[a-z0-9_]+")
_ADDRESS_PART = re.compile(r"[A-Za-z0-9._-]+")

# Inclusive bounds of policy integers. Upper bounds without a rule of their own are the
# column widths, so an absurd value is a 400 rather than a database error.
POLICY_RANGES: dict[str, tuple[int, int]] = {
    "duration_seconds": (0, INT64_MAX),
    "grace_seconds": (0, INT64_MAX),
    "max_machines": (0, INT32_MAX),
    "price_sats_override": (0, INT64_MAX),
    "renewal_period_days": (0, RENEWAL_PERIOD_MAX_DAYS),
    "grace_period_days": (0, 90),
    "trial_days": (0, INT32_MAX),
    "tier_rank": (0, 1000),
    "tip_pct_bps": (0, 10_000),
}
RECURRING_FIELDS = frozenset(
    {"is_recurring", "renewal_period_days", "grace_period_days", "trial_days"}
)
UPDATE_AUDIT_FIELDS = (
    "name",
    "duration_seconds",
    "max_machines",
    "price_sats_override",
    "entitlements",
    "is_recurring",
    "renewal_period_days",
    "grace_period_days",
    "trial_days",
    "allow_repeat_trials",
)


# --- pure rules ---------------------------------------------------------------------------


def clean_slug(value: str) -> str:
    slug = value.strip()
    if not slug:
        raise bad_request("slug must not be empty")
    if len(slug) > SLUG_MAX:
        raise bad_request(f"slug is too long (max {SLUG_MAX} characters)")
    if not _SLUG.fullmatch(slug):
        raise bad_request("slug may only contain the characters A-Z a-z 0-9 - _ .")
    return slug


def clean_name(value: str) -> str:
    name = value.strip()
    if not name:
        raise bad_request("name must not be empty")
    if len(name) > NAME_MAX:
        raise bad_request(f"name is too long (max {NAME_MAX} characters)")
    return name


def clean_description(value: str | None) -> str:
    description = value or ""
    if len(description) > DESCRIPTION_MAX:
        raise bad_request(f"description is too long (max {DESCRIPTION_MAX} characters)")
    return description


@dataclass(frozen=True)
class Price:
    currency: str
    value: int
    sats: int


def resolve_price(
    price_sats: int | None,
    price_currency: str | None,
    price_value: int | None,
    *,
    allow_zero: bool,
) -> Price | None:
    """The price a request carries (admin-api.md 2.2), or None when it carries none."""
    if price_currency is not None and price_value is None:
        raise bad_request("price_currency requires price_value")
    if price_value is not None and price_currency is None:
        raise bad_request("price_value requires price_currency")
    if price_currency is None or price_value is None:
        if price_sats is None:
            return None
        _check_price(price_sats, allow_zero)
        return Price(currency="SAT", value=price_sats, sats=price_sats)
    currency = price_currency.strip().upper()
    if currency not in SUPPORTED_CURRENCIES:
        raise bad_request(f"unsupported currency '{price_currency}'; use SAT, USD or EUR")
    _check_price(price_value, allow_zero)
    if price_sats is not None and (currency != "SAT" or price_sats != price_value):
        raise bad_request("price_sats and price_value disagree")
    return Price(currency=currency, value=price_value, sats=price_value if currency == "SAT" else 0)


def _check_price(value: int, allow_zero: bool) -> None:
    if allow_zero and value < 0:
        raise bad_request("price must not be negative")
    if not allow_zero and value <= 0:
        raise bad_request("price must be positive")


def clean_catalog(entries: list[CatalogEntryIn] | None) -> list[dict[str, str]] | None:
    """A validated entitlements catalog; an empty one is stored as null (free-text mode)."""
    if not entries:
        return None
    seen: set[str] = set()
    catalog: list[dict[str, str]] = []
    for entry in entries:
        slug = entry.slug
        if not slug.strip():
            raise bad_request("entitlements_catalog: slug must not be blank")
        if not _CATALOG_SLUG.fullmatch(slug):
            raise bad_request(
                f"entitlements_catalog: slug '{slug}' may only contain lowercase letters, "
                "digits and _"
            )
        # Catalog slugs are what policies sign into keys, so the key's limit applies.
        if len(slug) > MAX_ENTITLEMENT_BYTES:
            raise bad_request(
                f"entitlements_catalog: slug is too long (max {MAX_ENTITLEMENT_BYTES} characters)"
            )
        if slug in seen:
            raise bad_request(f"entitlements_catalog: duplicate slug '{slug}'")
        seen.add(slug)
        catalog.append({"slug": slug, "name": entry.name, "description": entry.description or ""})
    return catalog


def catalog_json(catalog: list[dict[str, str]] | None) -> list[dict[str, str]] | None:
    if not catalog:
        return None
    return [
        {
            "slug": entry.get("slug", ""),
            "name": entry.get("name", ""),
            "description": entry.get("description") or "",
        }
        for entry in catalog
    ]


def check_entitlements(values: Sequence[str], *, distinct: bool = True) -> list[str]:
    """Entitlements must fit in a license key (license-keys.md); policies also keep them
    distinct, while a hand-issued license takes the list as given."""
    if len(values) > MAX_ENTITLEMENTS:
        raise bad_request(f"at most {MAX_ENTITLEMENTS} entitlements fit in a license key")
    seen: set[str] = set()
    for value in values:
        if not value:
            raise bad_request("entitlements must be non-empty strings")
        if len(value.encode()) > MAX_ENTITLEMENT_BYTES:
            raise bad_request(
                f"an entitlement is longer than {MAX_ENTITLEMENT_BYTES} bytes of UTF-8"
            )
        if distinct and value in seen:
            raise bad_request(f"duplicate entitlement '{value}'")
        seen.add(value)
    return list(values)


def check_catalog_membership(
    entitlements: Sequence[str], catalog: list[dict[str, str]] | None
) -> None:
    if not catalog:
        return
    known = {entry.get("slug") for entry in catalog}
    unknown = [value for value in entitlements if value not in known]
    if unknown:
        raise bad_request(
            "entitlements not in the product's entitlements catalog: " + ", ".join(unknown)
        )


def check_range(field: str, value: int) -> None:
    low, high = POLICY_RANGES[field]
    if value < low:
        raise bad_request(f"{field} must be at least {low}")
    if value > high:
        if field == "renewal_period_days":
            raise bad_request(
                f"renewal_period_days is unreasonably large (max {RENEWAL_PERIOD_MAX_DAYS})"
            )
        raise bad_request(f"{field} must be at most {high}")


def check_recurring(is_recurring: bool, renewal_period_days: int, trial_days: int) -> None:
    if not is_recurring:
        return
    if renewal_period_days < 1:
        raise bad_request("a recurring policy needs renewal_period_days of at least 1")
    if trial_days > renewal_period_days:
        raise bad_request("trial_days cannot exceed renewal_period_days")


def is_lightning_address(text: str) -> bool:
    user, at, domain = text.partition("@")
    return bool(at and _ADDRESS_PART.fullmatch(user) and _ADDRESS_PART.fullmatch(domain))


@dataclass(frozen=True)
class Tip:
    recipient: str | None
    pct_bps: int
    label: str | None


def clean_tip(recipient: str | None, pct_bps: int, label: str | None) -> Tip:
    recipient = recipient if recipient is not None and recipient.strip() else None
    label = label if label is not None and label.strip() else None
    check_range("tip_pct_bps", pct_bps)
    if recipient is not None and not is_lightning_address(recipient):
        raise bad_request("tip_recipient must be a Lightning Address (user@domain)")
    if recipient is not None and pct_bps == 0:
        raise bad_request("a tip_recipient requires tip_pct_bps greater than 0")
    if recipient is None and pct_bps > 0:
        raise bad_request("tip_pct_bps greater than 0 requires a tip_recipient")
    return Tip(recipient=recipient, pct_bps=pct_bps, label=label)


def wire_currency(product: Product) -> str:
    return "SAT" if product.price_currency in SAT_PRICED else product.price_currency


def effective_price(product: Product, policy: Policy | None) -> int:
    """The tier's price in the product's pricing unit: sats, or cents for fiat products."""
    if policy is not None and policy.price_sats_override is not None:
        return policy.price_sats_override
    return product.price_sats if product.price_currency in SAT_PRICED else product.price_value


def product_json(product: Product) -> dict[str, Any]:
    return {
        "id": product.id,
        "slug": product.slug,
        "name": product.name,
        "description": product.description or "",
        "price_sats": product.price_sats,
        "price_currency": wire_currency(product),
        "price_value": product.price_value,
        "active": product.active,
        "metadata": product.product_metadata or {},
        "entitlements_catalog": catalog_json(product.entitlements_catalog),
        "merchant_profile_id": product.merchant_profile_id,
        "created_at": format_ts(product.created_at),
        "updated_at": format_ts(product.updated_at),
    }


def policy_json(policy: Policy) -> dict[str, Any]:
    return {
        "id": policy.id,
        "product_id": policy.product_id,
        "name": policy.name,
        "slug": policy.slug,
        "duration_seconds": policy.duration_seconds,
        "grace_seconds": policy.grace_seconds,
        "max_machines": policy.max_machines,
        "is_trial": policy.is_trial,
        "price_sats_override": policy.price_sats_override,
        "entitlements": list(policy.entitlements or []),
        "metadata": policy.policy_metadata or {},
        "active": policy.active,
        "public": policy.public,
        "tip_recipient": policy.tip_recipient,
        "tip_pct_bps": policy.tip_pct_bps,
        "tip_label": policy.tip_label,
        "is_recurring": policy.is_recurring,
        "renewal_period_days": policy.renewal_period_days,
        "grace_period_days": policy.grace_period_days,
        "trial_days": policy.trial_days,
        "tier_rank": policy.tier_rank,
        "allow_repeat_trials": policy.allow_repeat_trials,
        "archived_at": format_optional_ts(policy.archived_at),
        "created_at": format_ts(policy.created_at),
        "updated_at": format_ts(policy.updated_at),
    }


def _strings(value: Any) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def is_purchasable(policy: Policy) -> bool:
    return policy.active and policy.public and policy.archived_at is None


def public_tier_order(product: Product, policies: Sequence[Policy]) -> list[Policy]:
    return sorted(policies, key=lambda p: (effective_price(product, p), p.name, p.slug))


def public_policy_json(
    product: Product, policy: Policy, featured: dict[str, Any] | None = None
) -> dict[str, Any]:
    """One tier of the public list (public-api.md 4.3): no id, rank or tip data."""
    metadata = policy.policy_metadata or {}
    description = metadata.get("description")
    return {
        "slug": policy.slug,
        "name": policy.name,
        "description": description if isinstance(description, str) else "",
        "price_sats": effective_price(product, policy),
        "price_currency": wire_currency(product),
        "duration_seconds": policy.duration_seconds,
        "max_machines": policy.max_machines,
        "is_trial": policy.is_trial,
        "entitlements": list(policy.entitlements or []),
        "marketing_bullets": _strings(metadata.get("marketing_bullets")),
        "marketing_bullets_position": (
            "below" if metadata.get("marketing_bullets_position") == "below" else "above"
        ),
        "hidden_entitlements": _strings(metadata.get("hidden_entitlements")),
        "highlighted": metadata.get("highlight") is True,
        "is_recurring": policy.is_recurring,
        "renewal_period_days": policy.renewal_period_days if policy.is_recurring else 0,
        "trial_days": policy.trial_days,
        "featured_discount": featured,
    }


def public_tiers_json(
    product: Product,
    policies: Sequence[Policy],
    featured: Mapping[str, dict[str, Any] | None],
) -> dict[str, Any]:
    """`policies` are the purchasable ones in listing order; `featured` maps a policy id to
    its launch special."""
    return {
        "product": {
            "slug": product.slug,
            "name": product.name,
            "description": product.description or "",
            "base_price_sats": effective_price(product, None),
            "price_currency": wire_currency(product),
            "entitlements_catalog": catalog_json(product.entitlements_catalog) or [],
        },
        "policies": [
            public_policy_json(product, policy, featured.get(policy.id)) for policy in policies
        ],
    }


# --- lookups ------------------------------------------------------------------------------


async def get_product_by_slug(session: AsyncSession, slug: str) -> Product | None:
    result = await session.execute(sa.select(Product).where(Product.slug == slug))
    return result.scalar_one_or_none()


async def get_policy_by_slug(session: AsyncSession, product_id: str, slug: str) -> Policy | None:
    result = await session.execute(
        sa.select(Policy).where(Policy.product_id == product_id, Policy.slug == slug)
    )
    return result.scalar_one_or_none()


async def default_policy(session: AsyncSession, product_id: str) -> Policy | None:
    """Among active, unarchived policies by name: the one with slug `default`, else the first
    (public-api.md 1.11)."""
    query = (
        sa.select(Policy)
        .where(
            Policy.product_id == product_id,
            Policy.active.is_(True),
            Policy.archived_at.is_(None),
        )
        .order_by(Policy.name, Policy.slug)
    )
    policies = list((await session.execute(query)).scalars())
    return next((p for p in policies if p.slug == "default"), policies[0] if policies else None)


async def product_by_id(session: AsyncSession, raw_id: str) -> Product:
    product_id = normalize_id(raw_id)
    product = None if product_id is None else await session.get(Product, product_id)
    if product is None:
        raise not_found(f"product '{raw_id}'")
    return product


async def policy_by_id(session: AsyncSession, raw_id: str) -> Policy:
    policy_id = normalize_id(raw_id)
    policy = None if policy_id is None else await session.get(Policy, policy_id)
    if policy is None:
        raise not_found(f"policy '{raw_id}'")
    return policy


async def _product_by_slug_or_404(session: AsyncSession, slug: str) -> Product:
    product = await get_product_by_slug(session, slug)
    if product is None:
        raise not_found(f"product '{slug}'")
    return product


async def _merchant_profile_id(session: AsyncSession, raw_id: str) -> str:
    profile_id = normalize_id(raw_id)
    if profile_id is None or await session.get(MerchantProfile, profile_id) is None:
        raise not_found(f"merchant profile '{raw_id}'")
    return profile_id


async def _count(session: AsyncSession, query: sa.Select[int]) -> int:
    return int((await session.execute(query)).scalar_one())


async def _delete(session: AsyncSession, statement: sa.Delete) -> int:
    result = await session.execute(statement, execution_options={"synchronize_session": False})
    return cast("sa.CursorResult[Any]", result).rowcount


async def _flush_unique(session: AsyncSession, message: str) -> None:
    """Flush a new row; a concurrent insert of the same slug loses on the unique key."""
    try:
        await session.flush()
    except IntegrityError:
        raise conflict(message) from None


# --- products -----------------------------------------------------------------------------


async def list_products(session: AsyncSession, active: bool | None) -> Sequence[Product]:
    query = sa.select(Product).order_by(Product.name, Product.created_at, Product.id)
    if active is not None:
        query = query.where(Product.active == active)
    return (await session.execute(query)).scalars().all()


async def enforce_product_cap(session: AsyncSession, tier: Tier) -> None:
    check_product_cap(tier, await _count(session, sa.select(sa.func.count()).select_from(Product)))


async def create_product(
    session: AsyncSession, tier: Tier, actor: Actor, body: ProductCreate
) -> Product:
    await enforce_product_cap(session, tier)
    slug = clean_slug(body.slug)
    name = clean_name(body.name)
    description = clean_description(body.description)
    price = resolve_price(body.price_sats, body.price_currency, body.price_value, allow_zero=False)
    if price is None:
        raise bad_request("a price is required: price_sats, or price_currency with price_value")
    catalog = clean_catalog(body.entitlements_catalog)
    profile_id = (
        None
        if body.merchant_profile_id is None
        else await _merchant_profile_id(session, body.merchant_profile_id)
    )
    duplicate = f"product slug '{slug}' already exists"
    if await get_product_by_slug(session, slug) is not None:
        raise conflict(duplicate)
    at = now()
    product = Product(
        id=new_id(),
        slug=slug,
        name=name,
        description=description,
        price_currency=price.currency,
        price_value=price.value,
        price_sats=price.sats,
        active=True,
        product_metadata=body.metadata or {},
        entitlements_catalog=catalog,
        merchant_profile_id=profile_id,
        created_at=at,
        updated_at=at,
    )
    session.add(product)
    await _flush_unique(session, duplicate)
    record_audit(
        session,
        actor,
        "product.create",
        "product",
        product.id,
        {"slug": slug, "name": name, "price_sats": price.sats},
    )
    record_event(session, "product.created", {"product": product_json(product)})
    return product


async def update_product(
    session: AsyncSession, actor: Actor, raw_id: str, body: ProductPatch
) -> Product:
    product = await product_by_id(session, raw_id)
    sent = body.model_fields_set
    if body.slug is not None and body.slug.strip() != product.slug:
        raise bad_request("slug cannot be changed")
    name = None if body.name is None else clean_name(body.name)
    description = clean_description(body.description)
    price = resolve_price(body.price_sats, body.price_currency, body.price_value, allow_zero=True)
    catalog = clean_catalog(body.entitlements_catalog)
    profile_id = (
        None
        if body.merchant_profile_id is None
        else await _merchant_profile_id(session, body.merchant_profile_id)
    )

    if name is not None:
        product.name = name
    if "description" in sent:
        product.description = description
    if "metadata" in sent:
        product.product_metadata = body.metadata or {}
    if price is not None:
        product.price_currency = price.currency
        product.price_value = price.value
        product.price_sats = price.sats
    if "entitlements_catalog" in sent:
        product.entitlements_catalog = catalog
    if "merchant_profile_id" in sent:
        product.merchant_profile_id = profile_id
    product.updated_at = now()
    record_audit(
        session,
        actor,
        "product.update",
        "product",
        product.id,
        {"name": body.name, "description": body.description, "price_sats": body.price_sats},
    )
    return product


async def set_product_active(
    session: AsyncSession, actor: Actor, raw_id: str, active: bool
) -> None:
    product = await product_by_id(session, raw_id)
    product.active = active
    product.updated_at = now()
    record_audit(session, actor, "product.set_active", "product", product.id, {"active": active})


def _doomed_invoices(license_ids: sa.Select[str], *owned: sa.ColumnElement[bool]) -> sa.Select[str]:
    """Invoices owned by the deleted entity, plus those acting on a license being deleted."""
    return sa.select(Invoice.id).where(sa.or_(*owned, Invoice.subject_license_id.in_(license_ids)))


async def _delete_licenses_and_invoices(
    session: AsyncSession, license_ids: sa.Select[str], invoice_ids: sa.Select[str]
) -> dict[str, int]:
    """Everything that hangs off doomed licenses and invoices, in an order no key refuses.

    A row that is kept but points at a deleted one loses that reference instead of
    blocking the delete: a license bought with a deleted invoice, a subscription whose
    open renewal invoice is deleted.
    """
    machines = await _delete(session, sa.delete(Machine).where(Machine.license_id.in_(license_ids)))
    await _delete(
        session, sa.delete(ValidationLog).where(ValidationLog.license_id.in_(license_ids))
    )
    doomed_subscriptions = sa.select(Subscription.id).where(
        Subscription.license_id.in_(license_ids)
    )
    await _delete(
        session,
        sa.delete(SubscriptionCycle).where(
            sa.or_(
                SubscriptionCycle.subscription_id.in_(doomed_subscriptions),
                SubscriptionCycle.invoice_id.in_(invoice_ids),
            )
        ),
    )
    await _delete(
        session,
        sa.delete(TierChange).where(
            sa.or_(TierChange.license_id.in_(license_ids), TierChange.invoice_id.in_(invoice_ids))
        ),
    )
    redemptions = await _delete(
        session,
        sa.delete(DiscountRedemption).where(
            sa.or_(
                DiscountRedemption.invoice_id.in_(invoice_ids),
                DiscountRedemption.license_id.in_(license_ids),
            )
        ),
    )
    await session.execute(
        sa.update(Subscription)
        .where(Subscription.open_invoice_id.in_(invoice_ids))
        .values(open_invoice_id=None, updated_at=now()),
        execution_options={"synchronize_session": False},
    )
    await session.execute(
        sa.update(License)
        .where(License.invoice_id.in_(invoice_ids))
        .values(invoice_id=None, updated_at=now()),
        execution_options={"synchronize_session": False},
    )
    invoices = await _delete(session, sa.delete(Invoice).where(Invoice.id.in_(invoice_ids)))
    subscriptions = await _delete(
        session, sa.delete(Subscription).where(Subscription.license_id.in_(license_ids))
    )
    licenses = await _delete(session, sa.delete(License).where(License.id.in_(license_ids)))
    return {
        "cascaded_licenses": licenses,
        "cascaded_invoices": invoices,
        "cascaded_machines": machines,
        "cascaded_redemptions": redemptions,
        "cascaded_subscriptions": subscriptions,
    }


async def delete_product(
    session: AsyncSession, actor: Actor, raw_id: str, force: bool
) -> dict[str, Any]:
    product = await product_by_id(session, raw_id)
    if not force:
        licenses = await _count(
            session, sa.select(sa.func.count()).where(License.product_id == product.id)
        )
        invoices = await _count(
            session, sa.select(sa.func.count()).where(Invoice.product_id == product.id)
        )
        if licenses or invoices:
            raise conflict(
                f"product '{product.slug}' has {licenses} license(s) and {invoices} invoice(s); "
                "deactivate it instead, or delete with ?force=true"
            )
        counts = {
            "cascaded_licenses": 0,
            "cascaded_invoices": 0,
            "cascaded_machines": 0,
            "cascaded_redemptions": 0,
            "cascaded_subscriptions": 0,
        }
    else:
        license_ids = sa.select(License.id).where(License.product_id == product.id)
        counts = await _delete_licenses_and_invoices(
            session,
            license_ids,
            _doomed_invoices(license_ids, Invoice.product_id == product.id),
        )
    product_codes = sa.select(DiscountCode.id).where(
        DiscountCode.applies_to_product_id == product.id
    )
    counts["cascaded_redemptions"] += await _delete(
        session, sa.delete(DiscountRedemption).where(DiscountRedemption.code_id.in_(product_codes))
    )
    codes = await _delete(
        session, sa.delete(DiscountCode).where(DiscountCode.applies_to_product_id == product.id)
    )
    policies = await _delete(session, sa.delete(Policy).where(Policy.product_id == product.id))
    await _delete(session, sa.delete(Product).where(Product.id == product.id))
    result: dict[str, Any] = {
        "ok": True,
        "deleted": product.slug,
        "force": force,
        "cascaded_policies": policies,
        "cascaded_codes": codes,
        **counts,
    }
    details = {key: value for key, value in result.items() if key not in ("ok", "deleted")}
    record_audit(
        session,
        actor,
        "product.force_delete" if force else "product.delete",
        "product",
        product.id,
        {"slug": product.slug, "name": product.name, **details},
    )
    return result


# --- policies -----------------------------------------------------------------------------


async def list_policies(
    session: AsyncSession, product_slug: str, include_inactive: bool, include_archived: bool
) -> Sequence[Policy]:
    product = await _product_by_slug_or_404(session, product_slug)
    query = (
        sa.select(Policy)
        .where(Policy.product_id == product.id)
        .order_by(Policy.name, Policy.created_at, Policy.id)
    )
    if not include_inactive:
        query = query.where(Policy.active.is_(True))
    if not include_archived:
        query = query.where(Policy.archived_at.is_(None))
    return (await session.execute(query)).scalars().all()


async def product_for_new_policy(session: AsyncSession, tier: Tier, product_slug: str) -> Product:
    """Steps 1 and 2 of a policy create: the product exists and has room for a policy."""
    product = await _product_by_slug_or_404(session, product_slug)
    count = await _count(session, sa.select(sa.func.count()).where(Policy.product_id == product.id))
    check_policy_cap(tier, count)
    return product


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


async def create_policy(
    session: AsyncSession, tier: Tier, actor: Actor, product: Product, body: PolicyCreate
) -> Policy:
    name = clean_name(body.name)
    slug = clean_slug(body.slug)
    numbers = {
        "duration_seconds": _or(body.duration_seconds, 0),
        "grace_seconds": _or(body.grace_seconds, 0),
        "max_machines": _or(body.max_machines, 1),
        "renewal_period_days": _or(body.renewal_period_days, 0),
        "grace_period_days": _or(body.grace_period_days, 7),
        "trial_days": _or(body.trial_days, 0),
    }
    for field, value in numbers.items():
        check_range(field, value)
    if body.price_sats_override is not None:
        check_range("price_sats_override", body.price_sats_override)
    tip = clean_tip(body.tip_recipient, _or(body.tip_pct_bps, 0), body.tip_label)
    is_recurring = bool(body.is_recurring)
    check_recurring(is_recurring, numbers["renewal_period_days"], numbers["trial_days"])
    entitlements = check_entitlements(body.entitlements or [])
    if is_recurring:
        check_recurring_billing(tier)
    if body.tier_rank is not None:
        check_range("tier_rank", body.tier_rank)
    check_catalog_membership(entitlements, product.entitlements_catalog)

    duplicate = f"policy slug '{slug}' already exists for this product"
    if await get_policy_by_slug(session, product.id, slug) is not None:
        raise conflict(duplicate)
    at = now()
    policy = Policy(
        id=new_id(),
        product_id=product.id,
        name=name,
        slug=slug,
        is_trial=bool(body.is_trial),
        price_sats_override=body.price_sats_override,
        entitlements=entitlements,
        policy_metadata=body.metadata or {},
        active=True,
        public=True,
        archived_at=None,
        tip_recipient=tip.recipient,
        tip_pct_bps=tip.pct_bps,
        tip_label=tip.label,
        is_recurring=is_recurring,
        tier_rank=body.tier_rank,
        allow_repeat_trials=bool(body.allow_repeat_trials),
        created_at=at,
        updated_at=at,
        **numbers,
    )
    session.add(policy)
    await _flush_unique(session, duplicate)
    record_audit(
        session,
        actor,
        "policy.create",
        "policy",
        policy.id,
        {"product_id": product.id, "slug": slug},
    )
    return policy


async def update_policy(
    session: AsyncSession, tier: Tier, actor: Actor, raw_id: str, body: PolicyPatch
) -> Policy:
    policy = await policy_by_id(session, raw_id)
    sent = body.model_fields_set
    name = None if body.name is None else clean_name(body.name)
    numbers = {
        field: value
        for field in (
            "duration_seconds",
            "grace_seconds",
            "max_machines",
            "renewal_period_days",
            "grace_period_days",
            "trial_days",
        )
        if (value := getattr(body, field)) is not None
    }
    for field, value in numbers.items():
        check_range(field, value)
    if body.price_sats_override is not None:
        check_range("price_sats_override", body.price_sats_override)
    is_recurring = policy.is_recurring if body.is_recurring is None else body.is_recurring
    # A null recurring field is ignored like an omitted one, so it triggers no re-check.
    if any(getattr(body, field) is not None for field in RECURRING_FIELDS):
        check_recurring(
            is_recurring,
            numbers.get("renewal_period_days", policy.renewal_period_days),
            numbers.get("trial_days", policy.trial_days),
        )
    entitlements = None if body.entitlements is None else check_entitlements(body.entitlements)
    # Only switching recurring billing on needs the tier; existing subscriptions are
    # grandfathered (access.md 9.2).
    if is_recurring and not policy.is_recurring:
        check_recurring_billing(tier)
    if body.tier_rank is not None:
        check_range("tier_rank", body.tier_rank)
    if entitlements is not None:
        catalog = await session.execute(
            sa.select(Product.entitlements_catalog).where(Product.id == policy.product_id)
        )
        check_catalog_membership(entitlements, catalog.scalar_one())

    if name is not None:
        policy.name = name
    for field, value in numbers.items():
        setattr(policy, field, value)
    if "price_sats_override" in sent:
        policy.price_sats_override = body.price_sats_override
    if "entitlements" in sent:
        policy.entitlements = entitlements or []
    if "metadata" in sent:
        policy.policy_metadata = body.metadata or {}
    policy.is_recurring = is_recurring
    if body.is_trial is not None:
        policy.is_trial = body.is_trial
    if "tier_rank" in sent:
        policy.tier_rank = body.tier_rank
    if body.allow_repeat_trials is not None:
        policy.allow_repeat_trials = body.allow_repeat_trials
    policy.updated_at = now()
    record_audit(
        session,
        actor,
        "policy.update",
        "policy",
        policy.id,
        {field: getattr(body, field) for field in UPDATE_AUDIT_FIELDS},
    )
    return policy


async def set_policy_active(session: AsyncSession, actor: Actor, raw_id: str, active: bool) -> None:
    policy = await policy_by_id(session, raw_id)
    policy.active = active
    policy.updated_at = now()
    record_audit(session, actor, "policy.set_active", "policy", policy.id, {"active": active})


async def set_policy_public(session: AsyncSession, actor: Actor, raw_id: str, public: bool) -> None:
    policy = await policy_by_id(session, raw_id)
    policy.public = public
    policy.updated_at = now()
    record_audit(session, actor, "policy.set_public", "policy", policy.id, {"public": public})


async def set_policy_archived(
    session: AsyncSession, actor: Actor, raw_id: str, archived: bool
) -> None:
    policy = await policy_by_id(session, raw_id)
    at = now()
    policy.archived_at = at if archived else None
    policy.updated_at = at
    record_audit(
        session,
        actor,
        "policy.archive" if archived else "policy.unarchive",
        "policy",
        policy.id,
        {"archived": archived},
    )


async def set_policy_tip(session: AsyncSession, actor: Actor, raw_id: str, body: TipBody) -> Policy:
    policy = await policy_by_id(session, raw_id)
    tip = clean_tip(body.tip_recipient, body.tip_pct_bps, body.tip_label)
    policy.tip_recipient = tip.recipient
    policy.tip_pct_bps = tip.pct_bps
    policy.tip_label = tip.label
    policy.updated_at = now()
    record_audit(
        session,
        actor,
        "policy.set_tip",
        "policy",
        policy.id,
        {"tip_recipient": tip.recipient, "tip_pct_bps": tip.pct_bps, "tip_label": tip.label},
    )
    return policy


async def _narrow_codes(session: AsyncSession, policy: Policy) -> int:
    """Codes scoped to a deleted tier lose it, never widening: a code left with no tier
    in scope is switched off instead of applying to the whole product."""
    disabled = 0
    query = sa.select(DiscountCode).where(DiscountCode.applies_to_product_id == policy.product_id)
    for code in (await session.execute(query)).scalars():
        scope = list(code.applies_to_policy_ids or [])
        if policy.id not in scope:
            continue
        code.applies_to_policy_ids = [item for item in scope if item != policy.id]
        code.updated_at = now()
        if not code.applies_to_policy_ids:
            disabled += int(code.active)
            code.active = False
    return disabled


async def delete_policy(
    session: AsyncSession, actor: Actor, raw_id: str, force: bool
) -> dict[str, Any]:
    policy = await policy_by_id(session, raw_id)
    if not force:
        live_licenses = await _count(
            session,
            sa.select(sa.func.count()).where(
                License.policy_id == policy.id, License.status != "revoked"
            ),
        )
        settled_invoices = await _count(
            session,
            sa.select(sa.func.count()).where(
                Invoice.policy_id == policy.id, Invoice.status == "settled"
            ),
        )
        live_subscriptions = await _count(
            session,
            sa.select(sa.func.count()).where(
                Subscription.policy_id == policy.id, Subscription.status.in_(LIVE_SUBSCRIPTION)
            ),
        )
        if live_licenses or settled_invoices or live_subscriptions:
            raise conflict(
                f"policy '{policy.slug}' has {live_licenses} unrevoked license(s), "
                f"{settled_invoices} settled invoice(s) and {live_subscriptions} active "
                "subscription(s); archive it, revoke its licenses, or delete with ?force=true"
            )
    license_ids = sa.select(License.id).where(
        sa.or_(
            License.policy_id == policy.id,
            License.id.in_(
                sa.select(Subscription.license_id).where(Subscription.policy_id == policy.id)
            ),
        )
    )
    await _delete(
        session,
        sa.delete(TierChange).where(
            sa.or_(TierChange.from_policy_id == policy.id, TierChange.to_policy_id == policy.id)
        ),
    )
    counts = await _delete_licenses_and_invoices(
        session, license_ids, _doomed_invoices(license_ids, Invoice.policy_id == policy.id)
    )
    disabled = await _narrow_codes(session, policy)
    await _delete(session, sa.delete(Policy).where(Policy.id == policy.id))
    result: dict[str, Any] = {
        "ok": True,
        "deleted": policy.slug,
        "force": force,
        **counts,
        "disabled_codes": disabled,
    }
    details = {key: value for key, value in result.items() if key not in ("ok", "deleted")}
    record_audit(
        session,
        actor,
        "policy.force_delete" if force else "policy.delete",
        "policy",
        policy.id,
        {"slug": policy.slug, "product_id": policy.product_id, **details},
    )
    return result


# --- public catalog -----------------------------------------------------------------------


async def public_product(session: AsyncSession, slug: str) -> Product:
    """An inactive product is as missing as an unknown one (public-api.md 4.2)."""
    product = await get_product_by_slug(session, slug)
    if product is None or not product.active:
        raise not_found(f"product '{slug}'")
    return product


async def public_tiers(session: AsyncSession, slug: str) -> tuple[Product, list[Policy]]:
    """A product on sale and its purchasable tiers in listing order (public-api.md 4.3)."""
    product = await public_product(session, slug)
    policies = (
        (await session.execute(sa.select(Policy).where(Policy.product_id == product.id)))
        .scalars()
        .all()
    )
    return product, public_tier_order(product, [p for p in policies if is_purchasable(p)])
