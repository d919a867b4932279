"""Rate-limit buckets, scoped API keys and web sessions (data-model.md 3.16)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from keysat.db import Base, Id, Json, UTCDateTime


class RateBucket(Base):
    __tablename__ = "rate_buckets"

    bucket_kind: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    bucket_key: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    tokens_remaining: Mapped[float] = mapped_column(sa.Float)
    capacity: Mapped[int] = mapped_column(sa.Integer)
    refill_per_second: Mapped[float] = mapped_column(sa.Float)
    last_refill_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ScopedApiKey(Base):
    """A `ks_…` key: only the SHA-256 of the token is kept (access.md 4.1)."""

    __tablename__ = "scoped_api_keys"
    __table_args__ = (
        sa.UniqueConstraint("token_hash", name="uq_scoped_api_keys_token_hash"),
        sa.Index("ix_scoped_api_keys_revoked_at", "revoked_at"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    label: Mapped[str] = mapped_column(sa.Text)
    token_hash: Mapped[str] = mapped_column(sa.Text)
    role: Mapped[str] = mapped_column(sa.Text)
    # A JSON array, or null when nothing extra was granted; read through
    # `scopes.stored_extra_scopes`, which grants nothing for any other shape.
    extra_scopes: Mapped[Any] = mapped_column(Json, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebSession(Base):
    """A web UI login: the cookie token is kept only as its SHA-256 (access.md 6.4)."""

    __tablename__ = "sessions"
    __table_args__ = (
        sa.UniqueConstraint("token_hash", name="uq_sessions_token_hash"),
        sa.CheckConstraint(
            "login_method IN ('password', 'api_key')", name="ck_sessions_login_method"
        ),
        sa.Index("ix_sessions_expires_at", "expires_at"),
    )

    id: Mapped[str] = mapped_column(Id, primary_key=True)
    token_hash: Mapped[str] = mapped_column(sa.Text)
    csrf_token: Mapped[str] = mapped_column(sa.Text)
    login_method: Mapped[str] = mapped_column(sa.Text)
    # SHA-256 of the master key that was exchanged, so rotating the key ends the session.
    master_key_hash: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ip: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
    user_agent: Mapped[str | None] = mapped_column(sa.Text, nullable=True)
