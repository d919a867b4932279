"""Discount codes (web.md 11.5.8): the cap pre-check, the create form in normal units, the
table grouped per product, the edit panel, enable and disable, delete, and redemptions."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from keysat.access.models import WebSession
from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.billing_views import (
    ANY_PRODUCT,
    CODE_KINDS,
    CODE_PATTERN,
    CODE_STATUSES,
    CODE_TONES,
    CURRENCIES,
    KIND_LABELS,
    AmountError,
    Catalog,
    amount_from_units,
    amount_in_units,
    chosen_tiers,
    code_amount_text,
    code_scope_text,
    code_status,
    expiry_from_form,
    grouped,
    link,
    load_catalog,
    product_pills,
    tier_choices,
    utc_input_value,
)
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
from keysat.web.format import format_money

router = APIRouter(include_in_schema=False)

ACTIVE = "discount-codes"
BASE = "/admin/discount-codes"
STATUS_NAMES = dict(CODE_STATUSES)


def delete_confirmation(code: dict[str, Any]) -> Confirmation:
    return Confirmation(
        title=f"Delete {code['code']}?",
        message="The code disappears for good; buyers who type it are told it is not valid.",
        button="Delete",
        eyebrow="Discount code",
        bullets=(
            "A code that has been redeemed (or is reserved by an open invoice) cannot be "
            "deleted, so its history stays; disable it instead.",
        ),
        danger=True,
    )


def decorate(code: dict[str, Any], catalog: Catalog, now: datetime) -> dict[str, Any]:
    state = code_status(code, now)
    limit = code.get("max_uses")
    return {
        **code,
        "kind_name": KIND_LABELS.get(code["kind"], code["kind"]),
        "amount_text": code_amount_text(code),
        "scope_text": code_scope_text(code, catalog),
        "used_text": f"{code['used_count']:,} / {limit:,}"
        if limit
        else f"{code['used_count']:,} / ∞",
        "state": state,
        "state_name": STATUS_NAMES[state],
        "tone": CODE_TONES[state],
        "confirmation": delete_confirmation(code),
    }


def cap_state(tier: dict[str, Any]) -> dict[str, Any] | None:
    """The pre-check card and grandfather banner of web.md 11.3 for active codes."""
    cap = (tier.get("caps") or {}).get("active_codes")
    if cap is None:
        return None
    used = int((tier.get("usage") or {}).get("active_codes") or 0)
    if used > cap:
        level = "over"
    elif used >= cap:
        level = "reached"
    elif used == cap - 1:
        level = "near"
    else:
        return None
    return {"level": level, "used": used, "cap": cap, "upgrade_url": tier.get("upgrade_url")}


def edit_values(code: dict[str, Any], catalog: Catalog) -> dict[str, Any]:
    """The edit panel's fields, amounts in normal units (web.md 11.5.8)."""
    currency = code.get("discount_currency") or "SAT"
    slugs = []
    for policy_id in code.get("applies_to_policy_ids") or []:
        policy = catalog.policies.get(policy_id)
        product = catalog.product(code.get("applies_to_product_id"))
        if policy and product:
            slugs.append(f"{product['slug']}/{policy['slug']}")
    return {
        "amount": amount_in_units(int(code["amount"]), code["kind"], currency),
        "max_uses": "" if code.get("max_uses") is None else str(code["max_uses"]),
        "expires_local": utc_input_value(code.get("expires_at")),
        "referrer_label": code.get("referrer_label") or "",
        "description": code.get("description") or "",
        "featured": bool(code.get("featured")),
        "tiers": slugs,
    }


async def _page(
    request: Request,
    session: WebSession,
    api: AdminApi,
    *,
    query: dict[str, str | None],
    problem: Problem | None = None,
    status: int = 200,
    create: dict[str, Any] | None = None,
    edit: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    refused_delete: dict[str, Any] | None = None,
) -> HTMLResponse:
    try:
        catalog = await load_catalog(api)
        codes = (await api.get("/v1/admin/discount-codes", include_inactive="true"))["codes"]
        tier = await api.get("/v1/admin/tier")
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    now = datetime.now(UTC)
    every = [decorate(code, catalog, now) for code in codes]
    product, state = query.get("product"), query.get("status")
    by_state = [code for code in every if not state or code["state"] == state]
    counts = Counter(
        str(c["applies_to_product_id"]) for c in by_state if c["applies_to_product_id"]
    )
    anywhere = sum(1 for c in by_state if not c["applies_to_product_id"])
    rows = [
        code
        for code in by_state
        if not product
        or (product == ANY_PRODUCT and not code["applies_to_product_id"])
        or code["applies_to_product_id"] == product
    ]
    editing = None
    if edit is not None:
        editing = edit
    elif query.get("edit"):
        found = next((code for code in every if code["id"] == query["edit"]), None)
        if found is not None:
            editing = {"code": found, "fields": edit_values(found, catalog)}
    return await render_admin(
        request,
        session,
        api,
        "admin/discount_codes.html",
        {
            "groups": grouped(
                rows, catalog, lambda code: code.get("applies_to_product_id") or None
            ),
            "total": len(every),
            "query": query,
            "back": link(BASE, {**query, "edit": None}),
            "product_pills": product_pills(BASE, query, catalog, counts, any_product=anywhere),
            "status_pills": [
                (value, name, link(BASE, query, status=value or None))
                for value, name in CODE_STATUSES
            ],
            "kinds": CODE_KINDS,
            "currencies": CURRENCIES,
            "products": catalog.products,
            "tier_choices": tier_choices(catalog),
            "cap": cap_state(tier),
            "create": create or {},
            "create_open": create is not None or not every,
            "editing": editing,
            "errors": errors or {},
            "refused_delete": refused_delete,
        },
        active=ACTIVE,
        title="Discount codes",
        problem=problem,
        status=status,
    )


@router.get(BASE, response_class=HTMLResponse)
async def codes_page(
    request: Request,
    product: str | None = None,
    status: str | None = None,
    edit: str | None = None,
) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    wanted = status if status in STATUS_NAMES and status else None
    return await _page(
        request, session, api, query={"product": product, "status": wanted, "edit": edit}
    )


def _tiers(form: Form, product_slug: str | None, errors: dict[str, str]) -> list[str]:
    mine, others = chosen_tiers(form.all("tiers"), product_slug)
    if others:
        errors["tiers"] = (
            "Tiers can only be picked from the product the code is restricted to."
            if product_slug
            else "Pick a product first: tier restrictions need one."
        )
    return mine


def _amount(form: Form, kind: str, currency: str, errors: dict[str, str]) -> int | None:
    try:
        return amount_from_units(form.text("amount"), kind, currency)
    except AmountError as exc:
        errors["amount"] = str(exc)
        return None


def _max_uses(form: Form, errors: dict[str, str]) -> int | None:
    text = form.text("max_uses").replace(",", "")
    if not text:
        return None
    if not text.isdigit() or int(text) == 0:
        errors["max_uses"] = "Enter a whole number of uses above zero, or leave it empty."
        return None
    return int(text)


def create_body(form: Form, catalog: Catalog) -> tuple[dict[str, Any], dict[str, str]]:
    """The API body of the create form, or the field errors that stop it."""
    errors: dict[str, str] = {}
    code = form.text("code").upper()
    if not CODE_PATTERN.fullmatch(code):
        errors["code"] = "Use 1 to 64 letters, digits, - or _."
    kind = form.text("kind")
    if kind not in KIND_LABELS:
        errors["kind"] = "Pick a kind."
    product = catalog.product_by_slug(form.optional("product_slug"))
    currency = form.text("currency").upper() or (product["price_currency"] if product else "SAT")
    body: dict[str, Any] = {
        "code": code,
        "kind": kind,
        "amount": _amount(form, kind, currency, errors) if kind in KIND_LABELS else 0,
        "discount_currency": currency if kind in ("fixed_sats", "set_price") else "SAT",
        "max_uses": _max_uses(form, errors),
        "expires_at": expiry_from_form(form.optional("expires_at"), form.optional("expires_local")),
        "referrer_label": form.optional("referrer_label"),
        "description": form.text("description"),
        "featured": form.flag("featured"),
    }
    if product is not None:
        body["product_slug"] = product["slug"]
    tiers = _tiers(form, product["slug"] if product else None, errors)
    if len(tiers) == 1:
        body["policy_slug"] = tiers[0]
    elif tiers:
        body["policy_slugs"] = tiers
    return body, errors


def edit_body(
    form: Form, code: dict[str, Any], catalog: Catalog
) -> tuple[dict[str, Any], dict[str, str]]:
    """The PATCH of the edit panel: a cleared optional field is sent as null, which clears
    it (admin-api.md 0.4)."""
    errors: dict[str, str] = {}
    currency = code.get("discount_currency") or "SAT"
    body: dict[str, Any] = {
        "max_uses": _max_uses(form, errors),
        "expires_at": expiry_from_form(form.optional("expires_at"), form.optional("expires_local")),
        "referrer_label": form.optional("referrer_label"),
        "description": form.optional("description"),
        "featured": form.flag("featured"),
    }
    if code["kind"] != "free_license":
        body["amount"] = _amount(form, code["kind"], currency, errors)
    product = catalog.product(code.get("applies_to_product_id"))
    if product is not None:
        body["policy_slugs"] = _tiers(form, product["slug"], errors)
    return body, errors


def _query(form: Form) -> dict[str, str | None]:
    return {"product": form.optional("f_product"), "status": form.optional("f_status")}


@router.post(BASE, response_model=None)
async def create_code(request: Request) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    query = _query(form)
    try:
        catalog = await load_catalog(api)
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    body, errors = create_body(form, catalog)
    echo = {**form.echo(), "tiers": form.all("tiers")}
    if errors:
        problem = Problem("The code was not created: check the fields marked below.")
        return await _page(
            request,
            session,
            api,
            query=query,
            problem=problem,
            status=400,
            create=echo,
            errors=errors,
        )
    answer = await api.send("POST", "/v1/admin/discount-codes", body)
    if not answer.ok:
        return await _page(
            request,
            session,
            api,
            query=query,
            problem=Problem.of(answer),
            status=answer.status,
            create=echo,
        )
    created = answer.body
    return notice_redirect(
        link(BASE, query), f"Code {created['code']} created: {code_amount_text(created)}."
    )


async def _code(api: AdminApi, code_id: str) -> dict[str, Any]:
    found: dict[str, Any] = await api.get(f"/v1/admin/discount-codes/{quote(code_id)}")
    return found


@router.post(BASE + "/{code_id}/edit", response_model=None)
async def edit_code(request: Request, code_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    query = _query(form)
    try:
        catalog = await load_catalog(api)
        code = (await _code(api, code_id))["code"]
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    body, errors = edit_body(form, code, catalog)
    shown = decorate(code, catalog, datetime.now(UTC))
    echo = {
        "code": shown,
        "fields": {**form.echo(), "featured": form.flag("featured"), "tiers": form.all("tiers")},
    }
    if errors:
        problem = Problem("The code was not saved: check the fields marked below.")
        return await _page(
            request,
            session,
            api,
            query=query,
            problem=problem,
            status=400,
            edit=echo,
            errors=errors,
        )
    answer = await api.send("PATCH", f"/v1/admin/discount-codes/{quote(code_id)}", body)
    if not answer.ok:
        return await _page(
            request,
            session,
            api,
            query=query,
            problem=Problem.of(answer),
            status=answer.status,
            edit=echo,
        )
    return notice_redirect(link(BASE, query), f"Code {code['code']} saved.")


@router.post(BASE + "/{code_id}/active", response_model=None)
async def set_active(request: Request, code_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    query = _query(form)
    active = form.flag("active")
    answer = await api.send(
        "PATCH", f"/v1/admin/discount-codes/{quote(code_id)}/active", {"active": active}
    )
    if not answer.ok:
        return await _page(
            request, session, api, query=query, problem=Problem.of(answer), status=answer.status
        )
    name = form.text("code") or "The code"
    return notice_redirect(link(BASE, query), f"{name} {'enabled' if active else 'disabled'}.")


@router.post(BASE + "/{code_id}/delete", response_model=None)
async def delete_code(request: Request, code_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    query = _query(form)
    if not form.flag("confirmed"):
        try:
            code = (await _code(api, code_id))["code"]
        except ApiFailure as failure:
            return await failure_page(request, session, api, failure, active=ACTIVE)
        return await confirm_page(
            request,
            session,
            api,
            delete_confirmation(code),
            form,
            active=ACTIVE,
            back=link(BASE, query),
        )
    answer = await api.send("DELETE", f"/v1/admin/discount-codes/{quote(code_id)}")
    if answer.status == 409:
        refused = {"id": code_id, "code": form.text("code")}
        return await _page(
            request,
            session,
            api,
            query=query,
            problem=Problem.of(answer),
            status=409,
            refused_delete=refused,
        )
    if not answer.ok:
        return await _page(
            request, session, api, query=query, problem=Problem.of(answer), status=answer.status
        )
    return notice_redirect(link(BASE, query), f"Code {answer.body.get('deleted', '')} deleted.")


REDEMPTION_TONES = {"pending": "warn", "redeemed": "ok", "cancelled": "neutral"}


@router.get(BASE + "/{code_id}", response_class=HTMLResponse)
async def redemptions_page(request: Request, code_id: str) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    try:
        catalog = await load_catalog(api)
        found = await _code(api, code_id)
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    redemptions = [
        {
            **row,
            "tone": REDEMPTION_TONES.get(row["status"], "neutral"),
            "base_text": format_money(int(row["base_price_sats"]), "SAT"),
            "off_text": format_money(int(row["discount_applied_sats"]), "SAT"),
            "final_text": format_money(int(row["final_price_sats"]), "SAT")
            if row["final_price_sats"]
            else "Free",
        }
        for row in found["redemptions"]
    ]
    code = decorate(found["code"], catalog, datetime.now(UTC))
    return await render_admin(
        request,
        session,
        api,
        "admin/discount_codes_redemptions.html",
        {"code": code, "redemptions": redemptions},
        active=ACTIVE,
        title=f"Redemptions of {code['code']}",
    )
