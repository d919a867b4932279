"""The admin UI's routes: the login page, the shell's redirects and 404, and every screen's
router (web.md 11). Screens live one per module; this file only puts them together."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from keysat.access import webui
from keysat.access.sessions import safe_next
from keysat.state import app_state
from keysat.web.admin import (
    api_keys,
    audit,
    dashboard,
    discount_codes,
    invoices,
    jobs,
    licenses,
    machines,
    payments,
    policies,
    products,
    settings,
    subscriptions,
    webhooks,
)
from keysat.web.admin.api import AdminApi
from keysat.web.admin.shell import (
    LoginRequired,
    login_redirect,
    not_found_page,
    page_session,
)
from keysat.web.buyer import operator_chrome
from keysat.web.pages import message_page, render

router = APIRouter(include_in_schema=False)

LOGIN_ERRORS = {
    ("wrong", "password"): "That password isn't right.",
    ("wrong", "api_key"): "That key isn't valid. Use the admin API key.",
    ("no_password", "password"): "No password is set yet. Sign in with the API key.",
    ("bad_request", "password"): "Enter the password.",
    ("bad_request", "api_key"): "Enter the admin API key.",
}


def login_message(error: str | None, method: str, retry: str | None) -> str | None:
    if error == "rate_limited":
        seconds = int(retry) if retry and retry.isdigit() else 60
        minutes = max(1, -(-seconds // 60))
        unit = "minute" if minutes == 1 else "minutes"
        return f"Too many attempts. Try again in {minutes} {unit}."
    if error is None:
        return None
    return LOGIN_ERRORS.get((error, method), "That didn't work. Try again.")


@router.get("/admin", response_class=RedirectResponse)
async def admin_root() -> RedirectResponse:
    return RedirectResponse("/admin/", status_code=308)


@router.get("/admin/login", response_class=HTMLResponse, response_model=None)
async def login_page(
    request: Request,
    next: str | None = None,
    error: str | None = None,
    method: str = "password",
    retry: str | None = None,
    expired: str | None = None,
    signed_out: str | None = None,
) -> Response:
    state = app_state(request)
    target = safe_next(next)
    if await state.sessions.current(request) is not None:
        return RedirectResponse(target, status_code=303)
    has_password = await webui.has_password(state.db)
    message = login_message(error, method if method == "api_key" else "password", retry)
    kind = "error"
    if message is None and expired:
        message = "Your session has expired. Sign in again to continue."
    elif message is None and signed_out:
        message, kind = "You're signed out.", "ok"
    chrome = await operator_chrome(state)
    response = render(
        request,
        "admin/login.html",
        {
            "operator_name": chrome.seller,
            "show_password": has_password,
            "method": method,
            "next": target,
            "message": message,
            "message_kind": kind,
        },
        status=200,
        private=True,
        referrer_policy="same-origin",
    )
    return response


for screen in (
    dashboard,
    products,
    policies,
    licenses,
    machines,
    subscriptions,
    invoices,
    discount_codes,
    payments,
    webhooks,
    api_keys,
    jobs,
    audit,
    settings,
):
    router.include_router(screen.router)


@router.get("/admin/{rest:path}", response_class=HTMLResponse)
async def admin_not_found(request: Request, rest: str) -> HTMLResponse:
    """Unknown admin paths get a 404 inside the layout (web.md 11.1)."""
    session = await page_session(request)
    api = AdminApi(request, session)
    return await not_found_page(request, session, api, f"admin screen at /admin/{rest}", active="")


def login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    return login_redirect(exc.next_path, expired=exc.expired)


def form_refused(request: Request, exc: Exception) -> Response:
    return message_page(
        request,
        "This form was not accepted",
        "It came from an old page or from another site. Go back, reload the page and try again.",
        status=403,
        link=("/admin/", "Back to the admin"),
    )
