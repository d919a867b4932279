"""Licenses, machines and the validation log (data-model.md 3.4-3.6)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from keysat.db import Base, Id, Json, UTCDateTime

LICENSE_STATUSES = ("active", "suspended", "revoked")


class License(Base):
    __tablename__ = "licenses"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'revoked')", name="ck_licenses_status"
        ),
        sa.CheckConstraint("grace_seconds >= 0", name="ck_licenses_grace"),
        sa.CheckConstraint("max_machines >= 0", name="ck_licenses_max_machines"),
        sa.Index("ix_licenses_product_id", "product_id"),
        sa.Index("ix_licenses_policy_id", "policy_id"),
        sa.Index("ix_licenses_status", "status"),
        sa.Index("ix_licenses_expires_at", "expires_at"),
        sa.Index("ix_licenses_issued_at", "issued_at"),
        sa.Index("ix_licenses_buyer_email_lower", sa.func.lower(sa.column("buyer_email"))),
        sa.Index("ix_licenses_nostr_npub", "nostr_npub"),
        sa.Index("ix_licenses_product_trial", "product_id", "trial_started_at"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    product_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("products.id"))
    policy_id: Mapped[str | None] = mapped_column(Id, sa.ForeignKey("policies.id"), nullable=True)
    invoice_id: Mapped[str | None] = mapped_column(
        Id, sa.ForeignKey("invoices.id", use_alter=True), nullable=True, unique=True
    )
    status: Mapped[str] = mapped_column(sa.Text, default="active")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    grace_seconds: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    max_machines: Mapped[int] = mapped_column(sa.Integer, default=1)
    entitlements: Mapped[list[str]] = mapped_column(Json, default=list)
    is_trial: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    trial_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    buyer_email: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    nostr_npub: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    license_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revocation_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    suspension_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    fingerprint: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Machine(Base):
    __tablename__ = "machines"
    __table_args__ = (
        sa.Index(
            "uq_machines_active_fingerprint",
            "license_id",
            "fingerprint_hash",
            unique=True,
            sqlite_where=sa.text("deactivated_at IS NULL"),
            postgresql_where=sa.text("deactivated_at IS NULL"),
        ),
        sa.Index("ix_machines_license_id", "license_id"),
        sa.Index("ix_machines_last_heartbeat_at", "last_heartbeat_at"),
        sa.Index("ix_machines_fingerprint_hash", "fingerprint_hash"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    license_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("licenses.id", ondelete="CASCADE"))
    fingerprint: Mapped[str] = mapped_column(sa.Text)
    fingerprint_hash: Mapped[str] = mapped_column(sa.Text)
    hostname: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    platform: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    ip_last_seen: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    activated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deactivation_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class ValidationLog(Base):
    __tablename__ = "validation_log"
    __table_args__ = (
        sa.Index("ix_validation_log_occurred_at", "occurred_at"),
        sa.Index("ix_validation_log_license_occurred", "license_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    license_id: Mapped[str | None] = mapped_column(Id, nullable=True)
    product_id: Mapped[str | None] = mapped_column(Id, nullable=True)
    fingerprint: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    machine_id: Mapped[str | None] = mapped_column(Id, nullable=True)
    result: Mapped[str] = mapped_column(sa.Text)
    reason_detail: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    client_ip: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    user_agent: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
