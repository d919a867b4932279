"""Subscriptions, their cycles and tier changes (data-model.md 3.7-3.9)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from keysat.db import Base, Id, UTCDateTime


class Subscription(Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('active', 'past_due', 'cancelled', 'lapsed')",
            name="ck_subscriptions_status",
        ),
        sa.CheckConstraint("period_days > 0", name="ck_subscriptions_period"),
        sa.CheckConstraint("listed_value >= 0", name="ck_subscriptions_listed_value"),
        sa.CheckConstraint("consecutive_failures >= 0", name="ck_subscriptions_failures"),
        sa.CheckConstraint(
            "provider_kind IS NULL OR provider_kind IN ('sandbox', 'btcpay', 'zaprite')",
            name="ck_subscriptions_provider_kind",
        ),
        sa.Index(
            "ix_subscriptions_due",
            "next_attempt_at",
            sqlite_where=sa.text("status IN ('active', 'past_due') AND open_invoice_id IS NULL"),
            postgresql_where=sa.text(
                "status IN ('active', 'past_due') AND open_invoice_id IS NULL"
            ),
        ),
        sa.Index(
            "ix_subscriptions_lapse",
            "current_period_end",
            sqlite_where=sa.text("status = 'past_due'"),
            postgresql_where=sa.text("status = 'past_due'"),
        ),
        sa.Index("ix_subscriptions_status", "status"),
        sa.Index("ix_subscriptions_policy", "policy_id"),
        sa.Index("ix_subscriptions_provider", "payment_provider_id"),
        sa.Index("ix_subscriptions_profile", "merchant_profile_id"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    license_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("licenses.id"), unique=True)
    policy_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("policies.id"))
    product_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("products.id"))
    status: Mapped[str] = mapped_column(sa.Text)
    period_days: Mapped[int] = mapped_column(sa.Integer)
    listed_currency: Mapped[str] = mapped_column(sa.Text)
    listed_value: Mapped[int] = mapped_column(sa.BigInteger)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    current_period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    current_period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    open_invoice_id: Mapped[str | None] = mapped_column(
        Id,
        sa.ForeignKey("invoices.id", use_alter=True, name="fk_subscriptions_open_invoice"),
        nullable=True,
    )
    consecutive_failures: Mapped[int] = mapped_column(sa.Integer, default=0)
    last_renewal_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancellation_reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    lapsed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    merchant_profile_id: Mapped[str | None] = mapped_column(
        Id, sa.ForeignKey("merchant_profiles.id"), nullable=True
    )
    payment_provider_id: Mapped[str | None] = mapped_column(
        Id, sa.ForeignKey("payment_providers.id", ondelete="SET NULL"), nullable=True
    )
    provider_kind: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    zaprite_contact_id: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    zaprite_payment_profile_id: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    zaprite_payment_profile_method: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    zaprite_payment_profile_expires_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SubscriptionCycle(Base):
    __tablename__ = "subscription_invoices"
    __table_args__ = (
        sa.UniqueConstraint("subscription_id", "cycle_number", name="uq_subscription_cycles"),
        sa.CheckConstraint("cycle_number >= 1", name="ck_subscription_cycles_number"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    subscription_id: Mapped[str] = mapped_column(
        Id, sa.ForeignKey("subscriptions.id", ondelete="CASCADE")
    )
    cycle_number: Mapped[int] = mapped_column(sa.Integer)
    invoice_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("invoices.id"), unique=True)
    cycle_start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cycle_end_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TierChange(Base):
    __tablename__ = "tier_changes"
    __table_args__ = (
        sa.CheckConstraint(
            "direction IN ('upgrade', 'downgrade')", name="ck_tier_changes_direction"
        ),
        sa.CheckConstraint("actor IN ('buyer', 'admin')", name="ck_tier_changes_actor"),
        sa.CheckConstraint("proration_charge_value >= 0", name="ck_tier_changes_charge"),
        sa.Index(
            "uq_tier_changes_invoice",
            "invoice_id",
            unique=True,
            sqlite_where=sa.text("invoice_id IS NOT NULL"),
            postgresql_where=sa.text("invoice_id IS NOT NULL"),
        ),
        sa.Index("ix_tier_changes_license_created", "license_id", "created_at"),
        sa.Index("ix_tier_changes_created", "created_at"),
        sa.Index(
            "ix_tier_changes_scheduled",
            "license_id",
            "effective_at",
            sqlite_where=sa.text("invoice_id IS NULL AND applied_at IS NULL"),
            postgresql_where=sa.text("invoice_id IS NULL AND applied_at IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    license_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("licenses.id"))
    from_policy_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("policies.id"))
    to_policy_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("policies.id"))
    direction: Mapped[str] = mapped_column(sa.Text)
    listed_currency: Mapped[str] = mapped_column(sa.Text)
    proration_charge_value: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    invoice_id: Mapped[str | None] = mapped_column(Id, sa.ForeignKey("invoices.id"), nullable=True)
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(sa.Text)
    reason: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
