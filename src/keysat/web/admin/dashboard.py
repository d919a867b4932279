"""Dashboard (web.md 11.5.1): first-run checklist, stat tiles, revenue, the three daily
charts, the public key to embed, recent activity and failed jobs.

Everything comes from the admin API except the daily series, which the API does not offer
(admin-api.md 19.2) and `keysat.operator.daily` reads from the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from keysat.operator.daily import WINDOWS, DailySeries, Day, daily_series
from keysat.state import app_state
from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.charts import Chart, Series, bar_chart, day_label
from keysat.web.admin.shell import (
    failure_page,
    form_session,
    page_session,
    payments_line,
    render_admin,
)
from keysat.web.format import format_money

router = APIRouter(include_in_schema=False)

ACTIVE = "dashboard"
DEFAULT_WINDOW = 30
CHECKLIST_COOKIE = "keysat_checklist"
LIST_LIMIT = 1000
DELIVERY_LIMIT = 500

REVENUE = (Series("revenue", "Revenue (sats)", "#1E3A5F"),)
ISSUED = (
    Series("paid", "Paid", "#1E3A5F"),
    Series("free_or_trial", "Free or trial", "#E3A92B"),
    Series("manual", "Manual", "#7C8DA6"),
)
VALIDATIONS = (
    Series("ok", "Succeeded", "#1C6B3A"),
    Series("failed", "Failed", "#C0392B"),
)


@dataclass(frozen=True)
class ChecklistItem:
    label: str
    href: str
    done: bool


@dataclass(frozen=True)
class Stat:
    label: str
    value: str
    href: str | None = None
    text: bool = False  # words rather than a number


def window_days(raw: str | None) -> int:
    """The chart window from `?days=`: 7, 30 or 90; anything else is the default."""
    return int(raw) if raw in {str(days) for days in WINDOWS} else DEFAULT_WINDOW


def count_text(items: Sequence[Any], limit: int) -> str:
    """A count read from a list the API caps at `limit`: "1,000+" when it may be more."""
    return f"{len(items):,}+" if len(items) >= limit else f"{len(items):,}"


def _plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def _describe_revenue(day: date, row: Sequence[int]) -> str:
    return f"{day_label(day)}: {format_money(row[0], 'SAT')}"


def _describe_issued(day: date, row: Sequence[int]) -> str:
    paid, free, manual = row
    total = _plural(paid + free + manual, "license", "licenses")
    return f"{day_label(day)}: {total} ({paid:,} paid, {free:,} free or trial, {manual:,} manual)"


def _describe_validations(day: date, row: Sequence[int]) -> str:
    ok, failed = row
    total = _plural(ok + failed, "validation", "validations")
    return f"{day_label(day)}: {total} ({ok:,} succeeded, {failed:,} failed)"


def charts(days: Sequence[Day]) -> list[Chart]:
    dates = [day.day for day in days]
    return [
        bar_chart(
            "revenue",
            "Revenue per day",
            REVENUE,
            dates,
            [[day.revenue_sats] for day in days],
            _describe_revenue,
        ),
        bar_chart(
            "licenses",
            "Licenses issued per day",
            ISSUED,
            dates,
            [[day.paid, day.free_or_trial, day.manual] for day in days],
            _describe_issued,
        ),
        bar_chart(
            "validations",
            "Validations per day",
            VALIDATIONS,
            dates,
            [[day.validations_ok, day.validations_failed] for day in days],
            _describe_validations,
        ),
    ]


def key_preview(pem: str) -> str:
    """The start and end of a PEM, enough to recognise it."""
    lines = [line for line in pem.strip().splitlines() if line]
    if len(lines) < 3:
        return pem.strip()
    body = "".join(lines[1:-1])
    return f"{lines[0]}\n{body[:24]}…{body[-8:]}\n{lines[-1]}"


async def _has_tier(api: AdminApi, products: Sequence[dict[str, Any]]) -> bool:
    for product in products:
        listing = await api.get(
            "/v1/admin/policies",
            product_slug=product["slug"],
            include_inactive="true",
            include_archived="true",
        )
        if listing["policies"]:
            return True
    return False


async def checklist(
    api: AdminApi,
    products: Sequence[dict[str, Any]],
    provider: dict[str, Any],
    tier: dict[str, Any],
    series: DailySeries,
) -> list[ChecklistItem]:
    login = await api.get("/admin/login/status")
    name = await api.get("/v1/admin/settings/operator-name")
    exports = await api.get("/v1/admin/audit", action="issuer_key.export", limit=1)
    connected = bool(provider.get("providers"))
    payments = (
        "Connect a payment provider (the sandbox is active for now)"
        if tier.get("sandbox") and not connected
        else "Connect a payment provider"
    )
    return [
        ChecklistItem("Set a web password", "/admin/settings#password", login["has_password"]),
        ChecklistItem(payments, "/admin/payments", connected or bool(tier.get("sandbox"))),
        ChecklistItem(
            "Set the operator name", "/admin/settings#operator-name", bool(name["stored"])
        ),
        ChecklistItem("Create a product", "/admin/products", bool(products)),
        ChecklistItem("Add a tier", "/admin/policies", await _has_tier(api, products)),
        ChecklistItem("Copy the public key into your app", "#public-key", series.ever_validated),
        ChecklistItem(
            "Make a backup (export the signing key)",
            "/admin/settings#backup",
            bool(exports["entries"]),
        ),
    ]


@router.get("/admin/", response_class=HTMLResponse)
async def dashboard_page(request: Request, days: str | None = None) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    window = window_days(days)
    try:
        revenue = await api.get("/v1/admin/revenue/summary")
        licenses = await api.get("/v1/admin/licenses/summary")
        subscriptions = await api.get("/v1/admin/subscriptions", status="active", limit=LIST_LIMIT)
        pending = await api.get("/v1/admin/invoices", status="pending", limit=LIST_LIMIT)
        failed = await api.get(
            "/v1/admin/webhook-deliveries", status="failed", limit=DELIVERY_LIMIT
        )
        tier = await api.get("/v1/admin/tier")
        provider = await api.get("/v1/admin/payment-provider/status")
        products = (await api.get("/v1/admin/products"))["products"]
        public_key = await api.get("/v1/issuer/public-key")
        audit = await api.get("/v1/admin/audit", limit=10)
        jobs = await api.get("/v1/admin/jobs")
        series = await daily_series(app_state(request), window)
        items = await checklist(api, products, provider, tier, series)
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    sandbox = bool(tier.get("sandbox"))
    payments = payments_line(provider, sandbox=sandbox)
    stats = [
        Stat("Revenue, lifetime", format_money(revenue["total_sats"], "SAT")),
        Stat("Active licenses", f"{licenses['active']:,}", "/admin/licenses?status=active"),
        Stat(
            "Active subscriptions",
            count_text(subscriptions["subscriptions"], LIST_LIMIT),
            "/admin/subscriptions?status=active",
        ),
        Stat(
            "Active discount codes",
            f"{tier['usage']['active_codes']:,}",
            "/admin/discount-codes",
        ),
        Stat(
            "Pending invoices",
            count_text(pending["invoices"], LIST_LIMIT),
            "/admin/invoices?status=pending",
        ),
        Stat(
            "Failed webhook deliveries",
            count_text(failed["deliveries"], DELIVERY_LIMIT),
            "/admin/webhooks?status=failed",
        ),
        Stat("Payments", payments[0].upper() + payments[1:], "/admin/payments", text=True),
    ]
    show_checklist = (
        not all(item.done for item in items) and request.cookies.get(CHECKLIST_COOKIE) != "hidden"
    )
    return await render_admin(
        request,
        session,
        api,
        "admin/dashboard.html",
        {
            "checklist": items if show_checklist else None,
            "stats": stats,
            "revenue": revenue,
            "window": window,
            "windows": WINDOWS,
            "charts": charts(series.days),
            "public_key": public_key["public_key_pem"],
            "key_preview": key_preview(public_key["public_key_pem"]),
            "activity": audit["entries"],
            "failed_jobs": [job for job in jobs["jobs"] if job["last_status"] == "error"],
        },
        active=ACTIVE,
        title="Dashboard",
    )


@router.post("/admin/checklist/hide", response_class=RedirectResponse)
async def hide_checklist(request: Request) -> RedirectResponse:
    """Dismissing the checklist is this browser's choice, so it lives in a cookie."""
    await form_session(request)
    response = RedirectResponse("/admin/", status_code=303)
    response.set_cookie(
        CHECKLIST_COOKIE,
        "hidden",
        max_age=365 * 86_400,
        path="/admin",
        httponly=True,
        samesite="strict",
    )
    return response
