"""API keys (web.md 11.5.11): generate a scoped key (its token shown once), list keys with
their last use, and revoke."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from keysat.access.scopes import ROLES
from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.shell import (
    Confirmation,
    Form,
    Problem,
    Secret,
    confirm_page,
    failure_page,
    form_session,
    notice_redirect,
    page_session,
    read_form,
    render_admin,
    secret_page,
)

router = APIRouter(include_in_schema=False)

ACTIVE = "api-keys"
BASE = "/admin/api-keys"
LABEL_MAX = 80

# The descriptions web.md 11.5.11 prescribes; none claims tier changes, which are master-only.
ROLE_DESCRIPTIONS = {
    "read-only": "Can view everything; changes nothing.",
    "license-issuer": "Read, plus issue, suspend, unsuspend and revoke licenses.",
    "support": "License issuer, plus cancel subscriptions and deactivate machines.",
    "merchant-onboard": (
        "Read, plus create and edit products and tiers, and issue licenses. "
        "For onboarding scripts and agents."
    ),
    "full-admin": "Everything except master-only actions.",
}
MASTER_ONLY = (
    "managing API keys",
    "connecting and disconnecting payment providers (except the sandbox-mode BTCPay connect "
    "that the extra scope below allows)",
    "setting the operator name and the web password",
    "importing or exporting the signing key",
    "activating this server's license",
    "database info",
    "running a background job on demand",
    "license tier changes",
)
EXTRA_SCOPE = "payment_providers:write"
EXTRA_SCOPE_TEXT = (
    "Lets this key connect a BTCPay store while the server runs in sandbox mode, "
    "and only a test-network store."
)
DEFAULT_ROLE = "read-only"


def visible_keys(keys: list[dict[str, Any]], *, show_revoked: bool) -> list[dict[str, Any]]:
    return [key for key in keys if show_revoked or not key.get("revoked_at")]


def revoke_confirmation(label: str) -> Confirmation:
    return Confirmation(
        title=f"Revoke the key '{label}'?",
        message="Scripts using it are refused from their next request. This cannot be undone; "
        "generate a new key to grant access again.",
        button="Revoke",
        danger=True,
    )


async def _page(
    request: Request,
    *,
    problem: Problem | None = None,
    status: int = 200,
    form: Form | None = None,
) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    show_revoked = request.query_params.get("revoked") == "1"
    try:
        keys = (await api.get("/v1/admin/api-keys"))["api_keys"]
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    revoked_count = sum(1 for key in keys if key.get("revoked_at"))
    return await render_admin(
        request,
        session,
        api,
        "admin/api_keys.html",
        {
            "keys": visible_keys(keys, show_revoked=show_revoked),
            "any_keys": bool(keys),
            "show_revoked": show_revoked,
            "revoked_count": revoked_count,
            "roles": [(role, ROLE_DESCRIPTIONS[role]) for role in ROLES],
            "master_only": MASTER_ONLY,
            "extra_scope": EXTRA_SCOPE,
            "extra_scope_text": EXTRA_SCOPE_TEXT,
            "open_form": form is not None or request.query_params.get("new") == "1",
            "values": form.echo() if form else {"role": DEFAULT_ROLE},
            "label_max": LABEL_MAX,
            "revoke_confirmation": revoke_confirmation,
            "base": BASE,
        },
        active=ACTIVE,
        title="API keys",
        problem=problem,
        status=status,
    )


@router.get(BASE, response_class=HTMLResponse)
async def api_keys_page(request: Request) -> HTMLResponse:
    return await _page(request)


@router.post(BASE, response_model=None)
async def create_key(request: Request) -> Response:
    session = await form_session(request)
    form = await read_form(request)
    api = AdminApi(request, session)
    body: dict[str, Any] = {"label": form.text("label"), "role": form.text("role")}
    if form.flag("extra_scope"):
        body["scopes"] = [EXTRA_SCOPE]
    answer = await api.send("POST", "/v1/admin/api-keys", body)
    if not answer.ok:
        return await _page(request, problem=Problem.of(answer), status=answer.status, form=form)
    created = answer.body
    extra = [("Role", created["role"])]
    if created.get("scopes"):
        extra.append(("Extra scopes", ", ".join(created["scopes"])))
    secret = Secret(
        title=f"API key '{created['label']}' created",
        value=created["token"],
        note="Scripts send it as 'Authorization: Bearer <token>'. Only its hash is stored, "
        "so nobody can show it to you again.",
        back=BASE,
        extra=extra,
        copy_label="Copy token",
    )
    return await secret_page(request, session, api, secret, active=ACTIVE)


@router.post(BASE + "/{key_id}/revoke", response_model=None)
async def revoke_key(request: Request, key_id: str) -> Response:
    session = await form_session(request)
    form = await read_form(request)
    api = AdminApi(request, session)
    label = form.text("label")
    if not form.flag("confirmed"):
        return await confirm_page(
            request, session, api, revoke_confirmation(label), form, active=ACTIVE, back=BASE
        )
    answer = await api.send("DELETE", f"/v1/admin/api-keys/{key_id}")
    if not answer.ok:
        return await _page(request, problem=Problem.of(answer), status=answer.status)
    if answer.body.get("already_revoked"):
        return notice_redirect(BASE, f"The key '{label}' was already revoked.")
    return notice_redirect(BASE, f"Key '{label}' revoked: its next request is refused.")
