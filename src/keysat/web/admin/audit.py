"""Audit log (web.md 11.5.12): the append-only log with its filters, paging backwards, the
acting credential named in words, targets linked to their screens, and details as JSON.

Session ids and credential hashes are in the rows the API returns; this screen uses them
only to look names up and never prints them (DECISIONS.md 2.16)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from keysat.web.admin.api import AdminApi, ApiFailure
from keysat.web.admin.shell import failure_page, page_session, render_admin

router = APIRouter(include_in_schema=False)

ACTIVE = "audit"
BASE = "/admin/audit"
PAGE_SIZES = (50, 100, 200, 500, 1000)
DEFAULT_PAGE_SIZE = 50
# How far back the screen looks for the logins that name a web session's method.
LOGIN_LOOKUP = 1000

# The catalogue of admin-api.md 23, grouped as the select shows it.
KNOWN_ACTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Products and policies",
        (
            "product.create",
            "product.update",
            "product.set_active",
            "product.delete",
            "product.force_delete",
            "policy.create",
            "policy.update",
            "policy.set_active",
            "policy.set_public",
            "policy.archive",
            "policy.unarchive",
            "policy.set_tip",
            "policy.delete",
            "policy.force_delete",
        ),
    ),
    (
        "Licenses and machines",
        (
            "license.issue_manual",
            "license.revoke",
            "license.suspend",
            "license.unsuspend",
            "license.change_tier.comp",
            "license.change_tier.invoice_created",
            "license.recovered",
            "machine.deactivate",
        ),
    ),
    (
        "Codes, invoices and subscriptions",
        (
            "discount_code.create",
            "discount_code.update",
            "discount_code.enable",
            "discount_code.disable",
            "discount_code.delete",
            "code.redeemed",
            "invoice.amount_mismatch",
            "subscription.cancel",
            "subscription.upgrade.started",
            "subscription.upgrade.applied",
            "subscription.renewal_skipped_archived",
            "subscription.auto_charge_failed",
            "sandbox.invoice_pay",
            "sandbox.invoice_expire",
            "sandbox.invoice_invalidate",
            "sandbox.clock_advance",
            "sandbox.clock_reset",
        ),
    ),
    (
        "Payments",
        (
            "payment_provider.connect",
            "payment_provider.connect_scoped",
            "payment_provider.disconnect",
            "merchant_profile.create",
            "merchant_profile.update",
            "merchant_profile.delete",
            "merchant_profile.set_default",
            "merchant_profile.rail_preference.set",
            "merchant_profile.rail_preference.clear",
            "rate.refresh",
            "rate.pin_set",
            "rate.pin_cleared",
        ),
    ),
    (
        "Webhooks and keys",
        (
            "webhook_endpoint.create",
            "webhook_endpoint.set_active",
            "webhook_endpoint.delete",
            "webhook_delivery.retry",
            "api_key.create",
            "api_key.revoke",
        ),
    ),
    (
        "Sign-in and settings",
        (
            "web_ui.login_ok",
            "web_ui.login_failed",
            "web_ui.set_password",
            "operator_name.set",
            "community_analytics.enable",
            "community_analytics.disable",
            "community_analytics.reset",
            "issuer_key.import",
            "issuer_key.export",
            "self_license.activate",
            "job.run",
        ),
    ),
)
ACTION_NAMES = frozenset(name for _, names in KNOWN_ACTIONS for name in names)

TARGET_KINDS = (
    "license",
    "invoice",
    "subscription",
    "product",
    "policy",
    "discount_code",
    "machine",
    "tier_change",
    "merchant_profile",
    "payment_provider",
    "webhook_endpoint",
    "webhook_delivery",
    "api_key",
    "session",
    "setting",
    "settings",
    "self_license",
    "server_key",
    "rate",
    "job",
)
# Where a target kind has a screen; `{id}` is the target id.
TARGET_SCREENS = {
    "license": "/admin/licenses/{id}",
    "invoice": "/admin/invoices/{id}",
    "subscription": "/admin/subscriptions/{id}",
    "discount_code": "/admin/discount-codes/{id}",
    "product": "/admin/products/{id}/edit",
    "policy": "/admin/policies/{id}/edit",
    "merchant_profile": "/admin/payments/{id}/edit",
    "payment_provider": "/admin/payments",
    "machine": "/admin/machines",
    "webhook_endpoint": "/admin/webhooks#endpoint-{id}",
    "webhook_delivery": "/admin/webhooks?status=all#delivery-{id}",
    "api_key": "/admin/api-keys?revoked=1#key-{id}",
    "job": "/admin/jobs",
    "setting": "/admin/settings",
    "settings": "/admin/settings",
    "self_license": "/admin/settings#license",
}
# Ids that are credentials of a kind, never printed.
HIDDEN_TARGET_KINDS = frozenset({"session"})
ACTOR_NAMES = {
    "admin_api_key": "master key",
    "buyer_license_key": "buyer (license key)",
    "buyer_self_service": "buyer (recovery)",
    "system": "system",
    "renewal_worker": "renewal worker",
}
GENERATED_ID = re.compile(r"[0-9a-fA-F-]{16,}")
METHOD_NAMES = {"password": "password", "api_key": "admin key"}


@dataclass(frozen=True)
class Target:
    kind: str | None
    short_id: str | None
    full_id: str | None
    href: str | None


def short_id(value: str) -> str:
    """Generated ids are cut to their first eight characters (web.md 11.3); names such as a
    job, a setting or a currency are short enough to read whole."""
    return value[:8] + "…" if GENERATED_ID.fullmatch(value) else value


def target_of(entry: dict[str, Any]) -> Target:
    """The target as kind and short id, linked to its screen when it has one and still
    exists; a tier change links to its license."""
    kind = entry.get("target_kind")
    target_id = entry.get("target_id")
    if not kind or kind in HIDDEN_TARGET_KINDS or not target_id:
        return Target(kind, None, None, None)
    action = str(entry.get("action") or "")
    removed = action.endswith((".delete", ".force_delete"))
    href = None
    if not removed and kind in TARGET_SCREENS:
        href = TARGET_SCREENS[kind].replace("{id}", str(target_id))
    details = entry.get("details")
    if kind == "tier_change" and isinstance(details, dict) and details.get("license_id"):
        href = f"/admin/licenses/{details['license_id']}"
    return Target(kind, short_id(str(target_id)), str(target_id), href)


def actor_name(
    entry: dict[str, Any], key_labels: dict[str, str], session_methods: dict[str, str]
) -> str:
    """The acting credential in words (access.md 7), never its id or hash."""
    kind = entry.get("actor_kind")
    if kind == "scoped_api_key":
        label = key_labels.get(str(entry.get("actor_id")))
        return f"API key '{label}'" if label else "API key (unknown)"
    if kind == "web_ui":
        details = entry.get("details")
        method = details.get("method") if isinstance(details, dict) else None
        if str(entry.get("action", "")).startswith("web_ui.login") and method:
            return f"web session ({METHOD_NAMES.get(method, method)})"
        known = session_methods.get(str(entry.get("actor_id")))
        return f"web session ({METHOD_NAMES.get(known, known)})" if known else "web session"
    return ACTOR_NAMES.get(str(kind), str(kind))


def details_text(details: Any) -> str | None:
    if not details:
        return None
    return json.dumps(details, indent=2, ensure_ascii=False, sort_keys=True)


def page_size(raw: str | None) -> int:
    try:
        value = int(raw) if raw else DEFAULT_PAGE_SIZE
    except ValueError:
        return DEFAULT_PAGE_SIZE
    return min(max(value, 1), 1000)


def positive_int(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isdigit() else None


@dataclass(frozen=True)
class Filters:
    action: str | None
    action_text: str | None
    target_kind: str | None
    target_id: str | None
    limit: int

    @property
    def effective_action(self) -> str | None:
        """Typed text wins over the select: it is the exact match the operator asked for."""
        return self.action_text or self.action

    def query(self, **extra: int) -> str:
        values: dict[str, Any] = {
            "action": self.action,
            "action_text": self.action_text,
            "target_kind": self.target_kind,
            "target_id": self.target_id,
            "limit": self.limit if self.limit != DEFAULT_PAGE_SIZE else None,
            **extra,
        }
        return urlencode({k: v for k, v in values.items() if v is not None})

    @property
    def any(self) -> bool:
        return bool(self.action or self.action_text or self.target_kind or self.target_id)


def read_filters(query: Any) -> Filters:
    def text(name: str) -> str | None:
        value = str(query.get(name) or "").strip()
        return value or None

    return Filters(
        action=text("action"),
        action_text=text("action_text"),
        target_kind=text("target_kind"),
        target_id=text("target_id"),
        limit=page_size(query.get("limit")),
    )


@router.get(BASE, response_class=HTMLResponse)
async def audit_page(request: Request) -> HTMLResponse:
    session = await page_session(request)
    api = AdminApi(request, session)
    filters = read_filters(request.query_params)
    before_id = positive_int(request.query_params.get("before_id"))
    try:
        entries = (
            await api.get(
                "/v1/admin/audit",
                limit=filters.limit,
                action=filters.effective_action,
                target_kind=filters.target_kind,
                target_id=filters.target_id,
                before_id=before_id,
            )
        )["entries"]
        keys = (await api.get("/v1/admin/api-keys"))["api_keys"]
        logins = (await api.get("/v1/admin/audit", action="web_ui.login_ok", limit=LOGIN_LOOKUP))[
            "entries"
        ]
    except ApiFailure as failure:
        return await failure_page(request, session, api, failure, active=ACTIVE)
    key_labels = {key["id"]: key["label"] for key in keys}
    session_methods = {
        str(login["target_id"]): str(login["details"].get("method"))
        for login in logins
        if login.get("target_id") and isinstance(login.get("details"), dict)
    }
    rows = [
        {
            "id": entry["id"],
            "occurred_at": entry["occurred_at"],
            "action": entry["action"],
            "target": target_of(entry),
            "actor": actor_name(entry, key_labels, session_methods),
            "ip": entry.get("request_ip"),
            "details": details_text(entry.get("details")),
        }
        for entry in entries
    ]
    older = (
        f"{BASE}?{filters.query(before_id=rows[-1]['id'])}" if len(rows) == filters.limit else None
    )
    return await render_admin(
        request,
        session,
        api,
        "admin/audit.html",
        {
            "rows": rows,
            "filters": filters,
            "known_actions": KNOWN_ACTIONS,
            "action_in_list": filters.action in ACTION_NAMES,
            "target_kinds": TARGET_KINDS,
            "page_sizes": PAGE_SIZES,
            "older": older,
            "newest": f"{BASE}?{filters.query()}" if before_id else None,
            "base": BASE,
        },
        active=ACTIVE,
        title="Audit log",
    )
