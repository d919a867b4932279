"""The LIC1 license key format: parsing, verification and emission.

The byte-level contract is the license-keys specification; every official SDK verifies
keys offline with the same rules and keys already in the field must keep verifying, so
nothing here may drift from it. The module is pure: no database, no network, no clock.
"""

from __future__ import annotations

import base64
import binascii
import re
import string
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

KEY_PREFIX = "LIC1"
FLAG_FINGERPRINT_BOUND = 0x01
FLAG_TRIAL = 0x02
ZERO_FINGERPRINT_HASH = bytes(32)

SIGNATURE_LENGTH = 64
MAX_ENTITLEMENTS = 255
MAX_ENTITLEMENT_BYTES = 255

KeyFormatErrorKind = Literal[
    "malformed",
    "bad_encoding",
    "bad_signature_length",
    "bad_payload",
    "unsupported_version",
]

_V1_LAYOUT = struct.Struct(">BB16s16sQ32s")
_V2_HEAD = struct.Struct(">BB16s16sQQ32sB")
_U64_MAX = 2**64 - 1

_MALFORMED_DETAIL = f"expected {KEY_PREFIX}-<payload>-<signature>"
_BASE32_SECTION = re.compile(r"[A-Z2-7]*")
# Only ASCII letters may change case: str.upper() maps some non-ASCII letters to ASCII
# ("ß" -> "SS"), which would let a non-key normalise into a valid one.
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


class KeyFormatError(Exception):
    """The text is not a well-formed LIC1 key; `kind` decides the outward reason."""

    def __init__(self, kind: KeyFormatErrorKind, detail: str) -> None:
        super().__init__(detail)
        self.kind: KeyFormatErrorKind = kind
        self.detail = detail


class KeySignatureError(Exception):
    """The key is well formed but its signature does not verify against the public key."""


@dataclass(frozen=True)
class KeyFields:
    version: int
    flags: int
    product_id: uuid.UUID
    license_id: uuid.UUID
    issued_at: int
    expires_at: int
    fingerprint_hash: bytes
    entitlements: tuple[str, ...]

    @property
    def is_trial(self) -> bool:
        return bool(self.flags & FLAG_TRIAL)

    @property
    def is_fingerprint_bound(self) -> bool:
        return bool(self.flags & FLAG_FINGERPRINT_BOUND)


@dataclass(frozen=True)
class ParsedKey(KeyFields):
    # The exact bytes from the key string: signatures are checked against these, never
    # against a re-serialisation (a v1 payload re-encoded as v2 would no longer match).
    payload: bytes
    signature: bytes


def b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def b32decode(section: str) -> bytes | None:
    """Strictly decode one unpadded base32 section; None when it is not canonical."""
    if not section.isascii():
        return None
    upper = section.upper()
    if _BASE32_SECTION.fullmatch(upper) is None:
        return None
    try:
        data = base64.b32decode(upper + "=" * (-len(upper) % 8))
    except binascii.Error:
        return None
    # The stdlib ignores non-zero trailing bits and some impossible lengths; only the
    # canonical spelling of the decoded bytes is accepted.
    if b32encode(data) != upper:
        return None
    return data


def parse_key(text: str) -> ParsedKey:
    """Parse a key string without checking its signature or looking at any clock."""
    parts = text.strip().split("-", 2)
    if len(parts) < 3 or parts[0] != KEY_PREFIX:
        raise KeyFormatError("malformed", _MALFORMED_DETAIL)
    payload = b32decode(parts[1])
    if payload is None:
        raise KeyFormatError("bad_encoding", "payload section is not valid base32")
    signature = b32decode(parts[2])
    if signature is None:
        raise KeyFormatError("bad_encoding", "signature section is not valid base32")
    if len(signature) != SIGNATURE_LENGTH:
        raise KeyFormatError(
            "bad_signature_length",
            f"signature must be {SIGNATURE_LENGTH} bytes, got {len(signature)}",
        )
    if not payload:
        raise KeyFormatError("bad_payload", "payload is empty")
    version = payload[0]
    if version == 1:
        return _parse_v1(payload, signature)
    if version == 2:
        return _parse_v2(payload, signature)
    raise KeyFormatError("unsupported_version", f"unsupported key version {version}")


def _parse_v1(payload: bytes, signature: bytes) -> ParsedKey:
    if len(payload) != _V1_LAYOUT.size:
        raise KeyFormatError(
            "bad_payload", f"v1 payload must be {_V1_LAYOUT.size} bytes, got {len(payload)}"
        )
    version, flags, product, license_, issued_at, fingerprint = _V1_LAYOUT.unpack(payload)
    return ParsedKey(
        version=version,
        flags=flags,
        product_id=uuid.UUID(bytes=product),
        license_id=uuid.UUID(bytes=license_),
        issued_at=issued_at,
        expires_at=0,
        fingerprint_hash=fingerprint,
        entitlements=(),
        payload=payload,
        signature=signature,
    )


def _parse_v2(payload: bytes, signature: bytes) -> ParsedKey:
    size = len(payload)
    if size < _V2_HEAD.size:
        raise KeyFormatError(
            "bad_payload", f"v2 payload must be at least {_V2_HEAD.size} bytes, got {size}"
        )
    version, flags, product, license_, issued_at, expires_at, fingerprint, count = (
        _V2_HEAD.unpack_from(payload)
    )
    entitlements: list[str] = []
    offset = _V2_HEAD.size
    for index in range(count):
        if offset >= size:
            raise KeyFormatError(
                "bad_payload", f"v2 entitlement list is truncated at entry {index}"
            )
        end = offset + 1 + payload[offset]
        if end > size:
            raise KeyFormatError(
                "bad_payload", f"v2 entitlement {index} runs past the end of the payload"
            )
        try:
            entitlements.append(payload[offset + 1 : end].decode("utf-8"))
        except UnicodeDecodeError:
            raise KeyFormatError(
                "bad_payload", f"v2 entitlement {index} is not valid UTF-8"
            ) from None
        offset = end
    trailing = size - offset
    if trailing:
        raise KeyFormatError(
            "bad_payload", f"v2 payload has {trailing} trailing byte{'s' if trailing > 1 else ''}"
        )
    return ParsedKey(
        version=version,
        flags=flags,
        product_id=uuid.UUID(bytes=product),
        license_id=uuid.UUID(bytes=license_),
        issued_at=issued_at,
        expires_at=expires_at,
        fingerprint_hash=fingerprint,
        entitlements=tuple(entitlements),
        payload=payload,
        signature=signature,
    )


def verify_key(text: str, public_key: Ed25519PublicKey) -> ParsedKey:
    """Parse a key and check its signature over the payload bytes exactly as received."""
    parsed = parse_key(text)
    try:
        public_key.verify(parsed.signature, parsed.payload)
    except InvalidSignature:
        raise KeySignatureError("signature does not verify") from None
    return parsed


def encode_payload(fields: KeyFields) -> bytes:
    """Serialise version-2 fields; refuses anything the payload cannot carry faithfully."""
    if fields.version != 2:
        raise ValueError(f"only version 2 payloads can be emitted, got {fields.version}")
    if not 0 <= fields.flags <= 0xFF:
        raise ValueError(f"flags must fit in one byte, got {fields.flags}")
    for name, value in (("issued_at", fields.issued_at), ("expires_at", fields.expires_at)):
        if not 0 <= value <= _U64_MAX:
            raise ValueError(f"{name} must be an unsigned 64-bit integer, got {value}")
    if len(fields.fingerprint_hash) != 32:
        raise ValueError(f"fingerprint_hash must be 32 bytes, got {len(fields.fingerprint_hash)}")
    if len(fields.entitlements) > MAX_ENTITLEMENTS:
        raise ValueError(
            f"at most {MAX_ENTITLEMENTS} entitlements fit in a key, got {len(fields.entitlements)}"
        )
    parts = [
        _V2_HEAD.pack(
            fields.version,
            fields.flags,
            fields.product_id.bytes,
            fields.license_id.bytes,
            fields.issued_at,
            fields.expires_at,
            fields.fingerprint_hash,
            len(fields.entitlements),
        )
    ]
    for index, slug in enumerate(fields.entitlements):
        try:
            raw = slug.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"entitlement {index} is not encodable as UTF-8") from None
        if not raw:
            raise ValueError(f"entitlement {index} is empty")
        if len(raw) > MAX_ENTITLEMENT_BYTES:
            raise ValueError(
                f"entitlement {index} is {len(raw)} UTF-8 bytes, "
                f"at most {MAX_ENTITLEMENT_BYTES} fit in a key"
            )
        parts.append(bytes((len(raw),)))
        parts.append(raw)
    return b"".join(parts)


def encode_key(fields: KeyFields, private_key: Ed25519PrivateKey) -> str:
    payload = encode_payload(fields)
    signature = private_key.sign(payload)
    return f"{KEY_PREFIX}-{b32encode(payload)}-{b32encode(signature)}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)


def unix_seconds(dt: datetime) -> int:
    """Whole unix seconds of an aware datetime, fractional part discarded."""
    if dt.utcoffset() is None:
        # A naive datetime has no defined instant; guessing UTC or local time would shift
        # every key derived from it.
        raise ValueError("datetime must be timezone-aware")
    # Exact integer arithmetic, floored like timegm for pre-1970 instants.
    return (dt - _EPOCH) // _ONE_SECOND


def derive_key(
    *,
    product_id: str | uuid.UUID,
    license_id: str | uuid.UUID,
    issued_at: datetime,
    expires_at: datetime | None,
    is_trial: bool,
    entitlements: Sequence[str],
    private_key: Ed25519PrivateKey,
) -> str:
    """The key string for a license row; the same row always yields the same string."""
    fields = KeyFields(
        version=2,
        flags=FLAG_TRIAL if is_trial else 0,
        product_id=product_id if isinstance(product_id, uuid.UUID) else uuid.UUID(product_id),
        license_id=license_id if isinstance(license_id, uuid.UUID) else uuid.UUID(license_id),
        issued_at=unix_seconds(issued_at),
        expires_at=0 if expires_at is None else unix_seconds(expires_at),
        fingerprint_hash=ZERO_FINGERPRINT_HASH,
        entitlements=tuple(entitlements),
    )
    return encode_key(fields, private_key)


def normalize_key_text(text: str) -> str:
    """The form in which two spellings of the same accepted key compare equal."""
    stripped = text.strip()
    parts = stripped.split("-", 2)
    if len(parts) < 3:
        return stripped
    prefix, payload, signature = parts
    return f"{prefix}-{payload.translate(_ASCII_UPPER)}-{signature.translate(_ASCII_UPPER)}"


def is_expired_at(key: KeyFields, now_unix: int) -> bool:
    return key.expires_at != 0 and now_unix >= key.expires_at


def has_entitlement(key: KeyFields, slug: str) -> bool:
    return slug in key.entitlements
