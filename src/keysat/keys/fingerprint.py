"""Machine fingerprint hashing.

Clients send a raw fingerprint string; whatever arrives is hashed as is. Any trimming or
case folding would make keys bound by other Keysat installations or SDKs stop matching.
"""

from __future__ import annotations

import hashlib


def fingerprint_hash(raw: str) -> bytes:
    """SHA-256 of the UTF-8 bytes; raises ValueError for text with lone surrogates."""
    return hashlib.sha256(raw.encode("utf-8")).digest()


def fingerprint_hash_hex(raw: str) -> str:
    return fingerprint_hash(raw).hex()
