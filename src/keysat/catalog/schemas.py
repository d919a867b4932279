"""Wire shapes of the catalog: admin products and policies, and the public catalog.

Request models are validated strictly (no coercion between JSON types). PATCH models type
every field `X | None = None`; the service reads `model_fields_set` to tell an omitted
field from an explicit `null` (admin-api.md 0.4).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

# The admin API's `int` is a signed 64-bit integer (admin-api.md 0.2); anything wider
# would only fail later, in the database.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


# --- requests -----------------------------------------------------------------------------


class CatalogEntryIn(BaseModel):
    slug: str
    name: str
    description: str | None = None


class ProductCreate(BaseModel):
    slug: str
    name: str
    description: str | None = None
    price_sats: Int64 | None = None
    price_currency: str | None = None
    price_value: Int64 | None = None
    metadata: dict[str, Any] | None = None
    entitlements_catalog: list[CatalogEntryIn] | None = None
    merchant_profile_id: str | None = None


class ProductPatch(BaseModel):
    slug: str | None = None
    name: str | None = None
    description: str | None = None
    price_sats: Int64 | None = None
    price_currency: str | None = None
    price_value: Int64 | None = None
    metadata: dict[str, Any] | None = None
    entitlements_catalog: list[CatalogEntryIn] | None = None
    merchant_profile_id: str | None = None


class ActiveBody(BaseModel):
    active: bool


class PublicBody(BaseModel):
    public: bool


class ArchivedBody(BaseModel):
    archived: bool


class PolicyTarget(BaseModel):
    """The part of a policy create read before the product lookup and the cap check."""

    product_slug: str


class PolicyCreate(BaseModel):
    product_slug: str
    name: str
    slug: str
    duration_seconds: Int64 | None = None
    grace_seconds: Int64 | None = None
    max_machines: Int64 | None = None
    is_trial: bool | None = None
    price_sats_override: Int64 | None = None
    entitlements: list[str] | None = None
    metadata: dict[str, Any] | None = None
    tip_recipient: str | None = None
    tip_pct_bps: Int64 | None = None
    tip_label: str | None = None
    is_recurring: bool | None = None
    renewal_period_days: Int64 | None = None
    grace_period_days: Int64 | None = None
    trial_days: Int64 | None = None
    tier_rank: Int64 | None = None
    allow_repeat_trials: bool | None = None


class PolicyPatch(BaseModel):
    name: str | None = None
    duration_seconds: Int64 | None = None
    grace_seconds: Int64 | None = None
    max_machines: Int64 | None = None
    is_trial: bool | None = None
    price_sats_override: Int64 | None = None
    entitlements: list[str] | None = None
    metadata: dict[str, Any] | None = None
    is_recurring: bool | None = None
    renewal_period_days: Int64 | None = None
    grace_period_days: Int64 | None = None
    trial_days: Int64 | None = None
    tier_rank: Int64 | None = None
    allow_repeat_trials: bool | None = None


class TipBody(BaseModel):
    tip_recipient: str | None = None
    tip_pct_bps: Int64
    tip_label: str | None = None


# --- responses ----------------------------------------------------------------------------


class CatalogEntryOut(BaseModel):
    slug: str
    name: str
    description: str


class ProductOut(BaseModel):
    id: str
    slug: str
    name: str
    description: str
    price_sats: int
    price_currency: str
    price_value: int
    active: bool
    metadata: dict[str, Any]
    entitlements_catalog: list[CatalogEntryOut] | None
    merchant_profile_id: str | None
    created_at: str
    updated_at: str


class ProductList(BaseModel):
    products: list[ProductOut]


class ProductDeleted(BaseModel):
    ok: bool
    deleted: str
    force: bool
    cascaded_policies: int
    cascaded_codes: int
    cascaded_licenses: int
    cascaded_invoices: int
    cascaded_machines: int
    cascaded_redemptions: int
    cascaded_subscriptions: int


class PolicyOut(BaseModel):
    id: str
    product_id: str
    name: str
    slug: str
    duration_seconds: int
    grace_seconds: int
    max_machines: int
    is_trial: bool
    price_sats_override: int | None
    entitlements: list[str]
    metadata: dict[str, Any]
    active: bool
    public: bool
    tip_recipient: str | None
    tip_pct_bps: int
    tip_label: str | None
    is_recurring: bool
    renewal_period_days: int
    grace_period_days: int
    trial_days: int
    tier_rank: int | None
    allow_repeat_trials: bool
    archived_at: str | None
    created_at: str
    updated_at: str


class PolicyList(BaseModel):
    policies: list[PolicyOut]


class PolicyDeleted(BaseModel):
    ok: bool
    deleted: str
    force: bool
    cascaded_licenses: int
    cascaded_invoices: int
    cascaded_machines: int
    cascaded_redemptions: int
    cascaded_subscriptions: int
    disabled_codes: int


class ArchivedOut(BaseModel):
    ok: bool
    archived: bool


class FeaturedDiscountOut(BaseModel):
    code: str
    kind: str
    amount: int
    description: str | None
    expires_at: str | None
    max_uses: int | None
    used_count: int
    remaining_uses: int | None
    discount_applied_sats: int
    discounted_price_sats: int


class PublicTierProduct(BaseModel):
    slug: str
    name: str
    description: str
    base_price_sats: int
    price_currency: str
    entitlements_catalog: list[CatalogEntryOut]


class PublicPolicyOut(BaseModel):
    slug: str
    name: str
    description: str
    price_sats: int
    price_currency: str
    duration_seconds: int
    max_machines: int
    is_trial: bool
    entitlements: list[str]
    marketing_bullets: list[str]
    marketing_bullets_position: str
    hidden_entitlements: list[str]
    highlighted: bool
    is_recurring: bool
    renewal_period_days: int
    trial_days: int
    featured_discount: FeaturedDiscountOut | None


class PublicPolicyList(BaseModel):
    product: PublicTierProduct
    policies: list[PublicPolicyOut]
