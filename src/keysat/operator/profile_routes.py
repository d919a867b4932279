"""Merchant profile routes (admin-api.md 12)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keysat.access.actor import Actor
from keysat.access.routes import require_scope
from keysat.operator import profiles, schemas
from keysat.state import app_state
from keysat.wire import documents_body, documents_errors, json_body, parse_body, respond

router = APIRouter()
PROFILE = "/v1/admin/merchant-profiles/{profile_id}"


@router.get("/v1/admin/merchant-profiles", response_model=schemas.ProfileList)
async def list_profiles(
    request: Request, actor: Actor = require_scope("merchant_profiles:read")
) -> JSONResponse:
    async with app_state(request).db.read() as session:
        return respond({"profiles": await profiles.list_profiles(session)})


@router.post("/v1/admin/merchant-profiles", response_model=schemas.ProfileOut)
@documents_body(schemas.ProfileCreate)
@documents_errors(402)
async def create_profile(
    request: Request, actor: Actor = require_scope("merchant_profiles:write")
) -> JSONResponse:
    state = app_state(request)
    tier = state.tier()
    # The cap answers before the body is read (admin-api.md 12.2, check 1).
    async with state.db.read() as session:
        await profiles.enforce_profile_cap(session, tier)
    body = await parse_body(request, schemas.ProfileCreate)
    async with state.db.write() as session:
        profile = await profiles.create_profile(session, tier, actor, body)
    return respond(profiles.profile_json(profile))


@router.get(PROFILE, response_model=schemas.ProfileDetail)
async def get_profile(
    request: Request, profile_id: str, actor: Actor = require_scope("merchant_profiles:read")
) -> JSONResponse:
    async with app_state(request).db.read() as session:
        return respond(await profiles.profile_detail(session, profile_id))


@router.patch(PROFILE, response_model=schemas.ProfileOut)
async def update_profile(
    request: Request,
    profile_id: str,
    actor: Actor = require_scope("merchant_profiles:write"),
    body: schemas.ProfilePatch = json_body(schemas.ProfilePatch, allow_empty=True),
) -> JSONResponse:
    async with app_state(request).db.write() as session:
        profile = await profiles.update_profile(session, actor, profile_id, body)
    return respond(profiles.profile_json(profile))


@router.delete(PROFILE, response_model=schemas.ProfileDone)
@documents_errors(409)
async def delete_profile(
    request: Request, profile_id: str, actor: Actor = require_scope("merchant_profiles:write")
) -> JSONResponse:
    async with app_state(request).db.write() as session:
        return respond(await profiles.delete_profile(session, actor, profile_id))


@router.post(f"{PROFILE}/set-default", response_model=schemas.ProfileDone)
async def set_default(
    request: Request, profile_id: str, actor: Actor = require_scope("merchant_profiles:write")
) -> JSONResponse:
    async with app_state(request).db.write() as session:
        return respond(await profiles.set_default(session, actor, profile_id))


@router.put(f"{PROFILE}/rail-preferences/{{rail}}", response_model=schemas.RailPreferenceSet)
@documents_body(schemas.RailPreferenceBody)
async def set_rail_preference(
    request: Request,
    profile_id: str,
    rail: str,
    actor: Actor = require_scope("merchant_profiles:write"),
) -> JSONResponse:
    parsed_rail = profiles.parse_rail_path(rail)
    body = await parse_body(request, schemas.RailPreferenceBody)
    async with app_state(request).db.write() as session:
        result = await profiles.set_rail_preference(
            session, actor, profile_id, parsed_rail, body.payment_provider_id
        )
    return respond(result)


@router.delete(f"{PROFILE}/rail-preferences/{{rail}}", response_model=schemas.RailPreferenceCleared)
@documents_errors(400)
async def clear_rail_preference(
    request: Request,
    profile_id: str,
    rail: str,
    actor: Actor = require_scope("merchant_profiles:write"),
) -> JSONResponse:
    parsed_rail = profiles.parse_rail_path(rail)
    async with app_state(request).db.write() as session:
        return respond(
            await profiles.clear_rail_preference(session, actor, profile_id, parsed_rail)
        )
