"""Machines (web.md 11.5.5): every activated device, by product and status, and Deactivate,
which frees the seat at once."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from keysat.access.sessions import safe_next
from keysat.web.admin import license_views as views
from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.shell import (
    Confirmation,
    confirm_page,
    failure_page,
    form_session,
    notice_redirect,
    page_session,
    read_form,
    reason_body,
    render_admin,
)

router = APIRouter(include_in_schema=False)

ACTIVE = "machines"
LIST = "/admin/machines"


def machine_confirmation(machine: dict[str, Any]) -> Confirmation:
    name = machine.get("hostname") or machine["id"][:8] + "…"
    return Confirmation(
        title="Deactivate this machine?",
        message=f"{name} is signed out of its license and the seat is free at once. "
        "The app on it must activate again to keep working.",
        button="Deactivate",
        reason=True,
        danger=True,
    )


def list_url(params: dict[str, str], **changes: str | None) -> str:
    merged = {**params, **changes}
    query = {key: value for key, value in merged.items() if value}
    return LIST + (f"?{urlencode(query)}" if query else "")


def matches(machine: dict[str, Any], status: str, product: str) -> bool:
    if product and machine["product_slug"] != product:
        return False
    if status == "active":
        return bool(machine["active"])
    return status == "all" or not machine["active"]


@router.get("/admin/machines", response_class=HTMLResponse)
async def machines_page(request: Request) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    query = request.query_params
    license_id = (query.get("license_id") or "").strip().lower()
    status = views.one_of(query.get("status"), views.MACHINE_FILTERS, "active")
    product = query.get("product") or ""
    try:
        listing = await api.get(
            "/v1/admin/machines",
            license_id=license_id or None,
            include_inactive="true",
            limit=5000,
        )
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    machines = listing["machines"]
    products = Counter(m["product_slug"] for m in machines)
    names = {m["product_slug"]: m["product_name"] for m in machines}
    if product not in products:
        product = ""
    params = {
        "license_id": license_id,
        "product": product,
        "status": "" if status == "active" else status,
    }
    in_product = [m for m in machines if not product or m["product_slug"] == product]
    active_count = sum(1 for m in in_product if m["active"])
    shown = [m for m in in_product if matches(m, status, product)]
    rows = [
        {**m, "license_tone": views.STATUS_TONES.get(m["license_status"], "neutral")} for m in shown
    ]
    percent = round(100 * active_count / len(in_product)) if in_product else 0
    return await render_admin(
        request,
        session,
        api,
        "admin/machines.html",
        {
            "rows": rows,
            "license_id": license_id,
            "stats": [
                ("Machines", f"{len(in_product):,}"),
                ("Active", f"{active_count:,} ({percent}%)"),
                ("Top platform", views.top_platform(in_product) or "—"),
            ],
            "product_pills": [
                ("", f"All products · {len(machines)}", list_url(params, product=None))
            ]
            + [
                (slug, f"{names[slug]} · {count}", list_url(params, product=slug))
                for slug, count in sorted(products.items(), key=lambda item: names[item[0]])
            ],
            "product_selected": product,
            "status_pills": [
                (key, label, list_url(params, status=None if key == "active" else key))
                for key, label in views.MACHINE_FILTERS
            ],
            "status_selected": status,
            "back": list_url(params),
            "any_machines": bool(machines),
            "machine_confirmation": machine_confirmation,
        },
        active=ACTIVE,
        title=f"Machines on license {license_id[:8]}…" if license_id else "Machines",
    )


@router.post("/admin/machines/{machine_id}/deactivate", response_model=None)
async def deactivate_machine(request: Request, machine_id: str) -> Response:
    session = await form_session(request)
    api = AdminApi(request, session)
    form = await read_form(request)
    back = safe_next(form.get("back") or LIST)
    if not form.flag("confirmed"):
        listing = await api.get("/v1/admin/machines", include_inactive="true", limit=5000)
        machine = next(
            (m for m in listing["machines"] if m["id"] == machine_id), {"id": machine_id}
        )
        return await confirm_page(
            request, session, api, machine_confirmation(machine), form, active=ACTIVE, back=back
        )
    answer = await api.send(
        "POST", f"/v1/admin/machines/{machine_id}/deactivate", reason_body(form)
    )
    if not answer.ok:
        return notice_redirect(back, answer.message, kind="error")
    return notice_redirect(back, f"Machine {machine_id[:8]}… deactivated; its seat is free.")
