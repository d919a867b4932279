"""The official Python SDK (keysat-licensing-client 0.3.0) against a real `keysat serve`.

Covers public-api.md section 17: the routes the SDK calls, every validate reason it can
reach, the machine calls and the seat cap, and offline verification of issued keys.
Expiry and grace are set up with past `expires_at` values at issue time; no clock moves.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from keysat_licensing_client import (
    Client,
    EntitlementDef,
    LicensingError,
    PublicKey,
    ValidateOptions,
    Verifier,
    hash_fingerprint,
)

from e2e.harness import KeysatServer, launch_server
from keysat.keys import (
    FLAG_FINGERPRINT_BOUND,
    ZERO_FINGERPRINT_HASH,
    KeyFields,
    derive_key,
    encode_key,
    fingerprint_hash,
)

pytestmark = pytest.mark.e2e

PRODUCT = "e2e-app"
OTHER_PRODUCT = "e2e-other"
TRIAL_PRODUCT = "e2e-trial"
CATALOG = [
    {"slug": "export", "name": "Export", "description": "Export to PDF"},
    {"slug": "sync", "name": "Cloud sync", "description": ""},
]
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00$")


@dataclass(frozen=True)
class Catalog:
    product_id: str
    other_product_id: str
    trial_product_id: str


@pytest.fixture(scope="module", autouse=True)
def catalog(server: KeysatServer) -> Catalog:
    """Products and policies shared by every test of the module (so each test can run alone)."""
    product = server.create_product(
        PRODUCT,
        name="E2E App",
        description="An app under end-to-end test",
        price_sats=1000,
        entitlements_catalog=CATALOG,
    )
    server.create_policy(
        PRODUCT,
        "pro",
        name="Pro",
        price_sats_override=5000,
        max_machines=2,
        entitlements=["export", "sync"],
        metadata={
            "description": "For teams",
            "highlight": True,
            "marketing_bullets": ["Priority support", 42],
        },
    )
    server.create_policy(
        PRODUCT, "basic", name="Basic", duration_seconds=365 * 86400, entitlements=["export"]
    )
    server.create_policy(PRODUCT, "alpha", name="Alpha", price_sats_override=1000, max_machines=0)
    hidden = server.create_policy(PRODUCT, "internal", name="Internal", price_sats_override=10)
    server.admin_patch(f"/v1/admin/policies/{hidden['id']}/public", {"public": False})

    other = server.create_product(OTHER_PRODUCT, name="Other", price_sats=500)
    trial = server.create_product(TRIAL_PRODUCT, name="Trialware", price_sats=2000)
    server.create_policy(
        TRIAL_PRODUCT,
        "trial",
        name="Trial",
        is_trial=True,
        duration_seconds=14 * 86400,
        max_machines=1,
    )
    return Catalog(
        product_id=product["id"], other_product_id=other["id"], trial_product_id=trial["id"]
    )


@pytest.fixture(scope="module")
def signing_key(server: KeysatServer) -> Ed25519PrivateKey:
    return server.signing_key()


# --- helpers ------------------------------------------------------------------------------


def new_fingerprint() -> str:
    return f"machine-{uuid.uuid4().hex}"


def ts(text: str | None) -> datetime:
    assert text is not None
    assert TIMESTAMP.match(text), f"not an RFC 3339 UTC timestamp with 6 digits: {text!r}"
    return datetime.fromisoformat(text)


def whole_seconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def sign_key(
    private_key: Ed25519PrivateKey,
    *,
    product_id: str,
    license_id: str,
    flags: int = 0,
    bound_to: str | None = None,
    expires_at: int = 0,
    entitlements: Sequence[str] = (),
) -> str:
    """A version-2 key with chosen fields, signed by `private_key`."""
    fields = KeyFields(
        version=2,
        flags=flags | (FLAG_FINGERPRINT_BOUND if bound_to is not None else 0),
        product_id=uuid.UUID(product_id),
        license_id=uuid.UUID(license_id),
        issued_at=int(datetime.now(UTC).timestamp()),
        expires_at=expires_at,
        fingerprint_hash=fingerprint_hash(bound_to) if bound_to else ZERO_FINGERPRINT_HASH,
        entitlements=tuple(entitlements),
    )
    return encode_key(fields, private_key)


def raw_validate(raw: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = raw.post("/v1/validate", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


# --- service information and offline verification ----------------------------------------


def test_pubkey_matches_service_info(sdk: Client, raw: httpx.Client) -> None:
    pem = sdk.fetch_pubkey_pem()
    root = raw.get("/", headers={"Accept": "application/json"})
    assert root.status_code == 200
    info = root.json()
    assert info["public_key_pem"] == pem
    assert info["service"] == "keysat"
    assert info["key_algorithm"] == "ed25519"
    assert info["key_format_version"] == 2
    pubkey = raw.get("/v1/pubkey")
    assert pubkey.status_code == 200
    assert pubkey.json() == {"algorithm": "ed25519", "public_key_pem": pem}
    assert pem.startswith("-----BEGIN PUBLIC KEY-----\n")
    assert pem.rstrip("\n").endswith("-----END PUBLIC KEY-----")
    PublicKey.from_pem(pem)  # an SPKI Ed25519 key the SDK accepts


def test_issued_key_verifies_offline(server: KeysatServer, sdk: Client, catalog: Catalog) -> None:
    verifier = Verifier(PublicKey.from_pem(sdk.fetch_pubkey_pem()))
    expires = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    issued = server.issue_license(
        PRODUCT,
        entitlements=["export", "sync"],
        is_trial=True,
        expires_at=rfc3339(expires),
    )
    assert issued["is_trial"] is True
    assert issued["entitlements"] == ["export", "sync"]
    assert ts(issued["expires_at"]) == expires

    ok = verifier.verify(issued["license_key"])
    assert ok.license_id == uuid.UUID(issued["license_id"])
    assert ok.product_id == uuid.UUID(catalog.product_id)
    assert ok.entitlements == ["export", "sync"]
    assert ok.is_trial is True
    assert ok.is_fingerprint_bound is False
    assert ok.fingerprint_hash == bytes(32)
    assert ok.expires_at == int(expires.timestamp())
    assert ok.issued_at == int(ts(issued["issued_at"]).timestamp())
    assert ok.payload.version == 2

    assert verifier.verify_with_time(issued["license_key"], ok.expires_at - 1).license_id
    with pytest.raises(LicensingError) as expired:
        verifier.verify_with_time(issued["license_key"], ok.expires_at)
    assert expired.value.kind == "expired"

    perpetual = server.issue_license(PRODUCT)
    assert perpetual["expires_at"] is None
    plain = verifier.verify(perpetual["license_key"])
    assert plain.expires_at == 0
    assert plain.is_trial is False
    assert plain.entitlements == []


def test_keys_are_canonical(server: KeysatServer, catalog: Catalog) -> None:
    key = server.issue_license(PRODUCT, entitlements=["export"])["license_key"]
    assert re.fullmatch(r"LIC1-[A-Z2-7]+-[A-Z2-7]+", key), key


def test_offline_verifier_rejects_foreign_and_tampered_keys(
    sdk: Client, catalog: Catalog, server: KeysatServer
) -> None:
    verifier = Verifier(PublicKey.from_pem(sdk.fetch_pubkey_pem()))
    issued = server.issue_license(PRODUCT)
    foreign = sign_key(
        Ed25519PrivateKey.generate(),
        product_id=catalog.product_id,
        license_id=issued["license_id"],
    )
    with pytest.raises(LicensingError) as bad_signature:
        verifier.verify(foreign)
    assert bad_signature.value.kind == "bad_signature"
    with pytest.raises(LicensingError) as bad_format:
        verifier.verify("LIC1-NOT-A-KEY")
    assert bad_format.value.kind == "bad_format"


# --- public tier list ----------------------------------------------------------------------


def test_list_public_policies(sdk: Client, raw: httpx.Client, catalog: Catalog) -> None:
    listing = sdk.list_public_policies(PRODUCT)
    assert listing.product.slug == PRODUCT
    assert listing.product.name == "E2E App"
    assert listing.product.description == "An app under end-to-end test"
    assert listing.product.base_price_sats == 1000
    assert listing.product.entitlements_catalog == [
        EntitlementDef(slug="export", name="Export", description="Export to PDF"),
        EntitlementDef(slug="sync", name="Cloud sync", description=""),
    ]
    # Effective price ascending, then name: Alpha (1000) and Basic (1000), then Pro (5000).
    # The non-public policy is not listed.
    assert [p.slug for p in listing.policies] == ["alpha", "basic", "pro"]
    alpha, basic, pro = listing.policies
    assert (alpha.price_sats, basic.price_sats, pro.price_sats) == (1000, 1000, 5000)
    assert pro.name == "Pro"
    assert pro.description == "For teams"
    assert pro.max_machines == 2
    assert pro.entitlements == ["export", "sync"]
    assert pro.highlighted is True
    assert pro.is_trial is False
    assert pro.is_recurring is False
    assert (pro.duration_seconds, pro.renewal_period_days, pro.trial_days) == (0, 0, 0)
    assert basic.duration_seconds == 365 * 86400
    assert basic.description == ""
    assert basic.highlighted is False
    assert basic.max_machines == 1
    assert alpha.max_machines == 0

    body = raw.get(f"/v1/products/{PRODUCT}/policies").json()
    integer_fields = [
        "price_sats",
        "duration_seconds",
        "max_machines",
        "renewal_period_days",
        "trial_days",
    ]
    for policy in body["policies"]:
        assert "id" not in policy
        for name in integer_fields:
            assert type(policy[name]) is int, (name, policy[name])
        for name in ("is_trial", "highlighted", "is_recurring"):
            assert type(policy[name]) is bool, (name, policy[name])
        assert isinstance(policy["entitlements"], list)
        assert isinstance(policy["description"], str)
    raw_pro = body["policies"][2]
    assert raw_pro["marketing_bullets"] == ["Priority support"]
    assert type(body["product"]["base_price_sats"]) is int

    trial = sdk.list_public_policies(TRIAL_PRODUCT)
    assert [(p.slug, p.is_trial, p.duration_seconds) for p in trial.policies] == [
        ("trial", True, 14 * 86400)
    ]
    assert trial.product.entitlements_catalog == []


def test_list_public_policies_of_unknown_product_is_a_server_error(
    sdk: Client, raw: httpx.Client
) -> None:
    with pytest.raises(LicensingError) as error:
        sdk.list_public_policies("no-such-product")
    assert error.value.kind == "server_error"
    response = raw.get("/v1/products/no-such-product/policies")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


# --- validate: success ---------------------------------------------------------------------


def test_validate_ok_reports_the_license(
    server: KeysatServer, sdk: Client, raw: httpx.Client, catalog: Catalog
) -> None:
    expires = whole_seconds(datetime.now(UTC) + timedelta(days=30))
    issued = server.issue_license(PRODUCT, policy_slug="pro", expires_at=rfc3339(expires))
    key = issued["license_key"]
    fingerprint = new_fingerprint()

    result = sdk.validate(key, product_slug=PRODUCT, fingerprint=fingerprint)
    assert result.ok is True, result
    assert result.reason is None
    assert result.license_id == issued["license_id"]
    assert result.product_id == catalog.product_id
    assert result.product_slug == PRODUCT
    assert ts(result.issued_at) == ts(issued["issued_at"])
    assert ts(result.expires_at) == expires
    assert result.entitlements == ["export", "sync"]
    assert result.status == "active"
    assert result.max_machines == 2
    assert result.machine_id
    assert result.in_grace_period is None
    assert result.grace_until is None
    assert result.is_trial is None

    again = sdk.validate(key, product_slug=PRODUCT, fingerprint=fingerprint)
    assert again.ok is True
    assert again.machine_id == result.machine_id

    unbound = sdk.validate(key)
    assert unbound.ok is True
    assert unbound.machine_id is None

    body = raw_validate(raw, {"key": key})
    assert body["ok"] is True
    assert "license_key" not in body  # the submitted key is current
    assert type(body["max_machines"]) is int


def test_validate_omits_empty_entitlements_and_expiry(
    server: KeysatServer, sdk: Client, raw: httpx.Client, catalog: Catalog
) -> None:
    issued = server.issue_license(PRODUCT)
    body = raw_validate(raw, {"key": issued["license_key"]})
    assert body["ok"] is True
    assert "entitlements" not in body
    assert "expires_at" not in body
    assert "machine_id" not in body
    result = sdk.validate(issued["license_key"])
    assert result.ok is True
    assert result.entitlements == []
    assert result.expires_at is None


def test_validate_trial_license_reports_trial(server: KeysatServer, sdk: Client) -> None:
    issued = server.issue_license(PRODUCT, is_trial=True)
    result = sdk.validate(issued["license_key"], product_slug=PRODUCT)
    assert result.ok is True
    assert result.is_trial is True


def test_validate_accepts_what_users_paste(
    server: KeysatServer, sdk: Client, raw: httpx.Client
) -> None:
    """Surrounding whitespace and lower-case sections are the same key (license-keys.md 2.2)."""
    key = server.issue_license(PRODUCT, entitlements=["export"])["license_key"]
    prefix, payload, signature = key.split("-")
    pasted = f"  {prefix}-{payload.lower()}-{signature.lower()}\n"
    result = sdk.validate(pasted, product_slug=PRODUCT)
    assert result.ok is True, result
    assert result.entitlements == ["export"]
    assert "license_key" not in raw_validate(raw, {"key": pasted})
    lower_prefix = sdk.validate(key.replace("LIC1-", "lic1-", 1))
    assert (lower_prefix.ok, lower_prefix.reason) == (False, "bad_format")


# --- validate: failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        "garbage",
        "LIC1-AAAA-BBBB",
        "LIC2-AAAAAAAA-AAAAAAAA",
        "LIC1-" + "A" * 40,
        "LIC1-!!!!-????",
    ],
)
def test_validate_bad_format(sdk: Client, raw: httpx.Client, garbage: str) -> None:
    result = sdk.validate(garbage, product_slug=PRODUCT, fingerprint=new_fingerprint())
    assert (result.ok, result.reason) == (False, "bad_format")
    assert raw_validate(raw, {"key": garbage}) == {"ok": False, "reason": "bad_format"}


def test_validate_bad_signature(
    server: KeysatServer, sdk: Client, raw: httpx.Client, catalog: Catalog
) -> None:
    issued = server.issue_license(PRODUCT)
    forged = sign_key(
        Ed25519PrivateKey.generate(),
        product_id=catalog.product_id,
        license_id=issued["license_id"],
    )
    result = sdk.validate(forged, product_slug=PRODUCT)
    assert (result.ok, result.reason) == (False, "bad_signature")
    assert raw_validate(raw, {"key": forged}) == {"ok": False, "reason": "bad_signature"}


def test_validate_tampered_key_is_bad_signature(
    server: KeysatServer, sdk: Client, signing_key: Ed25519PrivateKey, catalog: Catalog
) -> None:
    issued = server.issue_license(PRODUCT)
    genuine = sign_key(signing_key, product_id=catalog.product_id, license_id=issued["license_id"])
    prefix, payload, signature = genuine.split("-")
    # The genuine signature attached to a different (validly encoded) payload.
    extended = sign_key(
        signing_key,
        product_id=catalog.product_id,
        license_id=issued["license_id"],
        entitlements=["sync"],
    ).split("-")[1]
    assert extended != payload
    result = sdk.validate(f"{prefix}-{extended}-{signature}")
    assert (result.ok, result.reason) == (False, "bad_signature")


def test_validate_unknown_license_is_not_found(
    sdk: Client, raw: httpx.Client, signing_key: Ed25519PrivateKey, catalog: Catalog
) -> None:
    key = sign_key(signing_key, product_id=catalog.product_id, license_id=str(uuid.uuid4()))
    result = sdk.validate(key, product_slug=PRODUCT, fingerprint=new_fingerprint())
    assert (result.ok, result.reason) == (False, "not_found")
    assert raw_validate(raw, {"key": key}) == {"ok": False, "reason": "not_found"}


def test_validate_key_for_another_product_is_invalid_state(
    server: KeysatServer,
    sdk: Client,
    raw: httpx.Client,
    signing_key: Ed25519PrivateKey,
    catalog: Catalog,
) -> None:
    issued = server.issue_license(PRODUCT)
    key = sign_key(
        signing_key, product_id=catalog.other_product_id, license_id=issued["license_id"]
    )
    result = sdk.validate(key)
    assert (result.ok, result.reason) == (False, "invalid_state")
    assert raw_validate(raw, {"key": key}) == {"ok": False, "reason": "invalid_state"}


def test_validate_revoked(server: KeysatServer, sdk: Client, raw: httpx.Client) -> None:
    issued = server.issue_license(PRODUCT)
    fingerprint = new_fingerprint()
    assert sdk.validate(issued["license_key"], fingerprint=fingerprint).ok is True
    server.revoke(issued["license_id"], "chargeback")
    result = sdk.validate(issued["license_key"], product_slug=PRODUCT, fingerprint=fingerprint)
    assert (result.ok, result.reason) == (False, "revoked")
    assert result.license_id is None
    body = raw_validate(raw, {"key": issued["license_key"]})
    assert body == {"ok": False, "reason": "revoked"}


def test_validate_suspended_then_unsuspended(
    server: KeysatServer, sdk: Client, raw: httpx.Client
) -> None:
    issued = server.issue_license(PRODUCT)
    server.suspend(issued["license_id"], "payment review")
    result = sdk.validate(issued["license_key"], product_slug=PRODUCT)
    assert (result.ok, result.reason) == (False, "suspended")
    assert raw_validate(raw, {"key": issued["license_key"]}) == {
        "ok": False,
        "reason": "suspended",
    }
    server.unsuspend(issued["license_id"])
    assert sdk.validate(issued["license_key"], product_slug=PRODUCT).ok is True


def test_validate_product_mismatch(server: KeysatServer, sdk: Client, raw: httpx.Client) -> None:
    key = server.issue_license(PRODUCT)["license_key"]
    for slug in (OTHER_PRODUCT, PRODUCT.upper(), "no-such-product"):
        result = sdk.validate(key, product_slug=slug)
        assert (result.ok, result.reason) == (False, "product_mismatch"), slug
    body = raw_validate(raw, {"key": key, "product_slug": OTHER_PRODUCT})
    assert body == {"ok": False, "reason": "product_mismatch"}
    # An empty product_slug means "absent".
    assert raw_validate(raw, {"key": key, "product_slug": ""})["ok"] is True


def test_validate_expired(
    server: KeysatServer, sdk: Client, raw: httpx.Client, catalog: Catalog
) -> None:
    expired_at = whole_seconds(datetime.now(UTC) - timedelta(days=2))
    issued = server.issue_license(PRODUCT, expires_at=rfc3339(expired_at))
    result = sdk.validate(issued["license_key"], product_slug=PRODUCT)
    assert (result.ok, result.reason) == (False, "expired")
    assert result.license_id == issued["license_id"]
    assert result.product_id == catalog.product_id
    assert ts(result.expires_at) == expired_at
    body = raw_validate(raw, {"key": issued["license_key"], "fingerprint": new_fingerprint()})
    assert set(body) == {"ok", "reason", "license_id", "product_id", "expires_at"}

    # Grace that has also run out is still expired.
    past_grace = server.issue_license(
        PRODUCT,
        expires_at=rfc3339(datetime.now(UTC) - timedelta(days=3)),
        grace_seconds=86400,
    )
    late = sdk.validate(past_grace["license_key"])
    assert (late.ok, late.reason) == (False, "expired")


def test_validate_in_grace_period(server: KeysatServer, sdk: Client, raw: httpx.Client) -> None:
    expired_at = whole_seconds(datetime.now(UTC) - timedelta(hours=1))
    issued = server.issue_license(PRODUCT, expires_at=rfc3339(expired_at), grace_seconds=86400)
    result = sdk.validate(
        issued["license_key"], product_slug=PRODUCT, fingerprint=new_fingerprint()
    )
    assert result.ok is True, result
    assert result.in_grace_period is True
    assert ts(result.expires_at) == expired_at
    assert ts(result.grace_until) == expired_at + timedelta(days=1)
    assert result.machine_id
    body = raw_validate(raw, {"key": issued["license_key"]})
    assert body["in_grace_period"] is True
    assert body["status"] == "active"


def test_validate_single_seat_other_machine_is_fingerprint_mismatch(
    server: KeysatServer, sdk: Client, raw: httpx.Client
) -> None:
    issued = server.issue_license(PRODUCT, max_machines=1)
    key = issued["license_key"]
    first, second = new_fingerprint(), new_fingerprint()
    bound = sdk.validate(key, fingerprint=first)
    assert bound.ok is True
    mismatch = sdk.validate(key, product_slug=PRODUCT, fingerprint=second)
    assert (mismatch.ok, mismatch.reason) == (False, "fingerprint_mismatch")
    assert raw_validate(raw, {"key": key, "fingerprint": second}) == {
        "ok": False,
        "reason": "fingerprint_mismatch",
    }
    assert sdk.validate(key, fingerprint=first).machine_id == bound.machine_id
    # Without a fingerprint there is no binding check at all.
    assert sdk.validate(key).ok is True


def test_validate_fingerprint_bound_key_with_other_hash(
    server: KeysatServer,
    sdk: Client,
    raw: httpx.Client,
    signing_key: Ed25519PrivateKey,
    catalog: Catalog,
) -> None:
    issued = server.issue_license(PRODUCT, max_machines=0)
    owner, stranger = new_fingerprint(), new_fingerprint()
    key = sign_key(
        signing_key,
        product_id=catalog.product_id,
        license_id=issued["license_id"],
        bound_to=owner,
    )
    parsed = Verifier(PublicKey.from_pem(sdk.fetch_pubkey_pem())).verify(key)
    assert parsed.is_fingerprint_bound
    assert parsed.fingerprint_hash.hex() == hash_fingerprint(owner)

    mismatch = sdk.validate(key, product_slug=PRODUCT, fingerprint=stranger)
    assert (mismatch.ok, mismatch.reason) == (False, "fingerprint_mismatch")
    assert sdk.validate(key, product_slug=PRODUCT, fingerprint=owner).ok is True
    # The submitted key differs from the row's derived key, so the current one comes back.
    body = raw_validate(raw, {"key": key, "fingerprint": owner})
    assert body["license_key"] == issued["license_key"]

    activation = sdk.activate(key, stranger)
    assert (activation.ok, activation.reason) == (False, "fingerprint_mismatch")


def test_validate_too_many_machines(
    server: KeysatServer, sdk: Client, raw: httpx.Client, catalog: Catalog
) -> None:
    issued = server.issue_license(PRODUCT, max_machines=2)
    key = issued["license_key"]
    first, second, third = (new_fingerprint() for _ in range(3))
    assert sdk.validate(key, fingerprint=first).ok is True
    assert sdk.validate(key, fingerprint=second).ok is True
    refused = sdk.validate(key, product_slug=PRODUCT, fingerprint=third)
    assert (refused.ok, refused.reason) == (False, "too_many_machines")
    assert refused.license_id == issued["license_id"]
    assert refused.product_id == catalog.product_id
    assert refused.max_machines == 2
    body = raw_validate(raw, {"key": key, "fingerprint": third})
    assert body == {
        "ok": False,
        "reason": "too_many_machines",
        "license_id": issued["license_id"],
        "product_id": catalog.product_id,
        "max_machines": 2,
    }
    assert sdk.validate(key, fingerprint=first).ok is True


def test_validate_trial_already_used(server: KeysatServer, sdk: Client, catalog: Catalog) -> None:
    first = server.issue_license(TRIAL_PRODUCT, policy_slug="trial")
    second = server.issue_license(TRIAL_PRODUCT, policy_slug="trial")
    assert first["is_trial"] is True and second["is_trial"] is True
    machine = new_fingerprint()

    started = sdk.validate(first["license_key"], product_slug=TRIAL_PRODUCT, fingerprint=machine)
    assert started.ok is True
    assert started.is_trial is True

    repeat = sdk.validate(second["license_key"], product_slug=TRIAL_PRODUCT, fingerprint=machine)
    assert (repeat.ok, repeat.reason) == (False, "trial_already_used")
    activation = sdk.activate(second["license_key"], machine)
    assert (activation.ok, activation.reason) == (False, "trial_already_used")

    # The same trial on a fresh machine is fine, and so is the first license again.
    assert sdk.validate(second["license_key"], fingerprint=new_fingerprint()).ok is True
    assert sdk.validate(first["license_key"], fingerprint=machine).ok is True


# --- rate limit on validate (its own server) -----------------------------------------------


LIMITED_PRODUCT = "e2e-limited"


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeysatServer]:
    """A second server with small limits: validate 2/1h, activate 1/1h, heartbeat 2/1h."""
    env = {
        "KEYSAT_RATE_LIMITS": "on",
        "KEYSAT_RATE_LIMIT_VALIDATE": "2/1h",
        "KEYSAT_RATE_LIMIT_ACTIVATE": "1/1h",
        "KEYSAT_RATE_LIMIT_HEARTBEAT": "2/1h",
    }
    with launch_server(Path(tmp_path_factory.mktemp("keysat-e2e-limited")), env) as running:
        running.create_product(LIMITED_PRODUCT, price_sats=100)
        yield running


def test_validate_rate_limited(limited_server: KeysatServer) -> None:
    key = limited_server.issue_license(LIMITED_PRODUCT)["license_key"]
    sdk = limited_server.sdk()
    assert sdk.validate(key).ok is True
    assert sdk.validate(key, product_slug=LIMITED_PRODUCT).ok is True
    limited = sdk.validate(key, product_slug=LIMITED_PRODUCT)
    assert (limited.ok, limited.reason) == (False, "rate_limited")
    with httpx.Client(base_url=limited_server.base_url, timeout=15.0) as raw:
        # The limit comes before parsing, so a garbage key is refused the same way.
        for body in ({"key": key}, {"key": "garbage"}):
            response = raw.post("/v1/validate", json=body)
            assert response.status_code == 200
            assert response.json() == {"ok": False, "reason": "rate_limited"}


def test_activation_rate_limited(limited_server: KeysatServer) -> None:
    key = limited_server.issue_license(LIMITED_PRODUCT, max_machines=0)["license_key"]
    sdk = limited_server.sdk()
    first, second = new_fingerprint(), new_fingerprint()
    activated = sdk.activate(key, first)
    assert activated.ok is True
    # Re-activating an active machine spends no token.
    assert sdk.activate(key, first).machine_id == activated.machine_id
    refused = sdk.activate(key, second)
    assert (refused.ok, refused.reason, refused.machine_id) == (False, "rate_limited", None)
    assert refused.active_count == 1


def test_heartbeat_rate_limited(limited_server: KeysatServer) -> None:
    key = limited_server.issue_license(LIMITED_PRODUCT)["license_key"]
    sdk = limited_server.sdk()
    machine = new_fingerprint()
    assert sdk.activate(key, machine).ok is True
    assert sdk.heartbeat(key, machine).ok is True
    assert sdk.heartbeat(key, machine).ok is True
    beat = sdk.heartbeat(key, machine)
    assert (beat.ok, beat.reason) == (False, "rate_limited")


# --- machines ------------------------------------------------------------------------------


def test_machine_round_trip_and_seat_cap(server: KeysatServer, sdk: Client) -> None:
    issued = server.issue_license(PRODUCT, max_machines=2)
    key = issued["license_key"]
    a, b, c = (new_fingerprint() for _ in range(3))

    first = sdk.activate(key, a, hostname="host-a", platform="linux")
    assert (first.ok, first.reason, first.active_count, first.max_machines) == (True, None, 1, 2)
    assert first.machine_id
    second = sdk.activate(key, b)
    assert (second.ok, second.active_count) == (True, 2)
    assert second.machine_id != first.machine_id

    again = sdk.activate(key, a)
    assert (again.ok, again.machine_id, again.active_count) == (True, first.machine_id, 2)

    full = sdk.activate(key, c)
    assert (full.ok, full.reason) == (False, "too_many_machines")
    assert (full.machine_id, full.active_count, full.max_machines) == (None, 2, 2)

    beat = sdk.heartbeat(key, a)
    assert (beat.ok, beat.machine_id) == (True, first.machine_id)
    unknown = sdk.heartbeat(key, c)
    assert (unknown.ok, unknown.reason) == (False, "not_activated")

    freed = sdk.deactivate(key, b, reason="laptop retired")
    assert freed.ok is True
    twice = sdk.deactivate(key, b)
    assert (twice.ok, twice.reason) == (False, "not_found")
    gone = sdk.heartbeat(key, b)
    assert (gone.ok, gone.reason) == (False, "not_activated")

    third = sdk.activate(key, c)
    assert (third.ok, third.active_count) == (True, 2)
    assert sdk.validate(key, fingerprint=c).machine_id == third.machine_id
    assert sdk.heartbeat(key, c).machine_id == third.machine_id


def test_machine_rows_record_what_the_sdk_sent(server: KeysatServer, sdk: Client) -> None:
    issued = server.issue_license(PRODUCT, max_machines=0)
    key = issued["license_key"]
    laptop, desktop = new_fingerprint(), new_fingerprint()
    options = ValidateOptions(fingerprint=laptop, hostname="laptop", platform="macos-arm64")
    bound = sdk.validate(key, opts=options)
    assert bound.ok is True
    activated = sdk.activate(key, desktop, hostname="desktop", platform="windows-x64")
    assert activated.ok is True
    assert sdk.deactivate(key, desktop, reason="reinstalled").ok is True

    response = server.admin.get(
        "/v1/admin/machines",
        params={"license_id": issued["license_id"], "include_inactive": "true"},
    )
    assert response.status_code == 200
    rows = {row["id"]: row for row in response.json()["machines"]}
    assert set(rows) == {bound.machine_id, activated.machine_id}
    laptop_row, desktop_row = rows[bound.machine_id], rows[activated.machine_id]
    assert (laptop_row["hostname"], laptop_row["platform"]) == ("laptop", "macos-arm64")
    assert laptop_row["active"] is True
    assert laptop_row["ip_last_seen"] == "127.0.0.1"
    assert (desktop_row["hostname"], desktop_row["platform"]) == ("desktop", "windows-x64")
    assert desktop_row["active"] is False
    assert desktop_row["deactivation_reason"] == "reinstalled"


def test_activate_then_validate_single_seat(server: KeysatServer, sdk: Client) -> None:
    issued = server.issue_license(PRODUCT, max_machines=1)
    key = issued["license_key"]
    a, b = new_fingerprint(), new_fingerprint()

    activation = sdk.activate(key, a)
    assert (activation.ok, activation.active_count, activation.max_machines) == (True, 1, 1)
    for _ in range(3):
        checked = sdk.validate(key, product_slug=PRODUCT, fingerprint=a)
        assert checked.ok is True, checked
        assert checked.machine_id == activation.machine_id

    busy = sdk.activate(key, b)
    assert (busy.ok, busy.reason, busy.active_count) == (False, "too_many_machines", 1)
    assert sdk.validate(key, fingerprint=b).reason == "fingerprint_mismatch"

    assert sdk.deactivate(key, a).ok is True
    moved = sdk.validate(key, fingerprint=b)
    assert moved.ok is True
    assert moved.machine_id != activation.machine_id
    reactivated = sdk.activate(key, b)
    assert (reactivated.ok, reactivated.machine_id) == (True, moved.machine_id)


def test_activate_reports_license_state(server: KeysatServer, sdk: Client) -> None:
    revoked = server.issue_license(PRODUCT)
    server.revoke(revoked["license_id"])
    result = sdk.activate(revoked["license_key"], new_fingerprint())
    assert (result.ok, result.reason, result.active_count) == (False, "revoked", 0)

    suspended = server.issue_license(PRODUCT)
    server.suspend(suspended["license_id"])
    result = sdk.activate(suspended["license_key"], new_fingerprint())
    assert (result.ok, result.reason, result.active_count) == (False, "suspended", 0)


def test_machine_hard_errors(
    sdk: Client, raw: httpx.Client, signing_key: Ed25519PrivateKey, catalog: Catalog
) -> None:
    fingerprint = new_fingerprint()
    for call in (sdk.activate, sdk.heartbeat, sdk.deactivate):
        with pytest.raises(LicensingError) as error:
            call("garbage", fingerprint)
        assert error.value.kind == "server_error"

    bad = raw.post("/v1/machines/activate", json={"key": "garbage", "fingerprint": fingerprint})
    assert bad.status_code == 400
    assert bad.json()["error"] == "bad_request"
    assert bad.json()["message"].startswith("bad request: bad key: ")

    forged = sign_key(
        Ed25519PrivateKey.generate(),
        product_id=catalog.product_id,
        license_id=str(uuid.uuid4()),
    )
    response = raw.post("/v1/machines/heartbeat", json={"key": forged, "fingerprint": "x"})
    assert response.status_code == 400
    assert response.json()["message"] == "bad request: signature verification failed"

    missing_id = str(uuid.uuid4())
    unknown = sign_key(signing_key, product_id=catalog.product_id, license_id=missing_id)
    response = raw.post("/v1/machines/activate", json={"key": unknown, "fingerprint": "x"})
    assert response.status_code == 404
    assert response.json()["message"] == f"not found: license {missing_id}"
    with pytest.raises(LicensingError):
        sdk.activate(unknown, fingerprint)

    response = raw.post("/v1/machines/activate", json={"key": unknown, "fingerprint": ""})
    assert response.status_code == 400
    assert response.json()["message"] == "bad request: fingerprint is required"


# --- raw status codes of every SDK route ----------------------------------------------------


def test_sdk_routes_answer_exactly_200(
    server: KeysatServer, raw: httpx.Client, catalog: Catalog
) -> None:
    key = server.issue_license(PRODUCT, max_machines=1)["license_key"]
    fingerprint, other = new_fingerprint(), new_fingerprint()
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/v1/pubkey", None),
        ("GET", f"/v1/products/{PRODUCT}/policies", None),
        ("POST", "/v1/validate", {"key": key}),
        ("POST", "/v1/validate", {"key": "garbage"}),
        ("POST", "/v1/machines/heartbeat", {"key": key, "fingerprint": fingerprint}),
        ("POST", "/v1/machines/deactivate", {"key": key, "fingerprint": fingerprint}),
        ("POST", "/v1/machines/activate", {"key": key, "fingerprint": fingerprint}),
        ("POST", "/v1/machines/activate", {"key": key, "fingerprint": other}),
        ("POST", "/v1/validate", {"key": key, "fingerprint": other}),
        ("POST", "/v1/machines/heartbeat", {"key": key, "fingerprint": fingerprint}),
        ("POST", "/v1/machines/deactivate", {"key": key, "fingerprint": fingerprint}),
    ]
    for method, path, body in calls:
        response = raw.request(method, path, json=body)
        assert response.status_code == 200, (method, path, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert isinstance(response.json(), dict)

    activation = raw.post("/v1/machines/activate", json={"key": key, "fingerprint": other})
    assert set(activation.json()) == {"ok", "machine_id", "active_count", "max_machines", "reason"}


def test_no_trailing_slash_redirects(raw: httpx.Client) -> None:
    response = raw.post("/v1/validate/", json={"key": "garbage"})
    assert response.status_code == 404
    assert response.json() == {
        "ok": False,
        "error": "not_found",
        "message": "not found: no such endpoint",
    }


def test_issued_key_is_derived_from_the_row(server: KeysatServer, sdk: Client) -> None:
    """The key handed out by manual issue is the deterministic derivation of the row."""
    issued = server.issue_license(PRODUCT, entitlements=["export"], is_trial=True)
    derived = derive_key(
        product_id=issued["product_id"],
        license_id=issued["license_id"],
        issued_at=ts(issued["issued_at"]),
        expires_at=None,
        is_trial=True,
        entitlements=["export"],
        private_key=server.signing_key(),
    )
    assert derived == issued["license_key"]
    assert sdk.validate(derived).ok is True
