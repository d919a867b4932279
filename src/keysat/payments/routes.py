"""Provider webhooks, connect flows and status (public-api.md 13-14; admin-api.md 10-11),
and the sandbox provider's checkout page and admin calls (payments.md 3.2-3.3)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from keysat.access.actor import Actor
from keysat.access.routes import require_master, require_provider_connect, require_scope
from keysat.billing.models import Invoice
from keysat.billing.pricing import sats_to_btc_string
from keysat.catalog.models import Policy, Product
from keysat.errors import ApiError, conflict, not_found
from keysat.operator.service import record_audit
from keysat.payments import connect, schemas
from keysat.payments.models import SandboxInvoice
from keysat.payments.sandbox import apply_action, get_sandbox_invoice
from keysat.payments.webhooks import handle_btcpay, handle_zaprite
from keysat.settings import normalize_origin
from keysat.state import AppState, app_state
from keysat.web.buyer import checkout_extras
from keysat.web.format import format_date_time
from keysat.web.pages import message_page, render
from keysat.wire import (
    documents_body,
    documents_errors,
    format_ts,
    json_body,
    normalize_id,
    read_body,
    respond,
)

public_router = APIRouter()
admin_router = APIRouter()

# The checkout's buttons are refused without our Origin, and browsers send `Origin: null`
# from a no-referrer page; same-origin still sends nothing to any other site.
SANDBOX_REFERRER_POLICY = "same-origin"


# --- inbound webhooks ---------------------------------------------------------------------

# Read as raw bytes: the signature covers them exactly as sent.
BTCPAY_EVENT = {
    "type": "object",
    "description": "A BTCPay Server webhook event, signed in the `BTCPay-Sig` header.",
}
ZAPRITE_EVENT = {
    "type": "object",
    "description": "A Zaprite webhook event; its order is fetched back from Zaprite.",
}
# The legacy paths answer for the default merchant profile's provider, which may not exist.
WEBHOOK_ERRORS = documents_errors(401, 404)
LEGACY_WEBHOOK_ERRORS = documents_errors(401, 503)


@public_router.post("/v1/btcpay/webhook/{provider_id}", response_model=None)
@documents_body(BTCPAY_EVENT)
@WEBHOOK_ERRORS
async def btcpay_webhook(request: Request, provider_id: str) -> Response:
    state = app_state(request)
    raw = await read_body(request)
    await handle_btcpay(
        state.db, state.settlement, provider_id, request.headers.get("btcpay-sig"), raw
    )
    return Response(status_code=200)


@public_router.post("/v1/btcpay/webhook", response_model=None)
@documents_body(BTCPAY_EVENT)
@LEGACY_WEBHOOK_ERRORS
async def btcpay_webhook_legacy(request: Request) -> Response:
    state = app_state(request)
    raw = await read_body(request)
    await handle_btcpay(state.db, state.settlement, None, request.headers.get("btcpay-sig"), raw)
    return Response(status_code=200)


@public_router.post("/v1/zaprite/webhook/{provider_id}", response_model=None)
@documents_body(ZAPRITE_EVENT)
@WEBHOOK_ERRORS
async def zaprite_webhook(request: Request, provider_id: str) -> Response:
    state = app_state(request)
    await handle_zaprite(state.db, state.settlement, provider_id, await read_body(request))
    return Response(status_code=200)


@public_router.post("/v1/zaprite/webhook", response_model=None)
@documents_body(ZAPRITE_EVENT)
@LEGACY_WEBHOOK_ERRORS
async def zaprite_webhook_legacy(request: Request) -> Response:
    state = app_state(request)
    await handle_zaprite(state.db, state.settlement, None, await read_body(request))
    return Response(status_code=200)


# --- BTCPay connect -------------------------------------------------------------------------


@admin_router.post("/v1/admin/btcpay/connect", response_model=schemas.ConnectStarted)
@documents_errors(404, 409, 503)
async def btcpay_connect(
    request: Request,
    actor: Actor = require_provider_connect(),
    body: schemas.BTCPayConnectBody = json_body(schemas.BTCPayConnectBody, allow_empty=True),
) -> JSONResponse:
    state = app_state(request)
    return respond(
        await connect.btcpay_connect_start(
            state.db, state.settings, actor, body.merchant_profile_id, body.label
        )
    )


def _form_fields(raw: bytes) -> dict[str, list[str]]:
    try:
        return parse_qs(raw.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        return {}


CALLBACK_FORM = {
    "type": "object",
    "properties": {
        "apiKey": {"type": "string"},
        "userId": {"type": "string"},
        "permissions": {"type": "array", "items": {"type": "string"}},
    },
}
CALLBACK_PAGE = {"text/html": {"schema": {"type": "string"}}}
# A browser lands on the GET: every failure is a page with the error's status.
CALLBACK_GET_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "The connected, or the cancelled, page.", "content": CALLBACK_PAGE},
    303: {"description": "No `apiKey`: back to `/`."},
    **{
        status: {"description": "The failure page.", "content": CALLBACK_PAGE}
        for status in (400, 401, 409, 502)
    },
}


@public_router.get(
    "/v1/btcpay/authorize/callback",
    response_class=HTMLResponse,
    responses=CALLBACK_GET_ANSWERS,
)
async def btcpay_authorize_callback_get(request: Request, state: str | None = None) -> Response:
    """BTCPay's redirect after consent (or refusal), with the key in the query string."""
    return await _authorize_callback(request, state)


@public_router.post("/v1/btcpay/authorize/callback", response_class=HTMLResponse)
@documents_body(CALLBACK_FORM, "application/x-www-form-urlencoded")
@documents_errors(400, 401, 409, 502)
async def btcpay_authorize_callback_post(request: Request, state: str | None = None) -> Response:
    """BTCPay's consent page posting the new key as a form."""
    return await _authorize_callback(request, state)


async def _authorize_callback(request: Request, state: str | None) -> Response:
    app = app_state(request)
    if request.method == "GET":
        query = request.query_params
        if query.get("error"):
            return message_page(
                request,
                "BTCPay was not connected",
                "The authorization was cancelled in BTCPay; nothing was changed.",
                status=200,
                link=("/admin/payments", "Back to Payments"),
            )
        api_key = query.get("apiKey")
        if not api_key:
            return RedirectResponse("/", status_code=303)
        permissions = query.getlist("permissions[]") + query.getlist("permissions")
    else:
        fields = _form_fields(await read_body(request))
        api_key = (fields.get("apiKey") or [""])[0]
        permissions = fields.get("permissions[]", []) + fields.get("permissions", [])
    try:
        if not state or not api_key:
            raise ApiError(401, "unauthorized", "unauthorized")
        connected = await connect.btcpay_callback(
            app.db, app.settings, app.providers, state, api_key, permissions
        )
    except ApiError as exc:
        if request.method == "POST":
            raise
        return message_page(
            request,
            "BTCPay was not connected",
            _callback_failure(exc),
            status=exc.status,
            link=("/admin/payments", "Back to Payments"),
        )
    return message_page(
        request,
        "BTCPay connected",
        f"Store {connected.store_id} ({connected.network}) now takes payments for merchant "
        f"profile '{connected.profile_name}'. You can close this tab.",
        status=200,
        link=("/admin/payments", "Back to Payments"),
    )


def _callback_failure(error: ApiError) -> str:
    if error.status == 401:
        return "This connect link has expired or was already used; start again from the admin."
    return error.message


@admin_router.post("/v1/admin/btcpay/disconnect", response_model=schemas.BTCPayDisconnected)
@documents_errors(404)
async def btcpay_disconnect(
    request: Request,
    actor: Actor = require_master(),
    body: schemas.DisconnectBody = json_body(schemas.DisconnectBody, allow_empty=True),
) -> JSONResponse:
    state = app_state(request)
    return respond(
        await connect.btcpay_disconnect(state.db, state.providers, actor, body.provider_id)
    )


@admin_router.get("/v1/admin/btcpay/status", response_model=schemas.BTCPayStatus)
@documents_errors(404)
async def btcpay_status(
    request: Request,
    actor: Actor = require_scope("payment_providers:read"),
    merchant_profile_id: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        return respond(await connect.btcpay_status(session, merchant_profile_id))


@admin_router.get("/v1/admin/btcpay/payment-methods", response_model=schemas.PaymentMethods)
@documents_errors(404, 502, 503)
async def btcpay_payment_methods(
    request: Request,
    actor: Actor = require_scope("payment_providers:read"),
    merchant_profile_id: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    return respond(
        await connect.btcpay_payment_methods(state.db, state.providers, merchant_profile_id)
    )


# --- Zaprite connect ------------------------------------------------------------------------


@admin_router.post("/v1/admin/zaprite/connect", response_model=schemas.ZapriteConnected)
@documents_body(schemas.ZapriteConnectBody)
@documents_errors(402, 404, 409, 502)
async def zaprite_connect(request: Request, actor: Actor = require_master()) -> JSONResponse:
    state = app_state(request)
    connect.check_zaprite_allowed(state.settings, state.tier())
    body = await schemas.parse_zaprite_connect(request)
    return respond(
        await connect.zaprite_connect(
            state.db,
            state.settings,
            state.providers,
            actor,
            api_key=body.api_key,
            base_url=body.base_url,
            label=body.label,
            profile_id=body.merchant_profile_id,
        )
    )


@admin_router.post("/v1/admin/zaprite/disconnect", response_model=schemas.ZapriteDisconnected)
@documents_errors(404)
async def zaprite_disconnect(
    request: Request,
    actor: Actor = require_master(),
    body: schemas.DisconnectBody = json_body(schemas.DisconnectBody, allow_empty=True),
) -> JSONResponse:
    state = app_state(request)
    return respond(await connect.zaprite_disconnect(state.db, actor, body.provider_id))


@admin_router.get("/v1/admin/zaprite/status", response_model=schemas.ZapriteStatus)
@documents_errors(404)
async def zaprite_status(
    request: Request,
    actor: Actor = require_scope("payment_providers:read"),
    merchant_profile_id: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        return respond(await connect.zaprite_status(session, state.settings, merchant_profile_id))


@admin_router.get("/v1/admin/payment-provider/status", response_model=schemas.ProviderStatus)
async def payment_provider_status(
    request: Request, actor: Actor = require_scope("payment_providers:read")
) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        return respond(await connect.provider_status(session))


# --- the sandbox provider -------------------------------------------------------------------


def _require_sandbox(state: AppState) -> None:
    if not state.settings.sandbox_mode:
        raise not_found("no such endpoint")


async def _run_sandbox_action(
    state: AppState, sandbox_id: str, action: str, amount_sats: int | None = None
) -> tuple[SandboxInvoice, Invoice | None]:
    """Move the sandbox invoice, then settle our invoice through the one pipeline."""
    async with state.db.write() as session:
        sandbox_invoice = await apply_action(session, sandbox_id, action, amount_sats)
    async with state.db.read() as session:
        invoice = await _invoice_for_sandbox(session, sandbox_invoice)
    if invoice is not None:
        await state.settlement.confirm(invoice.id)
        async with state.db.read() as session:
            invoice = await session.get(Invoice, invoice.id, populate_existing=True)
    return sandbox_invoice, invoice


async def _invoice_for_sandbox(session: Any, sandbox_invoice: SandboxInvoice) -> Invoice | None:
    canonical = normalize_id(sandbox_invoice.external_order_id)
    return await session.get(Invoice, canonical) if canonical else None


@admin_router.post(
    "/v1/admin/sandbox/invoices/{invoice_id}/{action}",
    response_model=schemas.SandboxActionResponse,
)
@documents_body(schemas.SandboxPayBody, optional=True)
@documents_errors(409)
async def sandbox_invoice_action(
    request: Request,
    invoice_id: str,
    action: str,
    actor: Actor = require_scope("licenses:write"),
) -> JSONResponse:
    state = app_state(request)
    _require_sandbox(state)
    if action not in ("pay", "expire", "invalidate"):
        raise not_found("no such endpoint")
    amount: int | None = None
    if action == "pay":
        amount = (await schemas.parse_sandbox_pay(request)).amount_sats
    canonical = normalize_id(invoice_id)
    async with state.db.read() as session:
        invoice = await session.get(Invoice, canonical) if canonical else None
        if invoice is None:
            raise not_found(f"invoice '{invoice_id}'")
        if invoice.provider_kind != "sandbox":
            raise conflict("this invoice was not created by the sandbox provider")
        sandbox_invoice = await get_sandbox_invoice(session, invoice.provider_invoice_id)
        if sandbox_invoice is None:
            raise conflict("the sandbox has no invoice for this invoice")
    _, settled = await _run_sandbox_action(state, sandbox_invoice.id, action, amount)
    status = settled.status if settled is not None else invoice.status
    async with state.db.write() as session:
        record_audit(
            session,
            actor,
            f"sandbox.invoice_{action}",
            "invoice",
            invoice.id,
            {"provider_invoice_id": sandbox_invoice.id, "status": status},
        )
    return respond(
        {
            "ok": True,
            "invoice_id": invoice.id,
            "provider_invoice_id": sandbox_invoice.id,
            "status": status,
        }
    )


def _same_origin(request: Request, public_url: str) -> bool:
    """Checkout buttons only count when posted from our own pages."""
    source = request.headers.get("origin")
    if source is None:
        referer = request.headers.get("referer")
        if referer is None:
            return False
        source = referer
    try:
        parts = urlsplit(source)
        origin = normalize_origin(parts.scheme, parts.hostname or "", parts.port)
    except ValueError:
        return False
    ours = {urlsplit(public_url), urlsplit(str(request.base_url))}
    return any(
        origin == normalize_origin(part.scheme, part.hostname or "", part.port) for part in ours
    )


async def _checkout_context(state: AppState, row: SandboxInvoice) -> dict[str, Any]:
    async with state.db.read() as session:
        invoice = await _invoice_for_sandbox(session, row)
        product = await session.get(Product, invoice.product_id) if invoice else None
        policy = (
            await session.get(Policy, invoice.policy_id) if invoice and invoice.policy_id else None
        )
        chrome, brand, listed, discount = await checkout_extras(
            session, state.settings.operator_name, invoice
        )
    item = product.name if product else "Sandbox invoice"
    if policy is not None:
        item = f"{item} — {policy.name}"
    if invoice is not None and invoice.kind == "renewal":
        item = f"Renewal of {item}"
    elif invoice is not None and invoice.kind == "tier_change":
        item = f"Upgrade to {item}"
    labels = {
        "new": "Awaiting payment",
        "settled": "Paid",
        "expired": "Expired",
        "invalid": "Invalid",
    }
    return {
        "chrome": chrome,
        "brand": brand,
        "item": item,
        "amount_sats": f"{row.amount_value:,}",
        "amount_btc": sats_to_btc_string(row.amount_value),
        "listed": listed,
        "discount": discount,
        "status": row.status,
        "status_label": labels[row.status],
        "expires_at": format_ts(row.expires_at),
        "expires_text": format_date_time(row.expires_at),
        "invoice_ref": row.external_order_id,
        "sandbox_id": row.id,
        "buyer_email": row.buyer_email,
        "can_pay": row.status in ("new", "expired"),
        "can_expire": row.status == "new",
        "continue_url": row.redirect_url if row.status in ("settled", "invalid") else None,
    }


@public_router.get(
    "/sandbox/checkout/{sandbox_id}", response_class=HTMLResponse, include_in_schema=False
)
async def sandbox_checkout(request: Request, sandbox_id: str) -> HTMLResponse:
    state = app_state(request)
    row = None
    if state.settings.sandbox_mode:
        async with state.db.read() as session:
            row = await get_sandbox_invoice(session, sandbox_id)
    if row is None:
        return message_page(request, "Not found", "There is no such sandbox invoice.", status=404)
    context = await _checkout_context(state, row)
    return render(
        request,
        "sandbox_checkout.html",
        context,
        brand=context["brand"],
        referrer_policy=SANDBOX_REFERRER_POLICY,
    )


@public_router.post(
    "/sandbox/checkout/{sandbox_id}/{action}", response_model=None, include_in_schema=False
)
async def sandbox_checkout_action(request: Request, sandbox_id: str, action: str) -> Response:
    state = app_state(request)
    row = None
    if state.settings.sandbox_mode and action in ("pay", "expire"):
        async with state.db.read() as session:
            row = await get_sandbox_invoice(session, sandbox_id)
    if row is None:
        return message_page(request, "Not found", "There is no such sandbox invoice.", status=404)
    if not _same_origin(request, state.settings.public_url):
        return message_page(
            request,
            "Refused",
            "This button only works from the sandbox checkout page itself.",
            status=403,
        )
    try:
        row, _ = await _run_sandbox_action(state, sandbox_id, action)
    except ApiError as exc:
        if exc.status != 409:
            raise
        return message_page(
            request,
            "Not possible",
            f"{exc.message.removeprefix('conflict: ')}.",
            status=409,
            link=(f"/sandbox/checkout/{sandbox_id}", "Back to the checkout"),
        )
    target = row.redirect_url if action == "pay" else f"/sandbox/checkout/{sandbox_id}"
    return RedirectResponse(target, status_code=303)
