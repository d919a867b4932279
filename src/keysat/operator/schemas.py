"""Wire shapes of service information, the audit log, merchant profiles, settings, the tier
and self-license, and db-info.

Request models are validated strictly; PATCH models type every field `X | None = None` and
the service reads `model_fields_set` to tell an omitted field from `null` (admin-api.md 0.4).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from keysat.operator.models import AuditEntry
from keysat.wire import format_ts


class ServiceInfo(BaseModel):
    service: str
    version: str
    operator: str | None
    public_key_pem: str
    key_algorithm: str
    key_format_version: int


class AuditEntryOut(BaseModel):
    id: int
    actor_kind: str
    actor_hash: str | None
    actor_id: str | None
    action: str
    target_kind: str | None
    target_id: str | None
    request_ip: str | None
    user_agent: str | None
    details: dict[str, Any]
    occurred_at: str


class AuditList(BaseModel):
    entries: list[AuditEntryOut]


class JobOut(BaseModel):
    name: str
    interval_seconds: int
    last_started_at: str | None
    last_finished_at: str | None
    last_status: str | None
    last_error: str | None
    next_run_at: str | None
    running: bool


class JobList(BaseModel):
    jobs: list[JobOut]


def audit_entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "actor_kind": entry.actor_kind,
        "actor_hash": entry.actor_hash,
        "actor_id": entry.actor_id,
        "action": entry.action,
        "target_kind": entry.target_kind,
        "target_id": entry.target_id,
        "request_ip": entry.request_ip,
        "user_agent": entry.user_agent,
        "details": entry.details,
        "occurred_at": format_ts(entry.occurred_at),
    }


# --- merchant profiles (admin-api.md 12, 21.5) ---------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class ProfileCreate(_Body):
    name: str
    legal_name: str | None = None
    support_url: str | None = None
    support_email: str | None = None
    brand_color: str | None = None
    post_purchase_redirect_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_from_address: str | None = None
    smtp_from_name: str | None = None
    smtp_use_starttls: bool | None = None


class ProfilePatch(ProfileCreate):
    name: str | None = None  # type: ignore[assignment]


class RailPreferenceBody(_Body):
    payment_provider_id: str


class ProviderSummary(BaseModel):
    id: str
    kind: str
    label: str
    base_url: str
    store_id: str | None
    webhook_id: str | None
    connected_at: str
    served_rails: list[str]


class ProfileOut(BaseModel):
    id: str
    name: str
    legal_name: str | None
    support_url: str | None
    support_email: str | None
    brand_color: str | None
    post_purchase_redirect_url: str | None
    is_default: bool
    smtp_configured: bool
    smtp_host: str | None
    smtp_port: int | None
    smtp_username: str | None
    smtp_from_address: str | None
    smtp_from_name: str | None
    smtp_use_starttls: bool
    created_at: str
    updated_at: str


class ProfileWithProviders(ProfileOut):
    providers: list[ProviderSummary]


class ProfileList(BaseModel):
    profiles: list[ProfileWithProviders]


class RailPreferenceOut(BaseModel):
    rail: str
    payment_provider_id: str


class ProfileDetail(ProfileWithProviders):
    rail_preferences: list[RailPreferenceOut]
    product_count: int
    active_subscription_count: int


class ProfileDone(BaseModel):
    ok: bool
    id: str


class RailPreferenceSet(BaseModel):
    ok: bool
    merchant_profile_id: str
    rail: str
    payment_provider_id: str


class RailPreferenceCleared(BaseModel):
    ok: bool
    merchant_profile_id: str
    rail: str


# --- settings (admin-api.md 15) ------------------------------------------------------------


class OperatorNameBody(_Body):
    name: str


class OperatorNameOut(BaseModel):
    stored: str | None
    effective: str | None
    fallback_env: str | None


class OperatorNameSet(BaseModel):
    ok: bool
    operator_name: str | None


class CommunityBody(_Body):
    enabled: bool
    collector_url: str | None = None


class HeartbeatCounts(BaseModel):
    products: int
    active_licenses: int
    settled_invoices: int


class Heartbeat(BaseModel):
    install_uuid: str
    daemon_version: str
    tier: str
    counts: HeartbeatCounts
    uptime_bucket: str
    schema_version: int


class CommunityOut(BaseModel):
    enabled: bool
    collector_url: str | None
    install_uuid: str | None
    preview_heartbeat: Heartbeat


class CommunitySet(BaseModel):
    enabled: bool
    collector_url: str | None


# --- tier and self-license (admin-api.md 18; access.md 9.4) --------------------------------


class TierUsage(BaseModel):
    products: int
    active_codes: int
    merchant_profiles: int


class TierCaps(BaseModel):
    products: int | None
    policies_per_product: int | None
    active_codes: int | None
    merchant_profiles: int | None


class TierReport(BaseModel):
    tier: str
    tier_name: str
    sandbox: bool
    entitlements: list[str]
    usage: TierUsage
    caps: TierCaps
    next_tier: str | None
    upgrade_url: str | None


class SelfLicenseOut(BaseModel):
    """Tagged by `tier`: `unlicensed` carries `reason`, `licensed` the other fields."""

    tier: str
    reason: str | None = None
    license_id: str | None = None
    product_id: str | None = None
    expires_at: int | None = None
    entitlements: list[str] | None = None
    source: str | None = None


class ActivateBody(_Body):
    license_key: str | None = None


class Activated(BaseModel):
    ok: bool
    tier: SelfLicenseOut
    message: str


# --- db-info (admin-api.md 19.1) -----------------------------------------------------------


class DbCounts(BaseModel):
    products: int
    policies: int
    licenses_total: int
    licenses_active: int
    invoices_total: int
    invoices_settled: int
    machines_active: int
    discount_codes: int
    audit_log: int


class DbInfo(BaseModel):
    db_engine: str
    db_path: str
    db_size_bytes: int
    last_write_at: str | None
    counts: DbCounts
