"""Settings (web.md 11.5.13): seller name, web password, signing key, this server's own
license, sandbox and its test clock, exchange rates, community analytics, e-mail receipts
and the database."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from keysat.access.models import WebSession
from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.shell import (
    Confirmation,
    Problem,
    confirm_page,
    failure_page,
    form_session,
    notice_redirect,
    page_session,
    read_form,
    render_admin,
)

router = APIRouter(include_in_schema=False)

ACTIVE = "settings"
HOME = "/admin/settings"
PASSWORD_MIN = 12
OPERATOR_NAME_MAX = 200
LISTED_CURRENCIES = ("USD", "EUR")
TIER_NAMES = {"creator": "Creator", "pro": "Pro", "patron": "Patron"}
SOURCE_TEXT = {
    "env": "the KEYSAT_LICENSE variable",
    "stored": "the key activated here (stored in the database)",
    "file": "the license file in the data directory",
}
EXPORT_CONFIRMATION = Confirmation(
    title="Export the private signing key?",
    message="Anyone holding this key can issue license keys your apps accept. Export it only "
    "to store it offline, for example on a USB stick in a safe.",
    button="Export signing key",
    bullets=(
        "The key is shown once, on the next page.",
        "The export is recorded in the audit log.",
    ),
    warning="Never paste it into chat, e-mail or a ticket.",
    danger=True,
)


@dataclass(frozen=True)
class RateRow:
    currency: str
    units_per_btc: float | None
    source: str | None
    age_seconds: int | None

    @property
    def pinned(self) -> bool:
        return self.source == "manual_pin"


def fingerprint(public_pem: str) -> str:
    """SHA-256 of the key's DER SubjectPublicKeyInfo, as colon-separated hex."""
    key = serialization.load_pem_public_key(public_pem.encode("ascii"))
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def pem_data_url(pem: str) -> str:
    """A download link for a PEM that never leaves the page (no second request)."""
    return "data:application/x-pem-file;base64," + base64.b64encode(pem.encode()).decode()


def rate_rows(cached: list[dict[str, Any]]) -> list[RateRow]:
    """The listed fiat currencies first, then anything else cached; SAT and BTC are fixed."""
    by_currency = {r["currency"]: r for r in cached if r["currency"] not in ("SAT", "BTC")}
    order = list(LISTED_CURRENCIES) + sorted(set(by_currency) - set(LISTED_CURRENCIES))
    rows = []
    for currency in order:
        rate = by_currency.get(currency)
        rows.append(
            RateRow(
                currency,
                rate["units_per_btc"] if rate else None,
                rate["source"] if rate else None,
                rate["fetched_at_secs_ago"] if rate else None,
            )
        )
    return rows


def age_text(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def expiry_text(expires_at: int | None) -> str:
    if not expires_at:
        return "Perpetual"
    return datetime.fromtimestamp(expires_at, UTC).strftime("%d %b %Y %H:%M (UTC)")


def activated_text(tier: dict[str, Any]) -> str:
    """The server's own message lists entitlements with bare commas, which cannot wrap on
    a phone; this says the same in words."""
    entitlements = ", ".join(tier.get("entitlements") or []) or "none"
    expires_at = tier.get("expires_at")
    expiry = f"expires {expiry_text(expires_at)}" if expires_at else "perpetual"
    return f"License {tier.get('license_id')} activated ({expiry}). Entitlements: {entitlements}."


def size_text(size: int) -> str:
    if size < 0:
        return "unknown"
    units = ("bytes", "KB", "MB", "GB", "TB")
    value = float(size)
    for unit in units:
        if value < 1024 or unit == units[-1]:
            return f"{size:,} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size:,} bytes"


def _units(text: str) -> str | None:
    try:
        value = Decimal(text.replace(",", "").strip())
    except InvalidOperation:
        return None
    return str(value) if value.is_finite() else None


async def _page(
    request: Request,
    session: WebSession,
    api: AdminApi,
    *,
    problem: Problem | None = None,
    status: int = 200,
    echo: dict[str, str] | None = None,
) -> HTMLResponse:
    try:
        name = await api.get("/v1/admin/settings/operator-name")
        login = await api.get("/admin/login/status")
        public_key = await api.get("/v1/issuer/public-key")
        tier = await api.get("/v1/admin/tier")
        self_license = await api.get("/v1/admin/self-license")
        rates = await api.get("/v1/admin/rates")
        community = await api.get("/v1/admin/community-analytics")
        profiles = await api.get("/v1/admin/merchant-profiles")
        db = await api.get("/v1/admin/db-info")
        clock = await api.get("/v1/admin/sandbox/clock") if tier["sandbox"] else None
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    rows = rate_rows(rates["rates"])
    return await render_admin(
        request,
        session,
        api,
        "admin/settings.html",
        {
            "name": name,
            "has_password": login["has_password"],
            "public_key": public_key,
            "fingerprint": fingerprint(public_key["public_key_pem"]),
            "public_pem_url": pem_data_url(public_key["public_key_pem"]),
            "tier": tier,
            "tier_name": TIER_NAMES.get(tier["tier"], tier["tier_name"]),
            "self_license": self_license,
            "license_source": SOURCE_TEXT.get(self_license.get("source") or "", None),
            "expiry": expiry_text(self_license.get("expires_at")),
            "rates": rows,
            "rates_options": [(r.currency, r.currency) for r in rows],
            "age_text": age_text,
            "community": community,
            "preview": json.dumps(community["preview_heartbeat"], indent=2),
            "smtp_profiles": [p["name"] for p in profiles["profiles"] if p["smtp_configured"]],
            "db": db,
            "db_size": size_text(db["db_size_bytes"]),
            "clock": clock,
            "export_confirmation": EXPORT_CONFIRMATION,
            "echo": echo or {},
        },
        active=ACTIVE,
        title="Settings",
        problem=problem,
        status=status,
    )


@router.get("/admin/settings", response_class=HTMLResponse)
async def settings_page(request: Request) -> HTMLResponse:
    session = await page_session(request)
    return await _page(request, session, AdminApi(request, session))


async def _refused(
    request: Request, session: WebSession, api: AdminApi, problem: Problem, status: int
) -> HTMLResponse:
    return await _page(request, session, api, problem=problem, status=status)


@router.post("/admin/settings/operator-name", response_model=None)
async def save_operator_name(request: Request) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    answer = await api.send("POST", "/v1/admin/settings/operator-name", {"name": form.text("name")})
    if not answer.ok:
        return await _page(
            request,
            session,
            api,
            problem=Problem.of(answer),
            status=answer.status,
            echo=form.echo(),
        )
    stored = answer.body.get("operator_name")
    text = f"Operator name set to '{stored}'." if stored else "Operator name cleared."
    return notice_redirect(f"{HOME}#seller", text)


@router.post("/admin/settings/web-password", response_model=None)
async def set_web_password(request: Request) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    password = form.get("password")
    if password != form.get("password_confirm"):
        return await _refused(
            request, session, api, Problem("The two passwords do not match.", field="password"), 400
        )
    answer = await api.send("POST", "/v1/admin/web-password", {"password": password})
    if not answer.ok:
        return await _refused(request, session, api, Problem.of(answer), answer.status)
    # Every session just ended, this one included: the login page is next.
    return RedirectResponse("/admin/login?signed_out=1&next=/admin/settings", status_code=303)


@router.post("/admin/settings/export-key", response_model=None)
async def export_key(request: Request) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    if not form.flag("confirmed"):
        return await confirm_page(
            request, session, api, EXPORT_CONFIRMATION, form, active=ACTIVE, back=HOME
        )
    answer = await api.send("POST", "/v1/admin/export-issuer-key")
    if not answer.ok:
        return await _refused(request, session, api, Problem.of(answer), answer.status)
    private_pem = str(answer.body["private_key_pem"])
    # Rendered, never redirected to: the key exists only in this one response.
    return await render_admin(
        request,
        session,
        api,
        "admin/settings_export.html",
        {"private_pem": private_pem, "download_url": pem_data_url(private_pem)},
        active=ACTIVE,
        title="Signing key backup",
    )


@router.post("/admin/settings/import-key", response_model=None)
async def import_key(request: Request) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    answer = await api.call("POST", "/v1/admin/import-issuer-key", text=form.get("pem").strip())
    if not answer.ok:
        return await _refused(request, session, api, Problem.of(answer), answer.status)
    return notice_redirect(
        f"{HOME}#signing-key", "Signing key imported; new keys are signed with it."
    )


@router.post("/admin/settings/license", response_model=None)
async def activate_license(request: Request) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    key = "".join(form.get("license_key").split())
    answer = await api.send("POST", "/v1/admin/self-license", {"license_key": key})
    if not answer.ok:
        return await _page(
            request,
            session,
            api,
            problem=Problem(answer.message, field="license_key"),
            status=answer.status,
            echo={"license_key": form.get("license_key")},
        )
    return notice_redirect(f"{HOME}#license", activated_text(answer.body.get("tier") or {}))


@router.post("/admin/settings/license/refresh", response_model=None)
async def refresh_license(request: Request) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    answer = await api.send("POST", "/v1/admin/self-license/refresh")
    if not answer.ok:
        return await _refused(request, session, api, Problem.of(answer), answer.status)
    tier = answer.body
    text = (
        f"License {tier['license_id']} re-checked."
        if tier.get("tier") == "licensed"
        else f"Re-checked: {tier.get('reason') or 'no license'}."
    )
    return notice_redirect(f"{HOME}#license", text)


@router.post("/admin/settings/clock/{action}", response_model=None)
async def move_clock(request: Request, action: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    if action == "advance":
        days = form.text("days")
        body: dict[str, Any] = {"days": int(days) if days.isdigit() else days}
        answer = await api.send("POST", "/v1/admin/sandbox/clock/advance", body)
    elif action == "reset":
        answer = await api.send("POST", "/v1/admin/sandbox/clock/reset")
    else:
        return await _refused(request, session, api, Problem("Unknown clock action."), 404)
    if not answer.ok:
        return await _refused(request, session, api, Problem.of(answer), answer.status)
    offset_days = answer.body["offset_seconds"] / 86400
    text = (
        f"Sandbox clock moved: jobs now see {offset_days:g} days ahead."
        if answer.body["offset_seconds"]
        else "Sandbox clock reset to the real time."
    )
    return notice_redirect(f"{HOME}#sandbox", text)


@router.post("/admin/settings/rates/pin", response_model=None)
async def pin_rate(request: Request) -> Response:
    return await _rate_action(request, None, "pin")


@router.post("/admin/settings/rates/{currency}/{action}", response_model=None)
async def rate_action(request: Request, currency: str, action: str) -> Response:
    return await _rate_action(request, currency, action)


async def _rate_action(request: Request, currency: str | None, action: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    code = (currency or form.text("currency")).upper()
    if action == "refresh":
        answer = await api.send("POST", "/v1/admin/rates/refresh", {"currency": code})
        done = f"{code} rate refreshed."
    elif action == "pin":
        units = _units(form.text("units_per_btc"))
        if units is None:
            problem = Problem("Enter the rate as a number of units per BTC.", field="units_per_btc")
            return await _page(request, session, api, problem=problem, status=400, echo=form.echo())
        answer = await api.send("PUT", f"/v1/admin/rates/pins/{code}", {"units_per_btc": units})
        done = f"{code} pinned at {units} per BTC."
    elif action == "unpin":
        answer = await api.send("DELETE", f"/v1/admin/rates/pins/{code}")
        done = f"{code} pin cleared; the rate sources decide again."
    else:
        return await _refused(request, session, api, Problem("Unknown rate action."), 404)
    if not answer.ok:
        return await _refused(request, session, api, Problem.of(answer), answer.status)
    return notice_redirect(f"{HOME}#rates", done)


@router.post("/admin/settings/community", response_model=None)
async def save_community(request: Request) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    body = {"enabled": form.flag("enabled"), "collector_url": form.optional("collector_url")}
    answer = await api.send("POST", "/v1/admin/community-analytics", body)
    if not answer.ok:
        return await _refused(request, session, api, Problem.of(answer), answer.status)
    text = "Community analytics on." if answer.body["enabled"] else "Community analytics off."
    return notice_redirect(f"{HOME}#community", text)


@router.post("/admin/settings/community/reset", response_model=None)
async def reset_install_id(request: Request) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    answer = await api.send("POST", "/v1/admin/community-analytics/reset")
    if not answer.ok:
        return await _refused(request, session, api, Problem.of(answer), answer.status)
    return notice_redirect(f"{HOME}#community", "Install id cleared; a new one is made on opt-in.")
