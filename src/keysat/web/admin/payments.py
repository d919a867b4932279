"""Payments (web.md 11.5.10): merchant profiles, their payment providers and rail
preferences, and the one-click BTCPay and the Zaprite connect flows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from keysat.access.models import WebSession
from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.shell import (
    Confirmation,
    Form,
    Problem,
    confirm_page,
    failure_page,
    form_session,
    notice_redirect,
    page_session,
    read_form,
    render_admin,
)
from keysat.web.format import DEFAULT_BRAND, brand_colour, mailto_address, safe_link, text_on

router = APIRouter(include_in_schema=False)

ACTIVE = "payments"
HOME = "/admin/payments"
PROFILES = "/v1/admin/merchant-profiles"
RAILS = ("lightning", "onchain", "card")
RAIL_NAMES = {"lightning": "Lightning", "onchain": "On-chain", "card": "Card"}
KIND_NAMES = {"btcpay": "BTCPay", "zaprite": "Zaprite", "sandbox": "Sandbox"}
# What the authorize link asks BTCPay for (admin-api.md 11.1), in plain words.
BTCPAY_PERMISSIONS = (
    ("btcpay.store.canviewstoresettings", "View the store's settings"),
    ("btcpay.store.canmodifystoresettings", "Modify the store's settings (to add our webhook)"),
    ("btcpay.store.canviewinvoices", "View invoices"),
    ("btcpay.store.cancreateinvoice", "Create invoices"),
    ("btcpay.store.canmodifyinvoices", "Modify invoices"),
)
LINK_LIFETIME_SECONDS = 30 * 60
TEXT_FIELDS = (
    "name",
    "legal_name",
    "support_url",
    "support_email",
    "post_purchase_redirect_url",
    "smtp_host",
    "smtp_username",
    "smtp_from_address",
    "smtp_from_name",
)


@dataclass(frozen=True)
class RailChoice:
    """A rail that more than one of the profile's providers serves, and who gets it."""

    rail: str
    providers: list[dict[str, Any]]
    selected: str


@dataclass
class ProfileView:
    profile: dict[str, Any]
    rails: list[RailChoice] = field(default_factory=list)
    missing_kinds: list[str] = field(default_factory=list)
    zaprite: dict[str, Any] | None = None

    @property
    def colour(self) -> str:
        return brand_colour(self.profile.get("brand_color"))

    @property
    def support_link(self) -> str | None:
        return safe_link(self.profile.get("support_url"))

    @property
    def redirect_link(self) -> str | None:
        return safe_link(self.profile.get("post_purchase_redirect_url"))

    @property
    def mailto(self) -> str | None:
        return mailto_address(self.profile.get("support_email"))


def rail_choices(
    providers: list[dict[str, Any]], preferences: list[dict[str, Any]]
) -> list[RailChoice]:
    """The rails served by more than one provider of a profile (web.md 11.5.10)."""
    chosen = {p["rail"]: p["payment_provider_id"] for p in preferences}
    choices = []
    for rail in RAILS:
        serving = [p for p in providers if rail in p.get("served_rails", [])]
        if len(serving) > 1:
            choices.append(RailChoice(rail, serving, chosen.get(rail, "")))
    return choices


def provider_name(provider: dict[str, Any]) -> str:
    """The label, which names the kind unless the operator chose another."""
    kind = KIND_NAMES.get(provider["kind"], provider["kind"])
    label = str(provider["label"])
    return label if label.startswith(kind) else f"{kind} — {label}"


def disconnect_confirmation(provider: dict[str, Any], profile_name: str) -> Confirmation:
    rails = ", ".join(RAIL_NAMES.get(r, r) for r in provider.get("served_rails", []))
    return Confirmation(
        title=f"Disconnect {provider_name(provider)}?",
        message=f"This provider stops taking payments for merchant profile '{profile_name}'.",
        button="Disconnect",
        bullets=(
            f"New purchases on this profile's {rails or 'rails'} no longer go to it.",
            "Renewals of subscriptions that use it go to the profile's other providers, "
            "or fail when there is none.",
            "Invoices already paid through it keep their records.",
        ),
        danger=True,
    )


def delete_confirmation(profile: dict[str, Any]) -> Confirmation:
    return Confirmation(
        title=f"Delete merchant profile '{profile['name']}'?",
        message="The profile and its rail preferences are removed. The server refuses when "
        "products, active subscriptions or payment providers are attached.",
        button="Delete profile",
        danger=True,
    )


def profile_body(form: Form, *, creating: bool) -> dict[str, Any]:
    """The profile as a JSON object (never a JSON string, web.md 12). Blank fields clear
    on edit (null) and are left out on create; the SMTP password is write-only, so a blank
    one keeps what is stored unless the operator asks to clear it."""
    body: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        value = form.optional(name)
        if value is not None or not creating:
            body[name] = value
    colour = form.text("brand_color")
    picked = form.text("brand_color_picker")
    # Without JavaScript the picker and the hex field do not follow each other: the one
    # the operator changed wins.
    if picked and colour.upper() == form.text("brand_color_was").upper():
        colour = picked
    if colour or not creating:
        body["brand_color"] = colour or None
    port = form.text("smtp_port")
    if port or not creating:
        body["smtp_port"] = int(port) if port.isdigit() else (port or None)
    password = form.get("smtp_password")
    if password:
        body["smtp_password"] = password
    elif form.flag("smtp_password_clear"):
        body["smtp_password"] = None
    body["smtp_use_starttls"] = form.flag("smtp_use_starttls")
    if not creating and body.get("name") is None:
        body["name"] = ""
    return body


async def _views(api: AdminApi) -> list[ProfileView]:
    listing = await api.get(PROFILES)
    views = []
    for summary in listing["profiles"]:
        detail = await api.get(f"{PROFILES}/{summary['id']}")
        kinds = {p["kind"] for p in detail["providers"]}
        view = ProfileView(
            profile=detail,
            rails=rail_choices(detail["providers"], detail["rail_preferences"]),
            missing_kinds=[k for k in ("btcpay", "zaprite") if k not in kinds],
        )
        if "zaprite" in kinds:
            view.zaprite = await api.get(
                "/v1/admin/zaprite/status", merchant_profile_id=detail["id"]
            )
        views.append(view)
    return views


async def _page(
    request: Request,
    session: WebSession,
    api: AdminApi,
    *,
    problem: Problem | None = None,
    status: int = 200,
    form: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> HTMLResponse:
    try:
        views = await _views(api)
        tier = await api.get("/v1/admin/tier")
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    cap = tier["caps"]["merchant_profiles"]
    used = tier["usage"]["merchant_profiles"]
    return await render_admin(
        request,
        session,
        api,
        "admin/payments.html",
        {
            "views": views,
            "tier": tier,
            "cap": cap,
            "used": used,
            "zaprite_allowed": "zaprite_payments" in tier["entitlements"],
            "form": form if form is not None else {},
            "open_create": form is not None,
            "default_brand": DEFAULT_BRAND,
            "text_on": text_on,
            "brand_colour": brand_colour,
            "rail_names": RAIL_NAMES,
            "kind_names": KIND_NAMES,
            "provider_name": provider_name,
            "disconnect_confirmation": disconnect_confirmation,
            "delete_confirmation": delete_confirmation,
            "permissions": BTCPAY_PERMISSIONS,
            "link_lifetime": LINK_LIFETIME_SECONDS,
            **(extra or {}),
        },
        active=ACTIVE,
        title="Payments",
        problem=problem,
        status=status,
    )


@router.get("/admin/payments", response_class=HTMLResponse)
async def payments_page(request: Request) -> HTMLResponse:
    session = await page_session(request)
    return await _page(request, session, AdminApi(request, session))


@router.post("/admin/payments/profiles", response_model=None)
async def create_profile(request: Request) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    answer = await api.send("POST", PROFILES, profile_body(form, creating=True))
    if not answer.ok:
        return await _page(
            request,
            session,
            api,
            problem=Problem.of(answer),
            status=answer.status,
            form=form.echo(),
        )
    return notice_redirect(HOME, f"Merchant profile '{answer.body['name']}' created.")


async def _edit_page(
    request: Request,
    session: WebSession,
    api: AdminApi,
    profile_id: str,
    *,
    form: dict[str, str] | None = None,
    problem: Problem | None = None,
    status: int = 200,
) -> HTMLResponse:
    try:
        profile = await api.get(f"{PROFILES}/{profile_id}")
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    values = form if form is not None else profile_form_values(profile)
    return await render_admin(
        request,
        session,
        api,
        "admin/payments_edit.html",
        {
            "profile": profile,
            "form": values,
            "default_brand": DEFAULT_BRAND,
            "text_on": text_on,
            "brand_colour": brand_colour,
        },
        active=ACTIVE,
        title=f"Edit {profile['name']}",
        problem=problem,
        status=status,
    )


def profile_form_values(profile: dict[str, Any]) -> dict[str, str]:
    """A stored profile as the edit form shows it."""
    values = {name: profile.get(name) or "" for name in TEXT_FIELDS}
    values["brand_color"] = profile.get("brand_color") or ""
    port = profile.get("smtp_port")
    values["smtp_port"] = str(port) if port is not None else ""
    values["smtp_use_starttls"] = "1" if profile.get("smtp_use_starttls") else ""
    return values


@router.get("/admin/payments/{profile_id}/edit", response_class=HTMLResponse)
async def edit_page(request: Request, profile_id: str) -> HTMLResponse:
    session = await page_session(request)
    return await _edit_page(request, session, AdminApi(request, session), profile_id)


@router.post("/admin/payments/{profile_id}/edit", response_model=None)
async def edit_profile(request: Request, profile_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    answer = await api.send("PATCH", f"{PROFILES}/{profile_id}", profile_body(form, creating=False))
    if not answer.ok:
        return await _edit_page(
            request,
            session,
            api,
            profile_id,
            form=form.echo(),
            problem=Problem.of(answer),
            status=answer.status,
        )
    return notice_redirect(HOME, f"Merchant profile '{answer.body['name']}' saved.")


@router.post("/admin/payments/{profile_id}/default", response_model=None)
async def set_default(request: Request, profile_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    answer = await api.send("POST", f"{PROFILES}/{profile_id}/set-default")
    if not answer.ok:
        return await _page(request, session, api, problem=Problem.of(answer), status=answer.status)
    return notice_redirect(HOME, "Default merchant profile changed.")


@router.post("/admin/payments/{profile_id}/delete", response_model=None)
async def delete_profile(request: Request, profile_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    if not form.flag("confirmed"):
        try:
            profile = await api.get(f"{PROFILES}/{profile_id}")
        except ApiFailure as failure:
            return await failure_page(request, session, api, failure, active=ACTIVE)
        return await confirm_page(
            request, session, api, delete_confirmation(profile), form, active=ACTIVE, back=HOME
        )
    answer = await api.send("DELETE", f"{PROFILES}/{profile_id}")
    if not answer.ok:
        return await _page(request, session, api, problem=Problem.of(answer), status=answer.status)
    return notice_redirect(HOME, "Merchant profile deleted.")


@router.post("/admin/payments/{profile_id}/rails/{rail}", response_model=None)
async def set_rail(request: Request, profile_id: str, rail: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    provider = form.text("payment_provider_id")
    path = f"{PROFILES}/{profile_id}/rail-preferences/{rail}"
    if provider:
        answer = await api.send("PUT", path, {"payment_provider_id": provider})
    else:
        answer = await api.send("DELETE", path)
    if not answer.ok:
        return await _page(request, session, api, problem=Problem.of(answer), status=answer.status)
    name = RAIL_NAMES.get(rail, rail)
    text = "go to the chosen provider" if provider else "go to the earliest connected provider"
    return notice_redirect(HOME, f"{name} payments now {text}.")


@router.post("/admin/payments/providers/{provider_id}/disconnect", response_model=None)
async def disconnect(request: Request, provider_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    kind = form.text("kind")
    if kind not in ("btcpay", "zaprite"):
        return await _page(
            request, session, api, problem=Problem("Unknown provider kind."), status=400
        )
    if not form.flag("confirmed"):
        provider = await _provider(api, provider_id)
        if provider is None:
            return await _page(
                request,
                session,
                api,
                problem=Problem("That provider is not connected."),
                status=404,
            )
        confirmation = disconnect_confirmation(provider[1], provider[0]["name"])
        return await confirm_page(
            request, session, api, confirmation, form, active=ACTIVE, back=HOME
        )
    answer = await api.send("POST", f"/v1/admin/{kind}/disconnect", {"provider_id": provider_id})
    if not answer.ok:
        return await _page(request, session, api, problem=Problem.of(answer), status=answer.status)
    text = f"{KIND_NAMES[kind]} disconnected."
    if kind == "zaprite":
        text += " Delete its webhook in the Zaprite dashboard too."
    warnings = answer.body.get("warnings") or []
    if warnings:
        text += " BTCPay said: " + "; ".join(str(w) for w in warnings)
    return notice_redirect(HOME, text)


async def _provider(
    api: AdminApi, provider_id: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    listing = await api.get(PROFILES)
    for profile in listing["profiles"]:
        for provider in profile["providers"]:
            if provider["id"] == provider_id:
                return profile, provider
    return None


# --- BTCPay one-click connect -------------------------------------------------------------


@router.post("/admin/payments/{profile_id}/btcpay/connect", response_model=None)
async def btcpay_connect(request: Request, profile_id: str) -> Response:
    """Without JavaScript: a page with the authorize link and "Check connection". With it,
    the page's script asks the admin API itself and polls (admin-payments.js)."""
    session = await form_session(request)
    api = AdminApi(request, session)
    answer = await api.send("POST", "/v1/admin/btcpay/connect", {"merchant_profile_id": profile_id})
    if not answer.ok:
        return await _page(request, session, api, problem=Problem.of(answer), status=answer.status)
    return await _btcpay_page(request, session, api, profile_id, answer.body["authorize_url"])


async def _btcpay_page(
    request: Request,
    session: WebSession,
    api: AdminApi,
    profile_id: str,
    authorize_url: str | None,
    *,
    not_yet: bool = False,
) -> HTMLResponse:
    try:
        profile = await api.get(f"{PROFILES}/{profile_id}")
        tier = await api.get("/v1/admin/tier")
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    return await render_admin(
        request,
        session,
        api,
        "admin/payments_btcpay.html",
        {
            "profile": profile,
            "authorize_url": safe_link(authorize_url),
            "permissions": BTCPAY_PERMISSIONS,
            "sandbox_mode": tier["sandbox"],
            "not_yet": not_yet,
        },
        active=ACTIVE,
        title="Connect BTCPay",
    )


@router.get("/admin/payments/{profile_id}/btcpay", response_model=None)
async def btcpay_check(request: Request, profile_id: str) -> Response:
    """ "Check connection": back to Payments with the store named once it is connected."""
    session = await page_session(request)
    api = AdminApi(request, session)
    try:
        status = await api.get("/v1/admin/btcpay/status", merchant_profile_id=profile_id)
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    if status["connected"]:
        return notice_redirect(
            HOME,
            f"BTCPay store {status['store_id']} connected to '{status['merchant_profile_name']}'.",
        )
    return await _btcpay_page(request, session, api, profile_id, None, not_yet=True)


# --- Zaprite ----------------------------------------------------------------------------------


@router.post("/admin/payments/{profile_id}/zaprite/connect", response_model=None)
async def zaprite_connect(request: Request, profile_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    body: dict[str, Any] = {"merchant_profile_id": profile_id, "api_key": form.get("api_key")}
    base_url = form.optional("base_url")
    if base_url:
        body["base_url"] = base_url
    answer = await api.send("POST", "/v1/admin/zaprite/connect", body)
    if not answer.ok:
        echo = {"zaprite_profile": profile_id, "base_url": base_url or ""}
        return await _page(
            request,
            session,
            api,
            problem=Problem.of(answer),
            status=answer.status,
            extra={"zaprite_form": echo},
        )
    # Rendered, not redirected: the webhook URL is what the operator needs next.
    return await _page(request, session, api, extra={"zaprite_connected": answer.body})
