"""Tier gating (access.md 9): caps and feature gates lifted by self-license entitlements;
sandbox mode unlocks everything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keysat.access.selflicense import SelfLicense
from keysat.errors import ApiError
from keysat.settings import Settings

UPGRADE_URL = "https://licensing.keysat.xyz/buy/keysat?policy=pro"
PATRON_UPGRADE_URL = "https://licensing.keysat.xyz/buy/keysat?policy=patron"

PRODUCT_CAP = 5
POLICY_CAP_PER_PRODUCT = 5
ACTIVE_CODE_CAP = 10
MERCHANT_PROFILE_CAP = 1


@dataclass(frozen=True)
class Tier:
    name: str
    entitlements: frozenset[str]
    sandbox: bool

    def unlocks(self, entitlement: str) -> bool:
        return self.sandbox or entitlement in self.entitlements


def tier_name(entitlements: frozenset[str]) -> str:
    """The display name (access.md 9.1); every gate checks its own entitlement instead."""
    if "patron" in entitlements:
        return "Patron"
    if "unlimited_products" in entitlements:
        return "Pro"
    return "Creator"


def current_tier(settings: Settings, self_license: SelfLicense) -> Tier:
    entitlements = frozenset(self_license.entitlements) if self_license.licensed else frozenset()
    if settings.sandbox_mode:
        return Tier(name="Sandbox", entitlements=entitlements, sandbox=True)
    return Tier(name=tier_name(entitlements), entitlements=entitlements, sandbox=False)


def licensed_tier(self_license: SelfLicense) -> str:
    """`creator`, `pro` or `patron`: what the self-license grants, sandbox mode or not."""
    entitlements = frozenset(self_license.entitlements) if self_license.licensed else frozenset()
    return tier_name(entitlements).lower()


def tier_report(tier: Tier, usage: dict[str, int]) -> dict[str, Any]:
    """GET /v1/admin/tier (access.md 9.4); `usage` holds the counts the caps compare."""

    def cap(entitlement: str, limit: int) -> int | None:
        return None if tier.unlocks(entitlement) else limit

    if tier.sandbox:
        name, next_tier, upgrade_url = "Sandbox", None, None
    else:
        name = tier_name(tier.entitlements)
        next_tier, upgrade_url = {
            "Creator": ("pro", UPGRADE_URL),
            "Pro": ("patron", PATRON_UPGRADE_URL),
            "Patron": (None, None),
        }[name]
    return {
        "tier": name.lower(),
        "tier_name": name,
        "sandbox": tier.sandbox,
        "entitlements": sorted(tier.entitlements),
        "usage": usage,
        "caps": {
            "products": cap("unlimited_products", PRODUCT_CAP),
            "policies_per_product": cap("unlimited_policies", POLICY_CAP_PER_PRODUCT),
            "active_codes": cap("unlimited_codes", ACTIVE_CODE_CAP),
            "merchant_profiles": cap("unlimited_merchant_profiles", MERCHANT_PROFILE_CAP),
        },
        "next_tier": next_tier,
        "upgrade_url": upgrade_url,
    }


def tier_cap(message: str) -> ApiError:
    return ApiError(402, "tier_cap", message, extra={"upgrade_url": UPGRADE_URL})


def check_product_cap(tier: Tier, product_count: int) -> None:
    if not tier.unlocks("unlimited_products") and product_count >= PRODUCT_CAP:
        raise tier_cap(
            f"Your {tier.name} tier allows up to {PRODUCT_CAP} products. You're at "
            f"{product_count}. Upgrade to Pro for unlimited products."
        )


def check_policy_cap(tier: Tier, policy_count: int) -> None:
    if not tier.unlocks("unlimited_policies") and policy_count >= POLICY_CAP_PER_PRODUCT:
        raise tier_cap(
            f"Your {tier.name} tier allows up to {POLICY_CAP_PER_PRODUCT} policies per product. "
            f"This product has {policy_count}. Upgrade to Pro for unlimited policies."
        )


def check_recurring_billing(tier: Tier) -> None:
    if not tier.unlocks("recurring_billing"):
        raise tier_cap(
            f"Recurring billing needs the Pro tier; your tier is {tier.name}. "
            "Upgrade to Pro to sell subscriptions."
        )


def check_code_cap(tier: Tier, active_codes: int) -> None:
    if not tier.unlocks("unlimited_codes") and active_codes >= ACTIVE_CODE_CAP:
        raise tier_cap(
            f"Your {tier.name} tier allows up to {ACTIVE_CODE_CAP} active discount codes. "
            f"You're at {active_codes}. Disable an old code to free up a slot, or upgrade to "
            "Pro for unlimited."
        )


def check_zaprite(tier: Tier) -> None:
    if not tier.unlocks("zaprite_payments"):
        raise tier_cap(
            f"Zaprite payments need the Pro tier; your tier is {tier.name}. "
            "Upgrade to Pro to accept cards through Zaprite."
        )


def check_merchant_profile_cap(tier: Tier, profile_count: int) -> None:
    if not tier.unlocks("unlimited_merchant_profiles") and profile_count >= MERCHANT_PROFILE_CAP:
        raise tier_cap(
            f"Your {tier.name} tier allows {MERCHANT_PROFILE_CAP} merchant profile. You have "
            f"{profile_count}. Upgrade to Pro for unlimited merchant profiles."
        )
