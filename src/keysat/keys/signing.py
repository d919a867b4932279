"""The server's Ed25519 signing key: generation, PEM forms and loading.

Error messages never include key material: they reach logs, the start-up failure and
admin responses.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

_PKCS8_V1_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_PKCS8_V1_LENGTH = 48
# Keysat 0.2.0 stored RFC 5958 OneAsymmetricKey (version 1, public key attached), which
# OpenSSL 3 refuses, so this form is taken apart by hand.
_PKCS8_V2_PREFIX = bytes.fromhex("3051020101300506032b657004220420")
_PKCS8_V2_PUBLIC_TAG = bytes.fromhex("812100")
_PKCS8_V2_LENGTH = 83
_SEED = slice(16, 48)

_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----([A-Za-z0-9+/=\s]*)-----END \1-----")


class KeyFileError(ValueError):
    """A stored or imported key cannot be used; the message is safe to show and log."""


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_to_pem(key: Ed25519PrivateKey) -> str:
    """PKCS#8 v1 PEM, the form Keysat 0.2.0 can read back too."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_key_to_pem(key: Ed25519PublicKey) -> str:
    """SPKI PEM; every SDK loads exactly this text, so it must never gain extras."""
    return key.public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    ).decode("ascii")


def public_key_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _pem_der(text: str, label: str) -> bytes:
    # Keys arrive pasted into forms, from environment variables and from other tools, so
    # line endings and wrapping are not trusted; only the label and the base64 body count.
    match = _PEM_BLOCK.fullmatch(text.strip())
    if match is None:
        raise KeyFileError(f"expected a PEM block labelled {label}")
    if match.group(1) != label:
        raise KeyFileError(f"expected a PEM block labelled {label}, got {match.group(1)}")
    try:
        return base64.b64decode("".join(match.group(2).split()), validate=True)
    except binascii.Error:
        raise KeyFileError(f"the {label} PEM body is not valid base64") from None


def load_private_key_pem(text: str) -> Ed25519PrivateKey:
    """Load an Ed25519 private key written by this server, Keysat 0.2.0 or common tools."""
    der = _pem_der(text, "PRIVATE KEY")
    if len(der) == _PKCS8_V1_LENGTH and der.startswith(_PKCS8_V1_PREFIX):
        return Ed25519PrivateKey.from_private_bytes(der[_SEED])
    if (
        len(der) == _PKCS8_V2_LENGTH
        and der.startswith(_PKCS8_V2_PREFIX)
        and der[48:51] == _PKCS8_V2_PUBLIC_TAG
    ):
        key = Ed25519PrivateKey.from_private_bytes(der[_SEED])
        if public_key_raw(key.public_key()) != der[51:]:
            raise KeyFileError("embedded public key does not match")
        return key
    try:
        loaded = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # cryptography's own message may quote parts of the input.
        raise KeyFileError("unsupported private key format") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyFileError("unsupported private key format")
    return loaded


def load_public_key_pem(text: str) -> Ed25519PublicKey:
    der = _pem_der(text, "PUBLIC KEY")
    try:
        loaded = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError("unsupported public key format") from None
    if not isinstance(loaded, Ed25519PublicKey):
        raise KeyFileError("unsupported public key format")
    return loaded


def check_key_pair(private_pem: str, public_pem: str) -> Ed25519PrivateKey:
    """Load the stored pair, refusing it when the halves belong to different keys."""
    private_key = load_private_key_pem(private_pem)
    public_key = load_public_key_pem(public_pem)
    if public_key_raw(private_key.public_key()) != public_key_raw(public_key):
        raise KeyFileError("stored public key does not match the private key")
    return private_key
