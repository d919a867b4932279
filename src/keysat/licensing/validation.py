"""POST /v1/validate: the decision order of public-api.md 8.2.

`license_verdict` holds the pure rules over the license row (steps 6-10); `validate`
runs the whole order, binds machines and records every logged attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from keysat.access.ratelimit import RateLimiter
from keysat.clock import now
from keysat.db import Database
from keysat.keys import (
    KeyFormatError,
    ParsedKey,
    fingerprint_hash,
    fingerprint_hash_hex,
)
from keysat.licensing.jobs import ValidationRecord, WriteBehind
from keysat.licensing.keyauth import KeyCheck, KeyReader, LicenseSnapshot, lock_license
from keysat.licensing.machines import Binding, MachineInfo, bind
from keysat.licensing.models import License
from keysat.licensing.schemas import ValidateRequest
from keysat.licensing.service import key_is_current, license_key
from keysat.wire import format_ts


@dataclass(frozen=True)
class Verdict:
    """A failed check: the reason, a detail for the log, and extra response fields."""

    reason: str
    detail: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Grace:
    in_grace: bool
    grace_until: datetime | None


def license_verdict(
    row: License | LicenseSnapshot,
    product_slug: str,
    key: ParsedKey,
    requested_slug: str | None,
    fingerprint: str | None,
    at: datetime,
) -> Verdict | Grace:
    if str(key.product_id) != row.product_id:
        return Verdict("invalid_state", "product id in key does not match license")
    if row.status == "revoked":
        return Verdict("revoked", row.revocation_reason)
    if row.status == "suspended":
        return Verdict("suspended", row.suspension_reason)
    if row.status != "active":
        return Verdict("invalid_state", f"license status {row.status}")
    if requested_slug is not None and requested_slug != product_slug:
        return Verdict("product_mismatch", f"license belongs to product '{product_slug}'")
    grace = Grace(in_grace=False, grace_until=None)
    if row.expires_at is not None:
        cutoff = row.expires_at + timedelta(seconds=row.grace_seconds)
        if at >= cutoff:
            return Verdict(
                "expired",
                f"expired at {format_ts(row.expires_at)}",
                {
                    "license_id": row.id,
                    "product_id": row.product_id,
                    "expires_at": format_ts(row.expires_at),
                },
            )
        if at >= row.expires_at:
            grace = Grace(in_grace=True, grace_until=cutoff)
    if (
        fingerprint is not None
        and key.is_fingerprint_bound
        and key.fingerprint_hash != fingerprint_hash(fingerprint)
    ):
        return Verdict("fingerprint_mismatch", "key is bound to another machine")
    return grace


def success_body(
    row: License | LicenseSnapshot,
    product_slug: str,
    grace: Grace,
    machine_id: str | None,
    refreshed_key: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ok": True,
        "license_id": row.id,
        "product_id": row.product_id,
        "product_slug": product_slug,
        "issued_at": format_ts(row.issued_at),
        "status": "active",
        "max_machines": row.max_machines,
    }
    if row.expires_at is not None:
        body["expires_at"] = format_ts(row.expires_at)
    if grace.in_grace and grace.grace_until is not None:
        body["in_grace_period"] = True
        body["grace_until"] = format_ts(grace.grace_until)
    if row.is_trial:
        body["is_trial"] = True
    if row.entitlements:
        body["entitlements"] = list(row.entitlements)
    if machine_id is not None:
        body["machine_id"] = machine_id
    if refreshed_key is not None:
        body["license_key"] = refreshed_key
    return body


def failure_body(verdict: Verdict) -> dict[str, Any]:
    return {"ok": False, "reason": verdict.reason, **verdict.fields}


@dataclass(frozen=True)
class Caller:
    client_ip: str | None
    user_agent: str | None


class Validator:
    def __init__(
        self,
        db: Database,
        reader: KeyReader,
        limiter: RateLimiter,
        writes: WriteBehind,
    ) -> None:
        self._db = db
        self._reader = reader
        self._keys = KeyCheck()
        self._limiter = limiter
        self._writes = writes

    async def validate(self, request: ValidateRequest, caller: Caller) -> dict[str, Any]:
        fingerprint = request.fingerprint or None
        requested_slug = request.product_slug or None

        def record(
            result: str,
            detail: str | None,
            license_id: str | None,
            product_id: str | None,
            machine_id: str | None = None,
        ) -> None:
            self._writes.record(
                ValidationRecord(
                    license_id=license_id,
                    product_id=product_id,
                    fingerprint=fingerprint,
                    machine_id=machine_id,
                    result=result,
                    reason_detail=detail,
                    client_ip=caller.client_ip,
                    user_agent=caller.user_agent,
                    occurred_at=now(),
                )
            )

        if caller.client_ip is not None:
            if not (await self._limiter.take("validate", caller.client_ip)).allowed:
                return {"ok": False, "reason": "rate_limited"}
        try:
            parsed = self._keys.parse(request.key)
        except KeyFormatError as exc:
            record("bad_format", exc.detail, None, None)
            return {"ok": False, "reason": "bad_format"}
        license_id, product_id = str(parsed.license_id), str(parsed.product_id)
        hashed = fingerprint_hash_hex(fingerprint) if fingerprint is not None else None

        found = await self._reader.lookup(license_id, hashed)
        if not self._keys.verified(request.key, parsed, found.issuer):
            record("bad_signature", "signature verification failed", license_id, product_id)
            return {"ok": False, "reason": "bad_signature"}
        if caller.client_ip is None:
            if not (await self._limiter.take("validate", license_id)).allowed:
                return {"ok": False, "reason": "rate_limited"}
        row = found.license
        if row is None or found.product_slug is None:
            record("not_found", "no license with this id", license_id, product_id)
            return {"ok": False, "reason": "not_found"}

        at = now()
        outcome = license_verdict(row, found.product_slug, parsed, requested_slug, fingerprint, at)
        if isinstance(outcome, Verdict):
            record(outcome.reason, outcome.detail, row.id, row.product_id)
            return failure_body(outcome)

        machine_id: str | None = None
        if fingerprint is not None and hashed is not None:
            if found.active_machine_id is not None:
                machine_id = found.active_machine_id
                self._writes.machine_seen(machine_id, at, caller.client_ip)
            else:
                info = MachineInfo(
                    fingerprint=fingerprint,
                    fingerprint_hash=hashed,
                    hostname=request.hostname or None,
                    platform=request.platform or None,
                    client_ip=caller.client_ip,
                )
                binding = await self._bind(row.id, found.allow_repeat_trials, info, at)
                if not binding.ok:
                    assert binding.reason is not None
                    if binding.reason != "rate_limited":
                        record(binding.reason, binding.detail, row.id, row.product_id)
                    fields = (
                        {
                            "license_id": row.id,
                            "product_id": row.product_id,
                            "max_machines": row.max_machines,
                        }
                        if binding.reason == "too_many_machines"
                        else {}
                    )
                    return failure_body(Verdict(binding.reason, binding.detail, fields))
                machine_id = binding.machine_id

        refreshed = None if key_is_current(parsed, row) else license_key(row, found.issuer)
        detail = "in_grace_period" if outcome.in_grace else None
        record("ok", detail, row.id, row.product_id, machine_id)
        return success_body(row, found.product_slug, outcome, machine_id, refreshed)

    async def _bind(
        self, license_id: str, allow_repeat_trials: bool, info: MachineInfo, at: datetime
    ) -> Binding:
        async with self._db.write() as session:
            locked = await lock_license(session, license_id)
            return await bind(
                session,
                self._limiter,
                locked,
                allow_repeat_trials,
                info,
                at,
                single_seat_reason="fingerprint_mismatch",
            )
