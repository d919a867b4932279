"""Buying, redeeming, polling, previewing and recovering (public-api.md 5-7, 10;
billing.md 2-3).

A purchase either issues the license at once (free paths: trial, zero price, discount to
zero, free-license code) in one transaction, or creates a provider invoice and leaves the
license to the settlement pipeline. No network call happens inside a write transaction.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import Actor
from keysat.billing import discounts
from keysat.billing.models import DiscountCode, DiscountRedemption, Invoice
from keysat.billing.pricing import discount_sats, percent_text
from keysat.billing.rates import Quote, RateError, RateService
from keysat.billing.schemas import PurchaseRequest, RedeemRequest
from keysat.billing.settlement import issue_purchase
from keysat.catalog.models import Policy, Product
from keysat.catalog.service import (
    default_policy,
    effective_price,
    get_policy_by_slug,
    get_product_by_slug,
)
from keysat.clock import now
from keysat.db import Database
from keysat.errors import ApiError, bad_request, conflict, not_found
from keysat.issuer.service import IssuerKeys
from keysat.licensing.models import License
from keysat.licensing.service import license_key, trial_used_by_email
from keysat.operator.models import MerchantProfile
from keysat.operator.service import profile_for, record_audit
from keysat.outbound import UpstreamError
from keysat.payments.provider import InvoiceRequest, Money, parse_rail
from keysat.payments.service import Providers
from keysat.settings import Settings, normalize_origin
from keysat.wire import format_optional_ts, format_ts, new_id, normalize_id

log = logging.getLogger(__name__)

EMAIL_MAX = 254
RECOVERY_FAILED = "recovery failed — invoice id and email did not match any settled purchase"


def upstream(detail: str) -> ApiError:
    return ApiError(502, "upstream_error", f"upstream error: {detail}")


def clean_buyer_email(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    email = value.strip()
    local, at, domain = email.partition("@")
    if len(email) > EMAIL_MAX or not at or not local or not domain or "@" in domain:
        raise bad_request("buyer_email is not a valid e-mail address")
    return email


def blank_to_none(value: str | None) -> str | None:
    return value if value is not None and value.strip() else None


def would_be_trial(policy: Policy | None) -> bool:
    return policy is not None and (
        policy.is_trial or (policy.is_recurring and policy.trial_days > 0)
    )


def trial_limited_email(policy: Policy | None, email: str | None) -> str | None:
    """The e-mail the one-trial-per-buyer rule applies to, when it applies (1.11)."""
    if email and would_be_trial(policy) and not (policy is not None and policy.allow_repeat_trials):
        return email
    return None


@dataclass(frozen=True)
class Priced:
    """A resolved product and tier, with the tier's price in sats now."""

    product: Product
    policy: Policy | None
    quote: Quote


@dataclass(frozen=True)
class CodeOffer:
    code: DiscountCode
    discount: int


async def resolve_policy(
    session: AsyncSession, product: Product, policy_slug: str | None
) -> Policy | None:
    """public-api.md 1.11: the named tier, checked for sale, or the default policy."""
    if not policy_slug or not policy_slug.strip():
        return await default_policy(session, product.id)
    policy = await get_policy_by_slug(session, product.id, policy_slug)
    if policy is None:
        raise not_found(f"policy '{policy_slug}' for product '{product.slug}'")
    if not policy.active:
        raise bad_request(f"policy '{policy_slug}' is not active")
    if not policy.public:
        raise bad_request(f"policy '{policy_slug}' is not available on the public buy page")
    if policy.archived_at is not None:
        raise conflict(f"policy '{policy_slug}' is archived and can no longer be purchased")
    return policy


async def load_product(session: AsyncSession, slug: str, purpose: str) -> Product:
    product = await get_product_by_slug(session, slug)
    if product is None:
        raise not_found(f"product '{slug}'")
    if not product.active:
        raise bad_request(f"product '{slug}' is not available for {purpose}")
    return product


def free_invoice(
    invoice_id: str,
    product: Product,
    policy: Policy | None,
    *,
    base: int,
    discount: int,
    buyer_email: str | None,
    buyer_note: str | None,
) -> Invoice:
    at = now()
    return Invoice(
        id=invoice_id,
        kind="purchase",
        status="settled",
        product_id=product.id,
        policy_id=policy.id if policy else None,
        amount_sats=0,
        base_price_sats=base,
        discount_applied_sats=discount,
        provider_kind="none",
        payment_provider_id=None,
        provider_invoice_id=f"free-{invoice_id}",
        checkout_url="",
        buyer_email=buyer_email,
        buyer_note=buyer_note,
        created_at=at,
        updated_at=at,
        settled_at=at,
    )


def allowed_origin(url: str, allowed: set[str]) -> bool:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    return normalize_origin(parts.scheme, parts.hostname, port) in allowed


def origin_of(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.hostname:
            return normalize_origin(parts.scheme, parts.hostname, parts.port)
    except ValueError:
        return None
    return None


async def checked_redirect(db: Database, settings: Settings, url: str | None) -> str | None:
    """A buyer's `redirect_url`, allowed only to the origins of config.md 3.2."""
    if url is None or not url.strip():
        return None
    allowed = {origin for origin in [origin_of(settings.public_url)] if origin}
    allowed.update(settings.allowed_redirect_origins)
    async with db.read() as session:
        redirects = await session.execute(
            sa.select(MerchantProfile.post_purchase_redirect_url).where(
                MerchantProfile.post_purchase_redirect_url.is_not(None)
            )
        )
        allowed.update(origin for (text,) in redirects if text and (origin := origin_of(text)))
    if not allowed_origin(url.strip(), allowed):
        raise bad_request("redirect_url must point to an allowed origin")
    return url.strip()


class Purchases:
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

    # --- shared steps -----------------------------------------------------------------------

    async def _quote(self, product: Product, policy: Policy | None) -> Quote:
        try:
            return await self._rates.quote(product.price_currency, effective_price(product, policy))
        except RateError as exc:
            raise upstream(str(exc)) from None

    async def _code_sats(self, code: DiscountCode) -> int:
        currency = discounts.amount_currency(code)
        if currency is None:
            return code.amount
        try:
            return (await self._rates.quote(currency, code.amount)).sats
        except RateError as exc:
            raise upstream(str(exc)) from None

    async def _offer(self, code: DiscountCode, base: int) -> CodeOffer:
        return CodeOffer(
            code, discount_sats(code.kind, base, await self._code_sats(code)).discount_sats
        )

    async def _key(self, session: AsyncSession, row: License) -> str:
        return license_key(row, await self._issuer_keys.current(session))

    def _poll_url(self, invoice_id: str) -> str:
        return f"{self._settings.public_url}/v1/purchase/{invoice_id}"

    async def _issue_free(
        self,
        invoice: Invoice,
        offer: CodeOffer | None,
        *,
        check_trial_email: str | None,
    ) -> tuple[License, str, DiscountRedemption | None]:
        """One transaction: the settled free invoice, the license, a redeemed code."""
        async with self._db.write() as session:
            redemption: DiscountRedemption | None = None
            if offer is not None:
                if not await discounts.reserve(session, offer.code.id):
                    raise bad_request("discount code is invalid, expired, or has no remaining uses")
            # public-api.md 7: the trial limit (step 12) after the reservation (step 11);
            # raising here rolls the reservation back, which releases the slot.
            if check_trial_email is not None and await trial_used_by_email(
                session, invoice.product_id, check_trial_email
            ):
                raise conflict(
                    "a trial of this product has already been used with this e-mail address"
                )
            session.add(invoice)
            await session.flush()
            if offer is not None:
                redemption = discounts.new_redemption(
                    offer.code,
                    invoice.id,
                    "pending",
                    invoice.base_price_sats,
                    invoice.discount_applied_sats,
                )
                session.add(redemption)
                await session.flush()
            row = await issue_purchase(session, invoice)
            assert row is not None
            key = await self._key(session, row)
        return row, key, redemption

    def _free_answer(self, invoice: Invoice, row: License, key: str) -> dict[str, Any]:
        return {
            "invoice_id": invoice.id,
            "btcpay_invoice_id": invoice.provider_invoice_id,
            "checkout_url": "",
            "amount_sats": 0,
            "base_price_sats": invoice.base_price_sats,
            "discount_applied_sats": invoice.discount_applied_sats,
            "poll_url": self._poll_url(invoice.id),
            "license_key": key,
            "license_id": row.id,
        }

    async def featured_discount(self, product: Product, policy: Policy) -> dict[str, Any] | None:
        """The launch special shown on a tier card (public-api.md 4.3), priced in the
        product's unit; None when there is none or its rate cannot be fetched."""
        async with self._db.read() as session:
            code = await discounts.featured_for(session, product, policy)
        if code is None:
            return None
        price = effective_price(product, policy)
        amount = code.amount
        if code.kind in ("fixed_sats", "set_price"):
            try:
                amount = await self._rates.convert(
                    code.amount, code.discount_currency, product.price_currency
                )
            except RateError:
                return None
        off = discount_sats(code.kind, price, amount).discount_sats
        return {
            "code": code.code,
            "kind": code.kind,
            "amount": code.amount,
            "description": code.description or None,
            "expires_at": format_optional_ts(code.expires_at),
            "max_uses": code.max_uses,
            "used_count": code.used_count,
            "remaining_uses": (
                max(code.max_uses - code.used_count, 0) if code.max_uses is not None else None
            ),
            "discount_applied_sats": off,
            "discounted_price_sats": price - off,
        }

    # --- POST /v1/purchase ------------------------------------------------------------------

    async def start(self, body: PurchaseRequest) -> dict[str, Any]:
        email = clean_buyer_email(body.buyer_email)
        note = blank_to_none(body.buyer_note)
        typed_code = body.code.strip() if body.code and body.code.strip() else None
        async with self._db.read() as session:
            product = await load_product(session, body.product, "purchase")
            policy = await resolve_policy(session, product, body.policy_slug)
            typed = await discounts.find_code(session, typed_code) if typed_code else None
            profile = await profile_for(session, product.merchant_profile_id)
            assert profile is not None
        redirect = await checked_redirect(self._db, self._settings, body.redirect_url)
        trial_email = trial_limited_email(policy, email)
        if trial_email is not None:
            async with self._db.read() as session:
                if await trial_used_by_email(session, product.id, trial_email):
                    raise conflict(
                        "a trial of this product has already been used with this e-mail address"
                    )
        if typed is not None and typed.kind == "free_license":
            redeemed = await self._redeem(product, policy, typed, email, note, trial_email)
            return self._free_answer(*redeemed[:3])
        quote = await self._quote(product, policy)
        base = quote.sats
        invoice_id = new_id()
        if (policy is not None and policy.is_recurring and policy.trial_days > 0) or base == 0:
            invoice = free_invoice(
                invoice_id,
                product,
                policy,
                base=base,
                discount=0,
                buyer_email=email,
                buyer_note=note,
            )
            row, key, _ = await self._issue_free(invoice, None, check_trial_email=trial_email)
            return self._free_answer(invoice, row, key)
        offer = await self._effective_offer(typed_code, typed, product, policy, base)
        if offer is not None and offer.discount >= base:
            invoice = free_invoice(
                invoice_id,
                product,
                policy,
                base=base,
                discount=base,
                buyer_email=email,
                buyer_note=note,
            )
            row, key, _ = await self._issue_free(invoice, offer, check_trial_email=trial_email)
            return self._free_answer(invoice, row, key)
        return await self._paid(
            invoice_id, product, policy, profile, quote, offer, email, note, redirect, body.rail
        )

    async def _effective_offer(
        self,
        typed_code: str | None,
        typed: DiscountCode | None,
        product: Product,
        policy: Policy | None,
        base: int,
    ) -> CodeOffer | None:
        if typed_code is not None:
            if typed is None:
                raise bad_request("unknown discount code")
            refusal = discounts.purchase_refusal(typed, product, policy, now())
            if refusal is not None:
                raise bad_request(refusal)
            return await self._offer(typed, base)
        async with self._db.read() as session:
            featured = await discounts.featured_for(session, product, policy)
        return await self._offer(featured, base) if featured is not None else None

    async def _paid(
        self,
        invoice_id: str,
        product: Product,
        policy: Policy | None,
        profile: MerchantProfile,
        quote: Quote,
        offer: CodeOffer | None,
        email: str | None,
        note: str | None,
        redirect: str | None,
        rail_text: str | None,
    ) -> dict[str, Any]:
        """billing.md 2.7. A reserved slot is given back on every failure after it."""
        base = quote.sats
        discount = offer.discount if offer is not None else 0
        final = base - discount
        if offer is not None:
            async with self._db.write() as session:
                if not await discounts.reserve(session, offer.code.id):
                    raise bad_request("discount code is invalid, expired, or has no remaining uses")
        try:
            choice = await self._providers.choose(profile, parse_rail(rail_text))
            target = redirect or self._default_redirect(profile, invoice_id)
            try:
                created = await choice.provider.create_invoice(
                    InvoiceRequest(
                        amount=Money("SAT", final),
                        external_order_id=invoice_id,
                        redirect_url=target,
                        metadata={"productId": product.id},
                        buyer_email=email,
                        allow_save_payment_profile=bool(policy and policy.is_recurring),
                    )
                )
            except UpstreamError as exc:
                raise upstream(f"payment provider create-invoice failed: {exc}") from None
            at = now()
            invoice = Invoice(
                id=invoice_id,
                kind="purchase",
                status="pending",
                product_id=product.id,
                policy_id=policy.id if policy else None,
                amount_sats=final,
                base_price_sats=base,
                discount_applied_sats=discount,
                rail=choice.rail,
                provider_kind=choice.provider.kind,
                payment_provider_id=choice.provider.provider_id,
                provider_invoice_id=created.provider_invoice_id,
                checkout_url=created.checkout_url,
                buyer_email=email,
                buyer_note=note,
                listed_currency=quote.listed_currency,
                listed_value=quote.listed_value,
                exchange_rate_centibps=quote.rate_centibps,
                exchange_rate_source=quote.source if quote.listed_currency else None,
                created_at=at,
                updated_at=at,
            )
            async with self._db.write() as session:
                session.add(invoice)
                if offer is not None:
                    await session.flush()
                    session.add(
                        discounts.new_redemption(offer.code, invoice_id, "pending", base, discount)
                    )
        except Exception:
            if offer is not None:
                async with self._db.write() as session:
                    await discounts.release(session, offer.code.id)
            raise
        return {
            "invoice_id": invoice_id,
            "btcpay_invoice_id": created.provider_invoice_id,
            "checkout_url": created.checkout_url,
            "amount_sats": final,
            "base_price_sats": base,
            "discount_applied_sats": discount,
            "poll_url": self._poll_url(invoice_id),
        }

    def _default_redirect(self, profile: MerchantProfile, invoice_id: str) -> str:
        if profile.post_purchase_redirect_url:
            return profile.post_purchase_redirect_url.replace("{invoice_id}", invoice_id)
        return f"{self._settings.public_url}/thank-you?invoice_id={invoice_id}"

    # --- POST /v1/redeem --------------------------------------------------------------------

    async def redeem(self, body: RedeemRequest) -> dict[str, Any]:
        email = clean_buyer_email(body.buyer_email)
        async with self._db.read() as session:
            product = await load_product(session, body.product, "redemption")
            policy = await resolve_policy(session, product, body.policy_slug)
            if not body.code.strip():
                raise bad_request("code is required")
            code = await discounts.find_code(session, body.code)
        if code is None:
            raise bad_request("unknown code")
        if not code.active:
            raise bad_request("code is disabled")
        if code.kind != "free_license":
            raise bad_request(
                "this code requires payment — use the standard purchase flow with the code applied"
            )
        trial_email = trial_limited_email(policy, email)
        invoice, row, key, redemption = await self._redeem(
            product, policy, code, email, blank_to_none(body.buyer_note), trial_email
        )
        return {
            "license_id": row.id,
            "license_key": key,
            "invoice_id": invoice.id,
            "redemption_id": redemption.id,
        }

    async def _redeem(
        self,
        product: Product,
        policy: Policy | None,
        code: DiscountCode,
        email: str | None,
        note: str | None,
        trial_email: str | None,
    ) -> tuple[Invoice, License, str, DiscountRedemption]:
        """billing.md 2.8: a free-license code issues at once, all amounts 0."""
        at = now()
        if not code.active:
            raise bad_request("code is disabled")
        if discounts.is_expired(code, at):
            raise bad_request("code has expired")
        if not discounts.covers_product(code, product):
            raise bad_request("code does not apply to this product")
        if not discounts.covers_policy(code, policy):
            raise bad_request("code does not apply to the selected tier")
        invoice = free_invoice(
            new_id(), product, policy, base=0, discount=0, buyer_email=email, buyer_note=note
        )
        row, key, redemption = await self._issue_free(
            invoice, CodeOffer(code, 0), check_trial_email=trial_email
        )
        assert redemption is not None
        return invoice, row, key, redemption

    # --- GET /v1/purchase/{id} --------------------------------------------------------------

    async def poll(self, raw_id: str) -> dict[str, Any]:
        canonical = normalize_id(raw_id)
        async with self._db.read() as session:
            invoice = await session.get(Invoice, canonical) if canonical else None
            if invoice is None:
                raise not_found(f"invoice '{raw_id}'")
            row = await invoice_license(session, invoice)
            key = (
                await self._key(session, row)
                if row is not None and row.status == "active" and invoice.status == "settled"
                else None
            )
        return {
            "invoice_id": invoice.id,
            "status": invoice.status,
            "product_id": invoice.product_id,
            "amount_sats": invoice.amount_sats,
            "license_key": key,
            "license_id": row.id if row is not None else None,
        }

    # --- POST /v1/recover -------------------------------------------------------------------

    async def recover(self, invoice_id: str, email: str, actor: Actor) -> dict[str, Any]:
        if not invoice_id.strip() or not email.strip():
            raise bad_request("both invoice_id and email are required")
        canonical = normalize_id(invoice_id)
        wanted = email.strip().lower()
        async with self._db.write() as session:
            invoice = await session.get(Invoice, canonical) if canonical else None
            row = await invoice_license(session, invoice) if invoice is not None else None
            if (
                invoice is None
                or invoice.status != "settled"
                or not invoice.buyer_email
                or invoice.buyer_email.strip().lower() != wanted
                or row is None
                or row.status != "active"
            ):
                raise not_found(RECOVERY_FAILED)
            key = await self._key(session, row)
            buyer = Actor(
                kind="buyer_self_service",
                hash=hashlib.sha256(wanted.encode()).hexdigest(),
                request_ip=actor.request_ip,
                user_agent=actor.user_agent,
            )
            record_audit(
                session, buyer, "license.recovered", "license", row.id, {"invoice_id": invoice.id}
            )
        return {
            "license_key": key,
            "license_id": row.id,
            "product_id": row.product_id,
            "issued_at": format_ts(row.issued_at),
            "expires_at": format_optional_ts(row.expires_at),
            "entitlements": list(row.entitlements),
        }

    # --- GET /v1/discount-codes/preview -----------------------------------------------------

    async def preview(
        self, code_text: str, product_slug: str, policy_slug: str | None
    ) -> dict[str, Any]:
        if not code_text.strip():
            raise bad_request("code is required")
        async with self._db.read() as session:
            product = await get_product_by_slug(session, product_slug)
            if product is None or not product.active:
                raise not_found(f"product '{product_slug}'")
            try:
                policy = await resolve_policy(session, product, policy_slug)
            except ApiError:
                policy = await default_policy(session, product.id)
            code = await discounts.find_code(session, code_text)
        base = (await self._quote(product, policy)).sats
        refusal = preview_refusal(code, product, policy)
        if refusal is not None:
            reason, message = refusal
            return {"valid": False, "reason": reason, "message": message, "base_price_sats": base}
        assert code is not None
        offer = await self._offer(code, base)
        final = base - offer.discount
        return {
            "valid": True,
            "code": code.code,
            "kind": code.kind,
            "is_free": final == 0,
            "base_price_sats": base,
            "discount_applied_sats": offer.discount,
            "final_price_sats": final,
            "amount_pct": code.amount / 100 if code.kind == "percent" else None,
            "message": preview_message(code, offer.discount, final, base),
        }


def preview_refusal(
    code: DiscountCode | None, product: Product, policy: Policy | None
) -> tuple[str, str] | None:
    at = now()
    if code is None:
        return "unknown_code", "Code not found."
    if not code.active:
        return "disabled", "This code has been disabled."
    if discounts.is_expired(code, at):
        return "expired", "This code has expired."
    if not discounts.covers_product(code, product):
        return "wrong_product", "This code does not apply to this product."
    if not discounts.covers_policy(code, policy):
        return "wrong_tier", "This code does not apply to the selected tier."
    if discounts.is_exhausted(code):
        return "exhausted", "This code has reached its use limit."
    return None


def preview_message(code: DiscountCode, discount: int, final: int, base: int) -> str:
    if code.kind == "free_license" or final == 0:
        return "Free license — no payment required."
    if code.kind == "percent":
        return f"{percent_text(code.amount)}% off applied."
    if code.kind == "fixed_sats":
        return f"{discount} sats off applied."
    if discount == 0:
        return "Code applied — but it doesn't lower the price for this product."
    return f"Flat price applied: {final} sats."


async def invoice_license(session: AsyncSession, invoice: Invoice) -> License | None:
    """public-api.md 1.11: the license an invoice issued, renewed or changed."""
    if invoice.kind == "purchase":
        query = sa.select(License).where(License.invoice_id == invoice.id)
        return (await session.execute(query)).scalar_one_or_none()
    if invoice.status != "settled" or invoice.subject_license_id is None:
        return None
    return await session.get(License, invoice.subject_license_id)
