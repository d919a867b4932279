"""Wire shapes of licenses, machines and validation (public-api.md 8-9, admin-api.md 5-6)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from keysat.licensing.models import License, Machine
from keysat.wire import StrictModel, format_optional_ts, format_ts

KEY_MAX = 131_072
STRING_MAX = 1024
REASON_MAX = 1000


class ValidateRequest(StrictModel):
    key: str = Field(max_length=KEY_MAX)
    product_slug: str | None = Field(default=None, max_length=STRING_MAX)
    fingerprint: str | None = Field(default=None, max_length=STRING_MAX)
    hostname: str | None = Field(default=None, max_length=STRING_MAX)
    platform: str | None = Field(default=None, max_length=STRING_MAX)


class MachineRequest(StrictModel):
    key: str = Field(max_length=KEY_MAX)
    fingerprint: str | None = Field(default=None, max_length=STRING_MAX)
    hostname: str | None = Field(default=None, max_length=STRING_MAX)
    platform: str | None = Field(default=None, max_length=STRING_MAX)
    reason: str | None = Field(default=None, max_length=STRING_MAX)


class IssueLicenseRequest(StrictModel):
    product_slug: str = Field(max_length=STRING_MAX)
    policy_slug: str | None = Field(default=None, max_length=STRING_MAX)
    note: str | None = Field(default=None, max_length=REASON_MAX)
    expires_at: str | None = Field(default=None, max_length=64)
    entitlements: list[str] | None = None
    max_machines: int | None = None
    grace_seconds: int | None = None
    is_trial: bool | None = None
    buyer_email: str | None = Field(default=None, max_length=320)
    nostr_npub: str | None = Field(default=None, max_length=STRING_MAX)


class ReasonRequest(StrictModel):
    reason: str | None = Field(default=None, max_length=REASON_MAX)


class ValidateResponse(BaseModel):
    ok: bool
    reason: str | None = None
    license_id: str | None = None
    product_id: str | None = None
    product_slug: str | None = None
    issued_at: str | None = None
    expires_at: str | None = None
    grace_until: str | None = None
    in_grace_period: bool | None = None
    is_trial: bool | None = None
    entitlements: list[str] | None = None
    status: str | None = None
    machine_id: str | None = None
    max_machines: int | None = None
    license_key: str | None = None


class ActivateResponse(BaseModel):
    ok: bool
    machine_id: str | None
    active_count: int
    max_machines: int
    reason: str | None


class MachineResult(BaseModel):
    ok: bool
    reason: str | None = None
    machine_id: str | None = None


class IssuedLicense(BaseModel):
    license_id: str
    product_id: str
    license_key: str
    issued_at: str
    expires_at: str | None
    entitlements: list[str]
    is_trial: bool
    max_machines: int


class LicenseOut(BaseModel):
    id: str
    product_id: str
    invoice_id: str | None
    status: str
    fingerprint: str | None
    bound_identity: str | None
    issued_at: str
    revoked_at: str | None
    revocation_reason: str | None
    metadata: dict[str, Any]
    policy_id: str | None
    expires_at: str | None
    grace_seconds: int
    max_machines: int
    suspended_at: str | None
    suspension_reason: str | None
    entitlements: list[str]
    is_trial: bool
    trial_started_at: str | None
    nostr_npub: str | None
    buyer_email: str | None


class LicenseList(BaseModel):
    licenses: list[LicenseOut]


class LicenseSummary(BaseModel):
    total: int
    active: int
    suspended: int
    revoked: int
    last_24h: int
    last_7d: int


class LicenseCounts(BaseModel):
    by_product: dict[str, int]
    by_policy: dict[str, int]


class MachineRow(BaseModel):
    id: str
    license_id: str
    product_id: str
    product_slug: str
    product_name: str
    buyer_email: str | None
    license_status: str
    hostname: str | None
    platform: str | None
    ip_last_seen: str | None
    activated_at: str
    last_heartbeat_at: str | None
    deactivated_at: str | None
    deactivation_reason: str | None
    active: bool


class MachineList(BaseModel):
    machines: list[MachineRow]


def license_json(row: License) -> dict[str, Any]:
    return {
        "id": row.id,
        "product_id": row.product_id,
        "invoice_id": row.invoice_id,
        "status": row.status,
        "fingerprint": row.fingerprint,
        "bound_identity": None,
        "issued_at": format_ts(row.issued_at),
        "revoked_at": format_optional_ts(row.revoked_at),
        "revocation_reason": row.revocation_reason,
        "metadata": row.license_metadata,
        "policy_id": row.policy_id,
        "expires_at": format_optional_ts(row.expires_at),
        "grace_seconds": row.grace_seconds,
        "max_machines": row.max_machines,
        "suspended_at": format_optional_ts(row.suspended_at),
        "suspension_reason": row.suspension_reason,
        "entitlements": list(row.entitlements),
        "is_trial": row.is_trial,
        "trial_started_at": format_optional_ts(row.trial_started_at),
        "nostr_npub": row.nostr_npub,
        "buyer_email": row.buyer_email,
    }


def machine_row_json(
    machine: Machine, license_row: License, product_slug: str, product_name: str
) -> dict[str, Any]:
    return {
        "id": machine.id,
        "license_id": machine.license_id,
        "product_id": license_row.product_id,
        "product_slug": product_slug,
        "product_name": product_name,
        "buyer_email": license_row.buyer_email,
        "license_status": license_row.status,
        "hostname": machine.hostname,
        "platform": machine.platform,
        "ip_last_seen": machine.ip_last_seen,
        "activated_at": format_ts(machine.activated_at),
        "last_heartbeat_at": format_optional_ts(machine.last_heartbeat_at),
        "deactivated_at": format_optional_ts(machine.deactivated_at),
        "deactivation_reason": machine.deactivation_reason,
        "active": machine.deactivated_at is None,
    }
