"""Products and policies (data-model.md 3.1, 3.2)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from keysat.db import Base, Id, Json, UTCDateTime


class Product(Base):
    __tablename__ = "products"
    __table_args__ = (
        sa.CheckConstraint(
            "price_currency IN ('SAT', 'BTC', 'USD', 'EUR')", name="ck_products_currency"
        ),
        sa.CheckConstraint("price_value >= 0", name="ck_products_price_value"),
        sa.CheckConstraint("price_sats >= 0", name="ck_products_price_sats"),
        sa.Index("ix_products_active", "active"),
        sa.Index("ix_products_merchant_profile_id", "merchant_profile_id"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    slug: Mapped[str] = mapped_column(sa.Text, unique=True)
    name: Mapped[str] = mapped_column(sa.Text)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    price_currency: Mapped[str] = mapped_column(sa.Text, default="SAT")
    price_value: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    price_sats: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    product_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)
    entitlements_catalog: Mapped[list[dict[str, str]] | None] = mapped_column(Json, nullable=True)
    merchant_profile_id: Mapped[str | None] = mapped_column(
        Id, sa.ForeignKey("merchant_profiles.id"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Policy(Base):
    __tablename__ = "policies"
    __table_args__ = (
        sa.UniqueConstraint("product_id", "slug", name="uq_policies_product_slug"),
        sa.CheckConstraint("duration_seconds >= 0", name="ck_policies_duration"),
        sa.CheckConstraint("grace_seconds >= 0", name="ck_policies_grace"),
        sa.CheckConstraint("max_machines >= 0", name="ck_policies_max_machines"),
        sa.CheckConstraint(
            "price_sats_override IS NULL OR price_sats_override >= 0", name="ck_policies_override"
        ),
        sa.CheckConstraint("tip_pct_bps BETWEEN 0 AND 10000", name="ck_policies_tip_pct"),
        sa.CheckConstraint(
            "renewal_period_days BETWEEN 0 AND 1830", name="ck_policies_renewal_period"
        ),
        sa.CheckConstraint("grace_period_days BETWEEN 0 AND 90", name="ck_policies_grace_days"),
        sa.CheckConstraint("trial_days >= 0", name="ck_policies_trial_days"),
        sa.CheckConstraint(
            "tier_rank IS NULL OR tier_rank BETWEEN 0 AND 1000", name="ck_policies_tier_rank"
        ),
        sa.Index("ix_policies_product_id", "product_id"),
        sa.Index("ix_policies_product_rank", "product_id", "tier_rank"),
        sa.Index("ix_policies_active_public", "active", "public"),
        sa.Index("ix_policies_archived_at", "archived_at"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    product_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("products.id"))
    name: Mapped[str] = mapped_column(sa.Text)
    slug: Mapped[str] = mapped_column(sa.Text)
    duration_seconds: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    grace_seconds: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    max_machines: Mapped[int] = mapped_column(sa.Integer, default=1)
    is_trial: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    price_sats_override: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    entitlements: Mapped[list[str]] = mapped_column(Json, default=list)
    policy_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    public: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    tip_recipient: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    tip_pct_bps: Mapped[int] = mapped_column(sa.Integer, default=0)
    tip_label: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    is_recurring: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    renewal_period_days: Mapped[int] = mapped_column(sa.Integer, default=0)
    grace_period_days: Mapped[int] = mapped_column(sa.Integer, default=7)
    trial_days: Mapped[int] = mapped_column(sa.Integer, default=0)
    tier_rank: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    allow_repeat_trials: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
