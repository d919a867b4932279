"""Gate dependencies for admin routes, the API-key and web-password endpoints, and the web
login routes (access.md 5, 6; admin-api.md 14, 15.3).

Every gate authenticates and authorizes before anything else of the request is read, and
names itself (`declared_gate`) so the OpenAPI document can say what each route needs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from keysat.access import schemas, webui
from keysat.access.actor import Actor
from keysat.access.client import client_address, request_host
from keysat.access.service import (
    Credential,
    api_key_json,
    authorize,
    created_key_json,
    request_actor,
)
from keysat.access.sessions import (
    clearing_cookie,
    cookie_token,
    media_type,
    origin_allowed,
    parse_origin,
    safe_next,
    session_cookie,
)
from keysat.errors import ApiError, forbidden, rate_limited
from keysat.state import AppState, app_state
from keysat.wire import (
    OkResponse,
    documents_body,
    documents_errors,
    json_body,
    parse_json_object,
    read_body,
    respond,
)

GATE_ATTR = "__keysat_gate__"
MASTER_GATE = "master"
PROVIDER_CONNECT_GATE = "provider-connect"
LOGIN_LIMIT = "login"
LOGIN_BUCKET = "web_login"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"

admin_router = APIRouter()
login_router = APIRouter()


def _gate(name: str, dependency: Callable[..., Awaitable[Any]]) -> Any:
    setattr(dependency, GATE_ATTR, name)
    return Depends(dependency)


def declared_gate(route: APIRoute) -> str | None:
    """The gate a route declares: `master`, `provider-connect` or a scope."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        gate = getattr(dependant.call, GATE_ATTR, None)
        if gate is not None:
            return str(gate)
        pending.extend(dependant.dependencies)
    return None


async def _authorized(request: Request, scope: str | None) -> Credential:
    state = app_state(request)
    credential = await state.access.authenticate(request)
    authorize(credential, scope)
    await state.access.record_use(credential)
    return credential


def require_scope(scope: str) -> Any:
    async def dependency(request: Request) -> Actor:
        return (await _authorized(request, scope)).actor

    return _gate(scope, dependency)


def require_scope_credential(scope: str) -> Any:
    """For a route that may need a second scope once it has read its query (webhook
    endpoint listing with secrets): the credential, already authorized for `scope`."""

    async def dependency(request: Request) -> Credential:
        return await _authorized(request, scope)

    return _gate(scope, dependency)


def require_master() -> Any:
    async def dependency(request: Request) -> Actor:
        return (await _authorized(request, None)).actor

    return _gate(MASTER_GATE, dependency)


def require_provider_connect() -> Any:
    """access.md 5.3: the master key (or a web session) always; a scoped key only with
    `payment_providers:write` and only in sandbox mode."""

    async def dependency(request: Request) -> Actor:
        state = app_state(request)
        credential = await state.access.authenticate(request)
        if not credential.is_master and not state.settings.sandbox_mode:
            raise forbidden()
        authorize(credential, "payment_providers:write")
        await state.access.record_use(credential)
        return credential.actor

    return _gate(PROVIDER_CONNECT_GATE, dependency)


# --- API keys (master only) ------------------------------------------------------------------


@admin_router.post("/v1/admin/api-keys", response_model=schemas.ApiKeyCreated)
async def create_api_key(
    request: Request,
    actor: Actor = require_master(),
    body: schemas.ApiKeyCreate = json_body(schemas.ApiKeyCreate),
) -> JSONResponse:
    row, token = await app_state(request).access.create_key(
        actor, body.label, body.role, body.scopes
    )
    return respond(created_key_json(row, token))


@admin_router.get("/v1/admin/api-keys", response_model=schemas.ApiKeyList)
async def list_api_keys(request: Request, actor: Actor = require_master()) -> JSONResponse:
    rows = await app_state(request).access.list_keys()
    return respond({"api_keys": [api_key_json(row) for row in rows]})


@admin_router.delete("/v1/admin/api-keys/{key_id}", response_model=schemas.ApiKeyRevoked)
async def revoke_api_key(
    request: Request, key_id: str, actor: Actor = require_master()
) -> JSONResponse:
    return respond(await app_state(request).access.revoke_key(actor, key_id))


@admin_router.post("/v1/admin/web-password", response_model=OkResponse)
async def set_web_password(
    request: Request,
    actor: Actor = require_master(),
    body: schemas.WebPasswordBody = json_body(schemas.WebPasswordBody),
) -> JSONResponse:
    state = app_state(request)
    await webui.set_password(state.db, actor, body.password)
    response = respond({"ok": True})
    if cookie_token(request) is not None:
        # Every session just ended, the caller's own included.
        response.headers["Set-Cookie"] = clearing_cookie(state.settings.cookie_secure)
    return response


# --- web login (outside /v1/admin) -----------------------------------------------------------


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _origin_refused(request: Request, state: AppState) -> bool:
    origin = request.headers.get("origin")
    if origin is None:
        return False
    parsed = parse_origin(origin, whole_url=False)
    host = request_host(request, state.settings.trusted_proxies)
    return parsed is None or not origin_allowed(parsed, state.sessions.public_origin, host)


def _is_form(request: Request) -> bool:
    return media_type(request.headers.get("content-type")) == FORM_MEDIA_TYPE


async def _form_fields(request: Request) -> dict[str, str]:
    try:
        text = (await read_body(request)).decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return {name: values[0] for name, values in parse_qs(text, keep_blank_values=True).items()}


def _login_page_redirect(next_path: str, method: str, error: str, retry_after: int = 0) -> Response:
    """The login page again, naming what went wrong by code, never by echoing input."""
    query = {"next": next_path, "method": method, "error": error}
    if retry_after:
        query["retry"] = str(retry_after)
    return _no_store(RedirectResponse(f"/admin/login?{urlencode(query)}", status_code=303))


LOGIN_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "password": {"type": "string"},
        "api_key": {"type": "string"},
        "next": {"type": "string", "description": "a path under /admin/ to land on"},
    },
}
FORM_ANSWER: dict[int | str, dict[str, Any]] = {
    303: {
        "description": "A form post: to `next` with the session cookie on success, or back to "
        "the login page with the failure named in its query."
    }
}


@login_router.post("/admin/login", status_code=204, response_class=Response, responses=FORM_ANSWER)
@documents_body(schemas.LoginBody, alternatives={FORM_MEDIA_TYPE: LOGIN_FORM_SCHEMA})
@documents_errors(401, 403, 429, 503)
async def login(request: Request) -> Response:
    """JSON answers 204 with the cookie; the login page's form post (web.md 11.1) answers
    303 to its `next` path, or back to the login page naming the failure."""
    state = app_state(request)
    if _origin_refused(request, state):
        raise forbidden()
    form = await _form_fields(request) if _is_form(request) else None
    next_path = safe_next((form or {}).get("next"))
    method_hint = "api_key" if form is not None and "api_key" in form else "password"
    address = client_address(request, state.settings.trusted_proxies) or "unknown"
    decision = await state.rate_limiter.take(LOGIN_LIMIT, address, bucket_kind=LOGIN_BUCKET)
    if not decision.allowed:
        if form is not None:
            return _login_page_redirect(
                next_path, method_hint, "rate_limited", decision.retry_after
            )
        raise rate_limited(
            "too many login attempts; try again in a few minutes", decision.retry_after
        )
    fields: dict[str, Any] = (
        {name: form[name] for name in ("password", "api_key") if name in form}
        if form is not None
        else await parse_json_object(request, allow_empty=False)
    )
    actor = request_actor(request, state.settings, "web_ui")
    try:
        method, secret = webui.login_credentials(fields)
        token = await webui.login(state.db, state.sessions, state.master_key, actor, method, secret)
    except ApiError as exc:
        if form is None:
            raise
        error = {401: "wrong", 503: "no_password"}.get(exc.status, "bad_request")
        return _login_page_redirect(next_path, method_hint, error)
    response: Response = (
        RedirectResponse(next_path, status_code=303)
        if form is not None
        else Response(status_code=204)
    )
    response.headers["Set-Cookie"] = session_cookie(token, state.settings.cookie_secure)
    return _no_store(response)


@login_router.post(
    "/admin/logout",
    status_code=204,
    response_class=Response,
    responses={303: {"description": "A form post: to the login page, signed out."}},
)
@documents_errors(403)
async def logout(request: Request) -> Response:
    """The sign-out button posts a form and lands on the login page; JSON answers 204."""
    state = app_state(request)
    row = await state.sessions.stored(request)
    if row is not None:
        await state.sessions.check_csrf(request, row)
        await state.sessions.delete(row.id)
    response: Response = (
        RedirectResponse("/admin/login?signed_out=1", status_code=303)
        if _is_form(request)
        else Response(status_code=204)
    )
    response.headers["Set-Cookie"] = clearing_cookie(state.settings.cookie_secure)
    return _no_store(response)


@login_router.get("/admin/login/status", response_model=schemas.LoginStatus)
async def login_status(request: Request) -> Response:
    state = app_state(request)
    row = await state.sessions.current(request)
    body: dict[str, Any] = {
        "has_password": await webui.has_password(state.db),
        "logged_in": row is not None,
    }
    if row is not None:
        body["csrf_token"] = row.csrf_token
    return _no_store(respond(body))
