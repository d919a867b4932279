"""The pure validate rules over a license row (public-api.md 8.2 steps 6-10, 8.4)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keysat.keys import (
    FLAG_FINGERPRINT_BOUND,
    FLAG_TRIAL,
    KeyFields,
    ParsedKey,
    encode_key,
    fingerprint_hash,
    generate_private_key,
    parse_key,
)
from keysat.licensing.models import License
from keysat.licensing.validation import Grace, Verdict, license_verdict, success_body

PRIVATE_KEY = generate_private_key()
PRODUCT_ID = "0b6c1a52-8f0e-4b43-9a53-0d6f3f2b8e11"
LICENSE_ID = "5d0e4c1b-2a3f-4e5d-8c7b-6a5f4e3d2c1b"
NOW = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
ISSUED = datetime(2029, 12, 1, 0, 0, 0, 123456, tzinfo=UTC)


def make_license(**changes: Any) -> License:
    values: dict[str, Any] = {
        "id": LICENSE_ID,
        "product_id": PRODUCT_ID,
        "policy_id": None,
        "invoice_id": None,
        "status": "active",
        "issued_at": ISSUED,
        "expires_at": None,
        "grace_seconds": 0,
        "max_machines": 1,
        "entitlements": [],
        "is_trial": False,
        "trial_started_at": None,
        "revocation_reason": None,
        "suspension_reason": None,
        "license_metadata": {},
        "updated_at": ISSUED,
    }
    values.update(changes)
    return License(**values)


def make_key(**changes: Any) -> ParsedKey:
    values: dict[str, Any] = {
        "version": 2,
        "flags": 0,
        "product_id": uuid.UUID(PRODUCT_ID),
        "license_id": uuid.UUID(LICENSE_ID),
        "issued_at": int(ISSUED.timestamp()),
        "expires_at": 0,
        "fingerprint_hash": bytes(32),
        "entitlements": (),
    }
    values.update(changes)
    return parse_key(encode_key(KeyFields(**values), PRIVATE_KEY))


def verdict(
    row: License | None = None,
    key: ParsedKey | None = None,
    requested_slug: str | None = None,
    fingerprint: str | None = None,
    at: datetime = NOW,
    product_slug: str = "acme",
) -> Verdict | Grace:
    return license_verdict(
        row if row is not None else make_license(),
        product_slug,
        key if key is not None else make_key(),
        requested_slug,
        fingerprint,
        at,
    )


# --- license_verdict ------------------------------------------------------------------


def test_active_perpetual_license_passes_without_grace() -> None:
    assert verdict() == Grace(in_grace=False, grace_until=None)


def test_product_id_mismatch_is_invalid_state() -> None:
    result = verdict(key=make_key(product_id=uuid.uuid4()))
    assert isinstance(result, Verdict)
    assert result.reason == "invalid_state"
    assert result.detail == "product id in key does not match license"
    assert result.fields == {}


def test_product_id_mismatch_comes_before_status() -> None:
    row = make_license(status="revoked", revocation_reason="x")
    result = verdict(row, make_key(product_id=uuid.uuid4()))
    assert isinstance(result, Verdict)
    assert result.reason == "invalid_state"


def test_revoked_carries_the_revocation_reason() -> None:
    result = verdict(make_license(status="revoked", revocation_reason="chargeback"))
    assert result == Verdict("revoked", "chargeback")


def test_suspended_carries_the_suspension_reason() -> None:
    result = verdict(make_license(status="suspended", suspension_reason="unpaid"))
    assert result == Verdict("suspended", "unpaid")


@pytest.mark.parametrize("status", ["pending", "expired", "", "ACTIVE"])
def test_any_other_status_is_invalid_state(status: str) -> None:
    result = verdict(make_license(status=status))
    assert isinstance(result, Verdict)
    assert result.reason == "invalid_state"
    assert result.fields == {}


def test_status_comes_before_product_slug_and_expiry() -> None:
    row = make_license(
        status="suspended", suspension_reason="s", expires_at=NOW - timedelta(days=3)
    )
    assert isinstance(result := verdict(row, requested_slug="other"), Verdict)
    assert result.reason == "suspended"


@pytest.mark.parametrize("slug", ["other", "ACME", "acme ", " acme"])
def test_product_slug_must_match_exactly(slug: str) -> None:
    result = verdict(requested_slug=slug)
    assert isinstance(result, Verdict)
    assert result.reason == "product_mismatch"
    assert result.fields == {}


def test_matching_product_slug_passes() -> None:
    assert isinstance(verdict(requested_slug="acme"), Grace)


def test_product_slug_comes_before_expiry() -> None:
    row = make_license(expires_at=NOW - timedelta(days=1))
    result = verdict(row, requested_slug="zeta")
    assert isinstance(result, Verdict)
    assert result.reason == "product_mismatch"


def test_expired_fields_and_detail() -> None:
    expires = NOW - timedelta(days=1)
    result = verdict(make_license(expires_at=expires))
    assert isinstance(result, Verdict)
    assert result.reason == "expired"
    assert result.detail == "expired at 2030-01-01T03:04:05.678901+00:00"
    assert result.fields == {
        "license_id": LICENSE_ID,
        "product_id": PRODUCT_ID,
        "expires_at": "2030-01-01T03:04:05.678901+00:00",
    }


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(microseconds=-1), "ok"),
        (timedelta(0), "grace"),
        (timedelta(seconds=59, microseconds=999999), "grace"),
        (timedelta(seconds=60), "expired"),
        (timedelta(days=400), "expired"),
    ],
)
def test_expiry_and_grace_boundaries(offset: timedelta, expected: str) -> None:
    expires = NOW - timedelta(hours=5)
    row = make_license(expires_at=expires, grace_seconds=60)
    result = verdict(row, at=expires + offset)
    if expected == "expired":
        assert isinstance(result, Verdict)
        assert result.reason == "expired"
    elif expected == "grace":
        assert result == Grace(in_grace=True, grace_until=expires + timedelta(seconds=60))
    else:
        assert result == Grace(in_grace=False, grace_until=None)


def test_no_grace_expires_exactly_at_expires_at() -> None:
    expires = NOW
    row = make_license(expires_at=expires)
    assert isinstance(verdict(row, at=expires), Verdict)
    assert verdict(row, at=expires - timedelta(microseconds=1)) == Grace(False, None)


def test_key_expiry_is_not_consulted() -> None:
    old_key = make_key(expires_at=int((NOW - timedelta(days=10)).timestamp()))
    assert verdict(make_license(), old_key) == Grace(False, None)
    row = make_license(expires_at=NOW - timedelta(days=1))
    fresh_key = make_key(expires_at=int((NOW + timedelta(days=10)).timestamp()))
    result = verdict(row, fresh_key)
    assert isinstance(result, Verdict)
    assert result.reason == "expired"


def test_bound_key_with_other_fingerprint_is_fingerprint_mismatch() -> None:
    key = make_key(flags=FLAG_FINGERPRINT_BOUND, fingerprint_hash=fingerprint_hash("machine-a"))
    result = verdict(key=key, fingerprint="machine-b")
    assert isinstance(result, Verdict)
    assert result.reason == "fingerprint_mismatch"
    assert result.fields == {}


def test_bound_key_with_its_fingerprint_passes() -> None:
    key = make_key(flags=FLAG_FINGERPRINT_BOUND, fingerprint_hash=fingerprint_hash("machine-a"))
    assert verdict(key=key, fingerprint="machine-a") == Grace(False, None)


def test_bound_key_without_fingerprint_is_not_checked() -> None:
    key = make_key(flags=FLAG_FINGERPRINT_BOUND, fingerprint_hash=fingerprint_hash("machine-a"))
    assert verdict(key=key, fingerprint=None) == Grace(False, None)


def test_fingerprint_is_hashed_exactly() -> None:
    key = make_key(flags=FLAG_FINGERPRINT_BOUND, fingerprint_hash=fingerprint_hash("machine-a"))
    result = verdict(key=key, fingerprint="machine-a ")
    assert isinstance(result, Verdict)
    assert result.reason == "fingerprint_mismatch"


def test_unbound_key_hash_is_ignored() -> None:
    key = make_key(flags=FLAG_TRIAL, fingerprint_hash=fingerprint_hash("machine-a"))
    assert verdict(key=key, fingerprint="machine-b") == Grace(False, None)


def test_expiry_comes_before_fingerprint_check() -> None:
    key = make_key(flags=FLAG_FINGERPRINT_BOUND, fingerprint_hash=fingerprint_hash("machine-a"))
    row = make_license(expires_at=NOW - timedelta(seconds=1))
    result = verdict(row, key, fingerprint="machine-b")
    assert isinstance(result, Verdict)
    assert result.reason == "expired"


def test_bound_key_mismatch_in_grace_is_still_refused() -> None:
    key = make_key(flags=FLAG_FINGERPRINT_BOUND, fingerprint_hash=fingerprint_hash("machine-a"))
    row = make_license(expires_at=NOW - timedelta(seconds=1), grace_seconds=3600)
    result = verdict(row, key, fingerprint="machine-b")
    assert isinstance(result, Verdict)
    assert result.reason == "fingerprint_mismatch"


# --- success_body ---------------------------------------------------------------------


NO_GRACE = Grace(in_grace=False, grace_until=None)


def test_minimal_success_body() -> None:
    body = success_body(make_license(max_machines=0), "acme", NO_GRACE, None, None)
    assert body == {
        "ok": True,
        "license_id": LICENSE_ID,
        "product_id": PRODUCT_ID,
        "product_slug": "acme",
        "issued_at": "2029-12-01T00:00:00.123456+00:00",
        "status": "active",
        "max_machines": 0,
    }


def test_full_success_body() -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    grace = Grace(in_grace=True, grace_until=expires + timedelta(days=7))
    row = make_license(
        expires_at=expires, is_trial=True, entitlements=["pro", "sync"], max_machines=3
    )
    body = success_body(row, "acme", grace, "machine-1", "LIC1-NEW-KEY")
    assert body == {
        "ok": True,
        "license_id": LICENSE_ID,
        "product_id": PRODUCT_ID,
        "product_slug": "acme",
        "issued_at": "2029-12-01T00:00:00.123456+00:00",
        "expires_at": "2030-01-01T00:00:00.000000+00:00",
        "grace_until": "2030-01-08T00:00:00.000000+00:00",
        "in_grace_period": True,
        "is_trial": True,
        "entitlements": ["pro", "sync"],
        "status": "active",
        "machine_id": "machine-1",
        "max_machines": 3,
        "license_key": "LIC1-NEW-KEY",
    }


def test_success_body_omits_false_and_empty_values() -> None:
    row = make_license(is_trial=False, entitlements=[], expires_at=None)
    body = success_body(row, "acme", NO_GRACE, None, None)
    for absent in (
        "is_trial",
        "entitlements",
        "expires_at",
        "grace_until",
        "in_grace_period",
        "machine_id",
        "license_key",
        "reason",
    ):
        assert absent not in body


def test_success_body_expiry_without_grace() -> None:
    row = make_license(expires_at=NOW + timedelta(days=1))
    body = success_body(row, "acme", NO_GRACE, None, None)
    assert body["expires_at"] == "2030-01-03T03:04:05.678901+00:00"
    assert "grace_until" not in body
    assert "in_grace_period" not in body


def test_success_body_entitlements_are_a_copy_in_order() -> None:
    entitlements = ["z", "a", "m"]
    row = make_license(entitlements=entitlements)
    body = success_body(row, "acme", NO_GRACE, None, None)
    assert body["entitlements"] == ["z", "a", "m"]
    body["entitlements"].append("x")
    assert row.entitlements == ["z", "a", "m"]


def test_success_body_status_is_active_and_types() -> None:
    body = success_body(make_license(max_machines=7), "acme", NO_GRACE, "m", None)
    assert body["status"] == "active"
    assert body["ok"] is True
    assert type(body["max_machines"]) is int
    assert isinstance(body["issued_at"], str)
