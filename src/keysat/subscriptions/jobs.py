"""The renewal worker (billing.md 6.4-6.6) and saved-card capture (payments.md 5.6).

Each due subscription is claimed with a conditional update before anything else, so two
processes ticking at once never invoice the same cycle twice; lapses are conditional
updates too. Provider calls happen between transactions, never inside one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import SYSTEM, Actor
from keysat.billing.models import Invoice
from keysat.billing.rates import RateError, RateService
from keysat.billing.settlement import Settlement
from keysat.catalog.models import Policy
from keysat.clock import now
from keysat.db import Database
from keysat.errors import ApiError
from keysat.jobs import Job
from keysat.licensing.models import License
from keysat.operator.models import MerchantProfile
from keysat.operator.service import default_profile, record_audit
from keysat.outbound import UpstreamError
from keysat.payments.models import PaymentProvider
from keysat.payments.provider import InvoiceRequest, Money, Provider
from keysat.payments.service import Providers
from keysat.payments.zaprite import (
    PAID_STATUSES,
    ZapriteProvider,
    contact_id_of,
    saved_profile_for,
)
from keysat.settings import Settings
from keysat.subscriptions.models import Subscription, SubscriptionCycle, TierChange
from keysat.subscriptions.proration import MAX_FAILURES, backoff
from keysat.subscriptions.service import (
    LIVE,
    add_cycle,
    apply_tier_change,
    cancel,
    grace_deadline,
    lapse,
    newest_cycle,
    settle_renewal,
)
from keysat.webhooks.service import record_event
from keysat.wire import format_ts, new_id

log = logging.getLogger(__name__)

RENEWAL_BATCH = 25
LAPSE_BATCH = 25
LAPSE_SCAN = 500
CLAIM_FOR = timedelta(minutes=10)


class RenewalFailed(Exception):
    """This attempt cannot invoice; the subscription backs off and tries again."""


@dataclass(frozen=True)
class Price:
    amount_sats: int
    listed_currency: str
    listed_value: int
    rate_centibps: int | None
    source: str | None


@dataclass(frozen=True)
class PlannedCycle:
    number: int
    start: datetime
    end: datetime
    replaces: SubscriptionCycle | None


class RenewalWorker:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        rates: RateService,
        providers: Providers,
        settlement: Settlement,
    ) -> None:
        self._db = db
        self._settings = settings
        self._rates = rates
        self._providers = providers
        self._settlement = settlement

    async def tick(self, at: datetime) -> None:
        """One pass: up to 25 due renewals, then up to 25 lapses."""
        query = (
            sa.select(Subscription.id, Subscription.next_attempt_at)
            .where(
                Subscription.status.in_(LIVE),
                Subscription.open_invoice_id.is_(None),
                Subscription.next_attempt_at.is_not(None),
                Subscription.next_attempt_at <= at,
                Subscription.consecutive_failures < MAX_FAILURES,
            )
            .order_by(Subscription.next_attempt_at, Subscription.id)
            .limit(RENEWAL_BATCH)
        )
        async with self._db.read() as session:
            due = list((await session.execute(query)).all())
        for subscription_id, seen in due:
            assert seen is not None
            try:
                await self.renew(subscription_id, seen, at)
            except Exception:
                log.exception("renewal of subscription %s failed", subscription_id)
        await self.lapse_due(at)

    async def lapse_due(self, at: datetime) -> int:
        query = (
            sa.select(Subscription, Policy)
            .join(Policy, Policy.id == Subscription.policy_id)
            .where(Subscription.status == "past_due", Subscription.current_period_end <= at)
            .order_by(Subscription.current_period_end, Subscription.id)
            .limit(LAPSE_SCAN)
        )
        async with self._db.read() as session:
            candidates = list((await session.execute(query)).all())
        due = [sub for sub, policy in candidates if at >= grace_deadline(sub, policy)]
        due.sort(key=lambda sub: sub.current_period_end)
        lapsed = 0
        for sub in due[:LAPSE_BATCH]:
            async with self._db.write() as session:
                lapsed += await lapse(session, sub)
        return lapsed

    async def _claim(self, subscription_id: str, seen: datetime, at: datetime) -> bool:
        async with self._db.write() as session:
            result = await session.execute(
                sa.update(Subscription)
                .where(
                    Subscription.id == subscription_id,
                    Subscription.next_attempt_at == seen,
                    Subscription.open_invoice_id.is_(None),
                )
                .values(next_attempt_at=at + CLAIM_FOR)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def renew(self, subscription_id: str, seen: datetime, at: datetime) -> None:
        """billing.md 6.4 steps 0-10 for one subscription."""
        if not await self._claim(subscription_id, seen, at):
            return
        if not await self._apply_scheduled_changes(subscription_id, at):
            return
        async with self._db.read() as session:
            sub = await session.get(Subscription, subscription_id, populate_existing=True)
            assert sub is not None
            policy = await session.get(Policy, sub.policy_id)
            license_row = await session.get(License, sub.license_id)
            assert policy is not None and license_row is not None
        if policy.archived_at is not None or license_row.status == "revoked":
            await self._stop(sub, policy, license_row)
            return
        try:
            price = await self._price(sub)
            if price.listed_value == 0:
                await self._renew_free(sub)
                return
            provider = await self._provider(sub)
            await self._invoice(sub, policy, license_row, price, provider, at)
        except RenewalFailed as exc:
            log.warning("renewal of subscription %s not invoiced: %s", sub.id, exc)
            await self._failed(sub.id, at)

    async def _apply_scheduled_changes(self, subscription_id: str, at: datetime) -> bool:
        """Step 1: changes due by now, oldest first. False when the subscription ended."""
        async with self._db.write() as session:
            sub = await session.get(Subscription, subscription_id)
            assert sub is not None
            changes = (
                await session.execute(
                    sa.select(TierChange)
                    .where(
                        TierChange.license_id == sub.license_id,
                        TierChange.invoice_id.is_(None),
                        TierChange.applied_at.is_(None),
                        TierChange.effective_at <= at,
                    )
                    .order_by(TierChange.effective_at, TierChange.created_at)
                )
            ).scalars()
            for change in changes:
                await apply_tier_change(
                    session,
                    change,
                    paid_by=None,
                    event_actor="system",
                    applied_via="renewal_worker",
                    cancel_actor=SYSTEM,
                    scheduled=True,
                )
            await session.flush()
            await session.refresh(sub)
            return sub.status in LIVE

    async def _stop(self, sub: Subscription, policy: Policy, license_row: License) -> None:
        """Step 2: an archived policy or a revoked license is never renewed."""
        async with self._db.write() as session:
            locked = await session.get(Subscription, sub.id)
            assert locked is not None
            if policy.archived_at is not None:
                await cancel(
                    session,
                    locked,
                    SYSTEM,
                    "system",
                    "policy_archived",
                    audit_action="subscription.renewal_skipped_archived",
                )
                record_event(
                    session,
                    "subscription.renewal_skipped",
                    {
                        "subscription_id": sub.id,
                        "license_id": sub.license_id,
                        "product_id": sub.product_id,
                        "policy_id": policy.id,
                        "policy_slug": policy.slug,
                        "reason": "policy_archived",
                    },
                )
            else:
                await cancel(session, locked, SYSTEM, "system", "license revoked")

    async def _price(self, sub: Subscription) -> Price:
        """Step 3: fiat prices are quoted to sats again for every cycle."""
        try:
            quote = await self._rates.quote(sub.listed_currency, sub.listed_value)
        except RateError as exc:
            raise RenewalFailed(str(exc)) from None
        return Price(
            amount_sats=quote.sats,
            listed_currency=sub.listed_currency,
            listed_value=sub.listed_value,
            rate_centibps=quote.rate_centibps,
            source=quote.source if quote.listed_currency else None,
        )

    async def _provider(self, sub: Subscription) -> Provider:
        """Step 4: the provider that created the subscription while it may still take
        money; otherwise the merchant profile's provider now."""
        providers = self._providers
        if sub.provider_kind == "sandbox" and providers.sandbox is not None:
            return providers.sandbox
        async with self._db.read() as session:
            row = (
                await session.get(PaymentProvider, sub.payment_provider_id)
                if sub.payment_provider_id
                else None
            )
            profile = (
                await session.get(MerchantProfile, sub.merchant_profile_id)
                if sub.merchant_profile_id
                else None
            ) or await default_profile(session)
        if row is not None and await providers.eligible([row]):
            return providers.build(row)
        try:
            chosen = (await providers.choose(profile, None)).provider
        except ApiError as exc:
            raise RenewalFailed(exc.message) from None
        async with self._db.write() as session:
            await session.execute(
                sa.update(Subscription)
                .where(Subscription.id == sub.id)
                .values(payment_provider_id=chosen.provider_id, provider_kind=chosen.kind)
            )
        return chosen

    async def _plan_cycle(self, session: AsyncSession, sub: Subscription) -> PlannedCycle:
        """Step 6: the next cycle, or the same one again when its invoice went unpaid."""
        newest = await newest_cycle(session, sub.id)
        if newest is not None and newest.paid_at is None:
            return PlannedCycle(
                newest.cycle_number, newest.cycle_start_at, newest.cycle_end_at, newest
            )
        number = newest.cycle_number + 1 if newest is not None else 1
        start = sub.current_period_end
        return PlannedCycle(number, start, start + timedelta(days=sub.period_days), None)

    async def _renew_free(self, sub: Subscription) -> None:
        """Step 5: a free tier renews at once with a settled free invoice."""
        async with self._db.write() as session:
            locked = await session.get(Subscription, sub.id, with_for_update=True)
            assert locked is not None
            if locked.status not in LIVE:
                return
            cycle = await self._plan_cycle(session, locked)
            at = now()
            invoice_id = new_id()
            invoice = Invoice(
                id=invoice_id,
                kind="renewal",
                status="settled",
                product_id=locked.product_id,
                policy_id=locked.policy_id,
                amount_sats=0,
                base_price_sats=0,
                discount_applied_sats=0,
                provider_kind="none",
                provider_invoice_id=f"free-{invoice_id}",
                checkout_url="",
                subject_license_id=locked.license_id,
                subscription_id=locked.id,
                cycle_number=cycle.number,
                buyer_note=f"Renewal cycle for subscription {locked.id}",
                created_at=at,
                updated_at=at,
                settled_at=at,
            )
            session.add(invoice)
            await session.flush()
            if cycle.replaces is not None:
                cycle.replaces.invoice_id = invoice_id
            else:
                add_cycle(session, locked, cycle.number, invoice_id, cycle.start, cycle.end, None)
            await session.flush()
            await settle_renewal(session, invoice)

    async def _invoice(
        self,
        sub: Subscription,
        policy: Policy,
        license_row: License,
        price: Price,
        provider: Provider,
        at: datetime,
    ) -> None:
        """Steps 6-10: create the provider invoice, record it, then charge or ask."""
        async with self._db.read() as session:
            cycle = await self._plan_cycle(session, sub)
        deadline = cycle.start + timedelta(days=policy.grace_period_days)
        invoice_id = new_id()
        money = (
            Money(price.listed_currency, price.listed_value)
            if provider.kind == "zaprite"
            else Money("SAT", price.amount_sats)
        )
        try:
            created = await provider.create_invoice(
                InvoiceRequest(
                    amount=money,
                    external_order_id=invoice_id,
                    redirect_url=f"{self._settings.public_url}/thank-you?invoice_id={invoice_id}",
                    metadata={
                        "productId": sub.product_id,
                        "subscriptionId": sub.id,
                        "cycleStartAt": format_ts(cycle.start),
                    },
                    buyer_email=license_row.buyer_email,
                    expires_at=deadline,
                )
            )
        except UpstreamError as exc:
            raise RenewalFailed(str(exc)) from None
        fiat = price.listed_currency not in ("SAT", "BTC")
        async with self._db.write() as session:
            locked = await session.get(Subscription, sub.id, with_for_update=True)
            assert locked is not None
            if locked.status not in LIVE or locked.open_invoice_id is not None:
                # Cancelled, lapsed or invoiced elsewhere while the provider was asked:
                # an ended subscription is never invoiced (6.2, 6.6).
                log.info("subscription %s changed during its renewal; not invoiced", sub.id)
                return
            invoice = Invoice(
                id=invoice_id,
                kind="renewal",
                status="pending",
                product_id=sub.product_id,
                policy_id=sub.policy_id,
                amount_sats=price.amount_sats,
                base_price_sats=price.amount_sats,
                discount_applied_sats=0,
                provider_kind=provider.kind,
                payment_provider_id=provider.provider_id,
                provider_invoice_id=created.provider_invoice_id,
                checkout_url=created.checkout_url,
                buyer_email=license_row.buyer_email,
                buyer_note=f"Renewal cycle for subscription {sub.id}",
                listed_currency=price.listed_currency if fiat else None,
                listed_value=price.listed_value if fiat else None,
                exchange_rate_centibps=price.rate_centibps,
                exchange_rate_source=price.source,
                subject_license_id=sub.license_id,
                subscription_id=sub.id,
                cycle_number=cycle.number,
                expires_at=deadline,
                created_at=now(),
                updated_at=now(),
            )
            session.add(invoice)
            await session.flush()
            if cycle.replaces is not None:
                replaced = await session.get(SubscriptionCycle, cycle.replaces.id)
                assert replaced is not None
                replaced.invoice_id = invoice_id
            else:
                add_cycle(session, locked, cycle.number, invoice_id, cycle.start, cycle.end, None)
            locked.status = "past_due"
            locked.open_invoice_id = invoice_id
            locked.next_attempt_at = None
            locked.last_renewal_attempt_at = at
            locked.updated_at = at
            first_paid = not await _earlier_cycle_paid_with_money(session, sub.id, cycle.number)
        facts = {
            "subscription_id": sub.id,
            "license_id": sub.license_id,
            "product_id": sub.product_id,
            "policy_id": sub.policy_id,
            "invoice_id": invoice_id,
            "amount_sats": price.amount_sats,
            "listed_currency": price.listed_currency,
            "listed_value": price.listed_value,
            "cycle_number": cycle.number,
            "cycle_start_at": format_ts(cycle.start),
            "cycle_end_at": format_ts(cycle.end),
        }
        if await self._auto_charge(sub, provider, invoice_id, created.provider_invoice_id, facts):
            return
        async with self._db.write() as session:
            record_event(
                session,
                "subscription.renewal_pending",
                {
                    **facts,
                    "checkout_url": created.checkout_url,
                    "due_at": format_ts(deadline),
                    "buyer_email": license_row.buyer_email,
                    "is_first_paid_cycle": first_paid,
                },
            )

    async def _auto_charge(
        self,
        sub: Subscription,
        provider: Provider,
        invoice_id: str,
        order_id: str,
        facts: dict[str, Any],
    ) -> bool:
        """Step 9: charge a saved card (Zaprite). True when the renewal is settled."""
        profile_id = sub.zaprite_payment_profile_id
        expiry = sub.zaprite_payment_profile_expires_at
        if not isinstance(provider, ZapriteProvider) or not profile_id:
            return False
        if expiry is not None and expiry <= now():
            return False
        try:
            answer = await provider.client.charge(order_id, profile_id)
        except UpstreamError as exc:
            async with self._db.write() as session:
                details = {"invoice_id": invoice_id, "provider_invoice_id": order_id}
                record_audit(
                    session,
                    Actor(kind="renewal_worker"),
                    "subscription.auto_charge_failed",
                    "subscription",
                    sub.id,
                    {**details, "error": str(exc)},
                )
                record_event(
                    session,
                    "subscription.auto_charge_failed",
                    {
                        "subscription_id": sub.id,
                        "license_id": sub.license_id,
                        "invoice_id": invoice_id,
                        "reason": str(exc),
                    },
                )
            return False
        status = answer.get("status")
        if not isinstance(status, str) or status.upper() not in PAID_STATUSES:
            return False
        try:
            await self._settlement.confirm(invoice_id)
        except UpstreamError as exc:
            log.warning("auto-charged renewal %s not confirmed yet: %s", invoice_id, exc)
        async with self._db.write() as session:
            record_event(session, "subscription.auto_charge_initiated", facts)
        return True

    async def _failed(self, subscription_id: str, at: datetime) -> None:
        """billing.md 6.5: back off; after five failures in a row, wait for the lapse."""
        async with self._db.write() as session:
            sub = await session.get(Subscription, subscription_id, with_for_update=True)
            assert sub is not None
            if sub.status not in LIVE:
                return
            failures = sub.consecutive_failures + 1
            sub.consecutive_failures = failures
            sub.status = "past_due"
            sub.last_renewal_attempt_at = at
            sub.next_attempt_at = at + backoff(failures)
            sub.updated_at = at


async def _earlier_cycle_paid_with_money(
    session: AsyncSession, subscription_id: str, number: int
) -> bool:
    query = (
        sa.select(SubscriptionCycle.id)
        .join(Invoice, Invoice.id == SubscriptionCycle.invoice_id)
        .where(
            SubscriptionCycle.subscription_id == subscription_id,
            SubscriptionCycle.cycle_number < number,
            SubscriptionCycle.paid_at.is_not(None),
            Invoice.amount_sats > 0,
        )
        .limit(1)
    )
    return (await session.execute(query)).first() is not None


class SavedCardCapture:
    """payments.md 5.6: after a Zaprite-paid subscription invoice settles, remember the
    card the buyer saved, so later cycles can be charged. Best effort, after commit."""

    def __init__(self, db: Database, providers: Providers) -> None:
        self._db = db
        self._providers = providers

    async def __call__(self, invoice_id: str) -> None:
        try:
            await self._capture(invoice_id)
        except Exception:
            log.exception("saved-card capture for invoice %s failed", invoice_id)

    async def _capture(self, invoice_id: str) -> None:
        async with self._db.read() as session:
            invoice = await session.get(Invoice, invoice_id)
            if invoice is None or invoice.provider_kind != "zaprite":
                return
            license_id = (
                invoice.subject_license_id
                or (
                    await session.execute(
                        sa.select(License.id).where(License.invoice_id == invoice.id)
                    )
                ).scalar_one_or_none()
            )
            if license_id is None:
                return
            sub = (
                await session.execute(
                    sa.select(Subscription).where(Subscription.license_id == license_id)
                )
            ).scalar_one_or_none()
            if sub is None or sub.zaprite_payment_profile_id or sub.provider_kind != "zaprite":
                return
            provider = await self._providers.for_invoice(session, invoice)
        if not isinstance(provider, ZapriteProvider):
            return
        order = await provider.client.get_order(invoice.provider_invoice_id)
        contact_id = contact_id_of(order)
        if contact_id is None:
            return
        saved = saved_profile_for(await provider.client.get_contact(contact_id), invoice.id)
        if saved is None:
            return
        async with self._db.write() as session:
            await session.execute(
                sa.update(Subscription)
                .where(Subscription.id == sub.id)
                .values(
                    zaprite_contact_id=contact_id,
                    zaprite_payment_profile_id=saved["profile_id"],
                    zaprite_payment_profile_method=saved["method"],
                    zaprite_payment_profile_expires_at=saved["expires_at"],
                )
            )


def subscription_jobs(worker: RenewalWorker) -> list[Job]:
    return [Job("renewals", timedelta(seconds=30), timedelta(seconds=60), worker.tick)]
