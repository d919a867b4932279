"""The one signing key pair of this installation (data-model.md 3.18)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from keysat.db import Base, UTCDateTime


class ServerKey(Base):
    __tablename__ = "server_keys"
    __table_args__ = (sa.CheckConstraint("id = 1", name="ck_server_keys_singleton"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    algorithm: Mapped[str] = mapped_column(sa.Text, default="ed25519")
    public_key_pem: Mapped[str] = mapped_column(sa.Text)
    private_key_pem: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
