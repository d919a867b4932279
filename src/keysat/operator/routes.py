"""Service information, liveness, the audit log, the background jobs view, operator
settings, community analytics, the tier and self-license, and db-info."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from keysat import __version__
from keysat.access.actor import Actor
from keysat.access.routes import require_master, require_scope
from keysat.clock import clock
from keysat.errors import LicenseInvalidBody
from keysat.operator import community, schemas, tiering
from keysat.operator.dbinfo import db_info
from keysat.operator.service import (
    OPERATOR_NAME,
    effective_operator_name,
    get_setting,
    list_audit,
    record_audit,
    set_operator_name,
)
from keysat.state import app_state
from keysat.web.format import prefers_html
from keysat.web.routes import home_page
from keysat.wire import OkResponse, documents_errors, json_body, query_int, respond

router = APIRouter()


@router.get("/", response_model=schemas.ServiceInfo)
async def service_info(request: Request) -> Response:
    """The JSON service info; browsers, which prefer HTML, get the home page (web.md 5)."""
    if prefers_html(request.headers.get("accept")):
        page = await home_page(request)
        page.headers["Vary"] = "Accept"
        return page
    state = app_state(request)
    async with state.db.read() as session:
        key = await state.issuer_keys.current(session)
        operator = await effective_operator_name(session, state.settings.operator_name)
    response = respond(
        {
            "service": "keysat",
            "version": __version__,
            "operator": operator,
            "public_key_pem": key.public_key_pem,
            "key_algorithm": "ed25519",
            "key_format_version": 2,
        }
    )
    response.headers["Vary"] = "Accept"
    return response


@router.get("/healthz")
async def healthz() -> JSONResponse:
    return respond({"ok": True})


@router.get("/v1/admin/audit", response_model=schemas.AuditList)
async def audit_log(
    request: Request,
    limit: str | None = None,
    action: str | None = None,
    target_kind: str | None = None,
    target_id: str | None = None,
    before_id: str | None = None,
    actor: Actor = require_scope("audit:read"),
) -> JSONResponse:
    state = app_state(request)
    before = query_int("before_id", before_id, 0, -(2**63), 2**63 - 1) if before_id else None
    async with state.db.read() as session:
        entries = await list_audit(
            session,
            limit=query_int("limit", limit, 200, 1, 1000),
            action=action,
            target_kind=target_kind,
            target_id=target_id,
            before_id=before,
        )
    return respond({"entries": [schemas.audit_entry_json(entry) for entry in entries]})


@router.get("/v1/admin/jobs", response_model=schemas.JobList)
async def list_jobs(
    request: Request, actor: Actor = require_scope("settings:read")
) -> JSONResponse:
    return respond({"jobs": await app_state(request).jobs.describe_all()})


@router.post("/v1/admin/jobs/{name}/run", response_model=schemas.JobOut)
@documents_errors(409)
async def run_job(request: Request, name: str, actor: Actor = require_master()) -> JSONResponse:
    state = app_state(request)
    job = await state.jobs.run_now(name)
    async with state.db.write() as session:
        record_audit(session, actor, "job.run", "job", name, {})
    return respond(job)


# --- settings (admin-api.md 15) ------------------------------------------------------------


@router.get("/v1/admin/settings/operator-name", response_model=schemas.OperatorNameOut)
async def operator_name(
    request: Request, actor: Actor = require_scope("settings:read")
) -> JSONResponse:
    state = app_state(request)
    fallback = state.settings.operator_name
    async with state.db.read() as session:
        stored = await get_setting(session, OPERATOR_NAME)
    return respond({"stored": stored, "effective": stored or fallback, "fallback_env": fallback})


@router.post("/v1/admin/settings/operator-name", response_model=schemas.OperatorNameSet)
async def set_name(
    request: Request,
    actor: Actor = require_master(),
    body: schemas.OperatorNameBody = json_body(schemas.OperatorNameBody),
) -> JSONResponse:
    async with app_state(request).db.write() as session:
        stored = await set_operator_name(session, actor, body.name)
    return respond({"ok": True, "operator_name": stored})


@router.get("/v1/admin/community-analytics", response_model=schemas.CommunityOut)
async def community_analytics(
    request: Request, actor: Actor = require_scope("community:read")
) -> JSONResponse:
    return respond(await app_state(request).community.settings_view(clock.real_now()))


@router.post("/v1/admin/community-analytics", response_model=schemas.CommunitySet)
async def set_community_analytics(
    request: Request,
    actor: Actor = require_scope("community:write"),
    body: schemas.CommunityBody = json_body(schemas.CommunityBody),
) -> JSONResponse:
    async with app_state(request).db.write() as session:
        return respond(await community.configure(session, actor, body.enabled, body.collector_url))


@router.post("/v1/admin/community-analytics/reset", response_model=OkResponse)
async def reset_community_analytics(
    request: Request, actor: Actor = require_scope("community:write")
) -> JSONResponse:
    async with app_state(request).db.write() as session:
        await community.reset(session, actor)
    return respond({"ok": True})


# --- tier and self-license (admin-api.md 18) -----------------------------------------------


@router.get("/v1/admin/tier", response_model=schemas.TierReport)
async def tier(request: Request, actor: Actor = require_scope("tier:read")) -> JSONResponse:
    state = app_state(request)
    return respond(await tiering.report(state.db, state.tier()))


@router.get("/v1/admin/self-license", response_model=schemas.SelfLicenseOut)
async def self_license(request: Request, actor: Actor = require_scope("tier:read")) -> JSONResponse:
    return respond(tiering.tagged(app_state(request).self_license.current))


@router.post("/v1/admin/self-license", response_model=schemas.Activated)
@documents_errors(409, shapes={400: LicenseInvalidBody})
async def activate_self_license(
    request: Request,
    actor: Actor = require_master(),
    body: schemas.ActivateBody = json_body(schemas.ActivateBody, allow_empty=True),
) -> JSONResponse:
    state = app_state(request)
    return respond(
        await tiering.activate(
            state.db, state.settings, state.self_license, actor, body.license_key
        )
    )


@router.post("/v1/admin/self-license/refresh", response_model=schemas.SelfLicenseOut)
async def refresh_self_license(
    request: Request, actor: Actor = require_scope("tier:read")
) -> JSONResponse:
    return respond(tiering.tagged(await app_state(request).self_license.refresh()))


# --- db-info (admin-api.md 19.1) -----------------------------------------------------------


@router.get("/v1/admin/db-info", response_model=schemas.DbInfo)
async def database_info(request: Request, actor: Actor = require_master()) -> JSONResponse:
    return respond(await db_info(app_state(request).db))
