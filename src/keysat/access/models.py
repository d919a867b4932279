"""Rate-limit buckets, shared by every server process (data-model.md 3.16)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from keysat.db import Base, UTCDateTime


class RateBucket(Base):
    __tablename__ = "rate_buckets"

    bucket_kind: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    bucket_key: Mapped[str] = mapped_column(sa.Text, primary_key=True)
    tokens_remaining: Mapped[float] = mapped_column(sa.Float)
    capacity: Mapped[int] = mapped_column(sa.Integer)
    refill_per_second: Mapped[float] = mapped_column(sa.Float)
    last_refill_at: Mapped[datetime] = mapped_column(UTCDateTime)
