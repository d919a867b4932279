"""Tier gating (access.md 9): caps and feature gates lifted by self-license entitlements.

Until self-licensing lands, a server outside sandbox mode is on the Creator tier (no
entitlements); sandbox mode unlocks everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from keysat.errors import ApiError
from keysat.settings import Settings

UPGRADE_URL = "https://licensing.keysat.xyz/buy/keysat?policy=pro"

PRODUCT_CAP = 5
POLICY_CAP_PER_PRODUCT = 5
ACTIVE_CODE_CAP = 10


@dataclass(frozen=True)
class Tier:
    name: str
    entitlements: frozenset[str]
    sandbox: bool

    def unlocks(self, entitlement: str) -> bool:
        return self.sandbox or entitlement in self.entitlements


def current_tier(settings: Settings) -> Tier:
    if settings.sandbox_mode:
        return Tier(name="Sandbox", entitlements=frozenset(), sandbox=True)
    return Tier(name="Creator", entitlements=frozenset(), sandbox=False)


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
