"""Tier changes asked for by a buyer or an admin (billing.md 7.5-7.6; public-api.md 12;
admin-api.md 5.9): the quote, the comp that applies at once, and the paid path whose
invoice the settlement pipeline applies when it settles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keysat.access.actor import Actor
from keysat.billing.models import Invoice
from keysat.billing.purchase import checked_redirect
from keysat.billing.rates import RateError, RateService
from keysat.clock import now
from keysat.db import Database
from keysat.errors import ApiError, bad_request, conflict, forbidden
from keysat.issuer.service import IssuerKeys
from keysat.licensing.keyauth import buyer_license
from keysat.licensing.models import License
from keysat.licensing.service import license_key
from keysat.operator.models import MerchantProfile
from keysat.operator.service import default_profile, record_audit
from keysat.outbound import UpstreamError
from keysat.payments.models import PaymentProvider
from keysat.payments.provider import InvoiceRequest, Money, Provider
from keysat.payments.service import Providers
from keysat.settings import Settings
from keysat.subscriptions.models import Subscription
from keysat.subscriptions.proration import QuoteRefused
from keysat.subscriptions.service import (
    TierQuote,
    apply_tier_change,
    license_for_change,
    new_tier_change,
    quote_change,
)
from keysat.wire import format_ts, new_id, normalize_id

SELF_LICENSE_REFUSAL = (
    "this is the server's own self-license; re-issue the key with the new tier on the "
    "instance that issued it, then activate it here"
)


def refused(error: QuoteRefused) -> ApiError:
    return conflict(error.message) if error.status == 409 else bad_request(error.message)


@dataclass(frozen=True)
class ChargeInvoice:
    invoice_id: str
    provider_invoice_id: str
    checkout_url: str
    amount_sats: int
    tier_change_id: str


class TierChanges:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        rates: RateService,
        providers: Providers,
        issuer_keys: IssuerKeys,
    ) -> None:
        self._db = db
        self._settings = settings
        self._rates = rates
        self._providers = providers
        self._issuer_keys = issuer_keys

    async def _buyer_quote(self, key: str, target_slug: str) -> TierQuote:
        async with self._db.read() as session:
            row = await buyer_license(session, self._issuer_keys, key)
            try:
                return await quote_change(session, row, target_slug, "buyer")
            except QuoteRefused as exc:
                raise refused(exc) from None

    async def quote(self, key: str, target_slug: str) -> dict[str, Any]:
        """POST /v1/upgrade-quote: no writes."""
        return (await self._buyer_quote(key, target_slug)).json()

    async def upgrade(
        self, key: str, target_slug: str, redirect_url: str | None, actor: Actor
    ) -> dict[str, Any]:
        """POST /v1/upgrade: an invoice for the proration; the change waits for payment."""
        quote = await self._buyer_quote(key, target_slug)
        if quote.proration.direction == "downgrade":
            raise forbidden()
        if quote.proration.charge <= 0:
            raise bad_request(
                "this upgrade has no charge owed; admin must apply it as a comp via "
                "POST /v1/admin/licenses/:id/change-tier"
            )
        redirect = await checked_redirect(self._db, self._settings, redirect_url)
        buyer = Actor(
            kind="buyer_license_key",
            hash=quote.license.id,
            request_ip=actor.request_ip,
            user_agent=actor.user_agent,
        )
        made = await self._charge(
            quote,
            actor_label="buyer",
            intent="tier_change",
            note="tier upgrade",
            redirect=redirect,
            reason=None,
            audit_actor=buyer,
            audit_action="subscription.upgrade.started",
            provider_failure="provider create_invoice",
        )
        return {
            "invoice_id": made.invoice_id,
            "provider_invoice_id": made.provider_invoice_id,
            "checkout_url": made.checkout_url,
            "amount_sats": made.amount_sats,
            "proration_charge_value": quote.proration.charge,
            "listed_currency": quote.listed_currency,
            "tier_change_id": made.tier_change_id,
            "from_policy_slug": quote.current.slug,
            "to_policy_slug": quote.target.slug,
        }

    async def admin_change(
        self,
        actor: Actor,
        raw_license_id: str,
        to_policy_slug: str,
        skip_payment: bool,
        reason: str | None,
        self_license_id: str | None,
    ) -> dict[str, Any]:
        """POST /v1/admin/licenses/{id}/change-tier (admin-api.md 5.9)."""
        # Every spelling of the id that the license lookup accepts (normalize_id) counts.
        if self_license_id is not None and (
            normalize_id(raw_license_id) or raw_license_id.strip().lower()
        ) == (normalize_id(self_license_id) or self_license_id):
            raise bad_request(SELF_LICENSE_REFUSAL)
        async with self._db.read() as session:
            row = await license_for_change(session, raw_license_id)
            try:
                quote = await quote_change(
                    session, row, to_policy_slug, "admin", allow_archived=skip_payment
                )
            except QuoteRefused as exc:
                raise refused(exc) from None
        if skip_payment:
            return await self._comp(actor, quote, reason)
        if quote.proration.charge <= 0:
            raise bad_request(
                "this change has no charge owed; use skip_payment=true to apply as a comp"
            )
        made = await self._charge(
            quote,
            actor_label="admin",
            intent="admin_tier_change",
            note="admin tier-change",
            redirect=None,
            reason=reason,
            audit_actor=actor,
            audit_action="license.change_tier.invoice_created",
            provider_failure="provider create_invoice",
        )
        return {
            "ok": True,
            "applied": False,
            "license_id": quote.license.id,
            "tier_change_id": made.tier_change_id,
            "invoice_id": made.invoice_id,
            "provider_invoice_id": made.provider_invoice_id,
            "checkout_url": made.checkout_url,
            "amount_sats": made.amount_sats,
            "proration_charge_value": quote.proration.charge,
            "listed_currency": quote.listed_currency,
            "from_policy_slug": quote.current.slug,
            "to_policy_slug": quote.target.slug,
            "skip_payment": False,
        }

    async def _comp(self, actor: Actor, quote: TierQuote, reason: str | None) -> dict[str, Any]:
        """Applied at once, except a downgrade of a live subscription to another recurring
        tier: the buyer keeps what they paid for, and the renewal worker applies it at the
        renewal boundary."""
        scheduled_for = quote.proration.effective_at
        async with self._db.write() as session:
            change = new_tier_change(quote, "admin", None, reason)
            if scheduled_for is not None:
                change.effective_at = scheduled_for
            session.add(change)
            await session.flush()
            if scheduled_for is None:
                await apply_tier_change(
                    session,
                    change,
                    paid_by=None,
                    event_actor="admin",
                    applied_via="admin",
                    cancel_actor=actor,
                )
            record_audit(
                session,
                actor,
                "license.change_tier.comp",
                "tier_change",
                change.id,
                {
                    "license_id": quote.license.id,
                    "from_policy_id": quote.current.id,
                    "to_policy_id": quote.target.id,
                    "to_policy_slug": quote.target.slug,
                    "direction": quote.proration.direction,
                    "reason": reason,
                    "skip_payment": True,
                    "effective_at": format_ts(change.effective_at),
                },
            )
            row = await session.get(License, quote.license.id)
            assert row is not None
            key = license_key(row, await self._issuer_keys.current(session))
        return {
            "ok": True,
            "applied": scheduled_for is None,
            "license_id": quote.license.id,
            "tier_change_id": change.id,
            "skip_payment": True,
            "from_policy_slug": quote.current.slug,
            "to_policy_slug": quote.target.slug,
            "license_key": key,
            "effective_at": format_ts(change.effective_at),
        }

    async def _provider(self, quote: TierQuote) -> Provider:
        """billing.md 7.6: the subscription's provider, the original purchase's, the
        product's merchant profile's, or the sandbox; each only while it may take money."""
        providers = self._providers
        sub: Subscription | None = quote.subscription
        async with self._db.read() as session:
            original = (
                await session.get(Invoice, quote.license.invoice_id)
                if quote.license.invoice_id
                else None
            )
            candidates: list[tuple[str | None, str | None]] = []
            if sub is not None:
                candidates.append((sub.provider_kind, sub.payment_provider_id))
            if original is not None:
                candidates.append((original.provider_kind, original.payment_provider_id))
            rows = {
                provider_id: await session.get(PaymentProvider, provider_id)
                for _, provider_id in candidates
                if provider_id
            }
            profile = (
                await session.get(MerchantProfile, quote.product.merchant_profile_id)
                if quote.product.merchant_profile_id
                else None
            ) or await default_profile(session)
        for kind, provider_id in candidates:
            if kind == "sandbox" and providers.sandbox is not None:
                return providers.sandbox
            row = rows.get(provider_id) if provider_id else None
            if row is not None and await providers.eligible([row]):
                return providers.build(row)
        return (await providers.choose(profile, None)).provider

    async def _charge(
        self,
        quote: TierQuote,
        *,
        actor_label: str,
        intent: str,
        note: str,
        redirect: str | None,
        reason: str | None,
        audit_actor: Actor,
        audit_action: str,
        provider_failure: str,
    ) -> ChargeInvoice:
        """The tier-change invoice: priced in sats, created at the provider, recorded with
        its tier_changes row and audit row in one transaction."""
        currency, charge = quote.listed_currency, quote.proration.charge
        try:
            priced = await self._rates.quote(currency, charge)
        except RateError as exc:
            raise ApiError(
                502, "upstream_error", f"upstream error: rate conversion failed: {exc}"
            ) from None
        amount = max(priced.sats, 1)
        provider = await self._provider(quote)
        invoice_id = new_id()
        try:
            created = await provider.create_invoice(
                InvoiceRequest(
                    amount=Money("SAT", amount),
                    external_order_id=invoice_id,
                    redirect_url=redirect
                    or f"{self._settings.public_url}/thank-you?invoice_id={invoice_id}",
                    metadata={
                        "productId": quote.product.id,
                        "intent": intent,
                        "licenseId": quote.license.id,
                        "fromPolicyId": quote.current.id,
                        "toPolicyId": quote.target.id,
                    },
                    buyer_email=quote.license.buyer_email,
                )
            )
        except UpstreamError as exc:
            raise ApiError(
                502, "upstream_error", f"upstream error: {provider_failure}: {exc}"
            ) from None
        at = now()
        async with self._db.write() as session:
            session.add(
                Invoice(
                    id=invoice_id,
                    kind="tier_change",
                    status="pending",
                    product_id=quote.product.id,
                    policy_id=quote.target.id,
                    amount_sats=amount,
                    base_price_sats=amount,
                    discount_applied_sats=0,
                    provider_kind=provider.kind,
                    payment_provider_id=provider.provider_id,
                    provider_invoice_id=created.provider_invoice_id,
                    checkout_url=created.checkout_url,
                    buyer_email=quote.license.buyer_email,
                    buyer_note=note,
                    listed_currency=currency,
                    listed_value=charge,
                    exchange_rate_centibps=priced.rate_centibps,
                    exchange_rate_source=priced.source,
                    subject_license_id=quote.license.id,
                    created_at=at,
                    updated_at=at,
                )
            )
            await session.flush()
            change = new_tier_change(quote, actor_label, invoice_id, reason)
            session.add(change)
            details: dict[str, Any] = {
                "license_id": quote.license.id,
                "from_policy_id": quote.current.id,
                "to_policy_id": quote.target.id,
                "invoice_id": invoice_id,
                "listed_currency": currency,
                "proration_charge_value": charge,
                "amount_sats": amount,
            }
            if actor_label == "admin":
                details |= {
                    "to_policy_slug": quote.target.slug,
                    "direction": quote.proration.direction,
                    "reason": reason,
                    "skip_payment": False,
                }
            record_audit(session, audit_actor, audit_action, "tier_change", change.id, details)
        return ChargeInvoice(
            invoice_id, created.provider_invoice_id, created.checkout_url, amount, change.id
        )
