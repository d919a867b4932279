"""Merchant profiles, settings, the audit log and job leases (data-model.md 3.14, 3.15,
3.17, 3.19)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from keysat.db import Base, Id, Json, UTCDateTime


class MerchantProfile(Base):
    __tablename__ = "merchant_profiles"
    __table_args__ = (
        sa.Index(
            "uq_merchant_profiles_default",
            "is_default",
            unique=True,
            sqlite_where=sa.text("is_default"),
            postgresql_where=sa.text("is_default"),
        ),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)
    legal_name: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    support_url: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    support_email: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    brand_color: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    post_purchase_redirect_url: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    is_default: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    smtp_host: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    smtp_port: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    smtp_username: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    smtp_password: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    smtp_from_address: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    smtp_from_name: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    smtp_use_starttls: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    value: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_occurred_at", "occurred_at"),
        sa.Index("ix_audit_log_target", "target_kind", "target_id"),
        sa.Index("ix_audit_log_action", "action"),
    )

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    actor_kind: Mapped[str] = mapped_column(sa.Text)
    actor_hash: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    actor_id: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    action: Mapped[str] = mapped_column(sa.Text)
    target_kind: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    target_id: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    request_ip: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    user_agent: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobLease(Base):
    """One row per background job: who holds it now, and how its last tick went."""

    __tablename__ = "job_leases"
    __table_args__ = (
        sa.CheckConstraint(
            "last_status IS NULL OR last_status IN ('ok', 'error')", name="ck_job_leases_status"
        ),
    )

    name: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    holder: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
