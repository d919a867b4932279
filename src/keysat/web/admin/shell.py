"""What every admin screen shares (web.md 11.1-11.4): the session gate, form reading, the
layout's chrome, notices after a redirect, confirmations, show-once secrets and the
upgrade panel. Screens stay thin: they read through `AdminApi`, post through it, and render
with `render_admin`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from keysat.access.models import WebSession
from keysat.access.sessions import cookie_token, safe_next
from keysat.errors import ApiError
from keysat.state import app_state
from keysat.web.admin.api import AdminApi, Answer, ApiFailure
from keysat.web.pages import render
from keysat.wire import read_body

NOTICE_COOKIE = "keysat_notice"
LOGIN_PATH = "/admin/login"
SETTINGS_LICENSE = "/admin/settings#license"

NAV: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "Workspace",
        (
            ("dashboard", "Dashboard", "/admin/"),
            ("products", "Products", "/admin/products"),
            ("policies", "Policies", "/admin/policies"),
            ("licenses", "Licenses", "/admin/licenses"),
            ("machines", "Machines", "/admin/machines"),
            ("subscriptions", "Subscriptions", "/admin/subscriptions"),
            ("invoices", "Invoices", "/admin/invoices"),
            ("discount-codes", "Discount codes", "/admin/discount-codes"),
        ),
    ),
    (
        "System",
        (
            ("payments", "Payments", "/admin/payments"),
            ("webhooks", "Webhooks", "/admin/webhooks"),
            ("api-keys", "API keys", "/admin/api-keys"),
            ("jobs", "Jobs", "/admin/jobs"),
            ("audit", "Audit log", "/admin/audit"),
            ("settings", "Settings", "/admin/settings"),
        ),
    ),
)


class FormRefused(Exception):
    """A form post failed the CSRF check: an old page, or a post from another site."""


class LoginRequired(Exception):
    """No valid session: the page sends the browser to the login page and back after."""

    def __init__(self, next_path: str, *, expired: bool) -> None:
        super().__init__(next_path)
        self.next_path = next_path
        self.expired = expired


def login_redirect(next_path: str, *, expired: bool) -> RedirectResponse:
    query = f"?next={quote(next_path, safe='/')}"
    if expired:
        query += "&expired=1"
    return RedirectResponse(LOGIN_PATH + query, status_code=303)


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


async def page_session(request: Request) -> WebSession:
    """The session of a screen's GET; none sends the browser to log in first."""
    row = await app_state(request).sessions.current(request)
    if row is None:
        raise LoginRequired(_here(request), expired=cookie_token(request) is not None)
    return row


async def form_session(request: Request) -> WebSession:
    """The session of a form post, with the CSRF check of access.md 6.6 (origin and the
    form's token). An ended session sends the browser to log in and back to the screen."""
    state = app_state(request)
    try:
        return await state.sessions.authenticate(request)
    except ApiError as exc:
        if exc.status == 401:
            referer = request.headers.get("referer") or ""
            back = referer.split("://", 1)[-1].partition("/")[2]
            raise LoginRequired(safe_next("/" + back), expired=True) from None
        raise FormRefused from None


@dataclass(frozen=True)
class Form:
    """A posted form: every value of every field, as sent."""

    values: dict[str, list[str]]

    def get(self, name: str, default: str = "") -> str:
        found = self.values.get(name)
        return found[0] if found else default

    def text(self, name: str) -> str:
        return self.get(name).strip()

    def optional(self, name: str) -> str | None:
        """A trimmed value, or None for a blank field."""
        return self.text(name) or None

    def all(self, name: str) -> list[str]:
        return list(self.values.get(name, []))

    def flag(self, name: str) -> bool:
        return self.get(name) in ("1", "on", "true", "yes")

    def echo(self) -> dict[str, str]:
        """What the operator typed, to put back into a form that failed."""
        return {name: values[0] for name, values in self.values.items() if name != "csrf_token"}


async def read_form(request: Request) -> Form:
    try:
        text = (await read_body(request)).decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    return Form(parse_qs(text, keep_blank_values=True))


@dataclass(frozen=True)
class Problem:
    """A refused action, shown above the form with the server's own message; a `402`
    with an upgrade link becomes the upgrade panel (web.md 11.4)."""

    message: str
    upgrade_url: str | None = None
    field: str | None = None

    @classmethod
    def of(cls, answer: Answer) -> Problem:
        return cls(answer.message, answer.upgrade_url)


@dataclass(frozen=True)
class Confirmation:
    """A confirm (or reason) dialog (web.md 11.3). With JavaScript it opens in place; without,
    the action's first post renders it as a page whose form posts again, confirmed."""

    title: str
    message: str
    button: str
    eyebrow: str = "Please confirm"
    bullets: tuple[str, ...] = ()
    warning: str | None = None
    reason: bool = False
    danger: bool = False
    type_to_confirm: str | None = None


@dataclass(frozen=True)
class Secret:
    """Something shown once (web.md 11.3): a key, a token, a signing secret."""

    title: str
    value: str
    note: str
    back: str
    back_label: str = "I've saved it — close"
    extra: list[tuple[str, str]] = field(default_factory=list)
    copy_label: str = "Copy"
    warning: str = "It will not be shown again. Copy it somewhere safe now."


def notice_redirect(url: str, notice: str, *, kind: str = "ok") -> RedirectResponse:
    """Post-redirect-get with a notice for the next page (web.md 11.3 Notices)."""
    response = RedirectResponse(url, status_code=303)
    value = quote(json.dumps({"text": notice[:500], "kind": kind}), safe="")
    response.headers["Set-Cookie"] = (
        f"{NOTICE_COOKIE}={value}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=60"
    )
    return response


def _take_notice(request: Request) -> dict[str, str] | None:
    raw = request.cookies.get(NOTICE_COOKIE)
    if not raw:
        return None
    try:
        value = json.loads(unquote(raw))
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        return None
    kind = value.get("kind") if value.get("kind") in ("ok", "error") else "ok"
    return {"text": value["text"], "kind": str(kind)}


@dataclass(frozen=True)
class Chrome:
    """The layout around every screen: who is signed in, the tier banner and the payments
    footer (web.md 11.2)."""

    operator_name: str
    login_method: str
    csrf_token: str
    tier: dict[str, Any]
    payments: str
    payments_ok: bool


async def _chrome(api: AdminApi, session: WebSession) -> Chrome:
    name = await api.get("/v1/admin/settings/operator-name")
    tier = await api.get("/v1/admin/tier")
    status = await api.get("/v1/admin/payment-provider/status")
    return Chrome(
        operator_name=name.get("effective") or "Keysat",
        login_method=session.login_method,
        csrf_token=session.csrf_token,
        tier=tier,
        payments=payments_line(status, sandbox=bool(tier.get("sandbox"))),
        payments_ok=bool(status.get("providers")) or bool(tier.get("sandbox")),
    )


def payments_line(status: dict[str, Any], *, sandbox: bool) -> str:
    """The sidebar's payments footer (web.md 11.2)."""
    providers = status.get("providers") or []
    btcpay = next((p for p in providers if p.get("kind") == "btcpay"), None)
    if btcpay is not None:
        store = str(btcpay.get("store_id") or "")
        return f"BTCPay connected (store {store[:4]}…)" if store else "BTCPay connected"
    if providers:
        return "Zaprite connected"
    return "sandbox (simulated)" if sandbox else "not set up"


async def render_admin(
    request: Request,
    session: WebSession,
    api: AdminApi,
    template: str,
    context: dict[str, Any],
    *,
    active: str,
    title: str,
    status: int = 200,
    problem: Problem | None = None,
) -> HTMLResponse:
    chrome = await _chrome(api, session)
    values = {
        **context,
        "chrome": chrome,
        "csrf_token": session.csrf_token,
        "nav": NAV,
        "active": active,
        "title": title,
        "problem": problem,
        "notice": _take_notice(request),
        "now": datetime.now(UTC),
        "settings_license": SETTINGS_LICENSE,
    }
    # Under no-referrer a browser sends `Origin: null` with our own forms, which the CSRF
    # check refuses; same-origin still sends nothing to other sites.
    response = render(
        request, template, values, status=status, private=True, referrer_policy="same-origin"
    )
    if NOTICE_COOKIE in request.cookies:
        response.headers.append(
            "Set-Cookie", f"{NOTICE_COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0"
        )
    return response


async def confirm_page(
    request: Request,
    session: WebSession,
    api: AdminApi,
    confirmation: Confirmation,
    form: Form,
    *,
    active: str,
    back: str,
) -> HTMLResponse:
    """The page a destructive action shows without JavaScript: the dialog's content and a
    form that posts the same fields again, confirmed."""
    return await render_admin(
        request,
        session,
        api,
        "admin/confirm.html",
        {
            "confirmation": confirmation,
            "action": request.url.path,
            "fields": form.echo(),
            "back": back,
        },
        active=active,
        title=confirmation.title,
    )


async def secret_page(
    request: Request, session: WebSession, api: AdminApi, secret: Secret, *, active: str
) -> HTMLResponse:
    """The answer to a create that made a secret: rendered at once, never redirected to,
    so the secret exists only in this one response."""
    return await render_admin(
        request,
        session,
        api,
        "admin/secret.html",
        {"secret": secret},
        active=active,
        title=secret.title,
    )


async def failure_page(
    request: Request, session: WebSession, api: AdminApi, failure: ApiFailure, *, active: str
) -> HTMLResponse:
    """A read the screen needs was refused: the layout with the server's message."""
    status = failure.answer.status if 400 <= failure.answer.status < 600 else 502
    return await render_admin(
        request,
        session,
        api,
        "admin/message.html",
        {"heading": "This screen could not load", "text": failure.answer.message},
        active=active,
        title="Something went wrong",
        status=status,
    )


async def not_found_page(
    request: Request, session: WebSession, api: AdminApi, what: str, *, active: str
) -> HTMLResponse:
    """The 404 of an admin screen, inside the layout (web.md 11.1): "There is no <what>."."""
    return await render_admin(
        request,
        session,
        api,
        "admin/message.html",
        {"heading": "Not found", "text": f"There is no {what}."},
        active=active,
        title="Not found",
        status=404,
    )


def reason_body(form: Form) -> dict[str, Any]:
    """The optional audit reason of a reason dialog (web.md 11.3)."""
    reason = form.optional("reason")
    return {"reason": reason} if reason else {}


def no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response
