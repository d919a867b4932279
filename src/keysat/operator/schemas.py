"""Wire shapes of service information and the audit log."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

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
