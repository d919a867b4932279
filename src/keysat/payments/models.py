"""Payment providers, rail preferences, BTCPay authorize states and the sandbox's own
invoice store (data-model.md 3.17, 3.19)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from keysat.db import Base, Id, Json, UTCDateTime


class PaymentProvider(Base):
    __tablename__ = "payment_providers"
    __table_args__ = (
        sa.UniqueConstraint("merchant_profile_id", "kind", name="uq_payment_providers_kind"),
        sa.CheckConstraint("kind IN ('btcpay', 'zaprite')", name="ck_payment_providers_kind"),
        sa.CheckConstraint(
            "network IS NULL OR network IN ('mainnet', 'testnet', 'regtest', 'unknown')",
            name="ck_payment_providers_network",
        ),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    merchant_profile_id: Mapped[str] = mapped_column(Id, sa.ForeignKey("merchant_profiles.id"))
    kind: Mapped[str] = mapped_column(sa.Text)
    label: Mapped[str] = mapped_column(sa.Text)
    api_key: Mapped[str] = mapped_column(sa.Text)
    base_url: Mapped[str] = mapped_column(sa.Text)
    store_id: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    webhook_id: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    webhook_secret: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    network: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RailPreference(Base):
    __tablename__ = "merchant_profile_rail_preferences"
    __table_args__ = (
        sa.CheckConstraint(
            "rail IN ('lightning', 'onchain', 'card')", name="ck_rail_preferences_rail"
        ),
    )

    merchant_profile_id: Mapped[str] = mapped_column(
        Id, sa.ForeignKey("merchant_profiles.id", ondelete="CASCADE"), primary_key=True
    )
    rail: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    payment_provider_id: Mapped[str] = mapped_column(
        Id, sa.ForeignKey("payment_providers.id", ondelete="CASCADE")
    )


class BTCPayAuthorizeState(Base):
    __tablename__ = "btcpay_authorize_states"
    __table_args__ = (sa.Index("ix_btcpay_authorize_states_created", "created_at"),)

    state_token: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    merchant_profile_id: Mapped[str] = mapped_column(
        Id, sa.ForeignKey("merchant_profiles.id", ondelete="CASCADE")
    )
    label: Mapped[str] = mapped_column(sa.Text)
    scoped_initiator: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    initiator_actor_kind: Mapped[str] = mapped_column(sa.Text)
    initiator_actor_hash: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    initiator_actor_id: Mapped[str | None] = mapped_column(sa.Text, nullable=True)


class SandboxInvoice(Base):
    """The sandbox provider's own store. Like a real provider it knows our invoice only by
    its external order id, and stores its invoice before ours exists: no foreign key."""

    __tablename__ = "sandbox_invoices"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('new', 'settled', 'expired', 'invalid')", name="ck_sandbox_invoices_status"
        ),
        sa.CheckConstraint("amount_value > 0", name="ck_sandbox_invoices_amount"),
    )

    id: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    external_order_id: Mapped[str] = mapped_column(sa.Text, unique=True)
    amount_currency: Mapped[str] = mapped_column(sa.Text)
    amount_value: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.Text, default="new")
    redirect_url: Mapped[str] = mapped_column(sa.Text)
    invoice_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)
    buyer_email: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
