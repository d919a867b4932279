"""Public key routes and the master-only issuer key import and export."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from keysat.access.actor import Actor
from keysat.access.routes import require_master
from keysat.errors import bad_request
from keysat.issuer import schemas
from keysat.issuer.service import export_issuer_key, import_issuer_key
from keysat.state import app_state
from keysat.wire import documents_body, documents_errors, read_body, respond

router = APIRouter()

KEY_FORMAT_VERSION = 2


@router.get("/v1/pubkey", response_model=schemas.PubkeyResponse)
async def pubkey(request: Request) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        key = await state.issuer_keys.current(session)
    return respond({"algorithm": "ed25519", "public_key_pem": key.public_key_pem})


@router.get("/v1/issuer/public-key", response_model=schemas.IssuerPublicKeyResponse)
async def issuer_public_key(request: Request) -> JSONResponse:
    state = app_state(request)
    async with state.db.read() as session:
        key = await state.issuer_keys.current(session)
    return respond(
        {
            "public_key_pem": key.public_key_pem,
            "key_algorithm": "ed25519",
            "key_format_version": KEY_FORMAT_VERSION,
        }
    )


@router.post("/v1/admin/import-issuer-key", response_model=schemas.ImportIssuerKeyResponse)
@documents_body({"type": "string", "description": "The Ed25519 private key, PEM."}, "text/plain")
@documents_errors(409)
async def import_key(request: Request, actor: Actor = require_master()) -> JSONResponse:
    state = app_state(request)
    raw = await read_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the body must be UTF-8 PEM text") from None
    async with state.db.write() as session:
        key = await import_issuer_key(session, state.issuer_keys, actor, text)
    return respond(
        {
            "ok": True,
            "public_key_pem": key.public_key_pem,
            "restart_required": False,
            "message": "issuer key imported; every new key is signed with it from now on",
        }
    )


@router.post("/v1/admin/export-issuer-key", response_model=schemas.ExportIssuerKeyResponse)
async def export_key(request: Request, actor: Actor = require_master()) -> JSONResponse:
    state = app_state(request)
    async with state.db.write() as session:
        key = await export_issuer_key(session, state.issuer_keys, actor)
    return respond(
        {
            "ok": True,
            "key_algorithm": "ed25519",
            "private_key_pem": key.private_key_pem,
            "public_key_pem": key.public_key_pem,
        }
    )
