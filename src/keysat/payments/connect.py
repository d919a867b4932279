"""Connecting and disconnecting providers, and their status (payments.md 4.6-4.9, 5.7;
admin-api.md 10-11). Network calls happen between transactions, never inside one."""

from __future__ import annotations

import base64
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import Actor
from keysat.access.tier import Tier, check_zaprite
from keysat.clock import clock, now
from keysat.db import Database
from keysat.errors import ApiError, bad_request, conflict, not_found, unauthorized
from keysat.operator.models import MerchantProfile
from keysat.operator.service import default_profile, record_audit
from keysat.outbound import UpstreamError
from keysat.payments.btcpay import AUTHORIZE_PERMISSIONS, BTCPayClient, detect_network
from keysat.payments.models import BTCPayAuthorizeState, PaymentProvider
from keysat.payments.provider import SERVED_RAILS
from keysat.payments.service import Providers, no_provider_configured, providers_of
from keysat.payments.zaprite import DEFAULT_BASE_URL, WEBHOOK_EXPLAINER, ZapriteClient
from keysat.settings import Settings
from keysat.wire import format_ts, new_id, normalize_id

log = logging.getLogger(__name__)

STATE_LIFETIME = timedelta(minutes=30)
LABEL_MAX = 80


def random_base32(size: int) -> str:
    return base64.b32encode(secrets.token_bytes(size)).decode().rstrip("=")


def upstream(detail: str) -> ApiError:
    return ApiError(502, "upstream_error", f"upstream error: {detail}")


def provider_summary(row: PaymentProvider) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "label": row.label,
        "base_url": row.base_url,
        "store_id": row.store_id,
        "webhook_id": row.webhook_id,
        "connected_at": format_ts(row.connected_at),
        "served_rails": list(SERVED_RAILS[row.kind]),
    }


def clean_label(label: str | None, default: str) -> str:
    text = (label or "").strip()
    if len(text) > LABEL_MAX:
        raise bad_request(f"label is too long (max {LABEL_MAX} characters)")
    return text or default


async def profile_or_404(session: AsyncSession, raw_id: str | None) -> MerchantProfile:
    if raw_id is None:
        return await default_profile(session)
    canonical = normalize_id(raw_id)
    profile = await session.get(MerchantProfile, canonical) if canonical else None
    if profile is None:
        raise not_found(f"merchant profile '{raw_id}'")
    return profile


async def provider_of_kind(
    session: AsyncSession, profile_id: str, kind: str
) -> PaymentProvider | None:
    query = sa.select(PaymentProvider).where(
        PaymentProvider.merchant_profile_id == profile_id, PaymentProvider.kind == kind
    )
    return (await session.execute(query)).scalar_one_or_none()


def second_provider(profile: MerchantProfile, kind: str) -> ApiError:
    label = "BTCPay" if kind == "btcpay" else "Zaprite"
    return conflict(f"merchant profile '{profile.name}' already has a {label} provider")


async def refuse_second(session: AsyncSession, profile: MerchantProfile, kind: str) -> None:
    """At most one provider of each kind per merchant profile."""
    if await provider_of_kind(session, profile.id, kind) is not None:
        raise second_provider(profile, kind)


def webhook_url(settings: Settings, kind: str, provider_id: str) -> str:
    return f"{settings.public_url}/v1/{kind}/webhook/{provider_id}"


# --- BTCPay: the one-click authorize flow -------------------------------------------------


async def btcpay_connect_start(
    db: Database,
    settings: Settings,
    actor: Actor,
    profile_id: str | None,
    label: str | None,
) -> dict[str, Any]:
    if not settings.btcpay.url:
        raise no_provider_configured("BTCPAY_URL is not set")
    async with db.write() as session:
        profile = await profile_or_404(session, profile_id)
        await refuse_second(session, profile, "btcpay")
        at = clock.real_now()
        await session.execute(
            sa.delete(BTCPayAuthorizeState).where(
                BTCPayAuthorizeState.created_at < at - STATE_LIFETIME
            )
        )
        token = random_base32(20)
        session.add(
            BTCPayAuthorizeState(
                state_token=token,
                created_at=at,
                merchant_profile_id=profile.id,
                label=clean_label(label, f"BTCPay — {profile.name}"),
                scoped_initiator=actor.kind == "scoped_api_key",
                initiator_actor_kind=actor.kind,
                initiator_actor_hash=actor.hash,
                initiator_actor_id=actor.id,
            )
        )
    callback = f"{settings.public_url}/v1/btcpay/authorize/callback?state={token}"
    query = urlencode(
        {
            "applicationName": "Keysat",
            "applicationIdentifier": "keysat",
            "strict": "true",
            "selectiveStores": "true",
            "redirect": callback,
        },
        quote_via=quote,
    )
    permissions = "".join(f"&permissions={quote(p, safe='')}" for p in AUTHORIZE_PERMISSIONS)
    base = settings.btcpay.authorize_base
    return {
        "authorize_url": f"{base}/api-keys/authorize?{query}{permissions}",
        "state": token,
        "merchant_profile_id": profile.id,
    }


@dataclass(frozen=True)
class Connected:
    provider_id: str
    store_id: str
    network: str
    profile_name: str


def granted_store_ids(permissions: list[str]) -> list[str]:
    """Store-scoped permissions arrive as `<permission>:<storeId>`."""
    stores: list[str] = []
    for permission in permissions:
        _, sep, store = permission.partition(":")
        if sep and store and store not in stores:
            stores.append(store)
    return stores


async def btcpay_callback(
    db: Database,
    settings: Settings,
    providers: Providers,
    state_token: str,
    api_key: str,
    permissions: list[str],
) -> Connected:
    """Completes the authorize flow (payments.md 4.6, callback steps 1-8)."""
    async with db.write() as session:
        state = await session.get(BTCPayAuthorizeState, state_token)
        if state is None:
            raise unauthorized()
        # A conditional delete, so that of two concurrent callbacks with one state only
        # one consumes it (on PostgreSQL both may have read the row).
        consumed = await session.execute(
            sa.delete(BTCPayAuthorizeState)
            .where(BTCPayAuthorizeState.state_token == state_token)
            .execution_options(synchronize_session=False)
        )
        if consumed.rowcount != 1:  # type: ignore[attr-defined]
            raise unauthorized()
        expired = clock.real_now() - state.created_at > STATE_LIFETIME
    if expired:
        raise unauthorized()
    if not settings.btcpay.url:
        raise no_provider_configured("BTCPAY_URL is not set")
    async with db.read() as session:
        profile = await session.get(MerchantProfile, state.merchant_profile_id)
        if profile is None:
            raise bad_request("the merchant profile of this connect was deleted")
        await refuse_second(session, profile, "btcpay")
    client = BTCPayClient(providers.http, settings.btcpay.url, api_key)
    try:
        stores = [store for store in await client.list_stores() if isinstance(store.get("id"), str)]
    except UpstreamError as exc:
        raise upstream(f"BTCPay store lookup failed: {exc}") from None
    granted = granted_store_ids(permissions)
    named = [store for store in stores if store["id"] in granted]
    candidates = named or stores
    if not candidates:
        raise bad_request("the BTCPay API key gives access to no store")
    store_id = str(candidates[0]["id"])
    network = await detect_network(client, store_id)
    if settings.sandbox_mode and network not in ("testnet", "regtest"):
        raise bad_request(
            f"that store is on {'mainnet' if network == 'mainnet' else 'an unknown network'}; "
            "in sandbox mode only test-network stores can be connected"
        )
    provider_id = new_id()
    secret = random_base32(32)
    try:
        registered = await client.register_webhook(
            store_id, webhook_url(settings, "btcpay", provider_id), secret
        )
    except UpstreamError as exc:
        raise upstream(f"BTCPay webhook registration failed: {exc}") from None
    returned_secret = registered.get("secret")
    webhook_id = registered.get("id")
    at = now()
    initiator = Actor(
        kind=state.initiator_actor_kind,
        hash=state.initiator_actor_hash,
        id=state.initiator_actor_id,
    )
    async with db.write() as session:
        await refuse_second(session, profile, "btcpay")
        session.add(
            PaymentProvider(
                id=provider_id,
                merchant_profile_id=profile.id,
                kind="btcpay",
                label=state.label,
                api_key=api_key,
                base_url=settings.btcpay.url,
                store_id=store_id,
                webhook_id=webhook_id if isinstance(webhook_id, str) else None,
                webhook_secret=(
                    returned_secret
                    if isinstance(returned_secret, str) and returned_secret
                    else secret
                ),
                network=network,
                connected_at=at,
                updated_at=at,
            )
        )
        try:
            await session.flush()
        except sa.exc.IntegrityError:
            # A concurrent connect of the same profile committed first (PostgreSQL).
            raise second_provider(profile, "btcpay") from None
        action = (
            "payment_provider.connect_scoped"
            if state.scoped_initiator
            else "payment_provider.connect"
        )
        record_audit(
            session,
            initiator,
            action,
            "payment_provider",
            provider_id,
            {
                "kind": "btcpay",
                "store_id": store_id,
                "merchant_profile_id": profile.id,
                "network": network,
            },
        )
    return Connected(provider_id, store_id, network, profile.name)


async def seed_btcpay_from_environment(db: Database, settings: Settings) -> None:
    """config.md 3.5: the headless BTCPay seed, when the default profile has none yet."""
    seed = settings.btcpay
    if not seed.seed_complete:
        return
    try:
        async with db.write() as session:
            profile = await default_profile(session)
            if await provider_of_kind(session, profile.id, "btcpay") is not None:
                return
            at = now()
            session.add(
                PaymentProvider(
                    id=new_id(),
                    merchant_profile_id=profile.id,
                    kind="btcpay",
                    label=f"BTCPay — {profile.name}",
                    api_key=seed.api_key,
                    base_url=seed.url,
                    store_id=seed.store_id,
                    webhook_secret=seed.webhook_secret,
                    network="unknown",
                    connected_at=at,
                    updated_at=at,
                )
            )
    except sa.exc.IntegrityError:
        return  # another process on this database seeded it at the same moment
    log.info("BTCPay store %s connected from the BTCPAY_* environment", seed.store_id)


# --- disconnect and status ----------------------------------------------------------------


async def find_for_disconnect(
    session: AsyncSession, kind: str, provider_id: str | None
) -> PaymentProvider | None:
    if provider_id is None:
        return await provider_of_kind(session, (await default_profile(session)).id, kind)
    canonical = normalize_id(provider_id)
    row = await session.get(PaymentProvider, canonical) if canonical else None
    if row is None or row.kind != kind:
        raise not_found(f"payment provider '{provider_id}'")
    return row


async def delete_provider(
    db: Database, actor: Actor, provider_id: str, details: dict[str, Any]
) -> None:
    """Rail preferences go with the row; invoices keep theirs with the reference cleared."""
    async with db.write() as session:
        await session.execute(sa.delete(PaymentProvider).where(PaymentProvider.id == provider_id))
        record_audit(
            session, actor, "payment_provider.disconnect", "payment_provider", provider_id, details
        )


async def btcpay_disconnect(
    db: Database, providers: Providers, actor: Actor, provider_id: str | None
) -> dict[str, Any]:
    async with db.read() as session:
        row = await find_for_disconnect(session, "btcpay", provider_id)
    if row is None:
        return {"ok": True, "noop": True, "message": "no BTCPay provider is connected"}
    warnings: list[str] = []
    client = providers.btcpay_client(row)
    if row.webhook_id and row.store_id:
        try:
            await client.delete_webhook(row.store_id, row.webhook_id)
        except UpstreamError as exc:
            warnings.append(f"could not delete the BTCPay webhook: {exc}")
    try:
        await client.revoke_api_key()
    except UpstreamError as exc:
        warnings.append(f"could not revoke the BTCPay API key: {exc}")
    await delete_provider(
        db,
        actor,
        row.id,
        {"kind": "btcpay", "store_id": row.store_id, "webhook_id": row.webhook_id},
    )
    return {
        "ok": True,
        "noop": False,
        "provider_id": row.id,
        "store_id": row.store_id,
        "webhook_id": row.webhook_id,
        "warnings": warnings,
    }


async def btcpay_status(session: AsyncSession, profile_id: str | None) -> dict[str, Any]:
    profile = await profile_or_404(session, profile_id)
    row = await provider_of_kind(session, profile.id, "btcpay")
    if row is None:
        return {"connected": False}
    return {
        "connected": True,
        "provider_id": row.id,
        "store_id": row.store_id,
        "webhook_id": row.webhook_id,
        "base_url": row.base_url,
        "label": row.label,
        "merchant_profile_id": profile.id,
        "merchant_profile_name": profile.name,
    }


async def btcpay_payment_methods(
    db: Database, providers: Providers, profile_id: str | None
) -> dict[str, Any]:
    async with db.read() as session:
        profile = await profile_or_404(session, profile_id)
        row = await provider_of_kind(session, profile.id, "btcpay")
    if row is None or not row.store_id:
        raise no_provider_configured(f"merchant profile '{profile.name}' has no BTCPay provider")
    try:
        methods = await providers.btcpay_client(row).payment_methods(row.store_id)
    except UpstreamError as exc:
        raise upstream(str(exc)) from None
    return {"store_id": row.store_id, "count": len(methods), "methods": methods}


async def zaprite_connect(
    db: Database,
    settings: Settings,
    providers: Providers,
    actor: Actor,
    *,
    api_key: str,
    base_url: str | None,
    label: str | None,
    profile_id: str | None,
) -> dict[str, Any]:
    key = api_key.strip()
    if not key:
        raise bad_request("api_key is required")
    base = (base_url or DEFAULT_BASE_URL).strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise bad_request("base_url must start with http:// or https://")
    async with db.read() as session:
        profile = await profile_or_404(session, profile_id)
        # The label is part of the body checks, which come before the 409 (admin-api.md 11.4).
        chosen_label = clean_label(label, f"Zaprite — {profile.name}")
        await refuse_second(session, profile, "zaprite")
    try:
        await ZapriteClient(providers.http, base, key).ping()
    except UpstreamError as exc:
        raise upstream(f"Zaprite rejected the key: {exc}") from None
    provider_id = new_id()
    at = now()
    async with db.write() as session:
        await refuse_second(session, profile, "zaprite")
        session.add(
            PaymentProvider(
                id=provider_id,
                merchant_profile_id=profile.id,
                kind="zaprite",
                label=chosen_label,
                api_key=key,
                base_url=base,
                connected_at=at,
                updated_at=at,
            )
        )
        record_audit(
            session,
            actor,
            "payment_provider.connect",
            "payment_provider",
            provider_id,
            {"kind": "zaprite", "merchant_profile_id": profile.id, "base_url": base},
        )
    return {
        "ok": True,
        "provider": "zaprite",
        "provider_id": provider_id,
        "merchant_profile_id": profile.id,
        "merchant_profile_name": profile.name,
        "label": chosen_label,
        "base_url": base,
        "webhook_url": webhook_url(settings, "zaprite", provider_id),
    }


def check_zaprite_allowed(settings: Settings, tier: Tier) -> None:
    """Zaprite takes real money: never in sandbox mode, and only on a tier that has it."""
    if settings.sandbox_mode:
        raise conflict("Zaprite takes real payments; it cannot be connected in sandbox mode")
    check_zaprite(tier)


async def zaprite_disconnect(db: Database, actor: Actor, provider_id: str | None) -> dict[str, Any]:
    async with db.read() as session:
        row = await find_for_disconnect(session, "zaprite", provider_id)
    if row is None:
        return {"ok": True, "noop": True, "message": "no Zaprite provider is connected"}
    await delete_provider(db, actor, row.id, {"kind": "zaprite"})
    return {
        "ok": True,
        "noop": False,
        "provider_id": row.id,
        "message": "Zaprite disconnected. Delete the webhook in your Zaprite dashboard too.",
    }


async def zaprite_status(
    session: AsyncSession, settings: Settings, profile_id: str | None
) -> dict[str, Any]:
    profile = await profile_or_404(session, profile_id)
    row = await provider_of_kind(session, profile.id, "zaprite")
    return {
        "connected": row is not None,
        "provider_id": row.id if row else None,
        "base_url": row.base_url if row else None,
        "label": row.label if row else None,
        "webhook_id": row.webhook_id if row else None,
        "merchant_profile_id": profile.id,
        "merchant_profile_name": profile.name,
        "webhook_url": (
            webhook_url(settings, "zaprite", row.id)
            if row
            else f"{settings.public_url}/v1/zaprite/webhook"
        ),
        "webhook_explainer": WEBHOOK_EXPLAINER,
    }


async def provider_status(session: AsyncSession) -> dict[str, Any]:
    """The compatibility summary of the default profile (admin-api.md 10.2)."""
    profile = await default_profile(session)
    rows = await providers_of(session, profile.id)
    kinds = {row.kind for row in rows}
    preferred = rows[0].kind if rows else None
    return {
        "btcpay_configured": "btcpay" in kinds,
        "zaprite_configured": "zaprite" in kinds,
        "preferred": preferred,
        "active": preferred,
        "merchant_profile_id": profile.id,
        "merchant_profile_name": profile.name,
        "providers": [
            {
                "id": row.id,
                "kind": row.kind,
                "label": row.label,
                "base_url": row.base_url,
                "store_id": row.store_id,
            }
            for row in rows
        ],
    }
