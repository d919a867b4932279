"""Licenses (web.md 11.5.4): search and filter, issue by hand, the detail view, suspend,
unsuspend, revoke and change tier.

The admin API has no single-license read and its search has no offset, so the screen
lists each product's licenses (`GET /v1/admin/licenses?product_id=`) and filters, counts
and pages those; the e-mail, invoice and npub searches use the API's own search so they
match exactly as scripts do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from keysat.access.models import WebSession
from keysat.access.sessions import safe_next
from keysat.state import app_state
from keysat.web.admin import license_views as views
from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.machines import machine_confirmation
from keysat.web.admin.shell import (
    Confirmation,
    Form,
    Problem,
    Secret,
    confirm_page,
    failure_page,
    form_session,
    not_found_page,
    notice_redirect,
    page_session,
    read_form,
    reason_body,
    render_admin,
    secret_page,
)
from keysat.web.format import format_devices, format_duration, format_price

router = APIRouter(include_in_schema=False)

ACTIVE = "licenses"
LIST = "/admin/licenses"
REVOKE_WARNING = "This cannot be undone. The key stops validating online."


@dataclass(frozen=True)
class Catalog:
    """Every product and every one of its tiers, archived and inactive ones included, so
    old licenses still name theirs."""

    products: list[dict[str, Any]]
    tiers: dict[str, list[dict[str, Any]]]

    @property
    def product_by_id(self) -> dict[str, dict[str, Any]]:
        return {product["id"]: product for product in self.products}

    @property
    def policy_by_id(self) -> dict[str, dict[str, Any]]:
        return {tier["id"]: tier for tiers in self.tiers.values() for tier in tiers}

    def issuable(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Active, non-archived tiers per product, for the issue form."""
        return [
            (
                product,
                [
                    tier
                    for tier in self.tiers[product["id"]]
                    if tier["active"] and tier["archived_at"] is None
                ],
            )
            for product in self.products
        ]


async def load_catalog(api: AdminApi) -> Catalog:
    products = (await api.get("/v1/admin/products"))["products"]
    listings = await asyncio.gather(
        *(
            api.get(
                "/v1/admin/policies",
                product_slug=product["slug"],
                include_inactive="true",
                include_archived="true",
            )
            for product in products
        )
    )
    tiers = {
        product["id"]: listing["policies"]
        for product, listing in zip(products, listings, strict=True)
    }
    return Catalog(products, tiers)


async def every_license(api: AdminApi) -> list[dict[str, Any]]:
    """Each product's licenses, read side by side: one in-process call costs a session
    check and a database read, and products add up."""
    counts = (await api.get("/v1/admin/licenses/counts"))["by_product"]
    listings = await asyncio.gather(
        *(api.get("/v1/admin/licenses", product_id=product_id) for product_id in counts)
    )
    return views.newest_first([row for listing in listings for row in listing["licenses"]])


async def find_license(api: AdminApi, license_id: str) -> dict[str, Any] | None:
    wanted = license_id.strip().lower()
    return next((row for row in await every_license(api) if row["id"] == wanted), None)


def list_url(params: dict[str, str], **changes: str | None) -> str:
    merged = {**params, **changes}
    query = {key: value for key, value in merged.items() if value}
    return LIST + (f"?{urlencode(query)}" if query else "")


def decorate(
    row: dict[str, Any], catalog: Catalog, devices: dict[str, int], now: datetime
) -> dict[str, Any]:
    """A license with what its row shows: names, devices and the expiring flag."""
    product = catalog.product_by_id.get(row["product_id"])
    tier = catalog.policy_by_id.get(row["policy_id"] or "")
    return {
        **row,
        "product_name": product["name"] if product else row["product_id"],
        "tier_name": tier["name"] if tier else None,
        "entitlement_names": views.entitlement_names(row["entitlements"], product),
        "devices": views.devices_text(devices.get(row["id"], 0), row["max_machines"]),
        "expiring": views.is_expiring(row, now),
        "tone": views.STATUS_TONES.get(row["status"], "neutral"),
        "grace_text": format_duration(row["grace_seconds"]) if row["grace_seconds"] else "None",
        "devices_cap": format_devices(row["max_machines"]),
    }


def group_by_product(rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["product_name"], []).append(row)
    return list(groups.items())


async def _search(
    api: AdminApi, field: str, query: str, everything: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    if field == "license":
        # The short form the tables show (its first 8 characters) finds it too.
        wanted = query.lower().rstrip("…. ")
        if len(wanted) < 8:
            return [row for row in everything if row["id"] == wanted]
        return [row for row in everything if row["id"].startswith(wanted)]
    listing = await api.get("/v1/admin/licenses/search", **{views.SEARCH_PARAMS[field]: query})
    return list(listing["licenses"])


async def _list_page(
    request: Request,
    session: WebSession,
    api: AdminApi,
    *,
    problem: Problem | None = None,
    issue: dict[str, Any] | None = None,
    status: int = 200,
) -> HTMLResponse:
    query = request.query_params
    field = views.one_of(query.get("field"), views.SEARCH_FIELDS, "email")
    text = (query.get("q") or "").strip()
    state = views.one_of(query.get("status"), views.STATUS_FILTERS, "all")
    product_slug = query.get("product") or ""
    hide_revoked = query.get("hide_revoked") == "1"
    offset = views.page_offset(query.get("offset"))
    now = datetime.now(UTC)
    try:
        catalog, everything, summary, counts, machines = await asyncio.gather(
            load_catalog(api),
            every_license(api),
            api.get("/v1/admin/licenses/summary"),
            api.get("/v1/admin/licenses/counts"),
            api.get("/v1/admin/machines", limit=5000),
        )
        found = await _search(api, field, text, everything) if text else everything
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    product = next((p for p in catalog.products if p["slug"] == product_slug), None)
    params = {
        "field": field if text else "",
        "q": text,
        "product": product["slug"] if product else "",
        "status": "" if state == "all" else state,
        "hide_revoked": "1" if hide_revoked else "",
    }
    shown = [
        row
        for row in found
        if (product is None or row["product_id"] == product["id"])
        and views.matches_status(row, state, now)
        and not (hide_revoked and row["status"] == "revoked")
    ]
    counts = counts["by_product"]
    devices = views.active_devices(machines["machines"])
    page = [
        decorate(row, catalog, devices, now) for row in shown[offset : offset + views.PAGE_SIZE]
    ]
    expiring = sum(1 for row in everything if views.is_expiring(row, now))
    stats = [
        ("Licenses", summary["total"], "all"),
        ("Active", summary["active"], "active"),
        ("Suspended", summary["suspended"], "suspended"),
        ("Revoked", summary["revoked"], "revoked"),
        ("Expiring within 30 days", expiring, "expiring"),
    ]
    product_pills = [
        ("", f"All products · {sum(counts.values())}", list_url(params, product=None, offset=None))
    ]
    product_pills += [
        (p["slug"], f"{p['name']} · {counts[p['id']]}", list_url(params, product=p["slug"]))
        for p in catalog.products
        if p["id"] in counts
    ]
    status_pills = [
        (key, label, list_url(params, status=None if key == "all" else key))
        for key, label in views.STATUS_FILTERS
    ]
    products_shown = {row["product_id"] for row in page}
    return await render_admin(
        request,
        session,
        api,
        "admin/licenses.html",
        {
            "groups": group_by_product(page) if len(products_shown) > 1 else [("", page)],
            "rows": page,
            "total": len(shown),
            "offset": offset,
            "limit": views.PAGE_SIZE,
            "base": list_url(params),
            "stats": stats,
            "product_pills": product_pills,
            "product_selected": params["product"],
            "status_pills": status_pills,
            "status_selected": state,
            "hide_revoked": hide_revoked,
            "hide_url": list_url(params, hide_revoked=None if hide_revoked else "1"),
            "search_fields": views.SEARCH_FIELDS,
            "field": field,
            "q": text,
            "params": params,
            "issuable": catalog.issuable(),
            "issue": issue or {"values": {}, "errors": {}, "open": False},
            "back": list_url(params, offset=str(offset) if offset else None),
            "confirmations": confirmations,
            "any_licenses": bool(everything),
        },
        active=ACTIVE,
        title="Licenses",
        problem=problem,
        status=status,
    )


def confirmations(row: dict[str, Any]) -> dict[str, Confirmation]:
    """The reason dialogs of one license's actions (web.md 11.3, 11.5.4)."""
    who = row.get("buyer_email") or "no buyer e-mail"
    name = f"License {row['id'][:8]}… ({who})"
    return {
        "suspend": Confirmation(
            title="Suspend this license?",
            message=f"{name} stops validating until you unsuspend it. "
            "Its subscription, if any, keeps running.",
            button="Suspend",
            reason=True,
        ),
        "unsuspend": Confirmation(
            title="Unsuspend this license?",
            message=f"{name} validates again at once.",
            button="Unsuspend",
        ),
        "revoke": Confirmation(
            title="Revoke this license?",
            message=f"{name} is revoked for good; a live subscription is cancelled with it.",
            button="Revoke",
            warning=REVOKE_WARNING,
            reason=True,
            danger=True,
        ),
    }


@router.get("/admin/licenses", response_class=HTMLResponse)
async def licenses_page(request: Request) -> HTMLResponse:
    session = await page_session(request)
    return await _list_page(request, session, AdminApi(request, session))


@router.post("/admin/licenses", response_model=None)
async def issue_license(request: Request) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    wanted = views.issue_request(form)
    issue = {"values": form.echo(), "errors": wanted.errors, "open": True}
    if wanted.errors:
        problem = Problem("Check the highlighted fields.")
        return await _list_page(request, session, api, problem=problem, issue=issue, status=400)
    answer = await api.send("POST", "/v1/admin/licenses", wanted.body)
    if not answer.ok:
        return await _list_page(
            request, session, api, problem=Problem.of(answer), issue=issue, status=answer.status
        )
    issued = answer.body
    secret = Secret(
        title="License issued",
        value=issued["license_key"],
        note="Send this key to the buyer. This license has no invoice, so there is no "
        "receipt page to show it again.",
        back=f"{LIST}/{issued['license_id']}",
        extra=[("License id", issued["license_id"])],
    )
    return await secret_page(request, session, api, secret, active=ACTIVE)


async def _detail_context(api: AdminApi, row: dict[str, Any]) -> dict[str, Any]:
    license_id = row["id"]
    catalog, machines, subscriptions, invoices, audit, comps, charges = await asyncio.gather(
        load_catalog(api),
        api.get("/v1/admin/machines", license_id=license_id, include_inactive="true"),
        api.get("/v1/admin/subscriptions", license_id=license_id),
        api.get("/v1/admin/invoices", license_id=license_id),
        api.get("/v1/admin/audit", target_kind="license", target_id=license_id, limit=100),
        api.get("/v1/admin/audit", action="license.change_tier.comp", limit=1000),
        api.get("/v1/admin/audit", action="license.change_tier.invoice_created", limit=1000),
    )
    machines = machines["machines"]
    subscriptions = subscriptions["subscriptions"]
    invoices = invoices["invoices"]
    audit = audit["entries"]
    # No endpoint lists tier changes; their audit rows name the license in their details.
    changes = [
        entry
        for entry in comps["entries"] + charges["entries"]
        if entry["details"].get("license_id") == license_id
    ]
    changes.sort(key=lambda entry: int(entry["id"]), reverse=True)
    now = datetime.now(UTC)
    licensed = decorate(row, catalog, views.active_devices(machines), now)
    policies = catalog.policy_by_id
    return {
        **_change_context(catalog, row),
        "license": licensed,
        "product": catalog.product_by_id.get(row["product_id"]),
        "tier": policies.get(row["policy_id"] or ""),
        "policies": policies,
        "machines": machines,
        "subscriptions": [
            {
                **sub,
                "price_text": format_price(
                    sub["listed_value"], sub["listed_currency"], sub["period_days"]
                ),
            }
            for sub in subscriptions
        ],
        "cancel_subscription": CANCEL_SUBSCRIPTION,
        "machine_confirmation": machine_confirmation,
        "invoices": invoices,
        "audit": audit,
        "tier_changes": changes,
        "metadata": views.metadata_lines(row["metadata"]),
        "confirmations": confirmations,
        "back": f"{LIST}/{license_id}",
    }


def receipt_url(request: Request, invoice_id: str | None) -> str | None:
    if invoice_id is None:
        return None
    origin = app_state(request).sessions.public_origin
    return f"{origin}/thank-you?{urlencode({'invoice_id': invoice_id})}"


@router.get("/admin/licenses/{license_id}", response_class=HTMLResponse)
async def license_detail(request: Request, license_id: str) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    try:
        row = await find_license(api, license_id)
        if row is None:
            return await not_found_page(
                request, session, api, f"license {license_id}", active=ACTIVE
            )
        context = await _detail_context(api, row)
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    context["receipt_url"] = receipt_url(request, row["invoice_id"])
    return await render_admin(
        request,
        session,
        api,
        "admin/licenses_detail.html",
        context,
        active=ACTIVE,
        title=f"License {row['id'][:8]}…",
    )


STATUS_ACTIONS = {
    "suspend": ("suspended", True),
    "unsuspend": ("unsuspended", False),
    "revoke": ("revoked", True),
}


@router.post("/admin/licenses/{license_id}/suspend", response_model=None)
async def suspend_license(request: Request, license_id: str) -> Response:
    return await _status_action(request, license_id, "suspend")


@router.post("/admin/licenses/{license_id}/unsuspend", response_model=None)
async def unsuspend_license(request: Request, license_id: str) -> Response:
    return await _status_action(request, license_id, "unsuspend")


@router.post("/admin/licenses/{license_id}/revoke", response_model=None)
async def revoke_license(request: Request, license_id: str) -> Response:
    return await _status_action(request, license_id, "revoke")


async def _status_action(request: Request, license_id: str, action: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    back = safe_next(form.get("back") or f"{LIST}/{license_id}")
    done, takes_reason = STATUS_ACTIONS[action]
    if not form.flag("confirmed"):
        row = await find_license(api, license_id)
        if row is None:
            return await not_found_page(
                request, session, api, f"license {license_id}", active=ACTIVE
            )
        confirmation = confirmations(row)[action]
        return await confirm_page(
            request, session, api, confirmation, form, active=ACTIVE, back=back
        )
    body = reason_body(form) if takes_reason else None
    answer = await api.send("POST", f"/v1/admin/licenses/{license_id}/{action}", body)
    short = f"License {license_id[:8]}…"
    if answer.ok:
        return notice_redirect(back, f"{short} {done}.")
    if action == "revoke" and answer.status == 404:
        row = await find_license(api, license_id)
        if row is not None and row["status"] == "revoked":
            return notice_redirect(back, f"{short} was already revoked.")
    return notice_redirect(back, answer.message, kind="error")


# --- change tier ------------------------------------------------------------------------------


def _change_context(catalog: Catalog, row: dict[str, Any]) -> dict[str, Any]:
    product = catalog.product_by_id.get(row["product_id"]) or {}
    current = catalog.policy_by_id.get(row["policy_id"] or "")
    options = []
    for tier in catalog.tiers.get(row["product_id"], []):
        if tier["archived_at"] is not None:
            continue
        options.append(
            {
                "slug": tier["slug"],
                "name": tier["name"],
                "label": views.tier_label(tier),
                "current": tier["id"] == row["policy_id"],
                "disabled": tier["id"] == row["policy_id"] or not tier["active"],
                "downgrade": views.is_downgrade(current, tier, product),
                "lost": views.lost_entitlements(row, tier, product),
            }
        )
    return {"tier_options": options, "current_tier": current}


async def _change_page(
    request: Request,
    session: WebSession,
    api: AdminApi,
    row: dict[str, Any],
    *,
    values: dict[str, str] | None = None,
    confirm_downgrade: dict[str, Any] | None = None,
    problem: Problem | None = None,
    status: int = 200,
) -> HTMLResponse:
    context = _change_context(await load_catalog(api), row)
    return await render_admin(
        request,
        session,
        api,
        "admin/licenses_change_tier.html",
        {
            **context,
            "license": row,
            "values": values or {},
            "confirm_downgrade": confirm_downgrade,
        },
        active=ACTIVE,
        title="Change tier",
        problem=problem,
        status=status,
    )


@router.get("/admin/licenses/{license_id}/change-tier", response_class=HTMLResponse)
async def change_tier_page(request: Request, license_id: str) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    try:
        row = await find_license(api, license_id)
        if row is None:
            return await not_found_page(
                request, session, api, f"license {license_id}", active=ACTIVE
            )
        return await _change_page(request, session, api, row)
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)


def _change_body(form: Form) -> dict[str, Any]:
    body: dict[str, Any] = {
        "to_policy_slug": form.text("to_policy_slug"),
        "skip_payment": form.get("mode", "comp") != "charge",
    }
    return {**body, **reason_body(form)}


@router.post("/admin/licenses/{license_id}/change-tier", response_model=None)
async def change_tier(request: Request, license_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    row = await find_license(api, license_id)
    if row is None:
        return await not_found_page(request, session, api, f"license {license_id}", active=ACTIVE)
    values = form.echo()
    body = _change_body(form)
    if not body["to_policy_slug"]:
        return await _change_page(
            request, session, api, row, values=values, problem=Problem("Choose a tier."), status=400
        )
    catalog = await load_catalog(api)
    options = {o["slug"]: o for o in _change_context(catalog, row)["tier_options"]}
    chosen = options.get(body["to_policy_slug"])
    if chosen is not None and chosen["downgrade"] and not form.flag("downgrade_ok"):
        return await _change_page(
            request, session, api, row, values=values, confirm_downgrade=chosen
        )
    answer = await api.send("POST", f"/v1/admin/licenses/{license_id}/change-tier", body)
    if not answer.ok:
        return await _change_page(
            request,
            session,
            api,
            row,
            values=values,
            problem=Problem.of(answer),
            status=answer.status,
        )
    return await render_admin(
        request,
        session,
        api,
        "admin/licenses_tier_changed.html",
        {
            "result": answer.body,
            "license": row,
            "tier_name": chosen["name"] if chosen else body["to_policy_slug"],
        },
        active=ACTIVE,
        title="Tier changed" if answer.body.get("applied") else "Invoice created",
    )


@router.post("/admin/licenses/{license_id}/subscription/cancel", response_model=None)
async def cancel_subscription(request: Request, license_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    back = f"{LIST}/{license_id}"
    if not form.flag("confirmed"):
        return await confirm_page(
            request, session, api, CANCEL_SUBSCRIPTION, form, active=ACTIVE, back=back
        )
    subscription = form.text("subscription_id")
    answer = await api.send(
        "POST", f"/v1/admin/subscriptions/{subscription}/cancel", reason_body(form)
    )
    if not answer.ok:
        return notice_redirect(back, answer.message, kind="error")
    already = answer.body.get("already")
    text = f"The subscription was already {already}." if already else "Subscription cancelled."
    return notice_redirect(back, text)


CANCEL_SUBSCRIPTION = Confirmation(
    title="Cancel this subscription?",
    message="No further renewal is invoiced. The license stays valid until its "
    "paid-through date plus grace.",
    button="Cancel subscription",
    reason=True,
    danger=True,
)
