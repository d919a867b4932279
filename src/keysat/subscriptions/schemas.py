"""Wire shapes of subscriptions, tier changes and the sandbox clock (public-api.md 11-12;
admin-api.md 5.9, 9, 21.6)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from keysat.wire import StrictModel

KEY_MAX = 131_072
STRING_MAX = 1024
REASON_MAX = 1000


class CancelRequest(StrictModel):
    license_key: str = Field(max_length=KEY_MAX)
    reason: str | None = Field(default=None, max_length=REASON_MAX)


class QuoteRequest(StrictModel):
    license_key: str = Field(max_length=KEY_MAX)
    target_policy_slug: str = Field(max_length=STRING_MAX)


class UpgradeRequest(QuoteRequest):
    redirect_url: str | None = Field(default=None, max_length=2048)


class AdminCancelRequest(StrictModel):
    reason: str | None = Field(default=None, max_length=REASON_MAX)


class ChangeTierRequest(StrictModel):
    to_policy_slug: str = Field(max_length=STRING_MAX)
    skip_payment: bool = False
    reason: str | None = Field(default=None, max_length=REASON_MAX)


class ClockAdvance(StrictModel):
    seconds: int | None = None
    days: int | None = None


class CancelResponse(BaseModel):
    ok: bool
    subscription_id: str
    status: str | None = None
    already: str | None = None


class QuoteResponse(BaseModel):
    from_policy_id: str
    from_policy_slug: str
    to_policy_id: str
    to_policy_slug: str
    direction: str
    listed_currency: str
    proration_charge_value: int
    effective_at: str
    next_renewal_charge: int | None
    next_renewal_period_days: int | None


class UpgradeResponse(BaseModel):
    invoice_id: str
    provider_invoice_id: str
    checkout_url: str
    amount_sats: int
    proration_charge_value: int
    listed_currency: str
    tier_change_id: str
    from_policy_slug: str
    to_policy_slug: str


class ChangeTierResponse(BaseModel):
    ok: bool
    applied: bool
    license_id: str
    tier_change_id: str
    skip_payment: bool
    from_policy_slug: str
    to_policy_slug: str
    license_key: str | None = None
    effective_at: str | None = Field(
        default=None, description="comp only: when the change applies (now, or the renewal)"
    )
    invoice_id: str | None = None
    provider_invoice_id: str | None = None
    checkout_url: str | None = None
    amount_sats: int | None = None
    proration_charge_value: int | None = None
    listed_currency: str | None = None


class SubscriptionOut(BaseModel):
    id: str
    license_id: str
    policy_id: str
    product_id: str
    status: str
    listed_currency: str
    listed_value: int
    period_days: int
    started_at: str
    current_period_start: str
    next_renewal_at: str | None
    cancelled_at: str | None
    cancellation_reason: str | None
    lapsed_at: str | None
    consecutive_failures: int
    merchant_profile_id: str | None
    payment_provider_id: str | None
    provider_kind: str | None


class SubscriptionList(BaseModel):
    subscriptions: list[SubscriptionOut]


class ClockOut(BaseModel):
    now: str
    real_now: str
    offset_seconds: int


class ClockAdvanced(ClockOut):
    ran: list[str]
