"""The official cross-language vectors (spec section 10.5) against our codec."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keysat.keys import (
    KeyFields,
    KeyFormatError,
    encode_payload,
    fingerprint_hash,
    fingerprint_hash_hex,
    has_entitlement,
    is_expired_at,
    load_public_key_pem,
    parse_key,
    public_key_raw,
    public_key_to_pem,
    verify_key,
)

FIXTURES = ["v1", "v2", "v2_perpetual_unbound"]
PRODUCT = "6f46a4f6-0d2f-4a28-b6aa-3e8fbf6f28f0"
FINGERPRINT = "d34461ff63170de633b5aa2512ce2e15ac120b1c325acdada67c02e594ba3b3d"

# Section 10.2 to 10.4, field by field, written out independently of the JSON file.
EXPECTED_PAYLOAD_HEX = {
    "v1": "01"
    "01"
    "6f46a4f60d2f4a28b6aa3e8fbf6f28f0"
    "11111111222233334444555555555555"
    "000000006553f100" + FINGERPRINT,
    "v2": "02"
    "03"
    "6f46a4f60d2f4a28b6aa3e8fbf6f28f0"
    "aaaaaaaabbbbccccddddeeeeeeeeeeee"
    "000000006553f100"
    "00000000713fb300" + FINGERPRINT + "02"
    "0370726f"
    "0c6d756c74692d646576696365",
    "v2_perpetual_unbound": "02"
    "00"
    "6f46a4f60d2f4a28b6aa3e8fbf6f28f0"
    "aaaaaaaabbbbccccddddeeeeeeeeeeee"
    "000000006553f100"
    "0000000000000000" + "00" * 32 + "00",
}
EXPECTED_SIZES = {
    "v1": (74, 119, 228),
    "v2": (100, 160, 269),
    "v2_perpetual_unbound": (83, 133, 242),
}


def test_vector_file_is_the_official_copy(vector_path: Path) -> None:
    data = vector_path.read_bytes()
    assert len(data) == 2442
    assert (
        hashlib.sha256(data).hexdigest()
        == "45bc5ea4fd3a8bee0785d1ffe3e96242e532e4821b6c75fc7bf1f1b94eb70e49"
    )


@pytest.mark.parametrize("name", FIXTURES)
def test_parse_matches_expected(vectors: dict[str, Any], name: str) -> None:
    fixture = vectors[name]
    expected = fixture["expected"]
    parsed = parse_key(fixture["licenseKey"])
    assert parsed.version == expected["version"]
    assert str(parsed.product_id) == expected["productUuid"]
    assert str(parsed.license_id) == expected["licenseUuid"]
    assert parsed.issued_at == expected["issuedAt"]
    assert parsed.expires_at == expected["expiresAt"]
    assert parsed.flags == expected["flags"]
    assert parsed.is_fingerprint_bound is expected["isFingerprintBound"]
    assert parsed.is_trial is expected["isTrial"]
    assert list(parsed.entitlements) == expected["entitlements"]
    assert parsed.fingerprint_hash.hex() == expected["fingerprintHashHex"]
    assert len(parsed.signature) == 64


@pytest.mark.parametrize("name", FIXTURES)
def test_payload_bytes_and_sizes(vectors: dict[str, Any], name: str) -> None:
    key = vectors[name]["licenseKey"]
    parsed = parse_key(key)
    assert parsed.payload.hex() == EXPECTED_PAYLOAD_HEX[name]
    payload_bytes, payload_chars, total = EXPECTED_SIZES[name]
    assert len(parsed.payload) == payload_bytes
    assert len(key.split("-")[1]) == payload_chars
    assert len(key.split("-")[2]) == 103
    assert len(key) == total


@pytest.mark.parametrize("name", ["v2", "v2_perpetual_unbound"])
def test_our_emitter_reproduces_v2_payloads(vectors: dict[str, Any], name: str) -> None:
    parsed = parse_key(vectors[name]["licenseKey"])
    fields = KeyFields(
        version=parsed.version,
        flags=parsed.flags,
        product_id=parsed.product_id,
        license_id=parsed.license_id,
        issued_at=parsed.issued_at,
        expires_at=parsed.expires_at,
        fingerprint_hash=parsed.fingerprint_hash,
        entitlements=parsed.entitlements,
    )
    assert encode_payload(fields) == parsed.payload


@pytest.mark.parametrize("name", FIXTURES)
def test_verify_each_fixture(
    vectors: dict[str, Any], vector_public_key: Ed25519PublicKey, name: str
) -> None:
    verified = verify_key(vectors[name]["licenseKey"], vector_public_key)
    assert str(verified.product_id) == PRODUCT
    assert verified.issued_at == 1_700_000_000


@pytest.mark.parametrize("name", ["v1", "v2"])
def test_fingerprint_raw_hashes_to_embedded_hash(vectors: dict[str, Any], name: str) -> None:
    expected = vectors[name]["expected"]
    assert expected["fingerprintRaw"] == "test-machine-fingerprint"
    assert fingerprint_hash_hex(expected["fingerprintRaw"]) == expected["fingerprintHashHex"]
    assert (
        fingerprint_hash(expected["fingerprintRaw"])
        == parse_key(vectors[name]["licenseKey"]).fingerprint_hash
    )


def test_unbound_fixture_has_no_fingerprint(vectors: dict[str, Any]) -> None:
    assert vectors["v2_perpetual_unbound"]["expected"]["fingerprintRaw"] is None


def test_sha256_hello() -> None:
    assert (
        fingerprint_hash_hex("hello")
        == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    )


@pytest.mark.parametrize("name", FIXTURES)
def test_tampered_first_payload_character_is_a_format_error(
    vectors: dict[str, Any], vector_public_key: Ed25519PublicKey, name: str
) -> None:
    key: str = vectors[name]["licenseKey"]
    first = key[5]
    tampered = key[:5] + ("C" if first == "B" else "B") + key[6:]
    assert tampered != key
    with pytest.raises(KeyFormatError) as parse_error:
        parse_key(tampered)
    assert parse_error.value.kind == "unsupported_version"
    assert str(parse_error.value) in {"unsupported key version 9", "unsupported key version 10"}
    with pytest.raises(KeyFormatError):
        verify_key(tampered, vector_public_key)


def test_v2_expiry_boundaries(vectors: dict[str, Any]) -> None:
    parsed = parse_key(vectors["v2"]["licenseKey"])
    expires_at = vectors["v2"]["expected"]["expiresAt"]
    assert is_expired_at(parsed, expires_at) is True
    assert is_expired_at(parsed, expires_at - 1) is False
    assert is_expired_at(parsed, expires_at + 3600) is True


@pytest.mark.parametrize("now", [4_000_000_000, 9_999_999_999])
def test_perpetual_never_expires(vectors: dict[str, Any], now: int) -> None:
    assert is_expired_at(parse_key(vectors["v2_perpetual_unbound"]["licenseKey"]), now) is False


def test_v2_entitlements(vectors: dict[str, Any]) -> None:
    parsed = parse_key(vectors["v2"]["licenseKey"])
    assert has_entitlement(parsed, "pro") is True
    assert has_entitlement(parsed, "multi-device") is True
    assert has_entitlement(parsed, "definitely-not-a-real-entitlement") is False


@pytest.mark.parametrize("text", ["notakey", "LIC9-AAAA-BBBB", ""])
def test_garbage_is_a_format_error(text: str) -> None:
    with pytest.raises(KeyFormatError) as caught:
        parse_key(text)
    assert caught.value.kind == "malformed"


def test_public_key_pem(vectors: dict[str, Any]) -> None:
    pem = vectors["publicKeyPem"]
    assert "BEGIN PUBLIC KEY" in pem
    key = load_public_key_pem(pem)
    assert isinstance(key, Ed25519PublicKey)
    assert (
        public_key_raw(key).hex()
        == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    )
    assert public_key_to_pem(key) == pem
