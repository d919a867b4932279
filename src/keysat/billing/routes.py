"""Purchase, redeem, poll, recover and preview (public-api.md 5-7, 10); discount codes,
invoices, revenue and exchange rates (admin-api.md 7, 8, 17)."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keysat.access.actor import Actor
from keysat.access.client import client_address
from keysat.access.routes import require_scope
from keysat.access.service import request_actor
from keysat.billing import discounts, schemas
from keysat.billing.models import DiscountRedemption, Invoice
from keysat.billing.purchase import invoice_license
from keysat.billing.rates import Rate, RateError, parse_units_per_btc
from keysat.catalog.routes import documented_body
from keysat.clock import now
from keysat.errors import ApiError, bad_request, not_found, rate_limited
from keysat.licensing.models import License
from keysat.operator.service import record_audit
from keysat.state import AppState, app_state
from keysat.wire import (
    OkResponse,
    documents_body,
    documents_errors,
    format_optional_ts,
    format_ts,
    json_body,
    normalize_id,
    parse_body,
    parse_json_object,
    query_bool,
    query_int,
    query_required,
    respond,
    validate_model,
)

public_router = APIRouter()
admin_router = APIRouter()

INVOICE_STATUSES = ("pending", "settled", "expired", "invalid")
INVOICE_KINDS = ("purchase", "renewal", "tier_change")
_CURRENCY = re.compile(r"[A-Za-z]{3,5}")
NO_ADDRESS_BUCKET = "no-client-address"


async def spend(state: AppState, request: Request, kind: str, message: str, fallback: str) -> None:
    """One token of a public limit (public-api.md 1.9), or 429 with the envelope."""
    key = client_address(request, state.settings.trusted_proxies) or fallback
    decision = await state.rate_limiter.take(kind, key)
    if not decision.allowed:
        raise rate_limited(message, decision.retry_after)


# --- public ---------------------------------------------------------------------------------


@public_router.post("/v1/purchase", response_model=schemas.PurchaseResponse)
@documents_body(schemas.PurchaseRequest)
@documents_errors(404, 409, 429, 502, 503)
async def purchase(request: Request) -> JSONResponse:
    state = app_state(request)
    await spend(
        state,
        request,
        "purchase",
        "purchase requests are rate-limited; try again in a minute",
        NO_ADDRESS_BUCKET,
    )
    body = await parse_body(request, schemas.PurchaseRequest)
    return respond(await state.purchases.start(body))


@public_router.get("/v1/purchase/{invoice_id}", response_model=schemas.PollResponse)
async def poll_purchase(request: Request, invoice_id: str) -> JSONResponse:
    return respond(await app_state(request).purchases.poll(invoice_id))


@public_router.post("/v1/redeem", response_model=schemas.RedeemResponse)
@documents_body(schemas.RedeemRequest)
@documents_errors(404, 409, 429)
async def redeem(request: Request) -> JSONResponse:
    state = app_state(request)
    await spend(
        state,
        request,
        "redeem",
        "redeem attempts are rate-limited; try again in a minute",
        NO_ADDRESS_BUCKET,
    )
    body = await parse_body(request, schemas.RedeemRequest)
    return respond(await state.purchases.redeem(body))


@public_router.post("/v1/recover", response_model=schemas.RecoverResponse)
@documents_body(schemas.RecoverRequest)
@documents_errors(404, 429)
async def recover(request: Request) -> JSONResponse:
    state = app_state(request)
    body = await parse_body(request, schemas.RecoverRequest)
    await spend(
        state,
        request,
        "recover",
        "recovery requests are rate-limited; try again in a minute",
        f"invoice:{body.invoice_id.strip()}",
    )
    actor = request_actor(request, state.settings, "buyer_self_service")
    return respond(await state.purchases.recover(body.invoice_id, body.email, actor))


@public_router.get("/v1/discount-codes/preview", response_model=schemas.PreviewResponse)
@documents_errors(404, 429, 502)
async def preview_code(
    request: Request,
    code: str | None = None,
    product: str | None = None,
    policy_slug: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    await spend(
        state,
        request,
        "preview",
        "code previews are rate-limited; try again in a minute",
        NO_ADDRESS_BUCKET,
    )
    code_text = query_required("code", code)
    product_slug = query_required("product", product)
    if any("\x00" in value for value in (code_text, product_slug, policy_slug or "")):
        # PostgreSQL text cannot hold U+0000: refuse it as JSON bodies do, on every database
        raise bad_request("strings must not contain NUL characters")
    return respond(await state.purchases.preview(code_text, product_slug, policy_slug))


# --- admin: discount codes -------------------------------------------------------------------


@admin_router.get("/v1/admin/discount-codes", response_model=schemas.DiscountCodeList)
async def list_codes(
    request: Request,
    actor: Actor = require_scope("discount_codes:read"),
    include_inactive: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    inactive = query_bool("include_inactive", include_inactive, False)
    async with state.db.read() as session:
        codes = await discounts.list_codes(session, inactive)
    return respond({"codes": [discounts.code_json(code) for code in codes]})


@admin_router.post("/v1/admin/discount-codes", response_model=schemas.DiscountCodeOut)
@documents_errors(402, 404, 409)
async def create_code(
    request: Request,
    actor: Actor = require_scope("discount_codes:write"),
    _body: None = documented_body(schemas.DiscountCodeCreate),
) -> JSONResponse:
    state = app_state(request)
    tier = state.tier()
    async with state.db.read() as session:
        await discounts.enforce_code_cap(session, tier)
    body = validate_model(
        schemas.DiscountCodeCreate, await parse_json_object(request, allow_empty=False)
    )
    async with state.db.write() as session:
        code = await discounts.create_code(session, tier, actor, body)
    return respond(discounts.code_json(code))


@admin_router.get("/v1/admin/discount-codes/{code_id}", response_model=schemas.DiscountCodeDetail)
async def get_code(
    request: Request, code_id: str, actor: Actor = require_scope("discount_codes:read")
) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        code = await discounts.code_by_id(session, code_id)
        redemptions = await discounts.redemptions_of(session, code.id)
    return respond(
        {
            "code": discounts.code_json(code),
            "redemptions": [discounts.redemption_json(row) for row in redemptions],
        }
    )


@admin_router.patch("/v1/admin/discount-codes/{code_id}", response_model=schemas.DiscountCodeOut)
@documents_errors(409)
async def update_code(
    request: Request,
    code_id: str,
    actor: Actor = require_scope("discount_codes:write"),
    body: schemas.DiscountCodePatch = json_body(schemas.DiscountCodePatch, allow_empty=True),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        code = await discounts.update_code(session, actor, code_id, body)
    return respond(discounts.code_json(code))


@admin_router.patch("/v1/admin/discount-codes/{code_id}/active", response_model=OkResponse)
@documents_errors(402)
async def set_code_active(
    request: Request,
    code_id: str,
    actor: Actor = require_scope("discount_codes:write"),
    body: schemas.ActiveBody = json_body(schemas.ActiveBody),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        await discounts.set_active(session, state.tier(), actor, code_id, body.active)
    return respond({"ok": True})


@admin_router.delete("/v1/admin/discount-codes/{code_id}", response_model=schemas.DeletedCode)
@documents_errors(409)
async def delete_code(
    request: Request, code_id: str, actor: Actor = require_scope("discount_codes:write")
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        deleted = await discounts.delete_code(session, actor, code_id)
    return respond({"ok": True, "deleted": deleted})


# --- admin: invoices and revenue ----------------------------------------------------------------


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise bad_request(f"query parameter '{name}' must be one of {', '.join(allowed)}")
    return value


@admin_router.get("/v1/admin/invoices", response_model=schemas.InvoiceList)
async def list_invoices(
    request: Request,
    actor: Actor = require_scope("licenses:read"),
    status: str | None = None,
    kind: str | None = None,
    product_id: str | None = None,
    license_id: str | None = None,
    buyer_email: str | None = None,
    limit: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    query = sa.select(Invoice).order_by(Invoice.created_at.desc(), Invoice.id)
    if (wanted_status := _choice("status", status, INVOICE_STATUSES)) is not None:
        query = query.where(Invoice.status == wanted_status)
    if (wanted_kind := _choice("kind", kind, INVOICE_KINDS)) is not None:
        query = query.where(Invoice.kind == wanted_kind)
    if product_id is not None:
        query = query.where(Invoice.product_id == normalize_id(product_id))
    if license_id is not None:
        canonical = normalize_id(license_id)
        issued = sa.select(License.invoice_id).where(License.id == canonical)
        query = query.where(
            sa.or_(
                Invoice.id.in_(issued),
                sa.and_(Invoice.subject_license_id == canonical, Invoice.status == "settled"),
            )
        )
    if buyer_email is not None:
        query = query.where(sa.func.lower(Invoice.buyer_email) == buyer_email.strip().lower())
    query = query.limit(query_int("limit", limit, 100, 1, 1000))
    async with state.db.read() as session:
        if (product_id is not None and normalize_id(product_id) is None) or (
            license_id is not None and normalize_id(license_id) is None
        ):
            return respond({"invoices": []})
        invoices = list((await session.execute(query)).scalars())
        entries = [await invoice_json(session, invoice) for invoice in invoices]
    return respond({"invoices": entries})


async def invoice_json(session: Any, invoice: Invoice) -> dict[str, Any]:
    row = await invoice_license(session, invoice)
    return {
        "id": invoice.id,
        "kind": invoice.kind,
        "status": invoice.status,
        "product_id": invoice.product_id,
        "policy_id": invoice.policy_id,
        "license_id": row.id if row is not None else None,
        "subscription_id": invoice.subscription_id,
        "cycle_number": invoice.cycle_number,
        "amount_sats": invoice.amount_sats,
        "base_price_sats": invoice.base_price_sats,
        "discount_applied_sats": invoice.discount_applied_sats,
        "listed_currency": invoice.listed_currency,
        "listed_value": invoice.listed_value,
        "exchange_rate_centibps": invoice.exchange_rate_centibps,
        "exchange_rate_source": invoice.exchange_rate_source,
        "provider_kind": invoice.provider_kind,
        "payment_provider_id": invoice.payment_provider_id,
        "provider_invoice_id": invoice.provider_invoice_id,
        "checkout_url": invoice.checkout_url,
        "rail": invoice.rail,
        "buyer_email": invoice.buyer_email,
        "buyer_note": invoice.buyer_note,
        "created_at": format_ts(invoice.created_at),
        "updated_at": format_ts(invoice.updated_at),
        "settled_at": format_optional_ts(invoice.settled_at),
    }


@admin_router.get("/v1/admin/invoices/{invoice_id}", response_model=schemas.InvoiceDetail)
async def get_invoice(
    request: Request, invoice_id: str, actor: Actor = require_scope("licenses:read")
) -> JSONResponse:
    state = app_state(request)
    canonical = normalize_id(invoice_id)
    async with state.db.read() as session:
        invoice = await session.get(Invoice, canonical) if canonical else None
        if invoice is None:
            by_provider = sa.select(Invoice).where(Invoice.provider_invoice_id == invoice_id)
            invoice = (await session.execute(by_provider)).scalar_one_or_none()
        if invoice is None:
            raise not_found(f"invoice '{invoice_id}'")
        redemption = (
            await session.execute(
                sa.select(DiscountRedemption).where(DiscountRedemption.invoice_id == invoice.id)
            )
        ).scalar_one_or_none()
        entry = await invoice_json(session, invoice)
    return respond(
        {
            "invoice": entry,
            "redemption": discounts.redemption_json(redemption) if redemption else None,
        }
    )


@admin_router.get("/v1/admin/revenue/summary", response_model=schemas.RevenueSummary)
async def revenue_summary(
    request: Request, actor: Actor = require_scope("licenses:read")
) -> JSONResponse:
    state = app_state(request)
    # settled_at is stamped by the business clock, so the windows are measured on it too;
    # outside sandbox mode it is the system clock.
    at = now()
    settled = sa.select(sa.func.coalesce(sa.func.sum(Invoice.amount_sats), 0)).where(
        Invoice.status == "settled"
    )
    async with state.db.read() as session:

        async def total(since: timedelta | None) -> int:
            query = settled if since is None else settled.where(Invoice.settled_at >= at - since)
            return int((await session.execute(query)).scalar_one())

        paid = await session.execute(
            sa.select(sa.func.count()).where(Invoice.status == "settled", Invoice.amount_sats > 0)
        )
        return respond(
            {
                "total_sats": await total(None),
                "last_24h_sats": await total(timedelta(hours=24)),
                "last_7d_sats": await total(timedelta(days=7)),
                "last_30d_sats": await total(timedelta(days=30)),
                "settled_paid_invoice_count": int(paid.scalar_one()),
            }
        )


# --- admin: exchange rates ----------------------------------------------------------------------


def _currency(text: str) -> str:
    code = text.strip().upper()
    if not _CURRENCY.fullmatch(code):
        raise bad_request("currency must be 3 to 5 ASCII letters")
    return code


def _units(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def rate_json(rate: Rate) -> dict[str, Any]:
    return {
        "currency": rate.currency,
        "units_per_btc": _units(rate.units_per_btc),
        "source": rate.source,
    }


@admin_router.get("/v1/admin/rates", response_model=schemas.RateList)
async def list_rates(request: Request, actor: Actor = require_scope("rates:read")) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        pinned = await state.rates.pins(session)
    entries: dict[str, dict[str, Any]] = {}
    for rate in [*state.rates.cached(), *pinned]:
        entries[rate.currency] = {
            **rate_json(rate),
            "fetched_at_secs_ago": rate.age_seconds(),
        }
    return respond({"rates": list(entries.values())})


@admin_router.post("/v1/admin/rates/refresh", response_model=schemas.RateOut)
@documents_errors(502)
async def refresh_rate(
    request: Request,
    actor: Actor = require_scope("rates:write"),
    body: schemas.RateRefreshBody = json_body(schemas.RateRefreshBody),
) -> JSONResponse:
    state = app_state(request)
    currency = _currency(body.currency)
    try:
        rate = await state.rates.refresh(currency)
    except RateError as exc:
        detail = str(exc).removeprefix("rate fetch failed: ")
        raise ApiError(
            502, "upstream_error", f"upstream error: rate refresh failed: {detail}"
        ) from None
    answer = rate_json(rate)
    async with state.db.write() as session:
        record_audit(session, actor, "rate.refresh", "rate", currency, answer)
    return respond(answer)


@admin_router.put("/v1/admin/rates/pins/{currency}", response_model=schemas.RateOut)
async def pin_rate(
    request: Request,
    currency: str,
    actor: Actor = require_scope("rates:write"),
    body: schemas.RatePinBody = json_body(schemas.RatePinBody),
) -> JSONResponse:
    state = app_state(request)
    code = _currency(currency)
    units = parse_units_per_btc(body.units_per_btc)
    if units is None:
        raise bad_request("units_per_btc must be a positive decimal")
    async with state.db.write() as session:
        await state.rates.set_pin(session, code, units)
        record_audit(
            session,
            actor,
            "rate.pin_set",
            "rate",
            code,
            {"currency": code, "units_per_btc": format(units, "f")},
        )
    return respond({"currency": code, "units_per_btc": _units(units), "source": "manual_pin"})


@admin_router.delete("/v1/admin/rates/pins/{currency}", response_model=schemas.PinCleared)
@documents_errors(400)
async def clear_pin(
    request: Request, currency: str, actor: Actor = require_scope("rates:write")
) -> JSONResponse:
    state = app_state(request)
    code = _currency(currency)
    async with state.db.write() as session:
        await state.rates.clear_pin(session, code)
        record_audit(session, actor, "rate.pin_cleared", "rate", code, {"currency": code})
    return respond({"ok": True, "currency": code})
