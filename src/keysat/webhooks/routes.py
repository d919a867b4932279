"""Admin routes for webhook endpoints and deliveries (admin-api.md 13)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keysat.access.actor import Actor
from keysat.access.routes import require_scope, require_scope_credential
from keysat.access.service import Credential, authorize
from keysat.clock import clock
from keysat.state import app_state
from keysat.webhooks import schemas, service
from keysat.wire import OkResponse, json_body, query_bool, query_int, respond

admin_router = APIRouter()

DELIVERY_LIMIT_DEFAULT = 100
DELIVERY_LIMIT_MAX = 500


@admin_router.get("/v1/admin/webhook-endpoints", response_model=schemas.EndpointList)
async def list_endpoints(
    request: Request,
    credential: Credential = require_scope_credential("webhooks:read"),
    include_secret: str | None = None,
) -> JSONResponse:
    with_secret = query_bool("include_secret", include_secret, False)
    if with_secret:
        # Secrets are for writers only (Keysat 0.2.0 showed them to read-only keys).
        authorize(credential, "webhooks:write")
    state = app_state(request)
    async with state.db.read() as session:
        endpoints = await service.list_endpoints(session)
    return respond(
        {"endpoints": [service.endpoint_json(e, include_secret=with_secret) for e in endpoints]}
    )


@admin_router.post("/v1/admin/webhook-endpoints", response_model=schemas.EndpointOut)
async def create_endpoint(
    request: Request,
    actor: Actor = require_scope("webhooks:write"),
    body: schemas.EndpointCreate = json_body(schemas.EndpointCreate),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        endpoint = await service.create_endpoint(session, actor, body)
    return respond(service.endpoint_json(endpoint, include_secret=True))


@admin_router.patch("/v1/admin/webhook-endpoints/{endpoint_id}/active", response_model=OkResponse)
async def set_endpoint_active(
    request: Request,
    endpoint_id: str,
    actor: Actor = require_scope("webhooks:write"),
    body: schemas.ActiveBody = json_body(schemas.ActiveBody),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        await service.set_endpoint_active(session, actor, endpoint_id, body.active)
    return respond({"ok": True})


@admin_router.delete(
    "/v1/admin/webhook-endpoints/{endpoint_id}", response_model=schemas.EndpointDeleted
)
async def delete_endpoint(
    request: Request, endpoint_id: str, actor: Actor = require_scope("webhooks:write")
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        removed = await service.delete_endpoint(session, actor, endpoint_id)
    return respond({"ok": True, "cascaded_deliveries": removed})


@admin_router.get("/v1/admin/webhook-deliveries", response_model=schemas.DeliveryList)
async def list_deliveries(
    request: Request,
    actor: Actor = require_scope("webhooks:read"),
    endpoint_id: str | None = None,
    status: str | None = None,
    limit: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    count = query_int("limit", limit, DELIVERY_LIMIT_DEFAULT, 1, DELIVERY_LIMIT_MAX)
    async with state.db.read() as session:
        deliveries = await service.list_deliveries(
            session,
            endpoint_id=endpoint_id,
            status="all" if status is None else status,
            limit=count,
        )
    return respond({"deliveries": [service.delivery_json(d) for d in deliveries]})


@admin_router.post(
    "/v1/admin/webhook-deliveries/{delivery_id}/retry", response_model=schemas.DeliveryOut
)
async def retry_delivery(
    request: Request, delivery_id: str, actor: Actor = require_scope("webhooks:write")
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        delivery = await service.retry_delivery(session, actor, delivery_id, clock.real_now())
    return respond(service.delivery_json(delivery))
