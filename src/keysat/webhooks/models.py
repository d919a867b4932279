"""The event outbox, webhook endpoints and their deliveries (data-model.md 3.13)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from keysat.db import Base, Id, Json, UTCDateTime


class WebhookEvent(Base):
    __tablename__ = "webhook_events"
    __table_args__ = (
        sa.Index("ix_webhook_events_type_created", "event_type", "created_at"),
        sa.Index("ix_webhook_events_created", "created_at"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    event_type: Mapped[str] = mapped_column(sa.Text)
    payload_json: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"
    __table_args__ = (sa.Index("ix_webhook_endpoints_active", "active"),)

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    url: Mapped[str] = mapped_column(sa.Text)
    # Stored as given: the HMAC key is these UTF-8 bytes (webhooks.md 2).
    secret: Mapped[str] = mapped_column(sa.Text)
    event_types: Mapped[list[str]] = mapped_column(Json)
    active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    description: Mapped[str] = mapped_column(sa.Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # One delivery per (event, endpoint), whatever races the recording transaction.
        # Rows imported from Keysat 0.2.0 have no event, and NULLs never collide.
        sa.UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event"),
        sa.CheckConstraint("attempt_count >= 0", name="ck_webhook_deliveries_attempts"),
        sa.Index("ix_webhook_deliveries_endpoint", "endpoint_id"),
        sa.Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=sa.text("delivered_at IS NULL"),
            postgresql_where=sa.text("delivered_at IS NULL"),
        ),
        sa.Index("ix_webhook_deliveries_created", "created_at"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(
        Id, sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[str | None] = mapped_column(
        Id, sa.ForeignKey("webhook_events.id"), nullable=True
    )
    event_type: Mapped[str] = mapped_column(sa.Text)
    # The exact body of every attempt, copied from the event when it was recorded.
    payload_json: Mapped[str] = mapped_column(sa.Text)
    attempt_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(sa.Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
