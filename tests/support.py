"""Constants and small helpers shared by the test modules."""

from __future__ import annotations

ADMIN_KEY = "test-admin-key-0123456789abcdefghijklmnop"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
