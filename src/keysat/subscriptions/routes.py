"""Buyer cancel and tier changes (public-api.md 11-12), subscription administration and
admin change-tier (admin-api.md 5.9, 9), and the sandbox test clock (billing.md 9.3)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keysat.access.actor import Actor
from keysat.access.routes import require_master, require_scope
from keysat.access.service import request_actor
from keysat.clock import now
from keysat.errors import bad_request, not_found
from keysat.licensing.keyauth import buyer_license
from keysat.licensing.service import blank_to_none
from keysat.operator.service import record_audit
from keysat.state import AppState, app_state
from keysat.subscriptions import schemas, service
from keysat.subscriptions.clock import MAX_DAYS, MAX_SECONDS, OFFSET_SETTING, clock_json
from keysat.wire import (
    documents_body,
    documents_errors,
    json_body,
    normalize_id,
    parse_body,
    query_int,
    respond,
)

public_router = APIRouter()
admin_router = APIRouter()

SUBSCRIPTION_STATUSES = ("active", "past_due", "cancelled", "lapsed")
CLOCK_JOBS = ("renewals", "reconciler", "redemption_reaper")


def cancelled_json(result: service.Cancelled) -> dict[str, object]:
    if result.already:
        return {"ok": True, "already": result.status, "subscription_id": result.subscription_id}
    return {"ok": True, "subscription_id": result.subscription_id, "status": "cancelled"}


# --- buyer routes -----------------------------------------------------------------------------


@public_router.post("/v1/subscriptions/cancel", response_model=schemas.CancelResponse)
@documents_body(schemas.CancelRequest)
@documents_errors(401, 404)
async def buyer_cancel(request: Request) -> JSONResponse:
    state = app_state(request)
    body = await parse_body(request, schemas.CancelRequest)
    async with state.db.write() as session:
        row = await buyer_license(session, state.issuer_keys, body.license_key)
        sub = await service.subscription_of_license(session, row.id, lock=True)
        if sub is None:
            raise not_found("no subscription tied to this license")
        buyer = request_actor(request, state.settings, "buyer_license_key", hash=row.id)
        result = await service.cancel(session, sub, buyer, "buyer", blank_to_none(body.reason))
    return respond(cancelled_json(result))


@public_router.post("/v1/upgrade-quote", response_model=schemas.QuoteResponse)
@documents_body(schemas.QuoteRequest)
@documents_errors(401, 404, 409, 502)
async def upgrade_quote(request: Request) -> JSONResponse:
    state = app_state(request)
    body = await parse_body(request, schemas.QuoteRequest)
    return respond(await state.tier_changes.quote(body.license_key, body.target_policy_slug))


@public_router.post("/v1/upgrade", response_model=schemas.UpgradeResponse)
@documents_body(schemas.UpgradeRequest)
@documents_errors(401, 404, 409, 502, 503)
async def upgrade(request: Request) -> JSONResponse:
    state = app_state(request)
    body = await parse_body(request, schemas.UpgradeRequest)
    actor = request_actor(request, state.settings, "buyer_license_key")
    return respond(
        await state.tier_changes.upgrade(
            body.license_key, body.target_policy_slug, body.redirect_url, actor
        )
    )


# --- admin: subscriptions and change-tier -----------------------------------------------------


@admin_router.get("/v1/admin/subscriptions", response_model=schemas.SubscriptionList)
async def list_subscriptions(
    request: Request,
    actor: Actor = require_scope("subscriptions:read"),
    status: str | None = None,
    license_id: str | None = None,
    product_id: str | None = None,
    limit: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    if status is not None and status not in SUBSCRIPTION_STATUSES:
        raise bad_request(
            f"query parameter 'status' must be one of {', '.join(SUBSCRIPTION_STATUSES)}"
        )
    ids = {name: value for name, value in (("license_id", license_id), ("product_id", product_id))}
    canonical = {
        name: normalize_id(value) if value is not None else None for name, value in ids.items()
    }
    if any(ids[name] is not None and canonical[name] is None for name in ids):
        return respond({"subscriptions": []})
    async with state.db.read() as session:
        rows = await service.list_subscriptions(
            session,
            status=status,
            license_id=canonical["license_id"],
            product_id=canonical["product_id"],
            limit=query_int("limit", limit, 200, 1, 1000),
        )
    return respond({"subscriptions": [service.subscription_json(row) for row in rows]})


@admin_router.post(
    "/v1/admin/subscriptions/{subscription_id}/cancel", response_model=schemas.CancelResponse
)
@documents_errors(409)
async def admin_cancel(
    request: Request,
    subscription_id: str,
    actor: Actor = require_scope("subscriptions:write"),
    body: schemas.AdminCancelRequest = json_body(schemas.AdminCancelRequest, allow_empty=True),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        sub = await service.subscription_by_id(session, subscription_id)
        result = await service.cancel(session, sub, actor, "admin", blank_to_none(body.reason))
    return respond(cancelled_json(result))


@admin_router.post(
    "/v1/admin/licenses/{license_id}/change-tier", response_model=schemas.ChangeTierResponse
)
@documents_errors(409, 502, 503)
async def change_tier(
    request: Request,
    license_id: str,
    actor: Actor = require_master(),
    body: schemas.ChangeTierRequest = json_body(schemas.ChangeTierRequest),
) -> JSONResponse:
    state = app_state(request)
    return respond(
        await state.tier_changes.admin_change(
            actor,
            license_id,
            body.to_policy_slug,
            body.skip_payment,
            blank_to_none(body.reason),
            state.self_license.current.license_id,
        )
    )


# --- the sandbox test clock -------------------------------------------------------------------


def _require_sandbox(state: AppState) -> None:
    if not state.settings.sandbox_mode:
        raise not_found("no such endpoint")


@admin_router.get("/v1/admin/sandbox/clock", response_model=schemas.ClockOut)
@documents_errors(404)
async def sandbox_clock(
    request: Request, actor: Actor = require_scope("subscriptions:read")
) -> JSONResponse:
    _require_sandbox(app_state(request))
    return respond(clock_json())


@admin_router.post("/v1/admin/sandbox/clock/advance", response_model=schemas.ClockAdvanced)
@documents_errors(404)
async def advance_sandbox_clock(
    request: Request,
    actor: Actor = require_scope("subscriptions:write"),
    body: schemas.ClockAdvance = json_body(schemas.ClockAdvance),
) -> JSONResponse:
    state = app_state(request)
    _require_sandbox(state)
    seconds = advance_seconds(body)
    async with state.db.write() as session:
        offset = await state.sandbox_clock.stored_offset(session) + seconds
        await state.sandbox_clock.move(session, offset)
        record_audit(
            session,
            actor,
            "sandbox.clock_advance",
            "setting",
            OFFSET_SETTING,
            {"seconds": seconds, "offset_seconds": offset},
        )
    # Ticks run here directly, beside whatever holds the leases: every step they take is
    # a conditional update, so overlapping with a scheduled tick changes nothing twice.
    for name in CLOCK_JOBS:
        await state.jobs.job(name).tick(now())
    return respond({**clock_json(), "ran": list(CLOCK_JOBS)})


def advance_seconds(body: schemas.ClockAdvance) -> int:
    if (body.seconds is None) == (body.days is None):
        raise bad_request("send exactly one of 'seconds' or 'days'")
    if body.seconds is not None:
        if not 1 <= body.seconds <= MAX_SECONDS:
            raise bad_request(f"seconds must be between 1 and {MAX_SECONDS}")
        return body.seconds
    assert body.days is not None
    if not 1 <= body.days <= MAX_DAYS:
        raise bad_request(f"days must be between 1 and {MAX_DAYS}")
    return body.days * 86_400


@admin_router.post("/v1/admin/sandbox/clock/reset", response_model=schemas.ClockOut)
@documents_errors(404)
async def reset_sandbox_clock(
    request: Request, actor: Actor = require_scope("subscriptions:write")
) -> JSONResponse:
    state = app_state(request)
    _require_sandbox(state)
    async with state.db.write() as session:
        await state.sandbox_clock.move(session, 0)
        record_audit(session, actor, "sandbox.clock_reset", "setting", OFFSET_SETTING, {})
    return respond(clock_json())
