"""Subscription rules (billing.md 4.4-4.7, 6, 7.7): creating one with its first cycle,
extending the same license when a renewal is paid, cancelling, lapsing, and applying tier
changes. Every function works inside the caller's transaction and writes its audit rows
and events there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import SYSTEM, Actor
from keysat.billing.models import Invoice
from keysat.catalog.models import Policy, Product
from keysat.catalog.service import effective_price, wire_currency
from keysat.clock import now
from keysat.errors import conflict, not_found
from keysat.licensing.models import License
from keysat.licensing.service import license_grace_seconds
from keysat.operator.service import default_profile, record_audit
from keysat.subscriptions.models import Subscription, SubscriptionCycle, TierChange
from keysat.subscriptions.proration import LiveSubscription, Proration, QuoteRefused, Side, prorate
from keysat.webhooks.service import record_event
from keysat.wire import format_optional_ts, format_ts, new_id, normalize_id

LIVE = ("active", "past_due")
ENDED = ("cancelled", "lapsed")
SECONDS_PER_DAY = 86_400


def subscription_json(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "license_id": sub.license_id,
        "policy_id": sub.policy_id,
        "product_id": sub.product_id,
        "status": sub.status,
        "listed_currency": sub.listed_currency,
        "listed_value": sub.listed_value,
        "period_days": sub.period_days,
        "started_at": format_ts(sub.started_at),
        "current_period_start": format_ts(sub.current_period_start),
        "next_renewal_at": format_ts(sub.current_period_end),
        "cancelled_at": format_optional_ts(sub.cancelled_at),
        "cancellation_reason": sub.cancellation_reason,
        "lapsed_at": format_optional_ts(sub.lapsed_at),
        "consecutive_failures": sub.consecutive_failures,
        "merchant_profile_id": sub.merchant_profile_id,
        "payment_provider_id": sub.payment_provider_id,
        "provider_kind": sub.provider_kind,
    }


def grace_deadline(sub: Subscription, policy: Policy) -> datetime:
    """When an unpaid renewal lapses: the paid-through time plus the policy's grace."""
    return sub.current_period_end + timedelta(days=policy.grace_period_days)


async def subscription_of_license(
    session: AsyncSession, license_id: str, *, lock: bool = False
) -> Subscription | None:
    query = sa.select(Subscription).where(Subscription.license_id == license_id)
    if lock:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def subscription_by_id(session: AsyncSession, raw_id: str) -> Subscription:
    canonical = normalize_id(raw_id)
    sub = await session.get(Subscription, canonical) if canonical else None
    if sub is None:
        raise not_found(f"subscription '{raw_id}'")
    return sub


async def list_subscriptions(
    session: AsyncSession,
    *,
    status: str | None,
    license_id: str | None,
    product_id: str | None,
    limit: int,
) -> Sequence[Subscription]:
    query = sa.select(Subscription).order_by(Subscription.started_at.desc(), Subscription.id)
    if status is not None:
        query = query.where(Subscription.status == status)
    if license_id is not None:
        query = query.where(Subscription.license_id == license_id)
    if product_id is not None:
        query = query.where(Subscription.product_id == product_id)
    return (await session.execute(query.limit(limit))).scalars().all()


async def newest_cycle(session: AsyncSession, subscription_id: str) -> SubscriptionCycle | None:
    query = (
        sa.select(SubscriptionCycle)
        .where(SubscriptionCycle.subscription_id == subscription_id)
        .order_by(SubscriptionCycle.cycle_number.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


def add_cycle(
    session: AsyncSession,
    sub: Subscription,
    number: int,
    invoice_id: str,
    start: datetime,
    end: datetime,
    paid_at: datetime | None,
) -> SubscriptionCycle:
    cycle = SubscriptionCycle(
        id=new_id(),
        subscription_id=sub.id,
        cycle_number=number,
        invoice_id=invoice_id,
        cycle_start_at=start,
        cycle_end_at=end,
        paid_at=paid_at,
        created_at=now(),
    )
    session.add(cycle)
    return cycle


# --- creation -----------------------------------------------------------------------------


async def create_subscription(
    session: AsyncSession,
    license_row: License,
    policy: Policy,
    invoice: Invoice,
    first_cycle_end: datetime,
) -> Subscription:
    """billing.md 6.3: at the policy's undiscounted price, even for a trial or a code."""
    product = await session.get(Product, policy.product_id)
    assert product is not None
    at = now()
    profile_id = product.merchant_profile_id or (await default_profile(session)).id
    sub = Subscription(
        id=new_id(),
        license_id=license_row.id,
        policy_id=policy.id,
        product_id=product.id,
        status="active",
        period_days=max(policy.renewal_period_days, 1),
        listed_currency=wire_currency(product),
        listed_value=effective_price(product, policy),
        started_at=at,
        current_period_start=at,
        current_period_end=first_cycle_end,
        next_attempt_at=first_cycle_end,
        consecutive_failures=0,
        merchant_profile_id=profile_id,
        payment_provider_id=invoice.payment_provider_id,
        provider_kind=invoice.provider_kind if invoice.provider_kind != "none" else None,
        created_at=at,
        updated_at=at,
    )
    session.add(sub)
    await session.flush()
    add_cycle(session, sub, 1, invoice.id, at, first_cycle_end, at)
    return sub


# --- cancel and lapse ---------------------------------------------------------------------


@dataclass(frozen=True)
class Cancelled:
    subscription_id: str
    status: str
    already: bool


async def cancel(
    session: AsyncSession,
    sub: Subscription,
    actor: Actor,
    actor_label: str,
    reason: str | None,
    *,
    audit_action: str | None = "subscription.cancel",
) -> Cancelled:
    """A live subscription stops renewing; its license keeps its paid-through time."""
    if sub.status not in LIVE:
        return Cancelled(sub.id, sub.status, already=True)
    at = now()
    sub.status = "cancelled"
    sub.cancelled_at = at
    sub.cancellation_reason = reason
    sub.next_attempt_at = None
    sub.updated_at = at
    details = {
        "license_id": sub.license_id,
        "product_id": sub.product_id,
        "policy_id": sub.policy_id,
        "reason": reason,
        "actor": actor_label,
    }
    if audit_action is not None:
        record_audit(session, actor, audit_action, "subscription", sub.id, details)
    record_event(
        session,
        "subscription.cancelled",
        {
            "subscription_id": sub.id,
            "license_id": sub.license_id,
            "product_id": sub.product_id,
            "policy_id": sub.policy_id,
            "actor": actor_label,
            "reason": reason,
        },
    )
    return Cancelled(sub.id, "cancelled", already=False)


async def cancel_for_revoke(
    session: AsyncSession, license_id: str, actor: Actor, revocation_reason: str
) -> None:
    """admin-api.md 5.6: a revoked license is never renewed or charged again."""
    sub = await subscription_of_license(session, license_id, lock=True)
    if sub is not None:
        await cancel(session, sub, actor, "admin", f"license revoked: {revocation_reason}")


async def lapse(session: AsyncSession, sub: Subscription) -> bool:
    """past_due past its grace deadline becomes lapsed, once (billing.md 6.6)."""
    at = now()
    result = await session.execute(
        sa.update(Subscription)
        .where(Subscription.id == sub.id, Subscription.status == "past_due")
        .values(status="lapsed", lapsed_at=at, next_attempt_at=None, updated_at=at)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    record_event(
        session,
        "subscription.lapsed",
        {
            "subscription_id": sub.id,
            "license_id": sub.license_id,
            "product_id": sub.product_id,
            "policy_id": sub.policy_id,
        },
    )
    return True


# --- a paid renewal -----------------------------------------------------------------------


async def settle_renewal(session: AsyncSession, invoice: Invoice) -> None:
    """billing.md 4.5: the same license runs on; no license or subscription is created."""
    assert invoice.subscription_id is not None
    sub = (
        await session.execute(
            sa.select(Subscription)
            .where(Subscription.id == invoice.subscription_id)
            .with_for_update()
        )
    ).scalar_one()
    policy = await session.get(Policy, sub.policy_id)
    assert policy is not None
    at = now()
    period = timedelta(days=sub.period_days)
    newest = await newest_cycle(session, sub.id)
    own = (
        await session.execute(
            sa.select(SubscriptionCycle).where(SubscriptionCycle.invoice_id == invoice.id)
        )
    ).scalar_one_or_none()
    if newest is not None and newest.invoice_id == invoice.id:
        cycle = newest
        if sub.status == "lapsed" or at >= grace_deadline(sub, policy):
            cycle.cycle_start_at, cycle.cycle_end_at = at, at + period
    else:
        start = max(sub.current_period_end, at)
        if own is not None:
            # The invoice's row belongs to an older cycle (its number is taken by a later
            # one): its paid time is appended too; expires_at never moves back (6.8).
            cycle = own
            cycle.cycle_start_at, cycle.cycle_end_at = start, start + period
        else:
            number = newest.cycle_number + 1 if newest is not None else 1
            cycle = add_cycle(session, sub, number, invoice.id, start, start + period, None)
    cycle.paid_at = at
    reactivated = sub.status in ENDED
    sub.status = "active"
    sub.consecutive_failures = 0
    sub.last_renewal_attempt_at = at
    sub.current_period_start = cycle.cycle_start_at
    sub.current_period_end = cycle.cycle_end_at
    sub.next_attempt_at = cycle.cycle_end_at
    sub.open_invoice_id = None
    if reactivated:
        sub.cancelled_at = None
        sub.cancellation_reason = None
        sub.lapsed_at = None
    sub.updated_at = at
    license_row = await session.get(License, sub.license_id)
    assert license_row is not None
    license_row.expires_at = cycle.cycle_end_at
    license_row.grace_seconds = license_grace_seconds(policy)
    license_row.is_trial = policy.is_trial
    license_row.updated_at = at
    record_event(
        session,
        "subscription.renewed",
        {
            "subscription_id": sub.id,
            "invoice_id": invoice.id,
            "amount_sats": invoice.amount_sats,
            "license_id": sub.license_id,
            "cycle_number": cycle.cycle_number,
            "expires_at": format_ts(cycle.cycle_end_at),
            "reactivated": reactivated,
        },
    )


async def renewal_not_paid(session: AsyncSession, invoice: Invoice) -> None:
    """billing.md 4.7: an expired renewal invoice is replaced for the same cycle while the
    grace period leaves room; otherwise the subscription lapses at its deadline."""
    if invoice.subscription_id is None:
        return
    sub = (
        await session.execute(
            sa.select(Subscription)
            .where(Subscription.id == invoice.subscription_id)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if sub is None or sub.open_invoice_id != invoice.id or sub.status != "past_due":
        return
    policy = await session.get(Policy, sub.policy_id)
    assert policy is not None
    at = now()
    if at + timedelta(hours=1) < grace_deadline(sub, policy):
        sub.open_invoice_id = None
        sub.next_attempt_at = at + timedelta(hours=1)
        sub.updated_at = at


# --- tier changes -------------------------------------------------------------------------


@dataclass(frozen=True)
class TierQuote:
    license: License
    product: Product
    current: Policy
    target: Policy
    subscription: Subscription | None
    proration: Proration

    @property
    def listed_currency(self) -> str:
        return wire_currency(self.product)

    def json(self) -> dict[str, Any]:
        effective = self.proration.effective_at
        return {
            "from_policy_id": self.current.id,
            "from_policy_slug": self.current.slug,
            "to_policy_id": self.target.id,
            "to_policy_slug": self.target.slug,
            "direction": self.proration.direction,
            "listed_currency": self.listed_currency,
            "proration_charge_value": self.proration.charge,
            "effective_at": format_ts(effective) if effective is not None else "immediate",
            "next_renewal_charge": self.proration.next_renewal_charge,
            "next_renewal_period_days": self.proration.next_renewal_period_days,
        }


def side(product: Product, policy: Policy) -> Side:
    return Side(
        rank=policy.tier_rank,
        price=effective_price(product, policy),
        recurring=policy.is_recurring,
        renewal_period_days=policy.renewal_period_days,
    )


async def quote_change(
    session: AsyncSession,
    license_row: License,
    target_slug: str,
    mode: str,
    *,
    allow_archived: bool = False,
) -> TierQuote:
    """billing.md 7.1-7.4 for a license; raises QuoteRefused or the 404s."""
    target = (
        await session.execute(
            sa.select(Policy).where(
                Policy.product_id == license_row.product_id, Policy.slug == target_slug
            )
        )
    ).scalar_one_or_none()
    if target is None:
        raise not_found(f"target policy '{target_slug}'")
    if license_row.policy_id is None:
        raise QuoteRefused("license has no policy attached — admin must assign a tier first")
    current = await session.get(Policy, license_row.policy_id)
    if current is None:
        raise not_found(f"policy '{license_row.policy_id}'")
    if target.id == current.id:
        raise QuoteRefused("target policy is the same as current — no change to make")
    if target.product_id != current.product_id:
        raise QuoteRefused(
            "target policy belongs to a different product — cross-product changes not supported"
        )
    if not target.active:
        raise QuoteRefused("target policy is inactive")
    if target.archived_at is not None and not allow_archived:
        raise QuoteRefused("target policy is archived", status=409)
    product = await session.get(Product, license_row.product_id)
    assert product is not None
    sub = await subscription_of_license(session, license_row.id)
    live = (
        LiveSubscription(sub.current_period_end, sub.period_days)
        if sub is not None and sub.status in LIVE
        else None
    )
    proration = prorate(
        mode,
        side(product, current),
        side(product, target),
        live,
        now(),
        has_subscription=sub is not None,
    )
    return TierQuote(license_row, product, current, target, sub, proration)


def new_tier_change(
    quote: TierQuote, actor_label: str, invoice_id: str | None, reason: str | None
) -> TierChange:
    at = now()
    return TierChange(
        id=new_id(),
        license_id=quote.license.id,
        from_policy_id=quote.current.id,
        to_policy_id=quote.target.id,
        direction=quote.proration.direction,
        listed_currency=quote.listed_currency,
        proration_charge_value=quote.proration.charge if invoice_id is not None else 0,
        invoice_id=invoice_id,
        effective_at=at,
        actor=actor_label,
        reason=reason,
        created_at=at,
    )


async def apply_tier_change(
    session: AsyncSession,
    change: TierChange,
    *,
    paid_by: Invoice | None,
    event_actor: str,
    applied_via: str,
    cancel_actor: Actor,
    scheduled: bool = False,
) -> None:
    """billing.md 7.7: the same license moves to the target policy."""
    license_row = (
        await session.execute(
            sa.select(License).where(License.id == change.license_id).with_for_update()
        )
    ).scalar_one()
    target = await session.get(Policy, change.to_policy_id)
    assert target is not None
    at = now()
    change.applied_at = at
    if license_row.policy_id == target.id:
        return
    if scheduled and license_row.policy_id != change.from_policy_id:
        # The license moved (a paid upgrade, another comp) after this change was
        # scheduled: the later decision wins, and the stale one closes without effect.
        return
    product = await session.get(Product, license_row.product_id)
    assert product is not None
    sub = await subscription_of_license(session, license_row.id, lock=True)
    live = sub if sub is not None and sub.status in LIVE else None
    license_row.policy_id = target.id
    license_row.entitlements = list(target.entitlements or [])
    license_row.max_machines = target.max_machines
    license_row.is_trial = target.is_trial
    license_row.grace_seconds = license_grace_seconds(target)
    license_row.updated_at = at
    if not target.is_recurring:
        license_row.expires_at = _perpetual_expiry(target, at)
        if live is not None:
            await cancel(session, live, cancel_actor, event_actor, f"tier change to {target.slug}")
    elif live is not None:
        live.policy_id = target.id
        live.listed_value = effective_price(product, target)
        live.period_days = max(target.renewal_period_days, 1)
        live.updated_at = at
    elif paid_by is not None:
        cycle_end = at + timedelta(days=max(target.renewal_period_days, 1))
        license_row.expires_at = cycle_end
        await _start_paid_cycle(session, license_row, target, product, sub, paid_by, cycle_end)
    else:
        license_row.expires_at = _perpetual_expiry(target, at)
    record_event(
        session,
        "license.tier_changed",
        {
            "license_id": license_row.id,
            "product_id": license_row.product_id,
            "from_policy_id": change.from_policy_id,
            "to_policy_id": target.id,
            "to_policy_slug": target.slug,
            "direction": change.direction,
            "actor": event_actor,
            "invoice_id": change.invoice_id,
            "tier_change_id": change.id,
            "applied_via": applied_via,
        },
    )


def _perpetual_expiry(policy: Policy, at: datetime) -> datetime | None:
    return at + timedelta(seconds=policy.duration_seconds) if policy.duration_seconds else None


async def _start_paid_cycle(
    session: AsyncSession,
    license_row: License,
    target: Policy,
    product: Product,
    sub: Subscription | None,
    invoice: Invoice,
    cycle_end: datetime,
) -> None:
    """A paid change to a recurring tier pays a first cycle: reactivate an ended
    subscription, or start one."""
    if sub is None:
        await create_subscription(session, license_row, target, invoice, cycle_end)
        return
    at = now()
    newest = await newest_cycle(session, sub.id)
    sub.status = "active"
    sub.policy_id = target.id
    sub.listed_value = effective_price(product, target)
    sub.period_days = max(target.renewal_period_days, 1)
    sub.current_period_start = at
    sub.current_period_end = cycle_end
    sub.next_attempt_at = cycle_end
    sub.open_invoice_id = None
    sub.consecutive_failures = 0
    sub.cancelled_at = None
    sub.cancellation_reason = None
    sub.lapsed_at = None
    sub.payment_provider_id = invoice.payment_provider_id
    sub.provider_kind = invoice.provider_kind
    sub.updated_at = at
    number = newest.cycle_number + 1 if newest is not None else 1
    add_cycle(session, sub, number, invoice.id, at, cycle_end, at)


async def settle_tier_change(session: AsyncSession, invoice: Invoice) -> None:
    """billing.md 4.6: the invoice's change is applied, once; no license is issued."""
    change = (
        await session.execute(
            sa.select(TierChange).where(TierChange.invoice_id == invoice.id).with_for_update()
        )
    ).scalar_one_or_none()
    if change is None or change.applied_at is not None:
        return
    await apply_tier_change(
        session,
        change,
        paid_by=invoice,
        event_actor=change.actor,
        applied_via="settlement",
        cancel_actor=SYSTEM,
    )
    record_audit(
        session,
        SYSTEM,
        "subscription.upgrade.applied",
        "tier_change",
        change.id,
        {
            "license_id": change.license_id,
            "from_policy_id": change.from_policy_id,
            "to_policy_id": change.to_policy_id,
            "invoice_id": invoice.id,
            "actor": change.actor,
            "direction": change.direction,
        },
    )


async def license_for_change(session: AsyncSession, raw_id: str) -> License:
    canonical = normalize_id(raw_id)
    row = await session.get(License, canonical) if canonical else None
    if row is None:
        raise not_found(f"license '{raw_id}'")
    if row.status == "revoked":
        raise conflict("a revoked license cannot change tier")
    return row
