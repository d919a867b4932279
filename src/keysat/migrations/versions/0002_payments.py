"""Payments and billing: providers, rail preferences, BTCPay authorize states, the sandbox
provider's invoices, discount codes and redemptions, job leases.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from keysat.db import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_leases",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("holder", sa.Text(), nullable=True),
        sa.Column("lease_until", UTCDateTime(), nullable=True),
        sa.Column("next_run_at", UTCDateTime(), nullable=True),
        sa.Column("last_started_at", UTCDateTime(), nullable=True),
        sa.Column("last_finished_at", UTCDateTime(), nullable=True),
        sa.Column("last_status", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "last_status IS NULL OR last_status IN ('ok', 'error')", name="ck_job_leases_status"
        ),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "sandbox_invoices",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("external_order_id", sa.Text(), nullable=False),
        sa.Column("amount_currency", sa.Text(), nullable=False),
        sa.Column("amount_value", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("redirect_url", sa.Text(), nullable=False),
        sa.Column(
            "metadata", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("buyer_email", sa.Text(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("settled_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('new', 'settled', 'expired', 'invalid')", name="ck_sandbox_invoices_status"
        ),
        sa.CheckConstraint("amount_value > 0", name="ck_sandbox_invoices_amount"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("external_order_id"),
    )
    op.create_table(
        "btcpay_authorize_states",
        sa.Column("state_token", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column(
            "merchant_profile_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("scoped_initiator", sa.Boolean(), nullable=False),
        sa.Column("initiator_actor_kind", sa.Text(), nullable=False),
        sa.Column("initiator_actor_hash", sa.Text(), nullable=True),
        sa.Column("initiator_actor_id", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["merchant_profile_id"], ["merchant_profiles.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("state_token"),
    )
    op.create_index(
        "ix_btcpay_authorize_states_created",
        "btcpay_authorize_states",
        ["created_at"],
        unique=False,
    )
    op.create_table(
        "payment_providers",
        sa.Column(
            "id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "merchant_profile_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("api_key", sa.Text(), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("store_id", sa.Text(), nullable=True),
        sa.Column("webhook_id", sa.Text(), nullable=True),
        sa.Column("webhook_secret", sa.Text(), nullable=True),
        sa.Column("network", sa.Text(), nullable=True),
        sa.Column("connected_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('btcpay', 'zaprite')", name="ck_payment_providers_kind"),
        sa.CheckConstraint(
            "network IS NULL OR network IN ('mainnet', 'testnet', 'regtest', 'unknown')",
            name="ck_payment_providers_network",
        ),
        sa.ForeignKeyConstraint(
            ["merchant_profile_id"],
            ["merchant_profiles.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("merchant_profile_id", "kind", name="uq_payment_providers_kind"),
    )
    op.create_table(
        "discount_codes",
        sa.Column(
            "id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("discount_currency", sa.Text(), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("used_count", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column(
            "applies_to_product_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "applies_to_policy_ids",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("referrer_label", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("featured", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "discount_currency IN ('SAT', 'USD', 'EUR')", name="ck_discount_codes_currency"
        ),
        sa.CheckConstraint("kind <> 'percent' OR amount <= 10000", name="ck_discount_codes_bps"),
        sa.CheckConstraint(
            "kind IN ('percent', 'fixed_sats', 'set_price', 'free_license')",
            name="ck_discount_codes_kind",
        ),
        sa.CheckConstraint("amount >= 0", name="ck_discount_codes_amount"),
        sa.CheckConstraint("max_uses IS NULL OR max_uses > 0", name="ck_discount_codes_max_uses"),
        sa.CheckConstraint("used_count >= 0", name="ck_discount_codes_used_count"),
        sa.ForeignKeyConstraint(
            ["applies_to_product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code"),
    )
    op.create_index("ix_discount_codes_active", "discount_codes", ["active"], unique=False)
    op.create_index("ix_discount_codes_expires_at", "discount_codes", ["expires_at"], unique=False)
    op.create_index(
        "ix_discount_codes_featured",
        "discount_codes",
        ["applies_to_product_id", "created_at"],
        unique=False,
        sqlite_where=sa.text("featured AND active"),
        postgresql_where=sa.text("featured AND active"),
    )
    op.create_index(
        "ix_discount_codes_product", "discount_codes", ["applies_to_product_id"], unique=False
    )
    op.create_table(
        "merchant_profile_rail_preferences",
        sa.Column(
            "merchant_profile_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("rail", sa.Text(), nullable=False),
        sa.Column(
            "payment_provider_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "rail IN ('lightning', 'onchain', 'card')", name="ck_rail_preferences_rail"
        ),
        sa.ForeignKeyConstraint(
            ["merchant_profile_id"], ["merchant_profiles.id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["payment_provider_id"], ["payment_providers.id"], ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("merchant_profile_id", "rail"),
    )
    op.create_table(
        "discount_redemptions",
        sa.Column(
            "id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "code_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "invoice_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "license_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("discount_applied_sats", sa.BigInteger(), nullable=False),
        sa.Column("base_price_sats", sa.BigInteger(), nullable=False),
        sa.Column("final_price_sats", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'redeemed', 'cancelled')", name="ck_discount_redemptions_status"
        ),
        sa.CheckConstraint(
            "discount_applied_sats >= 0 AND base_price_sats >= 0 AND final_price_sats >= 0",
            name="ck_discount_redemptions_amounts",
        ),
        sa.ForeignKeyConstraint(
            ["code_id"],
            ["discount_codes.id"],
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["license_id"],
            ["licenses.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("invoice_id"),
    )
    op.create_index(
        "ix_discount_redemptions_code", "discount_redemptions", ["code_id"], unique=False
    )
    op.create_index(
        "ix_discount_redemptions_license", "discount_redemptions", ["license_id"], unique=False
    )
    op.create_index(
        "ix_discount_redemptions_status_created",
        "discount_redemptions",
        ["status", "created_at"],
        unique=False,
    )
    # A disconnected provider leaves its invoices with the reference cleared.
    with op.batch_alter_table("invoices") as batch:
        batch.create_foreign_key(
            "fk_invoices_payment_provider_id",
            "payment_providers",
            ["payment_provider_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    raise NotImplementedError("migrations are not downgraded")
