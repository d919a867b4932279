"""Merchant profiles and their rail preferences (admin-api.md 12, 21.5).

Field rules are plain functions; the service functions run inside the caller's transaction
and raise the API errors of admin-api.md 12.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import Actor
from keysat.access.tier import Tier, check_merchant_profile_cap
from keysat.catalog.models import Product
from keysat.clock import now
from keysat.errors import bad_request, conflict, not_found
from keysat.operator.models import MerchantProfile
from keysat.operator.schemas import ProfileCreate, ProfilePatch
from keysat.operator.service import record_audit
from keysat.payments.connect import provider_summary
from keysat.payments.models import BTCPayAuthorizeState, PaymentProvider, RailPreference
from keysat.payments.provider import RAILS, SERVED_RAILS
from keysat.payments.service import providers_of
from keysat.subscriptions.models import Subscription
from keysat.wire import format_ts, new_id, normalize_id

NAME_MAX = 200
URL_MAX = 2048
EMAIL_MAX = 254
SMTP_HOST_MAX = 253
SMTP_USERNAME_MAX = 256
SMTP_PASSWORD_MAX = 1024
_BRAND_COLOR = re.compile(r"#(?:[0-9A-Fa-f]{3}|[0-9A-Fa-f]{6})")
_RAIL_NAMES = {
    "lightning": "lightning",
    "card": "card",
    "onchain": "onchain",
    "on-chain": "onchain",
    "on_chain": "onchain",
}
OPEN_SUBSCRIPTION = ("active", "past_due")

# --- field rules (admin-api.md 21.5) -------------------------------------------------------


def clean_profile_name(value: str) -> str:
    name = value.strip()
    if not name:
        raise bad_request("merchant profile name required")
    if len(name) > NAME_MAX:
        raise bad_request(f"field 'name' is too long (max {NAME_MAX} characters)")
    return name


def _text(field: str, value: str, limit: int) -> str | None:
    """Trimmed; empty means "not set" (admin-api.md 12.2)."""
    text = value.strip()
    if len(text) > limit:
        raise bad_request(f"field '{field}' is too long (max {limit} characters)")
    return text or None


def clean_http_url(field: str, value: str) -> str | None:
    text = _text(field, value, URL_MAX)
    if text is None:
        return None
    try:
        parts = urlsplit(text)
        absolute = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed authority, such as an unclosed IPv6 bracket
        absolute = False
    if not absolute or any(ch.isspace() or ord(ch) < 0x20 for ch in text):
        raise bad_request(f"field '{field}' must be an absolute http(s) URL")
    return text


def clean_email(field: str, value: str) -> str | None:
    text = _text(field, value, EMAIL_MAX)
    if text is None:
        return None
    local, at, domain = text.partition("@")
    if not at or not local or not domain or "@" in domain or any(ch.isspace() for ch in text):
        raise bad_request(f"field '{field}' must be an e-mail address")
    return text


def clean_brand_color(value: str) -> str | None:
    text = value.strip()
    if not text:
        return None
    if not _BRAND_COLOR.fullmatch(text):
        raise bad_request("field 'brand_color' must be a #RGB or #RRGGBB hex colour")
    return text


def clean_smtp_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise bad_request("field 'smtp_port' must be between 1 and 65535")
    return value


def clean_smtp_password(value: str) -> str | None:
    # A password is taken exactly as given: spaces may be part of it.
    if len(value) > SMTP_PASSWORD_MAX:
        raise bad_request(f"field 'smtp_password' is too long (max {SMTP_PASSWORD_MAX} characters)")
    return value or None


def _limited(field: str, limit: int) -> Callable[[str], str | None]:
    return lambda value: _text(field, value, limit)


# Every optional field with its rule; `None` always clears (admin-api.md 12.4).
_OPTIONAL_FIELDS: dict[str, Callable[[Any], Any]] = {
    "legal_name": _limited("legal_name", NAME_MAX),
    "support_url": lambda value: clean_http_url("support_url", value),
    "support_email": lambda value: clean_email("support_email", value),
    "brand_color": clean_brand_color,
    "post_purchase_redirect_url": lambda value: clean_http_url("post_purchase_redirect_url", value),
    "smtp_host": _limited("smtp_host", SMTP_HOST_MAX),
    "smtp_port": clean_smtp_port,
    "smtp_username": _limited("smtp_username", SMTP_USERNAME_MAX),
    "smtp_password": clean_smtp_password,
    "smtp_from_address": lambda value: clean_email("smtp_from_address", value),
    "smtp_from_name": _limited("smtp_from_name", NAME_MAX),
}


def parse_rail_path(text: str) -> str:
    rail = _RAIL_NAMES.get(text)
    if rail is None:
        raise bad_request(f"unknown rail '{text}'; accepted: lightning, onchain, card")
    return rail


# --- JSON ----------------------------------------------------------------------------------


def profile_json(profile: MerchantProfile) -> dict[str, Any]:
    """Profile JSON (admin-api.md 21.5); the SMTP password is write-only."""
    return {
        "id": profile.id,
        "name": profile.name,
        "legal_name": profile.legal_name,
        "support_url": profile.support_url,
        "support_email": profile.support_email,
        "brand_color": profile.brand_color,
        "post_purchase_redirect_url": profile.post_purchase_redirect_url,
        "is_default": profile.is_default,
        "smtp_configured": profile.smtp_host is not None,
        "smtp_host": profile.smtp_host,
        "smtp_port": profile.smtp_port,
        "smtp_username": profile.smtp_username,
        "smtp_from_address": profile.smtp_from_address,
        "smtp_from_name": profile.smtp_from_name,
        "smtp_use_starttls": profile.smtp_use_starttls,
        "created_at": format_ts(profile.created_at),
        "updated_at": format_ts(profile.updated_at),
    }


# --- reads ---------------------------------------------------------------------------------


async def _count(session: AsyncSession, query: sa.Select[Any]) -> int:
    return int((await session.execute(query)).scalar_one())


async def profile_count(session: AsyncSession) -> int:
    return await _count(session, sa.select(sa.func.count()).select_from(MerchantProfile))


async def _profile_or_404(
    session: AsyncSession, raw_id: str, *, lock: bool = False
) -> MerchantProfile:
    canonical = normalize_id(raw_id)
    profile = None
    if canonical is not None:
        query = sa.select(MerchantProfile).where(MerchantProfile.id == canonical)
        if lock:
            query = query.with_for_update()
        profile = (await session.execute(query)).scalar_one_or_none()
    if profile is None:
        raise not_found(f"merchant profile '{raw_id}'")
    return profile


async def list_profiles(session: AsyncSession) -> list[dict[str, Any]]:
    """The default profile first, then the newest (admin-api.md 12.1)."""
    query = sa.select(MerchantProfile).order_by(
        MerchantProfile.is_default.desc(), MerchantProfile.created_at.desc(), MerchantProfile.id
    )
    profiles: Sequence[MerchantProfile] = (await session.execute(query)).scalars().all()
    providers = (
        await session.execute(
            sa.select(PaymentProvider).order_by(PaymentProvider.connected_at, PaymentProvider.id)
        )
    ).scalars()
    by_profile: dict[str, list[dict[str, Any]]] = {profile.id: [] for profile in profiles}
    for row in providers:
        by_profile.setdefault(row.merchant_profile_id, []).append(provider_summary(row))
    return [{**profile_json(p), "providers": by_profile[p.id]} for p in profiles]


async def profile_detail(session: AsyncSession, raw_id: str) -> dict[str, Any]:
    profile = await _profile_or_404(session, raw_id)
    preferences = (
        await session.execute(
            sa.select(RailPreference).where(RailPreference.merchant_profile_id == profile.id)
        )
    ).scalars()
    products = await _count(
        session, sa.select(sa.func.count()).where(Product.merchant_profile_id == profile.id)
    )
    subscriptions = await _count(
        session,
        sa.select(sa.func.count()).where(
            Subscription.merchant_profile_id == profile.id,
            Subscription.status.in_(OPEN_SUBSCRIPTION),
        ),
    )
    return {
        **profile_json(profile),
        "providers": [provider_summary(row) for row in await providers_of(session, profile.id)],
        "rail_preferences": [
            {"rail": row.rail, "payment_provider_id": row.payment_provider_id}
            for row in sorted(preferences, key=lambda row: RAILS.index(row.rail))
        ],
        "product_count": products,
        "active_subscription_count": subscriptions,
    }


# --- writes --------------------------------------------------------------------------------


async def enforce_profile_cap(session: AsyncSession, tier: Tier) -> None:
    check_merchant_profile_cap(tier, await profile_count(session))


async def create_profile(
    session: AsyncSession, tier: Tier, actor: Actor, body: ProfileCreate
) -> MerchantProfile:
    # Checked again inside the write transaction, so two racing creates cannot both pass.
    await enforce_profile_cap(session, tier)
    at = now()
    profile = MerchantProfile(
        id=new_id(),
        name=clean_profile_name(body.name),
        is_default=False,
        smtp_use_starttls=True if body.smtp_use_starttls is None else body.smtp_use_starttls,
        created_at=at,
        updated_at=at,
    )
    for field, rule in _OPTIONAL_FIELDS.items():
        value = getattr(body, field)
        setattr(profile, field, None if value is None else rule(value))
    session.add(profile)
    record_audit(
        session,
        actor,
        "merchant_profile.create",
        "merchant_profile",
        profile.id,
        {"name": profile.name},
    )
    return profile


async def update_profile(
    session: AsyncSession, actor: Actor, raw_id: str, body: ProfilePatch
) -> MerchantProfile:
    profile = await _profile_or_404(session, raw_id)
    sent = body.model_fields_set
    # Validate every field before changing any, so a refused patch changes nothing.
    changes: dict[str, Any] = {}
    if body.name is not None:
        changes["name"] = clean_profile_name(body.name)
    if body.smtp_use_starttls is not None:
        changes["smtp_use_starttls"] = body.smtp_use_starttls
    for field, rule in _OPTIONAL_FIELDS.items():
        if field in sent:
            value = getattr(body, field)
            changes[field] = None if value is None else rule(value)
    for field, value in changes.items():
        setattr(profile, field, value)
    profile.updated_at = now()
    record_audit(
        session,
        actor,
        "merchant_profile.update",
        "merchant_profile",
        profile.id,
        {"name": profile.name},
    )
    return profile


async def delete_profile(session: AsyncSession, actor: Actor, raw_id: str) -> dict[str, Any]:
    # The row lock makes a concurrent product or provider insert on this profile wait for
    # the outcome instead of slipping in between the checks and the delete.
    profile = await _profile_or_404(session, raw_id, lock=True)
    name = profile.name
    if profile.is_default:
        raise conflict(
            "the default merchant profile cannot be deleted; make another one the default first"
        )
    products = await _count(
        session, sa.select(sa.func.count()).where(Product.merchant_profile_id == profile.id)
    )
    if products:
        raise conflict(
            f"merchant profile '{name}' has {products} product(s); move or delete them first"
        )
    open_subscriptions = await _count(
        session,
        sa.select(sa.func.count()).where(
            Subscription.merchant_profile_id == profile.id,
            Subscription.status.in_(OPEN_SUBSCRIPTION),
        ),
    )
    if open_subscriptions:
        raise conflict(
            f"merchant profile '{name}' has {open_subscriptions} active or past-due subscription(s)"
        )
    if await providers_of(session, profile.id):
        raise conflict(
            f"merchant profile '{name}' has payment providers connected; disconnect them first"
        )
    await session.execute(
        sa.delete(RailPreference).where(RailPreference.merchant_profile_id == profile.id)
    )
    await session.execute(
        sa.delete(BTCPayAuthorizeState).where(
            BTCPayAuthorizeState.merchant_profile_id == profile.id
        )
    )
    await session.execute(
        sa.update(Subscription)
        .where(Subscription.merchant_profile_id == profile.id)
        .values(merchant_profile_id=None)
    )
    await session.delete(profile)
    record_audit(
        session, actor, "merchant_profile.delete", "merchant_profile", profile.id, {"name": name}
    )
    return {"ok": True, "id": profile.id}


async def set_default(session: AsyncSession, actor: Actor, raw_id: str) -> dict[str, Any]:
    profile = await _profile_or_404(session, raw_id, lock=True)
    # Clear first: the partial unique index allows one default row at any moment.
    await session.execute(
        sa.update(MerchantProfile)
        .where(MerchantProfile.is_default.is_(True), MerchantProfile.id != profile.id)
        .values(is_default=False, updated_at=now())
        .execution_options(synchronize_session=False)
    )
    if not profile.is_default:
        profile.is_default = True
        profile.updated_at = now()
    record_audit(session, actor, "merchant_profile.set_default", "merchant_profile", profile.id, {})
    return {"ok": True, "id": profile.id}


async def set_rail_preference(
    session: AsyncSession, actor: Actor, raw_id: str, rail: str, provider_id: str
) -> dict[str, Any]:
    """admin-api.md 12.7: the provider must exist, belong to this profile, serve the rail."""
    profile = await _profile_or_404(session, raw_id)
    canonical = normalize_id(provider_id)
    provider = await session.get(PaymentProvider, canonical) if canonical else None
    if provider is None:
        raise bad_request(f"payment provider '{provider_id}' does not exist")
    if provider.merchant_profile_id != profile.id:
        raise bad_request(
            f"payment provider '{provider_id}' is not attached to merchant profile '{profile.name}'"
        )
    if rail not in SERVED_RAILS[provider.kind]:
        raise bad_request(f"a {provider.kind} provider does not serve the '{rail}' rail")
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(RailPreference).values(
        merchant_profile_id=profile.id, rail=rail, payment_provider_id=provider.id
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["merchant_profile_id", "rail"],
            set_={"payment_provider_id": statement.excluded.payment_provider_id},
        )
    )
    details = {"rail": rail, "payment_provider_id": provider.id}
    record_audit(
        session,
        actor,
        "merchant_profile.rail_preference.set",
        "merchant_profile",
        profile.id,
        details,
    )
    return {"ok": True, "merchant_profile_id": profile.id, **details}


async def clear_rail_preference(
    session: AsyncSession, actor: Actor, raw_id: str, rail: str
) -> dict[str, Any]:
    profile = await _profile_or_404(session, raw_id)
    await session.execute(
        sa.delete(RailPreference).where(
            RailPreference.merchant_profile_id == profile.id, RailPreference.rail == rail
        )
    )
    record_audit(
        session,
        actor,
        "merchant_profile.rail_preference.clear",
        "merchant_profile",
        profile.id,
        {"rail": rail},
    )
    return {"ok": True, "merchant_profile_id": profile.id, "rail": rail}
