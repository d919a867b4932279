"""Subscriptions (web.md 11.5.6): filter by product and state, cancel with a reason, and a
detail view with the cycle history, its renewal invoices and pending tier changes."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from keysat.web.admin.api import AdminApi, Answer, ApiFailure
from keysat.web.admin.billing_views import (
    INVOICE_TONES,
    KIND_NAMES,
    PAGE_SIZE,
    cadence_text,
    grouped,
    invoice_amount,
    link,
    listed_price,
    load_catalog,
    offset_of,
    page_of,
    parse_ts,
    product_pills,
)
from keysat.web.admin.shell import (
    Confirmation,
    Problem,
    confirm_page,
    failure_page,
    form_session,
    notice_redirect,
    page_session,
    read_form,
    reason_body,
    render_admin,
)
from keysat.web.format import utc_text

router = APIRouter(include_in_schema=False)

ACTIVE = "subscriptions"
BASE = "/admin/subscriptions"
STATES = (
    ("", "All", "Every subscription."),
    ("active", "Active", "Paid up."),
    ("past_due", "Past due", "A renewal invoice is waiting to be paid."),
    ("cancelled", "Cancelled", "Will not renew; access lasts until the paid-through date."),
    ("lapsed", "Lapsed", "A renewal went unpaid past the grace period."),
)
STATE_TONES = {"active": "ok", "past_due": "warn", "cancelled": "neutral", "lapsed": "bad"}
STATE_NAMES = {value: name for value, name, _ in STATES}
CANCELLABLE = ("active", "past_due")


def cancel_confirmation(sub: dict[str, Any]) -> Confirmation:
    paid_through = sub.get("next_renewal_at")
    until = utc_text(paid_through) if paid_through else "its paid-through date"
    return Confirmation(
        title="Cancel this subscription?",
        message="It will not renew again.",
        button="Cancel subscription",
        eyebrow="Subscription",
        bullets=(
            f"The license stays valid until the end of its paid cycle ({until}).",
            "No further renewal invoice is created.",
            "A late payment of an open renewal invoice would still reactivate it.",
        ),
        reason=True,
        danger=True,
    )


def decorate(sub: dict[str, Any], catalog: Any) -> dict[str, Any]:
    return {
        **sub,
        "product_name": catalog.product_name(sub["product_id"]),
        "tier_name": catalog.policy_name(sub["policy_id"]),
        "cadence": cadence_text(int(sub["period_days"])),
        "price": listed_price(int(sub["listed_value"]), sub["listed_currency"], sub["period_days"]),
        "state_name": STATE_NAMES.get(sub["status"], sub["status"]),
        "tone": STATE_TONES.get(sub["status"], "neutral"),
        "cancellable": sub["status"] in CANCELLABLE,
        "confirmation": cancel_confirmation(sub),
    }


@router.get(BASE, response_class=HTMLResponse)
async def subscriptions_page(
    request: Request,
    status: str | None = None,
    product: str | None = None,
    offset: str | None = None,
) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    state = status if status in STATE_NAMES and status else None
    query: dict[str, str | None] = {"status": state, "product": product}
    try:
        catalog = await load_catalog(api)
        listing = await api.get("/v1/admin/subscriptions", status=state, limit=1000)
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    every = listing["subscriptions"]
    counts = Counter(str(sub["product_id"]) for sub in every)
    rows = [sub for sub in every if not product or sub["product_id"] == product]
    start = offset_of(offset)
    shown = [decorate(sub, catalog) for sub in page_of(rows, start)]
    return await render_admin(
        request,
        session,
        api,
        "admin/subscriptions.html",
        {
            "groups": grouped(shown, catalog),
            "total": len(rows),
            "offset": start,
            "limit": PAGE_SIZE,
            "pager_base": link(BASE, query),
            "status": state or "",
            "product": product or "",
            "product_pills": product_pills(BASE, query, catalog, counts),
            "status_pills": [
                (value, name, link(BASE, query, status=value or None), text)
                for value, name, text in STATES
            ],
            "back": link(BASE, query),
        },
        active=ACTIVE,
        title="Subscriptions",
    )


def cycles(
    sub: dict[str, Any], invoices: list[dict[str, Any]], first: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The first (purchase) cycle, then each renewal, newest first."""
    renewals = [inv for inv in invoices if inv.get("subscription_id") == sub["id"]]
    rows = [{**inv, "cycle": inv.get("cycle_number") or "—"} for inv in renewals]
    rows += [{**inv, "cycle": 1} for inv in first]
    for row in rows:
        row["amount_text"] = invoice_amount(row)
        row["tone"] = INVOICE_TONES.get(row["status"], "neutral")
        row["kind_name"] = KIND_NAMES.get(row["kind"], row["kind"])
    return sorted(rows, key=lambda row: str(row["created_at"]), reverse=True)


@router.get(BASE + "/{subscription_id}", response_class=HTMLResponse)
async def subscription_page(request: Request, subscription_id: str) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    try:
        catalog = await load_catalog(api)
        # There is no single-subscription read (admin-api.md 9); the list holds every one.
        every = (await api.get("/v1/admin/subscriptions", limit=1000))["subscriptions"]
        sub = next((row for row in every if row["id"] == subscription_id), None)
        if sub is None:
            message = f"not found: subscription '{subscription_id}'"
            raise ApiFailure(Answer(404, {"message": message}))
        renewals = await api.get(
            "/v1/admin/invoices", kind="renewal", product_id=sub["product_id"], limit=1000
        )
        first = await api.get(
            "/v1/admin/invoices", kind="purchase", license_id=sub["license_id"], limit=10
        )
        changes = await api.get("/v1/admin/audit", target_kind="tier_change", limit=1000)
        audit = await api.get(
            "/v1/admin/audit", target_kind="subscription", target_id=sub["id"], limit=50
        )
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    invoices = {inv["id"]: inv for inv in renewals["invoices"] + first["invoices"]}
    try:
        tier_changes = [
            await _tier_change(api, entry, catalog, invoices)
            for entry in changes["entries"]
            if entry["details"].get("license_id") == sub["license_id"]
        ]
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    return await render_admin(
        request,
        session,
        api,
        "admin/subscriptions_detail.html",
        {
            "sub": decorate(sub, catalog),
            "cycles": cycles(sub, renewals["invoices"], first["invoices"]),
            "tier_changes": tier_changes,
            "audit": audit["entries"],
            "back": f"{BASE}/{sub['id']}",
        },
        active=ACTIVE,
        title="Subscription",
    )


async def _tier_change(
    api: AdminApi, entry: dict[str, Any], catalog: Any, known: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """A tier change as its audit row tells it (the admin API has no tier-change list),
    with the status of its invoice when it has one: pending until paid, or until its
    effective time for a downgrade scheduled at the renewal boundary."""
    details = entry["details"]
    invoice_id = details.get("invoice_id")
    invoice = known.get(invoice_id) if invoice_id else None
    if invoice_id and invoice is None:
        invoice = (await api.get(f"/v1/admin/invoices/{invoice_id}"))["invoice"]
    effective = parse_ts(details.get("effective_at"))
    if invoice is not None:
        pending = invoice["status"] == "pending"
    else:
        pending = effective is not None and effective > datetime.now(UTC)
    return {
        "at": entry["occurred_at"],
        "to": catalog.policy_name(details.get("to_policy_id")),
        "from": catalog.policy_name(details.get("from_policy_id")),
        "direction": details.get("direction") or "",
        "effective_at": details.get("effective_at"),
        "invoice": invoice,
        "pending": pending,
        "reason": details.get("reason"),
    }


def _back(value: str) -> str:
    return value if value.startswith(BASE) else BASE


@router.post(BASE + "/{subscription_id}/cancel", response_model=None)
async def cancel_subscription(request: Request, subscription_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    back = _back(form.text("back"))
    if not form.flag("confirmed"):
        listing = await api.get("/v1/admin/subscriptions", limit=1000)
        sub = next((row for row in listing["subscriptions"] if row["id"] == subscription_id), None)
        confirmation = cancel_confirmation(sub or {"next_renewal_at": None})
        return await confirm_page(
            request, session, api, confirmation, form, active=ACTIVE, back=back
        )
    answer = await api.send(
        "POST", f"/v1/admin/subscriptions/{subscription_id}/cancel", reason_body(form)
    )
    if not answer.ok:
        return await render_admin(
            request,
            session,
            api,
            "admin/message.html",
            {"heading": "The subscription was not cancelled", "text": answer.message},
            active=ACTIVE,
            title="Subscriptions",
            problem=Problem.of(answer),
            status=answer.status,
        )
    if answer.body.get("already"):
        return notice_redirect(back, f"Nothing to do: it was already {answer.body['already']}.")
    return notice_redirect(
        back, "Subscription cancelled. The license stays valid until its paid-through date."
    )
