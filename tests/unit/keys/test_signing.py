"""The server signing key: PEM forms (spec 9.2, 9.3) and the loader (9.4, 10.6 key files)."""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from keysat.keys import (
    KeyFileError,
    check_key_pair,
    generate_private_key,
    load_private_key_pem,
    load_public_key_pem,
    private_key_to_pem,
    public_key_raw,
    public_key_to_pem,
)

SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
# RFC 8032 section 7.1, test 1: the public key belonging to SEED.
PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
V1_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
V2_PREFIX = bytes.fromhex("3051020101300506032b657004220420")
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def pem(label: str, der: bytes, width: int = 64, newline: str = "\n") -> str:
    body = base64.b64encode(der).decode("ascii")
    lines = [f"-----BEGIN {label}-----", *textwrap.wrap(body, width), f"-----END {label}-----"]
    return newline.join(lines) + newline


def v1_der(seed: bytes = SEED) -> bytes:
    return V1_PREFIX + seed


def v2_der(seed: bytes = SEED, public: bytes = PUBLIC) -> bytes:
    return V2_PREFIX + seed + b"\x81\x21\x00" + public


def seed_of(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def assert_no_key_material(error: Exception, *secrets: bytes) -> None:
    message = str(error)
    for secret in (SEED, *secrets):
        assert secret.hex() not in message
        assert base64.b64encode(secret).decode()[:16] not in message


# --- generation and output forms --------------------------------------------------------


def test_generate_private_key_is_random() -> None:
    first, second = generate_private_key(), generate_private_key()
    assert isinstance(first, Ed25519PrivateKey)
    assert seed_of(first) != seed_of(second)


def test_private_key_pem_is_pkcs8_v1_byte_for_byte() -> None:
    key = Ed25519PrivateKey.from_private_bytes(SEED)
    text = private_key_to_pem(key)
    assert text == pem("PRIVATE KEY", v1_der())
    lines = text.split("\n")
    assert lines[0] == "-----BEGIN PRIVATE KEY-----"
    assert len(lines[1]) == 64
    assert lines[1].startswith("MC4CAQAwBQYDK2VwBCIEI")
    assert lines[2:] == ["-----END PRIVATE KEY-----", ""]
    assert "\r" not in text
    assert len(base64.b64decode(lines[1])) == 48


def test_public_key_pem_is_spki_byte_for_byte() -> None:
    key = Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    text = public_key_to_pem(key)
    assert text == pem("PUBLIC KEY", SPKI_PREFIX + PUBLIC)
    lines = text.split("\n")
    assert lines[0] == "-----BEGIN PUBLIC KEY-----"
    assert len(lines[1]) == 60
    assert lines[1].startswith("MCowBQYDK2VwAyEA")
    assert lines[2:] == ["-----END PUBLIC KEY-----", ""]
    assert base64.b64decode(lines[1])[-32:] == PUBLIC


def test_generated_keys_survive_the_pem_round_trip() -> None:
    key = generate_private_key()
    loaded = load_private_key_pem(private_key_to_pem(key))
    assert seed_of(loaded) == seed_of(key)
    public = load_public_key_pem(public_key_to_pem(key.public_key()))
    assert public_key_raw(public) == public_key_raw(key.public_key())
    assert seed_of(check_key_pair(private_key_to_pem(key), public_key_to_pem(public))) == (
        seed_of(key)
    )


# --- loading private keys ---------------------------------------------------------------


def test_load_v1_pem() -> None:
    key = load_private_key_pem(pem("PRIVATE KEY", v1_der()))
    assert seed_of(key) == SEED
    assert public_key_raw(key.public_key()) == PUBLIC


def test_load_keysat_v2_pem() -> None:
    text = pem("PRIVATE KEY", v2_der())
    body = text.split("\n")[1:3]
    assert [len(line) for line in body] == [64, 48]
    assert body[0].startswith("MFECAQEwBQYDK2VwBCIEI")
    assert len(v2_der()) == 83
    key = load_private_key_pem(text)
    assert seed_of(key) == SEED
    # Re-stored in the server's own form, the key material is unchanged.
    assert private_key_to_pem(key) == pem("PRIVATE KEY", v1_der())


LAYOUTS: dict[str, Callable[[bytes], str]] = {
    "crlf": lambda der: pem("PRIVATE KEY", der, newline="\r\n"),
    "wrapped at 16": lambda der: pem("PRIVATE KEY", der, width=16),
    "wrapped at 76": lambda der: pem("PRIVATE KEY", der, width=76),
    "one body line": lambda der: pem("PRIVATE KEY", der, width=1000),
    "surrounding whitespace": lambda der: "\n\n  \t" + pem("PRIVATE KEY", der) + "\n  \n",
    "no trailing newline": lambda der: pem("PRIVATE KEY", der).rstrip("\n"),
    "indented lines": lambda der: "\n".join(
        "    " + line for line in pem("PRIVATE KEY", der).split("\n")
    ),
    "single line": lambda der: pem("PRIVATE KEY", der).replace("\n", " "),
    "crlf wrapped at 8": lambda der: pem("PRIVATE KEY", der, width=8, newline="\r\n"),
}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("der", [v1_der(), v2_der()], ids=["v1", "v2"])
def test_tolerated_pem_layouts(layout: Callable[[bytes], str], der: bytes) -> None:
    assert seed_of(load_private_key_pem(layout(der))) == SEED


def test_v2_with_mismatched_embedded_public_key_is_refused() -> None:
    other = public_key_raw(generate_private_key().public_key())
    with pytest.raises(KeyFileError, match=r"^embedded public key does not match$") as caught:
        load_private_key_pem(pem("PRIVATE KEY", v2_der(public=other)))
    assert_no_key_material(caught.value, other)


def test_v2_with_one_flipped_public_key_bit_is_refused() -> None:
    public = bytearray(PUBLIC)
    public[31] ^= 0x01
    with pytest.raises(KeyFileError, match="embedded public key does not match"):
        load_private_key_pem(pem("PRIVATE KEY", v2_der(public=bytes(public))))


def pkcs8(key: ec.EllipticCurvePrivateKey | ed448.Ed448PrivateKey | x25519.X25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


@pytest.mark.parametrize(
    "text",
    [
        pkcs8(ec.generate_private_key(ec.SECP256R1())),
        pkcs8(ed448.Ed448PrivateKey.generate()),
        pkcs8(x25519.X25519PrivateKey.generate()),
        pem("PRIVATE KEY", b"\x30\x03\x02\x01\x00"),
        pem("PRIVATE KEY", bytes(48)),
        pem("PRIVATE KEY", v1_der()[:47]),
        pem("PRIVATE KEY", v1_der() + b"\x00"),
        pem("PRIVATE KEY", v2_der()[:82]),
        pem("PRIVATE KEY", V2_PREFIX + SEED + b"\x81\x22\x00" + PUBLIC),
        pem("PRIVATE KEY", b""),
    ],
    ids=[
        "ec p-256",
        "ed448",
        "x25519",
        "tiny der",
        "48 zero bytes",
        "v1 47 bytes",
        "v1 49 bytes",
        "v2 82 bytes",
        "v2 bad public key tag",
        "empty body",
    ],
)
def test_unsupported_private_keys_are_refused(text: str) -> None:
    with pytest.raises(KeyFileError, match=r"^unsupported private key format$") as caught:
        load_private_key_pem(text)
    assert_no_key_material(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a PEM block labelled PRIVATE KEY"),
        ("not a key", "expected a PEM block labelled PRIVATE KEY"),
        (base64.b64encode(v1_der()).decode(), "expected a PEM block labelled PRIVATE KEY"),
        (pem("PUBLIC KEY", v1_der()), "got PUBLIC KEY"),
        (pem("EC PRIVATE KEY", v1_der()), "got EC PRIVATE KEY"),
        (pem("ENCRYPTED PRIVATE KEY", v1_der()), "got ENCRYPTED PRIVATE KEY"),
        (pem("PRIVATE KEY", v1_der()).replace("MC4C", "MC4*"), "labelled PRIVATE KEY"),
        (pem("PRIVATE KEY", v1_der()).replace("MC4C", "MC4=="), "not valid base64"),
        (pem("PRIVATE KEY", v1_der()).replace("END PRIVATE", "END PUBLIC"), "labelled"),
        (pem("PRIVATE KEY", v1_der()) * 2, "labelled PRIVATE KEY"),
        ("junk\n" + pem("PRIVATE KEY", v1_der()), "labelled PRIVATE KEY"),
    ],
)
def test_malformed_private_pem_is_refused(text: str, message: str) -> None:
    with pytest.raises(KeyFileError, match=message) as caught:
        load_private_key_pem(text)
    assert_no_key_material(caught.value)


def test_ec_private_key_in_traditional_form_is_refused() -> None:
    text = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(KeyFileError):
        load_private_key_pem(text)


def test_key_file_error_is_a_value_error() -> None:
    assert issubclass(KeyFileError, ValueError)


# --- loading public keys ----------------------------------------------------------------


def test_load_public_key_tolerates_layouts() -> None:
    der = SPKI_PREFIX + PUBLIC
    for text in (
        pem("PUBLIC KEY", der),
        pem("PUBLIC KEY", der, newline="\r\n"),
        pem("PUBLIC KEY", der, width=20),
        "  " + pem("PUBLIC KEY", der) + "\n\n",
    ):
        key = load_public_key_pem(text)
        assert isinstance(key, Ed25519PublicKey)
        assert public_key_raw(key) == PUBLIC


@pytest.mark.parametrize(
    "text",
    [
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode(),
        pem("PUBLIC KEY", PUBLIC),
        pem("PUBLIC KEY", SPKI_PREFIX + PUBLIC[:31]),
        pem("PUBLIC KEY", b""),
    ],
    ids=["ec p-256", "raw 32 bytes", "short spki", "empty"],
)
def test_unsupported_public_keys_are_refused(text: str) -> None:
    with pytest.raises(KeyFileError, match=r"^unsupported public key format$"):
        load_public_key_pem(text)


def test_private_key_is_not_a_public_key() -> None:
    with pytest.raises(KeyFileError, match="expected a PEM block labelled PUBLIC KEY"):
        load_public_key_pem(pem("PRIVATE KEY", v1_der()))


# --- the stored pair --------------------------------------------------------------------


def test_check_key_pair_accepts_matching_halves() -> None:
    public_pem = pem("PUBLIC KEY", SPKI_PREFIX + PUBLIC)
    for private_pem in (pem("PRIVATE KEY", v1_der()), pem("PRIVATE KEY", v2_der())):
        assert seed_of(check_key_pair(private_pem, public_pem)) == SEED


def test_check_key_pair_refuses_mismatch() -> None:
    other = generate_private_key()
    with pytest.raises(
        KeyFileError, match=r"^stored public key does not match the private key$"
    ) as caught:
        check_key_pair(pem("PRIVATE KEY", v1_der()), public_key_to_pem(other.public_key()))
    assert_no_key_material(caught.value, seed_of(other), public_key_raw(other.public_key()))


def test_check_key_pair_reports_unreadable_halves() -> None:
    with pytest.raises(KeyFileError, match="unsupported private key format"):
        check_key_pair(pem("PRIVATE KEY", bytes(48)), pem("PUBLIC KEY", SPKI_PREFIX + PUBLIC))
    with pytest.raises(KeyFileError, match="unsupported public key format"):
        check_key_pair(pem("PRIVATE KEY", v1_der()), pem("PUBLIC KEY", PUBLIC))
