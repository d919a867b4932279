"""Invoices (web.md 11.5.7): every invoice by status, kind, product, buyer and license; a
search that opens one by our id or the provider's; a detail view with every field, a
timeline, links, "Run reconcile now" and the sandbox's pay, expire and invalidate."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from keysat.state import app_state
from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.billing_views import (
    INVOICE_KINDS,
    INVOICE_STATUSES,
    INVOICE_TONES,
    KIND_NAMES,
    PAGE_SIZE,
    Catalog,
    grouped,
    invoice_amount,
    link,
    load_catalog,
    offset_of,
    page_of,
    product_pills,
    provider_text,
    rate_text,
)
from keysat.web.admin.shell import (
    Problem,
    failure_page,
    form_session,
    notice_redirect,
    page_session,
    render_admin,
)
from keysat.web.format import format_money

router = APIRouter(include_in_schema=False)

ACTIVE = "invoices"
BASE = "/admin/invoices"
SANDBOX_ACTIONS = {
    "pay": "Payment simulated",
    "expire": "Invoice expired",
    "invalidate": "Invoice invalidated",
}


def decorate(invoice: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    discount = int(invoice.get("discount_applied_sats") or 0)
    return {
        **invoice,
        "product_name": catalog.product_name(invoice["product_id"]),
        "tier_name": catalog.policy_name(invoice.get("policy_id")),
        "kind_name": KIND_NAMES.get(invoice["kind"], invoice["kind"]),
        "amount_text": invoice_amount(invoice),
        "discount_text": f"{format_money(discount, 'SAT')} off" if discount else "",
        "provider_text": provider_text(invoice),
        "tone": INVOICE_TONES.get(invoice["status"], "neutral"),
    }


@router.get(BASE, response_class=HTMLResponse)
async def invoices_page(
    request: Request,
    status: str | None = None,
    kind: str | None = None,
    product: str | None = None,
    email: str | None = None,
    license: str | None = None,
    offset: str | None = None,
) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    wanted_status = status if status in dict(INVOICE_STATUSES) and status else None
    wanted_kind = kind if kind in dict(INVOICE_KINDS) and kind else None
    email_text = (email or "").strip() or None
    license_text = (license or "").strip() or None
    query: dict[str, str | None] = {
        "status": wanted_status,
        "kind": wanted_kind,
        "product": product,
        "email": email_text,
        "license": license_text,
    }
    try:
        catalog = await load_catalog(api)
        listing = await api.get(
            "/v1/admin/invoices",
            status=wanted_status,
            kind=wanted_kind,
            buyer_email=email_text,
            license_id=license_text,
            limit=1000,
        )
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    every = listing["invoices"]
    counts = Counter(str(invoice["product_id"]) for invoice in every)
    rows = [invoice for invoice in every if not product or invoice["product_id"] == product]
    start = offset_of(offset)
    shown = [decorate(invoice, catalog) for invoice in page_of(rows, start)]
    return await render_admin(
        request,
        session,
        api,
        "admin/invoices.html",
        {
            "groups": grouped(shown, catalog),
            "total": len(rows),
            "capped": len(every) >= 1000,
            "offset": start,
            "limit": PAGE_SIZE,
            "pager_base": link(BASE, query),
            "query": query,
            "filtered": any(query.values()),
            "product_pills": product_pills(BASE, query, catalog, counts),
            "status_pills": [
                (value, name, link(BASE, query, status=value or None))
                for value, name in INVOICE_STATUSES
            ],
            "kind_pills": [
                (value, name, link(BASE, query, kind=value or None))
                for value, name in INVOICE_KINDS
            ],
        },
        active=ACTIVE,
        title="Invoices",
    )


@router.get(BASE + "/find", response_model=None)
async def find_invoice(request: Request, q: str = "") -> Response:
    """Opens an invoice by our id or the provider's (the API takes either)."""
    session = await page_session(request)
    wanted = q.strip()
    if not wanted:
        return notice_redirect(BASE, "Type an invoice id to open it.", kind="error")
    answer = await AdminApi(request, session).call("GET", f"/v1/admin/invoices/{quote(wanted)}")
    if not answer.ok:
        return notice_redirect(BASE, f"No invoice has the id {wanted[:80]}.", kind="error")
    return notice_redirect(f"{BASE}/{answer.body['invoice']['id']}", "Invoice found.")


def timeline(invoice: dict[str, Any], audit: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the server stores about the invoice's life, oldest first (web.md 11.5.7)."""
    events = [{"at": invoice["created_at"], "text": "Created", "detail": ""}]
    if invoice.get("settled_at"):
        events.append({"at": invoice["settled_at"], "text": "Settled", "detail": ""})
    elif invoice["updated_at"] != invoice["created_at"]:
        status = str(invoice["status"]).capitalize()
        events.append(
            {"at": invoice["updated_at"], "text": f"Last changed ({status})", "detail": ""}
        )
    for entry in audit:
        details = entry.get("details") or {}
        shown = ", ".join(
            f"{name}: {value}"
            for name, value in details.items()
            if isinstance(value, (str, int)) and name != "provider_invoice_id"
        )
        events.append({"at": entry["occurred_at"], "text": entry["action"], "detail": shown})
    return sorted(events, key=lambda event: str(event["at"]))


@router.get(BASE + "/{invoice_id}", response_class=HTMLResponse)
async def invoice_page(request: Request, invoice_id: str) -> HTMLResponse:
    return await _detail(request, invoice_id)


async def _detail(
    request: Request, invoice_id: str, problem: Problem | None = None, status: int = 200
) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    try:
        catalog = await load_catalog(api)
        found = await api.get(f"/v1/admin/invoices/{quote(invoice_id)}")
        invoice = found["invoice"]
        audit = await api.get(
            "/v1/admin/audit", target_kind="invoice", target_id=invoice["id"], limit=100
        )
        redemption = found.get("redemption")
        code = None
        if redemption is not None:
            code = (await api.get(f"/v1/admin/discount-codes/{redemption['code_id']}"))["code"]
        tier = await api.get("/v1/admin/tier")
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    origin = app_state(request).sessions.public_origin
    currency = invoice.get("listed_currency")
    return await render_admin(
        request,
        session,
        api,
        "admin/invoices_detail.html",
        {
            "invoice": decorate(invoice, catalog),
            "redemption": redemption,
            "code": code,
            "events": timeline(invoice, audit["entries"]),
            "receipt_url": f"{origin}/thank-you?invoice_id={invoice['id']}",
            "listed_text": format_money(int(invoice["listed_value"]), currency)
            if currency and invoice.get("listed_value") is not None
            else None,
            "rate": rate_text(invoice.get("exchange_rate_centibps"), currency),
            "sandbox_actions": invoice["provider_kind"] == "sandbox" and bool(tier.get("sandbox")),
        },
        active=ACTIVE,
        title="Invoice",
        problem=problem,
        status=status,
    )


@router.post(BASE + "/{invoice_id}/sandbox/{action}", response_model=None)
async def sandbox_action(request: Request, invoice_id: str, action: str) -> Response:
    session = await form_session(request)
    if action not in SANDBOX_ACTIONS:
        return notice_redirect(f"{BASE}/{invoice_id}", "Unknown sandbox action.", kind="error")
    answer = await AdminApi(request, session).send(
        "POST", f"/v1/admin/sandbox/invoices/{quote(invoice_id)}/{action}"
    )
    if not answer.ok:
        return await _detail(request, invoice_id, Problem.of(answer), answer.status)
    status = str(answer.body.get("status", "")).capitalize()
    return notice_redirect(
        f"{BASE}/{invoice_id}", f"{SANDBOX_ACTIONS[action]}. The invoice is now {status}."
    )


@router.post(BASE + "/{invoice_id}/reconcile", response_model=None)
async def reconcile_now(request: Request, invoice_id: str) -> Response:
    session = await form_session(request)
    answer = await AdminApi(request, session).send("POST", "/v1/admin/jobs/reconciler/run")
    if not answer.ok:
        return await _detail(request, invoice_id, Problem.of(answer), answer.status)
    result = answer.body.get("last_status") or "done"
    return notice_redirect(f"{BASE}/{invoice_id}", f"The reconciler ran: {result}.")
