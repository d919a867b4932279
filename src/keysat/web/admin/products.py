"""Products (web.md 11.5.2): create with the price and the entitlement catalog, the table of
every product (inactive ones too), edit, activate or deactivate, and safe-then-force delete.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from keysat.access.models import WebSession
from keysat.billing.pricing import rate_centibps
from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.catalog_forms import (
    CURRENCIES,
    DEFAULT_AMOUNTS,
    FieldError,
    amount_text,
    cap_notice,
    catalog_rows,
    check_catalog,
    check_slug,
    parse_amount,
)
from keysat.web.admin.shell import (
    Confirmation,
    Form,
    Problem,
    confirm_page,
    failure_page,
    form_session,
    not_found_page,
    notice_redirect,
    page_session,
    read_form,
    render_admin,
)
from keysat.web.format import format_money
from keysat.web.views import approx_sats

router = APIRouter(include_in_schema=False)

ACTIVE = "products"
LIST = "/admin/products"
CASCADE_NAMES = (
    ("cascaded_policies", "tier", "tiers"),
    ("cascaded_licenses", "license", "licenses"),
    ("cascaded_invoices", "invoice", "invoices"),
    ("cascaded_machines", "machine", "machines"),
    ("cascaded_redemptions", "redemption", "redemptions"),
    ("cascaded_subscriptions", "subscription", "subscriptions"),
    ("cascaded_codes", "discount code", "discount codes"),
)


def removed_text(result: dict[str, Any]) -> str:
    """What a delete took with it: "2 tiers, 5 licenses and 5 invoices", or "nothing else"."""
    parts = []
    for key, one, many in CASCADE_NAMES:
        count = int(result.get(key) or 0)
        if count:
            parts.append(f"{count:,} {one if count == 1 else many}")
    if not parts:
        return "nothing else"
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def product_body(form: Form, *, create: bool) -> dict[str, Any]:
    """The admin API body of the create or edit form; raises `FieldError` for what the form
    can already tell is wrong."""
    currency = form.text("price_currency").upper() or "SAT"
    if currency not in CURRENCIES:
        raise FieldError("price", "Choose SAT, USD or EUR.")
    rows = catalog_rows(form.values)
    check_catalog(rows)
    body: dict[str, Any] = {
        "name": form.text("name"),
        "description": form.get("description").strip(),
        "price_currency": currency,
        "price_value": parse_amount(form.get("price_value"), currency),
        # The whole catalog every time, so an emptied editor clears it (web.md 11.5.2).
        "entitlements_catalog": rows if rows else None,
    }
    if create:
        body["slug"] = form.text("slug")
        check_slug(body["slug"])
        if not rows:
            del body["entitlements_catalog"]
    profile = form.optional("merchant_profile_id")
    if "merchant_profile_id" in form.values:
        body["merchant_profile_id"] = profile
    return body


def form_values(product: dict[str, Any] | None) -> dict[str, Any]:
    """What the form shows: a product's stored values, or the defaults of a new one."""
    if product is None:
        return {
            "name": "",
            "slug": "",
            "description": "",
            "price_currency": "SAT",
            "price_value": DEFAULT_AMOUNTS["SAT"],
            "catalog": [],
            "merchant_profile_id": "",
        }
    return {
        "name": product["name"],
        "slug": product["slug"],
        "description": product["description"],
        "price_currency": product["price_currency"],
        "price_value": amount_text(product["price_value"], product["price_currency"]),
        "catalog": list(product["entitlements_catalog"] or []),
        "merchant_profile_id": product["merchant_profile_id"] or "",
    }


def echoed_values(form: Form) -> dict[str, Any]:
    """What the operator typed, put back after a refusal or an editor row change."""
    rows = catalog_rows(form.values)
    remove = form.get("remove_row")
    if remove.isdigit() and int(remove) < len(rows):
        del rows[int(remove)]
    if "add_row" in form.values:
        rows.append({"slug": "", "name": "", "description": ""})
    return {
        "name": form.get("name"),
        "slug": form.get("slug"),
        "description": form.get("description"),
        "price_currency": form.get("price_currency") or "SAT",
        "price_value": form.get("price_value"),
        "catalog": rows,
        "merchant_profile_id": form.get("merchant_profile_id"),
    }


def _centibps(rates: list[dict[str, Any]]) -> dict[str, int]:
    return {
        rate["currency"]: rate_centibps(Decimal(str(rate["units_per_btc"])))
        for rate in rates
        if rate["units_per_btc"] > 0
    }


async def _context(api: AdminApi) -> dict[str, Any]:
    products = (await api.get("/v1/admin/products"))["products"]
    counts = await api.get("/v1/admin/licenses/counts")
    profiles = (await api.get("/v1/admin/merchant-profiles"))["profiles"]
    tier = await api.get("/v1/admin/tier")
    rates = _centibps((await api.get("/v1/admin/rates"))["rates"])
    names = {profile["id"]: profile["name"] for profile in profiles}
    default = next((p["name"] for p in profiles if p["is_default"]), "")
    rows = []
    for product in products:
        tiers = await api.get("/v1/admin/policies", product_slug=product["slug"])
        currency = product["price_currency"]
        rows.append(
            {
                **product,
                "price_text": format_money(product["price_value"], currency),
                "approx": approx_sats(product["price_value"], currency, rates.get(currency)),
                "tiers": len(tiers["policies"]),
                "licenses": counts["by_product"].get(product["id"], 0),
                "profile": names.get(product["merchant_profile_id"] or "", default),
            }
        )
    return {
        "products": rows,
        "profiles": profiles,
        "currencies": CURRENCIES,
        "defaults": DEFAULT_AMOUNTS,
        "cap": cap_notice(tier["usage"]["products"], tier["caps"]["products"]),
        "upgrade_url": tier["upgrade_url"],
        "deactivate": deactivate_confirmation,
        "remove": delete_confirmation,
    }


async def _page(
    request: Request,
    session: WebSession,
    api: AdminApi,
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    problem: Problem | None = None,
    status: int = 200,
) -> HTMLResponse:
    try:
        context = await _context(api)
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    context.update(
        values=values or form_values(None),
        open_create=values is not None,
        errors=errors or {},
    )
    return await render_admin(
        request,
        session,
        api,
        "admin/products.html",
        context,
        active=ACTIVE,
        title="Products",
        problem=problem,
        status=status,
    )


async def _product(api: AdminApi, product_id: str) -> dict[str, Any] | None:
    products = (await api.get("/v1/admin/products"))["products"]
    return next((p for p in products if p["id"] == product_id), None)


async def _edit_page(
    request: Request,
    session: WebSession,
    api: AdminApi,
    product: dict[str, Any],
    *,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    problem: Problem | None = None,
    status: int = 200,
) -> HTMLResponse:
    profiles = (await api.get("/v1/admin/merchant-profiles"))["profiles"]
    return await render_admin(
        request,
        session,
        api,
        "admin/products_edit.html",
        {
            "product": product,
            "values": values or form_values(product),
            "errors": errors or {},
            "profiles": profiles,
            "currencies": CURRENCIES,
            "defaults": DEFAULT_AMOUNTS,
        },
        active=ACTIVE,
        title=f"Edit {product['name']}",
        problem=problem,
        status=status,
    )


@router.get("/admin/products", response_class=HTMLResponse)
async def products_page(request: Request) -> HTMLResponse:
    session = await page_session(request)
    return await _page(request, session, AdminApi(request, session))


@router.post("/admin/products", response_model=None)
async def create_product(request: Request) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    if "add_row" in form.values or "remove_row" in form.values:
        return await _page(request, session, api, values=echoed_values(form))
    try:
        body = product_body(form, create=True)
    except FieldError as error:
        return await _page(
            request,
            session,
            api,
            values=echoed_values(form),
            errors={error.field: error.message},
            problem=Problem(error.message, field=error.field),
            status=400,
        )
    answer = await api.send("POST", "/v1/admin/products", body)
    if not answer.ok:
        return await _page(
            request,
            session,
            api,
            values=echoed_values(form),
            problem=Problem.of(answer),
            status=answer.status,
        )
    created = answer.body
    return notice_redirect(
        f"{LIST}#product-{created['slug']}",
        f"Product {created['name']} created. Add its tiers on the Policies screen.",
    )


@router.get("/admin/products/{product_id}/edit", response_class=HTMLResponse)
async def edit_product_page(request: Request, product_id: str) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    try:
        product = await _product(api, product_id)
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    if product is None:
        return await not_found_page(
            request, session, api, f"product with id {product_id}", active=ACTIVE
        )
    return await _edit_page(request, session, api, product)


@router.post("/admin/products/{product_id}/edit", response_model=None)
async def edit_product(request: Request, product_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    product = await _product(api, product_id)
    if product is None:
        return await not_found_page(
            request, session, api, f"product with id {product_id}", active=ACTIVE
        )
    values = {**echoed_values(form), "slug": product["slug"]}
    if "add_row" in form.values or "remove_row" in form.values:
        return await _edit_page(request, session, api, product, values=values)
    try:
        body = product_body(form, create=False)
    except FieldError as error:
        return await _edit_page(
            request,
            session,
            api,
            product,
            values=values,
            errors={error.field: error.message},
            problem=Problem(error.message, field=error.field),
            status=400,
        )
    answer = await api.send("PATCH", f"/v1/admin/products/{product_id}", body)
    if not answer.ok:
        return await _edit_page(
            request,
            session,
            api,
            product,
            values=values,
            problem=Problem.of(answer),
            status=answer.status,
        )
    return notice_redirect(f"{LIST}#product-{product['slug']}", f"{body['name']} saved.")


def deactivate_confirmation(product: dict[str, Any]) -> Confirmation:
    return Confirmation(
        title=f"Deactivate {product['name']}?",
        message="You can activate it again at any time.",
        button="Deactivate",
        bullets=(
            "It disappears from the home page and its buy page answers 404.",
            "New purchases and discount redemptions are refused.",
            "Existing licenses keep validating.",
        ),
    )


def delete_confirmation(product: dict[str, Any]) -> Confirmation:
    return Confirmation(
        title=f"Delete {product['name']}?",
        message=(
            f"This deletes the product, its {product['tiers']} tier(s) and the discount codes "
            "that apply only to it. A product with licenses or invoices is not deleted: you "
            "will be asked again before those are removed too."
        ),
        button="Delete product",
        bullets=(f"Licenses: {product['licenses']:,}", f"Tiers: {product['tiers']:,}"),
        warning="Deactivating keeps everything and hides the product from buyers.",
        danger=True,
    )


def force_confirmation(product: dict[str, Any], message: str) -> Confirmation:
    return Confirmation(
        eyebrow="Force delete",
        title=f"Delete {product['name']} and everything sold with it?",
        message=message,
        button="Delete everything",
        bullets=(
            "Its licenses stop validating: they are deleted with their machines.",
            "Its invoices, subscriptions and discount redemptions are deleted.",
            "This cannot be undone. Take a backup first if in doubt.",
        ),
        danger=True,
        type_to_confirm=product["slug"],
    )


@router.post("/admin/products/{product_id}/active", response_model=None)
async def set_active(request: Request, product_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    product = await _product(api, product_id)
    if product is None:
        return await not_found_page(
            request, session, api, f"product with id {product_id}", active=ACTIVE
        )
    active = form.flag("active")
    if not active and not form.flag("confirmed"):
        return await confirm_page(
            request,
            session,
            api,
            deactivate_confirmation(product),
            form,
            active=ACTIVE,
            back=LIST,
        )
    answer = await api.send("PATCH", f"/v1/admin/products/{product_id}/active", {"active": active})
    if not answer.ok:
        return await _page(request, session, api, problem=Problem.of(answer), status=answer.status)
    state = "activated" if active else "deactivated"
    return notice_redirect(f"{LIST}#product-{product['slug']}", f"{product['name']} {state}.")


@router.post("/admin/products/{product_id}/delete", response_model=None)
async def delete_product(request: Request, product_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    try:
        rows = (await _context(api))["products"]
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    product = next((row for row in rows if row["id"] == product_id), None)
    if product is None:
        return await not_found_page(
            request, session, api, f"product with id {product_id}", active=ACTIVE
        )
    force = form.flag("force")
    if not form.flag("confirmed"):
        return await confirm_page(
            request,
            session,
            api,
            delete_confirmation(product),
            form,
            active=ACTIVE,
            back=LIST,
        )
    if force and form.text("typed") != product["slug"]:
        confirmation = force_confirmation(product, "Type the product's slug exactly to confirm.")
        return await confirm_page(
            request, session, api, confirmation, form, active=ACTIVE, back=LIST
        )
    query = "true" if force else "false"
    answer = await api.send("DELETE", f"/v1/admin/products/{product_id}", force=query)
    if answer.status == 409 and not force:
        confirmation = force_confirmation(product, answer.message)
        forced = Form({**form.values, "force": ["1"]})
        return await confirm_page(
            request, session, api, confirmation, forced, active=ACTIVE, back=LIST
        )
    if not answer.ok:
        return await _page(request, session, api, problem=Problem.of(answer), status=answer.status)
    return notice_redirect(
        LIST, f"Deleted {product['name']}; also removed {removed_text(answer.body)}."
    )
