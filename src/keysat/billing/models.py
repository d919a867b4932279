"""Invoices, discount codes and redemptions (data-model.md 3.3, 3.10, 3.11).

Licenses point at the invoice that created them."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from keysat.db import Base, Id, Json, UTCDateTime


class Invoice(Base):
    __tablename__ = "invoices"
    __table_args__ = (
        sa.CheckConstraint(
            "kind IN ('purchase', 'renewal', 'tier_change')", name="ck_invoices_kind"
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'settled', 'expired', 'invalid')", name="ck_invoices_status"
        ),
        sa.CheckConstraint(
            "provider_kind IN ('none', 'sandbox', 'btcpay', 'zaprite')", name="ck_invoices_provider"
        ),
        sa.CheckConstraint(
            "rail IS NULL OR rail IN ('lightning', 'onchain', 'card')", name="ck_invoices_rail"
        ),
        sa.CheckConstraint("amount_sats >= 0", name="ck_invoices_amount"),
        sa.CheckConstraint("base_price_sats >= 0", name="ck_invoices_base_price"),
        sa.CheckConstraint("discount_applied_sats >= 0", name="ck_invoices_discount"),
        sa.CheckConstraint(
            "(kind = 'purchase') = (subject_license_id IS NULL)", name="ck_invoices_subject"
        ),
        sa.CheckConstraint(
            "kind <> 'renewal' OR (subscription_id IS NOT NULL AND cycle_number IS NOT NULL)",
            name="ck_invoices_renewal",
        ),
        sa.CheckConstraint(
            "provider_kind <> 'none' OR (status = 'settled' AND amount_sats = 0)",
            name="ck_invoices_free",
        ),
        sa.Index("ix_invoices_status_created", "status", "created_at"),
        sa.Index("ix_invoices_provider_id", "payment_provider_id"),
        sa.Index("ix_invoices_subject_license", "subject_license_id"),
        sa.Index("ix_invoices_subscription", "subscription_id"),
        sa.Index("ix_invoices_product", "product_id"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.Text, default="pending")
    product_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("products.id"))
    policy_id: Mapped[str | None] = mapped_column(Id, sa.ForeignKey("policies.id"), nullable=True)
    amount_sats: Mapped[int] = mapped_column(sa.BigInteger)
    base_price_sats: Mapped[int] = mapped_column(sa.BigInteger)
    discount_applied_sats: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    rail: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    provider_kind: Mapped[str] = mapped_column(sa.Text)
    payment_provider_id: Mapped[str | None] = mapped_column(
        Id,
        sa.ForeignKey(
            "payment_providers.id", ondelete="SET NULL", name="fk_invoices_payment_provider_id"
        ),
        nullable=True,
    )
    provider_invoice_id: Mapped[str] = mapped_column(sa.Text, unique=True)
    checkout_url: Mapped[str] = mapped_column(sa.Text, default="")
    buyer_email: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    buyer_note: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    listed_currency: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    listed_value: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    exchange_rate_centibps: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    exchange_rate_source: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    subject_license_id: Mapped[str | None] = mapped_column(
        Id, sa.ForeignKey("licenses.id", use_alter=True), nullable=True
    )
    subscription_id: Mapped[str | None] = mapped_column(
        Id,
        sa.ForeignKey("subscriptions.id", use_alter=True, name="fk_invoices_subscription_id"),
        nullable=True,
    )
    cycle_number: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DiscountCode(Base):
    __tablename__ = "discount_codes"
    __table_args__ = (
        sa.CheckConstraint(
            "kind IN ('percent', 'fixed_sats', 'set_price', 'free_license')",
            name="ck_discount_codes_kind",
        ),
        sa.CheckConstraint(
            "discount_currency IN ('SAT', 'USD', 'EUR')", name="ck_discount_codes_currency"
        ),
        sa.CheckConstraint("amount >= 0", name="ck_discount_codes_amount"),
        sa.CheckConstraint("kind <> 'percent' OR amount <= 10000", name="ck_discount_codes_bps"),
        sa.CheckConstraint("max_uses IS NULL OR max_uses > 0", name="ck_discount_codes_max_uses"),
        sa.CheckConstraint("used_count >= 0", name="ck_discount_codes_used_count"),
        sa.Index("ix_discount_codes_active", "active"),
        sa.Index("ix_discount_codes_product", "applies_to_product_id"),
        sa.Index("ix_discount_codes_expires_at", "expires_at"),
        sa.Index(
            "ix_discount_codes_featured",
            "applies_to_product_id",
            "created_at",
            sqlite_where=sa.text("featured AND active"),
            postgresql_where=sa.text("featured AND active"),
        ),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    code: Mapped[str] = mapped_column(sa.Text, unique=True)
    kind: Mapped[str] = mapped_column(sa.Text)
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    discount_currency: Mapped[str] = mapped_column(sa.Text, default="SAT")
    max_uses: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    used_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    applies_to_product_id: Mapped[str | None] = mapped_column(
        Id, sa.ForeignKey("products.id"), nullable=True
    )
    applies_to_policy_ids: Mapped[list[str]] = mapped_column(Json, default=list)
    referrer_label: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    featured: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DiscountRedemption(Base):
    __tablename__ = "discount_redemptions"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('pending', 'redeemed', 'cancelled')", name="ck_discount_redemptions_status"
        ),
        sa.CheckConstraint(
            "discount_applied_sats >= 0 AND base_price_sats >= 0 AND final_price_sats >= 0",
            name="ck_discount_redemptions_amounts",
        ),
        sa.Index("ix_discount_redemptions_code", "code_id"),
        sa.Index("ix_discount_redemptions_license", "license_id"),
        sa.Index("ix_discount_redemptions_status_created", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    code_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("discount_codes.id"))
    invoice_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("invoices.id"), unique=True)
    license_id: Mapped[str | None] = mapped_column(Id, sa.ForeignKey("licenses.id"), nullable=True)
    status: Mapped[str] = mapped_column(sa.Text, default="pending")
    discount_applied_sats: Mapped[int] = mapped_column(sa.BigInteger)
    base_price_sats: Mapped[int] = mapped_column(sa.BigInteger)
    final_price_sats: Mapped[int] = mapped_column(sa.BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
