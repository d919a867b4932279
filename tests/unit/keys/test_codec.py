"""The LIC1 codec: base32 rules, parsing, verification and the emitter (spec 1 to 7, 10.6)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keysat.keys import (
    FLAG_FINGERPRINT_BOUND,
    FLAG_TRIAL,
    ZERO_FINGERPRINT_HASH,
    KeyFields,
    KeyFormatError,
    KeySignatureError,
    derive_key,
    encode_key,
    encode_payload,
    fingerprint_hash,
    has_entitlement,
    is_expired_at,
    normalize_key_text,
    parse_key,
    unix_seconds,
    verify_key,
)
from keysat.keys.codec import b32decode, b32encode

PRODUCT = uuid.UUID("6f46a4f6-0d2f-4a28-b6aa-3e8fbf6f28f0")
LICENSE = uuid.UUID("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
HASH = bytes(range(100, 132))
NOW = 1_800_000_000


def b32(data: bytes) -> str:
    """Reference encoder written straight from spec 2.1, independent of the codec."""
    return base64.b32encode(data).decode("ascii").rstrip("=")


def v1_payload(flags: int = FLAG_FINGERPRINT_BOUND, issued_at: int = 1_700_000_000) -> bytes:
    return (
        b"\x01"
        + bytes([flags])
        + PRODUCT.bytes
        + LICENSE.bytes
        + issued_at.to_bytes(8, "big")
        + HASH
    )


def v2_head(
    flags: int = 0,
    issued_at: int = 1_700_000_000,
    expires_at: int = 1_900_000_000,
    fingerprint: bytes = ZERO_FINGERPRINT_HASH,
    count: int = 0,
) -> bytes:
    return (
        b"\x02"
        + bytes([flags])
        + PRODUCT.bytes
        + LICENSE.bytes
        + issued_at.to_bytes(8, "big")
        + expires_at.to_bytes(8, "big")
        + fingerprint
        + bytes([count])
    )


def entries(*slugs: bytes) -> bytes:
    return b"".join(bytes([len(slug)]) + slug for slug in slugs)


def sign_raw(payload: bytes, key: Ed25519PrivateKey) -> str:
    return f"LIC1-{b32(payload)}-{b32(key.sign(payload))}"


def fields(
    *,
    flags: int = 0,
    issued_at: int = 1_700_000_000,
    expires_at: int = 1_900_000_000,
    fingerprint: bytes = ZERO_FINGERPRINT_HASH,
    entitlements: tuple[str, ...] = (),
    version: int = 2,
) -> KeyFields:
    return KeyFields(
        version=version,
        flags=flags,
        product_id=PRODUCT,
        license_id=LICENSE,
        issued_at=issued_at,
        expires_at=expires_at,
        fingerprint_hash=fingerprint,
        entitlements=entitlements,
    )


def format_error(text: str) -> KeyFormatError:
    with pytest.raises(KeyFormatError) as caught:
        parse_key(text)
    return caught.value


def as_fields(key: KeyFields) -> KeyFields:
    return KeyFields(
        version=key.version,
        flags=key.flags,
        product_id=key.product_id,
        license_id=key.license_id,
        issued_at=key.issued_at,
        expires_at=key.expires_at,
        fingerprint_hash=key.fingerprint_hash,
        entitlements=key.entitlements,
    )


# --- the error type --------------------------------------------------------------------


def test_key_format_error_carries_kind_and_detail() -> None:
    error = KeyFormatError("bad_payload", "v2 payload has 2 trailing bytes")
    assert error.kind == "bad_payload"
    assert error.detail == "v2 payload has 2 trailing bytes"
    assert str(error) == "v2 payload has 2 trailing bytes"


# --- section 2: base32 ------------------------------------------------------------------

RFC4648_VECTORS = [
    (b"", ""),
    (b"f", "MY"),
    (b"fo", "MZXQ"),
    (b"foo", "MZXW6"),
    (b"foob", "MZXW6YQ"),
    (b"fooba", "MZXW6YTB"),
    (b"foobar", "MZXW6YTBOI"),
]


@pytest.mark.parametrize(("data", "text"), RFC4648_VECTORS)
def test_base32_rfc4648_standard_alphabet_unpadded(data: bytes, text: str) -> None:
    assert b32encode(data) == text
    assert b32decode(text) == data
    assert b32decode(text.lower()) == data


@pytest.mark.parametrize("size", range(0, 41))
def test_base32_encoded_length_is_ceil_8n_over_5(size: int) -> None:
    encoded = b32encode(bytes(range(size)))
    assert len(encoded) == -(-8 * size // 5)
    assert "=" not in encoded
    assert encoded == encoded.upper()


def test_base32_alphabet_is_not_crockford() -> None:
    # Crockford would spell these 31s and 0s as "Z" and "0".
    assert b32encode(bytes([0b11111000, 0b00111110, 0b00001111, 0b10000011, 0b11100000])) == (
        "7A7A7A7A"
    )
    assert b32decode("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") is not None
    for char in "0189":
        assert b32decode("A" + char) is None


@pytest.mark.parametrize(
    "text",
    ["MY======", "MZXW6===", "M=Y", "=", "MZXW6YQ=", "AB", "MZ", "MZXR", "AAAAAAB", "7Z"],
)
def test_base32_refuses_padding_and_non_zero_trailing_bits(text: str) -> None:
    assert b32decode(text) is None


def test_base32_trailing_bits_zero_is_accepted() -> None:
    assert b32decode("AA") == b"\x00"
    assert b32decode("AB") is None


@pytest.mark.parametrize("length", [1, 3, 6, 9, 11, 14, 17, 19, 22])
def test_base32_impossible_lengths(length: int) -> None:
    assert b32decode("A" * length) is None


@pytest.mark.parametrize("length", [0, 2, 4, 5, 7, 8, 10, 12, 13, 15])
def test_base32_possible_lengths(length: int) -> None:
    decoded = b32decode("A" * length)
    assert decoded == bytes(length * 5 // 8)


@pytest.mark.parametrize(
    "text", ["MZ XW", "MZ\nXW", "MZXW-", "\uff2d\uff39", "MY\u00df", "MY\x00", "mz+w"]
)
def test_base32_refuses_other_characters(text: str) -> None:
    assert b32decode(text) is None


# --- section 1: typical lengths ---------------------------------------------------------


def test_typical_lengths(signing_key: Ed25519PrivateKey) -> None:
    v1 = sign_raw(v1_payload(), signing_key)
    bare = encode_key(fields(), signing_key)
    two = encode_key(fields(entitlements=("pro", "multi-device")), signing_key)
    assert [len(v1), len(bare), len(two)] == [228, 242, 269]
    assert [len(parse_key(k).payload) for k in (v1, bare, two)] == [74, 83, 100]
    assert [len(k.split("-")[1]) for k in (v1, bare, two)] == [119, 133, 160]
    for key in (v1, bare, two):
        assert len(key.split("-")[2]) == 103


def test_largest_possible_key(signing_key: Ed25519PrivateKey) -> None:
    slugs = tuple(f"{i:03d}".ljust(255, "x") for i in range(255))
    key = encode_key(fields(entitlements=slugs), signing_key)
    parsed = verify_key(key, signing_key.public_key())
    assert len(parsed.payload) == 65_363
    assert len(key.split("-")[1]) == 104_581
    assert len(key) == 104_690
    assert parsed.entitlements == slugs


# --- valid ------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 255])
def test_valid_entitlement_counts(signing_key: Ed25519PrivateKey, count: int) -> None:
    slugs = tuple(f"feature-{i}" for i in range(count))
    key = encode_key(fields(entitlements=slugs), signing_key)
    parsed = verify_key(key, signing_key.public_key())
    assert parsed.entitlements == slugs
    assert parsed.payload[82] == count
    hand_built = sign_raw(v2_head(count=count) + entries(*(s.encode() for s in slugs)), signing_key)
    assert hand_built == key


@pytest.mark.parametrize(
    "slug",
    ["a" * 255, "é" * 127 + "a", "€" * 85, "日本語", "café", "🔑-key", "Ünïcödé"],
)
def test_valid_long_and_multibyte_entitlements(signing_key: Ed25519PrivateKey, slug: str) -> None:
    raw = slug.encode("utf-8")
    key = sign_raw(v2_head(count=1) + entries(raw), signing_key)
    parsed = verify_key(key, signing_key.public_key())
    assert parsed.entitlements == (slug,)
    assert has_entitlement(parsed, slug)
    assert encode_key(fields(entitlements=(slug,)), signing_key) == key


def test_parser_accepts_empty_entitlement_entry(signing_key: Ed25519PrivateKey) -> None:
    key = sign_raw(v2_head(count=2) + entries(b"", b"pro"), signing_key)
    assert verify_key(key, signing_key.public_key()).entitlements == ("", "pro")


@pytest.mark.parametrize(
    ("expires_at", "expired"), [(NOW - 1, True), (NOW, True), (NOW + 1, False), (0, False)]
)
def test_valid_expiry_around_now(
    signing_key: Ed25519PrivateKey, expires_at: int, expired: bool
) -> None:
    key = encode_key(fields(expires_at=expires_at), signing_key)
    parsed = verify_key(key, signing_key.public_key())
    assert parsed.expires_at == expires_at
    assert is_expired_at(parsed, NOW) is expired


def test_v1_parses_without_expiry_or_entitlements(signing_key: Ed25519PrivateKey) -> None:
    parsed = verify_key(sign_raw(v1_payload(), signing_key), signing_key.public_key())
    assert parsed.version == 1
    assert parsed.expires_at == 0
    assert parsed.entitlements == ()
    assert parsed.fingerprint_hash == HASH
    assert parsed.is_fingerprint_bound
    assert is_expired_at(parsed, 2**63) is False


def test_semantics_expiry_and_entitlement_membership() -> None:
    key = fields(expires_at=100, entitlements=("pro", "multi-device"))
    assert is_expired_at(key, 99) is False
    assert is_expired_at(key, 100) is True
    assert is_expired_at(key, 101) is True
    assert has_entitlement(key, "pro")
    assert not has_entitlement(key, "PRO")
    assert not has_entitlement(key, "pr")
    assert not has_entitlement(key, "pro ")


def test_parsed_uuids_render_lower_case_canonical(signing_key: Ed25519PrivateKey) -> None:
    parsed = parse_key(encode_key(fields(), signing_key))
    assert str(parsed.product_id) == "6f46a4f6-0d2f-4a28-b6aa-3e8fbf6f28f0"
    assert parsed.payload[2:18] == bytes.fromhex("6f46a4f60d2f4a28b6aa3e8fbf6f28f0")


# --- signature --------------------------------------------------------------------------

FIELD_OFFSETS = {
    "flags": 1,
    "product first": 2,
    "product last": 17,
    "license first": 18,
    "license last": 33,
    "issued first": 34,
    "issued last": 41,
    "expires first": 42,
    "expires last": 49,
    "fingerprint first": 50,
    "fingerprint last": 81,
    "slug byte": 84,
}


@pytest.mark.parametrize("offset", FIELD_OFFSETS.values(), ids=FIELD_OFFSETS.keys())
def test_one_changed_byte_in_each_field_is_a_signature_error(
    signing_key: Ed25519PrivateKey, offset: int
) -> None:
    original = encode_key(
        fields(flags=FLAG_TRIAL, fingerprint=HASH, entitlements=("pro",)), signing_key
    )
    parsed = parse_key(original)
    payload = bytearray(parsed.payload)
    # Stays an ASCII letter at the slug offset, so the payload still parses.
    payload[offset] ^= 0x01
    tampered = f"LIC1-{b32(bytes(payload))}-{b32(parsed.signature)}"
    assert parse_key(tampered).payload == bytes(payload)
    with pytest.raises(KeySignatureError):
        verify_key(tampered, signing_key.public_key())


def test_changed_signature_byte_is_a_signature_error(signing_key: Ed25519PrivateKey) -> None:
    parsed = parse_key(encode_key(fields(), signing_key))
    signature = bytearray(parsed.signature)
    signature[10] ^= 0x80
    with pytest.raises(KeySignatureError):
        verify_key(f"LIC1-{b32(parsed.payload)}-{b32(bytes(signature))}", signing_key.public_key())


def test_payload_signed_by_another_key(
    signing_key: Ed25519PrivateKey, other_signing_key: Ed25519PrivateKey
) -> None:
    key = encode_key(fields(entitlements=("pro",)), other_signing_key)
    parse_key(key)
    with pytest.raises(KeySignatureError):
        verify_key(key, signing_key.public_key())


def test_signature_covers_raw_payload_bytes_not_a_reencoding(
    signing_key: Ed25519PrivateKey,
) -> None:
    # Unused flag bits survive in the payload bytes, so the signature must be checked
    # against them rather than against a fresh serialisation of the parsed fields.
    key = sign_raw(v1_payload(flags=0xF1), signing_key)
    assert verify_key(key, signing_key.public_key()).flags == 0xF1


# --- signature length -------------------------------------------------------------------


@pytest.mark.parametrize("size", [63, 65, 0, 32, 128])
def test_signature_length(signing_key: Ed25519PrivateKey, size: int) -> None:
    payload = v2_head()
    signature = (signing_key.sign(payload) * 3)[:size]
    error = format_error(f"LIC1-{b32(payload)}-{b32(signature)}")
    assert error.kind == "bad_signature_length"
    assert str(error) == f"signature must be 64 bytes, got {size}"


# --- structure --------------------------------------------------------------------------

STRUCTURE_CASES = {
    "v1 73 bytes": v1_payload()[:73],
    "v1 75 bytes": v1_payload() + b"\x00",
    "v2 82 bytes": v2_head()[:82],
    "v2 1 byte": b"\x02",
    "count larger than entries": v2_head(count=2) + entries(b"pro"),
    "count without entries": v2_head(count=1),
    "entry runs past the end": v2_head(count=1) + b"\x05pro",
    "entry length 255 at the end": v2_head(count=1) + b"\xff",
    "one trailing byte": v2_head(count=1) + entries(b"pro") + b"\x00",
    "trailing byte without entitlements": v2_head() + b"\x00",
    "not utf-8": v2_head(count=1) + entries(b"\xff"),
    "overlong utf-8": v2_head(count=1) + entries(b"\xc0\xaf"),
    "utf-8 surrogate": v2_head(count=1) + entries(b"\xed\xa0\x80"),
    "truncated utf-8": v2_head(count=1) + entries("é".encode()[:1]),
}


@pytest.mark.parametrize("payload", STRUCTURE_CASES.values(), ids=STRUCTURE_CASES.keys())
def test_structure_is_bad_payload(signing_key: Ed25519PrivateKey, payload: bytes) -> None:
    key = sign_raw(payload, signing_key)
    assert format_error(key).kind == "bad_payload"
    with pytest.raises(KeyFormatError):
        verify_key(key, signing_key.public_key())


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (v1_payload()[:73], "v1 payload must be 74 bytes, got 73"),
        (v2_head()[:82], "v2 payload must be at least 83 bytes, got 82"),
        (v2_head() + b"\x00", "v2 payload has 1 trailing byte"),
        (v2_head(count=1) + entries(b"pro") + b"\x00\x00", "v2 payload has 2 trailing bytes"),
        (b"", "payload is empty"),
    ],
)
def test_structure_details(signing_key: Ed25519PrivateKey, payload: bytes, detail: str) -> None:
    error = format_error(sign_raw(payload, signing_key))
    assert error.kind == "bad_payload"
    assert error.detail == detail


@pytest.mark.parametrize("version", [0, 3, 9, 10, 255])
def test_unsupported_versions(signing_key: Ed25519PrivateKey, version: int) -> None:
    payload = bytes([version]) + v2_head()[1:]
    error = format_error(sign_raw(payload, signing_key))
    assert error.kind == "unsupported_version"
    assert str(error) == f"unsupported key version {version}"


# --- encoding ---------------------------------------------------------------------------


def valid_sections(key: Ed25519PrivateKey) -> tuple[str, str]:
    _, payload, signature = encode_key(fields(entitlements=("pro",)), key).split("-")
    return payload, signature


@pytest.mark.parametrize("char", ["0", "1", "8", "9", "=", "*", " ", "é"])
def test_bad_character_in_payload_section(signing_key: Ed25519PrivateKey, char: str) -> None:
    payload, signature = valid_sections(signing_key)
    error = format_error(f"LIC1-{payload[:10]}{char}{payload[11:]}-{signature}")
    assert error.kind == "bad_encoding"
    assert error.detail == "payload section is not valid base32"


def test_dash_inside_payload_pushes_the_rest_into_the_signature(
    signing_key: Ed25519PrivateKey,
) -> None:
    payload, signature = valid_sections(signing_key)
    error = format_error(f"LIC1-{payload[:16]}-{payload[16:]}-{signature}")
    assert error.kind == "bad_encoding"
    assert error.detail == "signature section is not valid base32"


@pytest.mark.parametrize("char", ["0", "1", "8", "9", "=", "*", " ", "é"])
def test_bad_character_in_signature_section(signing_key: Ed25519PrivateKey, char: str) -> None:
    payload, signature = valid_sections(signing_key)
    error = format_error(f"LIC1-{payload}-{signature[:10]}{char}{signature[11:]}")
    assert error.kind == "bad_encoding"
    assert error.detail == "signature section is not valid base32"


def set_low_bit(section: str) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    last = alphabet.index(section[-1])
    return section[:-1] + alphabet[last | 1]


def test_non_zero_trailing_bits(signing_key: Ed25519PrivateKey) -> None:
    payload, signature = valid_sections(signing_key)
    # 87 bytes and 64 bytes both leave unused low bits in the last character.
    assert (len(payload) * 5) % 8 != 0
    assert set_low_bit(payload) != payload
    assert format_error(f"LIC1-{set_low_bit(payload)}-{signature}").detail == (
        "payload section is not valid base32"
    )
    assert set_low_bit(signature) != signature
    assert format_error(f"LIC1-{payload}-{set_low_bit(signature)}").detail == (
        "signature section is not valid base32"
    )


@pytest.mark.parametrize("extra", [1, 3, 6])
def test_impossible_section_lengths(signing_key: Ed25519PrivateKey, extra: int) -> None:
    payload, signature = valid_sections(signing_key)
    bad_payload = "A" * (8 * 17 + extra)
    assert format_error(f"LIC1-{bad_payload}-{signature}").kind == "bad_encoding"
    bad_signature = "A" * (8 * 13 + extra)
    error = format_error(f"LIC1-{payload}-{bad_signature}")
    assert error.detail == "signature section is not valid base32"


def test_padded_sections_are_refused(signing_key: Ed25519PrivateKey) -> None:
    payload, signature = valid_sections(signing_key)
    assert format_error(f"LIC1-{payload}{'=' * (-len(payload) % 8)}-{signature}").kind == (
        "bad_encoding"
    )
    assert format_error(f"LIC1-{payload}-{signature}=").kind == "bad_encoding"


def test_fourth_section_stays_in_the_signature(signing_key: Ed25519PrivateKey) -> None:
    key = encode_key(fields(), signing_key)
    error = format_error(key + "-AAAA")
    assert error.kind == "bad_encoding"
    assert error.detail == "signature section is not valid base32"


@pytest.mark.parametrize(
    "make",
    [
        lambda k: "-".join(k.split("-")[:2]),
        lambda k: k.split("-", 1)[1],
        lambda k: "lic1" + k[4:],
        lambda k: "LIC2" + k[4:],
        lambda k: "Lic1" + k[4:],
        lambda k: "LIC1 " + k[4:],
        lambda k: "LIC" + k[4:],
        lambda k: k.replace("-", "_"),
        lambda k: k.replace("-", "\u2010"),
        lambda k: k.lower(),
    ],
    ids=[
        "two sections",
        "no prefix",
        "lic1",
        "LIC2",
        "Lic1",
        "space before dash",
        "LIC",
        "underscores",
        "unicode hyphen",
        "whole key lower-case",
    ],
)
def test_malformed(signing_key: Ed25519PrivateKey, make: Callable[[str], str]) -> None:
    key = encode_key(fields(), signing_key)
    error = format_error(make(key))
    assert error.kind == "malformed"
    assert error.detail == "expected LIC1-<payload>-<signature>"


def test_step_order(signing_key: Ed25519PrivateKey) -> None:
    payload, signature = valid_sections(signing_key)
    version_9 = b32(b"\x09")
    short_signature = b32(bytes(63))
    assert format_error(f"LIC2-{payload}0-{signature}0").kind == "malformed"
    assert format_error(f"LIC1-{payload}0-{signature}0").detail.startswith("payload")
    assert format_error(f"LIC1-{payload}-{signature}0").detail.startswith("signature")
    assert format_error(f"LIC1-{version_9}-{short_signature}").kind == "bad_signature_length"
    assert format_error(f"LIC1--{short_signature}").kind == "bad_signature_length"
    assert format_error(f"LIC1--{signature}").kind == "bad_payload"
    assert format_error(f"LIC1-{version_9}-{signature}").kind == "unsupported_version"


# --- tolerated --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        lambda k: f"  {k}  ",
        lambda k: f"\t{k}\t",
        lambda k: f"\n{k}\n",
        lambda k: f"\r\n {k}\r\n",
        lambda k: f"{k}\n",
    ],
    ids=["spaces", "tabs", "newlines", "crlf", "trailing newline"],
)
def test_surrounding_whitespace_is_tolerated(
    signing_key: Ed25519PrivateKey, wrap: Callable[[str], str]
) -> None:
    key = encode_key(fields(entitlements=("pro",)), signing_key)
    parsed = verify_key(wrap(key), signing_key.public_key())
    assert parsed == parse_key(key)
    assert normalize_key_text(wrap(key)) == key


def test_lower_case_sections_are_tolerated(signing_key: Ed25519PrivateKey) -> None:
    key = encode_key(fields(entitlements=("pro",)), signing_key)
    _, payload, signature = key.split("-")
    for variant in (
        f"LIC1-{payload.lower()}-{signature.lower()}",
        f"LIC1-{payload.lower()}-{signature}",
        f"LIC1-{payload}-{signature.swapcase()}",
    ):
        assert verify_key(variant, signing_key.public_key()) == parse_key(key)
        assert normalize_key_text(variant) == key


def test_normalize_key_text_leaves_prefix_and_non_ascii() -> None:
    assert normalize_key_text(" lic1-abc-def ") == "lic1-ABC-DEF"
    assert normalize_key_text("LIC1-abc-de-f") == "LIC1-ABC-DE-F"
    assert normalize_key_text("notakey ") == "notakey"
    assert normalize_key_text("LIC1-a\u00df-b") == "LIC1-A\u00df-B"
    assert normalize_key_text("LIC1-\u0131-b") == "LIC1-\u0131-B"


# --- flags ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "trial", "bound"),
    [(0x02, True, False), (0x03, True, True), (0x01, False, True), (0x00, False, False)],
)
def test_v1_flags(signing_key: Ed25519PrivateKey, flags: int, trial: bool, bound: bool) -> None:
    parsed = verify_key(sign_raw(v1_payload(flags=flags), signing_key), signing_key.public_key())
    assert parsed.is_trial is trial
    assert parsed.is_fingerprint_bound is bound


@pytest.mark.parametrize("flags", [0xFC, 0xFD, 0xFE, 0xFF, 0x04, 0x80])
@pytest.mark.parametrize("version", [1, 2])
def test_unused_flag_bits_are_ignored(
    signing_key: Ed25519PrivateKey, flags: int, version: int
) -> None:
    payload = v1_payload(flags=flags) if version == 1 else v2_head(flags=flags)
    parsed = verify_key(sign_raw(payload, signing_key), signing_key.public_key())
    assert parsed.flags == flags
    assert parsed.is_fingerprint_bound is bool(flags & 0x01)
    assert parsed.is_trial is bool(flags & 0x02)


# --- emitter ----------------------------------------------------------------------------

ISSUED = datetime(2024, 3, 1, 12, 30, 15, 999_999, tzinfo=UTC)
EXPIRES = datetime(2025, 3, 1, 12, 30, 15, 500_000, tzinfo=UTC)


def derive(
    key: Ed25519PrivateKey,
    *,
    product_id: str | uuid.UUID = str(PRODUCT),
    license_id: str | uuid.UUID = LICENSE,
    issued_at: datetime = ISSUED,
    expires_at: datetime | None = EXPIRES,
    is_trial: bool = True,
    entitlements: Sequence[str] = ("pro", "multi-device"),
) -> str:
    return derive_key(
        product_id=product_id,
        license_id=license_id,
        issued_at=issued_at,
        expires_at=expires_at,
        is_trial=is_trial,
        entitlements=entitlements,
        private_key=key,
    )


def test_derive_key_is_deterministic(signing_key: Ed25519PrivateKey) -> None:
    first = derive(signing_key)
    assert derive(signing_key) == first
    assert derive(signing_key, product_id=PRODUCT, license_id=str(LICENSE).upper()) == first


def test_derive_key_follows_the_emitter_rules(signing_key: Ed25519PrivateKey) -> None:
    parsed = verify_key(derive(signing_key), signing_key.public_key())
    assert parsed.version == 2
    assert parsed.flags == FLAG_TRIAL
    assert parsed.product_id == PRODUCT
    assert parsed.license_id == LICENSE
    assert parsed.issued_at == 1_709_296_215
    assert parsed.expires_at == 1_740_832_215
    assert parsed.fingerprint_hash == ZERO_FINGERPRINT_HASH
    assert parsed.entitlements == ("pro", "multi-device")


def test_derive_key_non_trial_perpetual(signing_key: Ed25519PrivateKey) -> None:
    parsed = parse_key(derive(signing_key, is_trial=False, expires_at=None, entitlements=()))
    assert parsed.flags == 0
    assert parsed.expires_at == 0
    assert parsed.entitlements == ()
    assert len(parsed.payload) == 83


def test_derive_key_converts_other_time_zones(signing_key: Ed25519PrivateKey) -> None:
    shifted = ISSUED.astimezone(timezone(timedelta(hours=-7, minutes=-30)))
    assert derive(signing_key, issued_at=shifted) == derive(signing_key)


def test_derive_key_changes_with_the_row(signing_key: Ed25519PrivateKey) -> None:
    old = derive(signing_key)
    renewed = derive(signing_key, expires_at=EXPIRES + timedelta(days=365))
    assert renewed != old
    assert derive(signing_key, is_trial=False) != old
    assert derive(signing_key, entitlements=["multi-device", "pro"]) != old
    assert verify_key(old, signing_key.public_key()).expires_at == 1_740_832_215


def test_derive_key_keeps_order_and_duplicates(signing_key: Ed25519PrivateKey) -> None:
    parsed = parse_key(derive(signing_key, entitlements=["b", "a", "b"]))
    assert parsed.entitlements == ("b", "a", "b")


def test_derive_key_refuses_naive_datetimes(signing_key: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        derive(signing_key, issued_at=datetime(2024, 1, 1))


@pytest.mark.parametrize(
    "entitlements",
    [
        [""],
        ["pro", ""],
        ["a" * 256],
        ["é" * 128],
        [f"e{i}" for i in range(256)],
        ["\ud800"],
    ],
    ids=["empty", "empty second", "256 bytes", "256 utf-8 bytes", "256 entries", "surrogate"],
)
def test_emitter_refuses_bad_entitlements(
    signing_key: Ed25519PrivateKey, entitlements: list[str]
) -> None:
    with pytest.raises(ValueError):
        derive(signing_key, entitlements=entitlements)
    with pytest.raises(ValueError):
        encode_payload(fields(entitlements=tuple(entitlements)))


@pytest.mark.parametrize(
    "bad",
    [
        fields(version=1),
        fields(version=3),
        fields(flags=256),
        fields(flags=-1),
        fields(issued_at=-1),
        fields(expires_at=2**64),
        fields(fingerprint=bytes(31)),
        fields(fingerprint=bytes(33)),
    ],
)
def test_emitter_refuses_unrepresentable_fields(
    signing_key: Ed25519PrivateKey, bad: KeyFields
) -> None:
    with pytest.raises(ValueError):
        encode_payload(bad)
    with pytest.raises(ValueError):
        encode_key(bad, signing_key)


def test_encode_key_general_fields(signing_key: Ed25519PrivateKey) -> None:
    original = fields(
        flags=FLAG_FINGERPRINT_BOUND | FLAG_TRIAL | 0x40,
        issued_at=2**64 - 1,
        expires_at=2**64 - 1,
        fingerprint=fingerprint_hash("machine"),
        entitlements=("x",),
    )
    parsed = verify_key(encode_key(original, signing_key), signing_key.public_key())
    assert as_fields(parsed) == original
    assert parsed.payload == encode_payload(original)


def test_encode_key_output_is_canonical(signing_key: Ed25519PrivateKey) -> None:
    key = encode_key(fields(entitlements=("pro",)), signing_key)
    _, payload, signature = key.split("-")
    assert payload == payload.upper()
    assert signature == signature.upper()
    assert "=" not in key
    assert b32decode(payload) is not None
    assert normalize_key_text(key) == key


# --- unix seconds -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "seconds"),
    [
        (datetime(1970, 1, 1, tzinfo=UTC), 0),
        (datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), 1_700_000_000),
        (datetime(2023, 11, 14, 22, 13, 20, 999_999, tzinfo=UTC), 1_700_000_000),
        (datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), -1),
        (datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC), -1),
        (datetime(1900, 1, 1, tzinfo=UTC), -2_208_988_800),
        (datetime(2023, 11, 15, 0, 13, 20, tzinfo=timezone(timedelta(hours=2))), 1_700_000_000),
    ],
)
def test_unix_seconds(moment: datetime, seconds: int) -> None:
    assert unix_seconds(moment) == seconds


def test_unix_seconds_refuses_naive() -> None:
    with pytest.raises(ValueError):
        unix_seconds(datetime(2024, 1, 1))
