"""Initial schema: catalog, licenses, machines, validation log, invoices, audit, outbox.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from keysat.db import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("actor_kind", sa.Text(), nullable=False),
        sa.Column("actor_hash", sa.Text(), nullable=True),
        sa.Column("actor_id", sa.Text(), nullable=True),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target_kind", sa.Text(), nullable=True),
        sa.Column("target_id", sa.Text(), nullable=True),
        sa.Column("request_ip", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column(
            "details", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_action", "audit_log", ["action"], unique=False)
    op.create_index("ix_audit_log_occurred_at", "audit_log", ["occurred_at"], unique=False)
    op.create_index("ix_audit_log_target", "audit_log", ["target_kind", "target_id"], unique=False)
    op.create_table(
        "merchant_profiles",
        sa.Column(
            "id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("legal_name", sa.Text(), nullable=True),
        sa.Column("support_url", sa.Text(), nullable=True),
        sa.Column("support_email", sa.Text(), nullable=True),
        sa.Column("brand_color", sa.Text(), nullable=True),
        sa.Column("post_purchase_redirect_url", sa.Text(), nullable=True),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("smtp_host", sa.Text(), nullable=True),
        sa.Column("smtp_port", sa.Integer(), nullable=True),
        sa.Column("smtp_username", sa.Text(), nullable=True),
        sa.Column("smtp_password", sa.Text(), nullable=True),
        sa.Column("smtp_from_address", sa.Text(), nullable=True),
        sa.Column("smtp_from_name", sa.Text(), nullable=True),
        sa.Column("smtp_use_starttls", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_merchant_profiles_default",
        "merchant_profiles",
        ["is_default"],
        unique=True,
        sqlite_where=sa.text("is_default"),
        postgresql_where=sa.text("is_default"),
    )
    op.create_table(
        "rate_buckets",
        sa.Column("bucket_kind", sa.Text(), nullable=False),
        sa.Column("bucket_key", sa.Text(), nullable=False),
        sa.Column("tokens_remaining", sa.Float(), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("refill_per_second", sa.Float(), nullable=False),
        sa.Column("last_refill_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("bucket_kind", "bucket_key"),
    )
    op.create_table(
        "server_keys",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("algorithm", sa.Text(), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_server_keys_singleton"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "validation_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "license_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "product_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column("fingerprint", sa.Text(), nullable=True),
        sa.Column(
            "machine_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("reason_detail", sa.Text(), nullable=True),
        sa.Column("client_ip", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_validation_log_license_occurred",
        "validation_log",
        ["license_id", "occurred_at"],
        unique=False,
    )
    op.create_index(
        "ix_validation_log_occurred_at", "validation_log", ["occurred_at"], unique=False
    )
    op.create_table(
        "webhook_events",
        sa.Column(
            "id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_events_created", "webhook_events", ["created_at"], unique=False)
    op.create_index(
        "ix_webhook_events_type_created",
        "webhook_events",
        ["event_type", "created_at"],
        unique=False,
    )
    op.create_table(
        "products",
        sa.Column(
            "id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("price_currency", sa.Text(), nullable=False),
        sa.Column("price_value", sa.BigInteger(), nullable=False),
        sa.Column("price_sats", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column(
            "metadata", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "entitlements_catalog",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "merchant_profile_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "price_currency IN ('SAT', 'BTC', 'USD', 'EUR')", name="ck_products_currency"
        ),
        sa.CheckConstraint("price_sats >= 0", name="ck_products_price_sats"),
        sa.CheckConstraint("price_value >= 0", name="ck_products_price_value"),
        sa.ForeignKeyConstraint(
            ["merchant_profile_id"],
            ["merchant_profiles.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug"),
    )
    op.create_index("ix_products_active", "products", ["active"], unique=False)
    op.create_index(
        "ix_products_merchant_profile_id", "products", ["merchant_profile_id"], unique=False
    )
    op.create_table(
        "policies",
        sa.Column(
            "id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "product_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("duration_seconds", sa.BigInteger(), nullable=False),
        sa.Column("grace_seconds", sa.BigInteger(), nullable=False),
        sa.Column("max_machines", sa.Integer(), nullable=False),
        sa.Column("is_trial", sa.Boolean(), nullable=False),
        sa.Column("price_sats_override", sa.BigInteger(), nullable=True),
        sa.Column(
            "entitlements", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column(
            "metadata", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("archived_at", UTCDateTime(), nullable=True),
        sa.Column("tip_recipient", sa.Text(), nullable=True),
        sa.Column("tip_pct_bps", sa.Integer(), nullable=False),
        sa.Column("tip_label", sa.Text(), nullable=True),
        sa.Column("is_recurring", sa.Boolean(), nullable=False),
        sa.Column("renewal_period_days", sa.Integer(), nullable=False),
        sa.Column("grace_period_days", sa.Integer(), nullable=False),
        sa.Column("trial_days", sa.Integer(), nullable=False),
        sa.Column("tier_rank", sa.Integer(), nullable=True),
        sa.Column("allow_repeat_trials", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("duration_seconds >= 0", name="ck_policies_duration"),
        sa.CheckConstraint("grace_period_days BETWEEN 0 AND 90", name="ck_policies_grace_days"),
        sa.CheckConstraint("grace_seconds >= 0", name="ck_policies_grace"),
        sa.CheckConstraint("max_machines >= 0", name="ck_policies_max_machines"),
        sa.CheckConstraint(
            "price_sats_override IS NULL OR price_sats_override >= 0", name="ck_policies_override"
        ),
        sa.CheckConstraint(
            "renewal_period_days BETWEEN 0 AND 1830", name="ck_policies_renewal_period"
        ),
        sa.CheckConstraint(
            "tier_rank IS NULL OR tier_rank BETWEEN 0 AND 1000", name="ck_policies_tier_rank"
        ),
        sa.CheckConstraint("tip_pct_bps BETWEEN 0 AND 10000", name="ck_policies_tip_pct"),
        sa.CheckConstraint("trial_days >= 0", name="ck_policies_trial_days"),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("product_id", "slug", name="uq_policies_product_slug"),
    )
    op.create_index("ix_policies_active_public", "policies", ["active", "public"], unique=False)
    op.create_index("ix_policies_archived_at", "policies", ["archived_at"], unique=False)
    op.create_index("ix_policies_product_id", "policies", ["product_id"], unique=False)
    op.create_index(
        "ix_policies_product_rank", "policies", ["product_id", "tier_rank"], unique=False
    )
    op.create_table(
        "invoices",
        sa.Column(
            "id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column(
            "product_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "policy_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column("amount_sats", sa.BigInteger(), nullable=False),
        sa.Column("base_price_sats", sa.BigInteger(), nullable=False),
        sa.Column("discount_applied_sats", sa.BigInteger(), nullable=False),
        sa.Column("rail", sa.Text(), nullable=True),
        sa.Column("provider_kind", sa.Text(), nullable=False),
        sa.Column(
            "payment_provider_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column("provider_invoice_id", sa.Text(), nullable=False),
        sa.Column("checkout_url", sa.Text(), nullable=False),
        sa.Column("buyer_email", sa.Text(), nullable=True),
        sa.Column("buyer_note", sa.Text(), nullable=True),
        sa.Column("listed_currency", sa.Text(), nullable=True),
        sa.Column("listed_value", sa.BigInteger(), nullable=True),
        sa.Column("exchange_rate_centibps", sa.BigInteger(), nullable=True),
        sa.Column("exchange_rate_source", sa.Text(), nullable=True),
        sa.Column(
            "subject_license_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "subscription_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column("cycle_number", sa.Integer(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("settled_at", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "(kind = 'purchase') = (subject_license_id IS NULL)", name="ck_invoices_subject"
        ),
        sa.CheckConstraint(
            "kind <> 'renewal' OR (subscription_id IS NOT NULL AND cycle_number IS NOT NULL)",
            name="ck_invoices_renewal",
        ),
        sa.CheckConstraint(
            "kind IN ('purchase', 'renewal', 'tier_change')", name="ck_invoices_kind"
        ),
        sa.CheckConstraint(
            "provider_kind <> 'none' OR (status = 'settled' AND amount_sats = 0)",
            name="ck_invoices_free",
        ),
        sa.CheckConstraint(
            "provider_kind IN ('none', 'sandbox', 'btcpay', 'zaprite')", name="ck_invoices_provider"
        ),
        sa.CheckConstraint(
            "rail IS NULL OR rail IN ('lightning', 'onchain', 'card')", name="ck_invoices_rail"
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'settled', 'expired', 'invalid')", name="ck_invoices_status"
        ),
        sa.CheckConstraint("amount_sats >= 0", name="ck_invoices_amount"),
        sa.CheckConstraint("base_price_sats >= 0", name="ck_invoices_base_price"),
        sa.CheckConstraint("discount_applied_sats >= 0", name="ck_invoices_discount"),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider_invoice_id"),
    )
    op.create_index("ix_invoices_product", "invoices", ["product_id"], unique=False)
    op.create_index("ix_invoices_provider_id", "invoices", ["payment_provider_id"], unique=False)
    op.create_index(
        "ix_invoices_status_created", "invoices", ["status", "created_at"], unique=False
    )
    op.create_index("ix_invoices_subject_license", "invoices", ["subject_license_id"], unique=False)
    op.create_index("ix_invoices_subscription", "invoices", ["subscription_id"], unique=False)
    op.create_table(
        "licenses",
        sa.Column(
            "id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "product_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "policy_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "invoice_id",
            sa.String(length=36).with_variant(postgresql.UUID(as_uuid=False), "postgresql"),
            nullable=True,
        ),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("issued_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("grace_seconds", sa.BigInteger(), nullable=False),
        sa.Column("max_machines", sa.Integer(), nullable=False),
        sa.Column(
            "entitlements", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("is_trial", sa.Boolean(), nullable=False),
        sa.Column("trial_started_at", UTCDateTime(), nullable=True),
        sa.Column("buyer_email", sa.Text(), nullable=True),
        sa.Column("nostr_npub", sa.Text(), nullable=True),
        sa.Column(
            "metadata", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.Column("revocation_reason", sa.Text(), nullable=True),
        sa.Column("suspended_at", UTCDateTime(), nullable=True),
        sa.Column("suspension_reason", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.Text(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('active', 'suspended', 'revoked')", name="ck_licenses_status"
        ),
        sa.CheckConstraint("grace_seconds >= 0", name="ck_licenses_grace"),
        sa.CheckConstraint("max_machines >= 0", name="ck_licenses_max_machines"),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("invoice_id"),
    )
    op.create_index("ix_licenses_expires_at", "licenses", ["expires_at"], unique=False)
    op.create_index("ix_licenses_issued_at", "licenses", ["issued_at"], unique=False)
    op.create_index("ix_licenses_nostr_npub", "licenses", ["nostr_npub"], unique=False)
    op.create_index("ix_licenses_policy_id", "licenses", ["policy_id"], unique=False)
    op.create_index("ix_licenses_product_id", "licenses", ["product_id"], unique=False)
    op.create_index(
        "ix_licenses_product_trial", "licenses", ["product_id", "trial_started_at"], unique=False
    )
    op.create_index("ix_licenses_status", "licenses", ["status"], unique=False)
    op.create_table(
        "machines",
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
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("fingerprint_hash", sa.Text(), nullable=False),
        sa.Column("hostname", sa.Text(), nullable=True),
        sa.Column("platform", sa.Text(), nullable=True),
        sa.Column("ip_last_seen", sa.Text(), nullable=True),
        sa.Column("activated_at", UTCDateTime(), nullable=False),
        sa.Column("last_heartbeat_at", UTCDateTime(), nullable=False),
        sa.Column("deactivated_at", UTCDateTime(), nullable=True),
        sa.Column("deactivation_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["license_id"], ["licenses.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_machines_fingerprint_hash", "machines", ["fingerprint_hash"], unique=False)
    op.create_index(
        "ix_machines_last_heartbeat_at", "machines", ["last_heartbeat_at"], unique=False
    )
    op.create_index("ix_machines_license_id", "machines", ["license_id"], unique=False)
    op.create_index(
        "uq_machines_active_fingerprint",
        "machines",
        ["license_id", "fingerprint_hash"],
        unique=True,
        sqlite_where=sa.text("deactivated_at IS NULL"),
        postgresql_where=sa.text("deactivated_at IS NULL"),
    )

    # licenses and invoices point at each other; the second key is added once both exist.
    if op.get_context().dialect.name == "sqlite":
        with op.batch_alter_table("licenses") as batch:
            batch.create_foreign_key("fk_licenses_invoice_id", "invoices", ["invoice_id"], ["id"])
        with op.batch_alter_table("invoices") as batch:
            batch.create_foreign_key(
                "fk_invoices_subject_license_id", "licenses", ["subject_license_id"], ["id"]
            )
    else:
        op.create_foreign_key(
            "fk_licenses_invoice_id", "licenses", "invoices", ["invoice_id"], ["id"]
        )
        op.create_foreign_key(
            "fk_invoices_subject_license_id", "invoices", "licenses", ["subject_license_id"], ["id"]
        )
    # Created after the table rebuild above, which cannot carry expression indexes over.
    op.create_index(
        "ix_licenses_buyer_email_lower", "licenses", [sa.text("lower(buyer_email)")], unique=False
    )

    op.execute(
        "INSERT INTO merchant_profiles "
        "(id, name, is_default, smtp_use_starttls, created_at, updated_at) "
        "VALUES ('00000000-0000-4000-8000-000000000001', 'Default', true, true, "
        "'2026-01-01T00:00:00.000000+00:00', '2026-01-01T00:00:00.000000+00:00')"
    )


def downgrade() -> None:
    raise NotImplementedError("the initial schema is not downgraded")
