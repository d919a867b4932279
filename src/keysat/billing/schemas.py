"""Wire shapes of purchases, redemptions, discount codes, invoices and rates
(public-api.md 5-7, 10; admin-api.md 7, 8, 17, 21.4, 21.6)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from keysat.wire import StrictModel

Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
STRING_MAX = 1024


# --- public requests ------------------------------------------------------------------------


class PurchaseRequest(StrictModel):
    product: str = Field(max_length=STRING_MAX)
    policy_slug: str | None = Field(default=None, max_length=STRING_MAX)
    buyer_email: str | None = Field(default=None, max_length=STRING_MAX)
    buyer_note: str | None = Field(default=None, max_length=2000)
    code: str | None = Field(default=None, max_length=STRING_MAX)
    redirect_url: str | None = Field(default=None, max_length=2048)
    rail: str | None = Field(default=None, max_length=STRING_MAX)


class RedeemRequest(StrictModel):
    product: str = Field(max_length=STRING_MAX)
    code: str = Field(max_length=STRING_MAX)
    policy_slug: str | None = Field(default=None, max_length=STRING_MAX)
    buyer_email: str | None = Field(default=None, max_length=STRING_MAX)
    buyer_note: str | None = Field(default=None, max_length=2000)


class RecoverRequest(StrictModel):
    invoice_id: str = Field(max_length=STRING_MAX)
    email: str = Field(max_length=STRING_MAX)


# --- public responses -----------------------------------------------------------------------


class PurchaseResponse(BaseModel):
    invoice_id: str
    btcpay_invoice_id: str
    checkout_url: str
    amount_sats: int
    base_price_sats: int
    discount_applied_sats: int
    poll_url: str
    license_key: str | None = Field(default=None, description="free paths only; omitted when paid")
    license_id: str | None = Field(default=None, description="free paths only; omitted when paid")


class PollResponse(BaseModel):
    invoice_id: str
    status: str
    product_id: str
    amount_sats: int
    license_key: str | None
    license_id: str | None


class RedeemResponse(BaseModel):
    license_id: str
    license_key: str
    invoice_id: str
    redemption_id: str


class RecoverResponse(BaseModel):
    license_key: str
    license_id: str
    product_id: str
    issued_at: str
    expires_at: str | None
    entitlements: list[str]


class PreviewResponse(BaseModel):
    """`valid: true` carries the numbers; `valid: false` carries `reason` and `message`."""

    valid: bool
    base_price_sats: int
    message: str
    reason: str | None = None
    code: str | None = None
    kind: str | None = None
    is_free: bool | None = None
    discount_applied_sats: int | None = None
    final_price_sats: int | None = None
    amount_pct: float | None = None


# --- admin: discount codes ------------------------------------------------------------------


class DiscountCodeCreate(StrictModel):
    code: str = Field(max_length=STRING_MAX)
    kind: str = Field(max_length=STRING_MAX)
    amount: Int64
    discount_currency: str | None = Field(default=None, max_length=STRING_MAX)
    max_uses: Int64 | None = None
    expires_at: str | None = Field(default=None, max_length=64)
    product_slug: str | None = Field(default=None, max_length=STRING_MAX)
    policy_slug: str | None = Field(default=None, max_length=STRING_MAX)
    policy_slugs: list[str] | None = None
    referrer_label: str | None = Field(default=None, max_length=STRING_MAX)
    description: str | None = Field(default=None, max_length=10_000)
    featured: bool | None = None


class DiscountCodePatch(StrictModel):
    amount: Int64 | None = None
    max_uses: Int64 | None = None
    expires_at: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=10_000)
    referrer_label: str | None = Field(default=None, max_length=STRING_MAX)
    featured: bool | None = None
    policy_slugs: list[str] | None = None


class ActiveBody(StrictModel):
    active: bool


class DiscountCodeOut(BaseModel):
    id: str
    code: str
    kind: str
    amount: int
    discount_currency: str
    max_uses: int | None
    used_count: int
    expires_at: str | None
    applies_to_product_id: str | None
    applies_to_policy_id: str | None
    applies_to_policy_ids: list[str]
    referrer_label: str | None
    description: str
    active: bool
    featured: bool
    created_at: str
    updated_at: str


class RedemptionOut(BaseModel):
    id: str
    code_id: str
    invoice_id: str
    license_id: str | None
    status: str
    discount_applied_sats: int
    base_price_sats: int
    final_price_sats: int
    created_at: str
    updated_at: str


class DiscountCodeList(BaseModel):
    codes: list[DiscountCodeOut]


class DiscountCodeDetail(BaseModel):
    code: DiscountCodeOut
    redemptions: list[RedemptionOut]


class DeletedCode(BaseModel):
    ok: bool
    deleted: str


# --- admin: invoices, revenue, sandbox calls --------------------------------------------------


class InvoiceOut(BaseModel):
    id: str
    kind: str
    status: str
    product_id: str
    policy_id: str | None
    license_id: str | None
    subscription_id: str | None
    cycle_number: int | None
    amount_sats: int
    base_price_sats: int
    discount_applied_sats: int
    listed_currency: str | None
    listed_value: int | None
    exchange_rate_centibps: int | None
    exchange_rate_source: str | None
    provider_kind: str
    payment_provider_id: str | None
    provider_invoice_id: str
    checkout_url: str
    rail: str | None
    buyer_email: str | None
    buyer_note: str | None
    created_at: str
    updated_at: str
    settled_at: str | None


class InvoiceList(BaseModel):
    invoices: list[InvoiceOut]


class InvoiceDetail(BaseModel):
    invoice: InvoiceOut
    redemption: RedemptionOut | None


class RevenueSummary(BaseModel):
    total_sats: int
    last_24h_sats: int
    last_7d_sats: int
    last_30d_sats: int
    settled_paid_invoice_count: int


# --- admin: rates ---------------------------------------------------------------------------


class RateRefreshBody(StrictModel):
    currency: str = Field(max_length=STRING_MAX)


class RatePinBody(StrictModel):
    units_per_btc: str | int | float


class RateOut(BaseModel):
    currency: str
    units_per_btc: float
    source: str


class CachedRateOut(RateOut):
    fetched_at_secs_ago: int


class RateList(BaseModel):
    rates: list[CachedRateOut]


class PinCleared(BaseModel):
    ok: bool
    currency: str
