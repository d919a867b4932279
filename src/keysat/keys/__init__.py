"""License keys: the LIC1 codec, fingerprint hashing and the server's signing key.

Pure code: callers pass "now" and do all storage themselves.
"""

from keysat.keys.codec import (
    FLAG_FINGERPRINT_BOUND,
    FLAG_TRIAL,
    ZERO_FINGERPRINT_HASH,
    KeyFields,
    KeyFormatError,
    KeyFormatErrorKind,
    KeySignatureError,
    ParsedKey,
    derive_key,
    encode_key,
    encode_payload,
    has_entitlement,
    is_expired_at,
    normalize_key_text,
    parse_key,
    unix_seconds,
    verify_key,
)
from keysat.keys.fingerprint import fingerprint_hash, fingerprint_hash_hex
from keysat.keys.signing import (
    KeyFileError,
    check_key_pair,
    generate_private_key,
    load_private_key_pem,
    load_public_key_pem,
    private_key_to_pem,
    public_key_raw,
    public_key_to_pem,
)

__all__ = [
    "FLAG_FINGERPRINT_BOUND",
    "FLAG_TRIAL",
    "ZERO_FINGERPRINT_HASH",
    "KeyFields",
    "KeyFileError",
    "KeyFormatError",
    "KeyFormatErrorKind",
    "KeySignatureError",
    "ParsedKey",
    "check_key_pair",
    "derive_key",
    "encode_key",
    "encode_payload",
    "fingerprint_hash",
    "fingerprint_hash_hex",
    "generate_private_key",
    "has_entitlement",
    "is_expired_at",
    "load_private_key_pem",
    "load_public_key_pem",
    "normalize_key_text",
    "parse_key",
    "private_key_to_pem",
    "public_key_raw",
    "public_key_to_pem",
    "unix_seconds",
    "verify_key",
]
