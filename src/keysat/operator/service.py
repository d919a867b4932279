"""Audit log writes and reads (admin-api.md 20)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from keysat.access.actor import Actor
from keysat.clock import now
from keysat.operator.models import AuditEntry, Setting


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
            occurred_at=now(),
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
    stored = await session.get(Setting, "operator_name")
    if stored is not None and stored.value:
        return stored.value
    return fallback
