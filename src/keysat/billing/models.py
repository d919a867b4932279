"""Invoices (data-model.md 3.3). Licenses point at the invoice that created them."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from keysat.db import Base, Id, UTCDateTime


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
    payment_provider_id: Mapped[str | None] = mapped_column(Id, nullable=True)
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
    subscription_id: Mapped[str | None] = mapped_column(Id, nullable=True)
    cycle_number: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
