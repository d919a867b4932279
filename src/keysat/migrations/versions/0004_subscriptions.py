"""Subscriptions, their cycles and tier changes.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from keysat.db import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscriptions",
        sa.Column(
            "id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "license_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "policy_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "product_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("period_days", sa.Integer(), nullable=False),
        sa.Column("listed_currency", sa.Text(), nullable=False),
        sa.Column("listed_value", sa.BigInteger(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("current_period_start", UTCDateTime(), nullable=False),
        sa.Column("current_period_end", UTCDateTime(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column(
            "open_invoice_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("last_renewal_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("cancelled_at", UTCDateTime(), nullable=True),
        sa.Column("cancellation_reason", sa.Text(), nullable=True),
        sa.Column("lapsed_at", UTCDateTime(), nullable=True),
        sa.Column(
            "merchant_profile_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "payment_provider_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column("provider_kind", sa.Text(), nullable=True),
        sa.Column("zaprite_contact_id", sa.Text(), nullable=True),
        sa.Column("zaprite_payment_profile_id", sa.Text(), nullable=True),
        sa.Column("zaprite_payment_profile_method", sa.Text(), nullable=True),
        sa.Column("zaprite_payment_profile_expires_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "provider_kind IS NULL OR provider_kind IN ('sandbox', 'btcpay', 'zaprite')",
            name="ck_subscriptions_provider_kind",
        ),
        sa.CheckConstraint(
            "status IN ('active', 'past_due', 'cancelled', 'lapsed')",
            name="ck_subscriptions_status",
        ),
        sa.CheckConstraint("consecutive_failures >= 0", name="ck_subscriptions_failures"),
        sa.CheckConstraint("listed_value >= 0", name="ck_subscriptions_listed_value"),
        sa.CheckConstraint("period_days > 0", name="ck_subscriptions_period"),
        sa.ForeignKeyConstraint(
            ["license_id"],
            ["licenses.id"],
        ),
        sa.ForeignKeyConstraint(
            ["merchant_profile_id"],
            ["merchant_profiles.id"],
        ),
        sa.ForeignKeyConstraint(
            ["open_invoice_id"],
            ["invoices.id"],
            name="fk_subscriptions_open_invoice",
        ),
        sa.ForeignKeyConstraint(
            ["payment_provider_id"], ["payment_providers.id"], ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("license_id"),
    )
    op.create_index(
        "ix_subscriptions_due",
        "subscriptions",
        ["next_attempt_at"],
        unique=False,
        sqlite_where=sa.text("status IN ('active', 'past_due') AND open_invoice_id IS NULL"),
        postgresql_where=sa.text("status IN ('active', 'past_due') AND open_invoice_id IS NULL"),
    )
    op.create_index(
        "ix_subscriptions_lapse",
        "subscriptions",
        ["current_period_end"],
        unique=False,
        sqlite_where=sa.text("status = 'past_due'"),
        postgresql_where=sa.text("status = 'past_due'"),
    )
    op.create_index("ix_subscriptions_policy", "subscriptions", ["policy_id"], unique=False)
    op.create_index(
        "ix_subscriptions_profile", "subscriptions", ["merchant_profile_id"], unique=False
    )
    op.create_index(
        "ix_subscriptions_provider", "subscriptions", ["payment_provider_id"], unique=False
    )
    op.create_index("ix_subscriptions_status", "subscriptions", ["status"], unique=False)
    op.create_table(
        "tier_changes",
        sa.Column(
            "id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "license_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "from_policy_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "to_policy_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("listed_currency", sa.Text(), nullable=False),
        sa.Column("proration_charge_value", sa.BigInteger(), nullable=False),
        sa.Column(
            "invoice_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column("effective_at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("applied_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("actor IN ('buyer', 'admin')", name="ck_tier_changes_actor"),
        sa.CheckConstraint(
            "direction IN ('upgrade', 'downgrade')", name="ck_tier_changes_direction"
        ),
        sa.CheckConstraint("proration_charge_value >= 0", name="ck_tier_changes_charge"),
        sa.ForeignKeyConstraint(
            ["from_policy_id"],
            ["policies.id"],
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["license_id"],
            ["licenses.id"],
        ),
        sa.ForeignKeyConstraint(
            ["to_policy_id"],
            ["policies.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tier_changes_created", "tier_changes", ["created_at"], unique=False)
    op.create_index(
        "ix_tier_changes_license_created",
        "tier_changes",
        ["license_id", "created_at"],
        unique=False,
    )
    op.create_index(
        "ix_tier_changes_scheduled",
        "tier_changes",
        ["license_id", "effective_at"],
        unique=False,
        sqlite_where=sa.text("invoice_id IS NULL AND applied_at IS NULL"),
        postgresql_where=sa.text("invoice_id IS NULL AND applied_at IS NULL"),
    )
    op.create_index(
        "uq_tier_changes_invoice",
        "tier_changes",
        ["invoice_id"],
        unique=True,
        sqlite_where=sa.text("invoice_id IS NOT NULL"),
        postgresql_where=sa.text("invoice_id IS NOT NULL"),
    )
    op.create_table(
        "subscription_invoices",
        sa.Column(
            "id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "subscription_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("cycle_number", sa.Integer(), nullable=False),
        sa.Column(
            "invoice_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("cycle_start_at", UTCDateTime(), nullable=False),
        sa.Column("cycle_end_at", UTCDateTime(), nullable=False),
        sa.Column("paid_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("cycle_number >= 1", name="ck_subscription_cycles_number"),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
        ),
        sa.ForeignKeyConstraint(["subscription_id"], ["subscriptions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("invoice_id"),
        sa.UniqueConstraint("subscription_id", "cycle_number", name="uq_subscription_cycles"),
    )
    # Renewal invoices name their subscription; the key is added once both tables exist.
    with op.batch_alter_table("invoices") as batch:
        batch.create_foreign_key(
            "fk_invoices_subscription_id", "subscriptions", ["subscription_id"], ["id"]
        )


def downgrade() -> None:
    raise NotImplementedError("migrations are not downgraded")
