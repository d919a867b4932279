"""Random tokens and the hash they are stored under (access.md 4.1, 6.4)."""

from __future__ import annotations

import hashlib
import secrets


def new_secret() -> str:
    """32 bytes from the CSPRNG, URL-safe base64 without padding: 43 characters."""
    return secrets.token_urlsafe(32)


def sha256_hex(text: str) -> str:
    """The stored form of a token: only this ever reaches the database."""
    return hashlib.sha256(text.encode()).hexdigest()
