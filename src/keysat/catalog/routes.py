"""Catalog routes: admin products and policies (admin-api.md 2-4), public catalog
(public-api.md 4)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from keysat.access.actor import Actor
from keysat.access.routes import require_scope
from keysat.catalog import schemas, service
from keysat.state import app_state
from keysat.wire import (
    BODY_MODEL_ATTR,
    OkResponse,
    documents_errors,
    json_body,
    parse_json_object,
    query_bool,
    query_required,
    respond,
    validate_model,
)

public_router = APIRouter()
admin_router = APIRouter()


def documented_body(model: type[BaseModel]) -> Any:
    """Names the request model in the OpenAPI document for a route that parses its body
    itself, because a tier cap or a product lookup must answer before body validation."""

    async def body_parsed_by_handler() -> None:
        return None

    setattr(body_parsed_by_handler, BODY_MODEL_ATTR, model)
    return Depends(body_parsed_by_handler)


# --- products -----------------------------------------------------------------------------


@admin_router.get("/v1/admin/products", response_model=schemas.ProductList)
async def list_products(
    request: Request,
    actor: Actor = require_scope("products:read"),
    active: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    only = None if active is None else query_bool("active", active, True)
    async with state.db.read() as session:
        products = await service.list_products(session, only)
    return respond({"products": [service.product_json(product) for product in products]})


@admin_router.post("/v1/admin/products", response_model=schemas.ProductOut)
@documents_errors(402, 404, 409)
async def create_product(
    request: Request,
    actor: Actor = require_scope("products:write"),
    _body: None = documented_body(schemas.ProductCreate),
) -> JSONResponse:
    state = app_state(request)
    tier = state.tier()
    async with state.db.read() as session:
        await service.enforce_product_cap(session, tier)
    body = validate_model(
        schemas.ProductCreate, await parse_json_object(request, allow_empty=False)
    )
    async with state.db.write() as session:
        product = await service.create_product(session, tier, actor, body)
    return respond(service.product_json(product))


@admin_router.patch("/v1/admin/products/{product_id}", response_model=schemas.ProductOut)
@documents_errors(409)
async def update_product(
    request: Request,
    product_id: str,
    actor: Actor = require_scope("products:write"),
    body: schemas.ProductPatch = json_body(schemas.ProductPatch, allow_empty=True),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        product = await service.update_product(session, actor, product_id, body)
    return respond(service.product_json(product))


@admin_router.patch("/v1/admin/products/{product_id}/active", response_model=OkResponse)
async def set_product_active(
    request: Request,
    product_id: str,
    actor: Actor = require_scope("products:write"),
    body: schemas.ActiveBody = json_body(schemas.ActiveBody),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        await service.set_product_active(session, actor, product_id, body.active)
    return respond({"ok": True})


@admin_router.delete("/v1/admin/products/{product_id}", response_model=schemas.ProductDeleted)
@documents_errors(409)
async def delete_product(
    request: Request,
    product_id: str,
    actor: Actor = require_scope("products:write"),
    force: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    forced = query_bool("force", force, False)
    async with state.db.write() as session:
        result = await service.delete_product(session, actor, product_id, forced)
    return respond(result)


# --- policies -----------------------------------------------------------------------------


@admin_router.get("/v1/admin/policies", response_model=schemas.PolicyList)
@documents_errors(404)
async def list_policies(
    request: Request,
    actor: Actor = require_scope("policies:read"),
    product_slug: str | None = None,
    include_inactive: str | None = None,
    include_archived: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    slug = query_required("product_slug", product_slug)
    inactive = query_bool("include_inactive", include_inactive, False)
    archived = query_bool("include_archived", include_archived, False)
    async with state.db.read() as session:
        policies = await service.list_policies(session, slug, inactive, archived)
    return respond({"policies": [service.policy_json(policy) for policy in policies]})


@admin_router.post("/v1/admin/policies", response_model=schemas.PolicyOut)
@documents_errors(402, 404, 409)
async def create_policy(
    request: Request,
    actor: Actor = require_scope("policies:write"),
    _body: None = documented_body(schemas.PolicyCreate),
) -> JSONResponse:
    state = app_state(request)
    tier = state.tier()
    data = await parse_json_object(request, allow_empty=False)
    target = validate_model(schemas.PolicyTarget, data)
    async with state.db.write() as session:
        product = await service.product_for_new_policy(session, tier, target.product_slug)
        body = validate_model(schemas.PolicyCreate, data)
        policy = await service.create_policy(session, tier, actor, product, body)
    return respond(service.policy_json(policy))


@admin_router.patch("/v1/admin/policies/{policy_id}", response_model=schemas.PolicyOut)
@documents_errors(402, 409)
async def update_policy(
    request: Request,
    policy_id: str,
    actor: Actor = require_scope("policies:write"),
    body: schemas.PolicyPatch = json_body(schemas.PolicyPatch, allow_empty=True),
) -> JSONResponse:
    state = app_state(request)
    tier = state.tier()
    async with state.db.write() as session:
        policy = await service.update_policy(session, tier, actor, policy_id, body)
    return respond(service.policy_json(policy))


@admin_router.patch("/v1/admin/policies/{policy_id}/active", response_model=OkResponse)
async def set_policy_active(
    request: Request,
    policy_id: str,
    actor: Actor = require_scope("policies:write"),
    body: schemas.ActiveBody = json_body(schemas.ActiveBody),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        await service.set_policy_active(session, actor, policy_id, body.active)
    return respond({"ok": True})


@admin_router.patch("/v1/admin/policies/{policy_id}/public", response_model=OkResponse)
async def set_policy_public(
    request: Request,
    policy_id: str,
    actor: Actor = require_scope("policies:write"),
    body: schemas.PublicBody = json_body(schemas.PublicBody),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        await service.set_policy_public(session, actor, policy_id, body.public)
    return respond({"ok": True})


@admin_router.patch("/v1/admin/policies/{policy_id}/archived", response_model=schemas.ArchivedOut)
async def set_policy_archived(
    request: Request,
    policy_id: str,
    actor: Actor = require_scope("policies:write"),
    body: schemas.ArchivedBody = json_body(schemas.ArchivedBody),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        await service.set_policy_archived(session, actor, policy_id, body.archived)
    return respond({"ok": True, "archived": body.archived})


@admin_router.patch("/v1/admin/policies/{policy_id}/tip", response_model=schemas.PolicyOut)
async def set_policy_tip(
    request: Request,
    policy_id: str,
    actor: Actor = require_scope("policies:write"),
    body: schemas.TipBody = json_body(schemas.TipBody),
) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        policy = await service.set_policy_tip(session, actor, policy_id, body)
    return respond(service.policy_json(policy))


@admin_router.delete("/v1/admin/policies/{policy_id}", response_model=schemas.PolicyDeleted)
@documents_errors(409)
async def delete_policy(
    request: Request,
    policy_id: str,
    actor: Actor = require_scope("policies:write"),
    force: str | None = None,
) -> JSONResponse:
    state = app_state(request)
    forced = query_bool("force", force, False)
    async with state.db.write() as session:
        result = await service.delete_policy(session, actor, policy_id, forced)
    return respond(result)


# --- public catalog -----------------------------------------------------------------------


@public_router.get("/v1/products", response_model=schemas.ProductList)
async def public_products(request: Request) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        products = await service.list_products(session, active=True)
    return respond({"products": [service.product_json(product) for product in products]})


@public_router.get("/v1/products/{slug}", response_model=schemas.ProductOut)
async def public_product(request: Request, slug: str) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        product = await service.public_product(session, slug)
    return respond(service.product_json(product))


@public_router.get("/v1/products/{slug}/policies", response_model=schemas.PublicPolicyList)
async def public_policies(request: Request, slug: str) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        product, policies = await service.public_tiers(session, slug)
    featured = {
        policy.id: await state.purchases.featured_discount(product, policy) for policy in policies
    }
    return respond(service.public_tiers_json(product, policies, featured))
