"""The tier report and the self-license endpoints (admin-api.md 18; access.md 9.4-9.8)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import Actor
from keysat.access.selflicense import (
    STORED_KEY_SETTING,
    InvalidSelfLicense,
    SelfLicense,
    SelfLicensing,
    check_self_license,
)
from keysat.access.tier import Tier, tier_report
from keysat.billing.models import DiscountCode
from keysat.catalog.models import Product
from keysat.clock import clock
from keysat.db import Database
from keysat.errors import ApiError, bad_request, conflict
from keysat.keys import unix_seconds
from keysat.operator.models import MerchantProfile
from keysat.operator.service import put_setting, record_audit
from keysat.settings import Settings


def license_invalid(reason: str) -> ApiError:
    return ApiError(400, "license_invalid", f"license invalid: {reason}", extra={"detail": reason})


def tagged(state: SelfLicense) -> dict[str, Any]:
    """The self-license as admin-api.md 18.2 shows it; `expires_at` in unix seconds."""
    if not state.licensed:
        return {"tier": "unlicensed", "reason": state.reason or ""}
    return {
        "tier": "licensed",
        "license_id": state.license_id,
        "product_id": state.product_id,
        "expires_at": state.expires_at,
        "entitlements": list(state.entitlements),
        "source": state.source,
    }


def activation_message(license_id: str, expires_at: int, entitlements: tuple[str, ...]) -> str:
    lifetime = "perpetual" if expires_at == 0 else f"expires unix={expires_at}"
    granted = ",".join(entitlements) or "(none)"
    return f"License {license_id} verified — {lifetime}, entitlements={granted}."


async def usage(session: AsyncSession) -> dict[str, int]:
    """What the caps count (access.md 9.2, 9.4)."""

    async def count(query: sa.Select[Any]) -> int:
        return int((await session.execute(query)).scalar_one())

    return {
        "products": await count(sa.select(sa.func.count()).select_from(Product)),
        "active_codes": await count(
            sa.select(sa.func.count()).where(DiscountCode.active.is_(True))
        ),
        "merchant_profiles": await count(sa.select(sa.func.count()).select_from(MerchantProfile)),
    }


async def report(db: Database, tier: Tier) -> dict[str, Any]:
    async with db.read() as session:
        return tier_report(tier, await usage(session))


async def activate(
    db: Database, settings: Settings, self_license: SelfLicensing, actor: Actor, key: str | None
) -> dict[str, Any]:
    """admin-api.md 18.3, checks in its order; the pass after storing decides the tier."""
    text = (key or "").strip()
    if not text:
        raise bad_request("license_key is required")
    if settings.self_license:
        raise conflict("KEYSAT_LICENSE is set; the environment overrides any activated key")
    try:
        parsed = check_self_license(text, self_license.root, unix_seconds(clock.real_now()))
    except InvalidSelfLicense as exc:
        raise license_invalid(str(exc)) from None
    license_id = str(parsed.license_id)
    async with db.write() as session:
        await put_setting(session, STORED_KEY_SETTING, text)
        record_audit(
            session,
            actor,
            "self_license.activate",
            "self_license",
            license_id,
            {
                "license_id": license_id,
                "product_id": str(parsed.product_id),
                "expires_at": parsed.expires_at,
                "entitlements": list(parsed.entitlements),
            },
        )
    state = await self_license.refresh()
    return {
        "ok": True,
        "tier": tagged(state),
        "message": activation_message(license_id, parsed.expires_at, parsed.entitlements),
    }
