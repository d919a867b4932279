"""Machine binding: one model for every seat count (public-api.md 8.3, 9; DECISIONS 10, 11).

Binding runs inside a write transaction that holds the license row (FOR UPDATE on
PostgreSQL, BEGIN IMMEDIATE on SQLite), so counting seats and inserting the new machine
are atomic per license and the cap holds under concurrent activations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import Actor
from keysat.access.ratelimit import RateLimiter
from keysat.catalog.models import Product
from keysat.clock import now
from keysat.db import Database
from keysat.errors import bad_request, not_found
from keysat.issuer.service import IssuerKeys
from keysat.keys import KeyFormatError, ParsedKey, fingerprint_hash_hex, parse_key
from keysat.licensing.keyauth import lock_license, lookup_key, signature_valid
from keysat.licensing.models import License, Machine
from keysat.licensing.schemas import MachineRequest
from keysat.operator.service import record_audit
from keysat.webhooks.service import record_event
from keysat.wire import new_id, normalize_id


@dataclass(frozen=True)
class Binding:
    reason: str | None
    machine_id: str | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class MachineInfo:
    fingerprint: str
    fingerprint_hash: str
    hostname: str | None
    platform: str | None
    client_ip: str | None


async def active_machine(
    session: AsyncSession, license_id: str, fingerprint_hash: str
) -> Machine | None:
    query = sa.select(Machine).where(
        Machine.license_id == license_id,
        Machine.fingerprint_hash == fingerprint_hash,
        Machine.deactivated_at.is_(None),
    )
    return (await session.execute(query)).scalar_one_or_none()


async def active_count(session: AsyncSession, license_id: str) -> int:
    query = sa.select(sa.func.count()).where(
        Machine.license_id == license_id, Machine.deactivated_at.is_(None)
    )
    return int((await session.execute(query)).scalar_one())


async def trial_used_elsewhere(
    session: AsyncSession, license_row: License, fingerprint_hash: str
) -> bool:
    """Has this machine ever been bound to another trial-issued license of the product?"""
    query = (
        sa.select(Machine.id)
        .join(License, License.id == Machine.license_id)
        .where(
            Machine.fingerprint_hash == fingerprint_hash,
            License.product_id == license_row.product_id,
            License.id != license_row.id,
            License.trial_started_at.is_not(None),
        )
        .limit(1)
    )
    return (await session.execute(query)).first() is not None


def refresh(machine: Machine, info: MachineInfo, at: datetime) -> None:
    machine.last_heartbeat_at = at
    if info.client_ip is not None:
        machine.ip_last_seen = info.client_ip


async def bind(
    session: AsyncSession,
    limiter: RateLimiter,
    license_row: License,
    allow_repeat_trials: bool,
    info: MachineInfo,
    at: datetime,
    *,
    single_seat_reason: str,
) -> Binding:
    """Refresh the machine, or create it if a seat is free. The license row must be locked."""
    existing = await active_machine(session, license_row.id, info.fingerprint_hash)
    if existing is not None:
        refresh(existing, info, at)
        return Binding(reason=None, machine_id=existing.id)
    cap = license_row.max_machines
    if cap > 0 and await active_count(session, license_row.id) >= cap:
        reason = single_seat_reason if cap == 1 else "too_many_machines"
        return Binding(reason=reason, detail=f"cap {cap} already reached")
    if (
        license_row.is_trial
        and not allow_repeat_trials
        and await trial_used_elsewhere(session, license_row, info.fingerprint_hash)
    ):
        return Binding(reason="trial_already_used", detail="this machine already used a trial")
    decision = await limiter.take_in(session, "activate", license_row.id)
    if not decision.allowed:
        return Binding(reason="rate_limited", detail="activation rate limit")
    machine = Machine(
        id=new_id(),
        license_id=license_row.id,
        fingerprint=info.fingerprint,
        fingerprint_hash=info.fingerprint_hash,
        hostname=info.hostname,
        platform=info.platform,
        ip_last_seen=info.client_ip,
        activated_at=at,
        last_heartbeat_at=at,
    )
    session.add(machine)
    await session.flush()
    record_event(
        session,
        "machine.activated",
        {
            "license_id": license_row.id,
            "machine_id": machine.id,
            "fingerprint_hash": info.fingerprint_hash,
        },
    )
    return Binding(reason=None, machine_id=machine.id)


def deactivate(machine: Machine, reason: str, at: datetime) -> None:
    machine.deactivated_at = at
    machine.deactivation_reason = reason


class MachineEndpoints:
    """The three SDK machine calls (public-api.md 9) and the admin machine views (6)."""

    def __init__(self, db: Database, issuer_keys: IssuerKeys, limiter: RateLimiter) -> None:
        self._db = db
        self._issuer_keys = issuer_keys
        self._limiter = limiter

    async def _verified(self, request: MachineRequest) -> tuple[ParsedKey, str]:
        fingerprint = request.fingerprint
        if not fingerprint:
            raise bad_request("fingerprint is required")
        try:
            parsed = parse_key(request.key)
        except KeyFormatError as exc:
            raise bad_request(f"bad key: {exc.detail}") from None
        async with self._db.read() as session:
            issuer = await self._issuer_keys.current(session)
        if not signature_valid(issuer, parsed):
            raise bad_request("signature verification failed")
        return parsed, fingerprint

    async def activate(self, request: MachineRequest, client_ip: str | None) -> dict[str, Any]:
        parsed, fingerprint = await self._verified(request)
        license_id = str(parsed.license_id)
        info = MachineInfo(
            fingerprint=fingerprint,
            fingerprint_hash=fingerprint_hash_hex(fingerprint),
            hostname=request.hostname or None,
            platform=request.platform or None,
            client_ip=client_ip,
        )
        at = now()
        async with self._db.write() as session:
            found = await lookup_key(session, self._issuer_keys, license_id)
            if found.license is None:
                raise not_found(f"license {license_id}")
            row = await lock_license(session, license_id)
            if str(parsed.product_id) != row.product_id:
                return activate_body(None, 0, row.max_machines, "invalid_state")
            if row.status != "active":
                reason = row.status if row.status in ("revoked", "suspended") else "invalid_state"
                return activate_body(None, 0, row.max_machines, reason)
            if (
                parsed.is_fingerprint_bound
                and parsed.fingerprint_hash.hex() != info.fingerprint_hash
            ):
                count = await active_count(session, row.id)
                return activate_body(None, count, row.max_machines, "fingerprint_mismatch")
            binding = await bind(
                session,
                self._limiter,
                row,
                found.allow_repeat_trials,
                info,
                at,
                single_seat_reason="too_many_machines",
            )
            count = await active_count(session, row.id)
        return activate_body(binding.machine_id, count, row.max_machines, binding.reason)

    async def heartbeat(self, request: MachineRequest, client_ip: str | None) -> dict[str, Any]:
        parsed, fingerprint = await self._verified(request)
        license_id = str(parsed.license_id)
        if not (await self._limiter.take("heartbeat", license_id)).allowed:
            return {"ok": False, "reason": "rate_limited"}
        info = MachineInfo(fingerprint, fingerprint_hash_hex(fingerprint), None, None, client_ip)
        async with self._db.write() as session:
            machine = await active_machine(session, license_id, info.fingerprint_hash)
            if machine is None:
                return {"ok": False, "reason": "not_activated"}
            refresh(machine, info, now())
            return {"ok": True, "machine_id": machine.id}

    async def deactivate(self, request: MachineRequest) -> dict[str, Any]:
        parsed, fingerprint = await self._verified(request)
        license_id = str(parsed.license_id)
        async with self._db.write() as session:
            machine = await active_machine(session, license_id, fingerprint_hash_hex(fingerprint))
            if machine is None:
                return {"ok": False, "reason": "not_found"}
            reason = request.reason or "client_requested"
            deactivate(machine, reason, now())
            record_event(
                session,
                "machine.deactivated",
                {"license_id": license_id, "machine_id": machine.id, "reason": reason},
            )
        return {"ok": True}


def activate_body(
    machine_id: str | None, count: int, max_machines: int, reason: str | None
) -> dict[str, Any]:
    return {
        "ok": reason is None,
        "machine_id": machine_id,
        "active_count": count,
        "max_machines": max_machines,
        "reason": reason,
    }


async def admin_list(
    session: AsyncSession,
    *,
    license_id: str | None,
    product_id: str | None,
    include_inactive: bool,
    limit: int,
) -> list[tuple[Machine, License, str, str]]:
    query = (
        sa.select(Machine, License, Product.slug, Product.name)
        .join(License, License.id == Machine.license_id)
        .join(Product, Product.id == License.product_id)
        .order_by(Machine.last_heartbeat_at.desc(), Machine.id)
        .limit(limit)
    )
    if license_id is not None:
        query = query.where(Machine.license_id == license_id)
    if product_id is not None:
        query = query.where(License.product_id == product_id)
    if not include_inactive:
        query = query.where(Machine.deactivated_at.is_(None))
    return [(row[0], row[1], row[2], row[3]) for row in (await session.execute(query)).all()]


async def admin_deactivate(
    session: AsyncSession, actor: Actor, machine_id: str, reason: str | None
) -> None:
    canonical = normalize_id(machine_id)
    machine = await session.get(Machine, canonical, with_for_update=True) if canonical else None
    if machine is None:
        raise not_found(f"machine {machine_id}")
    if machine.deactivated_at is not None:
        raise not_found(f"active machine {machine_id}")
    text = reason.strip() if reason and reason.strip() else "admin deactivate"
    deactivate(machine, text, now())
    record_audit(
        session,
        actor,
        "machine.deactivate",
        "machine",
        machine.id,
        {"license_id": machine.license_id, "reason": text},
    )
    record_event(
        session,
        "machine.deactivated",
        {"license_id": machine.license_id, "machine_id": machine.id, "reason": text},
    )
