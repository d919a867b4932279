"""The event outbox: every outgoing event is recorded with the change that caused it."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from keysat.db import Base, Id, UTCDateTime


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
