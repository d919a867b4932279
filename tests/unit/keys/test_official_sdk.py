"""The official Python SDK accepts what our emitter makes (spec 10.6).

Keys come from a throwaway key pair made at test time; a vector file in the official
format is generated from our own emitter and checked the way the official suites do.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keysat_licensing_client as sdk
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keysat.keys import (
    FLAG_FINGERPRINT_BOUND,
    FLAG_TRIAL,
    KeyFields,
    derive_key,
    encode_key,
    fingerprint_hash,
    fingerprint_hash_hex,
    load_public_key_pem,
    parse_key,
    public_key_to_pem,
    verify_key,
)
from keysat.keys.codec import b32encode

PRODUCT = uuid.UUID("0b8e2c4d-7f61-4a3e-9c15-2d6f8a9b0c1e")
LICENSE = uuid.UUID("5e3f1a2b-c4d5-4e6f-8a9b-0c1d2e3f4a5b")
ISSUED = datetime(2024, 6, 1, 8, 0, 0, 250_000, tzinfo=UTC)
EXPIRES = datetime(2025, 6, 1, 8, 0, 0, tzinfo=UTC)
ISSUED_UNIX = 1_717_228_800
EXPIRES_UNIX = 1_748_764_800
MACHINE = "test-machine-fingerprint"


def verifier_for(key: Ed25519PrivateKey) -> sdk.Verifier:
    return sdk.Verifier(sdk.PublicKey.from_pem(public_key_to_pem(key.public_key())))


def test_sdk_verifies_trial_key_with_entitlements_and_expiry(
    signing_key: Ed25519PrivateKey,
) -> None:
    key = derive_key(
        product_id=PRODUCT,
        license_id=str(LICENSE),
        issued_at=ISSUED,
        expires_at=EXPIRES,
        is_trial=True,
        entitlements=["pro", "multi-device", "é-export"],
        private_key=signing_key,
    )
    ok = verifier_for(signing_key).verify(key)
    assert ok.product_id == PRODUCT
    assert ok.license_id == LICENSE
    assert ok.issued_at == ISSUED_UNIX
    assert ok.expires_at == EXPIRES_UNIX
    assert ok.is_trial is True
    assert ok.is_fingerprint_bound is False
    assert ok.fingerprint_hash == bytes(32)
    assert ok.entitlements == ["pro", "multi-device", "é-export"]
    assert sdk.is_expired_at(ok.payload, EXPIRES_UNIX) is True
    assert sdk.is_expired_at(ok.payload, EXPIRES_UNIX - 1) is False
    assert sdk.has_entitlement(ok.payload, "multi-device") is True
    assert sdk.has_entitlement(ok.payload, "Multi-Device") is False
    with pytest.raises(sdk.LicensingError) as caught:
        verifier_for(signing_key).verify_with_time(key, EXPIRES_UNIX)
    assert caught.value.kind == "expired"
    assert verifier_for(signing_key).verify_with_time(key, EXPIRES_UNIX - 1).license_id == LICENSE


def test_sdk_verifies_perpetual_unbound_key(signing_key: Ed25519PrivateKey) -> None:
    key = derive_key(
        product_id=str(PRODUCT),
        license_id=LICENSE,
        issued_at=ISSUED,
        expires_at=None,
        is_trial=False,
        entitlements=(),
        private_key=signing_key,
    )
    ok = verifier_for(signing_key).verify(key)
    assert ok.payload.version == 2
    assert ok.payload.flags == 0
    assert ok.expires_at == 0
    assert ok.entitlements == []
    assert ok.is_trial is False
    assert ok.is_fingerprint_bound is False
    assert sdk.is_expired_at(ok.payload, 9_999_999_999) is False
    assert len(key) == 242


def test_sdk_verifies_bound_key(signing_key: Ed25519PrivateKey) -> None:
    fields = KeyFields(
        version=2,
        flags=FLAG_FINGERPRINT_BOUND,
        product_id=PRODUCT,
        license_id=LICENSE,
        issued_at=ISSUED_UNIX,
        expires_at=0,
        fingerprint_hash=fingerprint_hash(MACHINE),
        entitlements=("pro",),
    )
    ok = verifier_for(signing_key).verify(encode_key(fields, signing_key))
    assert ok.is_fingerprint_bound is True
    assert ok.is_trial is False
    assert ok.fingerprint_hash.hex() == sdk.hash_fingerprint(MACHINE)
    assert sdk.hash_fingerprint(MACHINE) == fingerprint_hash_hex(MACHINE)


def test_sdk_accepts_lower_case_sections_like_we_do(signing_key: Ed25519PrivateKey) -> None:
    prefix, payload, signature = derive_key(
        product_id=PRODUCT,
        license_id=LICENSE,
        issued_at=ISSUED,
        expires_at=EXPIRES,
        is_trial=False,
        entitlements=["pro"],
        private_key=signing_key,
    ).split("-")
    key = f"  {prefix}-{payload.lower()}-{signature.lower()}\n"
    assert verifier_for(signing_key).verify(key).entitlements == ["pro"]
    assert verify_key(key, signing_key.public_key()).entitlements == ("pro",)


def test_sdk_rejects_tampered_key(signing_key: Ed25519PrivateKey) -> None:
    key = derive_key(
        product_id=PRODUCT,
        license_id=LICENSE,
        issued_at=ISSUED,
        expires_at=EXPIRES,
        is_trial=True,
        entitlements=["pro"],
        private_key=signing_key,
    )
    parsed = parse_key(key)
    payload = bytearray(parsed.payload)
    payload[42 + 7] ^= 0x01  # last byte of expires_at: a one-second extension
    tampered = f"LIC1-{b32encode(bytes(payload))}-{b32encode(parsed.signature)}"
    with pytest.raises(sdk.LicensingError) as caught:
        verifier_for(signing_key).verify(tampered)
    assert caught.value.kind == "bad_signature"


def test_sdk_rejects_key_from_another_issuer(
    signing_key: Ed25519PrivateKey, other_signing_key: Ed25519PrivateKey
) -> None:
    key = derive_key(
        product_id=PRODUCT,
        license_id=LICENSE,
        issued_at=ISSUED,
        expires_at=None,
        is_trial=False,
        entitlements=[],
        private_key=other_signing_key,
    )
    with pytest.raises(sdk.LicensingError) as caught:
        verifier_for(signing_key).verify(key)
    assert caught.value.kind == "bad_signature"


# --- a vector file in the official format, from our own emitter -------------------------


def expected_block(key: str, fingerprint_raw: str | None) -> dict[str, Any]:
    parsed = parse_key(key)
    return {
        "version": parsed.version,
        "productUuid": str(parsed.product_id),
        "licenseUuid": str(parsed.license_id),
        "issuedAt": parsed.issued_at,
        "expiresAt": parsed.expires_at,
        "flags": parsed.flags,
        "isFingerprintBound": parsed.is_fingerprint_bound,
        "isTrial": parsed.is_trial,
        "entitlements": list(parsed.entitlements),
        "fingerprintRaw": fingerprint_raw,
        "fingerprintHashHex": parsed.fingerprint_hash.hex(),
    }


def build_vector_file(private_key: Ed25519PrivateKey) -> dict[str, Any]:
    # The production emitter has no v1 path, so the legacy fixture is assembled by hand.
    v1_payload = (
        b"\x01"
        + bytes([FLAG_FINGERPRINT_BOUND])
        + PRODUCT.bytes
        + LICENSE.bytes
        + ISSUED_UNIX.to_bytes(8, "big")
        + fingerprint_hash(MACHINE)
    )
    v1 = f"LIC1-{b32encode(v1_payload)}-{b32encode(private_key.sign(v1_payload))}"
    v2 = encode_key(
        KeyFields(
            version=2,
            flags=FLAG_FINGERPRINT_BOUND | FLAG_TRIAL,
            product_id=PRODUCT,
            license_id=LICENSE,
            issued_at=ISSUED_UNIX,
            expires_at=EXPIRES_UNIX,
            fingerprint_hash=fingerprint_hash(MACHINE),
            entitlements=("pro", "multi-device"),
        ),
        private_key,
    )
    perpetual = derive_key(
        product_id=PRODUCT,
        license_id=LICENSE,
        issued_at=ISSUED,
        expires_at=None,
        is_trial=False,
        entitlements=[],
        private_key=private_key,
    )
    return {
        "publicKeyPem": public_key_to_pem(private_key.public_key()),
        "v1": {"licenseKey": v1, "expected": expected_block(v1, MACHINE)},
        "v2": {"licenseKey": v2, "expected": expected_block(v2, MACHINE)},
        "v2_perpetual_unbound": {
            "licenseKey": perpetual,
            "expected": expected_block(perpetual, None),
        },
    }


def write_vector_file(data: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("crosscheck") / "vector.json"
    write_vector_file(build_vector_file(Ed25519PrivateKey.generate()), path)
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


FIXTURES = ["v1", "v2", "v2_perpetual_unbound"]


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return type(value).__name__


def test_writer_reproduces_the_official_file(vectors: dict[str, Any], tmp_path: Path) -> None:
    official = Path(__file__).resolve().parents[2] / "crosscheck" / "vector.json"
    write_vector_file(vectors, tmp_path / "vector.json")
    assert (tmp_path / "vector.json").read_bytes() == official.read_bytes()


def test_generated_file_has_the_official_shape(
    generated: dict[str, Any], vectors: dict[str, Any]
) -> None:
    assert list(generated) == list(vectors)
    for name in FIXTURES:
        ours, theirs = shape(generated[name]), shape(vectors[name])
        ours["expected"]["fingerprintRaw"] = theirs["expected"]["fingerprintRaw"] = "str|None"
        assert ours == theirs


def test_generated_file_meets_the_official_constraints(generated: dict[str, Any]) -> None:
    v1, v2, perpetual = (generated[name]["expected"] for name in FIXTURES)
    assert v1["version"] == 1
    assert v1["flags"] & FLAG_FINGERPRINT_BOUND
    assert hashlib.sha256(v1["fingerprintRaw"].encode()).hexdigest() == v1["fingerprintHashHex"]
    assert v2["version"] == 2
    assert v2["isTrial"] is True
    assert v2["isFingerprintBound"] is True
    assert v2["expiresAt"] != 0
    assert len(v2["entitlements"]) >= 1
    assert perpetual["version"] == 2
    assert perpetual["expiresAt"] == 0
    assert perpetual["isFingerprintBound"] is False
    assert perpetual["fingerprintRaw"] is None
    for expected in (v1, v2, perpetual):
        for field in ("productUuid", "licenseUuid"):
            assert expected[field] == str(uuid.UUID(expected[field]))
    pem_lines = generated["publicKeyPem"].split("\n")
    assert pem_lines[0] == "-----BEGIN PUBLIC KEY-----"
    assert pem_lines[1].startswith("MCowBQYDK2VwAyEA")
    assert len(pem_lines[1]) == 60
    assert pem_lines[2:] == ["-----END PUBLIC KEY-----", ""]


@pytest.mark.parametrize("name", FIXTURES)
def test_sdk_parses_and_verifies_generated_fixture(generated: dict[str, Any], name: str) -> None:
    fixture = generated[name]
    expected = fixture["expected"]
    payload = sdk.parse_license_key(fixture["licenseKey"]).payload
    assert payload.version == expected["version"]
    assert str(payload.product_id) == expected["productUuid"]
    assert str(payload.license_id) == expected["licenseUuid"]
    assert payload.issued_at == expected["issuedAt"]
    assert payload.expires_at == expected["expiresAt"]
    assert payload.flags == expected["flags"]
    assert payload.is_fingerprint_bound is expected["isFingerprintBound"]
    assert payload.is_trial is expected["isTrial"]
    assert payload.entitlements == expected["entitlements"]
    assert payload.fingerprint_hash.hex() == expected["fingerprintHashHex"]
    if expected["fingerprintRaw"] is not None:
        assert sdk.hash_fingerprint(expected["fingerprintRaw"]) == expected["fingerprintHashHex"]

    ok = sdk.Verifier(sdk.PublicKey.from_pem(generated["publicKeyPem"])).verify(
        fixture["licenseKey"]
    )
    assert ok.payload == payload

    key: str = fixture["licenseKey"]
    tampered = key[:5] + ("C" if key[5] == "B" else "B") + key[6:]
    with pytest.raises(sdk.LicensingError) as caught:
        sdk.parse_license_key(tampered)
    assert caught.value.kind == "bad_format"


def test_sdk_semantics_on_generated_fixtures(generated: dict[str, Any]) -> None:
    v2 = sdk.parse_license_key(generated["v2"]["licenseKey"]).payload
    expires_at = generated["v2"]["expected"]["expiresAt"]
    assert sdk.is_expired_at(v2, expires_at) is True
    assert sdk.is_expired_at(v2, expires_at - 1) is False
    assert sdk.is_expired_at(v2, expires_at + 3600) is True
    assert sdk.has_entitlement(v2, "pro") is True
    assert sdk.has_entitlement(v2, "multi-device") is True
    assert sdk.has_entitlement(v2, "definitely-not-a-real-entitlement") is False
    perpetual = sdk.parse_license_key(generated["v2_perpetual_unbound"]["licenseKey"]).payload
    assert sdk.is_expired_at(perpetual, 4_000_000_000) is False
    assert sdk.is_expired_at(perpetual, 9_999_999_999) is False
    for text in ("notakey", "LIC9-AAAA-BBBB", ""):
        with pytest.raises(sdk.LicensingError) as caught:
            sdk.parse_license_key(text)
        assert caught.value.kind == "bad_format"


@pytest.mark.parametrize("name", FIXTURES)
def test_our_codec_verifies_generated_fixture(generated: dict[str, Any], name: str) -> None:
    parsed = verify_key(
        generated[name]["licenseKey"], load_public_key_pem(generated["publicKeyPem"])
    )
    assert parsed.product_id == PRODUCT
    assert parsed.license_id == LICENSE
    assert parsed.issued_at == ISSUED_UNIX
    assert parsed.expires_at == (EXPIRES_UNIX if name == "v2" else 0)
    assert parsed.fingerprint_hash == (
        bytes(32) if name == "v2_perpetual_unbound" else fingerprint_hash(MACHINE)
    )
