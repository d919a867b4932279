"""Audit log writes and reads (admin-api.md 20)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import Actor
from keysat.clock import clock, now
from keysat.errors import bad_request
from keysat.operator.models import AuditEntry, MerchantProfile, Setting

OPERATOR_NAME = "operator_name"
OPERATOR_NAME_MAX = 200


def record_audit(
    session: AsyncSession,
    actor: Actor,
    action: str,
    target_kind: str | None,
    target_id: str | None,
    details: dict[str, Any],
) -> None:
    """Add an audit row to the caller's transaction, so it commits with the change."""
    session.add(
        AuditEntry(
            actor_kind=actor.kind,
            actor_hash=actor.hash,
            actor_id=actor.id,
            action=action,
            target_kind=target_kind,
            target_id=target_id,
            request_ip=actor.request_ip,
            user_agent=actor.user_agent,
            details=details,
            # Audit times are operational: the system clock, which the sandbox test clock
            # never moves (billing.md 9.3).
            occurred_at=clock.real_now(),
        )
    )


async def list_audit(
    session: AsyncSession,
    *,
    limit: int,
    action: str | None,
    target_kind: str | None,
    target_id: str | None,
    before_id: int | None,
) -> Sequence[AuditEntry]:
    query = sa.select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if target_kind is not None:
        query = query.where(AuditEntry.target_kind == target_kind)
    if target_id is not None:
        query = query.where(AuditEntry.target_id == target_id)
    if before_id is not None:
        query = query.where(AuditEntry.id < before_id)
    return (await session.execute(query)).scalars().all()


async def effective_operator_name(session: AsyncSession, fallback: str | None) -> str | None:
    """The stored setting wins; then KEYSAT_OPERATOR_NAME; else none."""
    return await get_setting(session, OPERATOR_NAME) or fallback


async def set_operator_name(session: AsyncSession, actor: Actor, name: str) -> str | None:
    """admin-api.md 15.2: trimmed; empty clears the setting, so the environment's name
    shows again."""
    value = name.strip()
    if len(value) > OPERATOR_NAME_MAX:
        raise bad_request(f"name is too long (max {OPERATOR_NAME_MAX} characters)")
    if value:
        await put_setting(session, OPERATOR_NAME, value)
    else:
        await delete_setting(session, OPERATOR_NAME)
    record_audit(
        session, actor, "operator_name.set", "setting", OPERATOR_NAME, {"value": value or None}
    )
    return value or None


async def get_setting(session: AsyncSession, key: str) -> str | None:
    stored = await session.get(Setting, key)
    return stored.value if stored is not None else None


async def put_setting(session: AsyncSession, key: str, value: str) -> None:
    stored = await session.get(Setting, key)
    if stored is None:
        session.add(Setting(key=key, value=value, updated_at=now()))
    else:
        stored.value = value
        stored.updated_at = now()


async def delete_setting(session: AsyncSession, key: str) -> None:
    await session.execute(sa.delete(Setting).where(Setting.key == key))


async def default_profile(session: AsyncSession) -> MerchantProfile:
    query = sa.select(MerchantProfile).where(MerchantProfile.is_default.is_(True))
    return (await session.execute(query)).scalar_one()


async def profile_for(session: AsyncSession, profile_id: str | None) -> MerchantProfile | None:
    """A product's merchant profile: the one named, or the default when none is named."""
    if profile_id is None:
        return await default_profile(session)
    return await session.get(MerchantProfile, profile_id)
