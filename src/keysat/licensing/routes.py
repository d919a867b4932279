"""Validate, machines (public) and license and machine administration."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keysat.access.actor import Actor
from keysat.access.client import client_address
from keysat.access.routes import require_scope
from keysat.catalog.service import get_product_by_slug
from keysat.errors import not_found
from keysat.licensing import machines, schemas, service
from keysat.licensing.validation import Caller
from keysat.state import app_state
from keysat.subscriptions.service import cancel_for_revoke
from keysat.wire import (
    OkResponse,
    documents_body,
    documents_errors,
    format_optional_ts,
    format_ts,
    json_body,
    normalize_id,
    parse_body,
    query_bool,
    query_int,
    query_required,
    respond,
)

public_router = APIRouter()
admin_router = APIRouter()


# The SDK routes parse their own bodies: they are the hot path, and the dependency
# machinery costs more than the parsing itself.


def _caller(request: Request) -> Caller:
    state = app_state(request)
    agent = request.headers.get("user-agent")
    return Caller(
        client_ip=client_address(request, state.settings.trusted_proxies),
        user_agent=agent[:512] if agent else None,
    )


@public_router.post("/v1/validate", response_model=schemas.ValidateResponse)
@documents_body(schemas.ValidateRequest)
async def validate(request: Request) -> JSONResponse:
    body = await parse_body(request, schemas.ValidateRequest)
    return respond(await app_state(request).validator.validate(body, _caller(request)))


@public_router.post("/v1/machines/activate", response_model=schemas.ActivateResponse)
@documents_body(schemas.MachineRequest)
@documents_errors(404)
async def activate(request: Request) -> JSONResponse:
    body = await parse_body(request, schemas.MachineRequest)
    return respond(await app_state(request).machines.activate(body, _caller(request).client_ip))


@public_router.post("/v1/machines/heartbeat", response_model=schemas.MachineResult)
@documents_body(schemas.MachineRequest)
async def heartbeat(request: Request) -> JSONResponse:
    body = await parse_body(request, schemas.MachineRequest)
    return respond(await app_state(request).machines.heartbeat(body, _caller(request).client_ip))


@public_router.post("/v1/machines/deactivate", response_model=schemas.MachineResult)
@documents_body(schemas.MachineRequest)
async def deactivate(request: Request) -> JSONResponse:
    body = await parse_body(request, schemas.MachineRequest)
    return respond(await app_state(request).machines.deactivate(body))


@admin_router.get("/v1/admin/licenses", response_model=schemas.LicenseList)
async def list_licenses(
    request: Request,
    actor: Actor = require_scope("licenses:read"),
    product_id: str | None = None,
) -> JSONResponse:
    wanted = normalize_id(query_required("product_id", product_id))
    state = app_state(request)
    if wanted is None:
        return respond({"licenses": []})
    async with state.db.read() as session:
        rows = await service.list_for_product(session, wanted)
    return respond({"licenses": [schemas.license_json(row) for row in rows]})


@admin_router.get("/v1/admin/licenses/search", response_model=schemas.LicenseList)
async def search_licenses(
    request: Request,
    actor: Actor = require_scope("licenses:read"),
    buyer_email: str | None = None,
    nostr_npub: str | None = None,
    invoice_id: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        rows = await service.search(
            session, buyer_email=buyer_email, nostr_npub=nostr_npub, invoice_id=invoice_id
        )
    entries = []
    for row in rows:
        entry = schemas.license_json(row.license)
        entry["product_slug"] = row.product_slug
        if row.policy_slug is not None:
            entry["policy_slug"] = row.policy_slug
            entry["policy_name"] = row.policy_name
        entries.append(entry)
    return respond({"licenses": entries})


@admin_router.get("/v1/admin/licenses/summary", response_model=schemas.LicenseSummary)
async def license_summary(
    request: Request, actor: Actor = require_scope("licenses:read")
) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        return respond(await service.summary(session))


@admin_router.get("/v1/admin/licenses/counts", response_model=schemas.LicenseCounts)
async def license_counts(
    request: Request, actor: Actor = require_scope("licenses:read")
) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        return respond(await service.counts(session))


@admin_router.post("/v1/admin/licenses", response_model=schemas.IssuedLicense)
@documents_errors(404)
async def issue_license(
    request: Request,
    actor: Actor = require_scope("licenses:write"),
    body: schemas.IssueLicenseRequest = json_body(schemas.IssueLicenseRequest),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        row = await service.issue_manual(session, actor, body, set(body.model_fields_set))
        key = service.license_key(row, await state.issuer_keys.current(session))
    return respond(
        {
            "license_id": row.id,
            "product_id": row.product_id,
            "license_key": key,
            "issued_at": format_ts(row.issued_at),
            "expires_at": format_optional_ts(row.expires_at),
            "entitlements": list(row.entitlements),
            "is_trial": row.is_trial,
            "max_machines": row.max_machines,
        }
    )


@admin_router.post("/v1/admin/licenses/{license_id}/revoke", response_model=OkResponse)
async def revoke_license(
    request: Request,
    license_id: str,
    actor: Actor = require_scope("licenses:write"),
    body: schemas.ReasonRequest = json_body(schemas.ReasonRequest, allow_empty=True),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        row = await service.revoke(session, actor, license_id, body.reason)
        assert row.revocation_reason is not None
        await cancel_for_revoke(session, row.id, actor, row.revocation_reason)
    return respond({"ok": True})


@admin_router.post("/v1/admin/licenses/{license_id}/suspend", response_model=OkResponse)
async def suspend_license(
    request: Request,
    license_id: str,
    actor: Actor = require_scope("licenses:write"),
    body: schemas.ReasonRequest = json_body(schemas.ReasonRequest, allow_empty=True),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        await service.suspend(session, actor, license_id, body.reason)
    return respond({"ok": True})


@admin_router.post("/v1/admin/licenses/{license_id}/unsuspend", response_model=OkResponse)
async def unsuspend_license(
    request: Request, license_id: str, actor: Actor = require_scope("licenses:write")
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        await service.unsuspend(session, actor, license_id)
    return respond({"ok": True})


@admin_router.get("/v1/admin/machines", response_model=schemas.MachineList)
@documents_errors(404)
async def list_machines(
    request: Request,
    actor: Actor = require_scope("machines:read"),
    license_id: str | None = None,
    product_id: str | None = None,
    product_slug: str | None = None,
    include_inactive: str | None = None,
    limit: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    inactive = query_bool("include_inactive", include_inactive, False)
    row_limit = query_int("limit", limit, 500, 1, 5000)
    async with state.db.read() as session:
        wanted_product = normalize_id(product_id) if product_id is not None else None
        if product_id is not None and wanted_product is None:
            return respond({"machines": []})
        if wanted_product is None and product_slug is not None:
            product = await get_product_by_slug(session, product_slug)
            if product is None:
                raise not_found(f"product '{product_slug}'")
            wanted_product = product.id
        wanted_license = normalize_id(license_id) if license_id is not None else None
        if license_id is not None and wanted_license is None:
            return respond({"machines": []})
        rows = await machines.admin_list(
            session,
            license_id=wanted_license,
            product_id=wanted_product,
            include_inactive=inactive,
            limit=row_limit,
        )
    return respond({"machines": [schemas.machine_row_json(*row) for row in rows]})


@admin_router.post("/v1/admin/machines/{machine_id}/deactivate", response_model=OkResponse)
async def deactivate_machine(
    request: Request,
    machine_id: str,
    actor: Actor = require_scope("machines:write"),
    body: schemas.ReasonRequest = json_body(schemas.ReasonRequest, allow_empty=True),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        await machines.admin_deactivate(session, actor, machine_id, body.reason)
    return respond({"ok": True})
