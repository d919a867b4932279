from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from keysat.keys import load_public_key_pem

VECTOR_PATH = Path(__file__).resolve().parents[2] / "crosscheck" / "vector.json"


@pytest.fixture(scope="session")
def vector_path() -> Path:
    return VECTOR_PATH


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTOR_PATH.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="session")
def vector_public_key(vectors: dict[str, Any]) -> Ed25519PublicKey:
    return load_public_key_pem(vectors["publicKeyPem"])


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def other_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()
